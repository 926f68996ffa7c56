"""How worker processes start: the default start method, ``prestart``, the checks made
before any process starts (worker count against cores and file descriptors, fork after
OpenMP), and what a forked child must forget of its parent's forkserver. The forkserver
itself: _fork_server.py (forked from this process) and _preload.py (spawned, preloaded)."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys

from . import segments
from ._executors import ProcessExecutor
from ._system import usable_cores
from .errors import UNGUARDED_MAIN_EXIT, InputError
from .local import LocalBackend
from ._preload import prepare_fork_parent, start_forkserver

START_METHODS = ("fork", "spawn", "forkserver")


def exit_if_importing_main() -> None:
    """In a child that is still importing the main module (spawn/forkserver), a Pool means
    the script lacks its __main__ guard: exit at once, with a code the parent explains
    (errors.worker_crashed) once, instead of a line from every worker; arrays the script's
    top level made before are freed first (os._exit runs no finalizer)."""
    if getattr(mp.current_process(), "_inheriting", False):
        segments.unlink_owned()
        os._exit(UNGUARDED_MAIN_EXIT)


def default_start_method() -> str:
    """forkserver where available (Linux; 3.14's default), else spawn. Never fork by default:
    forking after numba's OpenMP layer or any thread has started can kill or hang the child."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def prestart(start_method: str | None = None) -> str:
    """Start, now and in the background, what the first Pool would wait for, and return at
    once: call it early in a program (before loading data), so that the first ``Pool()``
    finds its workers' server ready.

    Under forkserver (Linux's default) it launches the server, with NumPy, numba with its
    CPU target, sharedcompute and the kernel modules imported so far (workers import later
    ones themselves): this process forked where that is safe (_fork_server.py), which then
    sets numba up (about 0.3 s of CPU), else a new interpreter that imports them all (about
    1 s); either overlaps the program's own work. Under fork it sets numba's target up in
    this process (about 0.4 s, before returning), which forked workers inherit. Under spawn
    nothing can be prepared: each worker is a new interpreter (``pool.warmup`` still loads
    kernels before the first call). Calling it again, or after a pool started, does nothing
    more.

    Returns what it did: 'forked' (this process forked into the server), 'preloaded' (a
    new server started), 'running' (one already was), 'shadowed' (started with NumPy and
    numba only: a checkout's copy of sharedcompute would be imported there), 'off'
    (``SHAREDCOMPUTE_PRELOAD=0``), 'fork' or 'spawn'; and 'worker', doing nothing, in a
    worker (or the server) importing the main module, which a script that calls it at its
    top level makes every worker do.

    Examples
    --------
    >>> import sharedcompute as sc
    >>> sc.prestart() in ("forked", "preloaded", "running", "shadowed", "off", "spawn")
    True
    """
    method = _available(start_method)
    if getattr(mp.current_process(), "_inheriting", False):
        return "worker"  # multiprocessing would refuse to start a process here (bootstrapping)
    if method == "forkserver":
        return start_forkserver(mp.get_context("forkserver"))["state"]
    if method == "fork":
        prepare_fork_parent()
    return method


def _numba_threads_started() -> bool:
    mod = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(mod, "_is_initialized", False))


MAX_WORKERS_PER_CORE = 8  # more processes than this per usable core only oversubscribes
FDS_PER_WORKER = 4  # the parent's end of the pipe, the process sentinel, and slack


def _check_worker_limits(n_workers: int) -> None:
    """Refuse a worker count the machine cannot serve, before starting any process."""
    cores = usable_cores().n
    if n_workers > MAX_WORKERS_PER_CORE * max(cores, 1):
        raise InputError(f"n_workers={n_workers} is more than {MAX_WORKERS_PER_CORE} per usable "
                         f"core ({usable_cores().reason}); use n_workers=None for one per core")
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    except (ImportError, OSError, ValueError):
        return
    need = in_use + FDS_PER_WORKER * n_workers + 16
    if soft != resource.RLIM_INFINITY and need > soft:
        raise InputError(
            f"starting {n_workers} workers needs about {need} file descriptors, but this process "
            f"may open {soft} ({in_use} in use); raise the limit (`ulimit -n 4096`, or "
            "resource.setrlimit(resource.RLIMIT_NOFILE, ...)) or use fewer workers")


def _available(start_method: str | None) -> str:
    method = start_method or default_start_method()
    if method not in START_METHODS or method not in mp.get_all_start_methods():
        raise InputError(f"start_method={method!r} is not available here; use one of "
                         f"{[m for m in START_METHODS if m in mp.get_all_start_methods()]}")
    return method


def _process_backend(n_workers: int, start_method: str | None) -> LocalBackend:
    method = _available(start_method)
    if method == "fork" and _numba_threads_started():
        raise InputError(
            "start_method='fork' is unsafe here: numba's parallel threads (OpenMP) have "
            "already run in this process, and a forked worker would be killed "
            "('fork() called from a process already using GNU OpenMP'); use "
            "start_method='forkserver' or 'spawn'")
    return LocalBackend(ProcessExecutor(n_workers, method))



def _forget_parents_forkserver() -> None:
    """A forkserver started by the parent is the parent's child: the stdlib would waitpid()
    it from here and fail (ChildProcessError). Forget it, so a pool made in this child starts
    a server of its own (CPython Lib/multiprocessing/forkserver.py keeps the server's pid,
    address and alive fd in its module-level ForkServer)."""
    module = sys.modules.get("multiprocessing.forkserver")
    server = getattr(module, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        try:
            os.close(alive_fd)  # our copy only: the parent's server stays up for the parent
        except OSError:
            pass
    for attr in ("_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd"):
        if hasattr(server, attr):
            setattr(server, attr, None)
