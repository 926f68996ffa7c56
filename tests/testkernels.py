"""Kernels used by the tests; a real module so spawn/forkserver workers can import them."""
import os

import numba
import numpy as np

import sharedcompute as sc


def scale_add_reference(out, x, y, s):
    out[...] = x * s + y


@sc.kernel(reference=scale_add_reference)
def scale_add(out, x, y, s):
    """out = x * s + y for any number of dimensions."""
    for idx in np.ndindex(out.shape):
        out[idx] = x[idx] * s + y[idx]


def nd_sum_reference(x):
    return np.sum(x, dtype=np.float64)


@sc.kernel(reference=nd_sum_reference, combine=np.add)
def nd_sum(x):
    """float64 sum of any-dimensional input."""
    acc = 0.0
    for idx in np.ndindex(x.shape):
        acc += np.float64(x[idx])
    return acc


@sc.kernel
def write_pid(out):
    """Each worker writes its own pid into its rows (proves writes land in shared memory)."""
    with numba.objmode(pid="int64"):
        pid = os.getpid()
    for i in range(out.shape[0]):
        out[i] = pid


@sc.kernel
def fill_ones(out):
    for idx in np.ndindex(out.shape):
        out[idx] = 1.0


@sc.kernel
def try_write_input(out, x):
    """Writes into an argument it only reads: must fail (inputs are read-only)."""
    for i in range(x.shape[0]):
        x[i] = 0.0
        out[i] = 1.0


@sc.kernel(combine=np.add)
def raise_on_negative(x):
    for i in range(x.shape[0]):
        if x[i] < 0:
            raise ValueError("negative value found")
    return 0.0


def _thread_caps():
    from threadpoolctl import threadpool_info
    blas = max([info["num_threads"] for info in threadpool_info()] or [1])
    return blas, int(os.environ.get("NUMBA_NUM_THREADS", "0"))


@sc.kernel
def report_threads(out):
    """Reports (max BLAS/OpenMP threads, NUMBA_NUM_THREADS) as seen inside the worker."""
    with numba.objmode(blas="int64", nb="int64"):
        blas, nb = _thread_caps()
    for i in range(out.shape[0]):
        out[i, 0] = blas
        out[i, 1] = nb


def _sleep(seconds):
    import time
    time.sleep(seconds)


@sc.kernel(whole=("ctl",))
def steered(out, x, ctl):
    """out = 2x + 1, steered by data so that repeated identical calls (the doorbell path) can
    fail: ctl[0] == 1 raises, 2 hangs in nopython code, 3 sleeps ctl[1] seconds first."""
    if ctl[0] == 1.0:
        raise ValueError("steered to fail")
    while ctl[0] == 2.0:
        pass
    if ctl[0] == 3.0:
        with numba.objmode():
            _sleep(ctl[1])
    for i in range(out.shape[0]):
        out[i] = 2.0 * x[i] + 1.0


@sc.kernel
def local_index(o):
    """Writes each row's index within its call: the result depends on the partition (a
    kernel bug a direct call must reproduce as the pool has it, issue 23 item 14)."""
    for i in range(o.shape[0]):
        o[i] = i
