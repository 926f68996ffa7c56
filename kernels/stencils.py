"""Stencils: each output row reads ``depth`` neighbouring rows of its input on each side.

Each kernel names the SciPy filter it agrees with; the engine's boundary (dask's words) maps
to scipy.ndimage's ``mode``: 'reflect' -> 'reflect' (edge repeated: d c b a | a b c d),
'nearest' -> 'nearest', 'periodic' -> 'wrap', a number c -> mode='constant', cval=c, and
'none' leaves the edge rows unwritten (compare the interior only).

A stencil kernel gets its output rows and its input with ``depth`` extra rows above and
below (read straight from shared memory; padded by the boundary at the array's edges), so
``u[i + depth]`` is the input row under ``out[i]``. Columns are the kernel's own business:
these kernels keep the first and last column fixed (jacobi2d) or reflect them (blur3x3).
"""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel

from ._support import (FLOATS, float_bits, require_array, require_real, require_same_shape,
                       weak_scalar)


def _check_2d(name):
    def check(out, u):
        require_array(name, "out", out, FLOATS, ndim=2)
        require_array(name, "u", u, FLOATS, ndim=2)
        require_same_shape(name, ("out", "u"), out, u)
    check.__name__ = f"_check_{name}"
    return check


def _check_heat1d(out, u, alpha):
    require_array("heat1d", "out", out, FLOATS, ndim=1)
    require_array("heat1d", "u", u, FLOATS, ndim=1)
    require_same_shape("heat1d", ("out", "u"), out, u)
    require_real("heat1d", "alpha", alpha)


def jacobi2d_reference(out, u):
    out[:, 1:-1] = 0.25 * (((u[:-2, 1:-1] + u[2:, 1:-1]) + u[1:-1, :-2]) + u[1:-1, 2:])
    out[:, 0] = u[1:-1, 0]
    out[:, -1] = u[1:-1, -1]


@kernel(reference=jacobi2d_reference, depth=1, boundary="none", check=_check_2d("jacobi2d"))
def jacobi2d(out, u):
    """One Jacobi sweep of Laplace's equation: the 5-point average (2-D, depth 1).

    On the interior columns this is ``scipy.ndimage.correlate(u, [[0, .25, 0], [.25, 0,
    .25], [0, .25, 0]], mode=M)[:, 1:-1]`` with M the boundary's mode (module docstring),
    equal to rounding (the sum's order is fixed here). With the default boundary 'none' the
    first and last rows are not written (held fixed under ``pool.iterate``); the first and
    last columns are copied from ``u``. float32 computes in float32, as NumPy would.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.stencils import jacobi2d
    >>> u = np.zeros((3, 3)); u[0] = 4.0
    >>> out = u.copy(); _ = jacobi2d(out, u); float(out[1, 1])
    1.0
    """
    m = out.shape[1]
    if m == 0:
        return
    q = weak_scalar(0.25, u)
    for i in range(out.shape[0]):
        r = i + 1
        out[i, 0] = u[r, 0]
        for j in range(1, m - 1):
            out[i, j] = q * (((u[r - 1, j] + u[r + 1, j]) + u[r, j - 1]) + u[r, j + 1])
        if m > 1:
            out[i, m - 1] = u[r, m - 1]


def jacobi2d_residual_reference(out, u):
    jacobi2d_reference(out, u)
    return np.max(np.abs(out - u[1:-1]), initial=0.0)


def larger(p, q):
    """The larger of two partials; a NaN wins (Python's max keeps whichever came first).

    >>> larger(1.0, 2.0), larger(float("nan"), 1.0), larger(1.0, float("nan"))
    (2.0, nan, nan)
    """
    return p if p >= q or p != p else q


@kernel(reference=jacobi2d_residual_reference, depth=1, boundary="none", combine=larger,
        idempotent=True, check=_check_2d("jacobi2d_residual"))
def jacobi2d_residual(out, u):
    """``jacobi2d`` that also returns the largest change ``max|out - u|`` of its rows, from
    the same pass: ``pool.iterate`` stops on it with no second pass over the grid.

    The rows written are ``jacobi2d``'s (``scipy.ndimage.correlate`` with the 5-point
    average on the interior columns); the partial is ``np.max(np.abs(out - u[1:-1]))``
    over them (0.0 for no rows, NaN if any change is NaN), computed in the array's dtype
    and returned as a float.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.stencils import jacobi2d_residual
    >>> u = np.zeros((3, 3)); u[0] = 4.0
    >>> out = u.copy(); _ = jacobi2d_residual(out, u); float(out[1, 1])
    1.0
    """
    m = out.shape[1]
    if m == 0:
        return 0.0
    q = weak_scalar(0.25, u)
    change = np.zeros(m, u.dtype)  # one row's |out - u|, reduced by its bit patterns
    bits = float_bits(change)
    big = bits[0]  # +0.0
    edge = np.empty(2, out.dtype)  # the copied edges as out holds them: out is never read,
    for i in range(out.shape[0]):  # so pool.iterate may block its sweeps (_iterate/plan.py)
        r = i + 1
        edge[0], edge[1] = u[r, 0], u[r, m - 1]
        out[i, 0] = edge[0]
        if m > 1:
            out[i, m - 1] = edge[1]
        for j in range(1, m - 1):
            v = q * (((u[r - 1, j] + u[r + 1, j]) + u[r, j - 1]) + u[r, j + 1])
            out[i, j] = v
            change[j] = abs(v - u[r, j])
        change[0] = abs(edge[0] - u[r, 0])  # the copied edges: 0, or NaN for a NaN or inf
        change[m - 1] = abs(edge[1] - u[r, m - 1])
        for j in range(m):  # an integer max: vectorized, and a NaN's pattern wins
            big = max(big, bits[j])
    change[0] = np.inf
    if big > bits[0]:
        return np.nan
    bits[0] = big
    return float(change[0])


def heat1d_reference(out, u, alpha):
    out[...] = u[1:-1] + alpha * ((u[:-2] - 2.0 * u[1:-1]) + u[2:])


@kernel(reference=heat1d_reference, depth=1, boundary="none", check=_check_heat1d)
def heat1d(out, u, alpha):
    """One explicit step of the 1-D heat equation: ``u + alpha * (u[i-1] - 2u[i] + u[i+1])``,
    i.e. ``u + alpha * scipy.ndimage.correlate1d(u, [1, -2, 1], mode=M)`` (M from the
    boundary, module docstring), equal to rounding; float32 stays float32 (alpha is weak).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.stencils import heat1d
    >>> u = np.array([0.0, 1.0, 0.0]); out = u.copy(); _ = heat1d(out, u, 0.25); out
    array([0. , 0.5, 0. ])
    """
    a_ = weak_scalar(alpha, u)
    two = weak_scalar(2.0, u)
    for i in range(out.shape[0]):
        r = i + 1
        out[i] = u[r] + a_ * ((u[r - 1] - two * u[r]) + u[r + 1])


def blur3x3_reference(out, img):
    padded = np.concatenate([img[:, :1], img, img[:, -1:]], axis=1)
    acc = np.zeros(out.shape, dtype=np.float64)
    for di in range(3):
        for dj in range(3):
            acc = acc + padded[di:di + out.shape[0], dj:dj + out.shape[1]]
    out[...] = acc / 9.0


@kernel(reference=blur3x3_reference, depth=1, boundary="reflect", check=_check_2d("blur3x3"))
def blur3x3(out, img):
    """3x3 box blur of a 2-D image, edges reflected (rows by the engine, columns here):
    ``scipy.ndimage.uniform_filter(img, size=3, mode=(M, 'reflect'))`` with M the rows'
    boundary mode (default 'reflect'; module docstring), equal to rounding. Sums in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.stencils import blur3x3
    >>> out = np.zeros((2, 2)); _ = blur3x3(out, np.ones((2, 2))); out
    array([[1., 1.],
           [1., 1.]])
    """
    m = out.shape[1]
    for i in range(out.shape[0]):
        for j in range(m):
            acc = 0.0
            for di in range(3):
                for dj in range(3):
                    c = j + dj - 1
                    if c < 0:
                        c = 0
                    elif c > m - 1:
                        c = m - 1
                    acc = acc + img[i + di, c]
            out[i, j] = acc / 9.0
