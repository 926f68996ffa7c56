"""Executors: who runs a call's tasks. ProcessExecutor owns the worker processes, their pipes
and the wait loop that notices every way they fail; InlineExecutor runs the same tasks in
the calling process, in order, for debugging.

A call's path through a ProcessExecutor (names are the real functions)::

    cold call (pipes)                              repeated call (doorbell, doorbell.py)
    LocalBackend.map / reduce (execute.py)         LocalBackend._call_again (execute.py)
      │ make_plan (plan.py) ─▶ Plan.task × n         │ the workers hold the Tasks under a memo id
      ▼                                              ▼
    ProcessExecutor.run                            ProcessExecutor.ring
      │ Connection.send(("task", seq, Task, ...))    │ doorbell.ring: line[MEMO], line[RING]
      ▼                                              ▼
    _worker.main ─▶ _run_sent ─▶ _task.run_task    _worker.main ─▶ _run_rung ─▶ prepared run
      │ conn.send(("ok", seq, result, TaskStats))    │ WorkerBell.answer: result bytes, DONE
      ▼                                              ▼
    ProcessExecutor._messages: wait() on every     doorbell.await_answers: poll DONE, then
    pipe and every process sentinel                sleep in _messages like the cold path
      │                                              │
      ▼ results (reduce: tree nodes) ─▶ LocalBackend combines them (plan.finish_reduce)

The parent: sends one Task per worker, then sleeps on the pipes *and* the process sentinels,
so a dead worker is noticed at once (never the stdlib Pool's hang, gh-66587), named, and all
workers are killed; the backend starts new ones on its next call. Errors come back as
errors.remote_error_info dicts and become KernelErrors (errors.kernel_error); in iterate the
first failure is raised, not the barrier echoes it causes in the others.
Starting (ProcessExecutor.start): a forkserver pool's workers come from a server preloaded
with NumPy, numba and the kernel modules (_preload.py); under fork the parent sets numba up
once first. Pool.warmup sends every worker a "warmup" message (ProcessExecutor.warmup).
A worker: attaches each block once (shared.Block.attach caches it), runs its rows in place,
ignores SIGINT (the parent handles Ctrl-C and kills it) and exits if its parent dies.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import select
import signal
import sys
import time
from multiprocessing.connection import wait
from typing import Any, Iterator

from . import doorbell
from ._insights import WorkerInsight
from ._task import Stats, detached, run_task
from .errors import (KernelError, KernelTimeoutError, PoolClosedError, WorkerCrashedError,
                     kernel_error, remote_error_info)
from .plan import Task
from .progress import progress_bar

log = logging.getLogger("sharedcompute")

UNGUARDED_MAIN_EXIT = 86  # a worker's exit code: the main module starts a pool on import
UNREADABLE = -1  # the seq a worker answers with when it could not unpickle a task (_worker)


def exit_if_importing_main() -> None:
    """In a child that is still importing the main module (spawn/forkserver), a Pool means
    the script lacks its __main__ guard: say so and exit with a code the parent knows."""
    if not getattr(mp.current_process(), "_inheriting", False):
        return
    sys.stderr.write(  # one line per worker: the parent's WorkerCrashedError says the rest
        "sharedcompute: a worker stops: the main module creates a sc.Pool when imported "
        "(add `if __name__ == \"__main__\":`)\n")
    sys.stderr.flush()
    os._exit(UNGUARDED_MAIN_EXIT)


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _first_error(errors: list[KernelError]) -> KernelError:
    """In iterate, a failing worker aborts the barrier and the others then report a broken
    barrier: raise the original failure, not its echo."""
    primary = [e for e in errors if not e.echo]
    return (primary or errors)[0]


class ProcessExecutor:
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
        self.interrupted = False  # set by interrupt(): the pool is being closed
        self.preload: dict = {}  # what _preload.start_forkserver did at the last start

    @property
    def rings(self) -> bool:
        """Whether repeated calls can be started through the doorbell."""
        return self.lines is not None

    def start(self) -> None:
        from . import _worker
        if self.start_method == "forkserver":  # one preloaded server forks every worker
            from ._preload import start_forkserver
            self.preload = start_forkserver(self.ctx)
        elif self.start_method == "fork":
            from ._preload import prepare_fork_parent
            prepare_fork_parent()
        self.lines = doorbell.Lines.create(self.ctx, self.n_workers) if doorbell.ENABLED else None
        self.barrier = doorbell.make_barrier(self.ctx, self.lines, self.n_workers)
        self.generation += 1
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

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def worker_insights(self) -> list[WorkerInsight]:
        """Each worker's seconds, its rung calls' totals (kept in its line) included."""
        if self.lines is None:
            return self.insights
        return [w.plus(*self.lines.totals(i)) for i, w in enumerate(self.insights)]

    def send(self, i: int, msg: tuple) -> None:
        self.conns[i].send(msg)
        doorbell.count_pipe_send(self.lines, i)

    def send_all(self, msg: tuple) -> None:
        for i in range(len(self.conns)):
            try:
                self.send(i, msg)
            except OSError:
                pass

    def interrupt(self) -> None:
        """From another thread (Pool.close): kill the workers of the running call, which
        notices at once (it sleeps on their sentinels) and raises PoolClosedError."""
        self.interrupted = True
        for p in list(self.procs):
            try:
                p.kill()
            except Exception:  # already gone
                pass

    def forget_after_fork(self) -> None:
        """In an os.fork() child: the workers are the parent's. Drop them from this process's
        view, including multiprocessing's list of children, whose exit handler would
        otherwise terminate and join them (CPython Lib/multiprocessing/process.py keeps
        ``_children``; its ``_exit_function`` terminates daemonic ones)."""
        from multiprocessing import process
        for p in self.procs:
            process._children.discard(p)
        self.procs, self.conns, self.lines, self.barrier = [], [], None, None

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
            self.insights = self.worker_insights()  # the totals leave with the lines
            self.lines.release()
            self.lines = None

    def run(self, tasks: list[Task], *, what: str, timeout: float | None, progress: Any,
            total: int = 0, memo: int | None = None, drop: list[int] = ()) -> list:
        """Send each worker its task and wait for all of them; ``memo``: an id under which
        the workers keep their tasks for ring(); ``drop``: cached ids they forget first."""
        if self.barrier is not None and tasks and tasks[0].op == "iterate":
            self.barrier.reset()  # a failed earlier iterate left it broken; workers are idle
        bar = progress_bar(progress, total, what) if progress else None  # none asked: no call
        self.seq += 1
        seq = self.seq
        results: list[Any] = [None] * len(tasks)
        errors: list[KernelError] = []
        reported = [0] * len(tasks)
        pending = set(range(len(tasks)))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for i, task in enumerate(tasks):
                try:
                    self.send(i, ("task", seq, task, memo, list(drop), bar is not None))
                except OSError:
                    self._crashed(i, tasks, what)
            while pending:
                for i, msg in self._messages(pending, seq, deadline, tasks, what, timeout):
                    if msg[0] == "progress":
                        reported[i] += msg[2]
                        if bar:
                            bar.update(msg[2])
                        continue
                    self._finished(i, msg, results, errors, what)
                    pending.discard(i)
                    if bar:
                        bar.update(msg[3].chunks_done - reported[i])
        except BaseException:
            # Ctrl-C, a crash or a timeout: the workers' state is unknown; kill them all.
            self.stop(kill=True)
            raise
        finally:
            if bar:
                bar.finish()
        if errors:
            raise _first_error(errors)
        return results

    def ring(self, memo: int, active: list[int], idle_result: Any, *,
             what: str, timeout: float | None, tasks: list[Task], clear_values: bool = True,
             results: bool = True) -> list | None:
        """Start a call whose tasks the workers cached under ``memo`` through the doorbell,
        poll for its results, then sleep on the pipes and sentinels like run().
        ``results=False``: a map's, which are not read."""
        lines = self.lines
        self.seq += 1
        seq = self.seq
        try:
            state = doorbell.ring(lines, active, memo, seq, clear_values)
            if state == doorbell.ANSWERED:  # the common case: every answer is in the lines
                if not results:
                    return None
                out, piped, errors = [idle_result] * self.n_workers, set(), []
            else:
                if state == doorbell.ASLEEP:
                    for i in active:
                        if lines.word(i, doorbell.W_ASLEEP):
                            self._wake(i, tasks, what)
                out, piped, errors = self._await_rung(seq, active, idle_result, what, timeout,
                                                      tasks, state == doorbell.ASLEEP)
        except BaseException:
            self.stop(kill=True)
            raise
        if results:
            for i in active:  # workers with no rows were not rung: idle_result
                if i not in piped:
                    data = lines.result(i)
                    out[i] = pickle.loads(data) if data else None
        if errors:
            raise _first_error(errors)
        return out if results else None

    def _wake(self, i: int, tasks: list[Task], what: str) -> None:
        """A pipe message for worker i, which went to sleep before it saw the ring."""
        try:
            self.send(i, ("wake",))
        except OSError:
            self._crashed(i, tasks, what)

    def _await_rung(self, seq: int, active: list[int], idle_result: Any, what: str,
                    timeout: float | None, tasks: list[Task], spin: bool) -> tuple:
        """A rung call not answered within SPIN_S (or with a worker woken by pipe, then
        ``spin``: poll first): sleep on the pipes and sentinels. Returns the results of the
        workers that answered through a pipe, which they were, and the errors."""
        results: list[Any] = [idle_result] * self.n_workers
        piped: set[int] = set()
        errors: list[KernelError] = []
        pending = set(active)
        deadline = None if timeout is None else time.monotonic() + timeout

        def sleep() -> None:
            for i, msg in self._messages(pending, seq, deadline, tasks, what, timeout):
                self._finished(i, msg, results, errors, what)
                pending.discard(i)
                piped.add(i)

        doorbell.await_answers(self.lines, pending, seq, sleep, spin)
        return results, piped, errors

    def warmup(self, items: list, timeout: float | None) -> None:
        """Every worker compiles (or loads from numba's cache) the items' signatures now;
        the seconds count as compile time in insights, not as a task."""
        self.seq += 1
        seq = self.seq
        pending = set(range(self.n_workers))
        stand_ins = [_Warmup()] * self.n_workers  # what _crashed/_timed_out name
        errors: list[KernelError] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for i in range(self.n_workers):
                try:
                    self.send(i, ("warmup", seq, items))
                except OSError:
                    self._crashed(i, stand_ins, "warmup")
            while pending:
                for i, msg in self._messages(pending, seq, deadline, stand_ins, "warmup",
                                             timeout):
                    if msg[0] == "progress":
                        continue
                    stats = msg[3]
                    self.insights[i].compile_s += stats.compile_s
                    self.insights[i].busy_s += stats.busy_s
                    if msg[0] == "err":
                        errors.append(kernel_error(msg[2].get("kernel", "warmup"), msg[2]))
                    pending.discard(i)
        except BaseException:
            self.stop(kill=True)  # as run(): a crash or Ctrl-C leaves workers in no known state
            raise
        if errors:
            raise errors[0]

    def _finished(self, i: int, msg: tuple, results: list, errors: list, what: str) -> None:
        self.insights[i].account(*msg[3])
        if msg[0] == "ok":
            results[i] = msg[2]
        else:
            errors.append(kernel_error(what, msg[2]))

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
            if (msg[1] == seq and msg[0] != "done") or msg[1] == UNREADABLE:
                yield i, msg

    def _crashed(self, i: int, tasks: list[Task], what: str) -> None:
        if self.interrupted:
            raise PoolClosedError(f"the pool was closed by another thread while kernel {what} "
                                  "ran; the rows it was writing are undefined")
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
                pid=proc.pid, exitcode=code, signal_name=_signal_name(code),
                rows=(0, 0)) from None  # not the broken pipe it was noticed by
        rows = tasks[i].rows if i < len(tasks) and tasks[i] is not None else (0, 0)
        sig = _signal_name(code)
        hint = (" (SIGKILL usually means the kernel ran out of memory and the OS killed it)"
                if sig == "SIGKILL" else "")
        raise WorkerCrashedError(
            f"worker {proc.pid} died of {sig}{hint} while running kernel {what} on rows "
            f"[{rows[0]}, {rows[1]}); those rows of the arrays it writes are undefined. The pool "
            "starts new workers on its next call.", pid=proc.pid, exitcode=code, signal_name=sig,
            rows=rows) from None

    def _timed_out(self, pending: set, tasks: list[Task], what: str, timeout: float) -> None:
        stuck = sorted(pending)
        desc = ", ".join(f"worker {self.procs[i].pid} rows [{tasks[i].rows[0]}, "
                         f"{tasks[i].rows[1]})" for i in stuck)
        raise KernelTimeoutError(
            f"kernel {what} did not finish within timeout={timeout} s ({desc}); the stuck "
            "workers were killed and are replaced on the next call; rows they were writing "
            "are undefined")


class _Warmup:
    """Stands in for a Task in the error messages of a warmup: it has no rows."""

    rows = (0, 0)


class _NoBarrier:
    """Inline iterate runs all chunks in one task: its sweeps need no meeting point."""

    def wait(self) -> None:
        pass

    def abort(self) -> None:
        pass


class InlineExecutor:
    """Runs every task in the calling process, in order: breakpoints and print() work."""

    in_process = True
    rings = False
    generation = 0
    pids: list[int] = []

    def __init__(self, n_workers: int):
        self.n_workers = n_workers
        self.insights = [WorkerInsight(0)]
        self.started_at = time.perf_counter()
        self.start_method = "inline"

    def worker_insights(self) -> list[WorkerInsight]:
        return self.insights

    def run(self, tasks: list[Task], *, what: str, timeout: float | None, progress: Any,
            total: int = 0, memo: int | None = None, drop: list[int] = ()) -> list:
        bar = progress_bar(progress, total, what) if progress else None  # none asked: no call
        out: list = []
        failure = cause = None
        try:
            for task in tasks:
                stats = Stats(progress=bar.update if bar else None)
                t0 = time.perf_counter()
                try:
                    out.append(run_task(task, stats, _NoBarrier()))
                except Exception as exc:
                    failure = kernel_error(what, remote_error_info(exc, stats.rows, None))
                    cause = detached(exc)
                finally:
                    self.insights[0].account(*stats.report(t0))
                if failure is not None:
                    break
        finally:
            if bar:
                bar.finish()
        if failure is not None:
            try:  # the kernel's own exception and traceback, for post-mortem debugging
                raise failure from cause
            finally:  # ...but no frame of ours keeps them (and the arrays they reference)
                failure = cause = None
        return out
