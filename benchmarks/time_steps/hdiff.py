"""Horizontal diffusion as NPBench/GT4Py hdiff: in_field padded by 2 on each side of I and
J, a Laplacian (I+2, J+2), staggered fluxes flx (I+1, J) and fly (I, J+1) limited by the
sign of the gradient, and out_field (I, J) = in - coeff * div(flux).

sharedcompute, first port (before #26 item 4): out_field and coeff are split by rows,
in_field is passed whole and sliced by hand with ``position=True``. "sc map (halo=)":
in_field declared with its own 2 + 2 rows (``halo={"in_field": (2, 2)}``), split with
out_field. In both, lap, flx and fly are each partition's own temporaries (the rows it
needs, recomputed at its edges).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

import sharedcompute as sc

from time_steps.common import without_fastmath

NAME = "hdiff"
SIZES = {"default": dict(I=256, J=256, K=80), "small": dict(I=40, J=12, K=5)}
OUTPUTS = ("out_field",)


def init(I, J, K):
    rng = np.random.default_rng(42)
    return {"in_field": rng.random((I + 4, J + 4, K)), "out_field": np.zeros((I, J, K)),
            "coeff": rng.random((I, J, K))}


def np_hdiff(data, size):
    in_field, out_field, coeff = data["in_field"], data["out_field"], data["coeff"]
    I, J = out_field.shape[0], out_field.shape[1]
    lap_field = 4.0 * in_field[1:I + 3, 1:J + 3, :] - (
        in_field[2:I + 4, 1:J + 3, :] + in_field[0:I + 2, 1:J + 3, :]
        + in_field[1:I + 3, 2:J + 4, :] + in_field[1:I + 3, 0:J + 2, :])
    res = lap_field[1:, 1:J + 1, :] - lap_field[:-1, 1:J + 1, :]
    flx_field = np.where(
        (res * (in_field[2:I + 3, 2:J + 2, :] - in_field[1:I + 2, 2:J + 2, :])) > 0, 0, res)
    res = lap_field[1:I + 1, 1:, :] - lap_field[1:I + 1, :-1, :]
    fly_field = np.where(
        (res * (in_field[2:I + 2, 2:J + 3, :] - in_field[2:I + 2, 1:J + 2, :])) > 0, 0, res)
    out_field[:, :, :] = in_field[2:I + 2, 2:J + 2, :] - coeff[:, :, :] * (
        flx_field[1:, :, :] - flx_field[:-1, :, :] + fly_field[:, 1:, :] - fly_field[:, :-1, :])


@numba.njit(parallel=True, fastmath=True, cache=True)
def nb_hdiff(in_field, out_field, coeff):
    I, J, K = out_field.shape
    lap = np.empty((I + 2, J + 2, K))
    flx = np.empty((I + 1, J, K))
    fly = np.empty((I, J + 1, K))
    for i in prange(I + 2):
        for j in range(J + 2):
            for k in range(K):
                lap[i, j, k] = 4.0 * in_field[i + 1, j + 1, k] - (
                    in_field[i + 2, j + 1, k] + in_field[i, j + 1, k]
                    + in_field[i + 1, j + 2, k] + in_field[i + 1, j, k])
    for i in prange(I + 1):
        for j in range(J):
            for k in range(K):
                res = lap[i + 1, j + 1, k] - lap[i, j + 1, k]
                g = in_field[i + 2, j + 2, k] - in_field[i + 1, j + 2, k]
                flx[i, j, k] = 0.0 if res * g > 0 else res
    for i in prange(I):
        for j in range(J + 1):
            for k in range(K):
                res = lap[i + 1, j + 1, k] - lap[i + 1, j, k]
                g = in_field[i + 2, j + 2, k] - in_field[i + 2, j + 1, k]
                fly[i, j, k] = 0.0 if res * g > 0 else res
    for i in prange(I):
        for j in range(J):
            for k in range(K):
                out_field[i, j, k] = in_field[i + 2, j + 2, k] - coeff[i, j, k] * (
                    flx[i + 1, j, k] - flx[i, j, k] + fly[i, j + 1, k] - fly[i, j, k])


def run_numba(data, size):
    nb_hdiff(data["in_field"], data["out_field"], data["coeff"])


nb_hdiff_plain = without_fastmath(nb_hdiff)


def run_numba_plain(data, size):
    nb_hdiff_plain(data["in_field"], data["out_field"], data["coeff"])


# The rows' computation, shared by both ports: src holds out_field's rows of in_field
# with their 2 + 2 padding rows
@numba.njit(nogil=True)
def hdiff_rows(out_field, src, coeff):
    rows, J, K = out_field.shape
    lap = np.empty((rows + 2, J + 2, K))
    for i in range(rows + 2):
        for j in range(J + 2):
            for k in range(K):
                lap[i, j, k] = 4.0 * src[i + 1, j + 1, k] - (
                    ((src[i + 2, j + 1, k] + src[i, j + 1, k]) + src[i + 1, j + 2, k])
                    + src[i + 1, j, k])
    flx = np.empty((rows + 1, J, K))
    for i in range(rows + 1):
        for j in range(J):
            for k in range(K):
                res = lap[i + 1, j + 1, k] - lap[i, j + 1, k]
                g = src[i + 2, j + 2, k] - src[i + 1, j + 2, k]
                flx[i, j, k] = 0.0 if res * g > 0 else res
    fly = np.empty((rows, J + 1, K))
    for i in range(rows):
        for j in range(J + 1):
            for k in range(K):
                res = lap[i + 1, j + 1, k] - lap[i + 1, j, k]
                g = src[i + 2, j + 2, k] - src[i + 2, j + 1, k]
                fly[i, j, k] = 0.0 if res * g > 0 else res
    for i in range(rows):
        for j in range(J):
            for k in range(K):
                out_field[i, j, k] = src[i + 2, j + 2, k] - coeff[i, j, k] * (
                    ((flx[i + 1, j, k] - flx[i, j, k]) + fly[i, j + 1, k]) - fly[i, j, k])


# The first port: in_field passed whole and sliced by position= ("sc map (halo=)" below
# declares its own rows instead).
@sc.kernel(whole=("in_field",), position=True)
def sc_hdiff_rows(out_field, in_field, coeff, pos):
    hdiff_rows(out_field, in_field[pos[0]:pos[1] + 4], coeff)


def sc_hdiff(pool, data, size):
    pool.map(sc_hdiff_rows, data["out_field"], data["in_field"], data["coeff"])


# #26 item 4: in_field declared with its own rows (halo=): split with out_field, no whole=
# and no slicing by hand
@sc.kernel(halo={"in_field": (2, 2)})
def sc_hdiff_halo(out_field, in_field, coeff):
    hdiff_rows(out_field, in_field, coeff)


def sc_hdiff_halo_map(pool, data, size):
    pool.map(sc_hdiff_halo, data["out_field"], data["in_field"], data["coeff"])


VARIANTS = {
    "numpy": ("numpy", np_hdiff),
    "numba prange": ("numba-par", run_numba),
    "numba 1 thread": ("numba-1t", run_numba),
    "numba prange, no fastmath": ("numba-par-other", run_numba_plain),
    "sc map (whole in_field)": ("sc", sc_hdiff),
    "sc map (halo=)": ("sc", sc_hdiff_halo_map),
}
CHECK = {"numba prange": (1e-12, 1e-12), "numba 1 thread": (1e-12, 1e-12)}
SC_CODE = ("hdiff_rows", "sc_hdiff_rows", "sc_hdiff")
SC_VARIANT_CODE = {
    "sc map (halo=)": ("hdiff_rows", "sc_hdiff_halo", "sc_hdiff_halo_map")}
NUMBA_CODE = ("nb_hdiff",)
NOTES = ("sc bitwise equal to NumPy; numba fastmath=True compared with allclose. One "
         "application (no time loop), as NPBench's hdiff")
