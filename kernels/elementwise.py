"""Elementwise kernels: each row depends only on the same row of the inputs.

Scalars combine with arrays as in NumPy 2 (NEP 50): a Python float with float32 arrays
computes in float32, so results are the NumPy expression's, element by element. A NumPy
float64 scalar is treated like a Python float (numba cannot tell them apart), where NumPy
would promote the expression to float64.
"""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel
from sharedcompute.errors import InputError

from ._support import FLOATS, NUMERIC, require_array, require_int, require_real, \
    require_same_shape, weak_scalar


def _check_triad(a, b, c, s):
    for label, v in (("a", a), ("b", b), ("c", c)):
        require_array("triad", label, v, NUMERIC, ndim=1)
    require_same_shape("triad", ("a", "b", "c"), a, b, c)
    require_real("triad", "s", s)


def triad_reference(a, b, c, s):
    a[...] = b + s * c


@kernel(reference=triad_reference, check=_check_triad, elementwise=True)
def triad(a, b, c, s):
    """STREAM triad in place: ``a[...] = b + s * c`` (1-D, equal shapes), as NumPy computes
    it (a float result stored into an integer ``a`` is truncated, as NumPy's assignment).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.elementwise import triad
    >>> a = np.zeros(3); _ = triad(a, np.ones(3), np.arange(3.0), 2.0); a
    array([1., 3., 5.])
    """
    s_ = weak_scalar(s, c)
    for i in range(a.shape[0]):
        a[i] = b[i] + s_ * c[i]


def _check_axpy(y, x, alpha):
    require_array("axpy", "y", y, NUMERIC, ndim=1)
    require_array("axpy", "x", x, NUMERIC, ndim=1)
    require_same_shape("axpy", ("y", "x"), y, x)
    require_real("axpy", "alpha", alpha)
    result = np.result_type(y.dtype, x.dtype, alpha if not isinstance(alpha, np.generic)
                            else alpha.dtype)
    if not np.can_cast(result, y.dtype, "same_kind"):
        raise InputError(f"axpy: y += alpha * x gives {result} values, which cannot be stored "
                         f"in y's {np.dtype(y.dtype).name} (NumPy raises UFuncTypeError)")


def axpy_reference(y, x, alpha):
    y += alpha * x


@kernel(reference=axpy_reference, check=_check_axpy, elementwise=True)
def axpy(y, x, alpha):
    """``y += alpha * x`` in place (1-D, equal shapes), as NumPy's in-place add; a float
    ``x`` or ``alpha`` with an integer ``y`` is refused (NumPy's same_kind rule).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.elementwise import axpy
    >>> y = np.ones(3); _ = axpy(y, np.arange(3.0), 10.0); y
    array([ 1., 11., 21.])
    """
    a_ = weak_scalar(alpha, x)
    for i in range(y.shape[0]):
        y[i] += a_ * x[i]


def _check_logistic_map(y, x, r, n_iter):
    require_array("logistic_map", "y", y, FLOATS, ndim=1)
    require_array("logistic_map", "x", x, FLOATS, ndim=1)
    require_same_shape("logistic_map", ("y", "x"), y, x)
    require_real("logistic_map", "r", r)
    require_int("logistic_map", "n_iter", n_iter, lo=0)


def logistic_map_reference(y, x, r, n_iter):
    v = x.copy()
    for _ in range(n_iter):
        v = r * v * (1 - v)
    y[...] = v


@kernel(reference=logistic_map_reference, check=_check_logistic_map, elementwise=True)
def logistic_map(y, x, r, n_iter):
    """Compute-bound: ``n_iter`` times ``v = r * v * (1 - v)`` from ``x`` (1-D), the NumPy
    loop ``for _ in range(n_iter): v = r * v * (1 - v)`` in x's precision (float32 stays
    float32; r is weak). n_iter must be a non-negative integer.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.elementwise import logistic_map
    >>> y = np.zeros(2); _ = logistic_map(y, np.array([0.25, 0.5]), 2.0, 1); y
    array([0.375, 0.5  ])
    """
    one = np.ones(1, dtype=x.dtype)[0]  # keep float32 math in float32, as NumPy does
    r_ = weak_scalar(r, x)
    for i in range(y.shape[0]):
        v = x[i]
        for _ in range(n_iter):
            v = r_ * v * (one - v)
        y[i] = v
