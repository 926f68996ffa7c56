"""Jacobi-2D as PolyBench/NPBench jacobi_2d: A and B updated in turn, each keeping its OWN
fixed edges (the two arrays start with different edge values).

sharedcompute: ``pool.iterate`` on the pair (B, A). "sc iterate" is the first port:
``boundary="none"`` would copy A's edge rows into B, so the kernel takes an unused padding
boundary (``boundary=0.0``), ``position=True`` and skips the global edge rows by hand.
"sc iterate, fixed" is the port with ``boundary="fixed"`` (#26 item 1): the kernel is the
numba loop body, and each array keeps its own edges.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "jacobi2d"
SIZES = {"default": dict(n=1000, tsteps=51), "small": dict(n=64, tsteps=6)}
OUTPUTS = ("A", "B")


def init(n, tsteps):
    i = np.arange(n, dtype=np.float64)[:, None]
    j = np.arange(n, dtype=np.float64)[None, :]
    return {"A": (i * (j + 2) + 2) / n, "B": (i * (j + 3) + 3) / n}


def np_jacobi(data, size):
    A, B = data["A"], data["B"]
    for t in range(1, size["tsteps"]):
        B[1:-1, 1:-1] = 0.2 * (A[1:-1, 1:-1] + A[1:-1, :-2] + A[1:-1, 2:] + A[2:, 1:-1]
                               + A[:-2, 1:-1])
        A[1:-1, 1:-1] = 0.2 * (B[1:-1, 1:-1] + B[1:-1, :-2] + B[1:-1, 2:] + B[2:, 1:-1]
                               + B[:-2, 1:-1])


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_jacobi(tsteps, A, B):
    n, m = A.shape
    for t in range(1, tsteps):
        for i in prange(1, n - 1):
            for j in range(1, m - 1):
                B[i, j] = 0.2 * (A[i, j] + A[i, j - 1] + A[i, j + 1] + A[i + 1, j] + A[i - 1, j])
        for i in prange(1, n - 1):
            for j in range(1, m - 1):
                A[i, j] = 0.2 * (B[i, j] + B[i, j - 1] + B[i, j + 1] + B[i + 1, j] + B[i - 1, j])


def run_numba(data, size):
    nb_jacobi(size["tsteps"], data["A"], data["B"])


nb_jacobi_plain = without_fastmath(nb_jacobi)


def run_numba_plain(data, size):
    nb_jacobi_plain(size["tsteps"], data["A"], data["B"])


# The first port: boundary=0.0 only pads, position=True only finds the edge rows
# ("sc iterate, fixed" below drops both and the `if`).
@sc.kernel(depth=1, boundary=0.0, position=True)
def sc_sweep(out, u, pos):
    start, stop, n = pos
    m = out.shape[1]
    for i in range(out.shape[0]):
        if start + i == 0 or start + i == n - 1:
            continue  # a fixed edge row: each array keeps its own
        r = i + 1
        for j in range(1, m - 1):
            out[i, j] = 0.2 * ((((u[r, j] + u[r, j - 1]) + u[r, j + 1]) + u[r + 1, j])
                               + u[r - 1, j])


def sc_jacobi(pool, data, size):
    # sweep 1 writes B from A, sweep 2 A from B, ...: iterate's (out, u) swap is exactly that
    pool.iterate(sc_sweep, data["B"], data["A"], steps=2 * (size["tsteps"] - 1))


# the port with #26's boundary="fixed": each array keeps the edges the kernel leaves alone
@sc.kernel(depth=1, boundary="fixed")
def sc_sweep_fixed(out, u):
    for i in range(out.shape[0]):
        r = i + 1  # out[i] lines up with u[r]
        for j in range(1, out.shape[1] - 1):
            out[i, j] = 0.2 * (u[r, j] + u[r, j - 1] + u[r, j + 1] + u[r + 1, j] + u[r - 1, j])


def sc_jacobi_fixed(pool, data, size):
    pool.iterate(sc_sweep_fixed, data["B"], data["A"], steps=2 * (size["tsteps"] - 1))


VARIANTS = {
    "numpy": ("numpy", np_jacobi),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "numba prange, shared memory": ("numba-par-shm", run_numba),
    "sc iterate": ("sc", sc_jacobi),
    "sc iterate, fixed": ("sc", sc_jacobi_fixed),
}
CHECK = {"numba prange": (1e-12, 1e-12), "numba 1 thread": (1e-12, 1e-12),
         "numba prange, shared memory": (1e-12, 1e-12)}
SC_CODE = ("sc_sweep", "sc_jacobi")
SC_VARIANT_CODE = {"sc iterate, fixed": ("sc_sweep_fixed", "sc_jacobi_fixed")}
NUMBA_CODE = ("nb_jacobi",)
NOTES = ("sc bitwise equal to NumPy (same sum order); numba uses fastmath=True as NPBench's "
         "numba variants do, so it is compared with allclose")
