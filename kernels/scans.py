"""Scans: a prefix operation in two phases (chunk totals, then each chunk with its offset).

The offsets are accumulated sequentially over a fixed chunk grid, so results are bitwise
the same for any number of workers. Integer scans are exact (int64 totals and offsets, which
numba returns as Python ints and the engine combines with np.add into np.int64, wrapping as
int64 does); float scans accumulate in float64 and are not bitwise np.cumsum (the order
differs: chunk totals, then offsets), only equal to rounding.
"""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel
from sharedcompute.errors import InputError

from ._support import NUMERIC, int_or_float_zero, require_array, require_same_shape, widen


def _chunk_total(x):
    acc = int_or_float_zero(x)  # int64 for integer input: exact; float64 for floats
    for i in range(x.shape[0]):
        acc += widen(x[i])
    return acc


def _check_cumsum(out, x):
    require_array("cumsum", "out", out, NUMERIC, ndim=1)
    require_array("cumsum", "x", x, NUMERIC, ndim=1)
    require_same_shape("cumsum", ("out", "x"), out, x)
    if np.dtype(x.dtype).kind == "f" and np.dtype(out.dtype).kind in "iu":
        raise InputError(f"cumsum: float input ({np.dtype(x.dtype).name}) into an integer out "
                         f"({np.dtype(out.dtype).name}) would truncate every prefix sum; "
                         "give a float out, or convert x explicitly")


def cumsum_reference(out, x):
    if np.dtype(x.dtype).kind in "iu":
        # exact int64 prefix sums, then wrapped to out's dtype: what np.cumsum(x, out=out)
        # gives for an integer out (integer addition is modular either way)
        out[...] = np.cumsum(x, dtype=np.int64).astype(out.dtype)
    else:
        out[...] = np.cumsum(x, dtype=np.float64)


@kernel(reference=cumsum_reference, totals=_chunk_total, identity=0, check=_check_cumsum)
def cumsum(out, x, offset):
    """Inclusive prefix sum of a 1-D array into ``out``: ``np.cumsum(x, out=out)``.

    Integer input is exact, accumulated in int64: an int64 ``out`` holds
    ``np.cumsum(x)`` (np.cumsum of int32 gives int64), an int32 ``out`` the same values
    wrapped to 32 bits, exactly as ``np.cumsum(x, out=out_int32)``. Float input accumulates
    in float64 (float32 too, on purpose) and equals np.cumsum to rounding, not bitwise (the
    order is per chunk plus offsets). Float input into an integer ``out`` is refused with
    InputError (np.cumsum would truncate every prefix). The engine supplies ``offset``.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.scans import cumsum
    >>> out = np.zeros(4); _ = cumsum(out, np.arange(1.0, 5.0)); out
    array([ 1.,  3.,  6., 10.])
    >>> out = np.zeros(2, np.int32); _ = cumsum(out, np.array([2**31 - 1, 1], np.int32)); out
    array([ 2147483647, -2147483648], dtype=int32)
    """
    acc = int_or_float_zero(x) + widen(offset)
    for i in range(x.shape[0]):
        acc += widen(x[i])
        out[i] = acc
