"""schedule="dynamic": each worker claims pieces of its own static share, then steals from
the back of the others' (bounds in shared memory under their lock); the result is bitwise the static one for any worker count,
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
import cachekernels as ck
import edgekernels as ek
import faultkernels as fk
from testkernels import try_write_input
from conftest import wait_no_segments
from test_edges import staggered_np  # edgekernels.staggered in NumPy
from sharedcompute.partition import (DYNAMIC_CHUNKS, OWN_SHARE, chunk_grid, chunk_rows,
                                     claim_piece, map_rows, share_bounds, split_even)
from sharedcompute import local
from sharedcompute.plan import make_plan
from sharedcompute.shared import list_segments


def claim_all(n_chunks: int, workers: int, order: list[int]) -> list[tuple[int, tuple]]:
    """claim_piece run to the end, the workers claiming in ``order`` (repeated), each one
    dropping out once it gets None: [(worker, piece)]."""
    bounds, out, live, k = share_bounds(n_chunks, workers), [], set(range(workers)), 0
    while live:
        w = order[k % len(order)]
        k += 1
        if w not in live:
            continue
        piece = claim_piece(bounds, w)
        if piece is None:
            live.discard(w)
        else:
            out.append((w, piece))
    return out


@given(st.integers(0, 3000), st.integers(1, 16), st.data())
def test_claimed_pieces_cover_every_chunk_once_in_any_order(n_chunks, workers, data):
    """Any interleaving of claims (a worker that is descheduled claims less) gives pieces
    that tile [0, n_chunks) exactly: no chunk lost, none run twice."""
    order = data.draw(st.lists(st.integers(0, workers - 1), min_size=1, max_size=40))
    order += list(range(workers))  # every worker claims until it gets None
    pieces = sorted(p for _, p in claim_all(n_chunks, workers, order))
    assert all(a < b for a, b in pieces)
    assert [a for a, _ in pieces] == ([0] if pieces else []) + [b for _, b in pieces[:-1]]
    assert (pieces[-1][1] if pieces else 0) == n_chunks


@given(st.integers(1, 200), st.integers(1, 16))
def test_workers_of_equal_speed_each_run_their_own_share_and_steal_nothing(per_worker, workers):
    """Claiming in turn (equal rows, equal cores, equal shares), every worker runs exactly
    its static share, front to back, in shrinking pieces: a dynamic call of uniform rows
    runs as the static split does, no piece of another's share. Its first piece is
    1/OWN_SHARE of its share. (Shares one chunk apart: the next test.)"""
    n_chunks = per_worker * workers
    got = claim_all(n_chunks, workers, list(range(workers)))
    for w, (a, b) in enumerate(split_even(n_chunks, workers)):
        mine = [p for v, p in got if v == w]
        assert [p[0] for p in mine] == [a] + [p[1] for p in mine[:-1]]
        assert (mine[-1][1] if mine else a) == b
        if mine:
            assert mine[0][1] - mine[0][0] == max(1, (b - a) // OWN_SHARE)


@given(st.integers(0, 3000), st.integers(1, 16))
def test_equal_speeds_finish_no_later_than_the_largest_static_share(n_chunks, workers):
    """Workers of equal speed, each piece taking as long as its chunks: the next claim is
    made by the worker that is free first. Every chunk runs once and the last worker is
    done by the time the largest static share would take: a steal moves work only to a
    worker that would otherwise wait (the shares differ by one chunk at most)."""
    bounds, clock, done, live = share_bounds(n_chunks, workers), [0] * workers, [], set(
        range(workers))
    while live:
        w = min(live, key=lambda v: (clock[v], v))
        piece = claim_piece(bounds, w)
        if piece is None:
            live.discard(w)
            continue
        done.append(piece)
        clock[w] += piece[1] - piece[0]
    assert sorted(c for a, b in done for c in range(a, b)) == list(range(n_chunks))
    assert max(clock) <= max(b - a for a, b in split_even(n_chunks, workers))


def test_an_idle_worker_steals_the_back_half_of_the_largest_share_left():
    bounds = share_bounds(100, 2)  # shares [0, 50) and [50, 100)
    assert claim_piece(bounds, 1) == (50, 62)  # its own front, 1/4 of 50
    bounds[0] = bounds[1]  # worker 0 has run its whole share
    assert claim_piece(bounds, 0) == (81, 100)  # half of the 38 left, from the back
    assert claim_piece(bounds, 1) == (62, 66)  # the owner goes on from its front
    bounds[2:] = [0, 0]
    assert claim_piece(bounds, 0) is None and claim_piece(bounds, 1) is None


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
            starts = sorted(set(runs[:, 1].tolist()))  # each piece's first row
            assert set(starts) <= {s for s, _ in grid}  # pieces of whole chunks
            if workers == 1:  # "dynamic" with 1 worker is the static call: one piece
                assert starts == [0]
            else:
                assert starts[0] == 0, (workers, rows, chunk)
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
    # its piece: 200 chunks of 10 rows, shares of 66-67; an own piece is at most 1/4 of a
    # share, a stolen one half of what is left of one
    assert s <= 1500 < e and e - s <= 10 * (67 // 2 + 1)
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
    """A dynamic map with no chunk_rows= is cut into at least DYNAMIC_CHUNKS (64) chunks
    per worker (partition.map_rows): the default grid cuts 2,000 rows of 16 bytes into 8
    chunks, too coarse to balance sorted rows of growing cost. A reduction keeps the
    default grid (its combine tree follows the grid)."""
    pool = shared_pool(2, "fork" if "fork" in START_METHODS else START_METHODS[0])
    rows = 2000
    default = chunk_grid(rows, chunk_rows(rows, 16))  # a static map's
    finer = chunk_grid(rows, map_rows(rows, 256, 2, True))  # chunks of 10: shares of 1,000
    assert len(default) == 8 and len(finer) >= DYNAMIC_CHUNKS * 2
    out = pool.zeros((rows, 2), np.int64)
    pool.map(tk.count_runs, out, schedule="dynamic")
    runs = np.array(out.numpy())
    np.testing.assert_array_equal(runs[:, 0], 1)
    starts = sorted(set(runs[:, 1].tolist()))
    assert set(starts) <= {s for s, _ in finer} and len(starts) > 2  # pieces of its chunks
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
    even = chunk_grid(rows, -(-rows // workers))  # one chunk per worker
    assert starts == [s for s, _ in even], (starts, even)
    assert max(b - a for a, b in even) - min(b - a for a, b in even) <= 1
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


@pytest.mark.parametrize("method", START_METHODS)
def test_a_repeated_dynamic_call_is_rung_and_claims_every_chunk_once(method, monkeypatch):
    """A repeated schedule="dynamic" call is kept by the workers and started through the
    doorbell (not planned again), each ring setting the shares afresh: every row runs exactly
    once per call (count_runs counts them), new scalar values reach every piece, and maps,
    reductions and partial=True maps give the static schedule's bits on every repeat."""
    pool = shared_pool(2, method)
    runs = pool.zeros((1000, 2), np.int64)
    pool.map(tk.count_runs, runs, schedule="dynamic", chunk_rows=7)  # planned, kept
    planned = []
    monkeypatch.setattr(local, "make_plan", lambda *a, **k: planned.append(1) or
                        make_plan(*a, **k))
    for k in range(2, 12):
        pool.map(tk.count_runs, runs, schedule="dynamic", chunk_rows=7)
        np.testing.assert_array_equal(runs.numpy()[:, 0], k)  # no row lost, none twice
    assert not planned  # rung
    x0 = np.random.default_rng(3).standard_normal(20_000) * 1e6
    x, y_s, y_d = pool.array(x0), pool.zeros(20_000), pool.zeros(20_000)
    for a in (2.0, 2.0, -0.0, 3.5, 3.5, float("nan")):  # new values: patched into the loop
        pool.map(tk.add_scaled, y_s, x, a)
        pool.map(tk.add_scaled, y_d, x, a, schedule="dynamic")
        np.testing.assert_array_equal(y_d.numpy(), y_s.numpy())
        assert pool.reduce(tk.float_sum, x, schedule="dynamic", chunk_rows=97) == \
            pool.reduce(tk.float_sum, x, chunk_rows=97)
    bound = pool.bind(tk.count_runs, runs, schedule="dynamic", chunk_rows=7)
    before, n_planned = runs.numpy()[:, 0].copy(), len(planned)  # bind plans once: a check
    for _ in range(3):
        bound()
    np.testing.assert_array_equal(runs.numpy()[:, 0], before + 3)
    assert len(planned) == n_planned  # the bound call rings the entry the map kept
    for a in (runs, x, y_s, y_d):
        a.free()


@pytest.mark.parametrize("method", START_METHODS)
def test_a_dynamic_piece_gets_what_a_static_call_gives_its_kernel(method):
    """A dynamic map slices its pieces' arguments itself (_evaluate.piece_runner, not the
    general map_pieces): arguments with rows of their own (halo=), position="edges",
    position=True and plain values reach every piece, first call and rung repeats alike,
    as NumPy says they should; a kernel's mistakes are explained in the same words."""
    pool = shared_pool(2, method)
    rng = np.random.default_rng(7)
    for n in (0, 1, 5, 301):
        inp, flx = rng.random((n + 4, 3)), rng.random((n + 1, 3))
        inp[0], inp[-1], flx[-1] = np.nan, np.inf, -0.0  # the ends are read too
        out, inp_s, flx_s = pool.zeros((n, 3)), pool.array(inp), pool.array(flx)
        cut = {k: min(k, n) or None for k in (2, 3, 4)}  # chunk_rows above n is refused
        for c in (0.3, 0.3, -2.5):  # planned, rung, rung with a new value
            pool.map(ek.staggered, out, inp_s, flx_s, c, schedule="dynamic", chunk_rows=cut[2])
            np.testing.assert_array_equal(out.numpy(), staggered_np(inp, flx, c))
        u = rng.random(n)
        u_s, marked = pool.array(u), pool.zeros(n)
        for _ in range(2):
            pool.map(ek.mark_edges_flat, marked, u_s, schedule="dynamic", chunk_rows=cut[3])
            want = u.copy()
            want[:1] += 1.0  # only the call's first row and last row: not each piece's
            want[-1:] += 2.0
            np.testing.assert_array_equal(marked.numpy(), want)
        x = rng.random(n + 3)
        got, x_s = pool.zeros((n, 2)), pool.array(x)
        pool.map(tk.halo_rows, got, x_s, schedule="dynamic", chunk_rows=cut[2])
        np.testing.assert_array_equal(got.numpy(), np.stack([np.full(n, 3.0), x[1:n + 1]], 1))
        got.free(), x_s.free()
        runs = pool.zeros((n, 2), np.int64)
        pool.map(tk.count_runs, runs, schedule="dynamic", chunk_rows=cut[4])
        got = np.array(runs.numpy())
        np.testing.assert_array_equal(got[:, 0], 1)
        assert np.all(got[:, 1] <= np.arange(n)) and np.all(got[:, 1] % (cut[4] or 1) == 0)
        for a in (out, inp_s, flx_s, u_s, marked, runs):
            a.free()
    out, x = pool.zeros(100), pool.array(np.ones(100))
    with pytest.raises(sc.KernelError, match=r"(?s)try_write_input writes one of \['x'\], "
                       r"which are read-only because writes=\('out',\)"):
        pool.map(try_write_input, out, x, schedule="dynamic")
    with pytest.raises(sc.KernelError, match="returned a value"):
        pool.map(ck.returns_when_negative, out, x, -1.0, schedule="dynamic")
    assert np.asarray(x).min() == 1.0
    out.free(), x.free()


def test_a_rung_dynamic_call_that_fails_ends_every_claim_and_the_next_runs_whole():
    """An error in one piece of a rung dynamic call ends the claims for all workers and
    raises that error; the next ring sets the shares again, so it runs every row once."""
    pool = shared_pool(2, START_METHODS[-1])
    x0 = np.arange(2000.0)
    x, out = pool.array(x0), pool.zeros(2000)
    for _ in range(2):  # planned, then rung
        pool.map(fk.fault_map, out, x, fk.NONE, 0, 0.0, schedule="dynamic", chunk_rows=10)
    with pytest.raises(sc.KernelError, match="ValueError"):
        pool.map(fk.fault_map, out, x, fk.RAISE, 1500, 0.0, schedule="dynamic", chunk_rows=10)
    out.numpy()[:] = 0.0
    pool.map(fk.fault_map, out, x, fk.NONE, 0, 0.0, schedule="dynamic", chunk_rows=10)
    np.testing.assert_array_equal(out.numpy(), 2 * x0 + 1)
    x.free(), out.free()


CELL = """
@sc.kernel(writes=("out",))
def shifted(out, x):
    for i in range(out.shape[0]):
        out[i] = x[i] * C + SHIFT
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_a_rung_dynamic_call_follows_a_notebook_cell_edited_or_run_again(method):
    """A kernel defined in a notebook cell (sent by value): a repeated dynamic call gives
    the new result after a global it reads is rebound and after the cell is run again with
    other code, as NumPy computes it; never the kept call's old code."""
    import textwrap
    pool = shared_pool(2, method)
    ns = {"__name__": "__main__", "sc": sc, "C": 2.0, "SHIFT": 1.0}
    exec(compile(textwrap.dedent(CELL), "<cell>", "exec"), ns)
    x0 = np.linspace(-3.0, 3.0, 5000)
    x, out = pool.array(x0), pool.zeros(5000)
    for c, shift, src in ((2.0, 1.0, CELL), (2.0, 1.0, CELL), (-0.5, 1.0, CELL),
                          (-0.5, 1.0, CELL.replace("+ SHIFT", "- SHIFT"))):
        ns["C"] = c
        if src is not CELL:  # the cell run again, edited: a new kernel object
            exec(compile(textwrap.dedent(src), "<cell>", "exec"), ns)
        pool.map(ns["shifted"], out, x, schedule="dynamic")
        sign = 1.0 if src is CELL else -1.0
        np.testing.assert_array_equal(out.numpy(), x0 * c + sign * shift)
    x.free(), out.free()
