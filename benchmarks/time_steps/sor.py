"""Gauss-Seidel/SOR 2-D in place (PolyBench seidel_2d's sweep order, with a relaxation
factor): every point takes the NEW values of its upper and left neighbours and the old
values of its lower and right ones. The serial sweep is the algorithm.

- NumPy: the same sweep along anti-diagonals (all points of i + j = d depend only on
  diagonal d - 1, already new, and d + 1, still old), bitwise the serial loop.
- numba one thread: the serial loop; it is the baseline, since a prange over rows of this
  loop is a race (rows read their upper neighbour while it is being written).
- numba prange red-black: a red-black ordering parallelises, but it is NOT the same
  algorithm (other iterates, other result): timed for reference, not compared.
- sharedcompute before wavefront stages (issue #26 item 7): no partition could wait on its neighbour, so the
  port runs the serial sweep as one task (``pool.submit`` of numba's serial function,
  compiled without fastmath) on one worker; and a hand-pipelined wavefront of tasks (row
  bands x column blocks, one round of submits per anti-diagonal of blocks), bitwise the
  serial sweep. The block function's loop, with its bounds passed at run time, ran 1.6x
  slower than the serial function's ``range(1, n - 1)`` loops in one process (0.20 against
  0.125 s at the default size; a view with a halo and loops from 1 did not help either;
  not investigated further): part of the wavefront's gap is that, not the tasks.
- sc wavefront (#26 item 7 done): the serial sweep itself as a kernel on a halo-padded
  block, run as a step program's ``order="wavefront"`` stage: each worker sweeps its
  rows block by block (blocks about 8 columns wide by default), two blocks behind
  the worker above it (progress counters in shared memory), a barrier per sweep;
  bitwise the serial loop. One ``pool.iterate`` call for all the sweeps.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc
from time_steps.common import without_fastmath

NAME = "sor"
SIZES = {"default": dict(n=1000, steps=30, omega=1.5, blocks=8),
         "small": dict(n=40, steps=3, omega=1.5, blocks=4)}
OUTPUTS = ("u",)


def init(n, steps, omega, blocks):
    u = np.random.default_rng(1).random((n, n))
    u[0], u[-1], u[:, 0], u[:, -1] = 1.0, 0.0, 0.5, 0.25
    return {"u": u}


def coeffs(omega):
    return 1.0 - omega, omega * 0.25


def np_sor(data, size):
    u = data["u"]
    n, m = u.shape
    a, b = coeffs(size["omega"])
    for t in range(size["steps"]):
        for d in range(2, n + m - 3):  # interior points with i + j = d
            i = np.arange(max(1, d - m + 2), min(n - 2, d - 1) + 1)
            j = d - i
            u[i, j] = a * u[i, j] + b * (((u[i - 1, j] + u[i, j - 1]) + u[i, j + 1])
                                         + u[i + 1, j])


@numba.njit(fastmath=True, cache=True)
def nb_sor(u, steps, a, b):
    n, m = u.shape
    for t in range(steps):
        for i in range(1, n - 1):
            for j in range(1, m - 1):
                u[i, j] = a * u[i, j] + b * (u[i - 1, j] + u[i, j - 1] + u[i, j + 1] + u[i + 1, j])


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_sor_redblack(u, steps, a, b):
    n, m = u.shape
    for t in range(steps):
        for color in range(2):
            for i in prange(1, n - 1):
                for j in range(1 + (i + color) % 2, m - 1, 2):
                    u[i, j] = a * u[i, j] + b * (u[i - 1, j] + u[i, j - 1] + u[i, j + 1]
                                                 + u[i + 1, j])


def run_numba(data, size):
    a, b = coeffs(size["omega"])
    nb_sor(data["u"], size["steps"], a, b)


def run_redblack(data, size):
    a, b = coeffs(size["omega"])
    nb_sor_redblack(data["u"], size["steps"], a, b)


nb_sor_plain = without_fastmath(nb_sor)


def run_numba_plain(data, size):
    a, b = coeffs(size["omega"])
    nb_sor_plain(data["u"], size["steps"], a, b)


@numba.njit(cache=True)
def sor_block(u, steps, a, b, r0, r1, c0, c1):
    for t in range(steps):
        for i in range(max(r0, 1), min(r1, u.shape[0] - 1)):
            for j in range(max(c0, 1), min(c1, u.shape[1] - 1)):
                u[i, j] = a * u[i, j] + b * (((u[i - 1, j] + u[i, j - 1]) + u[i, j + 1])
                                             + u[i + 1, j])


def sor_task(u, steps, a, b, r0, r1, c0, c1):
    # a task receives the SharedArray itself (a handle): it may read and write any row
    sor_block(np.asarray(u), steps, a, b, r0, r1, c0, c1)


def sor_task_serial(u, steps, a, b):
    nb_sor_plain(np.asarray(u), steps, a, b)  # numba's serial loop itself, no fastmath


# The two ports from before wavefront stages existed (#26 item 7), kept for comparison.
def sc_sor_serial(pool, data, size):
    a, b = coeffs(size["omega"])
    pool.submit(sor_task_serial, data["u"], size["steps"], a, b).result()


def sc_sor_wavefront(pool, data, size):
    u, n = data["u"], data["u"].shape[0]
    a, b = coeffs(size["omega"])
    bands, blocks = pool.n_workers, size["blocks"]
    rows = np.linspace(0, n, bands + 1).astype(int)
    cols = np.linspace(0, n, blocks + 1).astype(int)
    for t in range(size["steps"]):
        for s in range(bands + blocks - 1):  # band p works on column block s - p
            futures = [pool.submit(sor_task, u, 1, a, b, rows[p], rows[p + 1], cols[s - p],
                                   cols[s - p + 1])
                       for p in range(bands) if 0 <= s - p < blocks]
            for f in futures:
                f.result()


# #26 item 7: the serial sweep itself as a kernel, run by all workers as a wavefront stage
# (column blocks, each worker one block behind the worker above it): bitwise the serial loop.
@sc.kernel(writes=("u",), depth=1)
def sc_sor_sweep(u, a, b):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            u[i, j] = a * u[i, j] + b * (((u[i - 1, j] + u[i, j - 1]) + u[i, j + 1])
                                         + u[i + 1, j])


def sc_sor_program(pool, data, size):
    a, b = coeffs(size["omega"])
    sweep = sc.stage(sc_sor_sweep, data["u"], a, b, order="wavefront")
    pool.iterate(sc.program(sweep), steps=size["steps"])


VARIANTS = {
    "numpy (anti-diagonals)": ("numpy", np_sor),
    "numba prange red-black": ("numba-par-other", run_redblack),
    "numba 1 thread (serial)": ("numba-1t", run_numba),
    "numba 1 thread, no fastmath": ("numba-1t-other", run_numba_plain),
    "sc one task (serial)": ("sc", sc_sor_serial),
    "sc wavefront of tasks": ("sc", sc_sor_wavefront),
    "sc wavefront": ("sc", sc_sor_program),
}
UNTIMED = ("numpy (anti-diagonals)",)  # the oracle: 2n NumPy calls per sweep, not a rival
CHECK = {"numba prange red-black": None, "numba 1 thread (serial)": (1e-9, 1e-12)}
SC_CODE = ("sor_block", "sor_task", "sc_sor_wavefront")
NUMBA_CODE = ("nb_sor",)
SC_VARIANT_CODE = {"sc wavefront": ("sc_sor_sweep", "sc_sor_program")}
NOTES = ("red-black is another algorithm (not compared, and not a ratio baseline: numba "
         "cannot run this sweep in parallel, the baseline is numba 1 thread). numba "
         "fastmath=True compared "
         "with allclose; every sc version bitwise the anti-diagonal NumPy sweep. Lines: the "
         "wavefront version (sor_block + sor_task + driver) vs the serial njit loop")
