"""Repeated identical calls run through the doorbell (shared-memory lines), not the pipes:
results, errors, timeouts and crashes must be exactly what the pipe path gives."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute import doorbell
from sharedcompute.kernels.compute import mandelbrot, monte_carlo_pi
from sharedcompute.kernels.reductions import dot, histogram, mean_var, minmax, total
from sharedcompute.kernels.stencils import jacobi2d, jacobi2d_reference
from test_faults import wait_until
from testkernels import fill_ones, nd_sum, raise_on_negative, scale_add, steered

pytestmark = pytest.mark.skipif(not doorbell.ENABLED, reason="the doorbell needs x86 ordering")
N = 10_007  # not divisible by the worker counts


def _count_pipe_calls(pool):
    """Count calls that went through the pipes (planned and sent) instead of the doorbell."""
    ex, calls = pool._executor, []
    original = ex.run

    def run(*args, **kwargs):
        calls.append(kwargs.get("what"))
        return original(*args, **kwargs)
    ex.run = run
    return calls, lambda: setattr(ex, "run", original)


@pytest.mark.parametrize("method", START_METHODS)
def test_repeated_calls_ring_the_doorbell_and_see_new_data(method):
    pool = shared_pool(3, method)
    x, out, ctl = pool.array(np.arange(N, dtype=float)), pool.zeros(N), pool.zeros(2)
    try:
        pool.map(steered, out, x, ctl)
        pool.reduce(nd_sum, x)
        calls, restore = _count_pipe_calls(pool)
        try:
            for k in range(25):
                x[:] = k
                assert pool.map(steered, out, x, ctl) is out
                np.testing.assert_array_equal(np.asarray(out), np.full(N, 2.0 * k + 1))
                assert float(pool.reduce(nd_sum, x)) == k * N
            time.sleep(0.05)  # every worker has gone to sleep in its pipe: rung awake
            x[:] = -1.0
            pool.map(steered, out, x, ctl)
            assert np.all(np.asarray(out) == -1.0)
            ctl[:] = [3.0, 0.05]  # the kernel outlasts the parent's polling: it sleeps too
            x[:] = 7.0
            pool.map(steered, out, x, ctl)
            assert np.all(np.asarray(out) == 15.0)
        finally:
            restore()
        assert calls == [], f"calls went through the pipes: {calls}"
    finally:
        for a in (x, out, ctl):
            a.free()


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_doorbell_results_are_bitwise_the_pipe_results(n_workers):
    pool = shared_pool(n_workers, "forkserver")
    rng = np.random.default_rng(n_workers)
    x, y = pool.array(rng.standard_normal(N)), pool.array(rng.standard_normal(N))
    image = pool.zeros((67, 45), np.int32)
    try:
        for kernel, args in ((total, (x,)), (dot, (x, y)), (minmax, (x,)), (mean_var, (x,))):
            first = pool.reduce(kernel, *args)       # planned, through the pipes
            again = pool.reduce(kernel, *args)       # rung: prepared calls in the workers
            assert np.array_equal(np.asarray(first), np.asarray(again)), kernel.name
            assert np.allclose(np.asarray(again), np.asarray(kernel.reference(
                *[np.asarray(a) for a in args])), rtol=1e-12, atol=1e-9), kernel.name
        pi = [pool.reduce(monte_carlo_pi, 500, 7, rows=37) for _ in range(2)]  # position=
        assert pi[0] == pi[1] == monte_carlo_pi.reference(500, 7, 37)
        pool.map(mandelbrot, image, -2.0, 1.0, -1.5, 1.5, 50)
        want = np.array(image)
        image[:] = -1
        pool.map(mandelbrot, image, -2.0, 1.0, -1.5, 1.5, 50)
        np.testing.assert_array_equal(np.asarray(image), want)
    finally:
        for a in (x, y, image):
            a.free()


def test_big_reduce_results_come_back_through_the_pipe_on_the_doorbell_path():
    pool = shared_pool(2, "forkserver")
    values = np.random.default_rng(1).random(N)
    x = pool.array(values)
    bins = 3 * doorbell.RESULT_BYTES // 8  # partials bigger than a line's result area
    try:
        want = np.histogram(values, bins=bins, range=(0.0, 1.0))[0]
        for _ in range(3):
            np.testing.assert_array_equal(pool.reduce(histogram, x, bins, 0.0, 1.0), want)
    finally:
        x.free()


def test_freeing_a_block_drops_only_the_cached_calls_that_hold_it():
    """Invalidation per block (issue 23): freeing an unrelated array (or iterate's scratch)
    keeps the cached call; freeing one of its arrays drops it, and a new array of the same
    size in its place is planned afresh (fails with a global flush: calls == ["steered"] on
    the first pair; with a key by size only: 3.0 after the freed array's successor)."""
    pool = shared_pool(2, "forkserver")
    x, out, ctl = pool.array(np.ones(N)), pool.zeros(N), pool.zeros(2)
    try:
        pool.map(steered, out, x, ctl)
        pool.zeros(10).free()  # the workers unmap it; the cached call stays
        calls, restore = _count_pipe_calls(pool)
        try:
            pool.map(steered, out, x, ctl)
            pool.map(steered, out, x, ctl)
            assert calls == []  # both rung
            cache = pool._backend.cache
            name = x.name
            assert any(name in e.names for e in cache.entries.values())
            x.free()
            assert not any(name in e.names for e in cache.entries.values())  # dropped
            assert name not in cache.by_block
            x = pool.array(np.full(N, 2.0))  # same size, new block
            pool.map(steered, out, x, ctl)
            pool.map(steered, out, x, ctl)
        finally:
            restore()
        assert calls == ["steered"]  # planned again once, then rung
        assert np.all(np.asarray(out) == 5.0)
    finally:
        for a in (x, out, ctl):
            a.free()


def test_an_iterate_frees_no_block_so_cached_calls_stay_rung():
    """iterate's residual slots live in a block the backend keeps (reused, grown when too
    small, freed at close): an iterate with a residual, fused or not, releases nothing, so
    no block name waits to be sent to the workers ("forget": every pool's next call took
    the checking path for it) and a cached call is still rung after it. Fails with slots
    made and freed per call: cache.forget holds their name after each iterate."""
    from sharedcompute.kernels.reductions import max_abs_diff
    from sharedcompute.kernels.stencils import jacobi2d, jacobi2d_residual
    pool = shared_pool(2, "forkserver")
    x, out, ctl = pool.array(np.ones(N)), pool.zeros(N), pool.zeros(2)
    g = np.zeros((40, 40))
    g[0] = 1.0
    u, o = pool.array(g), pool.zeros((40, 40))
    try:
        pool.map(steered, out, x, ctl)
        pool.iterate(jacobi2d_residual, o, u, steps=4, tol=0.0, check_every=1)
        kept = pool._backend.scratch.name
        calls, restore = _count_pipe_calls(pool)
        try:
            pool.map(steered, out, x, ctl)
            pool.iterate(jacobi2d, o, u, steps=4, residual=max_abs_diff, tol=0.0, check_every=2)
            pool.iterate(jacobi2d_residual, o, u, steps=4, tol=0.0, check_every=1)
            assert not pool._backend.cache.forget  # nothing released
            pool.map(steered, out, x, ctl)
        finally:
            restore()
        # both maps rung, and the repeated fused iterate too (kept in the one call cache);
        # the planned iterate (another residual) keeps the slots block: nothing released
        assert calls == ["jacobi2d"]
        assert kept is not None and pool._backend.scratch.name == kept
        assert np.all(np.asarray(out) == 3.0)
    finally:
        for a in (x, out, ctl, u, o):
            a.free()


def test_cached_calls_survive_many_replaced_and_failed_entries():
    """The parent decides which cached tasks the workers drop: reused object ids (a fresh
    view each time), failed first calls and evictions never desynchronise the two sides."""
    pool = shared_pool(2, "forkserver")
    x, y = pool.array(np.ones(N)), pool.zeros(N)
    neg = pool.array(-np.ones(N))
    try:
        assert float(pool.reduce(nd_sum, x)) == N
        for k in range(80):
            v = y[1:]  # a new SharedArray each time, often at a reused id
            pool.map(fill_ones, v)
            del v
            if k % 10 == 0:
                with pytest.raises(sc.KernelError, match="negative value"):
                    pool.reduce(raise_on_negative, neg)
        assert float(pool.reduce(nd_sum, x)) == N
        assert float(pool.reduce(nd_sum, x)) == N
        assert np.all(np.asarray(y)[1:] == 1.0)
    finally:
        for a in (x, y, neg):
            a.free()


def test_scalars_are_cached_by_their_bits():
    """0.0 == -0.0 in Python; a cached call must still see which one was passed."""
    pool = shared_pool(2, "forkserver")
    x, y, out = pool.array(-np.ones(N)), pool.array(np.full(N, -0.0)), pool.zeros(N)
    try:
        for s in (0.0, -0.0, 0.0, np.float64(-0.0), np.float64(0.0)):
            pool.map(scale_add, out, x, y, s)
            want = np.asarray(x) * s + np.asarray(y)
            assert np.array_equal(np.signbit(np.asarray(out)), np.signbit(want)), s
    finally:
        for a in (x, y, out):
            a.free()


def test_nan_inf_and_large_scalars_through_the_cache_match_numpy():
    """A nonzero, non-NaN float is its own cache key (_cache.scalar_bits), NaN and zeros go by
    their bits; every value sent to a cached call, repeated or changed, gives what NumPy
    gives."""
    pool = shared_pool(2, "forkserver")
    x, y, out = pool.array(np.linspace(-2, 2, N)), pool.array(np.ones(N)), pool.zeros(N)
    try:
        for s in (np.nan, np.nan, 1.0, np.inf, np.inf, -np.inf, 1e308, 1.0, np.nan, 2**53 + 1,
                  -0.0, 5e-324):
            pool.map(scale_add, out, x, y, s)
            with np.errstate(invalid="ignore", over="ignore"):
                want = np.asarray(x) * s + np.asarray(y)
            np.testing.assert_array_equal(np.asarray(out), want, err_msg=repr(s))
            assert np.array_equal(np.signbit(np.asarray(out)), np.signbit(want)), s
    finally:
        for a in (x, y, out):
            a.free()


@pytest.fixture
def own_pool():
    pool = sc.Pool(2)
    yield pool
    pool.close()


def test_kernel_error_on_the_doorbell_path_keeps_the_pool(own_pool):
    pool = own_pool
    x, out, ctl = pool.array(np.ones(N)), pool.zeros(N), pool.zeros(2)
    pool.map(steered, out, x, ctl)
    pids = pool.pids
    ctl[0] = 1.0
    with pytest.raises(sc.KernelError, match="steered to fail") as info:
        pool.map(steered, out, x, ctl)
    assert info.value.remote_type == "ValueError" and "rows [" in str(info.value)
    assert pool.pids == pids and pool.restarts == 0
    ctl[0] = 0.0
    x[:] = 5.0
    pool.map(steered, out, x, ctl)
    assert np.all(np.asarray(out) == 11.0)


def test_timeout_on_the_doorbell_path_replaces_the_workers(own_pool):
    pool = own_pool
    x, out, ctl = pool.array(np.ones(N)), pool.zeros(N), pool.zeros(2)
    pool.map(steered, out, x, ctl, timeout=30)
    ctl[0] = 2.0  # hangs in nopython code
    t0 = time.monotonic()
    with pytest.raises(sc.KernelTimeoutError, match="timeout=0.5"):
        pool.map(steered, out, x, ctl, timeout=0.5)
    assert time.monotonic() - t0 < 10
    ctl[0] = 0.0
    pool.map(steered, out, x, ctl)
    assert pool.restarts == 1 and np.all(np.asarray(out) == 3.0)


def _asleep(lines, n):
    return [lines.word(i, doorbell.W_ASLEEP) for i in range(n)]


def test_workers_woken_ahead_of_a_call_wait_for_its_ring_then_sleep_again(monkeypatch):
    """A repeat wakes sleeping workers before its checks (doorbell.wake_sleepers); a woken
    worker polls WOKEN_SPIN_S for the ring, not SPIN_S, and sleeps again when none comes.
    WOKEN_SPIN_S is raised to 0.5 s here (fork: the workers inherit it), so the window is
    seen on a busy machine; with the budget ignored (SPIN_S only) the workers are asleep
    again within a millisecond and the second assertion fails."""
    monkeypatch.setattr(doorbell, "WOKEN_SPIN_S", 0.5)
    with sc.Pool(2, start_method="fork") as pool:
        x, out, ctl = pool.array(np.arange(N, dtype=float)), pool.zeros(N), pool.zeros(2)
        pool.map(steered, out, x, ctl)
        lines = pool._executor.lines
        assert wait_until(lambda: _asleep(lines, 2) == [1, 1])  # both sleep in their pipes
        doorbell.wake_sleepers(pool._executor)
        assert wait_until(lambda: _asleep(lines, 2) == [0, 0])
        time.sleep(0.2)  # past SPIN_S, within WOKEN_SPIN_S: still polling for a ring
        assert _asleep(lines, 2) == [0, 0]
        assert wait_until(lambda: _asleep(lines, 2) == [1, 1])  # no ring came: asleep again
        u = pool.array(np.random.default_rng(1).random((41, 9)))
        start, w = np.array(u), pool.zeros((41, 9))
        sent = np.array(pool.iterate(jacobi2d, w, u, steps=3))  # planned and sent
        a, b = start.copy(), np.zeros((41, 9))
        for _ in range(3):  # NumPy's sweeps: 'none' keeps u's edge rows in out
            jacobi2d_reference(b[1:-1], a)
            b[0], b[-1] = a[0], a[-1]
            a, b = b, a
        assert np.array_equal(sent, a)
        woke, wake = [], doorbell.wake_sleepers
        monkeypatch.setattr(doorbell, "wake_sleepers",
                            lambda ex: (woke.append(_asleep(ex.lines, 2)), wake(ex)))
        calls, restore = _count_pipe_calls(pool)
        try:
            for k in range(3):  # asleep, each repeat wakes them first and is rung
                assert wait_until(lambda: _asleep(lines, 2) == [1, 1])
                x[:] = k
                assert pool.map(steered, out, x, ctl) is out
                np.testing.assert_array_equal(np.asarray(out), np.full(N, 2.0 * k + 1))
                assert wait_until(lambda: _asleep(lines, 2) == [1, 1])
                u[:], w[:] = start, 0.0
                assert np.array_equal(np.asarray(pool.iterate(jacobi2d, w, u, steps=3)), sent)
        finally:
            restore()
        assert calls == [], f"calls went through the pipes: {calls}"
        assert woke == [[1, 1]] * 6  # every repeat woke both before its checks
        for a in (x, out, ctl, u, w):
            a.free()


def test_worker_killed_during_a_rung_call_is_a_crash_error(own_pool):
    pool = own_pool
    x, out, ctl = pool.array(np.ones(N)), pool.zeros(N), pool.zeros(2)
    pool.map(steered, out, x, ctl)
    ctl[:] = [3.0, 5.0]  # every worker sleeps 5 s inside the kernel; one is killed
    victim = pool.pids[0]
    timer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
    timer.start()
    try:
        with pytest.raises(sc.WorkerCrashedError, match="SIGKILL"):
            pool.map(steered, out, x, ctl)
    finally:
        timer.join()
    ctl[:] = [0.0, 0.0]
    pool.map(steered, out, x, ctl)
    assert pool.restarts == 1 and victim not in pool.pids
    assert np.all(np.asarray(out) == 3.0)


OFF_SCRIPT = """
import numpy as np, sharedcompute as sc
from sharedcompute import doorbell
from sharedcompute.kernels.elementwise import triad
from sharedcompute.kernels.reductions import total
from sharedcompute.kernels.stencils import jacobi2d, jacobi2d_reference
if __name__ == "__main__":
    assert not doorbell.ENABLED
    with sc.Pool(2) as pool:
        assert pool._executor.lines is None
        a, b, c = pool.zeros(1001), pool.array(np.ones(1001)), pool.array(np.ones(1001))
        for k in range(20):
            b[0] = k
            pool.map(triad, a, b, c, 2.0)
            assert a[0] == k + 2.0 and float(pool.reduce(total, b)) == k + 1000
        u = pool.array(np.random.default_rng(0).random((64, 32)))
        w = pool.zeros_like(u)
        start = np.array(u)
        got = np.array(pool.iterate(jacobi2d, w, u, steps=7))
    with sc.Pool(2, backend="inline") as here:  # same partitioning, in process
        u2 = here.array(start)
        assert np.array_equal(got, np.array(here.iterate(jacobi2d, here.zeros_like(u2), u2, steps=7)))
    print("OFF-OK")
"""


def test_doorbell_off_falls_back_to_pipes_and_a_semaphore_barrier(tmp_path):
    """SHAREDCOMPUTE_SPIN_US=0 (and every non-x86 machine) uses the session-1 paths."""
    import subprocess
    import sys
    script = tmp_path / "off.py"
    script.write_text(OFF_SCRIPT)
    env = dict(os.environ, SHAREDCOMPUTE_SPIN_US="0")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "OFF-OK" in proc.stdout, proc.stderr


def test_line_layout_has_no_overlapping_fields_and_an_abort_keeps_the_totals():
    """Issue 23 #15: ABORTED and COMPILE_S were both word 8, so an aborted iterate wrote
    over worker 0's compile seconds (fails with the old layout: checked by putting
    COMPILE_S back at 8)."""
    words = [w for _, w in doorbell.LINE_LAYOUT]
    assert len(set(words)) == len(words) and max(words) < doorbell.HEADER_WORDS
    with pytest.raises(AssertionError, match="overlaps"):
        doorbell._check_layout((("A", 3), ("B", 3)), doorbell.HEADER_WORDS)
    lines = doorbell.Lines(bytearray(doorbell.LINE_BYTES * 2), 2)
    lines.floats[doorbell.COMPILE_S] = 1.25
    barrier = doorbell.SpinBarrier(lines, 0)
    barrier.begin(7)
    barrier.abort()
    assert lines.totals(0)[0] == 1.25 and barrier._aborted()
