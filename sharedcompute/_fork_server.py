"""The forkserver forked from this process, when that is as safe as spawning it (issue 27).

A spawned server is a new interpreter: before its first fork it imports NumPy and numba and
sets numba's CPU target up, 0.8-1 s that the first ``Pool()`` of a script waits for. This
process has done most of that already. So, where nothing below stands in the way, the
server is this process forked (``start``), and workers are forked from it as from any
forkserver: a server with one thread and no locks held, whatever this process does later
(threads, numba's OpenMP layer), so later pools and restarts stay safe.

``blockers()`` lists what stands in the way (empty: fork). Each one guards against a failure
mode of forking a process (../shared/design/anchors-reliability.md, F20):

- not Linux (macOS frameworks are not fork-safe; there the server is spawned);
- a second Python thread, or a thread the fork would find half-way (only this process's
  own thread and OpenBLAS's pool, which its pthread_atfork handlers stop before a fork and
  start again after it, are allowed: the spawned server forks with the same ones);
- numba's threading layer launched (``fork() called from a process already using GNU
  OpenMP``: the forked workers would be killed);
- a module being imported (a pool made at import time: the server would inherit its lock
  and a half-made module, where a spawned server's workers report the missing guard);
- more than MEMORY_LIMIT of private memory, or any shared mapping (shared arrays, a
  memmap): the server would keep them as long as this process lives, even after this
  process frees them;
- ``SHAREDCOMPUTE_PRELOAD=spawn`` (asks for the spawned server).

What the child does before it serves (``_become_server``): ignores SIGINT and resets this
process's Python signal handlers, as a new interpreter has none; points every inherited
file descriptor but stdio and its own at /dev/null (so it holds no pipe, socket or lock of
this process open, while no fd number an inherited object holds is reused); replaces
``__main__`` (and its alias ``__mp_main__``) by an empty module, as a ``python -c``
server has, so workers import the main module again as under spawn (a script's missing
``if __name__ == "__main__":`` guard is reported as before);
``gc.freeze()``s what it inherited (never collected there, so never copied page by page);
then runs the caller's setup (numba's target) and the stdlib's own ``forkserver.main``, with
the command the stdlib would have given a new interpreter, and never returns (``os._exit``).

What differs from a spawned server: workers find the modules this process had imported at
its first pool, as they were then (a spawned server imports them afresh), with their
settings (warnings filters, logging handlers: on /dev/null where they wrote to a file);
a fork start method user would call that fork semantics, for everything but ``__main__``
and NumPy's global random generator (seeded afresh in the server).
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import sys
import threading
import types
import warnings
from typing import Any, Callable

ENV = "SHAREDCOMPUTE_PRELOAD"
MEMORY_LIMIT = 256 << 20  # private memory the server may keep: ~3x a spawned server's own
SERVER_COMMAND = "from multiprocessing.forkserver import main"


def blockers() -> list[str]:
    """Why the server cannot be forked from this process now; empty when it can."""
    if os.environ.get(ENV) == "spawn":
        return [f"{ENV}=spawn"]
    if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods():
        return ["not Linux: the server is spawned"]
    out = []
    if threading.active_count() > 1 or threading.current_thread() is not threading.main_thread():
        out.append(f"{threading.active_count()} Python threads")
    if getattr(sys.modules.get("numba.np.ufunc.parallel"), "_is_initialized", False):
        out.append("numba's threading layer was launched")
    have, allowed = threads(), 1 + blas_threads()
    if have > allowed:
        out.append(f"{have} threads, {allowed} allowed (this one and OpenBLAS's)")
    importing = [name for name, m in list(sys.modules.items())
                 if getattr(getattr(m, "__spec__", None), "_initializing", False)]
    if importing:
        out.append(f"importing {importing[0]}")
    private, shared = memory()
    if private > MEMORY_LIMIT:
        out.append(f"{private >> 20} MiB of private memory (limit {MEMORY_LIMIT >> 20} MiB)")
    if shared:
        out.append(f"shared mappings ({shared[0]})")
    return out


def threads() -> int:
    """OS threads of this process (OpenMP's and BLAS's included, which threading misses)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def blas_threads() -> int:
    """The worker threads of the OpenBLAS (pthreads) pools loaded here: n - 1 for a pool of
    n, the caller being the n-th (what threadpoolctl reports; it is a dependency)."""
    try:
        from threadpoolctl import threadpool_info
        return sum(max(int(i.get("num_threads", 1)) - 1, 0) for i in threadpool_info()
                   if i.get("internal_api") == "openblas"
                   and i.get("threading_layer") == "pthreads")
    except Exception:  # no count: allow none
        return 0


def memory() -> tuple[int, list[str]]:
    """(private resident bytes, shared mappings' names) of this process."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        private = sum(int(fields[k].split()[0]) << 10 for k in ("RssAnon", "RssShmem")
                      if k in fields)
        shared = []
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                name = parts[5].strip() if len(parts) > 5 else "anonymous"
                if len(parts) > 1 and parts[1][3:4] == "s" and (  # glibc's gconv cache is
                        "w" in parts[1] or not name.startswith("/")  # shared, read-only
                        or name.startswith("/dev/shm/") or name.endswith("(deleted)")):
                    shared.append(name)
        return private, shared
    except (OSError, ValueError, KeyError):
        return MEMORY_LIMIT + 1, []  # unknown: do not fork


def start(server: Any, setup: Callable[[], None]) -> None:
    """``server.ensure_running()`` (the stdlib's ForkServer), with the server forked from
    this process instead of spawned; ``setup`` runs in it before it serves. The caller made
    sure ``blockers()`` is empty and set the preload list to [] (nothing to import)."""
    from multiprocessing import util
    spawn = util.spawnv_passfds

    def fork_instead(path: str, args: list, passfds: Any) -> int:
        if not args or SERVER_COMMAND not in args[-1]:  # the resource tracker: as it was
            return spawn(path, args, passfds)
        sys.stdout.flush()  # gh-135335: buffered output would be written twice
        sys.stderr.flush()
        with warnings.catch_warnings():  # 3.12+ warns of any other thread; OpenBLAS's
            warnings.simplefilter("ignore", DeprecationWarning)  # are fork-safe (above)
            pid = os.fork()
        if pid == 0:
            _serve(args[-1], passfds, setup)
        return pid

    util.spawnv_passfds = fork_instead  # one thread (blockers): nobody else calls it now
    try:
        server.ensure_running()
    finally:
        util.spawnv_passfds = spawn


def _serve(command: str, keep: Any, setup: Callable[[], None]) -> None:
    """The forked child: become a server, run the stdlib's, never return."""
    code = 0
    try:
        _become_server(keep)
        setup()
        exec(command, {"__name__": "__mp_forkserver__"})  # forkserver.main(...): serves
    except SystemExit:  # its loop ends so when every client is gone
        pass
    except BaseException:  # noqa: BLE001 - the parent's next worker start fails and says so
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)  # never this process's atexit handlers, finalizers or frames


def _become_server(keep: Any) -> None:
    """Leave of this process what a spawned server would not have (module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as forkserver.main will (Ctrl-C: parent)
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
            if callable(handler) and sig != signal.SIGINT:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            continue
    signal.set_wakeup_fd(-1)
    from multiprocessing import forkserver
    forkserver._forkserver._lock = threading.Lock()  # held by the thread that forked us
    keep = {0, 1, 2, *keep}
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep and int(name) != null:
            try:
                os.dup2(null, int(name))
            except OSError:  # the listing's own fd, closed by now
                pass
    os.close(null)
    # A `python -c` server's __main__; importing multiprocessing there made __mp_main__ the
    # same module, which numba's cache of a __main__ kernel imports in a worker that did not
    # import the main module again (sphinx-gallery's examples, python -c, notebooks).
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:  # seeded afresh, as a new interpreter's (random reseeds
        numpy_random.seed()       # itself after a fork): not this process's sequence
    gc.freeze()
