"""Suite-wide fixtures: start methods, shared pools, a /dev/shm leak check, a hang watchdog."""
from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import sys
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


def pytest_configure(config):
    faulthandler.dump_traceback_later(600, repeat=True, exit=False)  # a hang prints stacks


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
