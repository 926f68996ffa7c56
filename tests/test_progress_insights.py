"""Progress bars count completed partitions; insights account for every worker's time."""
import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute.kernels import stencils
from sharedcompute.partition import chunk_grid, chunk_rows, map_rows
import progkernels as pk
from sharedcompute.kernels.reductions import max_abs_diff
from testkernels import fill_ones, nd_sum


class Counter:
    def __init__(self):
        self.n, self.updates, self.closed = 0, [], False

    def update(self, k):
        assert not self.closed
        self.n += k
        self.updates.append(k)

    def close(self):
        self.closed = True


def _n_chunks(shape, itemsize=8):
    row = int(np.prod(shape[1:])) * itemsize
    return len(chunk_grid(shape[0], chunk_rows(shape[0], row)))


@pytest.mark.parametrize("n_workers", [1, 3])
def test_progress_ends_at_exactly_the_number_of_partitions(n_workers):
    pool = shared_pool(n_workers, START_METHODS[-1])
    a = pool.zeros((300_000, 3))
    parts = _n_chunks(a.shape)
    assert parts > n_workers
    # a static map: one partition per worker (partition.map_rows); a reduce: every chunk
    for call, total in ((lambda bar: pool.map(fill_ones, a, progress=bar), n_workers),
                        (lambda bar: pool.reduce(nd_sum, a, progress=bar), parts)):
        bar = Counter()
        call(bar)
        assert bar.n == total and bar.closed and all(k > 0 for k in bar.updates)
    u, w = pool.zeros((200, 50)), pool.zeros((200, 50))
    bar = Counter()
    pool.iterate(stencils.jacobi2d, w, u, steps=7, progress=bar)
    assert bar.n == 7 * _n_chunks((200, 50)) and bar.closed
    for x in (a, u, w):
        x.free()


def test_progress_true_without_tqdm_prints_a_plain_line(capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    pool = sc.Pool(2, backend="inline")
    try:
        a = pool.zeros(100_000)
        pool.map(fill_ones, a, progress=True)
        err = capsys.readouterr().err
        assert "fill_ones: 2/2 partitions (100%)" in err  # a static map: one per worker
    finally:
        pool.close()


def test_insights_account_compile_compute_and_idle():
    pool = sc.Pool(2, start_method=START_METHODS[-1])
    try:
        a = pool.zeros(2_000_000)
        pool.map(fill_ones, a)
        pool.reduce(nd_sum, a)
        rows = pool.insights()
        assert [r["pid"] for r in rows] == pool.pids
        for r in rows:
            assert r["tasks"] == 2
            assert r["compute_s"] > 0 and r["compile_s"] >= 0 and r["idle_s"] > 0
        assert rows.imbalance >= 1.0
        text = str(rows)
        assert "compile s" in text and "imbalance" in text and str(pool.pids[0]) in text
        a.free()
    finally:
        pool.close()


def test_insights_count_rung_calls_kept_in_the_lines_and_after_close():
    """Repeated and bound calls start through the doorbell; their seconds are the workers'
    running totals in their lines, which insights() adds and close() keeps."""
    pool = sc.Pool(2, start_method=START_METHODS[-1])
    try:
        a = pool.zeros(200_000)
        pool.map(fill_ones, a)  # planned and sent through the pipes
        pool.map(fill_ones, a)  # rung
        call = pool.bind(fill_ones, a)
        for _ in range(3):
            call()
        rows = pool.insights()
        assert [r["tasks"] for r in rows] == [5, 5]
        assert all(r["compute_s"] > 0 and r["idle_s"] > 0 for r in rows)
        a.free()
    finally:
        pool.close()
    assert [r["tasks"] for r in pool.insights()] == [5, 5]


def test_progress_advances_during_a_call_and_a_callback_sees_it():
    """Workers report chunks after each kernel call (rate-limited), so a bar moves during
    the call where there are many calls: a reduction's 40 leaves (one call per chunk, with
    or without a bar) give many intermediate states. A static map is one call per worker's
    share, and its bar advances by a share when that call returns: 0 -> half -> all."""
    pool = shared_pool(2, START_METHODS[-1])
    x, out = pool.array(np.full(400, 0.5)), pool.zeros(400)
    seen = []
    pool.reduce(pk.counted_sum, x, "", 0.03, chunk_rows=10,
                progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (40, 40)
    assert all(b[0] > a[0] for a, b in zip(seen, seen[1:]))  # strictly advancing
    assert len([d for d, _ in seen if 0 < d < 40]) >= 3, seen  # intermediate states
    seen.clear()
    pool.map(pk.counted_affine, out, x, "", chunk_rows=10,
             progress=lambda done, total: seen.append((done, total)))
    assert seen == [(20, 40), (40, 40)]
    x.free(), out.free()


def test_progress_leaves_the_bar_unless_transient_and_bad_values_are_refused():
    from sharedcompute.progress import Progress
    assert Progress(True, 10, "k")._bar.leave is True
    assert Progress("transient", 10, "k")._bar.leave is False
    pool = shared_pool(2, START_METHODS[-1])
    a = pool.zeros(1000)
    pids = pool.pids
    with pytest.raises(sc.InputError, match="progress='yes'"):
        pool.map(fill_ones, a, progress="yes")
    assert pool.pids == pids  # refused before any work: the workers were not touched
    pool.map(fill_ones, a, progress="transient")
    assert np.all(np.asarray(a) == 1.0)
    a.free()


def test_insights_print_as_a_table_in_a_repl():
    with sc.Pool(1, backend="inline") as pool:
        assert repr(pool.insights()).startswith("worker pid")


def test_debug_log_has_one_line_per_call(caplog):
    import logging
    pool = shared_pool(2, START_METHODS[-1])
    a = pool.zeros(5000)
    with caplog.at_level(logging.DEBUG, logger="sharedcompute"):
        pool.map(fill_ones, a)
        pool.map(fill_ones, a)  # the repeated (doorbell) path logs too
        pool.reduce(nd_sum, a)
    lines = [r.getMessage() for r in caplog.records if r.name == "sharedcompute"]
    assert len([ln for ln in lines if ln.startswith("map fill_ones: 5000 rows on 2 ")]) == 2
    assert any(ln.startswith("reduce nd_sum: 5000 rows on 2 ") for ln in lines), lines
    a.free()


# -- progress costs nothing: the same kernel calls, the same bits ----------------------------
def _with_and_without_progress(run, log):
    """run(progress) twice, without a bar then with one: (calls, result, bar) of each."""
    out = []
    for progress in (False, Counter()):
        result = run(progress)
        out.append((pk.calls(log), np.array(np.asarray(result)), progress))
    return out


def _calls_cases(pool, log, sweepers):
    """(name, run(progress), chunks the bar counts, expected calls or None) of each op;
    ``sweepers``: the tasks of an iterate (inline: one, for every chunk)."""
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((600, 50))
    x, out, w = pool.array(x0), pool.zeros(x0.shape), pool.zeros(x0.shape)
    u = pool.array(x0)
    n = _n_chunks(x0.shape)
    workers = pool.n_workers

    def swept(bar, **options):
        """An iterate from the same start: both swapped arrays as it leaves them."""
        np.asarray(u)[:], np.asarray(w)[:] = x0, 0.0
        pool.iterate(pk.counted_heat, w, u, log, steps=6, progress=bar, **options)
        return np.array([np.asarray(u), np.asarray(w)])

    cases = [
        ("map", lambda bar: pool.map(pk.counted_affine, out, x, log, progress=bar), workers,
         workers),  # one call per worker's share (a static map's chunk: partition.map_rows)
        ("map, 7-row chunks", lambda bar: pool.map(pk.counted_affine, out, x, log,
                                                   chunk_rows=7, progress=bar),
         -(-600 // 7), workers),
        ("halo map", lambda bar: pool.map(pk.counted_smooth, out, x, log, progress=bar),
         workers, 2 * workers),  # a share, and the padded edge rows at the array's edge
        ("dynamic halo map", lambda bar: pool.map(pk.counted_smooth, out, x, log,
                                                  schedule="dynamic", progress=bar),
         len(chunk_grid(600, map_rows(600, chunk_rows(600, 400), 2, True))), None),  # finer
        ("reduce", lambda bar: pool.reduce(pk.counted_sum, x, log, 0.0, progress=bar), n, n),
        ("partial map", lambda bar: pool.map(pk.counted_affine_sum, out, x, log, partial=True,
                                             progress=bar)[1], n, n),  # a call per chunk
        ("iterate", lambda bar: swept(bar), 6 * n, None),
        ("blocked iterate", lambda bar: swept(bar, block_sweeps=3), 6 * n, None),
        ("checked iterate", lambda bar: swept(bar, residual=max_abs_diff, tol=1e-300,
                                              check_every=2, block_sweeps=1),
         6 * n, 6 * sweepers),  # plain sweeps: one call per share
    ]
    return cases, (x, out, w, u)


@pytest.mark.parametrize("backend", ["inline", "processes"])
def test_progress_calls_each_kernel_as_often_as_without_and_gives_the_same_bits(backend,
                                                                              tmp_path):
    """Issue 27: progress=True ran one kernel call per chunk, so a halo kernel recomputed its
    halo for every chunk (56 s against 5 s). Each op, with a bar and without: the same
    kernel calls (the rows of each, logged by the kernel itself from the workers) and the
    same result, bit for bit; the bar still ends at every chunk."""
    pool = (sc.Pool(2, backend="inline") if backend == "inline"
            else shared_pool(2, START_METHODS[-1]))
    log = str(tmp_path / "calls.log")
    cases, arrays = _calls_cases(pool, log, 1 if backend == "inline" else 2)
    try:
        for name, run, total, expected in cases:
            (plain, want, _), (barred, got, bar) = _with_and_without_progress(run, log)
            if name.startswith("dynamic"):  # its pieces follow the timing (stealing): the
                assert sum(barred) == sum(plain) == arrays[0].shape[0], name  # rows, once each
            else:
                assert barred == plain, (name, plain, barred)
            if expected is not None:
                assert len(plain) == expected, (name, plain)
            assert got.tobytes() == want.tobytes(), name
            assert bar.n == total and bar.closed, (name, bar.n, total)
    finally:
        for a in arrays:
            a.free()
        if backend == "inline":
            pool.close()
