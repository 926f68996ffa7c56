"""Kernels of tests/test_wavefront.py (wavefront stages), in a module of their own so that
spawn and forkserver workers import them by name. Each is the SERIAL in-place sweep of a
halo-padded block: called on the whole array, it is the reference."""
import numpy as np

import sharedcompute as sc


@sc.kernel(writes=("u",), depth=1)
def sor(u, omega):
    """5-point SOR (Gauss-Seidel at omega=1): new values above and left, old below, right."""
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            u[i, j] = (1 - omega) * u[i, j] + omega * 0.25 * (
                u[i - 1, j] + u[i, j - 1] + u[i, j + 1] + u[i + 1, j])


@sc.kernel(writes=("a",), depth=1)
def p2p(a):
    """The Parallel Research Kernels' p2p sweep (its grid with a ghost last row and column)."""
    for i in range(1, a.shape[0] - 1):
        for j in range(1, a.shape[1] - 1):
            a[i, j] = a[i - 1, j] + a[i, j - 1] - a[i - 1, j - 1]


@sc.kernel(writes=("u",), depth=2)
def wide(u):
    """A depth-2 sweep reading two rows up and two columns left (new), right and down (old)."""
    for i in range(2, u.shape[0] - 2):
        for j in range(2, u.shape[1] - 2):
            u[i, j] = 0.2 * (u[i - 2, j] + u[i - 1, j - 1] + u[i, j - 2] + u[i, j + 2]
                             + u[i + 2, j + 1])


@sc.kernel(writes=("u",), depth=1)
def poisson_gs(u, f, h2):
    """Gauss-Seidel for -lap(u) = f: reads a second array, cut as u is."""
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            u[i, j] = 0.25 * (u[i - 1, j] + u[i, j - 1] + u[i, j + 1] + u[i + 1, j]
                              + h2 * f[i, j])


@sc.kernel(writes=("u",), depth=1)
def sor_failing(u, omega):
    """``sor`` that raises where it meets the value -7.0 (placed in one worker's rows)."""
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            if u[i, j] == -7.0:
                raise ValueError("met the poisoned value")
            u[i, j] = (1 - omega) * u[i, j] + omega * 0.25 * (
                u[i - 1, j] + u[i, j - 1] + u[i, j + 1] + u[i + 1, j])


@sc.kernel(writes=("old",), combine=np.maximum)
def change(old, u):
    """The largest change of u since the last call (its partial); old takes u's rows."""
    m = 0.0
    for i in range(u.shape[0]):
        for j in range(u.shape[1]):
            d = abs(u[i, j] - old[i, j])
            if d > m:
                m = d
            old[i, j] = u[i, j]
    return m


@sc.kernel(writes=("u", "v"), depth=1)
def two_outputs(u, v):
    for i in range(1, u.shape[0] - 1):
        v[i, 0] = u[i, 0]


@sc.kernel(writes=("u",))
def no_depth(u):
    pass


@sc.kernel(writes=("u",), depth=1, position=True)
def with_position(u, pos):
    pass


@sc.kernel(writes=("u",), depth=1, boundary="reflect")
def padded(u):
    pass


@sc.kernel(writes=("u",), depth=1)
def nine_point(u):
    """Reads the corners too: the upper right NEW and the lower left OLD in the serial
    sweep, which column blocking cannot give (not the serial result), but race-free."""
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            u[i, j] = (u[i - 1, j - 1] + u[i - 1, j] + u[i - 1, j + 1] + u[i, j - 1]
                       + u[i, j + 1] + u[i + 1, j - 1] + u[i + 1, j] + u[i + 1, j + 1]) / 8.0
