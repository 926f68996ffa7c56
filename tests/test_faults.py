"""The fault catalogue (design note anchors-reliability.md, sections 9 and 10), one test per row.

Crash-like faults are table driven (like loky's crash matrix): each case names the injected
fault, the error type, a message pattern and the pool's state afterwards, and runs under
every start method. Faults that can poison or kill the test process itself (Ctrl-C, parent
SIGKILL, fork after numba threads, /dev/shm size, other users, cache directories) run in a
subprocess, which must exit cleanly with an empty stderr and leave no segment and no process.

Fault kernels live in tests/faultkernels.py (importable by every start method). Rows 21-32
are issue 17's twelve items (reliability, round two): ISSUE17 below lists each with the test
that shows it, here or in tests/test_limits.py and tests/test_cli.py.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute.errors import RemoteTraceback
from sharedcompute.partition import chunk_grid, chunk_rows, split_even
from sharedcompute.shared import Block, creator_pid, list_segments, make_block_name

import faultkernels as fk
from conftest import kept_by_open_pools

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a test dependency
    psutil = None

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]
N_WORKERS = 2
N = 4 * 8192  # float64 rows: four 64 KiB chunks, so each of the two workers gets two
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SHM = "/dev/shm"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="fault catalogue uses /dev/shm, signals and namespaces")


# -- helpers -------------------------------------------------------------------------------------
def worker_ranges(n: int = N, itemsize: int = 8, n_workers: int = N_WORKERS) -> list[tuple]:
    """The rows each worker is given, from the engine's own grid arithmetic."""
    chunks = chunk_grid(n, chunk_rows(n, itemsize))
    return [(chunks[a][0], chunks[b - 1][1]) if b > a else (0, 0)
            for a, b in split_even(len(chunks), n_workers)]


def reference(x: np.ndarray) -> np.ndarray:
    return 2.0 * x + 1.0


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate`` with backoff until truthy or the deadline; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


def pid_gone(pid: int) -> bool:
    if psutil is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids) -> bool:
    return all(pid_gone(p) for p in pids)


def descendants(pid: int) -> list[int]:
    if psutil is None:
        return []
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def segments_of(names) -> list[str]:
    """Which of ``names`` still exist in /dev/shm."""
    return [n for n in names if n and os.path.exists(os.path.join(SHM, n))]


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, env.get("PYTHONPATH")) if p)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


PRELUDE = textwrap.dedent(f"""
    import json, os, sys, time
    import numpy as np
    import sharedcompute as sc
    import faultkernels as fk
    from sharedcompute.shared import creator_pid, list_segments
    N = {N}
    def my_segments():
        return [n for n in list_segments() if creator_pid(n) == os.getpid()]
    def emit(**kw):
        print(json.dumps(kw), flush=True)
""")


# Subprocesses run outside the checkout: `python -c` puts the current directory first
# on sys.path, and the source tree's sharedcompute/ lacks the installed kernels.
RUN_DIR = tempfile.gettempdir()


def run_script(body: str, *args: str, timeout: float = 60, env: dict | None = None,
               argv0: list | None = None) -> subprocess.CompletedProcess:
    body = textwrap.dedent(body)
    assert body.strip() and not body.lstrip("\n")[0].isspace(), "script body must dedent to column 0"
    code = PRELUDE + body
    cmd = (argv0 or []) + [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env or subprocess_env(), cwd=RUN_DIR)


def events(stdout: str) -> dict:
    """JSON lines printed by emit(), keyed by their "event" field."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            out[d.get("event", len(out))] = d
    return out


def assert_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stderr == "", f"stderr not empty:\n{proc.stderr}"


# -- fixtures ------------------------------------------------------------------------------------
def own_segments() -> set:
    """Our blocks created by this process (other processes on the machine may make their own)."""
    return {n for n in list_segments() if creator_pid(n) == os.getpid()}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """No block this process creates may outlive a test (the tracker works async: poll),
    but for those open pools keep until they close (conftest.kept_by_open_pools)."""
    before = own_segments()
    yield
    before |= kept_by_open_pools()
    clean = wait_until(lambda: not (own_segments() - before), timeout=10.0)
    assert clean, f"leaked shared-memory segments: {sorted(own_segments() - before)}"


@pytest.fixture
def markers():
    """A directory this process's pool workers touch (<pid>.started) when a fault begins."""
    d = fk.marker_dir(os.getpid())
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def started_pids(d: str) -> list[int]:
    return [int(f.split(".")[0]) for f in os.listdir(d) if f.endswith(".started")]


def _make_pool(method: str, n_workers: int = N_WORKERS) -> sc.Pool:
    if method == "fork" and sc.pool._numba_threads_started():
        pytest.skip("numba's parallel threads already ran in this test process, so the engine "
                    "refuses fork pools here (row 17 checks that refusal in a subprocess)")
    return sc.Pool(n_workers=n_workers, start_method=method)


def _warm(pool: sc.Pool) -> None:
    """Compile/load every fault kernel in the workers so timing assertions measure faults."""
    x = pool.array(np.arange(N, dtype=np.float64))
    out = pool.zeros(N)
    pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
    pool.map(fk.fault_fill, out, 1.0, fk.NONE, -1, 0.0)
    pool.reduce(fk.fault_sum, x, fk.NONE, -1, 0.0)
    pool.iterate(fk.fault_smooth, out, x, fk.NONE, -1, 0.0, steps=1)
    x.free()
    out.free()


@pytest.fixture(scope="module", params=METHODS)
def pool(request):
    p = _make_pool(request.param)
    try:
        _warm(p)
        yield p
    finally:
        p.close()


@pytest.fixture
def arrays(pool):
    """x = 0..N-1 and a zeroed output, both owned by the module pool; freed after the test."""
    x = pool.array(np.arange(N, dtype=np.float64))
    out = pool.zeros(N)
    yield x, out
    import gc
    gc.collect()   # a failed call's traceback (kept by pytest.raises) can hold views in a cycle
    for a in (x, out):
        a.free()   # a no-op for an array the test freed itself


# == rows 1, 2, 3, 4, 8, 20: the crash matrix ======================================================
@dataclass(frozen=True)
class Case:
    row: str
    action: int
    error: type
    pattern: str          # regex; {pid}, {s}, {e} are the victim worker's pid and rows
    state: str            # "restarted": new workers next call; "same": the same workers serve on
    timeout: float | None = None
    signal_name: str = ""


CRASHES = [
    Case("1-sigkill", fk.SIGKILL, sc.WorkerCrashedError,
         r"worker {pid} died of SIGKILL \(.*ran out of memory.*\) while running kernel fault_map "
         r"on rows \[{s}, {e}\)", "restarted", signal_name="SIGKILL"),
    Case("2-sigsegv", fk.SIGSEGV, sc.WorkerCrashedError,
         r"worker {pid} died of SIGSEGV while running kernel fault_map on rows \[{s}, {e}\)",
         "restarted", signal_name="SIGSEGV"),
    Case("2-sigabrt", fk.SIGABRT, sc.WorkerCrashedError,
         r"worker {pid} died of SIGABRT while running kernel fault_map on rows \[{s}, {e}\)",
         "restarted", signal_name="SIGABRT"),
    Case("1-exit0", fk.EXIT0, sc.WorkerCrashedError,
         r"worker {pid} died of exit code 0 while running kernel fault_map on rows \[{s}, {e}\)",
         "restarted", signal_name="exit code 0"),
    Case("3-raise", fk.RAISE, sc.KernelError,
         r"kernel fault_map raised ValueError: " + re.escape(fk.RAISE_TEXT) +
         r" \(rows \[{s}, {e}\), worker {pid}\)", "same"),
    Case("4-unpicklable-exception", fk.UNPICKLABLE, sc.KernelError,
         r"kernel fault_map raised UnpicklableError: an exception holding a lock "
         r"\(rows \[{s}, {e}\), worker {pid}\)", "same"),
    Case("4-ununpicklable-exception", fk.BAD_EXC, sc.KernelError,
         r"kernel fault_map raised UnunpicklableError: custom error with fields 1 and 2 "
         r"\(rows \[{s}, {e}\), worker {pid}\)", "same"),
    Case("8-hang", fk.HANG, sc.KernelTimeoutError,
         r"kernel fault_map did not finish within timeout=1.5 s \(worker {pid} rows \[{s}, {e}\)\)",
         "restarted", timeout=1.5),
    Case("20-oom-rlimit", fk.NOMEM, sc.KernelError,
         r"kernel fault_map raised MemoryError: .*RLIMIT_AS \(rows \[{s}, {e}\), worker {pid}\)",
         "same"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CRASHES, ids=[c.row for c in CRASHES])
def test_crash_matrix(pool, arrays, case):
    x, out = arrays
    ranges = worker_ranges()
    s, e = ranges[1]                      # the second worker's partition suffers the fault
    victim = (s + e) // 2
    pids, restarts = list(pool.pids), pool.restarts
    victim_pid = pids[1]

    t0 = time.monotonic()
    with pytest.raises(case.error) as info:
        pool.map(fk.fault_map, out, x, case.action, victim, 0.0, timeout=case.timeout)
    elapsed = time.monotonic() - t0
    err = info.value

    # Never a hang: crash/raise are noticed in seconds; a timeout fires at its deadline.
    limit = (case.timeout + 3.0) if case.timeout else 5.0
    assert elapsed < limit, f"took {elapsed:.1f} s"
    if case.timeout:
        assert elapsed >= case.timeout * 0.9
    assert isinstance(err, RuntimeError) and isinstance(err, sc.SharedComputeError)
    pattern = case.pattern.format(pid=victim_pid, s=s, e=e)
    assert re.search(pattern, str(err)), f"{str(err)!r} !~ {pattern!r}"

    if isinstance(err, sc.WorkerCrashedError):
        assert isinstance(err, sc.BrokenPoolError)
        assert (err.pid, err.rows, err.signal_name) == (victim_pid, (s, e), case.signal_name)
        if case.signal_name.startswith("SIG"):
            assert err.exitcode == -getattr(signal, case.signal_name)
        else:
            assert err.exitcode == 0
    if isinstance(err, sc.KernelTimeoutError):
        assert isinstance(err, TimeoutError)
        other = pids[0]
        assert f"worker {other} " not in str(err), "a worker that finished was reported stuck"
    if type(err) is sc.KernelError:
        assert (err.kernel, err.rows, err.worker) == ("fault_map", (s, e), victim_pid)
        assert isinstance(err.__cause__, RemoteTraceback)
        tb = str(err.__cause__)
        assert "Traceback (most recent call last)" in tb and err.remote_type in tb
        # The other partition finished: its rows hold the kernel's output.
        s0, e0 = ranges[0]
        np.testing.assert_array_equal(np.asarray(out)[s0:e0], reference(np.asarray(x)[s0:e0]))

    if case.state == "same":
        assert pool.pids == pids and pool.restarts == restarts
    else:
        # Clean break: every old worker is gone (reaped), not only the one that failed.
        assert wait_until(lambda: all_gone(pids), timeout=5.0), "old workers still alive"
    # The pool is usable: the next call works (restarting the workers if they were lost).
    out.fill(0.0)
    pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
    np.testing.assert_array_equal(np.asarray(out), reference(np.asarray(x)))
    if case.state == "same":
        assert pool.pids == pids and pool.restarts == restarts
    else:
        assert pool.restarts == restarts + 1
        assert len(pool.pids) == N_WORKERS and not set(pool.pids) & set(pids)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op, action", [("reduce", fk.RAISE), ("reduce", fk.HANG),
                                        ("iterate", fk.RAISE), ("iterate", fk.SIGKILL),
                                        ("iterate", fk.HANG)],
                         ids=["reduce-raise", "reduce-hang", "iterate-raise", "iterate-sigkill",
                              "iterate-hang"])
def test_crash_matrix_reduce_iterate(pool, arrays, op, action):
    """Rows 1, 3 and 8 through pool.reduce and pool.iterate (whose workers meet at a barrier).
    (A reduce crash goes through the same wait loop as map's, tested in test_crash_matrix.)"""
    x, out = arrays
    s, e = worker_ranges()[1]
    victim = (s + e) // 2
    pids, restarts = list(pool.pids), pool.restarts
    timeout = 1.5 if action == fk.HANG else None
    expected = {fk.RAISE: sc.KernelError, fk.SIGKILL: sc.WorkerCrashedError,
                fk.HANG: sc.KernelTimeoutError}[action]
    t0 = time.monotonic()
    with pytest.raises(expected) as info:
        if op == "reduce":
            pool.reduce(fk.fault_sum, x, action, victim, 0.0, timeout=timeout)
        else:
            pool.iterate(fk.fault_smooth, out, x, action, victim, 0.0, steps=3, timeout=timeout)
    assert time.monotonic() - t0 < (timeout or 0) + 5.0
    err = info.value
    kname = "fault_sum" if op == "reduce" else "fault_smooth"
    if action == fk.RAISE:
        assert err.kernel == kname and isinstance(err.__cause__, RemoteTraceback)
        assert pool.pids == pids
        if op == "reduce":
            assert err.remote_type == "ValueError" and fk.RAISE_TEXT in str(err)
            assert s <= err.rows[0] <= victim < err.rows[1] <= e and err.worker == pids[1]
        # iterate: which error is reported is racy (see test_row3_iterate_reports_primary_error)
    elif action == fk.SIGKILL:
        assert err.pid == pids[1] and err.signal_name == "SIGKILL"
        assert f"kernel {kname}" in str(err)
    else:
        assert f"worker {pids[1]} rows [{s}, {e})" in str(err) and "timeout=1.5" in str(err)
    # Next call of the same kind works and is right.
    if op == "reduce":
        assert pool.reduce(fk.fault_sum, x, fk.NONE, -1, 0.0) == float(np.arange(N).sum())
    else:
        u = np.asarray(x)
        expect = np.empty_like(u)
        padded = np.concatenate([u[:1], u, u[-1:]])
        expect[:] = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
        res = pool.iterate(fk.fault_smooth, out, x, fk.NONE, -1, 0.0, steps=1)
        np.testing.assert_allclose(np.asarray(res), expect, rtol=1e-15)
        del res
    assert pool.restarts == restarts + (0 if action == fk.RAISE else 1)


@pytest.mark.timeout(60)
def test_row3_iterate_reports_primary_error(pool, arrays):
    """A kernel raising inside pool.iterate: the error is the kernel's own, not the secondary
    BrokenBarrierError of the workers it left waiting. The victim's error is slow to format
    (0.5 s), so the secondary errors deterministically arrive first."""
    x, out = arrays
    s, e = worker_ranges()[1]
    victim = (s + e) // 2
    pids = list(pool.pids)
    with pytest.raises(sc.KernelError) as info:
        pool.iterate(fk.fault_smooth, out, x, fk.SLOW_EXC, victim, 0.0, steps=3)
    err = info.value
    del info
    assert pool.pids == pids
    assert err.remote_type == "SlowStrError", str(err)
    assert err.worker == pids[1] and s <= err.rows[0] <= victim < err.rows[1] <= e


@pytest.mark.timeout(60)
def test_row4_unpicklable_result(pool, arrays):
    """Row 4: a partial that cannot be pickled back -> plain KernelError with its text."""
    x, _ = arrays
    pids = list(pool.pids)
    with pytest.raises(sc.KernelError) as info:
        pool.reduce(fk.box_result, x)
    err = info.value
    assert type(err) is sc.KernelError
    assert "result could not be sent back" in str(err) and "pickle" in str(err)
    assert err.kernel == "box_result" and err.worker in pids
    assert pool.pids == pids
    assert pool.reduce(fk.fault_sum, x, fk.NONE, -1, 0.0) == float(np.arange(N).sum())


# == row 5: kernels defined where workers cannot import them travel by value ======================
@pytest.mark.timeout(60)
def test_row5_local_kernels_travel_by_value(pool, arrays):
    """A kernel defined inside a function (or from a lambda) goes by value (cloudpickle),
    closure included; one over something unpicklable is refused before anything runs."""
    import threading
    x, out = arrays
    k = 3.0

    @sc.kernel
    def local_fill(o):
        for i in range(o.shape[0]):
            o[i] = k

    pool.map(local_fill, out)
    assert np.array_equal(np.asarray(out), np.full(N, 3.0))
    lock = threading.Lock()

    @sc.kernel(jit=False)
    def locked(o):
        with lock:
            o[:] = 1.0
    before = own_segments()
    with pytest.raises(sc.KernelNotSendableError, match="could not be sent") as info:
        pool.map(locked, out)
    assert isinstance(info.value, TypeError) and isinstance(info.value, sc.InputError)
    assert own_segments() == before  # nothing was created for the refused call
    assert np.array_equal(np.asarray(out), np.full(N, 3.0))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", METHODS)
def test_row5_interactive_main_kernel(method):
    """A kernel defined in __main__ without a file (python -c), before and after the pool
    started, and redefined: every start method runs the code last defined (by value)."""
    proc = run_script("""
        method = sys.argv[1]
        @sc.kernel
        def main_fill(o):
            for i in range(o.shape[0]):
                o[i] = 7.0
        with sc.Pool(2, start_method=method) as pool:
            out = pool.zeros(N)
            pool.map(main_fill, out)
            first = float(np.asarray(out).sum())
            @sc.kernel
            def main_fill(o):
                for i in range(o.shape[0]):
                    o[i] = 9.0
            pool.map(main_fill, out)
            emit(event="result", first=first, second=float(np.asarray(out).sum()),
                 restarts=pool.restarts)
    """, method)
    assert_clean(proc)
    res = events(proc.stdout)["result"]
    assert (res["first"], res["second"], res["restarts"]) == (7.0 * N, 9.0 * N, 0)


# == row 6: Ctrl-C in the parent ===================================================================
SIGINT_SCRIPT = """
    # A CI runner may start us as a background job, with SIGINT ignored (then Python installs
    # no KeyboardInterrupt handler); a terminal user's Python always has it. Restore it.
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    method, victim = sys.argv[1], int(sys.argv[2])
    with sc.Pool(2, start_method=method) as pool:
        x = pool.array(np.arange(N, dtype=np.float64)); out = pool.zeros(N)
        pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
        emit(event="ready", pids=pool.pids, names=[x.name, out.name])
        try:
            pool.map(fk.fault_map, out, x, fk.HANG, victim, 0.0)
            emit(event="returned")
        except KeyboardInterrupt:
            emit(event="interrupted", t=time.monotonic())
        pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
        ok = bool(np.array_equal(np.asarray(out), 2.0 * np.asarray(x) + 1.0))
        emit(event="after", restarts=pool.restarts, correct=ok, new_pids=pool.pids)
    emit(event="closed", segments=my_segments())
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", METHODS)
def test_row6_ctrl_c_in_parent(method, tmp_path):
    s, e = worker_ranges()[1]
    env = subprocess_env(**{fk.MARKER_ENV: str(tmp_path)})
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(SIGINT_SCRIPT),
                             method, str((s + e) // 2)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            cwd=RUN_DIR)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        assert wait_until(lambda: started_pids(str(tmp_path)), timeout=20), "kernel never started"
        tree = descendants(proc.pid)          # workers, resource tracker, forkserver
        assert set(ready["pids"]) <= set(tree) or psutil is None
        t_sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)    # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ev = events(out)
    assert "interrupted" in ev, f"no KeyboardInterrupt:\n{out}\n{err}"
    latency = ev["interrupted"]["t"] - t_sent
    assert latency < 1.5, f"KeyboardInterrupt took {latency:.2f} s"
    assert ev["after"]["restarts"] == 1 and ev["after"]["correct"]
    assert ev["closed"]["segments"] == []
    assert proc.returncode == 0 and err == "", err
    assert wait_until(lambda: all_gone(tree + ready["pids"] + ev["after"]["new_pids"]), 10), \
        "orphan processes"
    assert segments_of(ready["names"]) == []


@pytest.mark.timeout(60)
def test_row6_ctrl_c_during_worker_restart(pool, arrays, monkeypatch):
    """Ctrl-C can also land while the pool restarts its workers after a crash. It is injected
    deterministically between the two worker starts (a real SIGINT rarely hits that window)."""
    x, out = arrays
    s, e = worker_ranges()[1]
    with pytest.raises(sc.WorkerCrashedError):
        pool.map(fk.fault_map, out, x, fk.SIGKILL, (s + e) // 2, 0.0)
    ctx = pool._executor.ctx
    real_process, starts = ctx.Process, []

    def interrupted_second_start(*args, **kwargs):
        starts.append(1)
        if len(starts) == 2:
            raise KeyboardInterrupt
        return real_process(*args, **kwargs)

    monkeypatch.setattr(ctx, "Process", interrupted_second_start)
    with pytest.raises(KeyboardInterrupt):
        pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
    monkeypatch.undo()
    out.fill(0.0)
    pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)   # the next call restarts and works
    np.testing.assert_array_equal(np.asarray(out), reference(np.asarray(x)))
    assert len(pool.pids) == N_WORKERS


# == row 7: the parent is SIGKILLed ================================================================
PARENT_KILL_SCRIPT = """
    method, victim = sys.argv[1], int(sys.argv[2])
    pool = sc.Pool(2, start_method=method)
    x = pool.array(np.arange(N, dtype=np.float64)); out = pool.zeros(N)
    pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
    emit(event="ready", pids=pool.pids, names=[x.name, out.name])
    pool.map(fk.fault_map, out, x, fk.HANG, victim, 0.0)
"""
# The tracker reclaims what the dead parent held (blocks; the pool's barrier semaphores) and
# says so; that notice is the expected mechanism here, anything else on stderr is not.
TRACKER_LEAK = re.compile(r"resource_tracker: There appear to be \d+ leaked "
                          r"(shared_memory|semaphore) objects")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", METHODS)
def test_row7_parent_sigkilled(method, tmp_path):
    s, e = worker_ranges()[1]
    env = subprocess_env(**{fk.MARKER_ENV: str(tmp_path)})
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(PARENT_KILL_SCRIPT),
                             method, str((s + e) // 2)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            cwd=RUN_DIR)
    try:
        ready = json.loads(proc.stdout.readline())
        assert wait_until(lambda: started_pids(str(tmp_path)), timeout=20), "kernel never started"
        assert segments_of(ready["names"]) == ready["names"]
        tree = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        # Workers watch the parent's sentinel: they must go within seconds (not stay orphaned).
        assert wait_until(lambda: all_gone(ready["pids"]), timeout=5), "orphaned workers"
        assert wait_until(lambda: all_gone(tree), timeout=10), "orphaned helper processes"
        # The resource tracker, left alone once every worker is gone, unlinks the blocks.
        assert wait_until(lambda: not segments_of(ready["names"]), timeout=10), "leaked segments"
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # stderr may only hold the tracker's own notice that it reclaimed the blocks.
    noise = [ln for ln in err.splitlines()
             if ln.strip() and not TRACKER_LEAK.search(ln)
             and not ln.strip().startswith("warnings.warn(")]
    assert noise == [] and "Traceback" not in err, err


# == row 9: /dev/shm too small =====================================================================
SHM_FULL_SCRIPT = """
    import sharedcompute.segments as shared  # where blocks are created (and shm_space read)
    from sharedcompute._system import shm_space
    result = {"event": "result", "free": shm_space().free}
    with sc.Pool(2) as pool:
        for label in ("precheck", "fallocate"):
            saved = shared.shm_space
            if label == "fallocate":   # the pre-check passes (a race): posix_fallocate must catch it
                shared.shm_space = lambda: None
            try:
                pool.empty(4 << 20, np.uint8)
                result[label] = {"raised": None}
            except sc.SharedMemoryFullError as exc:
                result[label] = {"raised": type(exc).__name__, "msg": str(exc),
                                 "oserror": isinstance(exc, OSError),
                                 "memoryerror": isinstance(exc, MemoryError),
                                 "segments": my_segments()}
            finally:
                shared.shm_space = saved
        x = pool.array(np.arange(8192.0)); out = pool.zeros(8192)
        pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
        result["usable"] = bool(np.array_equal(np.asarray(out), 2 * np.arange(8192.0) + 1))
    result["after"] = my_segments()
    emit(**result)
"""


def _can_mount_private_tmpfs() -> bool:
    if not IS_ROOT or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.timeout(90)
def test_row9_shm_too_small():
    if _can_mount_private_tmpfs():
        # A real 1 MiB /dev/shm in a private mount namespace; the host's /dev/shm is untouched.
        code = PRELUDE + textwrap.dedent(SHM_FULL_SCRIPT)
        cmd = ["unshare", "-m", "sh", "-c",
               'mount -t tmpfs -o size=1m,mode=1777 tmpfs /dev/shm && exec "$0" -c "$1"',
               sys.executable, code]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              env=subprocess_env(), cwd=RUN_DIR)
        checks = ("precheck", "fallocate")
    else:
        # Fallback: RLIMIT_FSIZE makes posix_fallocate fail (EFBIG) past 1 MiB.
        code = ("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
                + PRELUDE + textwrap.dedent(SHM_FULL_SCRIPT))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=subprocess_env(), cwd=RUN_DIR)
        checks = ("fallocate",)
    assert_clean(proc)
    res = events(proc.stdout)["result"]
    for label in checks:
        r = res[label]
        assert r["raised"] == "SharedMemoryFullError", (label, r)
        assert r["oserror"] and r["memoryerror"]
        assert "4.0 MiB" in r["msg"] and "--shm-size" in r["msg"], r["msg"]
        if label == "precheck":   # it says how much is free: under 1 MiB in this tmpfs
            m = re.search(r"has ([\d.]+) (B|KiB|MiB) free", r["msg"])
            assert m, r["msg"]
            assert float(m.group(1)) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}[m.group(2)] \
                <= res["free"]
        assert r["segments"] == [], "a failed create left its segment behind"
    assert res["usable"] and res["after"] == []


# == row 10: a block truncated or unlinked by another process ======================================
@pytest.mark.timeout(30)
@pytest.mark.parametrize("tamper", ["truncate-output", "truncate-input", "unlink"])
def test_row10_tampered_block(pool, arrays, tamper):
    x, out = arrays
    pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)   # the workers have both blocks attached
    pids, restarts = list(pool.pids), pool.restarts
    target = x if tamper == "truncate-input" else out
    path = os.path.join(SHM, target.name)
    if tamper == "unlink":
        os.unlink(path)
        expected, pattern = sc.SharedBlockNotFoundError, "removed from /dev/shm by another process"
    else:
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, 4096)
        finally:
            os.close(fd)
        expected, pattern = sc.SharedBlockCorruptedError, "truncated by another process"
    with pytest.raises(expected, match=pattern) as info:
        pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
    assert isinstance(info.value, OSError) and target.name in str(info.value)
    # Refused in the parent before dispatch: no worker touched the damaged pages (no SIGBUS).
    assert pool.pids == pids and pool.restarts == restarts
    target.free()                                       # freeing a damaged block still works
    assert not os.path.exists(path)
    src = x if target is out else pool.array(np.arange(N, dtype=float))
    y = pool.zeros(N)
    pool.map(fk.fault_map, y, src, fk.NONE, -1, 0.0)
    np.testing.assert_array_equal(np.asarray(y), reference(np.arange(N, dtype=float)))
    y.free()
    src.free()


@pytest.mark.timeout(30)
def test_row10_truncated_mid_kernel(pool, arrays, markers):
    """Truncated while a worker is inside the kernel: the worker's SIGBUS is a crash error
    (degrades to row 2); the parent is not hurt and the pool restarts."""
    _, out = arrays
    s, e = worker_ranges()[1]
    pids = list(pool.pids)
    box: dict = {}

    def call():
        try:   # the victim sleeps 1 s, then writes its rows (now beyond the file's end)
            pool.map(fk.fault_fill, out, 3.0, fk.SLEEP, s, 1.0)
        except BaseException as exc:  # noqa: BLE001
            box["err"] = exc

    t = threading.Thread(target=call)
    t.start()
    assert wait_until(lambda: started_pids(markers), timeout=10)
    # the other workers have written their rows (on a busy machine they may still be at it,
    # and would take the SIGBUS instead); only the victim is inside the kernel now
    others = [r for k, r in enumerate(worker_ranges()) if k != 1]
    assert wait_until(lambda: all(bool(np.all(np.asarray(out)[a:b] == 3.0)) for a, b in others),
                      timeout=20)
    fd = os.open(os.path.join(SHM, out.name), os.O_RDWR)
    os.ftruncate(fd, 0)
    os.close(fd)
    t.join(20)
    assert not t.is_alive()
    err = box.get("err")
    assert isinstance(err, sc.WorkerCrashedError), repr(err)
    assert err.signal_name == "SIGBUS" and err.pid == pids[1] and err.rows == (s, e)
    with pytest.raises(sc.SharedBlockCorruptedError):
        pool.map(fk.fault_fill, out, 3.0, fk.NONE, -1, 0.0)
    out.free()


# == row 11: an unrelated process attaches and exits ===============================================
ATTACHER = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    from sharedcompute.shared import Block
    a = pickle.loads(sys.stdin.buffer.read())
    a[0] = 42.0                           # unpickled handle: writes land in the creator's block
    b = Block.attach(a.name, a.nbytes)    # and attaching by name
    assert b.root.view(np.float64)[0] == 42.0
    print(float(a[1:4].sum()))
""")
ATTACH_SCRIPT = """
    import pickle, subprocess
    method, ATTACHER = sys.argv[1], sys.argv[2]
    with sc.Pool(2, start_method=method) as pool:
        a = pool.array(np.arange(N, dtype=np.float64)); out = pool.zeros(N)
        pool.map(fk.fault_map, out, a, fk.NONE, -1, 0.0)       # workers attached too
        r = subprocess.run([sys.executable, "-c", ATTACHER], input=pickle.dumps(a),
                           capture_output=True)
        time.sleep(1.0)                       # give any tracker time to (wrongly) unlink
        exists = os.path.exists("/dev/shm/" + a.name)
        pool.map(fk.fault_map, out, a, fk.NONE, -1, 0.0)
        emit(event="result", rc=r.returncode, out=r.stdout.decode(), err=r.stderr.decode(),
             exists=exists, first=float(np.asarray(out)[0]), name=a.name)
        a.free(); out.free()
        emit(event="freed", exists=os.path.exists("/dev/shm/" + a.name))
    emit(event="closed", segments=my_segments())
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", METHODS)
def test_row11_foreign_attach_and_exit(method):
    proc = run_script(ATTACH_SCRIPT, method, ATTACHER)
    assert_clean(proc)  # no "leaked shared_memory" warning, no tracker KeyError traceback
    ev = events(proc.stdout)
    r = ev["result"]
    assert r["rc"] == 0 and r["err"] == "", r["err"]
    assert float(r["out"]) == 1.0 + 2.0 + 3.0
    assert r["exists"], "the block was unlinked when the attaching process exited"
    assert r["first"] == 2 * 42.0 + 1.0
    assert ev["freed"]["exists"] is False and ev["closed"]["segments"] == []
    assert segments_of([r["name"]]) == []


# == row 12: free with live views, use after free ==================================================
@pytest.mark.timeout(30)
def test_row12_free_with_views_and_use_after_free(pool):
    a = pool.array(np.arange(10.0))
    view = np.asarray(a)
    with pytest.raises(sc.ArrayInUseError, match="NumPy view"):
        a.free()
    assert not a.freed and view[3] == 3.0          # nothing was unmapped
    del view
    sub = a[2:5]                                   # a SharedArray view of the same block
    with pytest.raises(sc.ArrayInUseError, match="SharedArray view"):
        a.free()
    assert isinstance(sub, sc.SharedArray) and float(sub[0]) == 2.0
    del sub
    name = a.name
    a.free()
    assert a.freed and not os.path.exists(os.path.join(SHM, name))
    a.free()                                       # a second free is a no-op
    for use in (lambda: np.asarray(a), lambda: a.numpy(), lambda: a[0], lambda: a.sum(),
                lambda: a.handle(), lambda: pickle.dumps(a)):
        with pytest.raises(sc.ArrayFreedError):
            use()
    out = pool.zeros(10)
    with pytest.raises(sc.ArrayFreedError):
        pool.map(fk.fault_map, out, a, fk.NONE, -1, 0.0)
    with pytest.raises(sc.ArrayFreedError):
        pool.map(fk.fault_map, a, out, fk.NONE, -1, 0.0)
    out.free()


# == row 13: odd inputs ============================================================================
def _strided():
    return np.arange(2 * N, dtype=np.float64)[::2]


def _readonly():
    r = np.arange(N, dtype=np.float64)
    r.flags.writeable = False
    return r


LAYOUTS = {
    "non-contiguous": _strided,
    "fortran-2d": lambda: np.asfortranarray(np.arange(N, dtype=np.float64).reshape(N // 4, 4)),
    "big-endian": lambda: np.arange(N, dtype=">f8"),
    "read-only": _readonly,
    "transposed": lambda: np.arange(N, dtype=np.float64).reshape(4, N // 4).T,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_row13_any_layout_is_copied_to_c_order(pool, layout):
    src = LAYOUTS[layout]()
    a = pool.array(src)
    v = np.asarray(a)
    assert v.flags.c_contiguous and v.flags.writeable and v.dtype.isnative
    assert v.dtype == src.dtype.newbyteorder("=") and v.shape == src.shape
    np.testing.assert_array_equal(v, src)
    assert not np.shares_memory(v, src)
    del v
    if a.ndim == 1:
        out = pool.zeros(a.shape[0])
        pool.map(fk.fault_map, out, a, fk.NONE, -1, 0.0)
        np.testing.assert_array_equal(np.asarray(out), reference(src.astype(np.float64)))
        out.free()
    a.free()


BAD_DTYPES = {
    "object": lambda: np.array([object(), object()]),
    "structured": lambda: np.zeros(4, dtype=[("a", "f8"), ("b", "i4")]),
    "string": lambda: np.array(["ab", "cd"]),
    "datetime": lambda: np.array(["2020-01-01"], dtype="datetime64[D]"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(BAD_DTYPES))
def test_row13_unsupported_dtypes(pool, kind):
    before = own_segments()
    src = BAD_DTYPES[kind]()
    with pytest.raises(sc.UnsupportedDtypeError) as info:
        pool.array(src)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    for make in (pool.empty, pool.zeros):
        with pytest.raises(sc.UnsupportedDtypeError):
            make(4, src.dtype)
    assert own_segments() == before


@pytest.mark.timeout(30)
def test_row13_non_native_dtype_for_empty_and_zeros(pool):
    before = own_segments()
    for make in (pool.empty, pool.zeros):
        with pytest.raises(sc.UnsupportedDtypeError, match="byte order"):
            make(4, ">f8")
    assert own_segments() == before


@pytest.mark.timeout(30)
def test_row13_zero_size_creates_no_segment(pool):
    before = own_segments()
    a = pool.array(np.empty((0, 3)))
    b = pool.zeros(0)
    x = pool.array(np.empty(0))
    assert a.name is None and b.name is None and a.shape == (0, 3) and b.size == 0
    assert own_segments() == before
    pickle.loads(pickle.dumps(a))                  # the handle of an empty array works too
    res = pool.map(fk.fault_map, b, x, fk.NONE, -1, 0.0)
    assert res is b and np.asarray(res).shape == (0,)
    for arr in (a, b, x):
        arr.free()
    assert own_segments() == before


@pytest.mark.timeout(30)
def test_row13_read_only_output_refused(pool):
    """A direct kernel call passes NumPy arrays through: writing a read-only one is refused;
    the inline backend, like the pool, takes outputs in shared memory only."""
    ro = _readonly()
    with pytest.raises(sc.InputError, match="read-only"):
        fk.fault_map(ro, np.arange(N, dtype=float), fk.NONE, -1, 0.0)
    with sc.Pool(1, backend="inline") as inline:
        with pytest.raises(sc.InputError, match="plain NumPy array"):
            inline.map(fk.fault_map, ro, np.arange(N, dtype=float), fk.NONE, -1, 0.0)
    with pytest.raises(sc.InputError, match="plain NumPy array"):
        pool.map(fk.fault_map, ro, np.arange(N, dtype=float), fk.NONE, -1, 0.0)


# == row 14: two threads write the same array ======================================================
@pytest.mark.timeout(60)
def test_row14_same_pool_serializes(pool, markers):
    out = pool.zeros(N)
    (s0, _), (s1, _) = worker_ranges()
    results: dict = {}

    def call(tag, value, victim):
        try:   # the victim partition sleeps 0.5 s before writing; the other writes at once
            pool.map(fk.fault_fill, out, value, fk.SLEEP, victim, 0.5)
            results[tag] = time.monotonic()
        except BaseException as exc:  # noqa: BLE001
            results[tag] = exc

    ta = threading.Thread(target=call, args=("a", 1.0, s1))   # A: worker 1 writes late
    ta.start()
    assert wait_until(lambda: started_pids(markers), timeout=10)
    tb = threading.Thread(target=call, args=("b", 2.0, s0))   # B: worker 0 writes late
    tb.start()
    ta.join(20)
    tb.join(20)
    assert not ta.is_alive() and not tb.is_alive()
    ok = {k: v for k, v in results.items() if isinstance(v, float)}
    busy = [v for v in results.values() if isinstance(v, sc.BlockBusyError)]
    assert len(ok) + len(busy) == 2, results
    v = np.asarray(out)
    # Interleaved writes would leave worker 0's rows at 2.0 and worker 1's at 1.0.
    assert np.all(v == v[0]), f"interleaved writes: {np.unique(v)}"
    last = max(ok, key=ok.get)
    assert v[0] == {"a": 1.0, "b": 2.0}[last]
    del v
    out.free()


@pytest.mark.timeout(60)
def test_row14_two_pools_block_busy(pool, markers):
    other = _make_pool(pool.start_method, n_workers=1)
    out = pool.zeros(N)
    s1 = worker_ranges()[1][0]
    box: dict = {}

    def call():
        try:
            pool.map(fk.fault_fill, out, 1.0, fk.SLEEP, s1, 1.0)
        except BaseException as exc:  # noqa: BLE001
            box["err"] = exc

    try:
        t = threading.Thread(target=call)
        t.start()
        assert wait_until(lambda: started_pids(markers), timeout=10)
        with pytest.raises(sc.BlockBusyError, match="another call is writing"):
            other.map(fk.fault_fill, out, 2.0, fk.NONE, -1, 0.0)
        t.join(20)
        assert "err" not in box, box
        v = np.asarray(out)
        assert np.all(v == 1.0), "the refused call wrote something"
        del v
        other.map(fk.fault_fill, out, 2.0, fk.NONE, -1, 0.0)   # once free, it may write
        assert np.all(np.asarray(out) == 2.0)
    finally:
        other.close()
        out.free()


# == rows 15, 16: other users =====================================================================
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not found")


@needs_root
@pytest.mark.timeout(30)
@pytest.mark.parametrize("squat", ["world-writable", "other-owner"])
def test_row15_squatted_name_refused(squat, monkeypatch):
    name = make_block_name()
    assert creator_pid(name) == os.getpid()
    path = os.path.join(SHM, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 4096)
        os.write(fd, b"EVIL")
        if squat == "world-writable":
            os.fchmod(fd, 0o666)
        else:
            os.fchown(fd, 65534, 65534)
        with pytest.raises(sc.SharedBlockSecurityError) as info:
            Block.attach(name, 4096)
        assert isinstance(info.value, PermissionError) and name in str(info.value)
        # Creating never reuses a squatted name (O_EXCL): it picks another one.
        names = iter([name, make_block_name()])
        used = []
        monkeypatch.setattr(sc.segments, "make_block_name",
                            lambda: used.append(1) or next(names))
        a = sc.SharedArray.empty(16)
        assert len(used) == 2  # the squatted name was tried first, then another
        assert a.name != name and np.asarray(a)[:1].tobytes() != b"EVIL"
        assert stat.S_IMODE(os.stat(os.path.join(SHM, a.name)).st_mode) == 0o600
        a.free()
        with open(path, "rb") as f:
            assert f.read(4) == b"EVIL"       # the squatter's file was left alone
    finally:
        os.close(fd)
        os.unlink(path)


@needs_root
@needs_setpriv
@pytest.mark.timeout(30)
def _readable_copy_for_other_user(tmp: str) -> str:
    """A world-readable folder holding what the other-uid probe imports (numpy and the five
    modules Block needs): a clone under a private directory (mktemp -d, mode 0700) is not
    readable by that user, and its .venv with it."""
    os.chmod(tmp, 0o755)
    site = os.path.join(tmp, "site")
    pkg = os.path.join(site, "sharedcompute")
    os.makedirs(pkg)
    for mod in ("shared.py", "files.py", "segments.py", "errors.py", "_system.py",
                "_views.py"):  # what shared.py imports, directly or not
        shutil.copy(os.path.join(os.path.dirname(sc.__file__), mod), pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    np_dir = os.path.dirname(np.__file__)
    shutil.copytree(np_dir, os.path.join(site, "numpy"),
                    ignore=shutil.ignore_patterns("tests", "__pycache__"))
    libs = np_dir + ".libs"
    if os.path.isdir(libs):
        shutil.copytree(libs, os.path.join(site, "numpy.libs"))
    for root, dirs, files in os.walk(tmp):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644 | (os.stat(os.path.join(root, f)).st_mode & 0o111))
    return site


def _interpreter_for_other_user(site: str) -> str | None:
    """The first of this Python's paths that uid 65534 can run and import numpy with."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for exe in dict.fromkeys([sys.executable, os.path.realpath(sys.executable),
                              getattr(sys, "_base_executable", sys.executable),
                              f"/usr/bin/python{want}"]):
        try:
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                exe, "-I", "-c", f"import sys; sys.path.insert(0, {site!r}); "
                                "import numpy; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60, cwd="/")
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0 and r.stdout.strip() == want:
            return exe
    return None


@pytest.fixture
def other_user_site():
    # not under pytest's basetemp: /tmp/pytest-of-root is 0700, so the other user could not
    # reach it; a fresh folder right under /tmp (1777) is
    top = tempfile.mkdtemp(prefix="sc-otheruser-")
    try:
        yield _readable_copy_for_other_user(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_row16_other_user_cannot_open(other_user_site):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a probe as another user")
    site = other_user_site
    exe = _interpreter_for_other_user(site)
    if exe is None:
        pytest.skip(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that uid 65534 can "
                    f"run (tried {sys.executable} and its real paths)")
    a = sc.SharedArray.from_array(np.arange(512.0))
    try:
        path = os.path.join(SHM, a.name)
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        probe = textwrap.dedent(f"""
            import os, sys
            for flags in (os.O_RDONLY, os.O_RDWR):
                try:
                    os.close(os.open({path!r}, flags))
                    print("OPENED"); sys.exit(1)
                except PermissionError:
                    print("denied")
            sys.path.insert(0, {site!r})
            from sharedcompute.shared import Block
            try:
                Block.attach({a.name!r}, {a.nbytes})
                print("ATTACHED"); sys.exit(1)
            except PermissionError as exc:
                print("denied", type(exc).__name__)
        """)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            exe, "-I", "-c", probe],
                           capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.split("\n")[:2] == ["denied", "denied"], r.stdout
        assert "denied" in r.stdout.split("\n")[2]
        assert np.asarray(a)[511] == 511.0
    finally:
        a.free()


# == row 17: fork after numba's parallel threads ran ===============================================
@pytest.mark.timeout(90)
def test_row17_fork_refused_after_numba_threads():
    if "fork" not in METHODS:
        pytest.skip("no fork start method here")
    proc = run_script("""
        import numba
        @numba.njit(parallel=True)
        def psum(v):
            t = 0.0
            for i in numba.prange(v.shape[0]):
                t += v[i]
            return t
        assert psum(np.ones(10000)) == 10000.0      # numba's thread pool is now running
        try:
            sc.Pool(2, start_method="fork")
            emit(event="result", refused=False)
        except sc.InputError as exc:
            emit(event="result", refused=True, msg=str(exc), type=type(exc).__name__)
        with sc.Pool(2, start_method="spawn") as pool:     # the suggested alternative works
            x = pool.array(np.arange(N, dtype=float)); out = pool.zeros(N)
            pool.map(fk.fault_map, out, x, fk.NONE, -1, 0.0)
            emit(event="spawn", ok=bool(np.array_equal(np.asarray(out), 2 * np.arange(N) + 1.0)))
    """)
    assert_clean(proc)
    ev = events(proc.stdout)
    assert ev["result"]["refused"], "fork pool was allowed after numba threads ran"
    assert ev["result"]["type"] == "InputError" and "forkserver" in ev["result"]["msg"]
    assert ev["spawn"]["ok"]


# == rows 18, 19: numba's cache ====================================================================
CACHE_PROBE = """
    from sharedcompute.kernels import elementwise, reductions
    x = np.arange(1000.0)
    a = np.zeros(1000)
    elementwise.triad(a, x, x, 2.0)
    total = reductions.total(x)
    fk.fault_map(a, x, fk.NONE, -1, 0.0)
    emit(event="result", triad=bool(np.array_equal(a, 2 * x + 1)), total=float(total),
         pid=os.getpid())
"""


@pytest.mark.timeout(120)
def test_row18_concurrent_cold_compiles(tmp_path):
    """Several cold processes compile (and cache) the same kernels at once, twice."""
    cache = tmp_path / "numba-cache"
    env = subprocess_env(NUMBA_CACHE_DIR=str(cache))
    code = PRELUDE + textwrap.dedent(CACHE_PROBE)
    for round_ in ("cold", "warm"):
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=RUN_DIR)
                 for _ in range(3)]
        for p in procs:
            out, err = p.communicate(timeout=100)
            assert p.returncode == 0 and err == "", f"{round_}: rc={p.returncode}\n{err}"
            r = events(out)["result"]
            assert r["triad"] and r["total"] == 499500.0, (round_, r)
        if round_ == "cold":
            index_files = list(cache.rglob("*.nbi"))
            assert index_files, "nothing was cached in NUMBA_CACHE_DIR"


RO_CACHE_SCRIPT = """
    import warnings, importlib
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.path.insert(0, sys.argv[1])
        mod = importlib.import_module("rokernels")
        x = np.arange(100.0); a = np.zeros(100)
        mod.double(a, x); ok1 = bool(np.array_equal(a, 2 * x))
        mod.triple(a, x); ok2 = bool(np.array_equal(a, 3 * x))
    msgs = [str(w.message) for w in caught if "numba cache unavailable" in str(w.message)]
    emit(event="result", warnings=msgs, ok=ok1 and ok2)
"""
RO_KERNELS = '''
import sharedcompute as sc


@sc.kernel
def double(y, x):
    for i in range(y.shape[0]):
        y[i] = 2.0 * x[i]


@sc.kernel
def triple(y, x):
    for i in range(y.shape[0]):
        y[i] = 3.0 * x[i]
'''


def _files_under(path) -> list[str]:
    return sorted(str(p) for p in path.rglob("*") if p.is_file())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what", ["cache-dir-only", "every-location", "missing-dir"])
def test_row19_unwritable_numba_cache(what, tmp_path):
    """Real behaviour: numba skips an unwritable NUMBA_CACHE_DIR *silently* and caches next to
    the source (__pycache__) or in ~/.cache; only when no location is writable does the engine
    warn (once) and compile without a cache. A missing NUMBA_CACHE_DIR is created."""
    if what != "missing-dir" and not _can_mount_private_tmpfs():
        pytest.skip("needs root and unshare -m to make directories read-only for root")
    src = tmp_path / "src"
    src.mkdir()
    (src / "rokernels.py").write_text(RO_KERNELS)
    cache, home = tmp_path / "cache", tmp_path / "home"
    cache.mkdir()
    home.mkdir()
    code = PRELUDE + textwrap.dedent(RO_CACHE_SCRIPT)
    env = subprocess_env(NUMBA_CACHE_DIR=str(cache), HOME=str(home),
                         XDG_CACHE_HOME=str(home / ".cache"))
    if what == "missing-dir":
        shutil.rmtree(cache)
        cmd = [sys.executable, "-c", code, str(src)]
    else:
        mounts = f"mount -o bind,ro {cache} {cache}"
        if what == "every-location":
            mounts += f" && mount -o bind,ro {src} {src} && mount -o bind,ro {home} {home}"
        cmd = ["unshare", "-m", "sh", "-c", mounts + ' && exec "$0" -c "$1" "$2"',
               sys.executable, code, str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100, env=env,
                          cwd=RUN_DIR)
    assert_clean(proc)
    r = events(proc.stdout)["result"]
    assert r["ok"], "kernels computed wrong results"
    if what == "cache-dir-only":
        assert r["warnings"] == []                       # numba's silent fallback
        assert _files_under(cache) == []
        assert any(f.endswith(".nbi") for f in _files_under(src / "__pycache__"))
    elif what == "every-location":
        assert len(r["warnings"]) == 1, r["warnings"]    # once, although two kernels
        assert _files_under(cache) == [] and not (src / "__pycache__").exists()
        assert _files_under(home) == []
    else:
        assert r["warnings"] == []
        assert any(f.endswith(".nbi") for f in _files_under(cache))


# == rows 21-32: issue 17, reliability round two ===================================================
# Each item of issue 17 and the test that shows it (file::function). Tests here run under every
# start method where the start method matters; test_issue17_catalogue checks that every row
# names a test that exists, so a renamed or dropped test cannot leave a row unbacked.
ISSUE17 = [
    ("21", 1, "dropped arrays stay mapped in every worker",
     "test_faults.py::test_row21_dropped_arrays_unmapped_in_workers"),
    ("22", 2, "consumer processes keep freed blocks",
     "test_faults.py::test_row22_consumer_releases_blocks"),
    ("22", 2, "close() and with in the creator",
     "test_faults.py::test_row22_close_in_the_creator"),
    ("23", 3, "a forked child breaks its parent's pool",
     "test_limits.py::test_a_forked_child_leaves_its_parents_pool_alone"),
    ("24", 4, "cleanup --yes deletes files that are not the library's",
     "test_cli.py::test_cleanup_never_touches_what_is_not_ours"),
    ("24", 4, "cleanup removes dead creators' segments only",
     "test_cli.py::test_cleanup_removes_segments_of_dead_creators_only"),
    ("25", 5, "shape products overflow",
     "test_limits.py::test_shape_products_do_not_overflow"),
    ("25", 5, "an empty array with many rows",
     "test_limits.py::test_an_empty_array_with_many_rows_is_split_in_few_chunks"),
    ("26", 6, "two file descriptors per array",
     "test_faults.py::test_row26_no_descriptor_per_array"),
    ("26", 6, "out of descriptors: the message's ulimit -n works",
     "test_faults.py::test_row26_fd_limit_message_and_its_fix"),
    ("27", 7, "bad timeouts", "test_limits.py::test_bad_timeouts_are_refused_before_work"),
    ("27", 7, "memoryview arguments",
     "test_limits.py::test_memoryview_argument_is_refused_and_frombuffer_works"),
    ("27", 7, "bad shapes", "test_limits.py::test_bad_shapes_are_input_errors"),
    ("27", 7, "n_workers and fd limits",
     "test_limits.py::test_n_workers_is_capped_and_fd_limits_are_checked"),
    ("27", 7, "bad SHAREDCOMPUTE_SPIN_US",
     "test_limits.py::test_bad_spin_environment_warns_and_falls_back"),
    ("27", 7, "verify without a reference",
     "test_limits.py::test_verify_without_a_reference_is_an_input_error"),
    ("28", 8, "free() during a running call",
     "test_limits.py::test_free_during_a_running_call_is_refused"),
    ("29", 9, "a hung call blocks close() from another thread",
     "test_limits.py::test_close_from_another_thread_interrupts_a_running_call"),
    ("30", 10, "the cause of a worker's import failure is hidden",
     "test_limits.py::test_a_kernel_module_failing_to_import_in_workers_says_why"),
    ("31", 11, "the CLI crashes on bad input",
     "test_cli.py::test_bad_arguments_are_argparse_errors_before_any_work"),
    ("32", 12, "numba.set_num_threads at import of the main module",
     "test_faults.py::test_row32_main_module_sets_numba_threads"),
]


def test_issue17_catalogue():
    """Every item of issue 17 has a row, and every row names a test that exists."""
    import importlib
    assert sorted({item for _, item, _, _ in ISSUE17}) == list(range(1, 13))
    for row, item, what, ref in ISSUE17:
        module, func = ref.split("::")
        mod = importlib.import_module(module[:-3])
        assert callable(getattr(mod, func, None)), f"row {row} (item {item}: {what}): no {ref}"


@pytest.mark.timeout(60)
def test_row21_dropped_arrays_unmapped_in_workers(pool):
    """Item 1 under each start method: arrays dropped with del (no free()) are unmapped in the
    workers at the next call (they kept every dropped block mapped until close())."""
    import gc
    keep, one = pool.zeros(1000), pool.array(np.ones(1000))
    for _ in range(8):
        a, b = pool.zeros(300_000), pool.array(np.ones(300_000))  # 2.4 MB each
        pool.map(fk.fault_map, a, b, fk.NONE, -1, 0.0)
        del a, b
        gc.collect()
    pool.map(fk.fault_map, keep, one, fk.NONE, -1, 0.0)  # carries the forget message
    for pid in pool.pids:
        # blocks still alive in the parent (another test's arrays on this shared pool, the
        # backend's iterate scratch) are not dropped ones: count the unlinked blocks only
        held = {n for n in fk.mapped_blocks(pid) - {keep.name, one.name}
                if not os.path.exists(f"/dev/shm/{n}")}
        assert len(held) <= 2, f"worker {pid} still maps {len(held)} dropped blocks"
    keep.free(), one.free()


def _consumer_context(method: str):
    if method == "fork" and sc.pool._numba_threads_started():
        pytest.skip("numba's OpenMP threads ran in this process: no fork children here")
    return mp.get_context(method)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["close", "with", "drop"])
@pytest.mark.parametrize("method", METHODS)
def test_row22_consumer_releases_blocks(method, how):
    """Item 2: a long-lived process that unpickles handles unmaps each block when it closes
    the array (close(), a with block) or drops it; closing does not destroy the array for
    the creator; after the creator frees it, nothing of it is mapped anywhere (the consumer
    used to keep every block it ever attached: 30 blocks, 481 MiB)."""
    ctx = _consumer_context(method)
    here, there = ctx.Pipe()
    proc = ctx.Process(target=fk.consumer, args=(there, how), daemon=True)
    proc.start()
    there.close()
    try:
        names = []
        for k in range(6):
            a = sc.SharedArray.from_array(np.full(200_000, float(k)))  # 1.6 MB
            names.append(a.name)
            here.send(a)
            total, mapped, refused = here.recv()
            assert total == 200_000.0 * k
            assert a.name not in mapped, f"{how}: the consumer still maps {a.name}"
            assert refused is (None if how == "drop" else True)
            assert float(a.sum()) == 200_000.0 * k   # closing there did not free it here
            a.free()
        assert not set(names) & fk.mapped_blocks(proc.pid)
        here.send(None)
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        here.close()
    assert segments_of(names) == []


@pytest.mark.timeout(30)
def test_row22_close_in_the_creator(pool):
    """close() in the creator: the last SharedArray of a block frees it (only the creator can
    unlink it; closing without unlinking would leak it), an earlier one only lets go; NumPy
    views keep their pages until they go; with frees what this process created."""
    a = pool.array(np.arange(10.0))
    sub, name = a[2:5], a.name
    a.close()
    with pytest.raises(sc.ArrayFreedError, match="closed in this process"):
        np.asarray(a)
    with pytest.raises(sc.ArrayFreedError):
        pool.map(fk.fault_map, pool.zeros(10), a, fk.NONE, -1, 0.0)
    assert float(sub.sum()) == 9.0 and os.path.exists(os.path.join(SHM, name))
    view = np.asarray(sub)
    sub.close()                                   # the last one: unlinked now
    assert not os.path.exists(os.path.join(SHM, name))
    assert view.tolist() == [2.0, 3.0, 4.0]       # a live view keeps its pages: no segfault
    a.close(), sub.close()                        # closing twice is a no-op
    with pool.zeros(4) as b:
        name = b.name
        pool.map(fk.fault_fill, b, 1.0, fk.NONE, -1, 0.0)
    assert b.freed and not os.path.exists(os.path.join(SHM, name))


FD_SCRIPT = """
    import resource
    from sharedcompute.shared import SharedArray
    method = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    def fds(pid="self"):
        return len(os.listdir(f"/proc/{pid}/fd"))
    with sc.Pool(2, start_method=method) as pool:
        x = pool.zeros(10); pool.map(fk.fault_fill, x, 1.0, fk.NONE, -1, 0.0)
        before = {p: fds(p) for p in ["self", *pool.pids]}
        arrays = []
        for k in range(600):                      # 600 live arrays, each used by the workers
            a = pool.zeros(1000)
            pool.map(fk.fault_fill, a, float(k), fk.NONE, -1, 0.0)
            arrays.append(a)
        after = {p: fds(p) for p in ["self", *pool.pids]}
        ok = all(float(a[999]) == k for k, a in enumerate(arrays))
        emit(event="result", before=before, after=after, ok=ok, n=len(arrays))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_row26_no_descriptor_per_array(method):
    """Item 6: no array keeps a file descriptor, in the parent or in a worker, so 600 live
    arrays fit under a 256-descriptor limit (array 124 failed with a bare EMFILE)."""
    if method == "fork" and sc.pool._numba_threads_started():
        pytest.skip("numba's OpenMP threads ran in this process")  # not inherited: a subprocess
    proc = run_script(FD_SCRIPT, method, timeout=110)
    assert_clean(proc)
    r = events(proc.stdout)["result"]
    assert r["ok"] and r["n"] == 600
    for p, n in r["after"].items():
        assert n - r["before"][p] <= 4, f"process {p}: {r['before'][p]} -> {n} descriptors"


FD_FILES_SCRIPT = """
    import re, resource
    from sharedcompute.shared import SharedArray
    folder, limit = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    for k in range(300):
        np.save(os.path.join(folder, f"f{k}.npy"), np.full(16, float(k)))
    opened, err = [], None
    try:
        for k in range(300):      # a file keeps one descriptor, in the process that opened it
            opened.append(SharedArray.open(os.path.join(folder, f"f{k}.npy")))
    except sc.SharedComputeError as exc:
        err = exc
    held = []
    if err is not None:
        try:
            while True:                           # use up what is left: a shm array then
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            SharedArray.zeros(10)
            shm_err = None
        except sc.SharedComputeError as exc:
            shm_err = exc
        for fd in held:
            os.close(fd)
    else:
        shm_err = None
    emit(event="result", opened=len(opened), ok=all(float(a[0]) == k for k, a in enumerate(opened)),
         err=None if err is None else [type(err).__name__, isinstance(err, OSError), str(err)],
         shm_err=None if shm_err is None else [type(shm_err).__name__, str(shm_err)])
    for a in opened:
        a.free()
"""


@pytest.mark.timeout(120)
def test_row26_fd_limit_message_and_its_fix(tmp_path):
    """Item 6, out of descriptors: opening more .npy files than the limit allows (one fd per
    opened file) and creating a shared array with no descriptor left both raise
    SharedMemoryError naming RLIMIT_NOFILE and `ulimit -n N`; run again after that
    `ulimit -n N`, the same script opens every file."""
    first = tmp_path / "first"
    first.mkdir()
    proc = run_script(FD_FILES_SCRIPT, str(first), "256")
    assert_clean(proc)
    r = events(proc.stdout)["result"]
    assert 200 < r["opened"] < 256 and r["ok"], r
    kind, is_oserror, msg = r["err"]
    assert kind == "SharedMemoryError" and is_oserror
    assert "RLIMIT_NOFILE, is 256" in msg and "ulimit -n" in msg, msg
    kind, shm_msg = r["shm_err"]
    assert kind == "SharedMemoryError" and "ulimit -n" in shm_msg, shm_msg
    want = re.search(r"ulimit -n (\d+)", msg).group(1)
    second = tmp_path / "second"
    second.mkdir()
    proc = run_script(FD_FILES_SCRIPT, str(second), "0",
                      argv0=["sh", "-c", f'ulimit -n {want} && exec "$@"', "sh"])
    assert_clean(proc)
    r = events(proc.stdout)["result"]
    assert r["opened"] == 300 and r["ok"] and r["err"] is None, r


THREADS_MAIN = """
import sys
import numba
import numpy as np
from threadpoolctl import threadpool_limits
numba.set_num_threads(2)                 # at import: spawn/forkserver workers run this too
threadpool_limits(2)
import sharedcompute as sc


def _blas_threads():
    from threadpoolctl import threadpool_info
    return max([i["num_threads"] for i in threadpool_info()] or [1])


@sc.kernel
def probe(out):
    with numba.objmode(blas="int64"):
        blas = _blas_threads()
    n = numba.get_num_threads()
    for i in range(out.shape[0]):
        out[i, 0] = n
        out[i, 1] = blas


@numba.njit(parallel=True)
def psum(v):
    t = 0.0
    for i in numba.prange(v.shape[0]):
        t += v[i]
    return t


if __name__ == "__main__":
    print("PARENT", psum(np.ones(1000)), numba.get_num_threads(), flush=True)
    try:
        with sc.Pool(2, start_method=sys.argv[1]) as pool:
            out = pool.zeros((2, 2), np.int64)
            pool.map(probe, out)
            print("WORKERS", np.asarray(out).tolist(), flush=True)
    except sc.SharedComputeError as exc:
        print("ERROR", type(exc).__name__, exc, flush=True)
    print("PARENT", psum(np.ones(1000)), numba.get_num_threads(), flush=True)
"""


@pytest.mark.timeout(150)
@pytest.mark.parametrize("method", METHODS)
def test_row32_main_module_sets_numba_threads(method, tmp_path):
    """Item 12: a main module that calls numba.set_num_threads(2) (and threadpool_limits(2))
    at import, as a script with prange code does: spawn/forkserver workers re-import it and
    every fresh kernel failed to compile ("Cannot set NUMBA_NUM_THREADS to a different value
    once the threads have been launched"). Now the workers compile, run on one numba and one
    BLAS thread, and the parent's own prange code keeps its two threads. A fork pool is
    refused (row 17): the parent's numba threads are running."""
    script = tmp_path / "threads_main.py"
    script.write_text(THREADS_MAIN)
    env = subprocess_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))  # cold: the compile happens
    from sharedcompute._system import THREAD_VARS
    for var in THREAD_VARS:  # a user's shell has none: an earlier test may have set them here
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(script), method], capture_output=True,
                          text=True, timeout=140, env=env, cwd=str(tmp_path))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.count("PARENT 1000.0 2") == 2, out + proc.stderr
    if method == "fork":
        assert "ERROR InputError start_method='fork' is unsafe here" in out, out
        return
    assert "ERROR" not in out, out + proc.stderr
    assert "WORKERS [[1, 1], [1, 1]]" in out, out


def test_a_refused_write_claim_leaves_no_claim_behind():
    """claim_writes claims block by block; refused on the second, it takes back the first, so
    the call that held the second block and any later call can still write both."""
    from sharedcompute.local import _busy_writes, claim_writes, release_writes
    held = ["sc-test-block-b"]
    claim_writes(held, "holder")
    try:
        with pytest.raises(sc.BlockBusyError, match="'sc-test-block-b', which another call"):
            claim_writes(["sc-test-block-a", "sc-test-block-b"], "late")
        assert "sc-test-block-a" not in _busy_writes
        assert "sc-test-block-b" in _busy_writes  # still the holder's
    finally:
        release_writes(held)
    claim_writes(["sc-test-block-a", "sc-test-block-b"], "later")  # both free again
    release_writes(["sc-test-block-a", "sc-test-block-b"])
    assert not {"sc-test-block-a", "sc-test-block-b"} & set(_busy_writes)
