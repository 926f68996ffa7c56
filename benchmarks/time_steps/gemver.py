"""gemver as PolyBench/NPBench: A += u1 v1^T + u2 v2^T; x += beta * A^T y + z;
w += alpha * A x.

sharedcompute, one pass fewer (issue #26 item 5): the rank-2 update returns its rows'
partial of A^T y (a vector of length n, combined with np.add along reduce's fixed tree)
from the same pass, ``pool.map(sc_rank2_yta, ..., partial=True)``; x is updated in the
parent, and A read a second time by the ``map`` for w: 2 calls, 2 passes over A. The
previous port (a ``map``, a ``reduce`` reading A again, a ``map``: 3 passes) stays as a row.

numba: the column sums are written cache-friendly (prange over column blocks, rows in
order inside), as a numba user would after seeing the strided prange over columns that
PolyBench's C loop order gives.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "gemver"
SIZES = {"default": dict(n=3000), "small": dict(n=64)}
OUTPUTS = ("A", "x", "w")
ALPHA, BETA = 1.5, 1.2


def init(n):
    rng = np.random.default_rng(3)
    d = {k: rng.random(n) for k in ("u1", "v1", "u2", "v2", "w", "x", "y", "z")}
    d["A"] = rng.random((n, n))
    return d


def np_gemver(data, size):
    A, x, w = data["A"], data["x"], data["w"]
    A += np.outer(data["u1"], data["v1"]) + np.outer(data["u2"], data["v2"])
    x += BETA * data["y"] @ A + data["z"]
    w += ALPHA * A @ x


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_gemver(alpha, beta, A, u1, v1, u2, v2, w, x, y, z):
    n = A.shape[0]
    for i in prange(n):
        for j in range(n):
            A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]
    nblocks = (n + 63) // 64
    for b in prange(nblocks):
        j0, j1 = b * 64, min(n, b * 64 + 64)
        acc = np.zeros(j1 - j0)
        for i in range(n):
            for j in range(j0, j1):
                acc[j - j0] += A[i, j] * y[i]
        for j in range(j0, j1):
            x[j] += beta * acc[j - j0] + z[j]
    for i in prange(n):
        s = 0.0
        for j in range(n):
            s += A[i, j] * x[j]
        w[i] += alpha * s


def run_numba(data, size):
    d = data
    nb_gemver(ALPHA, BETA, d["A"], d["u1"], d["v1"], d["u2"], d["v2"], d["w"], d["x"],
              d["y"], d["z"])


nb_gemver_plain = without_fastmath(nb_gemver)


def run_numba_plain(data, size):
    d = data
    nb_gemver_plain(ALPHA, BETA, d["A"], d["u1"], d["v1"], d["u2"], d["v2"], d["w"], d["x"],
                    d["y"], d["z"])


@sc.kernel(writes=("A",), whole=("v1", "v2"), combine=np.add)
def sc_rank2_yta(A, u1, u2, v1, v2, y):
    acc = np.zeros(A.shape[1])
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]
            acc[j] += A[i, j] * y[i]
    return acc


def sc_gemver(pool, data, size):
    d = data
    _, s = pool.map(sc_rank2_yta, d["A"], d["u1"], d["u2"], d["v1"], d["v2"], d["y"],
                    partial=True)
    x = np.asarray(d["x"])
    x += BETA * s + np.asarray(d["z"])
    pool.map(sc_gemv, d["w"], d["A"], d["x"], ALPHA)


# The previous port, three passes over A: the rank-2 update, then A^T y read again.
@sc.kernel(whole=("v1", "v2"))
def sc_rank2(A, u1, u2, v1, v2):
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]


@sc.kernel(combine=np.add)
def sc_yta(A, y):
    acc = np.zeros(A.shape[1])
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            acc[j] += A[i, j] * y[i]
    return acc


@sc.kernel(whole=("x",))
def sc_gemv(w, A, x, alpha):
    for i in range(A.shape[0]):
        s = 0.0
        for j in range(A.shape[1]):
            s += A[i, j] * x[j]
        w[i] += alpha * s


def sc_gemver_3pass(pool, data, size):
    d = data
    pool.map(sc_rank2, d["A"], d["u1"], d["u2"], d["v1"], d["v2"])
    s = pool.reduce(sc_yta, d["A"], d["y"])
    x = np.asarray(d["x"])
    x += BETA * s + np.asarray(d["z"])
    pool.map(sc_gemv, d["w"], d["A"], d["x"], ALPHA)


VARIANTS = {
    "numpy": ("numpy", np_gemver),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "numba prange, shared memory": ("numba-par-shm", run_numba),
    "sc map(partial)+map": ("sc", sc_gemver),
    "sc map+reduce+map (3 passes)": ("sc", sc_gemver_3pass),
}
TOL = (1e-10, 1e-10)
CHECK = {"numba prange": TOL, "numba 1 thread": TOL, "numba prange, no fastmath": TOL,
         "numba prange, shared memory": TOL,
         "sc map(partial)+map": {"A": "bitwise", "x": TOL, "w": TOL},
         "sc map+reduce+map (3 passes)": {"A": "bitwise", "x": TOL, "w": TOL}}
SC_CODE = ("sc_rank2_yta", "sc_gemv", "sc_gemver")
NUMBA_CODE = ("nb_gemver",)
NOTES = ("allclose(rtol=1e-10, atol=1e-10) for all: NumPy's y @ A and A @ x are BLAS sums "
         "(another order); A itself is bitwise in sc (u1*v1 + u2*v2 per element, as "
         "np.outer + np.outer)")
