"""Facts about this machine that the engine needs: usable cores, shared-memory space, and
which names in the shared-memory directory are this package's blocks (and who made them)."""
from __future__ import annotations

import functools
import hashlib
import math
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Any

SHM_DIR = "/dev/shm"
# Environment variables that cap thread pools in worker processes (joblib's list, plus numba).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
THREAD_ENV = {var: "1" for var in THREAD_VARS}


def nanny_config() -> dict:
    """dask config for the LocalClusters sharedcompute starts: the workers' thread limits
    set inside each worker process (distributed.nanny.environ), not before spawning it. A
    LocalCluster's nannies run in the caller's process and apply pre-spawn-environ with
    os.environ.update there at every worker (re)start (distributed/nanny.py,
    WorkerProcess.start), which leaked NUMBA_NUM_THREADS=1 and friends into the caller
    after a worker restart. A nanny also puts PYTHONHASHSEED=6640 there when pre-spawn
    names none: the caller's own seed (or "random", what an unset one means) is kept."""
    seed = os.environ.get("PYTHONHASHSEED")
    return {"distributed.nanny.pre-spawn-environ": {"PYTHONHASHSEED": seed or "random"},
            "distributed.nanny.environ": THREAD_ENV}


def limit_threads() -> Any:
    """One thread for every thread pool in this (worker) process: the environment for pools
    not yet loaded, threadpoolctl for those already loaded (NumPy's OpenBLAS), and numba's
    own count. Keep the returned handle alive for the process's lifetime.

    Runs after spawn/forkserver re-imported the main module, which may already have started
    numba's threads (``numba.set_num_threads(2)`` at import): numba then refuses any new
    NUMBA_NUM_THREADS at the next compile ("Cannot set NUMBA_NUM_THREADS to a different value
    once the threads have been launched"), so the variable keeps the launched count and
    ``numba.set_num_threads(1)`` caps what parallel code uses instead (issue 17, item 12).
    """
    env = dict(THREAD_ENV)
    launched = _numba_threads_launched()
    if launched:
        env["NUMBA_NUM_THREADS"] = str(launched)
    os.environ.update(env)
    if launched:
        import numba
        numba.set_num_threads(1)
    elif "numba" in sys.modules:
        _numba_launches_one()
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl is a dependency
        return None


def _numba_launches_one() -> None:
    """numba fixed how many threads its parallel code launches when it was imported
    (``numba.np.ufunc.parallel.NUM_THREADS``, from NUMBA_NUM_THREADS: the forkserver's
    preload, the parent under fork, the main module under spawn, all before this process
    was a worker), and launches them at the first parallel=True compile: make that one
    thread, as the environment now says (the compiler reloads numba's config too)."""
    sys.modules["numba.core.config"].reload_config()
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None:
        parallel.NUM_THREADS = sys.modules["numba.core.config"].NUMBA_NUM_THREADS


def _numba_threads_launched() -> int:
    """How many threads numba's parallel pool started in this process (0: none yet)."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if not getattr(parallel, "_is_initialized", False):
        return 0
    return int(sys.modules["numba.core.config"].NUMBA_NUM_THREADS)


@dataclass(frozen=True)
class CoreCount:
    """How many cores this process may use, and why."""

    n: int
    reason: str


def _cgroup_cpu_quota() -> float | None:
    """CPU quota from cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        if quota_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def usable_cores() -> CoreCount:
    """Cores this process may run on: CPU affinity, capped by a cgroup CPU quota (not os.cpu_count()).

    Examples
    --------
    >>> usable_cores().n >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        n, reason = len(os.sched_getaffinity(0)), "CPU affinity"
    else:
        n, reason = os.cpu_count() or 1, "os.cpu_count()"
    quota = _cgroup_cpu_quota()
    if quota is not None and math.ceil(quota) < n:
        n, reason = max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}"
    return CoreCount(n, f"{n} from {reason}")


@dataclass(frozen=True)
class ShmSpace:
    path: str
    total: int
    free: int


def shm_space() -> ShmSpace | None:
    """Size and free bytes of the shared-memory file system, or None where there is none (macOS)."""
    if not sys.platform.startswith("linux") or not os.path.isdir(SHM_DIR):
        return None
    st = os.statvfs(SHM_DIR)
    return ShmSpace(SHM_DIR, st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


def shm_huge_pages(mounts: str | None = None, directory: str = SHM_DIR) -> str | None:
    """The ``huge=`` option of the tmpfs mounted at ``directory`` ("never" when it has
    none, the kernel's default), from ``/proc/mounts`` (or the text ``mounts``); None
    where that is unknown (not Linux, not tmpfs). With "never" every SharedArray has 4 KiB
    pages: a stencil after a pause then pays a TLB miss per page that NumPy's arrays (2 MiB
    pages) do not (the guide's performance page, "Memory pages").

    >>> shm_huge_pages("tmpfs /dev/shm tmpfs rw,nosuid,nodev,huge=within_size 0 0\\n")
    'within_size'
    >>> shm_huge_pages("tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0\\n")
    'never'
    """
    if mounts is None:
        try:
            with open("/proc/mounts") as f:
                mounts = f.read()
        except OSError:
            return None
    found = None
    for line in mounts.splitlines():  # the last mount on the path is the one seen
        fields = line.split()
        if len(fields) >= 4 and fields[1] == directory:
            found = fields
    if found is None or found[2] != "tmpfs":
        return None
    options = dict(o.partition("=")[::2] for o in found[3].split(","))
    return options.get("huge") or "never"


def pages_note(huge: str | None) -> str:
    """What ``sharedcompute info`` adds to its shared-memory line for a ``huge=`` option
    (shm_huge_pages): nothing where it is unknown, a pointer to the guide for 4 KiB pages.

    >>> pages_note("never")
    "; huge=never (4 KiB pages: see the guide's performance page, 'Memory pages')"
    >>> pages_note("within_size"), pages_note(None)
    ('; huge=within_size', '')
    """
    if huge is None:
        return ""
    small = huge in ("never", "deny")  # deny: huge pages off even where asked for
    return f"; huge={huge}" + (" (4 KiB pages: see the guide's performance page, "
                               "'Memory pages')" if small else "")


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- the names of this package's blocks in the shared-memory directory ---------------------
PREFIX = "sc"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


def _tag(stem: str) -> str:
    """4 hex digits that only this package's names carry: a keyed hash of the rest, so a
    foreign file whose name merely fits the pattern is taken for ours once in 65,536."""
    return hashlib.blake2b(stem.encode(), digest_size=2, key=b"sharedcompute").hexdigest()


def make_block_name() -> str:
    """``sc<creator pid in base 36>_<48 random bits><tag>``: at most 25 characters (macOS
    allows 30); see _tag."""
    stem = f"{PREFIX}{_base36(os.getpid())}_{secrets.token_hex(6)}"
    return stem + _tag(stem)


def creator_pid(name: str) -> int | None:
    """The creating pid encoded in one of our block names, or None if the name is not ours
    (wrong pattern, wrong tag, or a pid no process can have)."""
    if not name.startswith(PREFIX) or "_" not in name:
        return None
    head, _, tail = name[len(PREFIX):].partition("_")
    if not head or len(tail) != 16 or any(c not in _DIGITS for c in head):
        return None
    if any(c not in "0123456789abcdef" for c in tail) or tail[12:] != _tag(name[:-4]):
        return None
    pid = int(head, 36)
    return pid if 0 < pid <= _pid_max() else None


@functools.lru_cache(maxsize=1)
def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4_194_304  # Linux's ceiling (PID_MAX_LIMIT); other systems are lower


def list_segments(directory: str = SHM_DIR) -> list[str]:
    """Names of this package's blocks currently in the shared-memory directory."""
    try:
        return sorted(n for n in os.listdir(directory) if creator_pid(n) is not None)
    except FileNotFoundError:
        return []
