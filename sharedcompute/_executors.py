"""Executors: who runs a call's tasks. ProcessExecutor owns the worker processes, their pipes
and the one wait loop that notices every way they fail; InlineExecutor runs the same tasks in
the calling process, in order, for debugging. Both are an ``Executor`` (_contracts.py):
the backend (local.py) and the pool call them without asking which.

The four paths through a ProcessExecutor (names are the real functions)::

    pipe: a cold call          ring: a repeated call       claims: schedule="dynamic"
    LocalBackend.execute       LocalBackend._ring          LocalBackend.execute
      │ Plan.task × workers      │ cached under a memo id    │ make_task(all chunks),
      ▼                          ▼                           ▼ share_bounds
    ProcessExecutor.run        ProcessExecutor.ring        ProcessExecutor.run_dynamic
      │ send("work", seq, ..)    │ doorbell.ring: RING word  │ send("claim", ..) once
      ▼                          ▼                           ▼ per worker
    _worker._run_sent          _worker._run_rung           _worker._run_claims: a piece
      │ ("ok"|"err", seq, ..)    │ WorkerBell.answer, DONE   │ of its share, then stolen
                                                             │ ones; one answer at the end
      ▼                          ▼                           ▼
    ProcessExecutor._collect   doorbell.await_answers,     ProcessExecutor._collect
      ─▶ _events ─▶ _wait        then _events (_await_rung)  ─▶ _events ─▶ _wait

    tasks: Pool.submit / imap ─▶ TaskRunner.submit (futures.py: queue, futures, batching)
      ─▶ its thread: ProcessExecutor.feed(runner) ─▶ send("task", [(seq, payload)])
      ─▶ _worker._run_tasks ─▶ one answer per task ─▶ _wait ─▶ runner.answered / failed

``_wait`` is the only wait on the worker pipes, the process sentinels and a deadline (run,
run_dynamic and warmup share ``_collect``). ``_events`` turns what it finds into a kernel
call's failures (``_crashed``, ``_timed_out``: errors.worker_crashed, errors.timed_out);
feed names the user task instead and fails only that task's future. ``account_answer``
(``Accounts``, below) accounts every answer in the insights and the progress bar.

So a dead worker is noticed at once (never the stdlib Pool's hang, gh-66587), named, and all
workers are killed; the backend starts new ones on its next call. Errors come back as
errors.remote_error_info dicts and become KernelErrors (errors.kernel_error); in iterate the
first failure is raised, not the barrier echoes it causes in the others.
Starting (ProcessExecutor.start): a forkserver pool's workers come from a server that holds
NumPy, numba and the kernel modules (the parent forked where that is safe, _fork_server.py,
else spawned and preloaded, _preload.py); under fork the parent sets numba up once first.
Workers that could not start (errors.CANNOT_START: no guard, a main module that raises
there) are not started again: every later call raises the same error. Pool.warmup sends every worker a "warmup" message (ProcessExecutor.warmup).
A worker: attaches each block once (shared.Block.attach caches it), runs its rows in place,
ignores SIGINT (the parent handles Ctrl-C and kills it) and exits if its parent dies.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import pickle
import select
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

from . import _worker, doorbell
from ._worker import UNREADABLE
from .errors import (CANNOT_START, KernelError, KernelTimeoutError, PoolClosedError,
                     SharedComputeError, first_error, kernel_error, timed_out, worker_crashed)
from .kernel import Kernel
from .partition import in_chunk_order, share_bounds, split_even
from .plan import WorkOrder
from .progress import ChunkProgress
from ._preload import prepare_fork_parent, start_forkserver

log = logging.getLogger("sharedcompute")

# -- what every answer is accounted in: a worker's seconds (and a call's ChunkProgress) ----
class WorkerInsight:
    """Seconds one worker spent attaching, compiling, computing and idle."""

    def __init__(self, pid: int):
        self.pid, self.compile_s, self.compute_s, self.busy_s, self.tasks = pid, 0.0, 0.0, 0.0, 0

    def account(self, compile_s: float, compute_s: float, busy_s: float, *_: Any,
                tasks: int = 1) -> None:
        """Add one answer's seconds (the fields of a TaskStats, which may be passed unpacked)."""
        self.compile_s += compile_s
        self.compute_s += compute_s
        self.busy_s += busy_s
        self.tasks += tasks

    def plus(self, compile_s: float, compute_s: float, busy_s: float,
             tasks: int) -> "WorkerInsight":
        """A copy with running totals added (a doorbell line's, Lines.totals)."""
        out = WorkerInsight(self.pid)
        out.compile_s, out.compute_s = self.compile_s + compile_s, self.compute_s + compute_s
        out.busy_s, out.tasks = self.busy_s + busy_s, self.tasks + tasks
        return out


class Accounts:
    """What both executors keep: each worker's insight, added to by every answer."""

    insights: list[WorkerInsight]

    def worker_insights(self) -> list[WorkerInsight]:
        return self.insights

    def account_answer(self, i: int, msg: tuple, bar: ChunkProgress | None = None,
                  errors: list | None = None, what: str = "", tasks: int = 1) -> Any:
        """Account worker i's answer ``(ok|err, seq, result or error info, TaskStats)``: its
        seconds in the insights, its chunks in the bar. Returns the result; an error goes to
        ``errors`` as a KernelError (named by a warmup's kernel, else ``what``)."""
        self.insights[i].account(*msg[3], tasks=tasks)
        if bar is not None:
            bar.advance(i, msg)
        if msg[0] == "ok":
            return msg[2]
        if errors is not None:
            errors.append(kernel_error(msg[2].get("kernel", what), msg[2]))
        return None


class ProcessExecutor(Accounts):
    """Worker processes, their pipes, and the wait loop that notices every way they fail."""

    in_process = False
    queues_tasks = True  # user tasks go through a futures.TaskRunner, which calls feed()

    def __init__(self, n_workers: int, start_method: str):
        self.n_workers = n_workers
        self.start_method = start_method
        self.ctx = mp.get_context(start_method)
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.barrier = self.claims = None  # set by start (claims: run_dynamic's shares)
        # one numbering for kernel calls and user tasks: no answer is mistaken for another
        self._next_seq = itertools.count(1).__next__
        self.started_at = time.perf_counter()
        self.insights: list[WorkerInsight] = []
        self.lines: doorbell.Lines | None = None
        self.generation = 0  # bumped at every (re)start: cached tasks die with their workers
        self.interrupted = False  # set by interrupt(): the pool is being closed
        self.preload: dict = {}  # what _preload.start_forkserver did at the last start
        self.cannot_start: tuple | None = None  # (pid, exit code): a worker could not start

    @property
    def rings(self) -> bool:
        """Whether repeated calls can be started through the doorbell."""
        return self.lines is not None

    def start(self) -> None:
        if self.cannot_start is not None:  # new workers would import the main module again
            raise worker_crashed(*self.cannot_start, "", (0, 0), self.start_method)
        if self.start_method == "forkserver":  # one preloaded server forks every worker
            self.preload = start_forkserver(self.ctx)
        elif self.start_method == "fork":
            prepare_fork_parent()
        self.lines = doorbell.Lines.create(self.ctx, self.n_workers) if doorbell.ENABLED else None
        self.barrier = doorbell.make_barrier(self.ctx, self.lines, self.n_workers)
        self.claims = self.ctx.Array("q", 2 * self.n_workers)  # run_dynamic's shares, locked
        self.generation += 1
        self.insights = []
        bell = self.lines.raw if self.lines is not None else None
        try:
            for i in range(self.n_workers):
                parent_conn, child_conn = self.ctx.Pipe(duplex=True)
                proc = self.ctx.Process(target=_worker.main,
                                        args=(child_conn, i, self.barrier, bell, self.n_workers,
                                              self.claims),
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
    def sentinels(self) -> list[int]:
        """The workers' process sentinels, readable once a worker is gone (for a poll)."""
        return [p.sentinel for p in self.procs]

    @property
    def alive(self) -> bool:
        # one select() over the sentinels: a per-process is_alive() costs a poll each
        live = len(self.procs) == self.n_workers
        return live and not select.select(self.sentinels, [], [], 0)[0]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_sendable(self, kernel: Any) -> None:
        """Refuse, in the caller, a kernel the workers could not import (kernel.py)."""
        if isinstance(kernel, Kernel):
            kernel.check_sendable(self.start_method)

    def sweep_ranges(self, n_chunks: int) -> list[tuple[int, int]]:
        """An iterate's chunk ranges: one per worker, held for every sweep."""
        return split_even(n_chunks, self.n_workers)

    def worker_insights(self) -> list[WorkerInsight]:
        """Each worker's seconds, its rung calls' totals (kept in its line) included."""
        if self.lines is None:
            return self.insights
        return [w.plus(*self.lines.totals(i)) for i, w in enumerate(self.insights)]

    def send(self, i: int, msg: tuple) -> None:
        self.conns[i].send(msg)
        if self.lines is not None:
            self.lines.pipe_sent[i] += 1  # counted after the send (doorbell.Lines.pipe_sent)

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
        self.procs, self.conns, self.lines, self.barrier, self.claims = [], [], None, None, None

    def stop(self, kill: bool = False) -> None:
        if not kill:
            self.send_all(("stop",))
        # a worker that could not start (CANNOT_START): the others fail alike; before any is
        # killed, let them exit themselves: worker 0 says why, each frees what its import made
        until = time.monotonic() + 2.0 * (not kill or any(p.exitcode in CANNOT_START
                                                          for p in self.procs))
        for p in self.procs:
            p.join(timeout=max(0.0, until - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(timeout=5.0)
            if p.exitcode in CANNOT_START:
                self.cannot_start = (p.pid, p.exitcode)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        # their named semaphores (sem.mp-* in /dev/shm under spawn and forkserver) are
        # unlinked when collected: drop them now, not when the pool object is collected
        self.barrier = self.claims = None
        if self.lines is not None:
            self.insights = self.worker_insights()  # the totals leave with the lines
            self.lines.release()
            self.lines = None

    # -- kernel calls: run, run_dynamic, ring, warmup ------------------------------------------
    def run(self, tasks: list[WorkOrder], *, what: str, timeout: float | None, progress: Any,
            total: int = 0, memo: int | None = None, drop: list[int] = ()) -> list:
        """Send each worker its task and wait for all of them; ``memo``: an id under which
        the workers keep their tasks for ring(); ``drop``: cached ids they forget first."""
        if self.barrier is not None and tasks and tasks[0].barriered:
            self.barrier.reset()  # a failed earlier iterate left it broken; workers are idle
        todo, seq, results = dict(enumerate(tasks)), self._next_seq(), [None] * len(tasks)
        for i, _, result in self._collect(
                lambda i: todo.pop(i, None), 1, what, timeout, progress, total,
                lambda s, task, bar: ("work", seq, task, memo, list(drop), bar)):
            results[i] = result
        return results

    def run_dynamic(self, task: WorkOrder, n_chunks: int, *, what: str,
                    timeout: float | None, progress: Any, memo: int | None = None,
                    drop: list[int] = ()) -> list:
        """A map or reduce whose pieces the workers claim themselves: each gets one "claim"
        order (the whole range) and runs pieces of its own share, then steals from the others'
        (partition.claim_piece, under the bounds' lock: _worker._run_claims) until none is
        left, then answers once with [(piece, result)]; with ``memo``, it keeps its claim loop
        for rung calls. No parent round trip per piece, so a busy parent delays no one.
        Returns the pieces' results in chunk order; failures raise as in run()."""
        self.claims.get_obj()[:] = share_bounds(n_chunks, self.n_workers)  # workers idle
        todo = dict.fromkeys(range(self.n_workers), task)
        out = self._collect(lambda i: todo.pop(i, None), 1, what, timeout, progress, n_chunks,
                            lambda s, task, bar: ("claim", s, task, memo, list(drop), bar))
        return in_chunk_order((answer for _, _, answer in out), n_chunks, what)

    def warmup(self, items: list, timeout: float | None) -> None:
        """Every worker compiles (or loads from numba's cache) the items' signatures now;
        the seconds count as compile time in insights, not as a task."""
        todo, seq = dict.fromkeys(range(self.n_workers), items), self._next_seq()
        self._collect(lambda i: todo.pop(i, None), 1, "warmup", timeout, False, 0,
                      lambda s, _, bar: ("warmup", seq, items), tasks=0)

    def _collect(self, take: Callable[[int], Any], ahead: int, what: str,
                 timeout: float | None, progress: Any, total: int,
                 message: Callable[[int, Any, bool], tuple], tasks: int = 1) -> list[tuple]:
        """Hand each worker the tasks ``take(i)`` gives (None: no more), up to ``ahead`` at
        a time, as ``message(seq, task, report progress?)``, until all are answered; returns
        [(worker, task, result)] of the answers. The first kernel error raises once all are
        in; a crash, a timeout or Ctrl-C kills the workers (their state is unknown)."""
        bar = ChunkProgress(progress, total, what, self.n_workers) if progress else None
        held: list[deque] = [deque() for _ in range(self.n_workers)]  # (seq, task) in order
        want: list[int | None] = [None] * self.n_workers  # the seq each worker answers next
        heads: list[Any] = [None] * self.n_workers  # the task it runs: for errors
        out: list[tuple] = []  # the answers; errors: the kernel errors
        errors: list[KernelError] = []
        deadline = None if timeout is None else time.monotonic() + timeout

        def feed(i: int) -> None:
            while not errors and len(held[i]) < ahead:
                task = take(i)
                if task is None:
                    break
                msg = message(self._next_seq(), task, bar is not None)
                held[i].append((msg[1], task))
                want[i], heads[i] = held[i][0]
                self._send_task(i, msg, what, heads)

        try:
            for i in range(self.n_workers):
                feed(i)
            while any(held):
                pending = {i for i, h in enumerate(held) if h}
                for i, msg in self._events(pending, want, deadline, what, timeout, heads,
                                           bar):
                    _, task = held[i].popleft()
                    result = self.account_answer(i, msg, bar, errors, what, tasks)
                    if msg[0] == "ok":
                        out.append((i, task, result))
                    feed(i)
                    want[i], heads[i] = held[i][0] if held[i] else (None, None)
                    if not held[i]:
                        pending.discard(i)
        except BaseException:
            self.stop(kill=True)
            raise
        finally:
            if bar is not None:
                bar.finish()
        if errors:
            raise first_error(errors)
        return out

    def ring(self, memo: int, active: list[int], idle_result: Any, *,
             what: str, timeout: float | None, tasks: list[WorkOrder], clear_values: bool = True,
             results: bool = True, shares: int = 0, spin: bool = True) -> list | None:
        """Start a call whose tasks the workers cached under ``memo`` through the doorbell,
        poll for its results, then sleep on the pipes and sentinels like run().
        ``results=False``: a map's, which are not read; ``shares``: a dynamic call's chunks,
        whose bounds are set before any worker is rung. ``spin=False``: a call known to
        take long (a kept iterate's): sleep at once, leaving the cores to the workers."""
        lines, seq = self.lines, self._next_seq()
        if shares:
            self.claims.get_obj()[:] = share_bounds(shares, self.n_workers)
        try:
            state = doorbell.ring(lines, active, memo, seq, clear_values, spin)
            if state == doorbell.ANSWERED:  # the common case: every answer is in the lines
                if not results:
                    return None
                out, piped, errors = [idle_result] * self.n_workers, set(), []
            else:
                if state == doorbell.ASLEEP:
                    for i in active:
                        if lines.word(i, doorbell.W_ASLEEP):
                            self._send_task(i, ("wake",), what, tasks)  # asleep before the ring
                out, piped, errors = self._await_rung(seq, active, idle_result, what, timeout,
                                                      tasks, spin and state == doorbell.ASLEEP)
        except BaseException:
            self.stop(kill=True)
            raise
        if results:
            for i in active:  # workers with no rows were not rung: idle_result
                if i not in piped:
                    data = lines.result(i)
                    out[i] = pickle.loads(data) if data else None
        if errors:
            raise first_error(errors)
        return out if results else None

    def _await_rung(self, seq: int, active: list[int], idle_result: Any, what: str,
                    timeout: float | None, tasks: list[WorkOrder], spin: bool) -> tuple:
        """A rung call not answered within SPIN_S (or with a worker woken by pipe, then
        ``spin``: poll first): sleep on the pipes and sentinels. Returns the results of the
        workers that answered through a pipe, which they were, and the errors."""
        results: list[Any] = [idle_result] * self.n_workers
        piped: set[int] = set()
        errors: list[KernelError] = []
        pending = set(active)
        deadline = None if timeout is None else time.monotonic() + timeout

        def sleep() -> None:  # one wait; a "done" ping wakes it, await_answers reads DONE
            for i, msg in self._events(pending, [seq] * self.n_workers, deadline, what,
                                       timeout, tasks):
                results[i] = self.account_answer(i, msg, None, errors, what)
                pending.discard(i)
                piped.add(i)

        doorbell.await_answers(self.lines, pending, seq, sleep, spin)
        return results, piped, errors

    # -- user tasks (futures.TaskRunner) ---------------------------------------------------------
    def feed(self, source: Any, running: list[deque]) -> bool:
        """Run ``source``'s tasks (a futures.TaskRunner: its queue, batching and futures) until
        it has none (False), or until a worker was lost and the others finished theirs (True:
        restart the workers, then feed again). ``running[i]``: worker i's (seq, item) sent,
        in order. A dead or timed-out worker fails only its running task (``source.failed``);
        the rest of its batch goes back to the queue (``source.requeue``)."""
        broken, dead = False, set()
        started = [0.0] * self.n_workers  # when worker i's running task started
        while True:
            busy = {i for i in range(self.n_workers) if running[i]}
            if source.idle(bool(busy)):
                return False
            if broken and not busy:
                return True
            if not broken:
                for i in range(self.n_workers):
                    if i not in dead and len(running[i]) < source.ahead():
                        batch = [(self._next_seq(), item) for item in source.take(self.n_workers)]
                        if batch and not running[i]:
                            started[i] = time.monotonic()
                        running[i].extend(batch)
                        try:
                            if batch:
                                self.send(i, ("task", [(s, item.payload) for s, item in batch]))
                        except OSError:
                            broken = True
                            self._lose(i, running, dead, source)
            busy = {i for i in range(self.n_workers) if running[i]}
            if source.more(not broken and any(not running[i] and i not in dead
                                              for i in range(self.n_workers))):
                continue
            want = [r[0][0] if r else None for r in running]  # the seq each answers next
            deadline = min((started[i] + running[i][0][1].timeout for i in busy
                            if running[i][0][1].timeout is not None), default=None)
            for i, msg in self._wait(busy, want, deadline, source.wake, dead):
                if msg is None:  # worker i is gone (or the deadline passed: i < 0)
                    if i >= 0 and i not in dead:
                        broken = True
                        self._lose(i, running, dead, source)
                    continue
                if i in dead or not running[i]:
                    continue  # a lost worker's last answers: its tasks are settled
                _, item = running[i].popleft()
                started[i] = time.monotonic()  # the next task of its batch starts now
                self.account_answer(i, msg)
                source.answered(item, msg)
                want[i] = running[i][0][0] if running[i] else None
                if not running[i]:
                    busy.discard(i)
            source.awake()
            for i in set(range(self.n_workers)) - dead:
                head = running[i][0][1] if running[i] else None
                if head and head.timeout is not None \
                        and started[i] + head.timeout <= time.monotonic():
                    broken = True
                    self._lose(i, running, dead, source, self._timed_out(
                        [i], "", head.timeout, task=head.name), kill=True)

    def _lose(self, i: int, running: list[deque], dead: set, source: Any,
              error: BaseException | None = None, kill: bool = False) -> None:
        """Worker ``i`` is gone (or is killed now): its running task fails, the rest of its
        batch goes back to the front of the queue."""
        if kill:
            self.procs[i].kill()
        self.procs[i].join(timeout=5.0)
        dead.add(i)
        name = running[i][0][1].name if running[i] else ""
        error = error or self._crashed(i, "", task=name)
        if isinstance(error, PoolClosedError):  # close() killed the workers
            raise error
        if running[i]:
            source.failed(running[i].popleft()[1], error)
            source.requeue([item for _, item in running[i]])
            running[i].clear()

    # -- the one wait, and what its failures say ---------------------------------------------
    def _send_task(self, i: int, msg: tuple, what: str, tasks: Any) -> None:
        try:
            self.send(i, msg)
        except OSError:
            raise self._crashed(i, what, tasks) from None

    def _events(self, pending: set, want: list, deadline: float | None, what: str,
                timeout: float | None, tasks: Any, bar: ChunkProgress | None = None
                ) -> Iterator[tuple[int, tuple]]:
        """One wait for a kernel call: yield (worker, answer); progress goes to ``bar``; a
        dead worker raises WorkerCrashedError, the deadline KernelTimeoutError."""
        for i, msg in self._wait(pending, want, deadline):
            if msg is None:
                if i < 0:
                    raise self._timed_out(sorted(pending), what, timeout, tasks)
                raise self._crashed(i, what, tasks) from None
            if msg[0] != "progress":
                yield i, msg
            elif bar is not None:
                bar.advance(i, msg)

    def _wait(self, pending: set, want: list, deadline: float | None, wake: Any = None,
              skip: set = frozenset()) -> Iterator[tuple[int, tuple | None]]:
        """Sleep on the pending workers' pipes, every process sentinel (but ``skip``'s) and
        ``wake``; yield (worker, message) for the answers each pending worker owes (seq
        ``want[i]``, or an unreadable task's error), (worker, None) for a dead worker and
        (-1, None) when the deadline passed. Stale messages and "done" pings are dropped;
        a pipe is read while it has answers (one wait for many tiny tasks)."""
        wait_s = None if deadline is None else max(deadline - time.monotonic(), 0)
        sentinels = {p.sentinel: k for k, p in enumerate(self.procs) if k not in skip}
        conns = {id(self.conns[i]): i for i in pending}
        ready = wait([self.conns[i] for i in pending] + list(sentinels)
                     + ([wake] if wake is not None else []), timeout=wait_s)
        if not ready and deadline is not None:
            yield -1, None
        for obj in ready:
            if obj is wake:
                continue
            if obj in sentinels:
                yield sentinels[obj], None
                continue
            i = conns[id(obj)]
            while True:
                try:
                    msg = obj.recv()
                except (EOFError, OSError):
                    yield i, None
                    break
                if msg[0] != "done" and (msg[1] == want[i] or msg[1] == UNREADABLE):
                    yield i, msg
                if i not in pending or not select.select((obj,), (), (), 0)[0]:
                    break  # (conn.poll() builds a selector per call: ten times one select)

    def _crashed(self, i: int, what: str, tasks: Any = (), task: str | None = None
                 ) -> SharedComputeError:
        """The error for worker i found dead while running kernel ``what`` on the rows of
        ``tasks[i]`` or, ``task`` given, the user task of that name."""
        proc = self.procs[i]
        if not self.interrupted:
            proc.join(timeout=1.0)
        return worker_crashed(proc.pid, proc.exitcode, what, _rows(tasks, i),
                              self.start_method, task, self.interrupted)

    def _timed_out(self, stuck: list[int], what: str, timeout: float | None, tasks: Any = (),
                   task: str | None = None) -> KernelTimeoutError:
        return timed_out([(self.procs[i].pid, _rows(tasks, i)) for i in stuck], what, timeout,
                         task)


def _rows(tasks: Any, i: int) -> tuple:
    """The rows worker i was running (none for a warmup or an idle worker)."""
    return getattr(tasks[i], "rows", (0, 0)) if i < len(tasks) else (0, 0)
