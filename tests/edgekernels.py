"""Kernels of tests/test_edges.py (boundary="fixed", position="edges", halo=), in a module
of their own so that spawn and forkserver workers import them by name. Each has a NumPy
twin in the test file written with the same operations in the same order (float64
arithmetic where numba's literals promote, stored in the array's dtype), so the results
compare bit for bit."""
import numpy as np

import sharedcompute as sc


@sc.kernel(depth=1, boundary="fixed")
def jacobi_2d(out, u):
    """polybench's jacobi_2d sweep: interior points only; the edge rows and columns of
    each array are its own and never written."""
    m = out.shape[1]
    for i in range(out.shape[0]):
        r = i + 1
        for j in range(1, m - 1):
            out[i, j] = 0.2 * ((((u[r, j] + u[r, j - 1]) + u[r, j + 1]) + u[r + 1, j])
                               + u[r - 1, j])


@sc.kernel(depth=1, boundary="fixed")
def heat_fixed(out, u):
    """A 1-D three-point sweep, for 1-row and 2-row arrays."""
    for i in range(out.shape[0]):
        r = i + 1
        out[i] = 0.25 * ((u[r - 1] + u[r + 1]) + 2.0 * u[r])


@sc.kernel(depth=1, boundary="fixed", combine=np.maximum)
def jacobi_2d_change(out, u):
    """jacobi_2d returning the largest change of its rows: a fused, idempotent residual
    (iterate checks it inside blocks)."""
    m = out.shape[1]
    big = 0.0
    for i in range(out.shape[0]):
        r = i + 1
        for j in range(1, m - 1):
            v = 0.2 * ((((u[r, j] + u[r, j - 1]) + u[r, j + 1]) + u[r + 1, j]) + u[r - 1, j])
            out[i, j] = v
            big = max(big, abs(v - u[r, j]))
    return big


@sc.kernel(depth=1, position="edges")
def mark_edges(out, u, edges):
    """Copies its middle input row and adds 1 to the first row the call writes, 2 to the
    last: the edge rule without row arithmetic."""
    first, last = edges
    n = out.shape[0]
    for i in range(n):  # computed in a local: a kernel that reads out is never blocked
        v = u[i + 1]
        if first and i == 0:
            v += 1.0
        if last and i == n - 1:
            v += 2.0
        out[i] = v


@sc.kernel(position="edges")
def mark_edges_flat(out, u, edges):
    """mark_edges without a halo (no depth): first and last are rows 0 and n - 1."""
    first, last = edges
    n = out.shape[0]
    for i in range(n):  # computed in a local: a kernel that reads out is never blocked
        v = u[i]
        if first and i == 0:
            v += 1.0
        if last and i == n - 1:
            v += 2.0
        out[i] = v


@sc.kernel(combine=np.add, position="edges")
def count_edges(x, edges):
    """A reduction: how many calls hold the first row (x 1) and the last (x 10)."""
    first, last = edges
    return (1 if first else 0) + (10 if last else 0)


@sc.kernel(halo={"inp": (2, 2), "flx": (0, 1)})
def staggered(out, inp, flx, c):
    """hdiff's shape: ``inp`` padded by 2 rows on each side (its row r + 2 is out's row r),
    ``flx`` a staggered field with one row more (its rows r and r + 1 bracket out's row r)."""
    for i in range(out.shape[0]):
        r = i + 2
        for j in range(out.shape[1]):
            out[i, j] = inp[r, j] - c * ((flx[i + 1, j] - flx[i, j])
                                         + (inp[r - 2, j] + inp[r + 2, j]))


@sc.kernel(depth=1, boundary="fixed", halo={"f": (1, 1)})
def heat_source(out, u, f):
    """An iterate with a pre-padded source term (f has a row more on each side)."""
    for i in range(out.shape[0]):
        r = i + 1
        out[i] = 0.25 * ((u[r - 1] + u[r + 1]) + 2.0 * u[r]) + 0.125 * (f[r - 1] + f[r + 1])


@sc.kernel(combine=np.add, halo={"x": (0, 1)})
def squared_steps(x):
    """A reduction over a staggered field: sum of (x[i + 1] - x[i])**2 (integers: exact)."""
    total = 0
    for i in range(x.shape[0] - 1):
        d = x[i + 1] - x[i]
        total += d * d
    return total


def staggered_reference(out, inp, flx, c):
    """staggered on whole arrays: inp and flx arrive as they are (their own halo rows)."""
    n = out.shape[0]
    out[:] = inp[2:n + 2] - c * ((flx[1:] - flx[:-1]) + (inp[:n] + inp[4:n + 4]))


staggered.reference = staggered_reference


@sc.kernel(depth=1)
def interior_only(out, u):
    """jacobi_2d's sweep under the default boundary 'none': the edge columns are never
    written, as in many ported solvers (the blocked sweeps must then leave each array's
    own values there, as plain sweeps do)."""
    m = out.shape[1]
    for i in range(out.shape[0]):
        r = i + 1
        for j in range(1, m - 1):
            out[i, j] = 0.2 * ((((u[r, j] + u[r, j - 1]) + u[r, j + 1]) + u[r + 1, j])
                               + u[r - 1, j])
