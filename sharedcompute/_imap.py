"""imap and imap_unordered: an iterable of items as chunked tasks on the task runner
(tasks.py), taken lazily, with chunks sized from the measured cost of an item."""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from typing import Any, Callable, Iterable, Iterator

from .errors import InputError, PoolClosedError, remote_error_info, task_error
from .progress import progress_bar
from .tasks import BATCH_SECONDS, MAX_BATCH, _name

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
