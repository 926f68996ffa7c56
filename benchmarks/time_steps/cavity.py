"""Cavity flow as in "CFD Python: 12 steps to Navier-Stokes" (step 11; NPBench
cavity_flow): per time step the source b from u and v, an inner Jacobi iteration of the
pressure Poisson equation (nit sweeps, with Neumann edges p[:, 0] = p[:, 1], p[:, -1] =
p[:, -2], p[0] = p[1] and p[-1] = 0 after each sweep), then u and v from the old u, v and p.

sharedcompute today, per time step: one ``pool.map`` for b, one ``pool.iterate`` of nit
sweeps for p (the Neumann row p[0] = p[1] is recomputed in the kernel from two halo rows,
depth=2), one ``pool.map`` writing the new u and v into a second pair of arrays, swapped
by name in Python: 3 * nt calls. "sc program": the same kernels as one step program
(``pool.iterate(sc.program(...), steps=nt)``, the Poisson solve a stage of nit sweeps,
the velocity pair swapped after each step): one call.

dt is smaller than the tutorial's 0.001 so that the finer grid stays stable
(dt = 0.1 * dx**2 / nu), and u, v start stirred (small random interior values) rather than
at rest, so that a kernel multiplying in another order than NumPy's shows at the small
size too (at rest, many products are exact and hide it).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "cavity"
SIZES = {"default": dict(n=301, nt=20, nit=50), "small": dict(n=41, nt=4, nit=5)}
OUTPUTS = ("u", "v", "p")
RHO, NU = 1.0, 0.1


def consts(n):
    dx = dy = 2.0 / (n - 1)
    dt = 0.1 * dx ** 2 / NU
    return dx, dy, dt


def init(n, nt, nit):
    z = np.zeros((n, n))  # un, vn, pn: the sharedcompute version's second arrays
    d = {k: z.copy() for k in ("u", "v", "p", "b", "un", "vn", "pn")}
    rng = np.random.default_rng(7)  # a stirred start (the tutorial's is at rest): every
    d["u"][1:-1, 1:-1] = 0.1 * rng.random((n - 2, n - 2))  # product has inexact operands,
    d["v"][1:-1, 1:-1] = 0.1 * rng.random((n - 2, n - 2))  # so a changed order shows
    return d


def np_cavity(data, size):
    u, v, p, b = data["u"], data["v"], data["p"], data["b"]
    dx, dy, dt = consts(size["n"])
    rho, nu = RHO, NU
    for n in range(size["nt"]):
        un = u.copy()
        vn = v.copy()
        b[1:-1, 1:-1] = (rho * (1 / dt * ((u[1:-1, 2:] - u[1:-1, 0:-2]) / (2 * dx)
                                          + (v[2:, 1:-1] - v[0:-2, 1:-1]) / (2 * dy))
                                - ((u[1:-1, 2:] - u[1:-1, 0:-2]) / (2 * dx)) ** 2
                                - 2 * ((u[2:, 1:-1] - u[0:-2, 1:-1]) / (2 * dy)
                                       * (v[1:-1, 2:] - v[1:-1, 0:-2]) / (2 * dx))
                                - ((v[2:, 1:-1] - v[0:-2, 1:-1]) / (2 * dy)) ** 2))
        for q in range(size["nit"]):
            pn = p.copy()
            p[1:-1, 1:-1] = (((pn[1:-1, 2:] + pn[1:-1, 0:-2]) * dy ** 2
                              + (pn[2:, 1:-1] + pn[0:-2, 1:-1]) * dx ** 2)
                             / (2 * (dx ** 2 + dy ** 2))
                             - dx ** 2 * dy ** 2 / (2 * (dx ** 2 + dy ** 2)) * b[1:-1, 1:-1])
            p[:, -1] = p[:, -2]
            p[0, :] = p[1, :]
            p[:, 0] = p[:, 1]
            p[-1, :] = 0
        u[1:-1, 1:-1] = (un[1:-1, 1:-1]
                         - un[1:-1, 1:-1] * dt / dx * (un[1:-1, 1:-1] - un[1:-1, 0:-2])
                         - vn[1:-1, 1:-1] * dt / dy * (un[1:-1, 1:-1] - un[0:-2, 1:-1])
                         - dt / (2 * rho * dx) * (p[1:-1, 2:] - p[1:-1, 0:-2])
                         + nu * (dt / dx ** 2 * (un[1:-1, 2:] - 2 * un[1:-1, 1:-1]
                                                 + un[1:-1, 0:-2])
                                 + dt / dy ** 2 * (un[2:, 1:-1] - 2 * un[1:-1, 1:-1]
                                                   + un[0:-2, 1:-1])))
        v[1:-1, 1:-1] = (vn[1:-1, 1:-1]
                         - un[1:-1, 1:-1] * dt / dx * (vn[1:-1, 1:-1] - vn[1:-1, 0:-2])
                         - vn[1:-1, 1:-1] * dt / dy * (vn[1:-1, 1:-1] - vn[0:-2, 1:-1])
                         - dt / (2 * rho * dy) * (p[2:, 1:-1] - p[0:-2, 1:-1])
                         + nu * (dt / dx ** 2 * (vn[1:-1, 2:] - 2 * vn[1:-1, 1:-1]
                                                 + vn[1:-1, 0:-2])
                                 + dt / dy ** 2 * (vn[2:, 1:-1] - 2 * vn[1:-1, 1:-1]
                                                   + vn[0:-2, 1:-1])))
        u[0, :] = 0
        u[:, 0] = 0
        u[:, -1] = 0
        u[-1, :] = 1
        v[0, :] = 0
        v[-1, :] = 0
        v[:, 0] = 0
        v[:, -1] = 0


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_cavity(nt, nit, u, v, p, b, rho, nu, dx, dy, dt):
    n, m = u.shape
    un, vn, pn = np.empty_like(u), np.empty_like(v), np.empty_like(p)
    for s in range(nt):
        un[:] = u
        vn[:] = v
        for i in prange(1, n - 1):
            for j in range(1, m - 1):
                dudx = (u[i, j + 1] - u[i, j - 1]) / (2 * dx)
                dvdy = (v[i + 1, j] - v[i - 1, j]) / (2 * dy)
                b[i, j] = rho * (1 / dt * (dudx + dvdy) - dudx ** 2 - 2 * (
                    (u[i + 1, j] - u[i - 1, j]) / (2 * dy) * (v[i, j + 1] - v[i, j - 1]) / (2 * dx))
                    - dvdy ** 2)
        for q in range(nit):
            pn[:] = p
            for i in prange(1, n - 1):
                for j in range(1, m - 1):
                    p[i, j] = (((pn[i, j + 1] + pn[i, j - 1]) * dy ** 2
                                + (pn[i + 1, j] + pn[i - 1, j]) * dx ** 2)
                               / (2 * (dx ** 2 + dy ** 2))
                               - dx ** 2 * dy ** 2 / (2 * (dx ** 2 + dy ** 2)) * b[i, j])
            p[:, -1] = p[:, -2]
            p[0, :] = p[1, :]
            p[:, 0] = p[:, 1]
            p[-1, :] = 0
        for i in prange(1, n - 1):
            for j in range(1, m - 1):
                u[i, j] = (un[i, j] - un[i, j] * dt / dx * (un[i, j] - un[i, j - 1])
                           - vn[i, j] * dt / dy * (un[i, j] - un[i - 1, j])
                           - dt / (2 * rho * dx) * (p[i, j + 1] - p[i, j - 1])
                           + nu * (dt / dx ** 2 * (un[i, j + 1] - 2 * un[i, j] + un[i, j - 1])
                                   + dt / dy ** 2 * (un[i + 1, j] - 2 * un[i, j] + un[i - 1, j])))
                v[i, j] = (vn[i, j] - un[i, j] * dt / dx * (vn[i, j] - vn[i, j - 1])
                           - vn[i, j] * dt / dy * (vn[i, j] - vn[i - 1, j])
                           - dt / (2 * rho * dy) * (p[i + 1, j] - p[i - 1, j])
                           + nu * (dt / dx ** 2 * (vn[i, j + 1] - 2 * vn[i, j] + vn[i, j - 1])
                                   + dt / dy ** 2 * (vn[i + 1, j] - 2 * vn[i, j] + vn[i - 1, j])))
        u[0, :] = 0
        u[:, 0] = 0
        u[:, -1] = 0
        u[-1, :] = 1
        v[0, :] = 0
        v[-1, :] = 0
        v[:, 0] = 0
        v[:, -1] = 0


def run_numba(data, size):
    dx, dy, dt = consts(size["n"])
    nb_cavity(size["nt"], size["nit"], data["u"], data["v"], data["p"], data["b"], RHO, NU,
              dx, dy, dt)


nb_cavity_plain = without_fastmath(nb_cavity)


def run_numba_plain(data, size):
    dx, dy, dt = consts(size["n"])
    nb_cavity_plain(size["nt"], size["nit"], data["u"], data["v"], data["p"], data["b"], RHO,
                    NU, dx, dy, dt)


# The scalars are computed by the caller exactly as NumPy's expression computes them, so
# that the kernels' arithmetic is NumPy's, operation for operation (bitwise).
# Written before boundary="fixed" and position="edges" (#26 items 1 and 3), which would
# drop position= and the padding boundaries; kept as it was (1.4x numba's lines already).
@sc.kernel(depth=1, boundary=0.0, position=True)
def sc_source(b, u, v, rho, idt, dx2, dy2, pos):
    start, stop, n = pos
    m = b.shape[1]
    for i in range(b.shape[0]):
        if start + i == 0 or start + i == n - 1:
            continue
        r = i + 1
        for j in range(1, m - 1):
            dudx = (u[r, j + 1] - u[r, j - 1]) / dx2
            dvdy = (v[r + 1, j] - v[r - 1, j]) / dy2
            b[i, j] = rho * ((((idt * (dudx + dvdy)) - dudx ** 2)
                              - 2 * ((u[r + 1, j] - u[r - 1, j]) / dy2
                                     * (v[r, j + 1] - v[r, j - 1]) / dx2)) - dvdy ** 2)


@sc.kernel(depth=2, boundary=0.0, position=True)
def sc_poisson(out, pn, b, dxq, dyq, den, cb, pos):
    start, stop, n = pos
    m = out.shape[1]
    for i in range(out.shape[0]):
        g = start + i
        if g == n - 1:
            out[i, :] = 0.0
            continue
        r = i + 3 if g == 0 else i + 2  # row 0 copies row 1 (p[0] = p[1]): computed here
        for j in range(1, m - 1):
            out[i, j] = (((pn[r, j + 1] + pn[r, j - 1]) * dyq + (pn[r + 1, j] + pn[r - 1, j])
                          * dxq) / den - cb * b[r, j])
        out[i, m - 1] = out[i, m - 2]
        out[i, 0] = out[i, 1]


@sc.kernel(writes=("u", "v"), depth=1, boundary=0.0, position=True)
def sc_velocity(u, v, un, vn, p, c, pos):
    start, stop, n = pos
    dt, dx, dy, cpx, cpy, nu, ddx, ddy = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    m = u.shape[1]
    for i in range(u.shape[0]):
        g = start + i
        u[i, :] = 1.0 if g == n - 1 else 0.0
        v[i, :] = 0.0
        if g == 0 or g == n - 1:
            continue
        r = i + 1
        for j in range(1, m - 1):
            a = un[r, j]
            u[i, j] = ((((a - a * dt / dx * (a - un[r, j - 1]))
                         - vn[r, j] * dt / dy * (a - un[r - 1, j]))
                        - cpx * (p[r, j + 1] - p[r, j - 1]))
                       + nu * (ddx * ((un[r, j + 1] - 2 * a) + un[r, j - 1])
                               + ddy * ((un[r + 1, j] - 2 * a) + un[r - 1, j])))
            w = vn[r, j]
            v[i, j] = ((((w - a * dt / dx * (w - vn[r, j - 1])) - w * dt / dy * (w - vn[r - 1, j]))
                        - cpy * (p[r + 1, j] - p[r - 1, j]))
                       + nu * (ddx * ((vn[r, j + 1] - 2 * w) + vn[r, j - 1])
                               + ddy * ((vn[r + 1, j] - 2 * w) + vn[r - 1, j])))


def sc_cavity(pool, data, size):
    u, v, p, b = data["u"], data["v"], data["p"], data["b"]
    dx, dy, dt = consts(size["n"])
    rho, nu = RHO, NU
    un, vn, pn = data["un"], data["vn"], data["pn"]
    dxq, dyq = dx ** 2, dy ** 2
    den, cb = 2 * (dxq + dyq), dxq * dyq / (2 * (dxq + dyq))
    c = np.array([dt, dx, dy, dt / (2 * rho * dx), dt / (2 * rho * dy), nu, dt / dxq,
                  dt / dyq])
    for s in range(size["nt"]):
        pool.map(sc_source, b, u, v, rho, 1 / dt, 2 * dx, 2 * dy)
        last = pool.iterate(sc_poisson, pn, p, b, dxq, dyq, den, cb, steps=size["nit"])
        if last is pn:
            p, pn = pn, p
        u, un = un, u  # the new u, v go into the other pair of arrays
        v, vn = vn, v
        pool.map(sc_velocity, u, v, un, vn, p, c)
    for name, a in (("u", u), ("v", v), ("p", p)):
        if a is not data[name]:
            np.asarray(data[name])[...] = a


def sc_cavity_program(pool, data, size):
    # one call: b, nit Poisson sweeps and the u/v update of every step inside the workers
    u, v, p, b = data["u"], data["v"], data["p"], data["b"]
    dx, dy, dt = consts(size["n"])
    rho, nu = RHO, NU
    dxq, dyq = dx ** 2, dy ** 2
    den, cb = 2 * (dxq + dyq), dxq * dyq / (2 * (dxq + dyq))
    c = np.array([dt, dx, dy, dt / (2 * rho * dx), dt / (2 * rho * dy), nu, dt / dxq,
                  dt / dyq])
    now = pool.iterate(sc.program(
        sc.stage(sc_source, b, u, v, rho, 1 / dt, 2 * dx, 2 * dy),
        sc.stage(sc_poisson, data["pn"], p, b, dxq, dyq, den, cb, sweeps=size["nit"]),
        sc.stage(sc_velocity, data["un"], data["vn"], u, v, p, c),
        swap=[(u, data["un"]), (v, data["vn"])]), steps=size["nt"])
    for a in (u, v, p):
        if now[a] is not a:
            np.asarray(a)[...] = now[a]


VARIANTS = {
    "numpy": ("numpy", np_cavity),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "sc map+iterate loop": ("sc", sc_cavity),
    "sc program": ("sc", sc_cavity_program),
}
CHECK = {"numba prange": (1e-8, 1e-10), "numba 1 thread": (1e-8, 1e-10)}
SC_CODE = ("sc_source", "sc_poisson", "sc_velocity", "sc_cavity")
SC_VARIANT_CODE = {"sc program": ("sc_source", "sc_poisson", "sc_velocity",
                                  "sc_cavity_program")}
NUMBA_CODE = ("nb_cavity",)
NOTES = ("sc bitwise equal to NumPy (scalars precomputed as NumPy's expression groups them); "
         "numba fastmath=True compared with allclose. The parent's copy-back of the swapped "
         "arrays is part of the sc version (the caller's arrays must hold the result)")
