"""Kernels of tests/test_programs.py (step programs, sc.program), in a module of their own
so that spawn and forkserver workers import them by name."""
import numpy as np

import sharedcompute as sc


@sc.kernel(writes=("ey", "ex"), depth=1, boundary=0.0, position=True)
def e_update(ey, ex, hz, fict, t, pos):
    """FDTD-2D's ey and ex from hz; ey's first row is the source term fict[t]."""
    start = pos[0]
    ny = ey.shape[1]
    for i in range(ey.shape[0]):
        r = i + 1
        for j in range(ny):
            if start + i == 0:
                ey[i, j] = fict[t]
            else:
                ey[i, j] = ey[i, j] - 0.5 * (hz[r, j] - hz[r - 1, j])
            if j > 0:
                ex[i, j] = ex[i, j] - 0.5 * (hz[r, j] - hz[r, j - 1])


@sc.kernel(depth=1, boundary=0.0, position=True)
def h_update(hz, ex, ey, pos):
    """FDTD-2D's hz from ex and ey; its last row is not updated."""
    start, stop, nx = pos
    ny = hz.shape[1]
    for i in range(hz.shape[0]):
        if start + i == nx - 1:
            continue
        r = i + 1
        for j in range(ny - 1):
            hz[i, j] = hz[i, j] - 0.7 * (((ex[r, j + 1] - ex[r, j]) + ey[r + 1, j]) - ey[r, j])


@sc.kernel
def source(b, v, t):
    """b from v and the step index."""
    for i in range(b.shape[0]):
        for j in range(b.shape[1]):
            b[i, j] = 0.5 * v[i, j] + 0.01 * t


@sc.kernel(depth=1)
def relax(out, u, b):
    """A Jacobi sweep with a source (boundary 'none': edge rows held fixed)."""
    m = out.shape[1]
    for i in range(out.shape[0]):
        r = i + 1
        for j in range(1, m - 1):
            out[i, j] = 0.25 * (((u[r, j - 1] + u[r, j + 1]) + u[r - 1, j]) + u[r + 1, j]) - b[r, j]
        out[i, 0] = u[r, 0]
        out[i, m - 1] = u[r, m - 1]


@sc.kernel(depth=1, boundary="reflect")
def advance(vn, v, p):
    """The new v from the old v and p's neighbours."""
    m = vn.shape[1]
    for i in range(vn.shape[0]):
        r = i + 1
        for j in range(m):
            vn[i, j] = v[r, j] + 0.1 * ((p[r - 1, j] + p[r + 1, j]) - 2.0 * p[r, j])


@sc.kernel
def fail_at(out, t, bad):
    """Writes t; raises at step ``bad`` (a ZeroDivisionError in the worker)."""
    for i in range(out.shape[0]):
        if t == bad and i == 0:
            out[i] = 1 // (t - bad)
        out[i] = t


@sc.kernel
def scale(out, x):
    for i in range(out.shape[0]):
        out[i] = 2.0 * x[i]


@sc.kernel(position=True)
def slow_first_row(y, t, spin, pos):
    """y = t + 1, the global first row only after ``spin`` float additions (a slow worker)."""
    start = pos[0]
    for i in range(y.shape[0]):
        acc = 0.0
        if start + i == 0 and spin > 0:
            for _ in range(spin):
                acc += 1.0
            acc -= spin
        y[i] = t + 1.0 + acc


@sc.kernel(whole=("y",))
def sum_all(out, y):
    """Every row: the sum of all of y (read whole: rows other workers wrote)."""
    s = 0.0
    for k in range(y.shape[0]):
        s += y[k]
    for i in range(out.shape[0]):
        out[i] = s


@sc.kernel
def writes_its_input(out, x):
    """Writes ``x``, which it does not declare in writes=: refused by numba's typing."""
    for i in range(out.shape[0]):
        x[i] = 1.0
        out[i] = x[i]
