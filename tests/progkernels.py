"""Plain-function kernels that log every call they get (tests/test_progress_insights.py): each
call appends the number of rows it wrote to the file ``log`` (one O_APPEND write, whole even
when workers write at once), so a test counts the kernel calls of a pool call in any backend.
A real module, so that spawn/forkserver workers import it by name."""
import os
import time

import numpy as np

import sharedcompute as sc


def note(log: str, rows: int) -> None:
    """Append one call's rows to ``log`` (nothing when log is empty)."""
    if not log:
        return
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"%d\n" % rows)
    finally:
        os.close(fd)


def calls(log: str) -> list[int]:
    """The rows of every call logged so far, sorted (the order workers finish is not fixed);
    empties the log for the next call."""
    if not os.path.exists(log):
        return []
    with open(log) as f:
        out = sorted(int(line) for line in f)
    os.remove(log)
    return out


@sc.kernel(jit=False)
def counted_affine(out, x, log):
    out[:] = 2.0 * x + 1.0
    note(log, out.shape[0])


@sc.kernel(jit=False, depth=4, boundary="reflect")
def counted_smooth(out, x, log):
    """A 9-row running mean along axis 0 (x has 2 * 4 more rows than out)."""
    acc = np.zeros_like(out)
    for k in range(9):
        acc += x[k:k + out.shape[0]]
    out[:] = acc / 9.0
    note(log, out.shape[0])


@sc.kernel(jit=False, combine=np.add)
def counted_sum(x, log, seconds):
    """[sum, sum of squares] of the rows; sleeps ``seconds`` first (a slow leaf)."""
    if seconds:
        time.sleep(seconds)
    note(log, x.shape[0])
    return np.array([x.sum(), (x * x).sum()])


@sc.kernel(jit=False, writes=("out",), combine=np.add)
def counted_affine_sum(out, x, log):
    """counted_affine that also returns the sum of the rows it wrote (map partial=True)."""
    out[:] = 2.0 * x + 1.0
    note(log, out.shape[0])
    return out.sum()


@sc.kernel(jit=False, depth=1, boundary="none")
def counted_heat(out, u, log):
    out[:] = u[1:-1] + 0.25 * (u[:-2] - 2.0 * u[1:-1] + u[2:])
    note(log, out.shape[0])
