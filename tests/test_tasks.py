"""Tasks: submit / imap / imap_unordered / map over items, under every start method.

Futures are real concurrent.futures.Futures; SharedArrays travel as handles; a task's own
exception type comes back; a crash or timeout fails only its own task, and the pool goes on.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import sharedcompute as sc
import taskkernels as tk
from conftest import START_METHODS, TESTS_DIR, shared_pool
from sharedcompute.errors import RemoteTraceback


@pytest.fixture(params=START_METHODS)
def pool(request):
    return shared_pool(2, request.param)


def test_submit_returns_real_futures_and_as_completed_works(pool):
    futures = [pool.submit(tk.square, n) for n in range(20)]
    assert all(isinstance(f, cf.Future) for f in futures)
    assert sorted(f.result(timeout=60) for f in cf.as_completed(futures)) == \
        sorted(n * n for n in range(20))
    assert [f.result() for f in futures] == [n * n for n in range(20)]
    assert pool.submit(tk.add, 1, 2, c=3).result(timeout=60) == 6  # kwargs reach fn
    done, not_done = cf.wait([pool.submit(tk.square, 3)], timeout=60)
    assert not not_done and done.pop().result() == 9


def test_tasks_write_their_rows_of_a_shared_output_without_copies(pool):
    out = pool.zeros((50, 3))
    futures = [pool.submit(tk.fill_row, out, i, float(i)) for i in range(50)]
    assert sorted(f.result(timeout=60) for f in futures) == list(range(50))
    np.testing.assert_array_equal(out.numpy(), np.repeat(np.arange(50.0)[:, None], 3, axis=1))
    x = pool.array(np.arange(12.0).reshape(4, 3))
    sums = [f.result(timeout=60) for f in [pool.submit(tk.row_sum, x, i) for i in range(4)]]
    assert sums == [3.0, 12.0, 21.0, 30.0]
    out.free()
    x.free()


def test_a_task_handle_is_smaller_than_its_array(pool):
    import pickle
    big = pool.zeros(1_000_000)
    assert len(pickle.dumps(big)) < 1000  # the arguments pickle as handles, not data
    assert pool.submit(tk.row_sum, big, slice(0, 10)).result(timeout=60) == 0.0
    big.free()


def test_exceptions_keep_their_type_and_carry_the_remote_traceback(pool):
    fut = pool.submit(tk.fail_on, 3, 3)
    with pytest.raises(ValueError, match="item 3 is bad") as info:
        fut.result(timeout=60)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_on" in str(info.value.__cause__)
    with pytest.raises(TypeError, match="result .*could not be pickled"):
        pool.submit(tk.unpicklable_result, 1).result(timeout=60)
    assert pool.submit(tk.square, 4).result(timeout=60) == 16  # the pool is fine


def test_local_functions_and_lambdas_travel_by_value(pool):
    """Functions workers cannot import by name go by value (cloudpickle), closures and
    defaults included; what cannot be pickled at all is refused in the caller."""
    import threading
    scale = 3

    def local(x, k=2):
        return x * k * scale
    assert pool.submit(lambda x: x + 1, 1).result(timeout=60) == 2
    assert pool.submit(local, 5).result(timeout=60) == 30
    assert list(pool.imap(local, range(4))) == [0, 6, 12, 18]
    assert pool.map(lambda v: -v, range(3)) == [0, -1, -2]
    lock = threading.Lock()  # a closure over a lock cannot be pickled: refused, typed

    def holds_lock(x):
        with lock:
            return x
    with pytest.raises(sc.KernelNotSendableError, match="holds_lock could not be sent") as info:
        pool.submit(holds_lock, 1)
    assert "Define the code in a module" in str(info.value)
    assert pool.submit(tk.locked_square, 3).result(timeout=60) == 9  # the advice, followed
    with pytest.raises(sc.InputError, match="could not be pickled"):
        pool.submit(tk.square, tk.Unpicklable())
    with pytest.raises(sc.InputError, match="not callable"):
        pool.submit(42)
    with pytest.raises(sc.InputError, match="timeout"):
        pool.submit(tk.square, 1, timeout=-1)
    import functools
    assert pool.submit(functools.partial(tk.add, 1, c=2), 3).result(timeout=60) == 6


def test_nested_shared_arrays_are_held_while_their_task_runs(pool):
    """A SharedArray inside a list or an imap item is held like a direct argument: free()
    refuses while the task is queued or runs, and a temporary is not unlinked before the
    worker attaches it (issue 23, item 9)."""
    x = pool.array(np.arange(10.0))
    fut = pool.submit(tk.sum_nested, [x], 0.5)
    with pytest.raises(sc.ArrayInUseError):
        x.free()
    assert fut.result(timeout=60) == 45.0
    # temporaries, alive only inside the argument: summed in the worker, as NumPy does
    futs = [pool.submit(tk.sum_nested, {"a": [pool.array(np.full(5, float(i)))]})
            for i in range(6)]
    assert [f.result(timeout=60) for f in futs] == [5.0 * i for i in range(6)]
    items = ([pool.array(np.full(3, float(i)))] for i in range(8))  # made as imap takes them
    assert list(pool.imap(tk.sum_nested, items)) == [3.0 * i for i in range(8)]
    x.free()


def test_imap_yields_what_came_before_a_raising_iterable(pool):
    """As the stdlib's imap: results of the items taken before the iterable raised, then
    its exception (issue 23, item 11)."""
    import multiprocessing as mp

    def items():
        yield from range(5)
        raise LookupError("source failed")

    def collect(it):
        got = []
        with pytest.raises(LookupError, match="source failed"):
            for v in it:
                got.append(v)
        return got
    with mp.get_context("fork").Pool(2) as stdlib:
        want = collect(stdlib.imap(tk.square, items()))
    assert want == [0, 1, 4, 9, 16]
    assert collect(pool.imap(tk.square, items())) == want
    assert sorted(collect(pool.imap_unordered(tk.square, items()))) == want
    assert collect(pool.imap(tk.square, items(), chunksize=3)) == want


def test_a_timed_out_task_fails_alone_and_the_pool_recovers(pool):
    restarts = pool.restarts
    slow = pool.submit(tk.sleep_then, 30, "never", timeout=0.5)
    quick = [pool.submit(tk.square, n) for n in range(10)]
    with pytest.raises(sc.KernelTimeoutError, match="timeout=0.5"):
        slow.result(timeout=60)
    assert isinstance(slow.exception(), TimeoutError)
    assert [f.result(timeout=60) for f in quick] == [n * n for n in range(10)]
    assert pool.submit(tk.square, 5).result(timeout=60) == 25
    assert pool.restarts == restarts + 1


def test_a_worker_death_fails_only_its_own_task(pool):
    restarts = pool.restarts
    futures = [pool.submit(tk.die_if, n, 7) for n in range(30)]
    for n, fut in enumerate(futures):
        if n == 7:
            with pytest.raises(sc.WorkerCrashedError, match="SIGKILL.*die_if"):
                fut.result(timeout=60)
        else:
            assert fut.result(timeout=60) == n
    from testkernels import scale_add  # kernel calls work after the restart
    y, x, z = pool.zeros(10), pool.array(np.ones(10)), pool.zeros(10)
    np.testing.assert_array_equal(pool.map(scale_add, y, x, z, 2.0).numpy(), np.full(10, 2.0))
    # one restart: by the task thread, or (when the crash was its last task, which happens
    # on a busy machine) by the next call; counted only after that call
    assert pool.restarts == restarts + 1
    for a in (y, x, z):
        a.free()


def test_pending_tasks_can_be_cancelled(pool):
    blockers = [pool.submit(tk.sleep_then, 0.5, i) for i in range(2)]
    later = [pool.submit(tk.square, n) for n in range(20)]
    cancelled = [f.cancel() for f in later]
    assert any(cancelled)  # queued ones cancel; a running one cannot
    for f, c in zip(later, cancelled):
        if c:
            assert f.cancelled()
            with pytest.raises(cf.CancelledError):
                f.result()
        else:
            assert f.result(timeout=60) is not None
    assert [f.result(timeout=60) for f in blockers] == [0, 1]


def test_imap_orders_and_imap_unordered_completes(pool):
    assert list(pool.imap(tk.square, range(100))) == [n * n for n in range(100)]
    assert list(pool.imap(tk.square, iter(range(100)), chunksize=7)) == \
        [n * n for n in range(100)]
    assert sorted(pool.imap_unordered(tk.square, range(1000))) == \
        sorted(n * n for n in range(1000))
    assert list(pool.imap(tk.square, [])) == []
    assert pool.map(tk.square, range(10)) == [n * n for n in range(10)]  # stdlib Pool.map
    gen = (n for n in range(10**9))  # lazily consumed: never drained into a list
    it = pool.imap(tk.square, gen)
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    it.close()
    with pytest.raises(sc.InputError, match="chunksize"):
        list(pool.imap(tk.square, range(3), chunksize=0))


def test_imap_raises_at_the_failed_item_after_the_ones_before(pool):
    got = []
    with pytest.raises(ValueError, match="item 50 is bad") as info:
        for v in pool.imap(tk.fail_at_50, range(100)):
            got.append(v)
    assert got == list(range(50))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert pool.submit(tk.square, 2).result(timeout=60) == 4


def test_progress_advances_per_finished_task(pool):
    seen = []
    assert list(pool.imap(tk.square, range(40), progress=lambda d, t: seen.append((d, t)))) \
        == [n * n for n in range(40)]
    assert seen[-1] == (40, 40) and len(seen) >= 2
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))


def test_tasks_hold_their_arrays_against_free(pool):
    x = pool.zeros(10)
    fut = pool.submit(tk.touch_slowly, x, 0.5)
    with pytest.raises(sc.ArrayInUseError):
        x.free()
    fut.result(timeout=60)
    x.free()


def test_kernel_calls_and_tasks_share_the_workers(pool):
    from testkernels import nd_sum
    x = pool.array(np.arange(1000.0))
    futures = [pool.submit(tk.sleep_then, 0.05, i) for i in range(8)]
    assert float(pool.reduce(nd_sum, x)) == 499500.0  # waits for the tasks, then runs
    assert [f.result(timeout=60) for f in futures] == list(range(8))
    x.free()


def test_tasks_on_the_inline_backend_run_at_once():
    with sc.Pool(2, backend="inline") as pool:
        fut = pool.submit(tk.add, 1, b=2)
        assert fut.done() and fut.result() == 3
        with pytest.raises(ValueError):
            pool.submit(tk.fail_on, 1, 1).result()
        assert list(pool.imap_unordered(tk.square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.submit(lambda: 1).result() == 1


def test_numba_functions_are_told_to_use_a_kernel_or_imap(pool):
    import numba

    @numba.njit
    def f(x):
        return x
    with pytest.raises(sc.InputError, match="numba function.*@sc.kernel"):
        pool.map(f, range(3))
    x = pool.zeros(4)
    with pytest.raises(sc.InputError, match="not a sharedcompute kernel.*one iterable"):
        pool.map(tk.square, x)
    x.free()


def test_close_settles_every_future():
    with sc.Pool(2, start_method=START_METHODS[-1]) as pool:
        running = [pool.submit(tk.sleep_then, 30, i) for i in range(2)]
        queued = [pool.submit(tk.square, i) for i in range(10)]
        time.sleep(0.5)
        t0 = time.monotonic()
        pool.close()
        assert time.monotonic() - t0 < 20  # close() interrupts, it does not wait 30 s
        for f in running:
            assert isinstance(f.exception(timeout=5), sc.PoolClosedError)
        for f in queued:
            assert f.done()
        with pytest.raises(sc.PoolClosedError):
            pool.submit(tk.square, 1)


def test_leaving_a_with_block_waits_for_submitted_tasks():
    with sc.Pool(2, start_method=START_METHODS[-1]) as pool:
        futures = [pool.submit(tk.sleep_then, 0.2, i) for i in range(4)]
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]


CTRL_C_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    sys.path.insert(0, {tests!r})
    import sharedcompute as sc, taskkernels as tk
    if __name__ == "__main__":
        signal.signal(signal.SIGINT, signal.default_int_handler)  # not inherited as ignored
        pool = sc.Pool(2, start_method={method!r})
        x = pool.zeros(1000)
        futures = [pool.submit(tk.sleep_then, 20, i) for i in range(2)]
        futures += [pool.submit(tk.row_sum, x, slice(0, 5)) for i in range(50)]
        print("me", os.getpid(), flush=True)
        print("pids", *pool.pids, flush=True)
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            with pool:
                for f in futures:
                    f.result()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        states = [f.done() for f in futures]
        print("settled", all(states), flush=True)
""")


@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_with_futures_pending_settles_them_and_leaves_nothing(method):
    from conftest import wait_no_segments
    from sharedcompute.shared import list_segments
    before = set(list_segments())
    script = CTRL_C_SCRIPT.format(tests=TESTS_DIR, method=method)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout
    assert "interrupted" in out and "settled True" in out, out + proc.stderr
    pids = [int(p) for p in out.split("pids", 1)[1].split("\n")[0].split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "orphaned workers"
    me = int(out.split("me", 1)[1].split()[0])
    assert not wait_no_segments(before, creator=me), "leaked segments"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_pool_call_from_a_done_callback_is_refused(pool):
    from testkernels import nd_sum
    x = pool.array(np.arange(10.0))
    errors = []

    def callback(fut):
        try:
            pool.reduce(nd_sum, x)
        except sc.PoolError as exc:
            errors.append(exc)
    fut = pool.submit(tk.sleep_then, 0.5, 1)
    fut.add_done_callback(callback)  # runs in the pool's task thread when the task ends
    fut.result(timeout=60)
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(errors) == 1 and "callback" in str(errors[0])
    assert float(pool.reduce(nd_sum, x)) == 45.0  # from this thread it works
    x.free()


def test_sigint_is_ignored_by_workers_running_tasks(pool):
    fut = pool.submit(tk.worker_pid)
    pid = fut.result(timeout=60)
    os.kill(pid, signal.SIGINT)  # workers leave Ctrl-C to the parent
    time.sleep(0.2)
    assert pool.submit(tk.square, 3).result(timeout=60) == 9
