"""Pool: a persistent, core-sized set of worker processes that run kernels in place.

    caller ── map/reduce/iterate ─▶ make_plan (execute.py): check args, chunk grid
                                        │ one task per worker: kernel by name, array handles,
                                        ▼ its contiguous range of chunks
    Pool._run ── Connection.send ──▶ worker i (_worker.py): attach blocks once (cached),
        │                                run the numba kernel on its rows, in place
        │ ◀── ("ok", partials) ──────┘
        │ wait() on every pipe *and* every process sentinel: a dead worker is noticed at
        ▼ once (never the stdlib Pool's hang, gh-66587), named, and the workers restarted
    combine partials in the fixed tree order (partition.py) ─▶ result

Workers ignore SIGINT: on Ctrl-C the parent kills them, and the next call starts new ones.
Each worker watches its parent's sentinel and exits if the parent dies.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import select
import signal
import sys
import itertools
import threading
import time
import weakref
from multiprocessing.connection import wait
from typing import Any, Iterator

import numpy as np

from . import doorbell, execute
from ._system import usable_cores
from .errors import (BlockBusyError, InputError, KernelError, KernelTimeoutError, PoolClosedError,
                     RemoteTraceback, WorkerCrashedError)
from .execute import Stats, make_plan
from .kernel import Kernel
from .progress import progress_bar
from .shared import SharedArray, on_block_release

log = logging.getLogger("sharedcompute")

START_METHODS = ("fork", "spawn", "forkserver")
_live_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
_busy_writes: dict[str, int] = {}
_busy_lock = threading.Lock()


def default_start_method() -> str:
    """forkserver where available (Linux; 3.14's default), else spawn. Never fork by default:
    forking after numba's OpenMP layer or any thread has started can kill or hang the child."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _numba_threads_started() -> bool:
    mod = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(mod, "_is_initialized", False))


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class WorkerInsight:
    """Seconds one worker spent attaching, compiling, computing and idle."""

    def __init__(self, pid: int):
        self.pid, self.compile_s, self.compute_s, self.busy_s, self.tasks = pid, 0.0, 0.0, 0.0, 0

    def as_dict(self, wall: float) -> dict:
        other = max(self.busy_s - self.compile_s - self.compute_s, 0.0)
        return dict(pid=self.pid, tasks=self.tasks, attach_s=other, compile_s=self.compile_s,
                    compute_s=self.compute_s, idle_s=max(wall - self.busy_s, 0.0))


class Insights(list):
    """Per-worker timings (a list of dicts) that prints as a table."""

    @property
    def imbalance(self) -> float:
        busy = [w["compute_s"] for w in self]
        return max(busy) / (sum(busy) / len(busy)) if busy and sum(busy) > 0 else 1.0

    def __str__(self) -> str:
        lines = [f"{'worker pid':>10} {'tasks':>6} {'attach s':>9} {'compile s':>9} "
                 f"{'compute s':>9} {'idle s':>9}"]
        for w in self:
            lines.append(f"{w['pid']:>10} {w['tasks']:>6} {w['attach_s']:>9.3f} "
                         f"{w['compile_s']:>9.3f} {w['compute_s']:>9.3f} {w['idle_s']:>9.3f}")
        lines.append(f"imbalance (max/mean compute): {self.imbalance:.2f}")
        return "\n".join(lines)


class _ProcessExecutor:
    """Worker processes, their pipes, and the wait loop that notices every way they fail."""

    in_process = False

    def __init__(self, n_workers: int, start_method: str):
        self.n_workers = n_workers
        self.start_method = start_method
        self.ctx = mp.get_context(start_method)
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.barrier: Any = None
        self.seq = 0
        self.started_at = time.perf_counter()
        self.insights: list[WorkerInsight] = []
        self.lines: doorbell.Lines | None = None
        self.generation = 0  # bumped at every (re)start: cached tasks die with their workers
        self.drop_memos: list[int] = []

    def start(self) -> None:
        from . import _worker
        self.lines = doorbell.Lines.create(self.ctx, self.n_workers) if doorbell.ENABLED else None
        # iterate's sweeps meet in the doorbell lines; the semaphore barrier (~14 ms to create
        # here) is only the fallback where the doorbell is off
        self.barrier = self.ctx.Barrier(self.n_workers) if self.lines is None else None
        self.generation += 1
        self.drop_memos: list[int] = []  # cached tasks the workers should drop (next task)
        self.insights = []
        bell = self.lines.raw if self.lines is not None else None
        try:
            for i in range(self.n_workers):
                parent_conn, child_conn = self.ctx.Pipe(duplex=True)
                proc = self.ctx.Process(target=_worker.main,
                                        args=(child_conn, i, self.barrier, bell, self.n_workers),
                                        name=f"sharedcompute-worker-{i}", daemon=True)
                proc.start()
                child_conn.close()
                self.procs.append(proc)
                self.conns.append(parent_conn)
                self.insights.append(WorkerInsight(proc.pid))
        except BaseException:  # Ctrl-C or a failed start: never leave a half-started pool
            self.stop(kill=True)
            self.insights = []
            raise
        self.started_at = time.perf_counter()
        log.debug("started %d %s workers: %s", self.n_workers, self.start_method,
                  [p.pid for p in self.procs])

    @property
    def alive(self) -> bool:
        # one select() over the sentinels: a per-process is_alive() costs a poll each
        return len(self.procs) == self.n_workers and not select.select(
            [p.sentinel for p in self.procs], [], [], 0)[0]

    def send(self, i: int, msg: tuple) -> None:
        """Send through worker i's pipe and count it in its doorbell line, so a polling
        worker knows a message is waiting without a system call."""
        self.conns[i].send(msg)
        if self.lines is not None:
            self.lines.set_word(i, doorbell.PIPE_SENT, self.lines.word(i, doorbell.PIPE_SENT) + 1)

    def send_all(self, msg: tuple) -> None:
        for i in range(len(self.conns)):
            try:
                self.send(i, msg)
            except OSError:
                pass

    def stop(self, kill: bool = False) -> None:
        if not kill:
            self.send_all(("stop",))
            for p in self.procs:
                p.join(timeout=2.0)
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(timeout=5.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        self.barrier = None  # its named semaphores are unlinked when it is collected
        if self.lines is not None:
            self.lines.release()
            self.lines = None

    def run(self, tasks: list[dict], *, what: str, timeout: float | None, progress: Any,
            memo: int | None = None) -> list:
        bar = progress_bar(progress, what)
        self.seq += 1
        seq = self.seq
        results: list[Any] = [None] * len(tasks)
        errors: list[KernelError] = []
        reported = [0] * len(tasks)
        pending = set(range(len(tasks)))
        deadline = None if timeout is None else time.monotonic() + timeout
        drop: list[int] = []
        if len(tasks) == self.n_workers:  # every worker hears which cached tasks to drop
            drop, self.drop_memos = self.drop_memos, []
        try:
            for i, task in enumerate(tasks):
                try:
                    self.send(i, ("task", seq, task, memo, drop))
                except OSError:
                    self._crashed(i, tasks, what)
            while pending:
                for i, msg in self._messages(pending, seq, deadline, tasks, what, timeout):
                    if msg[0] == "progress":
                        reported[i] += msg[2]
                        if bar:
                            bar.update(msg[2])
                        continue
                    self._account(i, msg[3])
                    if bar:
                        bar.update(msg[3][3] - reported[i])
                    pending.discard(i)
                    if msg[0] == "ok":
                        results[i] = msg[2]
                    else:
                        errors.append(_kernel_error(what, msg[2]))
        except BaseException:
            # Ctrl-C, a crash or a timeout: the workers' state is unknown; kill them all.
            self.stop(kill=True)
            raise
        finally:
            if bar:
                bar.finish()
        if errors:
            # In iterate, a failing worker aborts the barrier and the others then report
            # BrokenBarrierError: raise the original failure, not its echo.
            primary = [e for e in errors if e.remote_type != "BrokenBarrierError"]
            raise (primary or errors)[0]
        return results

    def ring(self, memo: int, active: list[int], idle_result: Any, *, what: str,
             timeout: float | None, tasks: list) -> list:
        """Start a call whose tasks the workers cached under ``memo`` through the doorbell,
        poll for its results, then sleep on the pipes and sentinels like run()."""
        lines = self.lines
        self.seq += 1
        seq = self.seq
        results: list[Any] = [idle_result] * self.n_workers  # workers with no rows: not rung
        piped: set[int] = set()
        errors: list[KernelError] = []
        pending = set(active)
        deadline = None if timeout is None else time.monotonic() + timeout

        def all_done() -> bool:
            for i in list(pending):
                if lines.word(i, doorbell.DONE) == seq:
                    pending.discard(i)
            return not pending

        try:
            for i in active:
                lines.set_word(i, doorbell.MEMO, memo)
                lines.set_word(i, doorbell.RING, seq)
            doorbell.fence()  # a worker writes W_ASLEEP before re-reading RING (Dekker)
            for i in active:
                if lines.word(i, doorbell.W_ASLEEP):
                    try:
                        self.send(i, ("wake",))
                    except OSError:
                        self._crashed(i, tasks, what)
            if not doorbell.spin_until(all_done):
                for i in pending:
                    lines.set_word(i, doorbell.P_ASLEEP, 1)
                doorbell.fence()
                while not all_done():
                    for i, msg in self._messages(pending, seq, deadline, tasks, what, timeout):
                        self._account(i, msg[3])
                        pending.discard(i)
                        piped.add(i)
                        if msg[0] == "ok":
                            results[i] = msg[2]
                        else:
                            errors.append(_kernel_error(what, msg[2]))
                for i in active:
                    lines.set_word(i, doorbell.P_ASLEEP, 0)
        except BaseException:
            self.stop(kill=True)
            raise
        for i in active:
            if i not in piped:
                self._account(i, lines.stats(i))
                data = lines.result(i)
                results[i] = pickle.loads(data) if data else None
        if errors:
            raise errors[0]
        return results

    def _messages(self, pending: set, seq: int, deadline: float | None, tasks: list, what: str,
                  timeout: float | None) -> Iterator[tuple[int, tuple]]:
        """Sleep on the pending workers' pipes and every process sentinel; yield (worker,
        message) for this call's results, errors and progress. A dead worker or the
        deadline raises; stale messages and "done" pings are dropped."""
        wait_s = None if deadline is None else max(deadline - time.monotonic(), 0)
        ready = wait([self.conns[i] for i in pending] + [p.sentinel for p in self.procs],
                     timeout=wait_s)
        if not ready and deadline is not None:
            self._timed_out(pending, tasks, what, timeout)
        for obj in ready:
            if obj not in self.conns:
                self._crashed([p.sentinel for p in self.procs].index(obj), tasks, what)
            i = self.conns.index(obj)
            try:
                msg = obj.recv()
            except (EOFError, OSError):
                self._crashed(i, tasks, what)
            if msg[1] == seq and msg[0] != "done":
                yield i, msg

    def _account(self, i: int, stats: tuple) -> None:
        info = self.insights[i]
        info.compile_s += stats[0]
        info.compute_s += stats[1]
        info.busy_s += stats[2]
        info.tasks += 1

    def _crashed(self, i: int, tasks: list, what: str) -> None:
        proc = self.procs[i]
        proc.join(timeout=1.0)
        code = proc.exitcode
        if code == UNGUARDED_MAIN_EXIT:
            main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
            raise WorkerCrashedError(
                f"worker {proc.pid} could not start: {main} creates a sc.Pool when it is "
                f"imported, and with start_method={self.start_method!r} every worker imports "
                "the main module. Put the script's work under `if __name__ == \"__main__\":` "
                "(or start_method='fork' on Linux); restarting the workers cannot help",
                pid=proc.pid, exitcode=code, signal_name=_signal_name(code), rows=(0, 0))
        rows = _task_rows(tasks[i]) if i < len(tasks) else (0, 0)
        sig = _signal_name(code)
        hint = (" (SIGKILL usually means the kernel ran out of memory and the OS killed it)"
                if sig == "SIGKILL" else "")
        raise WorkerCrashedError(
            f"worker {proc.pid} died of {sig}{hint} while running kernel {what} on rows "
            f"[{rows[0]}, {rows[1]}); those rows of the arrays it writes are undefined. The pool "
            "starts new workers on its next call.", pid=proc.pid, exitcode=code, signal_name=sig,
            rows=rows)

    def _timed_out(self, pending: set, tasks: list, what: str, timeout: float) -> None:
        stuck = sorted(pending)
        desc = ", ".join(f"worker {self.procs[i].pid} rows [{_task_rows(tasks[i])[0]}, "
                         f"{_task_rows(tasks[i])[1]})" for i in stuck)
        raise KernelTimeoutError(
            f"kernel {what} did not finish within timeout={timeout} s ({desc}); the stuck "
            "workers were killed and are replaced on the next call; rows they were writing "
            "are undefined")


UNGUARDED_MAIN_EXIT = 86  # a worker's exit code: the main module starts a pool on import


def _exit_unguarded_main() -> None:
    """In a child that is still importing the main module (spawn/forkserver), a Pool means
    the script lacks its __main__ guard: say so and exit with a code the parent knows."""
    sys.stderr.write(
        "sharedcompute: this process is a worker importing the main module, which creates "
        "a sc.Pool at import time; protect the script's entry point with\n"
        "    if __name__ == \"__main__\":\n"
        "        main()\n")
    sys.stderr.flush()
    os._exit(UNGUARDED_MAIN_EXIT)


def _task_rows(task: dict) -> tuple[int, int]:
    from .partition import chunk_grid
    chunks = chunk_grid(task["n_rows"], task["rows_per_chunk"])
    ca, cb = task["range"]
    return (chunks[ca][0], chunks[cb - 1][1]) if cb > ca else (0, 0)


def _kernel_error(what: str, info: dict) -> KernelError:
    s, e = info["rows"]
    err = KernelError(f"kernel {what} raised {info['type']}: {info['message']} (rows [{s}, {e}), "
                      f"worker {info['pid']})", kernel=what, rows=(s, e), worker=info["pid"],
                      remote_type=info["type"])
    err.__cause__ = RemoteTraceback(info["traceback"])
    return err


class _InlineExecutor:
    """Runs every task in the calling process, in order: breakpoints and print() work."""

    in_process = True

    def __init__(self, n_workers: int):
        self.n_workers = n_workers
        self.insights = [WorkerInsight(0)]
        self.started_at = time.perf_counter()
        self.start_method = "inline"

    def run(self, tasks: list[dict], *, what: str, timeout: float | None, progress: Any,
            memo: int | None = None) -> list:
        bar = progress_bar(progress, what)
        out = []
        try:
            for task in tasks:
                stats = Stats(progress=bar.update if bar else None)
                t0 = time.perf_counter()
                try:
                    out.append(execute.run_task(task, stats))
                except Exception as exc:
                    s, e = stats.rows
                    raise KernelError(f"kernel {what} raised {type(exc).__name__}: {exc} "
                                      f"(rows [{s}, {e}), in process)", kernel=what, rows=(s, e),
                                      remote_type=type(exc).__name__) from exc
                finally:
                    info = self.insights[0]
                    info.compile_s += stats.compile_s
                    info.compute_s += stats.compute_s
                    info.busy_s += time.perf_counter() - t0
                    info.tasks += 1
        finally:
            if bar:
                bar.finish()
        return out


class Pool:
    """A persistent pool of worker processes running numba kernels in place on shared arrays.

    Parameters
    ----------
    n_workers : number of worker processes; None means the cores this process may use
        (CPU affinity, capped by a cgroup CPU quota), not os.cpu_count().
    start_method : "fork", "spawn", "forkserver", or None for forkserver on Linux (the
        Python 3.14 default) and spawn elsewhere. fork is refused once numba's parallel
        threads have run in this process (the forked child would be killed by OpenMP).
    backend : "processes" (default) or "inline", which runs every partition in this process
        with the same partitioning, halos and combine order, for debugging.
    boundscheck : compile kernels with numba's bounds checks (default: the environment
        variable SHAREDCOMPUTE_BOUNDSCHECK=1), so a read outside a partition's rows and
        halo raises KernelError instead of reading a neighbour's rows; slower, for debugging.

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> from sharedcompute.kernels.elementwise import triad
    >>> from sharedcompute.kernels.reductions import total
    >>> with sc.Pool(n_workers=2) as pool:
    ...     b = pool.array(np.ones(1000)); c = pool.array(np.ones(1000)); a = pool.zeros(1000)
    ...     _ = pool.map(triad, a, b, c, 2.0)
    ...     float(pool.reduce(total, a))
    3000.0
    """

    def __init__(self, n_workers: int | None = None, start_method: str | None = None,
                 backend: Any = "processes", boundscheck: bool | None = None):
        if backend == "processes" and getattr(mp.current_process(), "_inheriting", False):
            _exit_unguarded_main()
        if n_workers is None:
            n_workers = usable_cores().n
        if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) \
                or n_workers < 1:
            raise InputError(f"n_workers={n_workers!r} must be a positive integer (or None for "
                             "the usable cores)")
        self.n_workers = int(n_workers)
        self._lock = threading.RLock()
        self._closed = False
        self._blocks: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._forget: list[str] = []
        self._restarts = 0
        self._memo: dict[tuple, _Memo] = {}  # calls whose tasks the workers keep
        self._memo_ids = itertools.count(1)
        self._dask: Any = None
        self.boundscheck = execute.boundscheck_default() if boundscheck is None \
            else bool(boundscheck)
        if backend == "dask" or type(backend).__module__.startswith("distributed"):
            from .dask_backend import DaskBackend
            self._dask = DaskBackend(None if backend == "dask" else backend, self.n_workers)
            self.n_workers = self._dask.n_workers
            self.start_method = "dask"
            self._executor = _InlineExecutor(self.n_workers)  # unused; keeps insights() valid
        elif backend == "inline":
            self.start_method = "inline"
            self._executor: Any = _InlineExecutor(self.n_workers)
        elif backend == "processes":
            method = start_method or default_start_method()
            if method not in START_METHODS or method not in mp.get_all_start_methods():
                raise InputError(f"start_method={method!r} is not available here; use one of "
                                 f"{[m for m in START_METHODS if m in mp.get_all_start_methods()]}")
            if method == "fork" and _numba_threads_started():
                raise InputError(
                    "start_method='fork' is unsafe here: numba's parallel threads (OpenMP) have "
                    "already run in this process, and a forked worker would be killed "
                    "('fork() called from a process already using GNU OpenMP'); use "
                    "start_method='forkserver' or 'spawn'")
            self.start_method = method
            self._executor = _ProcessExecutor(self.n_workers, method)
            self._executor.start()
        else:
            raise InputError(f"backend={backend!r} is not known; use 'processes', 'inline', "
                             "'dask' or a distributed.Client")
        _live_pools.add(self)

    # -- arrays --------------------------------------------------------------------------------
    def _own(self, arr: SharedArray) -> SharedArray:
        self._check_open()
        if arr.block is not None:
            self._blocks.add(arr.block)
        return arr

    def empty(self, shape: int | tuple, dtype: Any = np.float64) -> SharedArray:
        """A new shared array owned by this pool (freed when the pool closes)."""
        self._check_open()
        if self._dask is not None:
            return self._dask.empty(shape, dtype)
        return self._own(SharedArray.empty(shape, dtype))

    def zeros(self, shape: int | tuple, dtype: Any = np.float64) -> SharedArray:
        """A new zero-filled shared array owned by this pool."""
        self._check_open()
        if self._dask is not None:
            return self._dask.zeros(shape, dtype)
        return self._own(SharedArray.zeros(shape, dtype))

    def empty_like(self, x: Any, dtype: Any = None) -> SharedArray:
        """A new shared array with the shape (and dtype) of ``x``."""
        return self.empty(_shape_of(x), _dtype_of(x) if dtype is None else dtype)

    def zeros_like(self, x: Any, dtype: Any = None) -> SharedArray:
        """A new zero-filled shared array with the shape (and dtype) of ``x``."""
        return self.zeros(_shape_of(x), _dtype_of(x) if dtype is None else dtype)

    def array(self, x: Any) -> SharedArray:
        """Copy ``x`` (once) into a new C-ordered shared array owned by this pool."""
        self._check_open()
        if self._dask is not None:
            return self._dask.array(x)
        return self._own(SharedArray.from_array(x))

    # -- running kernels -----------------------------------------------------------------------
    def map(self, kernel: Kernel, *args: Any, rows: int | None = None, boundary: Any = None,
            timeout: float | None = None, progress: Any = False,
            _chunk_rows: int | None = None) -> Any:
        """Run ``kernel`` in place over the rows of its shared-array arguments; returns the
        written array (a tuple if it writes several).

        ``boundary`` overrides a stencil's default, ``timeout`` (seconds) raises
        KernelTimeoutError and replaces stuck workers, ``progress=True`` shows a bar.

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.elementwise import axpy
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     y = pool.array(np.ones(5)); x = pool.array(np.arange(5.0))
        ...     pool.map(axpy, y, x, 10.0).numpy()
        array([ 1., 11., 21., 31., 41.])
        """
        execute.check_kind(kernel, "map")
        return self._call(execute.map_call, kernel, args, rows, boundary, timeout, progress,
                          chunk_rows=_chunk_rows)

    def reduce(self, kernel: Kernel, *args: Any, rows: int | None = None,
               timeout: float | None = None, progress: Any = False,
               _chunk_rows: int | None = None) -> Any:
        """Run a reduction kernel; partials are combined in a fixed pairwise order, so the
        result is bitwise the same for any number of workers.

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.reductions import mean_var
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     tuple(float(v) for v in pool.reduce(mean_var, pool.array(np.arange(4.0))))
        (4.0, 1.5, 1.25)
        """
        execute.check_kind(kernel, "reduce")
        return self._call(execute.reduce_call, kernel, args, rows, None, timeout, progress,
                          chunk_rows=_chunk_rows)

    def iterate(self, kernel: Kernel, out: SharedArray, u: SharedArray, *params: Any,
                steps: int, residual: Kernel | None = None, tol: float = 0.0,
                check_every: int = 10, boundary: Any = None, timeout: float | None = None,
                progress: Any = False) -> SharedArray:
        """Run ``steps`` sweeps of ``kernel(out, u, *params)``, swapping out and u after each,
        with the loop inside the workers and a barrier between sweeps.

        With ``residual`` (a reduction of (new, old) to a float), stop early once its value
        is <= ``tol``, checked every ``check_every`` sweeps. Returns the array holding the
        last sweep. With boundary 'none' the edge rows of ``u`` are copied to ``out`` first,
        so they stay fixed (Dirichlet).

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.stencils import heat1d
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     u = pool.array(np.array([0.0, 0.0, 4.0, 0.0, 0.0])); out = pool.empty_like(u)
        ...     pool.iterate(heat1d, out, u, 0.25, steps=2).numpy()
        array([0. , 1. , 1.5, 1. , 0. ])
        """
        from .iterate import iterate_call
        return self._call(iterate_call, kernel, (out, u) + params, None, boundary, timeout,
                          progress, steps=steps, residual=residual, tol=tol,
                          check_every=check_every, pool=self)

    def _call(self, runner: Any, kernel: Kernel, args: tuple, rows: Any, boundary: Any,
              timeout: Any, progress: Any, chunk_rows: int | None = None, **extra: Any) -> Any:
        self._check_open()
        if self._dask is not None:
            plan = self._dask.plan(kernel, args, rows, boundary, chunk_rows)
            if runner is execute.map_call:
                return self._dask.map(plan, timeout, progress)
            if runner is execute.reduce_call:
                return self._dask.reduce(plan, timeout, progress)
            extra.pop("pool", None)
            return self._dask.iterate(plan, timeout=timeout, progress=progress, **extra)
        ex = self._executor
        if isinstance(kernel, Kernel) and not ex.in_process:
            kernel.check_sendable(self.start_method)
        key = None
        if not extra and not progress and chunk_rows is None and \
                getattr(ex, "lines", None) is not None:
            key = _memo_key(runner, kernel, args, rows, boundary)
        with self._lock:
            self._check_open()
            self._ensure_workers()
            memo = self._memo.get(key) if key is not None else None
            if memo is not None and memo.matches(args, ex.generation):
                try:
                    return self._call_again(memo, kernel, args, timeout)
                except KernelError as exc:
                    if exc.remote_type == "LookupError":  # a worker lost the task: never
                        self._memo.pop(key, None)       # ring it again (re-running a map
                    raise                               # is not safe: y += x twice)
            plan = make_plan(kernel, args, rows=rows, boundary=boundary, in_process=ex.in_process,
                             chunk_rows_override=chunk_rows, boundscheck=self.boundscheck)
            names = [b.name for b in plan.written_blocks if b is not None]
            _claim_writes(names, kernel)
            memo_id = next(self._memo_ids) if key is not None else None
            try:
                if memo_id is None:
                    return runner(plan, ex, timeout=timeout, progress=progress, **extra)
                out = runner(plan, ex, timeout=timeout, progress=progress, memo=memo_id)
            except BaseException:
                if memo_id is not None:
                    ex.drop_memos.append(memo_id)  # some workers may have cached it
                raise
            finally:
                _release_writes(names)
            stale = self._memo.pop(key, None)  # same key, objects gone (an id was reused)
            if stale is not None:
                ex.drop_memos.append(stale.memo_id)
            if len(self._memo) >= MEMO_SIZE:
                ex.drop_memos.append(self._memo.pop(next(iter(self._memo))).memo_id)
            self._memo[key] = _Memo(memo_id, ex.generation, args, plan, ex.n_workers)
            return out

    def _call_again(self, memo: "_Memo", kernel: Kernel, args: tuple, timeout: Any) -> Any:
        """A call the workers have cached: check the arrays, ring the doorbell."""
        for a in args:
            if type(a) is SharedArray and a.block is not None:
                a.block.check_intact()
        written = [args[i] for i in memo.writes]
        names = memo.written_names
        _claim_writes(names, kernel)
        try:
            ex = self._executor
            results = ex.ring(memo.memo_id, memo.active, {} if kernel.kind == "reduce" else None,
                              what=kernel.name, timeout=timeout, tasks=memo.tasks)
        finally:
            _release_writes(names)
        if kernel.kind == "reduce":
            return execute.finish_reduce(kernel, memo.n_chunks, results)
        return written[0] if len(written) == 1 else tuple(written)

    def _ensure_workers(self) -> None:
        ex = self._executor
        if ex.in_process:
            return
        if not ex.alive:
            if ex.procs:
                ex.stop(kill=True)
            log.warning("sharedcompute: restarting %d workers after a failure", self.n_workers)
            self._restarts += 1
            self._memo.clear()
            ex.start()
            self._forget = []
        elif self._forget:
            self._memo.clear()  # the workers drop every cached task when told to forget
            ex.send_all(("forget", self._forget))
            self._forget = []

    def _block_released(self, name: str) -> None:
        if not self._closed:
            self._forget.append(name)

    # -- state and lifetime ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def restarts(self) -> int:
        """How many times the workers were restarted after a crash, timeout or Ctrl-C."""
        return self._restarts

    @property
    def pids(self) -> list[int]:
        ex = self._executor
        return [] if ex.in_process else [p.pid for p in ex.procs]

    def insights(self) -> Insights:
        """Per-worker seconds spent attaching, compiling, computing and idle.

        Examples
        --------
        >>> import sharedcompute as sc
        >>> with sc.Pool(1, backend="inline") as pool:
        ...     "imbalance" in str(pool.insights())
        True
        """
        wall = time.perf_counter() - self._executor.started_at
        return Insights(w.as_dict(wall) for w in self._executor.insights)

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError("this pool is closed; create a new sc.Pool()")

    def close(self) -> None:
        """Stop the workers and free every shared array this pool created."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            if self._dask is not None:
                self._dask.close()
            elif not self._executor.in_process:
                self._executor.stop()
            for block in list(self._blocks):
                block.release(strict=False)
        _live_pools.discard(self)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self):
        raise TypeError("a sharedcompute Pool cannot be pickled or sent to another process; "
                        "send its SharedArrays instead")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<sharedcompute.Pool {self.n_workers} workers, {self.start_method}, {state}>"

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _shape_of(x: Any) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _dtype_of(x: Any) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


MEMO_SIZE = 32  # cached calls per pool (each worker keeps the last 64 memo ids)
_SCALARS = (int, float, complex, bool, np.number, np.bool_)


def _memo_key(runner: Any, kernel: Any, args: tuple, rows: Any, boundary: Any) -> tuple | None:
    """What identifies a repeatable call: the kernel, the very same SharedArray objects (by
    id, checked with weak references) and equal scalars. None: not cacheable."""
    if not isinstance(kernel, Kernel):
        return None
    if runner is execute.map_call:
        if kernel.kind != "map":
            return None
    elif runner is not execute.reduce_call or kernel.kind != "reduce":
        return None
    key: list = [runner, kernel, rows, _scalar_key(boundary)]
    for a in args:
        if type(a) is SharedArray:
            key.append(id(a))
        elif isinstance(a, _SCALARS):
            key.append(_scalar_key(a))
        else:
            return None
    try:
        hash(tuple(key))
    except TypeError:
        return None
    return tuple(key)


def _scalar_key(value: Any) -> Any:
    """A scalar as its type and exact bits: 0.0 == -0.0 would otherwise share a cached call."""
    if isinstance(value, np.generic):
        return (type(value), value.tobytes())
    if isinstance(value, float):
        return (type(value), value.hex())
    if isinstance(value, complex):
        return (type(value), value.real.hex(), value.imag.hex())
    return (type(value), value)


class _Memo:
    """A call whose tasks every worker keeps under ``memo_id``: valid for one generation of
    workers, and only while the very same array objects are passed."""

    def __init__(self, memo_id: int, generation: int, args: tuple, plan: Any, n_workers: int):
        self.memo_id, self.generation = memo_id, generation
        self.n_chunks = len(plan.chunks)
        self.refs = [weakref.ref(a) if type(a) is SharedArray else None for a in args]
        self.writes = sorted(plan.kernel.writes)
        self.written_names = [args[i].block.name for i in self.writes
                              if args[i].block is not None]
        # what error messages need of each task (the rows it covers), without the arrays
        self.tasks = [dict(n_rows=plan.n_rows, rows_per_chunk=plan.rows_per_chunk, range=r)
                      for r in execute._ranges(self.n_chunks, n_workers)]
        self.active = [i for i, t in enumerate(self.tasks) if t["range"][1] > t["range"][0]]

    def matches(self, args: tuple, generation: int) -> bool:
        return generation == self.generation and all(
            r is None or r() is a for r, a in zip(self.refs, args))


def _claim_writes(names: list[str], kernel: Kernel) -> None:
    with _busy_lock:
        busy = [n for n in names if _busy_writes.get(n)]
        if busy:
            raise BlockBusyError(f"kernel {getattr(kernel, 'name', kernel)} would write shared "
                                 f"array {busy[0]!r}, which another call is writing right now; "
                                 "wait for it to finish (writes are never interleaved)")
        for n in names:
            _busy_writes[n] = 1


def _release_writes(names: list[str]) -> None:
    with _busy_lock:
        for n in names:
            _busy_writes.pop(n, None)


def _on_release(name: str) -> None:
    for pool in list(_live_pools):
        pool._block_released(name)


on_block_release(_on_release)
