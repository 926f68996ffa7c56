"""Kernels with injectable faults, for tests/test_faults.py and benchmarks/soak.py.

They live at module level in an importable module so that workers started by fork, spawn
and forkserver all find them by name. A fault is chosen per call by two plain arguments:
``action`` (one of the constants below) and ``victim`` (a global row index). Only the
partition whose rows contain ``victim`` misbehaves; every other partition computes
``out = 2 * x + 1`` as usual, so a test can check exactly which rows were written.

Faults that need the Python runtime (signals, files, rlimits) run in a numba ``objmode``
block; SIGSEGV and the hang are genuinely native (an out-of-bounds store, a nopython spin
loop that never returns to the interpreter and so never sees a signal handler).
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
import warnings

import numba
import numpy as np
from numba.experimental import jitclass

import sharedcompute as sc

# objmode blocks inside nogil kernels make numba warn at compile time; that is expected here,
# and subprocess tests assert an empty stderr.
warnings.filterwarnings("ignore", message="Code running in object mode won't allow parallel")

NONE = 0
SIGKILL = 1      # os.kill(getpid(), SIGKILL): what the OOM killer does
SIGSEGV = 2      # a native out-of-bounds store far outside any mapping
SIGABRT = 3      # os.abort(): C abort() inside the process
RAISE = 4        # ValueError from nopython code
HANG = 5         # a nopython loop that never returns
SLEEP = 6        # sleep ``param`` seconds (in objmode), then compute normally
NOMEM = 7        # RLIMIT_AS lowered, then a large np.empty inside the kernel -> MemoryError
BAD_EXC = 8      # an exception whose class cannot be unpickled (custom __init__)
UNPICKLABLE = 9  # an exception that cannot be pickled at all (holds a lock)
EXIT0 = 10       # os._exit(0): the worker leaves quietly, without a reply
SLOW_EXC = 11    # an exception whose str() takes 0.5 s (its error report leaves late)

ACTION_NAMES = {NONE: "none", SIGKILL: "sigkill", SIGSEGV: "sigsegv", SIGABRT: "sigabrt",
                RAISE: "raise", HANG: "hang", SLEEP: "sleep", NOMEM: "nomem",
                BAD_EXC: "bad_exc", UNPICKLABLE: "unpicklable", EXIT0: "exit0", SLOW_EXC: "slow_exc"}

MARKER_ENV = "SC_FAULT_MARKER_DIR"
RAISE_TEXT = "injected fault in this partition"
NOMEM_BYTES = 1 << 31  # what the NOMEM kernel tries to allocate (2 GiB) under a tight RLIMIT_AS


def marker_dir(parent_pid: int) -> str:
    """Where workers of the pool owned by ``parent_pid`` leave their markers (if it exists)."""
    return os.path.join(tempfile.gettempdir(), f"sc-fault-markers-{parent_pid}")


# -- Python-side helpers called from objmode ------------------------------------------------------
def _mark_started() -> None:
    """Tell a watching test that this worker entered a faulting kernel: touch <dir>/<pid>.started.

    The directory is $SC_FAULT_MARKER_DIR if set (subprocess tests), else marker_dir(pool
    owner's pid) if the test created it (a forkserver keeps the environment of its start).
    """
    import multiprocessing
    d = os.environ.get(MARKER_ENV)
    if not d:
        parent = multiprocessing.parent_process()
        d = marker_dir(parent.pid) if parent is not None else ""
    if d and os.path.isdir(d):
        with open(os.path.join(d, f"{os.getpid()}.started"), "w") as f:
            f.write(str(os.getpid()))


def _quiet_crash() -> None:
    """Stop faulthandler (pytest enables it; fork workers inherit it) printing a dump for the
    crash this kernel is about to cause on purpose."""
    import faulthandler
    faulthandler.disable()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _abort() -> None:
    _quiet_crash()
    os.abort()


def _exit0() -> None:
    os._exit(0)


def _sleep(seconds: float) -> None:
    _quiet_crash()  # tests truncate a block under a sleeping victim: its SIGBUS is expected
    time.sleep(seconds)


_saved_as_limit: list = []


def _lower_as_limit() -> None:
    """Cap this process's address space at its current size + 256 MiB (restored later)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    _saved_as_limit.append((soft, hard))
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    cap = vm_pages * os.sysconf("SC_PAGE_SIZE") + (256 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _restore_as_limit() -> None:
    import resource
    if _saved_as_limit:
        resource.setrlimit(resource.RLIMIT_AS, _saved_as_limit.pop())


class UnunpicklableError(Exception):
    """Pickles, but cannot be rebuilt: its __init__ needs two arguments (gh-79492 pattern)."""

    def __init__(self, a, b):
        super().__init__(f"custom error with fields {a!r} and {b!r}")
        self.a, self.b = a, b


class UnpicklableError(Exception):
    """Cannot even be pickled: it carries a lock."""

    def __init__(self, msg):
        super().__init__(msg)
        import threading
        self.lock = threading.Lock()


class SlowStrError(Exception):
    """Formatting it is slow (think: a huge message): its report reaches the parent late."""

    def __str__(self):
        time.sleep(0.5)
        return "slow to format"


def _raise_slow() -> None:
    raise SlowStrError()


def _raise_bad_exc() -> None:
    raise UnunpicklableError(1, 2)


def _raise_unpicklable() -> None:
    raise UnpicklableError("an exception holding a lock")


# -- nopython pieces ---------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _spin_forever(buf):
    # Never returns; the store keeps the loop from being proved side-effect free.
    i = 0
    n = buf.shape[0]
    while True:
        buf[i % n] = buf[(i + 1) % n] + 1.0
        i += 1


@numba.njit(nogil=True, cache=True)
def _inject(action, local, param):
    """Do ``action`` (in the victim partition; ``local`` is the victim row within it)."""
    if action == NONE:
        return 0.0
    with numba.objmode():
        _mark_started()
    buf = np.zeros(4, np.float64)
    if action == SIGKILL:
        with numba.objmode():
            _kill_self()
    elif action == SIGSEGV:
        with numba.objmode():
            _quiet_crash()
        # A native store 8 TiB past a small heap array: far outside every mapping.
        buf[(1 << 40) + local] = 1.0
    elif action == SIGABRT:
        with numba.objmode():
            _abort()
    elif action == RAISE:
        raise ValueError(RAISE_TEXT)
    elif action == HANG:
        _spin_forever(buf)
    elif action == SLEEP:
        with numba.objmode():
            _sleep(param)
    elif action == NOMEM:
        with numba.objmode():
            _lower_as_limit()
        ok = True
        try:
            big = np.empty(NOMEM_BYTES // 8, np.float64)
            big[local % 8] = 1.0
            buf[0] = big[local % 8]
        except Exception:
            ok = False
        with numba.objmode():
            _restore_as_limit()
        if not ok:
            raise MemoryError("np.empty of 2 GiB failed under RLIMIT_AS")
    elif action == BAD_EXC:
        with numba.objmode():
            _raise_bad_exc()
    elif action == UNPICKLABLE:
        with numba.objmode():
            _raise_unpicklable()
    elif action == EXIT0:
        with numba.objmode():
            _exit0()
    elif action == SLOW_EXC:
        with numba.objmode():
            _raise_slow()
    return buf[0]


# -- kernels -----------------------------------------------------------------------------------------
def fault_map_reference(out, x, action, victim, param):
    out[...] = 2.0 * x + 1.0


@sc.kernel(reference=fault_map_reference, position=True)
def fault_map(out, x, action, victim, param, pos):
    """``out = 2 * x + 1``; the partition holding row ``victim`` then suffers ``action``."""
    start, stop, total = pos
    for i in range(out.shape[0]):
        out[i] = 2.0 * x[i] + 1.0
    if start <= victim < stop:
        _inject(action, victim - start, param)


@sc.kernel(position=True)
def fault_fill(out, value, action, victim, param, pos):
    """``out[:] = value`` (a thread tag in the busy-write test); the victim partition faults."""
    start, stop, total = pos
    if start <= victim < stop:
        _inject(action, victim - start, param)
    for i in range(out.shape[0]):
        out[i] = value


def _add(a, b):
    return a + b


@sc.kernel(combine=_add, position=True)
def fault_sum(x, action, victim, param, pos):
    """Sum of x; the partition holding row ``victim`` suffers ``action``."""
    start, stop, total = pos
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    if start <= victim < stop:
        _inject(action, victim - start, param)
    return s


@sc.kernel(position=True, depth=1, boundary="nearest")
def fault_smooth(out, u, action, victim, param, pos):
    """One Jacobi sweep ``out[i] = (u[i-1] + u[i] + u[i+1]) / 3`` for pool.iterate."""
    start, stop, total = pos
    for i in range(out.shape[0]):
        out[i] = (u[i] + u[i + 1] + u[i + 2]) / 3.0
    if start <= victim < stop:
        _inject(action, victim - start, param)


@jitclass([("value", numba.float64)])
class Box:
    def __init__(self, value):
        self.value = value


def _box_combine(a, b):
    return a


# A plain (uncached) dispatcher: numba cannot cache functions that return jitclass instances,
# and sc.kernel uses an already-compiled dispatcher as it is. The Kernel must stay reachable
# under the function's own name (workers look kernels up by module and qualified name).
def box_result(x):
    """A reduction whose partial is a jitclass instance: it cannot be pickled."""
    return Box(x[0])


box_result = sc.kernel(numba.njit(nogil=True)(box_result), combine=_box_combine)


# -- a long-lived consumer process (issue 17, item 2) -------------------------------------------
def mapped_blocks(pid: int | str = "self") -> set:
    """Names of our shared-memory blocks mapped in process ``pid`` (from /proc/<pid>/maps)."""
    with open(f"/proc/{pid}/maps") as f:
        return {ln.split("/dev/shm/")[1].split()[0] for ln in f if "/dev/shm/sc" in ln}


def consumer(conn, how: str) -> None:
    """Receives SharedArrays (pickled handles) until None; sums each and lets it go ``how``:
    "close" (a.close()), "with" (a with block) or "drop" (del: garbage collection). Answers
    (sum, the blocks it still maps, whether the dropped array is now refused)."""
    import gc
    while True:
        a = conn.recv()
        if a is None:
            return
        refused = None
        if how == "with":
            with a:
                total = float(np.asarray(a).sum())
        else:
            total = float(a.sum())
            if how == "close":
                a.close()
        if how in ("close", "with"):
            try:
                a.sum()
                refused = False
            except sc.ArrayFreedError:
                refused = True
        del a
        gc.collect()
        conn.send((total, sorted(mapped_blocks()), refused))
