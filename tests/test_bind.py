"""Bound calls (pool.bind) and the repeated-call cache without cliffs (issue 15): sc.whole per
call, small plain arrays and changing scalars are cached, and never run stale; a freed,
closed, truncated or unlinked array is refused before any worker runs; a crash, a timeout
and a restart are transparent to the next call. Correctness only, never timing."""
from __future__ import annotations

import math
import os
import signal
import sys
import time

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute.errors import InputError

N = 1000
SHM = "/dev/shm"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm files")


from bindkernels import (accumulate, add_first, checked_scale, scale, scaled_total,  # noqa: E402
                         sign_of, weighted)


@pytest.fixture(scope="module", params=["fork", "spawn", "forkserver"])
def pool(request):
    import multiprocessing as mp
    if request.param not in mp.get_all_start_methods():
        pytest.skip(f"{request.param} not available")
    with sc.Pool(2, start_method=request.param) as p:
        yield p


@pytest.fixture
def arrays(pool):
    x = pool.array(np.arange(N, dtype=float))
    out = pool.zeros(N)
    yield x, out
    import gc
    gc.collect()
    for a in (x, out):
        a.free()


# -- bind ------------------------------------------------------------------------------------
def test_bound_map_and_reduce_run_every_call(pool, arrays):
    x, y = arrays
    step = pool.bind(accumulate, y, x, 0.5)
    for k in range(1, 6):
        assert step() is y
        np.testing.assert_array_equal(np.asarray(y), k * 0.5 * np.arange(N))
    total = pool.bind(scaled_total, x, 3.0)
    want = pool.reduce(scaled_total, x, 3.0)
    assert [total() for _ in range(3)] == [want] * 3
    assert "bound map" in repr(step)


def test_bind_checks_now_and_runs_nothing(pool, arrays):
    x, y = arrays
    with pytest.raises(InputError, match="takes 3 arguments"):
        pool.bind(accumulate, y, x)
    with pytest.raises(InputError, match="sharedcompute kernel"):
        pool.bind(len, y)
    with pytest.raises(InputError, match="must be >= 0"):
        pool.bind(checked_scale, y, x, -1.0)
    step = pool.bind(accumulate, y, x, a=2.0)  # keywords as in map
    assert not np.asarray(y).any()  # binding ran nothing
    step()
    np.testing.assert_array_equal(np.asarray(y), 2.0 * np.arange(N))


def test_bound_call_refuses_freed_and_closed_arrays(pool):
    x, y = pool.array(np.arange(N, dtype=float)), pool.zeros(N)
    step = pool.bind(accumulate, y, x, 1.0)
    step(), step()
    pids = pool.pids
    x.free()
    with pytest.raises(sc.ArrayFreedError):
        step()
    x2 = pool.array(np.arange(N, dtype=float))
    step2 = pool.bind(accumulate, y, x2, 1.0)
    step2()
    x2.close()  # the creator's last SharedArray: freed, as by del
    with pytest.raises(sc.ArrayFreedError):
        step2()
    np.testing.assert_array_equal(np.asarray(y), 3.0 * np.arange(N))  # nothing else ran
    assert pool.pids == pids
    y.free()


@linux_only
@pytest.mark.parametrize("tamper", ["truncate", "unlink"])
def test_bound_call_refuses_tampered_blocks(pool, arrays, tamper):
    x, y = arrays
    step = pool.bind(accumulate, y, x, 1.0)
    step(), step()
    pids, restarts = pool.pids, pool.restarts
    path = os.path.join(SHM, x.name)
    if tamper == "unlink":
        os.unlink(path)
        expected = sc.SharedBlockNotFoundError
    else:
        fd = os.open(path, os.O_RDWR)
        os.ftruncate(fd, 4096)
        os.close(fd)
        expected = sc.SharedBlockCorruptedError
    for _ in range(2):  # refused again: not only by the first check after the event
        with pytest.raises(expected, match=x.name):
            step()
    assert pool.pids == pids and pool.restarts == restarts  # no worker touched the pages
    np.testing.assert_array_equal(np.asarray(y), 2.0 * np.arange(N))


@linux_only
def test_tamper_seen_by_a_bound_call_after_another_call_read_the_event(pool, arrays):
    x, y = arrays
    other_x, other_y = pool.array(np.ones(N)), pool.zeros(N)
    step = pool.bind(accumulate, y, x, 1.0)
    step()
    fd = os.open(os.path.join(SHM, x.name), os.O_RDWR)
    os.ftruncate(fd, 4096)
    os.close(fd)
    pool.map(scale, other_y, other_x, 2.0)  # checks its own arrays: reads the event
    pool.map(scale, other_y, other_x, 2.0)
    with pytest.raises(sc.SharedBlockCorruptedError):
        step()
    other_x.free(), other_y.free()


@linux_only
def test_tamper_seen_by_a_repeated_map_after_another_call_read_the_event(pool, arrays):
    """A cached call checked since the last release skips its check while quiet() finds no
    tamper event queued (the bound call's rule); an event another call drained bumps the
    release count, so the repeated map checks again and refuses."""
    x, y = arrays
    other_x, other_y = pool.array(np.ones(N)), pool.zeros(N)
    for _ in range(3):  # planned, then rung twice: its blocks are checked and vouched for
        pool.map(accumulate, y, x, 1.0)
    fd = os.open(os.path.join(SHM, x.name), os.O_RDWR)
    os.ftruncate(fd, 4096)
    os.close(fd)
    pool.map(scale, other_y, other_x, 2.0)  # checks its own arrays: reads the event
    pool.map(scale, other_y, other_x, 2.0)
    for _ in range(2):
        with pytest.raises(sc.SharedBlockCorruptedError, match=x.name):
            pool.map(accumulate, y, x, 1.0)
    np.testing.assert_array_equal(np.asarray(y), 3.0 * np.arange(N))
    other_x.free(), other_y.free()


def test_bound_call_replans_after_a_worker_is_killed(pool, arrays):
    x, y = arrays
    step = pool.bind(accumulate, y, x, 1.0)
    step()
    restarts = pool.restarts
    os.kill(pool.pids[0], signal.SIGKILL)  # idle: the next call restarts and re-plans
    deadline = time.monotonic() + 10
    while pool._backend.executor.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    step()
    step()
    assert pool.restarts == restarts + 1
    np.testing.assert_array_equal(np.asarray(y), 3.0 * np.arange(N))


def test_bound_call_after_a_timeout(pool, arrays):
    x, y = arrays
    import faultkernels as fk
    slow = pool.bind(fk.fault_map, y, x, fk.SLEEP, 0, 3.0, timeout=0.5)
    with pytest.raises(sc.KernelTimeoutError):
        slow()
    fast = pool.bind(scale, y, x, 4.0)
    fast(), fast()
    np.testing.assert_array_equal(np.asarray(y), 4.0 * np.arange(N))


def test_bound_call_sees_a_plain_array_changed_in_place(pool, arrays):
    x, y = arrays
    w = np.zeros(7)
    step = pool.bind(add_first, y, x, w)
    for k in range(4):
        w[:] = np.arange(7) * k
        step()
        np.testing.assert_array_equal(np.asarray(y), np.arange(N) + weighted(w))


def test_bind_on_the_inline_backend():
    with sc.Pool(2, backend="inline") as p:
        y, x = p.zeros(10), p.array(np.arange(10.0))
        step = p.bind(accumulate, y, x, 1.0)
        step(), step()
        np.testing.assert_array_equal(np.asarray(y), 2.0 * np.arange(10))


# -- no cliffs: cached, and never stale --------------------------------------------------------
def test_sc_whole_per_call_follows_the_array(pool, arrays):
    x, y = arrays
    w1, w2 = pool.array(np.arange(5.0)), pool.array(np.arange(5.0) * 10)
    for w in (w1, w1, w2, w1, w2):
        pool.map(add_first, y, x, sc.whole(w))
        np.testing.assert_array_equal(np.asarray(y), np.arange(N) + weighted(w))
    np.asarray(w1)[:] = 100.0  # shared: the workers read the new contents in place
    pool.map(add_first, y, x, sc.whole(w1))
    np.testing.assert_array_equal(np.asarray(y), np.arange(N) + 1500.0)
    w1.free(), w2.free()


def test_small_plain_array_mutated_between_calls_is_seen(pool, arrays):
    x, y = arrays
    w = np.ones(3)
    for k in range(5):
        w[k % 3] = k + 0.25
        pool.map(add_first, y, x, w)
        np.testing.assert_array_equal(np.asarray(y), np.arange(N) + weighted(w))
    other = np.array([1, 2, 3], dtype=np.int64)  # same shape, another dtype: another call
    pool.map(add_first, y, x, other)
    np.testing.assert_array_equal(np.asarray(y), np.arange(N) + weighted(other))


def test_scalars_cycling_and_fresh_are_never_stale(pool, arrays):
    x, y = arrays
    values = [float(v) for v in range(40)] + [1e300, -2.5, 2.0 ** -1074]
    for rep in range(2):
        for v in values:
            pool.map(scale, y, x, v)
            np.testing.assert_array_equal(np.asarray(y), np.arange(N) * v)
    for v in (3, 7, True, np.float32(1.5), np.float64(2.5)):  # types do not share a call
        pool.map(scale, y, x, v)
        np.testing.assert_array_equal(np.asarray(y), np.arange(N) * v)
    for s in (0.0, -0.0, 0.0, -0.0):
        pool.map(sign_of, y, s)
        assert set(np.asarray(y)) == {math.copysign(1.0, s)}


def test_reduce_with_changing_scalars(pool, arrays):
    x, _ = arrays
    for s in (1.0, 2.0, 3.0, 2.0, 1.0):
        assert pool.reduce(scaled_total, x, s) == scaled_total(np.arange(N, dtype=float), s)


def test_accumulating_with_changing_scalars_runs_each_call_once(pool, arrays):
    x, y = arrays
    want = np.zeros(N)
    for a in (1.0, 2.0, 1.0, 0.5, 0.5, 3.0):
        pool.map(accumulate, y, x, a)
        want += a * np.arange(N)
        np.testing.assert_array_equal(np.asarray(y), want)


def test_kernel_check_runs_on_new_values(pool, arrays):
    x, y = arrays
    pool.map(checked_scale, y, x, 2.0)
    with pytest.raises(InputError, match="must be >= 0"):
        pool.map(checked_scale, y, x, -1.0)
    np.testing.assert_array_equal(np.asarray(y), 2.0 * np.arange(N))  # nothing ran
    pool.map(checked_scale, y, x, 3.0)
    np.testing.assert_array_equal(np.asarray(y), 3.0 * np.arange(N))


def test_more_cached_calls_than_the_cache_holds(pool):
    arrays = [(pool.zeros(N), pool.array(np.full(N, float(k)))) for k in range(40)]
    for rep in range(2):
        for k, (y, x) in enumerate(arrays):
            pool.map(scale, y, x, float(rep + 1))
            assert np.asarray(y)[0] == k * (rep + 1)
    for y, x in arrays:
        y.free(), x.free()


def test_new_values_patch_the_prepared_run_in_place():
    """The worker puts new values into the prepared run's sliced arguments instead of slicing
    again (_worker._patch_run); if _evaluate.prepare stops keeping them where it looks, this
    fails (the fallback, preparing again, would hide it and be slow)."""
    from sharedcompute._evaluate import Stats, prepare, resolve
    from sharedcompute._worker import _patch_run
    from sharedcompute.plan import make_plan
    x, y = np.arange(64.0), np.zeros(64)
    for kernel, args, i in ((scale, (y, x, 2.0), 2), (scaled_total, (x, 2.0), 1)):
        op = "reduce" if kernel.kind == "reduce" else "map"
        plan = make_plan(kernel, args, rows=None, boundary=None, in_process=True, direct=True)
        task = plan.task(op, (0, len(plan.chunks)))
        views = resolve(task.specs)
        run = prepare(task, views)
        assert _patch_run(run, [(i, 5.0)])
        out = run(Stats())
        if op == "map":
            np.testing.assert_array_equal(y, 5.0 * x)
        else:
            assert sum(out.values()) == 5.0 * x.sum()
