"""Kernels with numba options (fastmath, error_model, parallel) for test_kernel_options.py;
a real module so spawn/forkserver workers import them by name. Each comes in pairs that
differ only by the option, built from one plain function."""
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


row_sums = sc.kernel(_row_sums)
row_sums_fast = sc.kernel(_row_sums, fastmath=True)
row_sums_reassoc = sc.kernel(_row_sums, fastmath={"reassoc", "nsz"})


def _nan_flags(out, x):
    """out[i] = 1 where x[i] is NaN (``x != x``): fastmath's ``nnan`` folds it to 0."""
    for i in range(x.shape[0]):
        out[i] = 1.0 if x[i] != x[i] else 0.0


nan_flags = sc.kernel(_nan_flags)
nan_flags_fast = sc.kernel(_nan_flags, fastmath=True)


def _ratio(out, a, b):
    for i in range(out.shape[0]):
        out[i] = a[i] / b[i]


ratio = sc.kernel(_ratio)
ratio_numpy = sc.kernel(_ratio, error_model="numpy")


def _int_quotient(out, a, b):
    for i in range(out.shape[0]):
        out[i] = a[i] // b[i]


int_quotient_numpy = sc.kernel(_int_quotient, error_model="numpy")


def stencil_numpy(out, u):
    """The issue's 5-point body on whole arrays (the oracle)."""
    out[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


def _stencil(out, u):
    """The same body on a partition: ``u`` carries one halo row each side."""
    out[:, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


stencil = sc.kernel(_stencil, depth=1)
stencil_fused = sc.kernel(_stencil, depth=1, parallel=True)


@sc.kernel(parallel=True)
def thread_report(out):
    """Each worker writes numba's thread count for parallel code and its OS thread count."""
    n = numba.get_num_threads()
    with numba.objmode(tasks="int64"):
        tasks = len(os.listdir("/proc/self/task"))
    for i in range(out.shape[0]):
        out[i, 0] = n
        out[i, 1] = tasks


def _prange_sum(x):
    acc = 0.0
    for i in numba.prange(x.shape[0]):
        acc += x[i]
    return acc


prange_sum = sc.kernel(_prange_sum, combine=np.add, parallel=True)
