"""Kernels of tests/test_iterate_fused.py, in a module of their own so that spawn and
forkserver workers can import them by name (pytest's importlib mode names a test module
in a way the workers cannot import)."""
import numpy as np

import sharedcompute as sc


@sc.kernel(depth=2, boundary="none", position=True)
def smooth2(out, u, f, pos):
    start, _, total = pos
    for i in range(out.shape[0]):
        r = i + 2
        out[i] = (0.2 * ((((u[r - 2] + u[r - 1]) + u[r]) + u[r + 1]) + u[r + 2])
                  + 0.01 * f[r] + 1e-3 * (start + i) / total)


@sc.kernel(depth=1, combine=max)
def tuple_partial(out, u):
    for i in range(out.shape[0]):
        out[i] = u[i + 1]
    return (1.0, 2.0)


def add(p, q):
    return p + q


@sc.kernel(depth=1, boundary="none", combine=add)
def jacobi_total_change(out, u):
    """jacobi2d's rows and the sum of |change|: a combine that is not idempotent (a row
    counted twice would count twice), so iterate keeps its check sweeps plain."""
    m = out.shape[1]
    total = 0.0
    for i in range(out.shape[0]):
        r = i + 1
        out[i, 0] = u[r, 0]
        for j in range(1, m - 1):
            v = 0.25 * (((u[r - 1, j] + u[r + 1, j]) + u[r, j - 1]) + u[r, j + 1])
            total += abs(v - u[r, j])
            out[i, j] = v
        if m > 1:
            out[i, m - 1] = u[r, m - 1]
    return total


@sc.kernel(depth=1, boundary="none", position=True, combine=np.maximum)
def jacobi_raising_at(out, u, victim, pos):
    """jacobi2d's rows and max |change|, raising ValueError when it writes row ``victim``:
    where an error inside a block of sweeps says it happened."""
    start, stop, _ = pos
    m = out.shape[1]
    big = 0.0
    for i in range(out.shape[0]):
        r = i + 1
        for j in range(1, m - 1):
            v = 0.25 * (((u[r - 1, j] + u[r + 1, j]) + u[r, j - 1]) + u[r, j + 1])
            out[i, j] = v
            big = max(big, abs(v - u[r, j]))
        out[i, 0], out[i, m - 1] = u[r, 0], u[r, m - 1]
    if start <= victim < stop:
        raise ValueError("raised at the victim row")
    return big
