"""Deliberately wrong kernels (and a few right ones) for tests/test_verify.py.

A real module in tests/ (conftest puts the folder on sys.path) so spawn/forkserver workers
can import them by name. Each bug is invisible while the array is one partition, or
small against rounding, which is what verify must still catch.
"""
import numpy as np

import sharedcompute as sc


# -- wrong at each partition start: treats its first row as the array's first row -----------
def diff_reference(out, x):
    out[0] = x[0]
    out[1:] = x[1:] - x[:-1]


@sc.kernel(reference=diff_reference)
def diff_no_halo(out, x):
    """Backward difference without depth=1: at each partition's first row it cannot see
    x[i - 1], so it writes x[i] there (right only for the array's first row)."""
    for i in range(out.shape[0]):
        if i == 0:
            out[i] = x[i]
        else:
            out[i] = x[i] - x[i - 1]


def diff_halo_reference(out, x):
    """References of stencils get inputs padded by depth rows (here one 0.0 on each side)."""
    out[...] = x[1:-1] - x[:-2]


@sc.kernel(reference=diff_halo_reference, depth=1, boundary=0.0)
def diff_with_halo(out, x):
    """The same difference done right: depth=1 with a constant 0 boundary."""
    for i in range(out.shape[0]):
        out[i] = x[i + 1] - x[i]


# -- stencils reading past their rows without depth= -----------------------------------------
def smooth_reference(out, u):
    p = np.concatenate([u[:1], u, u[-1:]])
    out[...] = (p[:-2] + p[1:-1] + p[2:]) / 3.0


@sc.kernel(reference=smooth_reference)
def smooth_clamped(out, u):
    """3-point mean that clamps at its own rows' ends (declares no depth=): wrong at every
    partition edge except the array's two ends."""
    n = out.shape[0]
    for i in range(n):
        lo = i - 1 if i > 0 else 0
        hi = i + 1 if i < n - 1 else n - 1
        out[i] = (u[lo] + u[i] + u[hi]) / 3.0


def periodic_reference(out, u):
    out[...] = np.roll(u, 1) + np.roll(u, -1)


@sc.kernel(reference=periodic_reference)
def periodic_wraps_own_rows(out, u):
    """Periodic neighbour sum reading u[i - 1] and u[(i + 1) % n] of its own rows: wraps
    around its partition instead of the array."""
    n = out.shape[0]
    for i in range(n):
        out[i] = u[i - 1] + u[(i + 1) % n]


# -- position=True kernel that forgets its offset --------------------------------------------
def index_reference(out):
    out[...] = np.arange(out.shape[0], dtype=out.dtype)


@sc.kernel(reference=index_reference, position=True)
def index_ignores_start(out, rows):
    """Writes the local index, not start + i: right only in the first partition."""
    for i in range(out.shape[0]):
        out[i] = i


# -- reductions ------------------------------------------------------------------------------
def sum_reference(x):
    return np.sum(x, dtype=np.float64)


@sc.kernel(reference=sum_reference, combine=np.add)
def sum_drops_last(x):
    """Forgets the last element of every chunk it is given."""
    acc = 0.0
    for i in range(x.shape[0] - 1):
        acc += np.float64(x[i])
    return acc


@sc.kernel(reference=sum_reference, combine=np.add)
def sum_biased(x):
    """A real but tiny error: 1e-6 relative on every partial."""
    acc = 0.0
    for i in range(x.shape[0]):
        acc += np.float64(x[i])
    return acc * (1.0 + 1e-6)


@sc.kernel(reference=sum_reference, combine=np.add, position=True)
def sum_skips_later_starts(x, rows):
    """Skips the first element of every chunk but the array's first: a wrong partial that
    only exists when there are several chunks."""
    start, stop, total = rows
    acc = 0.0
    first = 1 if start > 0 else 0
    for i in range(first, x.shape[0]):
        acc += np.float64(x[i])
    return acc


def int_sum_reference(x):
    return np.sum(x, dtype=np.int64)


@sc.kernel(reference=int_sum_reference, combine=np.add)
def int_sum_off_by_one(x):
    """Integer sum that adds 1 per partial: integers are compared exactly."""
    acc = 0
    for i in range(x.shape[0]):
        acc += np.int64(x[i])
    return acc + 1


@sc.kernel(reference=int_sum_reference, combine=np.add)
def int_sum(x):
    acc = 0
    for i in range(x.shape[0]):
        acc += np.int64(x[i])
    return acc


# -- a scan that ignores its offset ----------------------------------------------------------
def _chunk_total(x):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
    return acc


def cumsum_reference(out, x):
    np.cumsum(x, out=out)


@sc.kernel(reference=cumsum_reference, totals=_chunk_total, identity=0.0)
def cumsum_restarts(out, x, offset):
    """Restarts at 0 in every chunk (never adds its offset)."""
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
        out[i] = acc


# -- a matmul with an off-by-one inner loop --------------------------------------------------
def matmul_reference(c, a, b):
    c[...] = a @ b


@sc.kernel(reference=matmul_reference, whole=("b",))
def matmul_skips_last_term(c, a, b):
    n, k = a.shape
    p = b.shape[1]
    for i in range(n):
        for j in range(p):
            acc = 0.0
            for t in range(k - 1):
                acc += a[i, t] * b[t, j]
            c[i, j] = acc


# -- declared tolerances ---------------------------------------------------------------------
def _f32_rtol(dtype, n, x):
    """This kernel accumulates in float32 though its reference gives float64."""
    return (n + 4) * float(np.finfo(np.float32).eps)


@sc.kernel(reference=sum_reference, combine=np.add, rtol=_f32_rtol)
def sum_in_float32(x):
    acc = np.float32(0.0)
    for i in range(x.shape[0]):
        acc += x[i]
    return np.float64(acc)


@sc.kernel(reference=sum_reference, combine=np.add)
def sum_in_float32_undeclared(x):
    acc = np.float32(0.0)
    for i in range(x.shape[0]):
        acc += x[i]
    return np.float64(acc)


@sc.kernel(reference=sum_reference, combine=np.add)
def plain_sum(x):
    """A correct float64 sum (for tests that change its declared tolerance)."""
    acc = 0.0
    for i in range(x.shape[0]):
        acc += np.float64(x[i])
    return acc
