"""Kernels with numba options (fastmath, error_model, parallel) for test_kernel_options.py;
a real module so spawn/forkserver workers import them by name. Each comes in pairs that
differ only by the option. Decorated functions travel by reference (module and name); the
plain ``_functions`` are for kernels a test builds itself (``sc.kernel(_row_sums,
fastmath=True)``), which travel by value (their name finds the function, not the kernel)."""
import os

import numba
import numpy as np

import sharedcompute as sc


def _row_sums(out, x):
    """out[i] = x[i, 0] + x[i, 1] + ... in source order: a reduction fastmath's
    ``reassoc`` may reorder (vectorised partial sums), so the bits can differ."""
    for i in range(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            acc += x[i, j]
        out[i] = acc


def row_sums_reference(out, x):
    """Sequential sums, as the plain loop adds (np.sum's pairwise order would differ)."""
    out[:] = np.add.accumulate(x, axis=1)[:, -1]


@sc.kernel(reference=row_sums_reference)
def row_sums(out, x):
    for i in range(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            acc += x[i, j]
        out[i] = acc


@sc.kernel(fastmath=True, reference=row_sums_reference)
def row_sums_fast(out, x):
    for i in range(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            acc += x[i, j]
        out[i] = acc


def scale_reference(out, x):
    out[:] = 2.0 * x + 1.0


@sc.kernel(fastmath=True, reference=scale_reference)
def scale_fast(out, x):
    """Bitwise the reference under any flags: 2.0 * x is exact, so a fused multiply-add
    ('contract') rounds once as the reference does, and there is nothing to reorder."""
    for i in range(out.shape[0]):
        out[i] = 2.0 * x[i] + 1.0


def _nan_flags(out, x):
    """out[i] = 1 where x[i] is NaN (``x != x``): fastmath's ``nnan`` folds it to 0."""
    for i in range(x.shape[0]):
        out[i] = 1.0 if x[i] != x[i] else 0.0


@sc.kernel(fastmath=True)
def nan_flags_fast(out, x):
    for i in range(x.shape[0]):
        out[i] = 1.0 if x[i] != x[i] else 0.0


@sc.kernel
def ratio(out, a, b):
    for i in range(out.shape[0]):
        out[i] = a[i] / b[i]


@sc.kernel(error_model="numpy")
def ratio_numpy(out, a, b):
    for i in range(out.shape[0]):
        out[i] = a[i] / b[i]


def stencil_numpy(out, u):
    """The issue's 5-point body on whole arrays (the oracle)."""
    out[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


def stencil_reference(out, u):
    """verify's reference: the written rows of out, u padded by the halo (run_reference)."""
    out[:, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


@sc.kernel(depth=1, reference=stencil_reference)
def stencil(out, u):
    """The same body on a partition: ``u`` carries one halo row each side."""
    out[:, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


@sc.kernel(depth=1, parallel=True, reference=stencil_reference)
def stencil_fused(out, u):
    out[:, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


@sc.kernel(parallel=True)
def thread_report(out):
    """Each worker writes numba's thread count for parallel code (after a fused loop ran,
    so numba's threads are launched) and its OS thread count."""
    out[:, 0] = out[:, 0] * 0.0 + 1.0  # an array expression: a parfor
    n = numba.get_num_threads()
    with numba.objmode(tasks="int64"):
        tasks = len(os.listdir("/proc/self/task"))
    for i in range(out.shape[0]):
        out[i, 0] = n
        out[i, 1] = tasks


@sc.kernel(combine=np.add, parallel=True)
def prange_sum(x):
    acc = 0.0
    for i in numba.prange(x.shape[0]):
        acc += x[i]
    return acc


def task_count() -> int:
    """This process's OS threads (for pool.submit)."""
    return len(os.listdir("/proc/self/task"))
