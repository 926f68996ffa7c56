"""schedule="dynamic": idle workers take the next chunks; the result is bitwise the static
one for any worker count, and failures report as they do for static calls."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sharedcompute as sc
import taskkernels as tk
from conftest import START_METHODS, shared_pool
from sharedcompute.partition import guided_pieces
from sharedcompute.partition import chunk_grid, chunk_rows, split_even


@given(st.integers(1, 5000), st.integers(1, 16))
def test_guided_pieces_cover_the_grid_in_order_and_shrink(n_chunks, workers):
    pieces = guided_pieces(n_chunks, workers)
    assert [p[0] for p in pieces] == [0] + [p[1] for p in pieces[:-1]]
    assert (pieces[-1][1] if pieces else 0) == n_chunks
    sizes = [b - a for a, b in pieces]
    assert all(s >= 1 for s in sizes) and sizes == sorted(sizes, reverse=True)
    if n_chunks >= 2 * workers:
        assert sizes[-1] == 1  # a balanced end


def test_a_small_array_is_cut_into_enough_chunks_for_every_worker():
    grid = chunk_grid(10_000, chunk_rows(10_000, 8))
    assert len(grid) >= 16  # was two chunks of 8,192 and 1,808 rows
    for workers in (2, 3, 4):
        rows = [grid[b - 1][1] - grid[a][0] for a, b in split_even(len(grid), workers)]
        assert max(rows) / (10_000 / workers) < 1.3


@pytest.mark.parametrize("method", START_METHODS)
def test_dynamic_map_and_reduce_are_bitwise_the_static_result(method):
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal(50_001) * 1e6
    for workers in (1, 2, 3):
        pool = shared_pool(workers, method) if workers == 2 else sc.Pool(workers,
                                                                          start_method=method)
        x = pool.array(x0)
        static = pool.reduce(tk.float_sum, x)
        assert pool.reduce(tk.float_sum, x, schedule="dynamic") == static
        assert pool.reduce(tk.float_sum_dynamic, x) == static  # the kernel's own default
        assert pool.reduce(tk.float_sum, x, schedule="dynamic", _chunk_rows=97) == \
            pool.reduce(tk.float_sum, x, _chunk_rows=97)
        if workers == 1:
            one_worker = static
        assert static == one_worker  # and for any worker count
        out_s, out_d = pool.zeros((64, 40), np.int64), pool.zeros((64, 40), np.int64)
        pool.map(tk.uneven_rows, out_s, 60)
        pool.map(tk.uneven_rows, out_d, 60, schedule="dynamic", _chunk_rows=3)
        np.testing.assert_array_equal(out_d.numpy(), out_s.numpy())
        for a in (x, out_s, out_d):
            a.free()
        if workers != 2:
            pool.close()


@settings(max_examples=15)
@given(st.integers(0, 300), st.integers(1, 40))
def test_dynamic_reduce_any_size_and_chunking(n, chunk):
    pool = shared_pool(2, START_METHODS[-1])
    x0 = np.random.default_rng(n).standard_normal(n)
    x = pool.array(x0)
    got = pool.reduce(tk.float_sum, x, schedule="dynamic", _chunk_rows=chunk)
    assert got == pool.reduce(tk.float_sum, x, _chunk_rows=chunk)
    assert got == pytest.approx(np.sum(x0), abs=1e-9)
    x.free()


def test_dynamic_failures_progress_and_recovery():
    pool = shared_pool(2, START_METHODS[-1])
    x, out = pool.array(np.arange(1000.0)), pool.zeros(1000)
    seen = []
    pool.map(tk.slow_rows, out, x, 0.0, schedule="dynamic", _chunk_rows=50,
             progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (20, 20)
    np.testing.assert_array_equal(out.numpy(), np.arange(1000.0))
    with pytest.raises(sc.KernelTimeoutError):
        pool.map(tk.slow_rows, out, x, 30.0, schedule="dynamic", timeout=1.0)
    with pytest.raises(sc.KernelError, match="ZeroDivisionError"):
        pool.map(tk.plain_raises, out, x, schedule="dynamic")
    pool.map(tk.slow_rows, out, x, 0.0, schedule="dynamic")  # the pool goes on
    with pytest.raises(sc.InputError, match="schedule='sideways' must be one of"):
        pool.map(tk.slow_rows, out, x, 0.0, schedule="sideways")
    x.free(), out.free()


def test_scans_refuse_a_dynamic_schedule():
    from sharedcompute.kernels.scans import cumsum
    pool = shared_pool(2, START_METHODS[-1])
    x, out = pool.array(np.arange(10.0)), pool.zeros(10)
    with pytest.raises(sc.InputError, match="scan.*static"):
        pool.map(cumsum, out, x, schedule="dynamic")
    np.testing.assert_array_equal(pool.map(cumsum, out, x).numpy(), np.cumsum(np.arange(10.0)))
    x.free(), out.free()
