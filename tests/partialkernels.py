"""Kernels of tests/test_partial.py (map(..., partial=True): write and reduce in one pass),
in a module of their own so that spawn and forkserver workers import them by name. Each
fused kernel has a reduction twin that computes the same per-chunk value from the written
array, so the two partials must agree bitwise."""
import math

import numpy as np

import sharedcompute as sc


@sc.kernel(writes=("y",), combine=np.add)
def scale_sum(y, x, s):
    """y = s * x, and the sum of y (accumulated in float64) from the same pass."""
    acc = 0.0
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = s * x[i, j]
            acc += y[i, j]
    return acc


@sc.kernel(combine=np.add)
def row_total(y):
    """scale_sum's twin: the same per-chunk sum, read from the written array."""
    acc = 0.0
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            acc += y[i, j]
    return acc


@sc.kernel(writes=("A",), whole=("v",), combine=np.add)
def rank1_colsum(A, u, v, y):
    """A += u v^T and A^T y (a vector partial) from the same pass: gemver's shape."""
    acc = np.zeros(A.shape[1])
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] += u[i] * v[j]
            acc[j] += A[i, j] * y[i]
    return acc


@sc.kernel(combine=np.add)
def colsum(A, y):
    """rank1_colsum's twin: A^T y of the written A."""
    acc = np.zeros(A.shape[1])
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            acc[j] += A[i, j] * y[i]
    return acc


def add_pairs(p, q):
    return (p[0] + q[0], p[1] + q[1])


def pair_mean(p):
    return p[1] / p[0] if p[0] else math.nan


@sc.kernel(writes=("y",), combine=add_pairs, finalize=pair_mean)
def square_mean(y, x):
    """y = x * x, and the mean of y through combine= and finalize=."""
    acc = 0.0
    for i in range(y.shape[0]):
        y[i] = x[i] * x[i]
        acc += y[i]
    return (y.shape[0], acc)


@sc.kernel(combine=add_pairs, finalize=pair_mean)
def pair_of(y):
    """square_mean's twin."""
    acc = 0.0
    for i in range(y.shape[0]):
        acc += y[i]
    return (y.shape[0], acc)


@sc.kernel(depth=1, boundary="none", combine=np.maximum)
def heat_change(out, u):
    """One smoothing step of the interior and its largest change (max |out - u|)."""
    m = 0.0
    for i in range(out.shape[0]):
        out[i] = 0.25 * u[i] + 0.5 * u[i + 1] + 0.25 * u[i + 2]
        m = max(m, abs(out[i] - u[i + 1]))
    return m


@sc.kernel(depth=1, boundary="reflect", combine=np.maximum)
def heat_change_reflect(out, u):
    """heat_change over every row, the edges read through a reflected halo."""
    m = 0.0
    for i in range(out.shape[0]):
        out[i] = 0.25 * u[i] + 0.5 * u[i + 1] + 0.25 * u[i + 2]
        m = max(m, abs(out[i] - u[i + 1]))
    return m
