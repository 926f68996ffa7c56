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


# -- issue 23: stencils reading any subset of (out, u, f); d from the shapes, so depth= may
# change per call. Constants multiply each array term first: numba and the NumPy loop in
# tests/test_iterate_safety.py then add the same float64 numbers in the same order.
@sc.kernel(depth=1, boundary="none")
def leapfrog(out, u, c):
    """out = 2u - out + c * lap(u): out holds the sweep before last (iterate's swap)."""
    d = (u.shape[0] - out.shape[0]) // 2
    for i in range(out.shape[0]):
        r = i + d
        out[i] = (2.0 * u[r] - out[i]) + c * ((u[r - d] - 2.0 * u[r]) + u[r + d])


@sc.kernel(depth=1, boundary="none")
def mix_(out, u, f):
    for i in range(out.shape[0]):
        out[i] = 0.01


@sc.kernel(depth=1, boundary="none")
def mix_o(out, u, f):
    for i in range(out.shape[0]):
        out[i] = 0.01 + 0.3 * out[i]


@sc.kernel(depth=1, boundary="none")
def mix_u(out, u, f):
    d = (u.shape[0] - out.shape[0]) // 2
    for i in range(out.shape[0]):
        r = i + d
        out[i] = 0.01 + ((0.2 * u[r - d] + 0.2 * u[r]) + 0.2 * u[r + d])


@sc.kernel(depth=1, boundary="none")
def mix_f(out, u, f):
    for i in range(out.shape[0]):
        out[i] = 0.01 + 0.1 * f[i]


@sc.kernel(depth=1, boundary="none")
def mix_ou(out, u, f):
    d = (u.shape[0] - out.shape[0]) // 2
    for i in range(out.shape[0]):
        r = i + d
        out[i] = (0.01 + 0.3 * out[i]) + ((0.2 * u[r - d] + 0.2 * u[r]) + 0.2 * u[r + d])


@sc.kernel(depth=1, boundary="none")
def mix_of(out, u, f):
    for i in range(out.shape[0]):
        out[i] = (0.01 + 0.3 * out[i]) + 0.1 * f[i]


@sc.kernel(depth=1, boundary="none")
def mix_uf(out, u, f):
    d = (u.shape[0] - out.shape[0]) // 2
    for i in range(out.shape[0]):
        r = i + d
        out[i] = (0.01 + ((0.2 * u[r - d] + 0.2 * u[r]) + 0.2 * u[r + d])) + 0.1 * f[i]


@sc.kernel(depth=1, boundary="none")
def mix_ouf(out, u, f):
    d = (u.shape[0] - out.shape[0]) // 2
    for i in range(out.shape[0]):
        r = i + d
        out[i] = (((0.01 + 0.3 * out[i]) + ((0.2 * u[r - d] + 0.2 * u[r]) + 0.2 * u[r + d]))
                  + 0.1 * f[i])


MIXES = {"": mix_, "o": mix_o, "u": mix_u, "f": mix_f, "ou": mix_ou, "of": mix_of,
         "uf": mix_uf, "ouf": mix_ouf}


@sc.kernel(depth=1, boundary="none", combine=np.maximum)
def leapfrog_change(out, u, c):
    """leapfrog returning max |new - u| of its rows: a fused, idempotent residual, which
    iterate would check inside blocks, but it reads out."""
    d = (u.shape[0] - out.shape[0]) // 2
    big = 0.0
    for i in range(out.shape[0]):
        r = i + d
        v = (2.0 * u[r] - out[i]) + c * ((u[r - d] - 2.0 * u[r]) + u[r + d])
        big = max(big, abs(v - u[r]))
        out[i] = v
    return big
