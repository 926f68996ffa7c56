"""A warm forkserver: NumPy, numba (its CPU target set up), sharedcompute's worker side and
the parent's kernel modules imported once, in the server,
so every forked worker inherits them instead of importing them itself (about 0.8 s each).

Parent side, ``start_forkserver(ctx)``, called by ProcessExecutor.start before the first
worker of a forkserver pool. Where _fork_server.blockers() finds nothing against it (issue
27), the server is this process forked (_fork_server.start): it has all of the above but
numba's target, which ``_forked_setup`` sets up there. Else it asks multiprocessing for a
spawned server whose preload list is the
user's (``['__main__']`` by default) plus this module, and passes what this module needs
(the parent's package folder, sys.path, kernel modules) in the environment variable
``SHAREDCOMPUTE_PRELOAD``, set only while the server is spawned. Either server wraps the
workers' import of the main module (``_short_start_failures``): one that raises is one line
from worker 0 and an exit code the parent explains, not a traceback from every worker.

Server side: importing this module with that variable set runs ``_boot()``. Every step
tolerates every error (a failed step is recorded in ``REPORT`` and the workers import the
module again, reporting a failure as they always did), so a broken kernel module never
breaks the server: CPython's own preload loop catches only ImportError, and an exception
there kills the server and with it every later worker start.

A kernel module that starts threads when imported (a thread of its own, numba's threading
layer) would leave the server unsafe to fork from, so the server first imports the kernel
modules in a forked child (``_trial_import``, while it sets numba up) and leaves those to
the workers.

What it cannot do:
- The forkserver is process-wide and starts once (CPython Lib/multiprocessing/forkserver.py:
  ``set_forkserver_preload`` only matters before ``ensure_running`` spawns it). A server that
  is already running (a previous pool, or the user's own forkserver processes) is reused as
  it is: kernel modules imported since are imported by each worker, as without a preload.
  A running server is never restarted: its children's exit statuses come through it.
- Which sharedcompute: the server is ``python -c``, whose sys.path starts with '' (the
  current folder); CPython ignored the parent's sys.path there until gh-117378 (fixed in
  late-2024 releases of 3.12 and 3.13, after the ``__main__`` preload even then). A
  checkout in the current folder would then be imported instead of the installed package
  the parent runs. ``_shadowed()`` sees that from the parent and leaves
  sharedcompute, the kernel modules and ``__main__`` out of the preload (NumPy and numba
  only); ``_boot()`` checks the package folder again and unloads a wrong copy.
- ``SHAREDCOMPUTE_PRELOAD=0`` turns the whole thing off (the stdlib's default server);
  ``SHAREDCOMPUTE_PRELOAD=spawn`` never forks the server from the parent.

Under fork there is no server: ``prepare_fork_parent()`` sets numba's target up in the
parent instead (once), which the forked workers inherit.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from . import _fork_server, _worker, segments
from .errors import MAIN_IMPORT_EXIT, InputError
from .kernel import REGISTRY, Kernel
from .plan import Whole
from .shared import SharedArray

ENV = "SHAREDCOMPUTE_PRELOAD"
THIS = __name__  # "sharedcompute._preload"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPORT: dict[str, Any] = {}  # the server's record (forked workers inherit it): steps, errors
LAST: dict[str, Any] = {}  # the parent's record of its last start_forkserver() call
_LOCK = threading.Lock()


# -- the parent ---------------------------------------------------------------------------------
def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def kernel_modules() -> dict[str, str]:
    """Modules (name -> file) of the kernels this process has defined, but __main__."""
    out = {}
    for k in list(REGISTRY.values()):
        mod = sys.modules.get(k.module)
        path = getattr(mod, "__file__", None)
        if k.module != "__main__" and path:
            out[k.module] = os.path.realpath(path)
    return out


def _shadowed() -> str | None:
    """Where the server would find a sharedcompute that is not ours, or None. It searches
    '' (the current folder) first, then (CPython with gh-117378's fix) the parent's
    sys.path, where a stray entry may have been put after the parent imported us. A
    package found by no path entry comes from another finder (an editable install): ours."""
    from importlib.machinery import PathFinder
    cwd = os.getcwd()
    try:
        spec = PathFinder.find_spec("sharedcompute", [cwd] + [p or cwd for p in sys.path])
    except (OSError, ImportError, ValueError):
        return None
    if spec is None:
        return None
    where = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin or "")]
    if any(os.path.realpath(w) == os.path.realpath(PACKAGE_DIR) for w in where):
        return None
    return where[0]


def _server() -> Any:
    from multiprocessing import forkserver
    return forkserver._forkserver  # the module-level ForkServer behind set_forkserver_preload


def running() -> bool:
    """Whether this process already has a forkserver (started by anyone)."""
    return getattr(_server(), "_forkserver_pid", None) is not None


def start_forkserver(ctx: Any) -> dict:
    """Make sure the forkserver runs, preloaded when we start it; returns (and keeps in
    ``LAST``) what was done: state 'preloaded', 'shadowed', 'running' or 'off'."""
    with _LOCK:  # pools started from two threads: one sets the list and the variable
        return _start_forkserver(ctx)


def _start_forkserver(ctx: Any) -> dict:
    server = _server()
    if not enabled() or running():
        server.ensure_running()  # restarts a dead one with the user's list, as the stdlib
        LAST.clear()
        LAST.update(state="off" if not enabled() else "running")
        return dict(LAST)
    theirs = list(getattr(server, "_preload_modules", ["__main__"]))
    theirs = [m for m in theirs if m != THIS]
    not_forked = _fork_server.blockers()
    if not not_forked:
        ctx.set_forkserver_preload([])  # the forked server has it all; setup imports theirs
        try:
            _fork_server.start(server, lambda: _forked_setup(theirs))
        except OSError as exc:  # no fork (EAGAIN, ENOMEM): spawn it, as before
            not_forked = [f"fork failed: {exc}"]
        finally:
            ctx.set_forkserver_preload(theirs)
    if not not_forked:
        LAST.clear()
        LAST.update(state="forked", preload=[m for m in theirs if m != "__main__"],
                    modules=sorted(kernel_modules()), not_forked=[])
        return dict(LAST)
    shadow = _shadowed()
    if shadow:  # nothing that imports sharedcompute: the server would find the wrong copy
        preload = [m for m in theirs if m != "__main__"] + ["numpy", "numba"]
        modules: dict[str, str] = {}
    else:
        modules = kernel_modules()
        preload = theirs + [THIS]
    config = dict(package=os.path.realpath(PACKAGE_DIR), sys_path=list(sys.path),
                  modules=modules, parent=os.getpid(), ipython="IPython" in sys.modules)
    old_env = os.environ.get(ENV)
    ctx.set_forkserver_preload(preload)
    os.environ[ENV] = json.dumps(config)  # read (and removed) by the server's _boot()
    try:
        server.ensure_running()
    finally:
        if old_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old_env
        ctx.set_forkserver_preload(theirs)  # process-wide: leave the user's list as it was
    LAST.clear()
    LAST.update(state="shadowed" if shadow else "preloaded", preload=preload,
                modules=sorted(modules), shadowed_by=shadow, not_forked=not_forked)
    return dict(LAST)


def prepare_fork_parent() -> None:
    """Under fork, set numba up in the parent once, so every forked worker (of this pool,
    later pools and restarts) inherits it instead of spending ~0.3 s on it at its first
    call. numba's threading layer stays unlaunched (the fork check in _start still holds);
    the refresh leaves one idle native thread, as any compile in the parent would."""
    if enabled() and "numba" in sys.modules:
        try:
            _init_numba()
        except Exception:  # the workers set it up themselves, as before
            pass


# -- the server -----------------------------------------------------------------------------------
def _step(name: str, fn: Any) -> Any:
    t0 = time.perf_counter()
    try:
        out = fn()
        REPORT.setdefault("steps", {})[name] = round(time.perf_counter() - t0, 4)
        return out
    except BaseException as exc:  # noqa: BLE001 - a preload step never kills the server
        if isinstance(exc, KeyboardInterrupt):
            raise
        REPORT.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        return None


def _forked_setup(preload: list) -> None:
    """In the server forked from the parent (_fork_server): NumPy, numba, the worker side and
    the kernel modules are there already; set numba's target up, and import the modules of
    the user's own preload list (but ``__main__``: the workers import it), as CPython's
    server would."""
    global _LOCK
    _LOCK = threading.Lock()  # held by the thread that forked this server
    t0 = time.perf_counter()
    REPORT.clear()
    _step("start failures", _short_start_failures)
    _step("numba target", _init_numba)
    for name in preload:
        if name != "__main__":
            _step(f"import {name}", lambda n=name: __import__(n))
    REPORT.update(pid=os.getpid(), seconds=round(time.perf_counter() - t0, 4), forked=True,
                  modules=sorted(kernel_modules()))
    sys.stdout.flush()
    sys.stderr.flush()


def _short_start_failures() -> None:
    """In the server (forked or spawned): one of our workers whose import of the main module
    raises exits with MAIN_IMPORT_EXIT, which the parent explains and does not restart
    (errors.worker_crashed), and worker 0 prints one line naming the module, the line and
    the cause: not multiprocessing's 20-line traceback from every worker. Other processes
    of this server (the user's own) fail as before. spawn._main calls ``prepare`` by name."""
    from multiprocessing import spawn
    original = spawn.prepare

    def prepare(data: dict) -> None:
        try:
            original(data)
        except Exception as exc:
            name = str(data.get("name", ""))
            if not name.startswith("sharedcompute-worker-"):
                raise
            if name.endswith("-0"):
                failed = _worker.import_failure(exc)
                where = f": module {failed[1]!r}{failed[2]} raised" if failed else ""
                main = data.get("init_main_from_path") or data.get("init_main_from_name")
                sys.stderr.write(f"sharedcompute: worker {os.getpid()} could not import the main "
                                 f"module {main}{where} {type(exc).__name__}: {exc}\n")
                sys.stderr.flush()
            segments.unlink_owned()  # arrays its top level made before it failed
            os._exit(MAIN_IMPORT_EXIT)
    spawn.prepare = prepare


def _init_numba() -> None:
    from numba.core.registry import cpu_target
    # The lazy part of numba's start-up (~0.3 s): the typing and target contexts and their
    # registries, which every first compile or cache load in a worker would otherwise build.
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


def _import_kernel_module(name: str, path: str) -> None:
    import importlib
    mod = importlib.import_module(name)
    got = os.path.realpath(getattr(mod, "__file__", "") or "")
    if got != path:  # another file by that name: not what the parent runs
        sys.modules.pop(name, None)
        raise ImportError(f"{name} resolved to {got}, the parent's is {path}")


def _threads() -> int:
    """OS threads of this process (OpenMP's and BLAS's included, which threading misses)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading as th
        return th.active_count()


def _numba_threads() -> bool:
    """Whether numba's threading layer (OpenMP, TBB, workqueue) was launched here, as
    _start._numba_threads_started sees it."""
    return bool(getattr(sys.modules.get("numba.np.ufunc.parallel"), "_is_initialized", False))


def _trial_import(modules: dict) -> Any:
    """Import the kernel modules in a forked child of the server first, to learn which ones
    leave threads running (numba.set_num_threads at import, OpenMP...): imported in the
    server, they would make every later fork from it unsafe ('fork() called from a process
    already using GNU OpenMP'). Returns a function that waits for the child's answer, so
    the server sets numba up meanwhile; a child that dies unanswered condemns them all."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the server is single-threaded here, so this fork is safe
        os.close(r)
        bad = {}
        for name, path in modules.items():
            before, layer = _threads(), _numba_threads()
            try:
                _import_kernel_module(name, path)
            except BaseException:  # noqa: BLE001 - the server's own import reports it
                pass
            if _threads() > before:
                bad[name] = f"importing it started {_threads() - before} thread(s)"
            elif _numba_threads() and not layer:  # OpenMP starts its threads later
                bad[name] = "importing it launched numba's threading layer"
        os.write(w, json.dumps(bad).encode())
        os._exit(0)
    os.close(w)

    def answer() -> dict:
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        os.waitpid(pid, 0)
        try:
            return json.loads(b"".join(chunks).decode())
        except ValueError:
            return {name: "the trial import in a child process died" for name in modules}
    return answer


def _in_forkserver(config: dict) -> bool:
    """Whether this process is the server the parent just spawned (not the parent itself,
    which imports this module too)."""
    return ("multiprocessing.forkserver" in sys.modules and os.getpid() != config["parent"]
            and os.getppid() == config["parent"])


def _boot() -> None:
    raw = os.environ.get(ENV)
    if not raw or not raw.startswith("{"):
        return
    config = json.loads(raw)
    if not _in_forkserver(config):
        return
    del os.environ[ENV]  # the workers must not see it
    t0 = time.perf_counter()
    if os.path.realpath(PACKAGE_DIR) != config["package"]:  # a copy found through sys.path
        for name in [m for m in sys.modules if m == "sharedcompute"
                     or m.startswith("sharedcompute.")]:
            del sys.modules[name]  # so workers import the parent's, from its sys.path
        REPORT["errors"] = {"package": f"{PACKAGE_DIR} is not the parent's {config['package']}"}
        return
    # No NUMBA_NUM_THREADS=1 here: numba reads it at import, and a kernel or main module
    # calling numba.set_num_threads(2) in a worker would then fail (limit_threads caps it)
    sys.path[:] = config["sys_path"]  # as gh-117378's fix does, and as the workers' will be
    _step("numpy", lambda: __import__("numpy"))
    _step("numba", lambda: __import__("numba"))
    modules = config.get("modules", {})
    trial = _step("trial import", lambda: _trial_import(modules)) if modules else None
    _step("numba target", _init_numba)
    _step("worker side", lambda: __import__("sharedcompute._worker"))
    _step("start failures", _short_start_failures)
    _step("threadpoolctl", lambda: __import__("threadpoolctl"))
    if config.get("ipython"):  # numba's cache of notebook-cell kernels finds its folder
        _step("IPython", lambda: __import__("IPython.paths"))  # there (~0.3 s a worker)
    unsafe = (_step("trial answer", trial) or {}) if trial is not None else {}
    for name, path in modules.items():
        if name in unsafe:  # the workers import it themselves, as without a preload
            REPORT.setdefault("errors", {})[f"import {name}"] = "not preloaded: " + unsafe[name]
            continue
        _step(f"import {name}", lambda n=name, p=path: _import_kernel_module(n, p))
    REPORT.update(pid=os.getpid(), seconds=round(time.perf_counter() - t0, 4),
                  modules=sorted(config.get("modules", {})))
    sys.stdout.flush()  # gh-135335: buffered output would be inherited by every child
    sys.stderr.flush()


# -- warmup: the signatures a call would compile (the parent) ------------------------------
def _entries(kernels: Any) -> list[tuple[Any, tuple | None]]:
    """(kernel, example arguments or None) for a kernel, a (kernel, *args) tuple or a list."""
    if isinstance(kernels, Kernel) or (isinstance(kernels, tuple) and kernels
                                       and isinstance(kernels[0], Kernel)):
        kernels = [kernels]
    out = []
    for item in kernels if isinstance(kernels, (list, tuple)) else [kernels]:
        if isinstance(item, Kernel):
            out.append((item, None))
        elif isinstance(item, tuple) and item and isinstance(item[0], Kernel):
            out.append((item[0], tuple(item[1:])))
        else:
            raise InputError(f"warmup takes sharedcompute kernels or (kernel, *example_args) "
                             f"tuples, not {item!r}; e.g. pool.warmup([(triad, a, b, c, 2.0), "
                             "total], [np.float64, np.float32])")
    return out


def _array_type(x: Any, writable: bool, dtype: Any, pickled: bool) -> Any:
    import numba
    import numpy as np
    arr = np.asarray(x)
    t = numba.typeof(arr)
    if pickled:  # a plain array sent whole arrives as a C-ordered copy
        t = t.copy(layout="C")
    if dtype is not None:
        t = t.copy(dtype=numba.from_dtype(np.dtype(dtype)))
    return t.copy(readonly=not writable)


def _signatures(kernel: Any, examples: tuple | None, dtype: Any, pickles: bool) -> list:
    """The argument types a call compiles: writes= arrays writable, the others read-only
    views (_evaluate.resolve; a stencil's padded copies at the array's edges are read-only
    views too), (start, stop, total) for position=. ``pickles``: the executor sends a plain
    array pickled (it arrives as a C-ordered copy)."""
    import numba
    import numpy as np
    from numba import types

    if examples is None:
        dt = numba.from_dtype(np.dtype(dtype or np.float64))
        sig = [types.Array(dt, 1, "C", readonly=i not in kernel.writes)
               for i in range(len(kernel.params))]
    else:
        if len(examples) != len(kernel.params):
            raise InputError(f"warmup of kernel {kernel.name}: {len(examples)} example "
                             f"arguments given, it takes {len(kernel.params)} "
                             f"{tuple(kernel.params)}")
        sig = []
        for i, x in enumerate(examples):
            x = x.array if isinstance(x, Whole) else x
            if isinstance(x, (SharedArray, np.ndarray)):
                pickled = isinstance(x, np.ndarray) and pickles
                sig.append(_array_type(x, i in kernel.writes, dtype, pickled))
            else:
                sig.append(numba.typeof(x))
    if kernel.position:
        sig.append(numba.typeof((True, True) if kernel.position == "edges" else (0, 0, 0)))
    return [tuple(sig)]


def warmup_items(kernels: Any, dtypes: Any, boundscheck: bool,
                 executor: Any) -> tuple[list, dict]:
    """Pool.warmup: the items the executor compiles (its ``warmup``), [(kernel, boundscheck,
    signatures, totals signatures)], and {kernel name: [signature text]} for the caller."""
    if dtypes is not None and not isinstance(dtypes, (list, tuple)):
        dtypes = [dtypes]
    items, names = [], {}
    for kernel, examples in _entries(kernels):
        executor.check_sendable(kernel)
        if not kernel.jit:  # jit=False: plain Python, nothing to compile
            names[kernel.name] = []
            continue
        sigs: list = []
        for dt in (dtypes or [None]):
            try:
                sigs += [s for s in _signatures(kernel, examples, dt, not executor.in_process)
                         if s not in sigs]
            except (TypeError, ValueError) as exc:
                raise InputError(f"warmup of kernel {kernel.name}: {exc}") from exc
        totals = []
        if kernel.kind == "scan":  # the totals pass reads the inputs only
            totals = [tuple(t for i, t in enumerate(s[:len(kernel.params)])
                            if i not in kernel.writes) for s in sigs]
            sigs = []  # the apply pass's carry type is only known from a real call
        items.append((kernel, bool(boundscheck), sigs, totals))
        names[kernel.name] = [", ".join(str(t) for t in s) for s in sigs + totals]
    return items, names


_boot()  # last: in the server, every function above exists by now
