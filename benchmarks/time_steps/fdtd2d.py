"""FDTD-2D as PolyBench/NPBench fdtd_2d: three fields ex, ey, hz; per step a source term
``_fict_[t]`` written into ey's first row, then ey and ex from hz, a barrier, then hz from
ex and ey (two barriers per step).

sharedcompute: a Python loop of two ``pool.map`` calls per step (2 * tmax calls), the step
index passed as a scalar; padding boundaries and ``position=True`` for the first row's
source term and the last row hz does not update. "sc program": the same two kernels as a
step program, ``pool.iterate(sc.program(...), steps=tmax)``: one call, the step index
``sc.STEP``, a barrier between the stages inside the workers. "sc program, edges": the
program with kernels written like numba's loop, ``position="edges"`` telling a call that
it holds the first row (the source) or the last (which hz keeps).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "fdtd2d"
SIZES = {"default": dict(tmax=60, nx=1000, ny=1200), "small": dict(tmax=5, nx=40, ny=50)}
OUTPUTS = ("ex", "ey", "hz")


def init(tmax, nx, ny):
    i = np.arange(nx, dtype=np.float64)[:, None]
    j = np.arange(ny, dtype=np.float64)[None, :]
    return {"ex": i * (j + 1) / nx, "ey": i * (j + 2) / ny, "hz": i * (j + 3) / nx,
            "fict": np.arange(tmax, dtype=np.float64)}


def np_fdtd(data, size):
    ex, ey, hz, fict = data["ex"], data["ey"], data["hz"], data["fict"]
    for t in range(size["tmax"]):
        ey[0, :] = fict[t]
        ey[1:, :] -= 0.5 * (hz[1:, :] - hz[:-1, :])
        ex[:, 1:] -= 0.5 * (hz[:, 1:] - hz[:, :-1])
        hz[:-1, :-1] -= 0.7 * (ex[:-1, 1:] - ex[:-1, :-1] + ey[1:, :-1] - ey[:-1, :-1])


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_fdtd(tmax, ex, ey, hz, fict):
    nx, ny = ex.shape
    for t in range(tmax):
        for i in prange(nx):
            for j in range(ny):
                ey[i, j] = fict[t] if i == 0 else ey[i, j] - 0.5 * (hz[i, j] - hz[i - 1, j])
                if j > 0:
                    ex[i, j] -= 0.5 * (hz[i, j] - hz[i, j - 1])
        for i in prange(nx - 1):
            for j in range(ny - 1):
                hz[i, j] -= 0.7 * (ex[i, j + 1] - ex[i, j] + ey[i + 1, j] - ey[i, j])


def run_numba(data, size):
    nb_fdtd(size["tmax"], data["ex"], data["ey"], data["hz"], data["fict"])


nb_fdtd_plain = without_fastmath(nb_fdtd)


def run_numba_plain(data, size):
    nb_fdtd_plain(size["tmax"], data["ex"], data["ey"], data["hz"], data["fict"])


@sc.kernel(writes=("ey", "ex"), depth=1, boundary=0.0, position=True)
def sc_e_update(ey, ex, hz, source, pos):
    start = pos[0]
    ny = ey.shape[1]
    for i in range(ey.shape[0]):
        r = i + 1  # hz has one halo row on each side
        for j in range(ny):
            if start + i == 0:
                ey[i, j] = source
            else:
                ey[i, j] = ey[i, j] - 0.5 * (hz[r, j] - hz[r - 1, j])
            if j > 0:
                ex[i, j] = ex[i, j] - 0.5 * (hz[r, j] - hz[r, j - 1])


@sc.kernel(depth=1, boundary=0.0, position=True)
def sc_h_update(hz, ex, ey, pos):
    start, stop, nx = pos
    ny = hz.shape[1]
    for i in range(hz.shape[0]):
        if start + i == nx - 1:
            continue  # hz's last row is not updated
        r = i + 1
        for j in range(ny - 1):
            hz[i, j] = hz[i, j] - 0.7 * (((ex[r, j + 1] - ex[r, j]) + ey[r + 1, j]) - ey[r, j])


def sc_fdtd(pool, data, size):
    ex, ey, hz, fict = data["ex"], data["ey"], data["hz"], data["fict"]
    for t in range(size["tmax"]):
        pool.map(sc_e_update, ey, ex, hz, float(fict[t]))
        pool.map(sc_h_update, hz, ex, ey)


@sc.kernel(writes=("ey", "ex"), depth=1, boundary=0.0, position=True)
def sc_e_update_t(ey, ex, hz, fict, t, pos):  # sc_e_update with the source read here
    start = pos[0]
    ny = ey.shape[1]
    for i in range(ey.shape[0]):
        r = i + 1
        for j in range(ny):
            if start + i == 0:
                ey[i, j] = fict[t[0]]
            else:
                ey[i, j] = ey[i, j] - 0.5 * (hz[r, j] - hz[r - 1, j])
            if j > 0:
                ex[i, j] = ex[i, j] - 0.5 * (hz[r, j] - hz[r, j - 1])


def sc_fdtd_bound(pool, data, size):
    # pool.bind: planned once; the step index travels in a small plain array changed in
    # place between calls (bound scalars are fixed)
    ex, ey, hz = data["ex"], data["ey"], data["hz"]
    t = np.zeros(1, np.int64)
    e_step = pool.bind(sc_e_update_t, ey, ex, hz, np.array(data["fict"]), t)
    h_step = pool.bind(sc_h_update, hz, ex, ey)
    for step in range(size["tmax"]):
        t[0] = step
        e_step()
        h_step()


@sc.kernel(writes=("ey", "ex"), whole=("fict",), depth=1, boundary=0.0, position=True)
def sc_e_update_step(ey, ex, hz, fict, t, pos):  # sc_e_update with the source read here
    start = pos[0]
    ny = ey.shape[1]
    for i in range(ey.shape[0]):
        r = i + 1
        for j in range(ny):
            if start + i == 0:
                ey[i, j] = fict[t]
            else:
                ey[i, j] = ey[i, j] - 0.5 * (hz[r, j] - hz[r - 1, j])
            if j > 0:
                ex[i, j] = ex[i, j] - 0.5 * (hz[r, j] - hz[r, j - 1])


def sc_fdtd_program(pool, data, size):
    # one call: both stages of every step inside the workers, a barrier between them;
    # sc.STEP is the step index t
    ex, ey, hz = data["ex"], data["ey"], data["hz"]
    pool.iterate(sc.program(sc.stage(sc_e_update_step, ey, ex, hz, data["fict"], sc.STEP),
                            sc.stage(sc_h_update, hz, ex, ey)), steps=size["tmax"])


# the program written like the numba loop, with #26's edge flags: position="edges" says
# whether a call holds the first row (the source) or the last (hz keeps it)
@sc.kernel(writes=("ey", "ex"), whole=("fict",), depth=1, boundary=0.0, position="edges")
def sc_e_step(ey, ex, hz, fict, t, edges):
    for i in range(ey.shape[0]):
        for j in range(ey.shape[1]):
            ey[i, j] = fict[t] if edges[0] and i == 0 else ey[i, j] - 0.5 * (hz[i + 1, j] - hz[i, j])
            if j > 0:
                ex[i, j] -= 0.5 * (hz[i + 1, j] - hz[i + 1, j - 1])


@sc.kernel(depth=1, boundary=0.0, position="edges")
def sc_h_step(hz, ex, ey, edges):
    for i in range(hz.shape[0] - 1 if edges[1] else hz.shape[0]):
        for j in range(hz.shape[1] - 1):
            hz[i, j] -= 0.7 * (ex[i + 1, j + 1] - ex[i + 1, j] + ey[i + 2, j] - ey[i + 1, j])


def sc_fdtd_edges(pool, data, size):
    ex, ey, hz = data["ex"], data["ey"], data["hz"]
    pool.iterate(sc.program(sc.stage(sc_e_step, ey, ex, hz, data["fict"], sc.STEP),
                            sc.stage(sc_h_step, hz, ex, ey)), steps=size["tmax"])


VARIANTS = {
    "numpy": ("numpy", np_fdtd),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "numba prange, shared memory": ("numba-par-shm", run_numba),
    "sc map loop": ("sc", sc_fdtd),
    "sc bind loop": ("sc", sc_fdtd_bound),
    "sc program": ("sc", sc_fdtd_program),
    "sc program, edges": ("sc", sc_fdtd_edges),
}
CHECK = {"numba prange": (1e-9, 1e-9), "numba 1 thread": (1e-9, 1e-9),
         "numba prange, shared memory": (1e-9, 1e-9)}
SC_CODE = ("sc_e_update", "sc_h_update", "sc_fdtd")
SC_VARIANT_CODE = {"sc program": ("sc_e_update_step", "sc_h_update", "sc_fdtd_program"),
                   "sc program, edges": ("sc_e_step", "sc_h_step", "sc_fdtd_edges")}
NUMBA_CODE = ("nb_fdtd",)
NOTES = ("sc bitwise equal to NumPy; numba fastmath=True (NPBench) compared with allclose. "
         "fict is a plain array read by the parent: one scalar per call")
