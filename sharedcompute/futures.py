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

imap and imap_unordered take an iterable of items lazily, as chunked tasks on the same
runner, with chunks sized from the measured cost of an item (the second half below).
"""
from __future__ import annotations

import io
import itertools
import os
import pickle
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from multiprocessing.connection import Pipe
from typing import Any, Callable, Iterable, Iterator

from . import _identity
from .errors import (InputError, KernelError, KernelNotSendableError, PoolClosedError,
                     remote_error_info, task_error)
from .progress import progress_bar
from .shared import SharedArray

BATCH_SECONDS = 0.001  # batch tiny tasks up to about this much work per message
MAX_BATCH = 256


class _Item:
    __slots__ = ("future", "payload", "timeout", "name", "blocks")

    def __init__(self, future: Future, payload: bytes, timeout: float | None, name: str,
                 blocks: list):
        self.future, self.payload, self.timeout, self.name = future, payload, timeout, name
        self.blocks = blocks


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
        self.wake, self._wake_w = Pipe(duplex=False)  # written to by submit: a new task
        self._waiting = False
        self._running: list[deque] = []  # per worker: (seq, task) sent, in order

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

    # -- the feeding thread: ProcessExecutor.feed waits, these answer it ---------------------
    def _serve(self) -> None:
        with self.pool_lock:  # the workers are ours until the queue is empty
            try:
                while True:  # a lost worker: the others finish theirs, then restart them all
                    self.backend.ensure_workers()
                    ex = self.backend.executor
                    self._running = [deque() for _ in range(ex.n_workers)]
                    if not ex.feed(self, self._running):
                        return
                    ex.stop(kill=True)  # ensure_workers starts new ones, a restart counted
            except BaseException as exc:  # noqa: BLE001 - nothing may leave a future unsettled
                self._fail_all(exc)

    def idle(self, busy: bool) -> bool:
        """Whether the thread is done: nothing queued (a closing pool's queue is cancelled)
        and nothing running; it then ends (the next submit starts a new one)."""
        with self.guard:
            if self.closing:
                queued, self.queue = list(self.queue), deque()
                for item in queued:
                    self._settle(item, cancel=True)
            if not self.queue and not busy:
                self.thread = None
                return True
        return False

    def more(self, idle_worker: bool) -> bool:
        """Whether queued tasks wait for an idle worker (feed them now); if not, the feeding
        thread goes to sleep and a submit writes to ``wake``."""
        with self.guard:
            go_on = bool(self.queue) and idle_worker
            self._waiting = not go_on
        return go_on

    def awake(self) -> None:
        with self.guard:
            self._waiting = False
        while self.wake.poll():
            self.wake.recv_bytes()

    def ahead(self) -> int:
        """Batches a worker holds: two for tiny tasks (no idle gap while an answer travels),
        one otherwise (a long task must not keep a second waiting behind it)."""
        return 2 if self.mean_s is not None and self.mean_s < BATCH_SECONDS else 1

    def take(self, n_workers: int) -> list[_Item]:
        """The next batch for one worker: one task, or tiny ones up to about BATCH_SECONDS
        of measured work (leaving every worker a share of the queue)."""
        with self.guard:
            size = 1
            if self.mean_s is not None and self.mean_s < BATCH_SECONDS:
                fair = max(1, len(self.queue) // (2 * n_workers))
                size = min(MAX_BATCH, fair, max(1, int(BATCH_SECONDS / max(self.mean_s, 1e-7))))
            batch: list[_Item] = []
            while self.queue and len(batch) < size:
                item = self.queue.popleft()  # (a requeued one is running already)
                if not item.future.running() and not item.future.set_running_or_notify_cancel():
                    _hold(item.blocks, -1)  # cancelled while queued
                    continue
                batch.append(item)
        return batch

    def answered(self, item: _Item, msg: tuple) -> None:
        """A worker's answer ("ok"|"err", seq, result or errors.remote_error_info, stats)."""
        self.mean_s = msg[3].busy_s if self.mean_s is None else \
            0.8 * self.mean_s + 0.2 * msg[3].busy_s
        if msg[0] == "ok":
            self._settle(item, result=msg[2])
        else:
            self._settle(item, error=task_error(item.name, msg[2]))

    def failed(self, item: _Item, error: BaseException) -> None:
        self._settle(item, error=error)

    def requeue(self, items: list[_Item]) -> None:
        """A lost worker's batch, not run: back to the front of the queue, in order."""
        with self.guard:
            self.queue.extendleft(reversed(items))

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
        startup = getattr(exc, "startup_failure", False)  # no worker can start: say why
        for item in queued:
            self._settle(item, error=exc if startup else None, cancel=not startup)
        if not isinstance(exc, PoolClosedError) and not startup:
            exc = KernelError(f"the pool's task thread failed: {type(exc).__name__}: {exc}")
        for items in self._running:
            for _, item in items:  # (seq, item) sent to a worker
                _hold(item.blocks, -1)
                item.blocks = []
                if not item.future.done():
                    item.future.set_exception(exc)
            items.clear()


def submitter(executor: Any, fn: Any, runner: Callable[[], "TaskRunner"]) -> Callable:
    """How LocalBackend submits a task of ``fn``, checked first: to the pool's TaskRunner
    (``runner()``, made on demand) where the executor queues tasks for its workers, else
    run at once (inline)."""
    check_sendable(fn)
    if executor.queues_tasks:
        return runner().submit
    return lambda f, args, kwargs, timeout: run_now(f, args, kwargs)


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


# -- imap: an iterable of items as chunked tasks --------------------------------------------
WINDOW = 1024  # items imap keeps submitted ahead of what it has yielded


def auto_chunksize(chunksize: int | None) -> int | None:
    if chunksize is None:
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise InputError(f"chunksize={chunksize!r} must be a positive integer (or None: "
                         "tiny tasks are grouped by their measured cost)")
    return chunksize


def _apply_chunk(fn: Callable, items: list) -> tuple:
    """One task that maps ``fn`` over several items: (results, seconds, None) or, when an
    item raises, (the results before it, seconds, its errors.remote_error_info)."""
    t0 = time.perf_counter()
    out = []
    for x in items:
        try:
            out.append(fn(x))
        except Exception as exc:  # the caller re-raises it after the results before it
            info = remote_error_info(exc, (0, 0), os.getpid(), keep=True)
            return out, time.perf_counter() - t0, info
    return out, time.perf_counter() - t0, None


def imap(submit: Callable, fn: Any, iterable: Iterable, *, ordered: bool,
         chunksize: int | None, timeout: float | None, progress: Any, what: str,
         n_workers: int) -> Iterator:
    """Results of ``fn`` over ``iterable``: in order (imap) or as they finish
    (imap_unordered). Items are taken lazily, at most about WINDOW ahead, and sent in
    chunks: of ``chunksize``, or (None) sized from the measured time per item to about a
    millisecond of work, one item at a time while unmeasured or with a ``timeout`` (which
    is then per item). A failed item raises when it is reached (imap) or as its chunk
    finishes (imap_unordered); a crashed worker fails its chunk with WorkerCrashedError.
    Leaving the loop early cancels the chunks not yet started."""
    fixed = auto_chunksize(chunksize)
    total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    bar = progress_bar(progress, total or 0, what)
    source: Iterator = iter(iterable)
    state: dict[str, Any] = {"mean": None, "taken": 0, "error": None}
    pending: deque[Future] = deque()  # in submission order
    finished: deque[Future] = deque()  # in completion order (imap_unordered)
    ready = threading.Condition()

    def notify(fut: Future) -> None:
        with ready:
            finished.append(fut)
            ready.notify()

    def chunk_size() -> int:
        if fixed is not None:
            return fixed
        mean = state["mean"]
        if mean is None or timeout is not None:
            return 1
        size = min(MAX_BATCH, max(1, int(BATCH_SECONDS / max(mean, 1e-7))))
        if total is not None:  # keep every worker a share of what is left
            size = min(size, max(1, (total - state["taken"]) // (2 * n_workers)))
        return size

    def submit_next() -> bool:
        if state["error"] is not None:
            return False
        items: list = []
        try:  # list.extend keeps the items taken before the iterable raised
            items.extend(itertools.islice(source, chunk_size()))
        except Exception as exc:  # as the stdlib's imap: their results first, then this
            state["error"] = exc
        if not items:
            return False
        state["taken"] += len(items)
        fut = submit(_apply_chunk, (fn, items), {}, timeout)
        fut.n_items = len(items)  # type: ignore[attr-defined]
        pending.append(fut)
        if not ordered:
            fut.add_done_callback(notify)
        return True

    def in_flight() -> int:
        return sum(f.n_items for f in pending)  # type: ignore[attr-defined]

    try:
        while len(pending) < 2 * n_workers and submit_next():
            pass
        taken: set[int] = set()
        while len(taken) < len(pending):
            if ordered:
                fut = pending[0]
            else:
                with ready:
                    while not finished:
                        ready.wait()
                    fut = finished.popleft()
            taken.add(id(fut))
            values, seconds, failure = _outcome(fut)
            if values:
                mean = seconds / len(values)
                state["mean"] = mean if state["mean"] is None else 0.7 * state["mean"] + 0.3 * mean
            while pending and id(pending[0]) in taken:  # forget what was yielded, in order
                taken.discard(id(pending.popleft()))
            while in_flight() < WINDOW and len(pending) < 4 * n_workers + 4 and submit_next():
                pass
            if bar:
                bar.update(len(values) + (failure is not None))
            yield from values
            if failure is not None:
                raise task_error(_name(fn), failure)
        if state["error"] is not None:
            raise state["error"]
    finally:
        for fut in pending:
            fut.cancel()
        if bar:
            bar.finish()


def _outcome(fut: Future) -> Any:
    try:
        return fut.result()
    except CancelledError:
        raise PoolClosedError("the pool closed before this task ran") from None
