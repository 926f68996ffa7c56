"""Reductions: each kernel returns its rows' partial; ``combine`` merges two partials.

Partials are combined along a fixed pairwise tree over a chunk grid that does not depend on
the number of workers, so every result here is bitwise the same for any worker count.

Each kernel names the NumPy function it agrees with. Deliberate differences (see README,
"Where library kernels differ from NumPy on purpose"): float32 sums accumulate in float64;
the float summation order is per chunk then pairwise over chunks (not NumPy's pairwise
blocks), so float results agree with NumPy to rounding, not bitwise; integer sums are exact
int64 (wrapping on overflow exactly as NumPy's int64 does); ``mean_var`` is the population
variance (ddof=0).
"""
from __future__ import annotations

import math

import numpy as np

from sharedcompute import kernel
from sharedcompute.errors import InputError

from ._support import (NUMERIC, bin_edges_for, cast_like, int_or_float_zero, int_or_float_zero2, require_array,
                       require_int, require_real, require_same_shape, widen)


def _as_numpy(v):
    """numba boxes int64/float64 results as Python int/float: give NumPy scalars back."""
    if isinstance(v, (bool, np.bool_)):
        return v
    if isinstance(v, int):
        return np.int64(v)
    if isinstance(v, float):
        return np.float64(v)
    return v


def _check_vector(name):
    def check(x):
        require_array(name, "x", x, NUMERIC, contiguous_nd=True)
    check.__name__ = f"_check_{name}"
    return check


def _check_pair(name):
    def check(x, y):
        require_array(name, "x", x, NUMERIC, contiguous_nd=True)
        require_array(name, "y", y, NUMERIC, contiguous_nd=True)
        require_same_shape(name, ("x", "y"), x, y)
    check.__name__ = f"_check_{name}"
    return check


def _acc_dtype(*arrays):
    return np.int64 if all(np.asarray(a).dtype.kind in "iu" for a in arrays) else np.float64


# -- sums ------------------------------------------------------------------------------------
def total_reference(x):
    return np.sum(x, dtype=_acc_dtype(x))


@kernel(reference=total_reference, combine=np.add, finalize=_as_numpy,
        check=_check_vector("total"))
def total(x):
    """Sum of a 1-D array: ``np.sum(x)`` for int32/int64 (an exact int64, wrapping on
    overflow as NumPy does) and float64; for float32, ``np.sum(x, dtype=np.float64)``
    (accumulated in float64 on purpose, more accurate than NumPy's float32 result).

    Returns np.int64 for integer input, np.float64 for float input. Floats agree with
    np.sum to rounding (different summation order), NaN and inf propagate as in NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import total
    >>> float(total(np.arange(5.0)))
    10.0
    >>> total(np.array([2**31 - 1, 1], dtype=np.int32))  # exact, as np.sum
    np.int64(2147483648)
    """
    xf = x.ravel()  # a view: a chunk of rows of a C-contiguous array is contiguous
    acc = int_or_float_zero(x)
    for i in range(xf.shape[0]):
        acc += widen(xf[i])
    return acc


def dot_reference(x, y):
    dt = _acc_dtype(x, y)
    return np.dot(x.astype(dt), y.astype(dt))


@kernel(reference=dot_reference, combine=np.add, finalize=_as_numpy,
        check=_check_pair("dot"))
def dot(x, y):
    """Dot product of two 1-D arrays of equal length: ``np.dot(x.astype(T), y.astype(T))``
    with T = int64 when both are integers (exact, wrapping as int64 does; note that
    ``np.dot`` of two int32 arrays would wrap at 32 bits instead) and T = float64 otherwise
    (float32 accumulates in float64 on purpose).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import dot
    >>> float(dot(np.arange(3.0), np.arange(3.0)))
    5.0
    """
    xf = x.ravel()
    yf = y.ravel()
    acc = int_or_float_zero2(x, y)
    for i in range(xf.shape[0]):
        acc += widen(xf[i]) * widen(yf[i])
    return acc


def sum_squares_reference(x):
    x64 = x.astype(_acc_dtype(x))
    return np.dot(x64, x64)


@kernel(reference=sum_squares_reference, combine=np.add, finalize=_as_numpy,
        check=_check_vector("sum_squares"))
def sum_squares(x):
    """Sum of squares of a 1-D array: ``np.sum(x.astype(T) ** 2)``, T = int64 for integer
    input (exact, wrapping as int64) and float64 for float input (float32 too, on purpose).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import sum_squares
    >>> float(sum_squares(np.array([1.0, 2.0, 3.0])))
    14.0
    """
    xf = x.ravel()
    acc = int_or_float_zero(x)
    for i in range(xf.shape[0]):
        v = widen(xf[i])
        acc += v * v
    return acc


# -- min / max ---------------------------------------------------------------------------------
def _minmax_combine(p, q):
    out = np.empty_like(p)
    out[0] = np.minimum(p[0], q[0])  # np.minimum/np.maximum propagate NaN (min/max do not)
    out[1] = np.maximum(p[1], q[1])
    return out


def _minmax_finalize(p):
    return (p[0], p[1])


def _check_minmax(x):
    require_array("minmax", "x", x, NUMERIC, contiguous_nd=True)
    if int(np.prod(x.shape)) == 0:
        raise InputError("minmax: x is empty; the minimum of an empty array is undefined "
                         "(np.min raises ValueError too)")


def minmax_reference(x):
    return (np.min(x), np.max(x))


@kernel(reference=minmax_reference, combine=_minmax_combine, finalize=_minmax_finalize,
        check=_check_minmax)
def minmax(x):
    """``(np.min(x), np.max(x))`` of a non-empty 1-D array, as NumPy scalars of x's dtype.

    A NaN anywhere makes both NaN, as np.min/np.max do. An empty array raises InputError
    in the caller (np.min raises ValueError). The sign of a zero result (0.0 vs -0.0) is
    unspecified, as in NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import minmax
    >>> tuple(float(v) for v in minmax(np.array([3.0, -1.0, 2.0])))
    (-1.0, 3.0)
    """
    out = np.empty(2, dtype=x.dtype)
    xf = x.ravel()
    if xf.shape[0] == 0:
        raise ValueError("minmax of an empty array is undefined")
    lo = xf[0]
    hi = xf[0]
    for i in range(xf.shape[0]):
        v = xf[i]
        if v != v:  # NaN: the result is NaN whatever else is in the array
            out[0] = v
            out[1] = v
            return out
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    out[0] = lo
    out[1] = hi
    return out


# -- mean and variance -------------------------------------------------------------------------
def _chan_combine(p, q):
    """Chan et al.'s parallel update of (count, anchor, mean - anchor, M2).

    The mean is carried as anchor + small part so that the mean difference of two chunks
    (the delta in Chan's formula) is computed to full precision even at offsets like 1e12,
    where the means' own rounding (ulp 1e-4) would otherwise swamp the delta.
    """
    na, ka, da, m2a = p
    nb, kb, db, m2b = q
    if na == 0:
        return q
    if nb == 0:
        return p
    n = na + nb
    if not (math.isfinite(ka) and math.isfinite(kb)):  # inf or NaN present: a sum of means
        return (n, (ka + da) + (kb + db), 0.0, math.nan)
    delta = (kb - ka) + (db - da)
    return (n, ka, da + delta * (nb / n), (m2a + m2b) + delta * delta * (na * (nb / n)))


def _mean_var_finalize(p):
    n, k, d, m2 = p
    if n == 0:
        return (0.0, math.nan, math.nan)
    return (float(n), k + d, m2 / n)


def mean_var_reference(x):
    if x.size == 0:
        return (0.0, np.nan, np.nan)
    return (float(x.size), np.mean(x, dtype=np.float64), np.var(x, dtype=np.float64))


@kernel(reference=mean_var_reference, combine=_chan_combine, finalize=_mean_var_finalize,
        check=_check_vector("mean_var"))
def mean_var(x):
    """``(count, np.mean(x, dtype=np.float64), np.var(x, dtype=np.float64))`` of a 1-D array:
    the population variance (ddof=0), in float64 for every input dtype.

    Each chunk is summarized by a corrected two-pass algorithm (mean, then the deviations'
    sum of squares minus the square of their sum over n), chunks are merged with Chan's
    formula carrying the mean as anchor + correction: the variance stays within ~1e-13 of
    the exact value at offsets of 1e9 and 1e12 (np.var itself drifts at 1e12), and the result
    is bitwise the same for any worker count. NaN gives NaN; an inf gives mean inf (or NaN
    for inf and -inf) and variance NaN, as np.mean/np.var. An empty array gives
    (0.0, nan, nan) without a warning (np.mean warns and returns nan).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import mean_var
    >>> tuple(float(v) for v in mean_var(np.array([1.0, 2.0, 3.0, 4.0])))
    (4.0, 2.5, 1.25)
    """
    xf = x.ravel()
    n = xf.shape[0]
    if n == 0:
        return (0.0, 0.0, 0.0, 0.0)
    s = 0.0
    for i in range(n):
        s += np.float64(xf[i])
    k = s / n
    if not np.isfinite(k):
        return (np.float64(n), k, 0.0, np.nan)
    s1 = 0.0
    s2 = 0.0
    for i in range(n):
        d = np.float64(xf[i]) - k
        s1 += d
        s2 += d * d
    return (np.float64(n), k, s1 / n, s2 - s1 * (s1 / n))


# -- histogram ---------------------------------------------------------------------------------
HISTOGRAM_DTYPES = NUMERIC


def _histogram_range(bins, lo, hi):
    """np.histogram's checks and range expansion (numpy.lib._histograms_impl)."""
    n = require_int("histogram", "bins", bins)
    if n < 1:
        raise InputError(f"histogram: bins={n} must be positive (np.histogram raises "
                         "ValueError too)")
    require_real("histogram", "lo", lo)
    require_real("histogram", "hi", hi)
    if lo > hi:
        raise InputError(f"histogram: lo={lo!r} > hi={hi!r}: max must be larger than min "
                         "(as np.histogram's range)")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"histogram: range [{lo!r}, {hi!r}] is not finite")
    first, last = float(lo), float(hi)
    if first == last:
        first, last = first - 0.5, last + 0.5
    return n, first, last


def _bin_dtype(x):
    return np.float32 if np.dtype(x.dtype) == np.float32 else np.float64


def _check_histogram(x, bins, lo, hi):
    require_array("histogram", "x", x, HISTOGRAM_DTYPES, contiguous_nd=True)
    n, first, last = _histogram_range(bins, lo, hi)
    edges = np.linspace(first, last, n + 1, dtype=_bin_dtype(x))
    if np.any(edges[:-1] >= edges[1:]):
        raise InputError(f"histogram: too many bins ({n}) for the range [{lo!r}, {hi!r}] in "
                         f"{edges.dtype}: cannot create {n} finite-sized bins "
                         "(np.histogram raises ValueError too)")


def histogram_reference(x, bins, lo, hi):
    return np.histogram(x, bins=bins, range=(lo, hi))[0].astype(np.int64)


@kernel(reference=histogram_reference, combine=np.add, check=_check_histogram)
def histogram(x, bins, lo, hi):
    """``np.histogram(x, bins=bins, range=(lo, hi))[0]`` as int64 counts, identical to NumPy's
    (the same edges and index arithmetic, including values exactly on edges, at lo and hi;
    NaN and values outside [lo, hi], ±inf included, are not counted).

    As np.histogram: bins must be a positive integer, lo <= hi and both finite (else
    InputError in the caller), lo == hi widens the range to (lo - 0.5, hi + 0.5), and the
    edges are computed in the input's precision (float32 for float32 input, float64
    otherwise). ``lo`` and ``hi`` are taken as Python numbers (NumPy 2's weak scalars): a
    NumPy float32/float64 scalar range, which np.histogram would let change the bin dtype,
    is treated as the equal Python float.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import histogram
    >>> histogram(np.array([0.1, 0.4, 0.6, 1.0]), 2, 0.0, 1.0)
    array([2, 2])
    """
    n = np.int64(bins)
    first = np.float64(lo)
    last = np.float64(hi)
    if first == last:
        first -= 0.5
        last += 0.5
    counts = np.zeros(n, dtype=np.int64)
    # np.linspace(first, last, n + 1) in float64, then cast to the bin dtype (as NumPy)
    delta = last - first
    step = delta / n
    e64 = np.empty(n + 1, dtype=np.float64)
    for k in range(n + 1):
        if step == 0.0:
            e64[k] = (k / n) * delta + first
        else:
            e64[k] = k * step + first
    e64[n] = last
    edges = bin_edges_for(x, e64)
    lo_b = edges[0]  # first (and last) in the bin dtype, as NumPy's weak Python floats
    hi_b = edges[n]
    norm = last - first  # np.float64 in NumPy: the division below runs in float64
    xf = x.ravel()
    for i in range(xf.shape[0]):
        v = cast_like(xf[i], edges)
        if not (v >= lo_b and v <= hi_b):  # also drops NaN
            continue
        f = (np.float64(v - lo_b) / norm) * np.float64(n)
        k = np.int64(f)
        if k == n:
            k -= 1
        if v < edges[k]:  # NumPy's correction within ~1 ulp of an edge
            k -= 1
        if k != n - 1 and v >= edges[k + 1]:
            k += 1
        counts[k] += 1
    return counts


def max_abs_diff_reference(x, y):
    return np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0)


def _check_max_abs_diff(x, y):
    require_array("max_abs_diff", "x", x, NUMERIC, contiguous_nd=True)
    require_array("max_abs_diff", "y", y, NUMERIC, contiguous_nd=True)
    require_same_shape("max_abs_diff", ("x", "y"), x, y)


@kernel(reference=max_abs_diff_reference, combine=np.maximum, finalize=np.float64,
        check=_check_max_abs_diff)
def max_abs_diff(x, y):
    """``np.max(np.abs(x - y), initial=0.0)`` in float64 over arrays of equal shape (any
    ndim); a residual for ``pool.iterate``.

    The difference is taken in float64 (no integer wrap-around, unlike np.abs(x - y) on
    int32); a NaN anywhere (or inf - inf) gives NaN, as np.max; an empty input gives 0.0.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import max_abs_diff
    >>> float(max_abs_diff(np.array([1.0, 5.0]), np.array([2.0, 2.0])))
    3.0
    """
    xf = x.ravel()
    yf = y.ravel()
    m = 0.0
    for i in range(xf.shape[0]):
        d = abs(np.float64(xf[i]) - np.float64(yf[i]))
        if d != d:
            return d
        if d > m:
            m = d
    return m
