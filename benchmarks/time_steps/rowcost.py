"""A row kernel of unequal row costs: row i sums sqrt(j + L[i]) for j < L[i], and L grows
with the row index (sorted: the last rows cost the most), under sharedcompute's
``schedule="static"`` and ``schedule="dynamic"``; numba's prange (its default static
schedule) for comparison. ``rowcost_uniform`` is the same kernel with every row the same
length (same total work): dynamic must not lose there.

NumPy: ``np.cumsum`` adds in order, so its last element is bitwise the loop's sum (sqrt is
correctly rounded everywhere).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "rowcost"
SIZES = {"default": dict(n=2000, slope=50, uniform=False, steep=False),
         "small": dict(n=200, slope=5, uniform=False, steep=False)}
OUTPUTS = ("out",)


def init(n, slope, uniform, steep):
    i = np.arange(n, dtype=np.int64)
    # steep: row i costs ~ i**2 (the same total work): a static split into halves gives
    # one worker 7/8 of it, so the bound over static is 1.75x (linear rows: 1.5x)
    lengths = 3 * slope * i * i // (2 * n) if steep else i * slope
    if uniform:
        lengths[:] = int(lengths.mean())
    return {"out": np.zeros(n), "lengths": lengths}


def np_rowcost(data, size):
    out, lengths = data["out"], data["lengths"]
    for i in range(out.shape[0]):
        L = lengths[i]
        out[i] = np.cumsum(np.sqrt(np.arange(L) + L))[-1] if L > 0 else 0.0


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_rowcost(out, lengths):
    for i in prange(out.shape[0]):
        L = lengths[i]
        acc = 0.0
        for j in range(L):
            acc += math.sqrt(j + L)
        out[i] = acc


def run_numba(data, size):
    nb_rowcost(data["out"], data["lengths"])


nb_rowcost_plain = without_fastmath(nb_rowcost)


def run_numba_plain(data, size):
    nb_rowcost_plain(data["out"], data["lengths"])


@sc.kernel
def sc_rows(out, lengths):
    for i in range(out.shape[0]):
        L = lengths[i]
        acc = 0.0
        for j in range(L):
            acc += math.sqrt(j + L)
        out[i] = acc


# "dynamic": the workers claim pieces of their own shares and steal from the others' through
# bounds in shared memory (#26 item 9), on a grid of at least 64 chunks per worker.
def sc_static(pool, data, size):
    pool.map(sc_rows, data["out"], data["lengths"], schedule="static")


def sc_dynamic(pool, data, size):
    pool.map(sc_rows, data["out"], data["lengths"], schedule="dynamic")


# #26 item 8: the same function as a kernel with numba's fastmath, as the numba prange row
# has it (the sum vectorises, adding in another order: compared with allclose, as numba's)
sc_rows_fast = sc.kernel(sc_rows.py_func, fastmath=True)


def sc_static_fast(pool, data, size):
    pool.map(sc_rows_fast, data["out"], data["lengths"], schedule="static")


def sc_dynamic_fast(pool, data, size):
    pool.map(sc_rows_fast, data["out"], data["lengths"], schedule="dynamic")


VARIANTS = {
    "numpy": ("numpy", np_rowcost),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "sc map static": ("sc", sc_static),
    "sc map dynamic": ("sc", sc_dynamic),
    "sc map static, fastmath": ("sc", sc_static_fast),
    "sc map dynamic, fastmath": ("sc", sc_dynamic_fast),
}
CHECK = {"numba prange": (1e-12, 0.0), "numba 1 thread": (1e-12, 0.0),
         "sc map static, fastmath": (1e-12, 0.0), "sc map dynamic, fastmath": (1e-12, 0.0)}
SC_CODE = ("sc_rows", "sc_static")
NUMBA_CODE = ("nb_rowcost",)
NOTES = ("sc bitwise equal to NumPy's in-order cumsum; numba fastmath=True (vectorises the "
         "sum: another order) compared with allclose, as are the sc fastmath rows "
         "(@sc.kernel(fastmath=True), #26 item 8)")
