"""Issue 26 item 5: write and reduce in one pass, ``pool.map(kernel, ..., partial=True)``.

The written array is compared with NumPy bitwise; the partial with ``pool.reduce`` of a
twin reduction computing the same per-chunk value from the written array (bitwise: the
same chunk grid and combine tree), with NumPy within the summation order, and across
1, 2 and 3 workers (bitwise), under fork, spawn and forkserver, inline and in a direct call.
"""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest

import sharedcompute as sc

from conftest import START_METHODS, shared_pool
from partialkernels import (colsum, heat_change, heat_change_reflect, pair_of, rank1_colsum,
                            row_total, scale_sum, square_mean)

WORKERS = (1, 2, 3)
CHUNK = 7  # rows per chunk (chunk_rows=): many chunks, so the combine tree has depth


def data(rows, cols=5, dtype=np.float64, nan=False, seed=0):
    x = np.random.default_rng(seed).normal(size=(rows, cols)).astype(dtype)
    if nan and rows > 3:
        x[3, 1] = np.nan
    return x


def bits(v):
    """A partial's exact bits (NaN payloads and -0.0 included)."""
    return np.asarray(v, dtype=np.float64).tobytes()


def run_scale_sum(pool, x, s=1.5):
    y, xs = pool.zeros(x.shape, x.dtype), pool.array(x)
    out, value = pool.map(scale_sum, y, xs, s, partial=True, chunk_rows=CHUNK)
    assert out is y
    twin = pool.reduce(row_total, y, chunk_rows=CHUNK)
    return y.numpy().copy(), value, twin


# -- against NumPy and the reduce twin, every start method and worker count --------------------
@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("dtype,nan", [(np.float64, False), (np.float32, False),
                                       (np.float64, True)])
def test_scale_sum_matches_numpy_and_reduce_for_every_worker_count(method, dtype, nan):
    x = data(60, dtype=dtype, nan=nan)
    want = (dtype(1.5) * x) if dtype is np.float32 else 1.5 * x
    seen = set()
    for w in WORKERS:
        y, value, twin = run_scale_sum(shared_pool(w, method), x)
        assert np.array_equal(y, want, equal_nan=True)  # bitwise: the same product
        assert bits(value) == bits(twin)  # the reduce of the same per-chunk values
        seen.add(bits(value))
        if nan:
            assert math.isnan(value)
        else:
            assert value == pytest.approx(np.sum(want, dtype=np.float64), rel=1e-12)
    assert len(seen) == 1  # bitwise the same for 1, 2 and 3 workers


@pytest.mark.parametrize("method", START_METHODS)
def test_vector_partial_gemver_shape(method):
    """A += u v^T with A^T y from the same pass: the written A bitwise as NumPy's, the
    vector partial bitwise the reduce twin's and NumPy's within rounding."""
    rng = np.random.default_rng(1)
    A0, u, v, y = rng.random((45, 6)), rng.random(45), rng.random(6), rng.random(45)
    seen = set()
    for w in WORKERS:
        pool = shared_pool(w, method)
        A, us, ys = pool.array(A0), pool.array(u), pool.array(y)
        out, value = pool.map(rank1_colsum, A, us, v, ys, partial=True, chunk_rows=CHUNK)
        assert out is A and value.shape == (6,)
        assert np.array_equal(A.numpy(), A0 + np.outer(u, v))
        assert bits(value) == bits(pool.reduce(colsum, A, ys, chunk_rows=CHUNK))
        np.testing.assert_allclose(value, y @ (A0 + np.outer(u, v)), rtol=1e-13)
        seen.add(bits(value))
    assert len(seen) == 1


def test_finalize_is_applied_as_reduce_applies_it():
    x = np.random.default_rng(2).normal(size=50)
    for w in WORKERS:
        pool = shared_pool(w, START_METHODS[-1])
        y, xs = pool.zeros(50), pool.array(x)
        out, mean = pool.map(square_mean, y, xs, partial=True, chunk_rows=CHUNK)
        assert np.array_equal(out.numpy(), x * x)
        assert bits(mean) == bits(pool.reduce(pair_of, y, chunk_rows=CHUNK))
        assert mean == pytest.approx(np.mean(x * x), rel=1e-13)


# -- stencils: halos, edges, zero rows ---------------------------------------------------------
def heat_numpy(u, boundary):
    if u.shape[0] == 0:
        return u.copy(), 0.0
    p = u if boundary == "none" else np.pad(u, 1, mode="symmetric")
    out = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    mid = p[1:-1]
    return out, float(np.max(np.abs(out - mid), initial=0.0))


@pytest.mark.parametrize("kernel,boundary", [(heat_change, "none"),
                                             (heat_change_reflect, "reflect")])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 40])
def test_stencil_partial_is_the_largest_change(kernel, boundary, n):
    """depth=1 under 'none' (edges unwritten, chunks with no row to write give the
    kernel's zero-row value, 0.0) and 'reflect' (edge rows a padded piece of their own)."""
    u0 = np.random.default_rng(n).normal(size=n)
    want_out, want = heat_numpy(u0, boundary)
    lo = 1 if boundary == "none" and n > 2 else 0
    for w in WORKERS:
        pool = shared_pool(w, START_METHODS[0])
        u, out = pool.array(u0), pool.zeros(n)
        _, value = pool.map(kernel, out, u, partial=True, chunk_rows=max(1, min(2, n)))
        assert value == want  # a max: exact whatever the grouping
        assert np.array_equal(out.numpy()[lo:lo + want_out.shape[0]], want_out)


@pytest.mark.parametrize("cols", [5, 0])
def test_zero_rows_give_the_reduce_of_an_empty_array(cols):
    pool = shared_pool(2, START_METHODS[-1])
    y, value, twin = run_scale_sum(pool, data(0, cols))
    assert value == 0.0 and bits(value) == bits(twin)
    A = pool.zeros((0, 4))
    _, vec = pool.map(rank1_colsum, A, pool.zeros(0), np.ones(4), pool.zeros(0), partial=True)
    assert np.array_equal(vec, np.zeros(4))
    _, mean = pool.map(square_mean, pool.zeros(0), pool.zeros(0), partial=True)
    assert math.isnan(mean) and math.isnan(pool.reduce(pair_of, pool.zeros(0)))


# -- inline backend, direct calls, dynamic schedule, progress ----------------------------------
def test_inline_direct_and_dynamic_agree_bitwise_with_the_pool():
    x = data(60, nan=False)
    y_pool, v_pool, _ = run_scale_sum(shared_pool(3, START_METHODS[0]), x)
    with sc.Pool(3, backend="inline") as pool:
        y_in, v_in, twin = run_scale_sum(pool, x)
    assert bits(v_in) == bits(v_pool) == bits(twin) and np.array_equal(y_in, y_pool)
    y = np.zeros_like(x)
    out, v_direct = scale_sum(y, x, 1.5, workers=3, partial=True)
    assert out is y and np.array_equal(y, y_pool)
    pool = shared_pool(3, START_METHODS[0])
    yd, xs = pool.zeros(x.shape), pool.array(x)
    _, v_dyn = pool.map(scale_sum, yd, xs, 1.5, partial=True, schedule="dynamic",
                        chunk_rows=CHUNK)
    assert bits(v_dyn) == bits(v_pool) and np.array_equal(yd.numpy(), y_pool)
    seen = []
    _, v_bar = pool.map(scale_sum, yd, xs, 1.5, partial=True, chunk_rows=CHUNK,
                        progress=lambda done, total: seen.append((done, total)))
    assert bits(v_bar) == bits(v_pool) and seen and seen[-1][0] == seen[-1][1]
    # the direct call's own chunk grid: the direct reduce twin gives the same bits
    assert bits(v_direct) == bits(row_total(y, workers=3))


# -- repeated calls: the call cache and pool.bind ----------------------------------------------
@pytest.mark.parametrize("method", START_METHODS)
def test_repeated_and_bound_calls_run_from_the_cache(method):
    pool = shared_pool(2, method)
    x = data(300)
    y, xs = pool.zeros(x.shape), pool.array(x)
    first = pool.map(scale_sum, y, xs, 1.5, partial=True)
    mine = [k[0] for k in pool._backend.cache.entries if k[1] is scale_sum and y.identity in k]
    assert mine == ["partial"]  # cached under its own op: a plain map of it is another call
    ex, rung = pool._backend.executor, []
    ring = ex.ring
    with mock.patch.object(ex, "ring", lambda *a, **k: rung.append(k["what"]) or ring(*a, **k)):
        for s in (1.5, 2.5, 1.5):  # rung again, also with a new scalar sent by the doorbell
            out, value = pool.map(scale_sum, y, xs, s, partial=True)
            assert out is y and np.array_equal(y.numpy(), s * x)
            assert bits(value) == bits(pool.reduce(row_total, y))
    assert rung.count("scale_sum") == 3  # the partial calls ran from the workers' cache
    for s in (1.5, 2.5, 1.5):  # and the same again through the ordinary path
        out, value = pool.map(scale_sum, y, xs, s, partial=True)
        assert out is y and np.array_equal(y.numpy(), s * x)
        assert bits(value) == bits(pool.reduce(row_total, y))
    assert bits(value) == bits(first[1])
    assert pool.map(scale_sum, y, xs, 3.0) is y  # plain map: the array alone, as before
    assert np.array_equal(y.numpy(), 3.0 * x)
    step = pool.bind(scale_sum, y, xs, 1.5, partial=True)
    for _ in range(3):
        out, value = step()
        assert out is y and bits(value) == bits(first[1])
    assert step.op == "partial"


# -- refusals and their advice -----------------------------------------------------------------
def test_reduce_of_a_fused_kernel_names_map_partial_and_the_advice_works():
    pool = shared_pool(2, START_METHODS[0])
    x = data(20)
    y, xs = pool.zeros(x.shape), pool.array(x)
    with pytest.raises(sc.InputError, match=r"writes 'y' and returns a partial.*"
                                            r"pool\.map\(kernel, \.\.\., partial=True\)"):
        pool.reduce(scale_sum, y, xs, 1.5)
    out, value = pool.map(scale_sum, y, xs, 1.5, partial=True)  # the advice
    assert bits(value) == bits(pool.reduce(row_total, y))


def test_partial_true_refuses_kernels_that_are_not_fused():
    pool = shared_pool(2, START_METHODS[0])
    y = pool.zeros((4, 5))
    with pytest.raises(sc.InputError, match=r"row_total is a reduce: call pool\.reduce"):
        pool.map(row_total, y, partial=True)
    assert pool.reduce(row_total, y) == 0.0  # the advice works
    from sharedcompute.kernels.elementwise import axpy
    with pytest.raises(sc.InputError, match=r"axpy is a map: call pool\.map"):
        pool.map(axpy, pool.zeros(3), pool.zeros(3), 1.0, partial=True)
    with pytest.raises(sc.InputError, match="axpy is a map"):
        pool.bind(axpy, pool.zeros(3), pool.zeros(3), 1.0, partial=True)
    with pytest.raises(sc.InputError, match=r"axpy is a map"):
        axpy(np.zeros(3), np.zeros(3), 1.0, partial=True)
    with pytest.raises(sc.InputError, match="needs a sharedcompute kernel"):
        pool.map(abs, [1, 2], partial=True)


def test_dask_backend_refuses_partial_with_the_way_around():
    pytest.importorskip("distributed")
    with sc.Pool(backend="dask", n_workers=1) as pool:
        x = data(20)
        y, xs = pool.zeros(x.shape), pool.array(x)
        with pytest.raises(sc.InputError, match="not available on the Dask backend"):
            pool.map(scale_sum, y, xs, 1.5, partial=True)
        with pytest.raises(sc.InputError, match="not available on the Dask backend"):
            pool.bind(scale_sum, y, xs, 1.5, partial=True)()
        pool.map(scale_sum, y, xs, 1.5)  # the way around: map, then a reduction
        assert pool.reduce(row_total, y) == pytest.approx(np.sum(1.5 * x), rel=1e-12)


def test_the_guides_gemver_example_runs(tmp_path):
    """docs/guide/kernels.md's write-and-reduce example, run as the script it is."""
    import re
    import subprocess
    import sys
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    page = (root / "docs" / "guide" / "kernels.md").read_text()
    block = re.findall(r"```python\n(.*?)```", page[page.index("### Write and reduce"):],
                       re.S)[0]
    script = tmp_path / "rank2_yta.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_repeated_partial_map_runs_no_more_engine_modules_than_a_repeated_reduce():
    """The cached path: a repeated map(..., partial=True) is a repeated reduce's path plus
    nothing (tests/test_engine_paths.py's measure and its reduce budget)."""
    from test_engine_paths import BUDGET, modules, trace
    from sharedcompute.kernels.stencils import jacobi2d_residual
    pool = shared_pool(2, START_METHODS[-1])
    u, o = pool.array(np.random.default_rng(0).random((64, 64))), pool.zeros((64, 64))
    pool.map(jacobi2d_residual, o, u, partial=True)
    mods = modules(trace(lambda: pool.map(jacobi2d_residual, o, u, partial=True)))
    assert mods[0] == "pool" and len(mods) <= BUDGET["repeated reduce"], mods
