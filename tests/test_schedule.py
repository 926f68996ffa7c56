"""schedule="dynamic": idle workers claim the next guided piece themselves (a counter in
shared memory under its lock); the result is bitwise the static one for any worker count,
every piece runs exactly once, and failures report as they do for static calls."""
from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sharedcompute as sc
import taskkernels as tk
from conftest import START_METHODS, shared_pool
import faultkernels as fk
from conftest import wait_no_segments
from sharedcompute.partition import chunk_grid, chunk_rows, guided_pieces, split_even
from sharedcompute.shared import list_segments


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
        assert pool.reduce(tk.float_sum, x, schedule="dynamic", chunk_rows=97) == \
            pool.reduce(tk.float_sum, x, chunk_rows=97)
        if workers == 1:
            one_worker = static
        assert static == one_worker  # and for any worker count
        out_s, out_d = pool.zeros((64, 40), np.int64), pool.zeros((64, 40), np.int64)
        pool.map(tk.uneven_rows, out_s, 60)
        pool.map(tk.uneven_rows, out_d, 60, schedule="dynamic", chunk_rows=3)
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
    got = pool.reduce(tk.float_sum, x, schedule="dynamic", chunk_rows=chunk)
    assert got == pool.reduce(tk.float_sum, x, chunk_rows=chunk)
    assert got == pytest.approx(np.sum(x0), abs=1e-9)
    x.free()


def test_dynamic_failures_progress_and_recovery():
    pool = shared_pool(2, START_METHODS[-1])
    x, out = pool.array(np.arange(1000.0)), pool.zeros(1000)
    seen = []
    pool.map(tk.slow_rows, out, x, 0.0, schedule="dynamic", chunk_rows=50,
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


@pytest.mark.parametrize("method", START_METHODS)
def test_every_piece_runs_exactly_once_with_more_or_fewer_pieces_than_workers(method):
    """Pieces are claimed by the workers (a shared counter under its lock): each piece is
    run by exactly one kernel call, for 1 to 3 workers, with more pieces than workers and
    fewer (one chunk, three workers)."""
    for workers in (1, 2, 3):
        pool = shared_pool(workers, method) if workers == 2 else sc.Pool(workers,
                                                                          start_method=method)
        for rows, chunk in ((1000, 7), (1000, 100), (5, 5), (2, 1)):
            out = pool.zeros((rows, 2), np.int64)
            pool.map(tk.count_runs, out, schedule="dynamic", chunk_rows=chunk)
            runs = np.array(out.numpy())  # a copy: out is freed below
            np.testing.assert_array_equal(runs[:, 0], 1)  # every row once: no piece twice
            grid = chunk_grid(rows, chunk)
            # with 1 worker "dynamic" is the static call (one piece): else the guided pieces
            want = [(0, len(grid))] if workers == 1 else guided_pieces(len(grid), workers)
            starts = sorted(set(runs[:, 1].tolist()))
            assert starts == [grid[a][0] for a, _ in want], (workers, rows, chunk)
            out.free()
        if workers != 2:
            pool.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_dynamic_kernel_error_in_one_piece_and_a_killed_worker(method):
    """A kernel error in one piece raises that error (its rows named); a worker killed
    while it holds a piece fails the call with WorkerCrashedError (its piece is not taken
    as done), promptly; the pool goes on with new workers and /dev/shm is clean."""
    before = set(list_segments())
    pool = sc.Pool(3, start_method=method)
    x0 = np.arange(2000.0)
    x, out = pool.array(x0), pool.zeros(2000)
    with pytest.raises(sc.KernelError, match=r"ValueError: .*rows \[\d+, \d+\)") as info:
        pool.map(fk.fault_map, out, x, fk.RAISE, 1500, 0.0, schedule="dynamic", chunk_rows=10)
    s, e = map(int, info.value.args[0].split("rows [")[1].split(")")[0].split(", "))
    assert s <= 1500 < e and e - s <= 80  # its piece (200 chunks: at most 200 // 24 of 10)
    pool.map(fk.fault_map, out, x, fk.NONE, 0, 0.0, schedule="dynamic", chunk_rows=10)
    np.testing.assert_array_equal(out.numpy(), 2 * x0 + 1)
    pids = list(pool.pids)
    t0 = time.monotonic()
    with pytest.raises(sc.WorkerCrashedError, match="SIGKILL.*fault_map"):
        pool.map(fk.fault_map, out, x, fk.SIGKILL, 1990, 0.0, schedule="dynamic",
                 chunk_rows=10)
    assert time.monotonic() - t0 < 10
    assert pool.reduce(tk.float_sum, x, schedule="dynamic", chunk_rows=10) == \
        pool.reduce(tk.float_sum, x, chunk_rows=10)
    assert set(pool.pids).isdisjoint(pids)  # new workers
    x.free(), out.free()
    pool.close()
    gc.collect()
    assert not wait_no_segments(before, creator=os.getpid())


def test_a_dynamic_map_gets_a_finer_grid_than_the_default_and_the_same_bits():
    """A dynamic map with no chunk_rows= is cut into at least 16 chunks per worker
    (partition.map_rows): the default grid cuts 2,000 rows of 16 bytes into 8 chunks,
    too coarse to balance sorted rows of growing cost. A reduction keeps the default grid
    (its combine tree follows the grid)."""
    pool = shared_pool(2, "fork" if "fork" in START_METHODS else START_METHODS[0])
    rows = 2000
    default = chunk_grid(rows, chunk_rows(rows, 16))  # a static map's
    finer = chunk_grid(rows, rows // (16 * 2))
    assert len(default) == 8 and len(finer) >= 32
    out = pool.zeros((rows, 2), np.int64)
    pool.map(tk.count_runs, out, schedule="dynamic")
    runs = np.array(out.numpy())
    np.testing.assert_array_equal(runs[:, 0], 1)
    starts = sorted(set(runs[:, 1].tolist()))
    assert starts == [finer[a][0] for a, _ in guided_pieces(len(finer), 2)]
    out.free()
    out_s, out_d = pool.zeros((rows, 3), np.int64), pool.zeros((rows, 3), np.int64)
    pool.map(tk.uneven_rows, out_s, 40)
    pool.map(tk.uneven_rows, out_d, 40, schedule="dynamic")
    np.testing.assert_array_equal(out_d.numpy(), out_s.numpy())
    x = pool.array(np.random.default_rng(2).standard_normal(rows) * 1e6)
    assert pool.reduce(tk.float_sum, x, schedule="dynamic") == pool.reduce(tk.float_sum, x)
    for a in (out_s, out_d, x):
        a.free()


@pytest.mark.parametrize("workers", [2, 3])
def test_a_static_map_gives_each_worker_an_even_share_of_rows_not_of_chunks(workers):
    """A static map's shares are even shares of rows (partition.map_rows): on the default
    grid 2,000 float64 rows are 4 chunks of 512, so 2 workers got 1,024 and 976 rows and
    3 workers 1,024, 512 and 464 (a compute-bound kernel then took 1.5x as long). A map's
    bits do not depend on its grid; a reduction keeps the default grid (its combine tree),
    and chunk_rows= is still the user's grid."""
    pool = shared_pool(workers, "fork" if "fork" in START_METHODS else START_METHODS[0])
    rows = 2000
    assert len(chunk_grid(rows, chunk_rows(rows, 8))) == 4  # the default grid
    runs = pool.zeros((rows, 2), np.int64)
    pool.map(tk.count_runs, runs)
    runs_np = np.array(runs.numpy())
    np.testing.assert_array_equal(runs_np[:, 0], 1)  # every row once
    starts = sorted(set(runs_np[:, 1].tolist()))
    even = [s for s, _ in split_even(rows, workers)]
    assert starts == even, (starts, even)
    runs.numpy()[:] = 0
    pool.map(tk.count_runs, runs, chunk_rows=512)  # the user's grid: whole chunks per worker
    assert sorted(set(runs.numpy()[:, 1].tolist())) == [
        chunk_grid(rows, 512)[a][0] for a, _ in split_even(4, workers)]
    out_s, out_c = pool.zeros((rows, 3), np.int64), pool.zeros((rows, 3), np.int64)
    pool.map(tk.uneven_rows, out_s, 40)
    pool.map(tk.uneven_rows, out_c, 40, chunk_rows=7)
    np.testing.assert_array_equal(out_s.numpy(), out_c.numpy())
    x = pool.array(np.random.default_rng(3).standard_normal(rows) * 1e6)
    assert pool.reduce(tk.float_sum, x) == pool.reduce(tk.float_sum, x, chunk_rows=512)
    for a in (runs, out_s, out_c, x):
        a.free()
