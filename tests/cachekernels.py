"""Kernels of tests/test_cache_state.py, in a module of their own so that spawn and
forkserver workers can import them by name. Each result depends on every part of a call's
cache key: the shapes (the column index j, w.shape[0]), the dtype of x (int64 arithmetic
wraps), the scalar's type (s * s * s wraps for an int, not for an equal float), its sign
(-0.0 survives the product) and NaN payload, and the bytes of w."""
import numpy as np

import sharedcompute as sc


@sc.kernel(writes=("out",))
def affine(out, x, s, w):
    ww = w.ravel()
    n = ww.size
    cube = s * s * s
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (x[i, j] * s + cube) * (ww[j % n] + w.shape[0])


@sc.kernel(combine=np.add)
def weighted_sum(x, s, w):
    ww = w.ravel()
    n = ww.size
    t = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            t += (x[i, j] * s) * (ww[j % n] + w.shape[0]) + j
    return t


def affine_numpy(x, s, w):
    """affine's result in NumPy (the same operations in the same order)."""
    x = np.asarray(x)
    ww = w.ravel()
    j = np.arange(x.shape[1])
    if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
        s = np.int64(s)
        cube = (np.array([s]) * s * s)[0]  # wraps as int64, like numba
    else:
        cube = s * s * s
    with np.errstate(all="ignore"):
        return (x * s + cube) * (ww[j % ww.size] + w.shape[0])


@sc.kernel(writes=("out",), jit=False)
def returns_when_negative(out, x, s):
    """A plain-Python map kernel that returns a value for some scalars only."""
    out[:] = np.asarray(x) * s
    if s < 0:
        return 1.0
    return None
