"""Suite-wide fixtures: start methods, shared pools, a /dev/shm leak check, a hang watchdog."""
from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, settings

# Worker processes (spawn/forkserver) import test kernels from this folder by name.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import sharedcompute as sc  # noqa: E402
from sharedcompute.shared import creator_pid, list_segments  # noqa: E402

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile("ci")

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


# -- a fatal signal in the pytest process names its stacks ------------------------------------
#: where the tracebacks of a fatal signal (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL) in the
#: pytest process are written besides stderr; `make test` prints the file if pytest dies
FATAL_LOG_ENV = "SHAREDCOMPUTE_TEST_FATAL_LOG"

# The tee: reads faulthandler's pipe until every writer is gone, copying each chunk to
# stderr and (created on the first byte only) to the log. A process of its own, so it
# outlives the crash it reports; Ctrl-C is the suite's to handle, not its.
_TEE = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
log = None
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    if log is None:
        log = open(sys.argv[1], "ab", buffering=0)
    log.write(chunk)
    view = memoryview(chunk)
    while view:
        view = view[os.write(2, view):]
"""


class FatalDumps:
    """faulthandler in the pytest process, with all threads' tracebacks going to stderr and
    to a file (faulthandler writes one fd: a pipe to _TEE). Forked workers write theirs to
    stderr only, as before, and hold no copy of the pipe (the tee ends with this process).

    check() says what undid it since the last call, and re-arms it: faulthandler disabled
    (tests/faultkernels.py's _quiet_crash does that wherever it runs), another SIGSEGV
    handler installed, or the pipe's fd closed (or reused) by someone else's os.close."""

    def __init__(self, path: str, stderr_fd: int):
        # our own copy of the real stderr: fd 2 is a capture file while a test runs
        self.path, self.stderr_fd, self.fd = path, os.dup(stderr_fd), None
        self._start()
        os.register_at_fork(after_in_child=self._in_child)

    def _start(self):
        r, w = os.pipe()
        self.tee = subprocess.Popen([sys.executable, "-c", _TEE, self.path], stdin=r,
                                    stdout=subprocess.DEVNULL, stderr=self.stderr_fd,
                                    start_new_session=True)
        os.close(r)
        self.fd, self.ino = w, os.fstat(w).st_ino
        faulthandler.enable(file=self.fd, all_threads=True)
        self.handler = _segv_handler()

    def _ours(self) -> bool:
        """Whether self.fd is still our pipe (not closed, nor reused for another file)."""
        try:
            return self.fd is not None and os.fstat(self.fd).st_ino == self.ino
        except OSError:
            return False

    def _in_child(self):
        if self._ours():
            os.close(self.fd)
        self.fd = None
        if faulthandler.is_enabled():
            faulthandler.enable(file=self.stderr_fd, all_threads=True)

    def check(self) -> str | None:
        if self.fd is None:  # a forked child, or closed
            return None
        problem = None
        if not self._ours():
            problem = f"faulthandler's pipe (fd {self.fd}) was closed or replaced"
        elif not faulthandler.is_enabled():
            problem = "faulthandler was disabled"
        elif _segv_handler() != self.handler:
            problem = "another SIGSEGV handler replaced faulthandler's"
        if problem is not None:
            if self._ours():
                os.close(self.fd)  # the old tee sees its end and leaves
            self._start()
        return problem

    def close(self):
        if self._ours():  # pytest's own unconfigure has moved faulthandler off it
            os.close(self.fd)
        self.fd = None
        os.close(self.stderr_fd)
        try:
            self.tee.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a process forked outside os.fork holds it
            pass


_libc: list = []


def _segv_handler() -> int | None:
    """The address of the process's SIGSEGV handler (sigaction), None where unknown."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal
    if not _libc:
        _libc.append(ctypes.CDLL(None))
    act = ctypes.create_string_buffer(256)  # struct sigaction: the handler comes first
    if _libc[0].sigaction(int(signal.SIGSEGV), None, act) != 0:
        return None
    return int.from_bytes(act.raw[:ctypes.sizeof(ctypes.c_void_p)], sys.byteorder)


_fatal: FatalDumps | None = None


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin, which sets stderr
def pytest_configure(config):
    global _fatal
    path = os.environ.get(FATAL_LOG_ENV) or os.path.join(
        tempfile.gettempdir(), f"sharedcompute-tests-{os.getpid()}-fatal.log")
    stderr_fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    _fatal = FatalDumps(os.path.abspath(path), stderr_fd)
    faulthandler.dump_traceback_later(600, repeat=True, exit=False)  # a hang prints stacks


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin disabled it
def pytest_unconfigure(config):
    if _fatal is not None:
        _fatal.close()


def pytest_report_header(config):
    if _fatal is not None:
        return [f"fatal signals: all threads' tracebacks to stderr and {_fatal.path}"]


@pytest.fixture(autouse=True)
def fatal_signals_still_dump():
    """A test that undoes the dump on a fatal signal (see FatalDumps.check) fails, and the
    dump is re-armed for the tests after it: a crash later in the run still names its
    stack. Checked before the test too, for what a previous test's teardown undid."""
    before = _fatal.check() if _fatal is not None else None
    yield
    after = _fatal.check() if _fatal is not None else None
    problem = after or before
    assert problem is None, (f"{problem} {'before' if before else 'during'} this test "
                             "(re-armed); a later crash would have printed no traceback")


def wait_no_segments(before: set, deadline_s: float = 10.0, creator: int | None = None) -> list:
    """Our segments created since ``before`` (by ``creator`` if given), polled until the
    resource tracker had time to clean up after killed processes."""
    end = time.monotonic() + deadline_s
    while True:
        extra = sorted(n for n in set(list_segments()) - before
                       if creator is None or creator_pid(n) == creator)
        if not extra or time.monotonic() > end:
            return extra
        time.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def no_segments_left_after_suite():
    """Fail the run if any segment this package created is still in /dev/shm at the end."""
    before = set(list_segments())
    yield
    for pool in list(sc.pool._live_pools):
        pool.close()
    import gc
    gc.collect()
    left = wait_no_segments(before, creator=os.getpid())
    assert not left, f"shared-memory segments leaked by the test suite: {left}"


@pytest.fixture(autouse=True)
def numba_threads_stay_unlaunched():
    """A test that launches numba's threading layer in the pytest process (prange, or
    numba.set_num_threads) makes every later fork test skip, since the engine refuses fork
    after OpenMP: fail that test instead, so the skips cannot creep back."""
    before = sc.pool._numba_threads_started()
    yield
    if not before:
        assert not sc.pool._numba_threads_started(), (
            "this test launched numba's threads in the test process; run its prange code in a "
            "subprocess (or monkeypatch numba.set_num_threads)")


def kept_by_open_pools() -> set:
    """Blocks an open pool keeps for its own use until it closes, as it keeps its workers:
    iterate's residual slots (kept so that an iterate frees nothing, which would make every
    pool drop its cached calls). A test that first iterates on a shared pool makes them;
    closing the pool frees them, which the session's check below still demands."""
    names = set()
    for pool in list(sc.pool._live_pools):
        for kept in ("scratch", "snapshots"):  # the latter: sc.snapshot's slots in programs
            scratch = getattr(pool._backend, kept, None)
            if scratch is not None and scratch.name is not None:
                names.add(scratch.name)
    return names


@pytest.fixture(autouse=True)
def no_segment_leaked_by_this_test():
    """Every test leaves /dev/shm as it found it (polled: the tracker cleans up async), but
    for the blocks open pools keep (kept_by_open_pools)."""
    before = set(list_segments())
    yield
    before |= kept_by_open_pools()
    if not wait_no_segments(before, deadline_s=0.0, creator=os.getpid()):
        return  # nothing left: no full collection (at ~1 s each on this heap, 1,000 of them
    import gc   # were most of the suite's time)
    gc.collect()  # arrays held only by reference cycles are freed by a collection
    left = wait_no_segments(before, deadline_s=5.0, creator=os.getpid())
    assert not left, f"this test left shared-memory segments behind: {left}"


@pytest.fixture(params=START_METHODS)
def start_method(request):
    return request.param


_pools: dict = {}


def shared_pool(n_workers: int, start_method: str) -> sc.Pool:
    """A pool kept for the whole session (starting pools is the slow part on 2 cores)."""
    key = (n_workers, start_method)
    pool = _pools.get(key)
    if pool is None or pool.closed:
        pool = _pools[key] = sc.Pool(n_workers, start_method=start_method)
    return pool


@pytest.fixture(scope="session", autouse=True)
def _close_shared_pools():
    yield
    for pool in _pools.values():
        pool.close()
