"""Reductions: each kernel returns its rows' partial; ``combine`` merges two partials.

Partials are combined along a fixed pairwise tree over a chunk grid that does not depend on
the number of workers, so every result here is bitwise the same for any worker count.
"""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel


def total_reference(x):
    return np.sum(x, dtype=np.float64)


@kernel(reference=total_reference, combine=np.add)
def total(x):
    """Sum of all elements of a 1-D array, accumulated in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import total
    >>> float(total(np.arange(5.0)))
    10.0
    """
    acc = 0.0
    for i in range(x.shape[0]):
        acc += np.float64(x[i])
    return acc


def dot_reference(x, y):
    return np.dot(x.astype(np.float64), y.astype(np.float64))


@kernel(reference=dot_reference, combine=np.add)
def dot(x, y):
    """Dot product of two 1-D arrays, accumulated in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import dot
    >>> float(dot(np.arange(3.0), np.arange(3.0)))
    5.0
    """
    acc = 0.0
    for i in range(x.shape[0]):
        acc += np.float64(x[i]) * np.float64(y[i])
    return acc


def sum_squares_reference(x):
    x64 = x.astype(np.float64)
    return np.dot(x64, x64)


@kernel(reference=sum_squares_reference, combine=np.add)
def sum_squares(x):
    """Sum of squares of a 1-D array, accumulated in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import sum_squares
    >>> float(sum_squares(np.array([1.0, 2.0, 3.0])))
    14.0
    """
    acc = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        acc += v * v
    return acc


def _minmax_combine(p, q):
    return (min(p[0], q[0]), max(p[1], q[1]))


def minmax_reference(x):
    return (np.min(x), np.max(x))


@kernel(reference=minmax_reference, combine=_minmax_combine)
def minmax(x):
    """(min, max) of a non-empty 1-D array.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import minmax
    >>> tuple(float(v) for v in minmax(np.array([3.0, -1.0, 2.0])))
    (-1.0, 3.0)
    """
    if x.shape[0] == 0:
        raise ValueError("minmax of an empty array is undefined")
    lo = x[0]
    hi = x[0]
    for i in range(1, x.shape[0]):
        v = x[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return (lo, hi)


def _chan_combine(p, q):
    """Chan et al.'s parallel update of (count, mean, M2)."""
    na, ma, m2a = p
    nb, mb, m2b = q
    n = na + nb
    if n == 0:
        return (0.0, 0.0, 0.0)
    delta = mb - ma
    return (n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n)


def _mean_var_finalize(p):
    n, mean, m2 = p
    return (n, mean, m2 / n if n else np.nan)


def mean_var_reference(x):
    return (float(x.shape[0]), np.mean(x, dtype=np.float64), np.var(x, dtype=np.float64))


@kernel(reference=mean_var_reference, combine=_chan_combine, finalize=_mean_var_finalize)
def mean_var(x):
    """(count, mean, population variance) of a 1-D array, combined with Chan's formula.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import mean_var
    >>> tuple(float(v) for v in mean_var(np.array([1.0, 2.0, 3.0, 4.0])))
    (4.0, 2.5, 1.25)
    """
    n = 0.0
    mean = 0.0
    m2 = 0.0
    for i in range(x.shape[0]):  # Welford within the chunk
        n += 1.0
        v = np.float64(x[i])
        delta = v - mean
        mean += delta / n
        m2 += delta * (v - mean)
    return (n, mean, m2)


def histogram_reference(x, bins, lo, hi):
    return np.histogram(x, bins=bins, range=(lo, hi))[0].astype(np.int64)


@kernel(reference=histogram_reference, combine=np.add)
def histogram(x, bins, lo, hi):
    """int64 counts of a 1-D array in ``bins`` equal bins over [lo, hi], as np.histogram.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.reductions import histogram
    >>> histogram(np.array([0.1, 0.4, 0.6, 1.0]), 2, 0.0, 1.0)
    array([2, 2])
    """
    counts = np.zeros(bins, dtype=np.int64)
    edges = np.linspace(lo, hi, bins + 1)
    norm = bins / (hi - lo)
    for i in range(x.shape[0]):
        v = x[i]
        if v < lo or v > hi or v != v:
            continue
        k = int((v - lo) * norm)
        if k == bins:
            k -= 1
        if v < edges[k]:  # numpy's correction for rounding at bin edges
            k -= 1
        elif k != bins - 1 and v >= edges[k + 1]:
            k += 1
        counts[k] += 1
    return counts


def max_abs_diff_reference(x, y):
    return np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0)


@kernel(reference=max_abs_diff_reference, combine=max)
def max_abs_diff(x, y):
    """max |x - y| over all elements (any ndim); a residual for ``pool.iterate``.

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
        if d > m:
            m = d
    return m
