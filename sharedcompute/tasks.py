"""Tasks: any function on the pool's workers, in the concurrent.futures style.

``Pool.submit`` returns a real ``concurrent.futures.Future``; ``Pool.imap`` and
``Pool.imap_unordered`` take an iterable of items, as the stdlib's do. Arguments are pickled
once, in the caller, and a SharedArray pickles as a handle (its name), so the big data is
never copied: a task attaches the block in its worker and may write its own slice.
Functions travel by module and name, checked by content, or by value (cloudpickle) when
defined in a notebook, ``__main__`` or another function (_identity.py).

One thread per pool (started on demand, gone when idle) hands tasks to idle workers
through their pipes. While it has work it holds the pool's lock, so a kernel call waits
for the tasks and the tasks for the call: both use the same workers and pipes. Tiny tasks
are batched by measured cost (about a millisecond of work a message), yet every task is
answered on its own, so a worker that dies fails only the task it was running: the
others of its batch go back to the queue, the surviving workers finish theirs, and all
workers are restarted before the queue goes on (loky restarts a broken executor's workers
the same way, but fails every pending future; here only the culprit's).
"""
from __future__ import annotations

import io
import pickle
import select
import threading
import time
from collections import deque
from concurrent.futures import Future
from multiprocessing.connection import Pipe, wait
from typing import Any

from .errors import (InputError, KernelError, KernelNotSendableError, KernelTimeoutError,
                     PoolClosedError, RemoteTraceback, WorkerCrashedError)
from . import _identity
from .shared import SharedArray

BATCH_SECONDS = 0.001  # batch tiny tasks up to about this much work per message
MAX_BATCH = 256


class _Item:
    __slots__ = ("future", "payload", "timeout", "name", "blocks", "seq")

    def __init__(self, future: Future, payload: bytes, timeout: float | None, name: str,
                 blocks: list):
        self.future, self.payload, self.timeout, self.name = future, payload, timeout, name
        self.blocks, self.seq = blocks, 0


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def check_sendable(fn: Any) -> None:
    """Refuse, in the caller, what cannot be a task's function."""
    if not callable(fn):
        raise InputError(f"{fn!r} is not callable; pass the function the task should run")


class _TaskPickler(_identity.FunctionPickler):
    """A task's payload, noting the block of every SharedArray in it, however deep (in a
    list, a dict, an imap chunk): held while the task is queued or runs, so free()
    refuses (ArrayInUseError) and a temporary is not unlinked before the task attaches it."""

    def __init__(self, buf: Any):
        super().__init__(buf, pickle.HIGHEST_PROTOCOL)
        self.blocks: list = []

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is SharedArray:
            if obj.block is not None:
                self.blocks.append(obj.block)
            return NotImplemented
        return super().reducer_override(obj)


def _payload(obj: Any) -> tuple[bytes, list]:
    buf = io.BytesIO()
    p = _TaskPickler(buf)
    p.dump(obj)
    return buf.getvalue(), p.blocks


def _hold(blocks: list, step: int) -> None:
    for b in blocks:
        b.calls = getattr(b, "calls", 0) + step


class TaskRunner:
    """The queue of a pool's tasks and the thread that feeds them to its workers."""

    def __init__(self, backend: Any, lock: Any):
        self.backend = backend
        self.pool_lock = lock
        self.queue: deque[_Item] = deque()
        self.guard = threading.Lock()
        self.thread: threading.Thread | None = None
        self.closing = False
        self.mean_s: float | None = None  # measured seconds per task, for batching
        self._wake_r, self._wake_w = Pipe(duplex=False)
        self._waiting = False
        self._running: list[deque[_Item]] = []  # per worker: tasks sent, in order

    # -- submitting (any thread) ---------------------------------------------------------------
    def submit(self, fn: Any, args: tuple, kwargs: dict, timeout: float | None) -> Future:
        try:
            payload, blocks = _payload((fn, args, kwargs))
        except KernelNotSendableError:
            raise
        except Exception as exc:
            raise InputError(f"task {_name(fn)}: its arguments could not be pickled ({exc}); "
                             "pass arrays as SharedArrays (pool.array(x)), which travel as "
                             "handles, and other arguments as picklable values") from exc
        future: Future = Future()
        item = _Item(future, payload, timeout, _name(fn), blocks)
        with self.guard:
            if self.closing:
                raise PoolClosedError("this pool is closed; create a new sc.Pool()")
            _hold(blocks, 1)
            self.queue.append(item)
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, daemon=True,
                                               name="sharedcompute-tasks")
                self.thread.start()
            elif self._waiting:
                self._waiting = False
                self._wake_w.send_bytes(b"")
        return future

    def close(self) -> None:
        """No more tasks: cancel the queued ones. Running ones are ended by the caller
        (Pool.close interrupts the workers: their futures get PoolClosedError)."""
        with self.guard:
            self.closing = True
            queued, self.queue = list(self.queue), deque()
        for item in queued:
            self._settle(item, cancel=True)

    def wait_idle(self) -> None:
        """Wait until every submitted task has settled."""
        while True:
            with self.guard:
                thread = self.thread
            if thread is None or thread is threading.current_thread():
                return
            thread.join()

    # -- the feeding thread --------------------------------------------------------------------
    def _serve(self) -> None:
        with self.pool_lock:  # the workers are ours until the queue is empty
            try:
                self._feed_until_idle()
            except BaseException as exc:  # noqa: BLE001 - nothing may leave a future unsettled
                self._fail_all(exc)

    def _feed_until_idle(self) -> None:
        backend = self.backend
        ex = backend.executor
        broken = False  # a worker died or was killed: finish the others, then restart all
        dead: set[int] = set()
        started: list[float] = []
        running = self._running = []
        while True:
            with self.guard:
                if self.closing:
                    queued, self.queue = list(self.queue), deque()
                    for item in queued:
                        self._settle(item, cancel=True)
                if not self.queue and not any(running):
                    self.thread = None
                    return
            if not running or (broken and not any(running)):
                if broken:
                    ex.stop(kill=True)  # restarted below, with a restart counted
                backend._ensure_workers()
                ex = backend.executor
                running[:] = [deque() for _ in range(ex.n_workers)]
                started = [0.0] * ex.n_workers
                dead, broken = set(), False
            if not broken:
                for i in range(ex.n_workers):
                    if i not in dead and len(running[i]) < self._ahead():
                        try:
                            self._send_batch(ex, i, running, started)
                        except OSError:
                            broken = True
                            self._lose_worker(ex, i, running, dead, None)
            busy = [i for i in range(ex.n_workers) if running[i]]
            deadline = min((started[i] + running[i][0].timeout for i in busy
                            if running[i][0].timeout is not None), default=None)
            with self.guard:
                idle_work = bool(self.queue) and not broken and any(
                    not running[i] and i not in dead for i in range(ex.n_workers))
                self._waiting = not idle_work
            if idle_work:
                continue
            wait_s = None if deadline is None else max(deadline - time.monotonic(), 0)
            objs = [ex.conns[i] for i in busy] + [p.sentinel for k, p in enumerate(ex.procs)
                                                  if k not in dead] + [self._wake_r]
            ready = wait(objs, timeout=wait_s)
            with self.guard:
                self._waiting = False
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
            now = time.monotonic()
            for i in busy:
                head = running[i][0] if running[i] else None
                if head is not None and head.timeout is not None \
                        and started[i] + head.timeout <= now:
                    broken = True
                    self._lose_worker(ex, i, running, dead, KernelTimeoutError(
                        f"task {head.name} did not finish within timeout={head.timeout} s; "
                        f"its worker {ex.procs[i].pid} was killed (the pool restarts its "
                        "workers once the others are done)"), kill=True)
            sentinels = {p.sentinel: k for k, p in enumerate(ex.procs)}
            for obj in ready:
                if obj is self._wake_r:
                    continue
                k = sentinels.get(obj, None)
                i = k if k is not None else ex.conns.index(obj)
                if i in dead:
                    continue
                if k is None and self._answers(ex, i, running, started):
                    continue
                if ex.interrupted:  # the worker is gone
                    raise PoolClosedError("the pool was closed while tasks ran")
                broken = True
                self._lose_worker(ex, i, running, dead, None)

    def _answers(self, ex: Any, i: int, running: list, started: list) -> bool:
        """Settle every answer waiting in worker i's pipe (one select for many tiny tasks);
        False if the worker is gone."""
        conn, queue, insight = ex.conns[i], running[i], ex.insights[i]
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return False
            if queue and msg[1] == queue[0].seq:  # else a stale message of an earlier call
                item = queue.popleft()
                started[i] = time.monotonic()  # the next task of its batch starts now
                insight.account(*msg[3])
                self._measure(msg[3].busy_s)
                if msg[0] == "ok":
                    self._settle(item, result=msg[2])
                else:
                    self._settle(item, error=task_exception(item.name, msg[2]))
            if not queue or not select.select((conn,), (), (), 0)[0]:  # conn.poll() builds
                return True  # a selector per call: ten times the cost of one select

    def _ahead(self) -> int:
        """Batches a worker holds: two for tiny tasks (no idle gap while an answer travels),
        one otherwise (a long task must not keep a second waiting behind it)."""
        return 2 if self.mean_s is not None and self.mean_s < BATCH_SECONDS else 1

    def _measure(self, seconds: float) -> None:
        self.mean_s = seconds if self.mean_s is None else 0.8 * self.mean_s + 0.2 * seconds

    def _send_batch(self, ex: Any, i: int, running: list, started: list) -> None:
        with self.guard:
            if not self.queue:
                return
            size = 1
            if self.mean_s is not None and self.mean_s < BATCH_SECONDS:
                fair = max(1, len(self.queue) // (2 * ex.n_workers))
                size = min(MAX_BATCH, fair, max(1, int(BATCH_SECONDS / max(self.mean_s, 1e-7))))
            batch = []
            while self.queue and len(batch) < size:
                item = self.queue.popleft()  # (a requeued one is running already)
                if not item.future.running() and not item.future.set_running_or_notify_cancel():
                    _hold(item.blocks, -1)  # cancelled while queued
                    continue
                ex.seq += 1  # one numbering with kernel calls: no answer is mistaken
                item.seq = ex.seq
                batch.append(item)
        if not batch:
            return
        if not running[i]:
            started[i] = time.monotonic()
        running[i].extend(batch)
        ex.send(i, ("call", [(item.seq, item.payload) for item in batch]))

    def _lose_worker(self, ex: Any, i: int, running: list, dead: set,
                     error: BaseException | None, kill: bool = False) -> None:
        """Worker ``i`` is gone (or is killed now): its running task fails, the rest of its
        batch goes back to the front of the queue."""
        proc = ex.procs[i]
        if kill:
            proc.kill()
        proc.join(timeout=5.0)
        dead.add(i)
        if not running[i]:
            return
        head = running[i].popleft()
        if error is None:
            code = proc.exitcode
            from ._executors import _signal_name
            sig = _signal_name(code)
            error = WorkerCrashedError(
                f"worker {proc.pid} died of {sig} while running task {head.name}; the pool "
                "restarts its workers and goes on with the other tasks", pid=proc.pid,
                exitcode=code, signal_name=sig, rows=(0, 0))
        self._settle(head, error=error)
        with self.guard:
            self.queue.extendleft(reversed(running[i]))
        running[i].clear()

    def _settle(self, item: _Item, result: Any = None, error: BaseException | None = None,
                cancel: bool = False) -> None:
        _hold(item.blocks, -1)
        item.blocks = []
        future = item.future
        if cancel:
            if not future.cancel() and not future.done():
                future.set_exception(PoolClosedError(f"task {item.name} was still running "
                                                     "when the pool closed"))
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _fail_all(self, exc: BaseException) -> None:
        """The feeding loop itself failed (interrupted by close(), or a bug): settle every
        future with an error, so no caller waits for ever."""
        with self.guard:
            queued, self.queue = list(self.queue), deque()
            self.thread = None
        for item in queued:
            self._settle(item, cancel=True)
        if not isinstance(exc, PoolClosedError):
            exc = KernelError(f"the pool's task thread failed: {type(exc).__name__}: {exc}")
        for items in self._running:
            for item in items:
                _hold(item.blocks, -1)
                item.blocks = []
                if not item.future.done():
                    item.future.set_exception(exc)
            items.clear()


def task_exception(name: str, info: dict) -> BaseException:
    """The caller's exception for a task that raised: the task's own (with the worker's
    traceback as its cause, as ProcessPoolExecutor does) when it could be pickled, else a
    KernelError naming its type and message."""
    pickled = info.get("pickled")
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
            exc.__cause__ = RemoteTraceback(info["traceback"])
            return exc
        except Exception:
            pass
    err = KernelError(f"task {name} raised {info['type']}: {info['message']} (worker "
                      f"{info['pid']})", kernel=name, rows=(0, 0), worker=info["pid"],
                      remote_type=info["type"])
    err.__cause__ = RemoteTraceback(info["traceback"])
    return err


def runs_tasks(backend: Any, fn: Any, start_method: str) -> bool:
    """Check ``fn`` for this backend: True where a TaskRunner runs it (worker processes),
    False where it runs at once (inline); a Dask cluster is refused with its own way."""
    executor = getattr(backend, "executor", None)
    if executor is None or not hasattr(executor, "n_workers"):
        raise InputError("tasks (submit, imap) run on the 'processes' and 'inline' "
                         "backends; on a Dask cluster use client.submit directly")
    check_sendable(fn)
    return not executor.in_process


def items_to_map(fn: Any, args: tuple, kwargs: dict) -> Any:
    """``pool.map(fn, items)`` with a plain function: its one iterable, checked."""
    if getattr(fn, "py_func", None) is not None:
        raise InputError(f"{fn!r} is a numba function, not a sharedcompute kernel: decorate "
                         "it with @sc.kernel to run it over partitions of shared arrays, "
                         "or call pool.imap(fn, items) to run it once per item")
    if len(args) != 1 or kwargs or isinstance(args[0], SharedArray):
        # (a SharedArray's rows would each be pickled: a copy per task)
        raise InputError(f"{fn!r} is not a sharedcompute kernel; decorate it with "
                         "@sc.kernel (jit=False for plain NumPy code) to run it over "
                         "partitions of shared arrays, or call pool.map(fn, items) with "
                         "one iterable of items (e.g. range(n), indexing the shared "
                         "array inside fn) to run fn once per item")
    return args[0]


def run_now(fn: Any, args: tuple, kwargs: dict) -> Future:
    """A task on the inline backend: run in the calling thread, a settled Future back."""
    future: Future = Future()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(fn(*args, **kwargs))
    except Exception as exc:  # the task's own exception, as a worker would report it
        future.set_exception(exc)
    return future
