"""Compute-bound kernels: Mandelbrot (needs its rows' position), matmul (B whole) and a
seeded Monte Carlo reduction whose random streams belong to fixed rows, not to workers."""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel
from sharedcompute.errors import InputError

from ._support import FLOATS, require_array, require_int, require_real


def _check_mandelbrot(out, x0, x1, y0, y1, max_iter):
    require_array("mandelbrot", "out", out, ("int32",), ndim=2)
    for label, v in (("x0", x0), ("x1", x1), ("y0", y0), ("y1", y1)):
        require_real("mandelbrot", label, v, finite=True)
    require_int("mandelbrot", "max_iter", max_iter, lo=0, hi=2**31 - 1)


def _check_matmul(c, a, b):
    for label, v in (("c", c), ("a", a), ("b", b)):
        require_array("matmul", label, v, FLOATS, ndim=2)
    (n, k), (k2, p), (nc, pc) = a.shape, b.shape, c.shape
    if k != k2 or (nc, pc) != (n, p):
        raise InputError(f"matmul: shapes do not compose: c {tuple(c.shape)} = a "
                         f"{tuple(a.shape)} @ b {tuple(b.shape)} needs a (n, k), b (k, p), "
                         "c (n, p)")


def _check_monte_carlo_pi(samples_per_chunk, seed):
    require_int("monte_carlo_pi", "samples_per_chunk", samples_per_chunk, lo=0)
    require_int("monte_carlo_pi", "seed", seed, lo=0, hi=2**32 - 1)


def mandelbrot_reference(out, x0, x1, y0, y1, max_iter):
    n, m = out.shape
    ci = y0 + (y1 - y0) * (np.arange(n, dtype=np.float64) / n)
    cr = x0 + (x1 - x0) * (np.arange(m, dtype=np.float64) / m)
    cr, ci = np.broadcast_to(cr[None, :], (n, m)), np.broadcast_to(ci[:, None], (n, m))
    zr = np.zeros((n, m))
    zi = np.zeros((n, m))
    counts = np.full((n, m), max_iter, dtype=np.int32)
    active = np.ones((n, m), dtype=bool)
    for k in range(max_iter):
        zr2, zi2 = zr * zr, zi * zi
        escaped = active & (zr2 + zi2 > 4.0)
        counts[escaped] = k
        active &= ~escaped
        new_zi = 2.0 * zr * zi + ci
        zr = np.where(active, (zr2 - zi2) + cr, zr)
        zi = np.where(active, new_zi, zi)
    out[...] = counts


@kernel(reference=mandelbrot_reference, position=True, check=_check_mandelbrot)
def mandelbrot(out, x0, x1, y0, y1, max_iter, rows):
    """Escape-time counts (int32) of the Mandelbrot set; row i of the whole ``out`` maps to
    y = y0 + (y1 - y0) * i / n_rows, column j to x = x0 + (x1 - x0) * j / n_cols.

    NumPy/SciPy have no such function: the equivalent is the vectorized NumPy loop in
    ``mandelbrot_reference`` (which the tests compare exactly). A point that never escapes
    within ``max_iter`` (a non-negative integer) gets ``max_iter``; bounds must be finite.

    ``rows`` is supplied by the engine: (start, stop, total) of this partition.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.compute import mandelbrot
    >>> out = np.zeros((2, 2), dtype=np.int32)
    >>> _ = mandelbrot(out, -2.0, 1.0, -1.5, 1.5, 20); out
    array([[ 1,  2],
           [20, 20]], dtype=int32)
    """
    start, stop, total = rows
    m = out.shape[1]
    for i in range(out.shape[0]):
        ci = y0 + (y1 - y0) * (np.float64(start + i) / total)
        for j in range(m):
            cr = x0 + (x1 - x0) * (np.float64(j) / m)
            zr = 0.0
            zi = 0.0
            count = max_iter
            for k in range(max_iter):
                zr2 = zr * zr
                zi2 = zi * zi
                if zr2 + zi2 > 4.0:
                    count = k
                    break
                zi = 2.0 * zr * zi + ci
                zr = (zr2 - zi2) + cr
            out[i, j] = count


def matmul_reference(c, a, b):
    c[...] = a @ b


@kernel(reference=matmul_reference, whole=("b",), check=_check_matmul)
def matmul(c, a, b):
    """``c[...] = a @ b`` (``np.matmul``) for 2-D float arrays a (n, k), b (k, p), c (n, p);
    rows of c and a are partitioned, every partition reads b whole. Equal to ``a @ b`` to
    rounding (BLAS orders the sums differently); NaN/inf propagate as in the plain
    triple loop (0 * inf = nan), k = 0 gives zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.compute import matmul
    >>> c = np.zeros((2, 2)); _ = matmul(c, np.eye(2), np.array([[1.0, 2.0], [3.0, 4.0]])); c
    array([[1., 2.],
           [3., 4.]])
    """
    n, k = a.shape
    p = b.shape[1]
    for i in range(n):
        for j in range(p):
            c[i, j] = 0.0
        for t in range(k):
            av = a[i, t]
            for j in range(p):
                c[i, j] += av * b[t, j]


def _finish_pi(count_and_samples):
    hits, samples = count_and_samples
    return 4.0 * hits / samples if samples else float("nan")


def _add_pairs(p, q):
    return (p[0] + q[0], p[1] + q[1])


def monte_carlo_pi_reference(samples_per_chunk, seed, rows):
    hits = 0
    for r in range(rows):
        u = np.random.RandomState(seed + r).random_sample(2 * samples_per_chunk)
        x, y = u[0::2], u[1::2]
        hits += int(np.count_nonzero(x * x + y * y < 1.0))
    return _finish_pi((hits, rows * samples_per_chunk))


@kernel(reference=monte_carlo_pi_reference, combine=_add_pairs, finalize=_finish_pi,
        position=True, check=_check_monte_carlo_pi)
def monte_carlo_pi(samples_per_chunk, seed, rows):
    """Estimate pi from ``rows=N`` streams of ``samples_per_chunk`` points; stream r is
    seeded with ``seed + r``, so the estimate is identical for any number of workers.

    The NumPy equivalent: stream r is ``np.random.RandomState(seed + r).random_sample(2 *
    samples_per_chunk)`` taken as (x, y) pairs, and the estimate is 4 * hits / samples
    (``monte_carlo_pi_reference``; identical counts). ``seed`` must be an integer in
    [0, 2**32 - 1] (RandomState's range; seed + r beyond it is not checked: numba's seed
    wraps it modulo 2**32 where RandomState raises); 0 samples give nan.

    Examples
    --------
    >>> from sharedcompute.kernels.compute import monte_carlo_pi
    >>> 3.0 < monte_carlo_pi(1000, 42, rows=8) < 3.3
    True
    """
    start, stop, total = rows
    hits = 0
    for r in range(start, stop):
        np.random.seed(seed + r)
        for _ in range(samples_per_chunk):
            x = np.random.random()
            y = np.random.random()
            if x * x + y * y < 1.0:
                hits += 1
    return (hits, (stop - start) * samples_per_chunk)
