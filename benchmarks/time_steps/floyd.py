"""Floyd-Warshall as PolyBench/NPBench floyd_warshall: for each k, path = min(path,
path[:, k] + path[k, :]), in place (row k and column k do not change at step k, since
path[k, k] >= 0, so the in-place update is race free).

sharedcompute today (issue #26 item 6): a worker may not read rows another worker is
writing, even the finished row k; the port snapshots row k in the parent and passes it as a
small plain array, one ``pool.map`` per k (n calls, n barriers). The snapshot has as many
rows as ``path`` and is refused as "looks split" unless wrapped in ``sc.whole`` (the
error message's advice, followed). "sc program": the k loop as one step program, row k a
declared snapshot (``sc.snapshot(path, sc.STEP)``): its owner copies it into a shared slot
at the end of step k - 1, so one barrier per k and no parent round trip.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "floyd"
SIZES = {"default": dict(n=700), "small": dict(n=48)}
OUTPUTS = ("path",)


def init(n):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    path = (i * j % 7 + 1).astype(np.int32)
    path[((i + j) % 13 == 0) | ((i + j) % 7 == 0) | ((i + j) % 11 == 0)] = 999
    return {"path": path}


def np_floyd(data, size):
    path = data["path"]
    for k in range(path.shape[0]):
        path[:] = np.minimum(path[:], np.add.outer(path[:, k], path[k, :]))


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_floyd(path):
    n = path.shape[0]
    for k in range(n):
        for i in prange(n):
            for j in range(n):
                path[i, j] = min(path[i, j], path[i, k] + path[k, j])


def run_numba(data, size):
    nb_floyd(data["path"])


nb_floyd_plain = without_fastmath(nb_floyd)


def run_numba_plain(data, size):
    nb_floyd_plain(data["path"])


# #26 item 6 done: "sc program" below takes row k as sc.snapshot(path, sc.STEP), the k loop
# inside the workers (a barrier per k): one call, no parent copies.
@sc.kernel
def sc_relax(path, rowk, k):
    for i in range(path.shape[0]):
        d = path[i, k]
        for j in range(path.shape[1]):
            path[i, j] = min(path[i, j], d + rowk[j])


def sc_floyd(pool, data, size):
    path = data["path"]
    for k in range(path.shape[0]):
        pool.map(sc_relax, path, sc.whole(np.array(path[k])), k)


@sc.kernel
def sc_relax_k(path, rowk, kk):
    k = kk[0]
    for i in range(path.shape[0]):
        d = path[i, k]
        for j in range(path.shape[1]):
            path[i, j] = min(path[i, j], d + rowk[j])


def sc_floyd_bound(pool, data, size):
    # pool.bind: planned once; row k and k travel in small plain arrays changed in place
    path = data["path"]
    rowk, kk = np.empty(path.shape[1], path.dtype), np.zeros(1, np.int64)
    step = pool.bind(sc_relax_k, path, sc.whole(rowk), kk)
    for k in range(path.shape[0]):
        rowk[:] = path[k]
        kk[0] = k
        step()


def sc_floyd_program(pool, data, size):
    # one call: the k loop inside the workers, a barrier per k; row k as it was when step k
    # started (sc.snapshot), while its owner updates it
    path = data["path"]
    pool.iterate(sc.program(sc.stage(sc_relax, path, sc.snapshot(path, sc.STEP), sc.STEP)),
                 steps=path.shape[0])


VARIANTS = {
    "numpy": ("numpy", np_floyd),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "sc map per k": ("sc", sc_floyd),
    "sc bind per k": ("sc", sc_floyd_bound),
    "sc program": ("sc", sc_floyd_program),
}
CHECK = {}
SC_CODE = ("sc_relax", "sc_floyd")
SC_VARIANT_CODE = {"sc program": ("sc_relax", "sc_floyd_program")}
NUMBA_CODE = ("nb_floyd",)
NOTES = "int32 as PolyBench: every variant bitwise (min and + are exact)"
