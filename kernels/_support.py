"""Shared pieces of the kernel library: parameter checks (run in the caller through
``@kernel(check=)``) and small numba helpers that pick an accumulator by input dtype.

The helpers are ``numba.extending.overload``-ed Python functions: numba compiles a separate
version per input type, so ``acc = int_or_float_zero(x)`` is an exact int64 zero for integer
arrays and a float64 zero for float arrays inside one kernel source.
"""
from __future__ import annotations

import operator
from typing import Any, Iterable

import numpy as np
from numba import types
from numba.extending import overload

from sharedcompute.errors import InputError

FLOATS = ("float64", "float32")
NUMERIC = ("float64", "float32", "int64", "int32")


# -- checks (plain Python, in the calling process) -------------------------------------------
def dtype_of(a: Any) -> np.dtype | None:
    dt = getattr(a, "dtype", None)
    return np.dtype(dt) if dt is not None else None


def require_array(kernel: str, label: str, a: Any, dtypes: Iterable[str],
                  ndim: int | tuple[int, ...] | None = None,
                  contiguous_nd: bool = False) -> None:
    """``a`` is an array of one of ``dtypes`` (and of ``ndim`` dimensions), else InputError.

    ``contiguous_nd``: any ndim, over all elements (as NumPy without ``axis=``); arrays of
    2 or more dimensions must be C-contiguous (a chunk of their rows is then contiguous and
    the kernel walks ``x.ravel()``, a view); 1-D arrays may have any stride, as before."""
    dt = dtype_of(a)
    shape = getattr(a, "shape", None)
    if dt is None or shape is None:
        raise InputError(f"{kernel}: {label!r} must be an array, got {type(a).__name__}")
    dtypes = tuple(dtypes)
    if dt.name not in dtypes:
        raise InputError(f"{kernel}: {label!r} has dtype {dt.name}; this kernel accepts "
                         f"{', '.join(dtypes)} (convert with .astype)")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            raise InputError(f"{kernel}: {label!r} must have {' or '.join(map(str, allowed))} "
                             f"dimension(s), got shape {tuple(shape)}")
    if contiguous_nd and len(shape) > 1 and not _c_contiguous(a):
        raise InputError(f"{kernel}: {label!r} of shape {tuple(shape)} is not C-contiguous "
                         "(a transpose or a strided slice); N-D input is reduced over all "
                         "elements in C order, so pass a C-ordered copy: "
                         "pool.array(np.ascontiguousarray(x))")


def _c_contiguous(a: Any) -> bool:
    flags = getattr(a, "flags", None)
    if flags is not None:
        return bool(flags.c_contiguous)
    strides = getattr(a, "strides", None)  # SharedArray: strides without building a view
    if strides is None:
        return True  # a cluster array (Dask) is stored C-ordered
    step = np.dtype(a.dtype).itemsize
    for dim, st in zip(reversed(tuple(a.shape)), reversed(tuple(strides))):
        if dim > 1 and st != step:
            return False
        step *= max(dim, 1)
    return True


def require_same_shape(kernel: str, labels: tuple[str, ...], *arrays: Any) -> None:
    shapes = [tuple(a.shape) for a in arrays]
    if any(s != shapes[0] for s in shapes[1:]):
        desc = ", ".join(f"{l!r} {s}" for l, s in zip(labels, shapes))
        raise InputError(f"{kernel}: shapes must be equal: {desc}")


def require_real(kernel: str, label: str, v: Any, finite: bool = False) -> None:
    """A real scalar (Python or NumPy int/float, not bool), finite if asked."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                            np.floating)):
        raise InputError(f"{kernel}: {label}={v!r} must be a real number")
    if finite and not np.isfinite(v):
        raise InputError(f"{kernel}: {label}={v!r} must be finite")


def require_int(kernel: str, label: str, v: Any, lo: int | None = None,
                hi: int | None = None) -> int:
    """An integer (Python or NumPy; not bool, not float) within [lo, hi]."""
    if isinstance(v, (bool, np.bool_)):
        raise InputError(f"{kernel}: {label}={v!r} must be an integer, not a bool")
    try:
        iv = operator.index(v)
    except TypeError:
        raise InputError(f"{kernel}: {label}={v!r} must be an integer") from None
    if lo is not None and iv < lo:
        raise InputError(f"{kernel}: {label}={iv} must be >= {lo}")
    if hi is not None and iv > hi:
        raise InputError(f"{kernel}: {label}={iv} must be <= {hi}")
    return iv


# -- numba helpers (each has a pure-Python body too, for NUMBA_DISABLE_JIT=1) ----------------
def int_or_float_zero(x):
    """0 of the accumulator type for ``x``'s elements: int64 for integers, else float64."""
    return np.int64(0) if np.asarray(x).dtype.kind in "iub" else np.float64(0.0)


@overload(int_or_float_zero, jit_options={"cache": True})
def _int_or_float_zero(x):
    if isinstance(x.dtype, (types.Integer, types.Boolean)):
        return lambda x: np.int64(0)
    return lambda x: np.float64(0.0)


def int_or_float_zero2(x, y):
    """The accumulator zero for products of ``x`` and ``y``: int64 if both are integers."""
    both = np.asarray(x).dtype.kind in "iu" and np.asarray(y).dtype.kind in "iu"
    return np.int64(0) if both else np.float64(0.0)


@overload(int_or_float_zero2, jit_options={"cache": True})
def _int_or_float_zero2(x, y):
    if isinstance(x.dtype, types.Integer) and isinstance(y.dtype, types.Integer):
        return lambda x, y: np.int64(0)
    return lambda x, y: np.float64(0.0)


def widen(v):
    """One element in its accumulator type: int64 for integers, float64 for floats."""
    return np.int64(v) if isinstance(v, (int, np.integer)) else np.float64(v)


@overload(widen, jit_options={"cache": True})
def _widen(v):
    if isinstance(v, types.Integer):
        return lambda v: np.int64(v)
    return lambda v: np.float64(v)


def weak_scalar(v, arr):
    """A Python scalar the way NumPy 2 (NEP 50) combines it with an array: a float or int
    scalar with a float32 array computes in float32; otherwise numba's usual promotion
    (which for the remaining cases is NumPy's). NumPy float64 scalars are treated like
    Python floats: numba cannot tell them apart."""
    dt = np.asarray(arr).dtype
    if dt == np.float32 and isinstance(v, (int, float, np.integer, np.floating)):
        return np.float32(v)
    return v


@overload(weak_scalar, jit_options={"cache": True})
def _weak_scalar(v, arr):
    if arr.dtype == types.float32 and isinstance(v, (types.Float, types.Integer)):
        return lambda v, arr: np.float32(v)
    return lambda v, arr: v


def float_bits(a):
    """The integer view of a float array, element for element (int64 for float64, int32
    for float32). For floats >= 0 the bit patterns order as the numbers do, and every NaN
    with its sign cleared lies above inf: an integer max over them vectorizes (a float max
    reduction does not, without fastmath), and a NaN wins it."""
    return a.view(np.int64 if a.dtype.itemsize == 8 else np.int32)


@overload(float_bits, jit_options={"cache": True})
def _float_bits(a):
    if a.dtype.bitwidth == 64:
        return lambda a: a.view(np.int64)
    return lambda a: a.view(np.int32)


def bin_edges_for(x, e64):
    """float64 edges cast to the bin dtype NumPy uses for ``x``: float32 for float32 data,
    float64 otherwise."""
    return e64.astype(np.float32) if np.asarray(x).dtype == np.float32 else e64.copy()


@overload(bin_edges_for, jit_options={"cache": True})
def _bin_edges_for(x, e64):
    if x.dtype == types.float32:
        return lambda x, e64: e64.astype(np.float32)
    return lambda x, e64: e64.copy()


def cast_like(v, arr):
    """``v`` converted to ``arr``'s (float) dtype."""
    return np.asarray(arr).dtype.type(v)


@overload(cast_like, jit_options={"cache": True})
def _cast_like(v, arr):
    if arr.dtype == types.float32:
        return lambda v, arr: np.float32(v)
    return lambda v, arr: np.float64(v)
