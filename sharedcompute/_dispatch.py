"""Hand work to workers as they become idle: the dynamic schedule of map and reduce.

A static call sends each worker one contiguous share of the chunk grid up front. Here the
grid is cut into guided pieces (big first, shrinking to one chunk, as OpenMP's ``guided``)
and a worker gets its next piece when it answers the last one, so rows of unequal cost
keep every worker busy. The pieces never change the chunk grid or the combine tree: a
reduction's partials are the same tree nodes, combined in the same order, as under the
static schedule and for any worker count.

Work is handed out by the parent through each worker's pipe, not claimed from a shared
counter: one answer and one send per piece (tens of microseconds against pieces of a
chunk or more), and a crash or timeout is reported exactly as for static calls.
"""
from __future__ import annotations

import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable

from ._executors import _first_error
from ._worker import UNREADABLE
from .errors import kernel_error
from .plan import Task
from .progress import progress_bar


GUIDED_SHARE = 8  # a piece is at most 1/(8 * workers) of what remains
AHEAD = 2  # pieces a worker holds: the next one waits in its pipe, no idle round trip


def guided_pieces(n_chunks: int, n_workers: int) -> list[tuple[int, int]]:
    """Chunk ranges covering [0, n_chunks): each about 1/(8 * workers) of what remains, so
    the first pieces are larger (fewer messages), the last ones one chunk (a balanced end),
    and no piece is so large that it holds most of the work of a skewed frame (with
    1/(2 * workers), OpenMP guided's order, a Mandelbrot frame whose top quarter held 70%
    of the work ran at 1.43x one thread on 2 workers)."""
    out, start = [], 0
    while start < n_chunks:
        size = max(1, (n_chunks - start) // (GUIDED_SHARE * n_workers))
        out.append((start, start + size))
        start += size
    return out


def run_dynamic(ex: Any, make_task: Callable[[tuple[int, int]], Task], n_chunks: int, *,
                what: str, timeout: float | None, progress: Any,
                drop: list[int] = ()) -> list:
    """Run a map or reduce on a ProcessExecutor with guided pieces handed to idle workers
    (each holds up to AHEAD); returns the pieces' results in chunk order. Failures raise as
    in ``ex.run``: the first kernel error, or a crash or timeout (which kills the workers:
    they restart next call)."""
    pieces = deque(guided_pieces(n_chunks, ex.n_workers))
    bar = progress_bar(progress, n_chunks, what)
    results: dict[int, Any] = {}  # first chunk of a piece -> its result
    errors: list = []
    held: list[deque] = [deque() for _ in range(ex.n_workers)]  # (seq, task) sent, in order
    reported = [0] * ex.n_workers  # chunks of the running piece already reported
    deadline = None if timeout is None else time.monotonic() + timeout

    def running() -> list[Task | None]:  # the piece each worker runs (for error messages)
        return [h[0][1] if h else None for h in held]

    def feed(i: int) -> None:
        while pieces and not errors and len(held[i]) < AHEAD:
            task = make_task(pieces.popleft())
            ex.seq += 1
            held[i].append((ex.seq, task))
            try:
                ex.send(i, ("task", ex.seq, task, None, list(drop), bar is not None))
            except OSError:
                ex._crashed(i, running(), what)

    try:
        for i in range(ex.n_workers):
            feed(i)
        while any(held):
            busy = [i for i, h in enumerate(held) if h]
            wait_s = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready = wait([ex.conns[i] for i in busy] + [p.sentinel for p in ex.procs],
                         timeout=wait_s)
            if not ready and deadline is not None:
                ex._timed_out(set(busy), running(), what, timeout)
            for obj in ready:
                if obj not in ex.conns:
                    ex._crashed([p.sentinel for p in ex.procs].index(obj), running(), what)
                i = ex.conns.index(obj)
                try:
                    msg = obj.recv()
                except (EOFError, OSError):
                    ex._crashed(i, running(), what)
                if not held[i] or (msg[1] != held[i][0][0] and msg[1] != UNREADABLE):
                    continue  # a stale message, or a "done" ping of an earlier rung call
                if msg[0] == "progress":
                    reported[i] += msg[2]
                    if bar:
                        bar.update(msg[2])
                    continue
                if msg[0] == "done":
                    continue
                _, task = held[i].popleft()
                ex.insights[i].account(*msg[3])
                if msg[0] == "ok":
                    results[task.chunk_range[0]] = msg[2]
                else:
                    errors.append(kernel_error(what, msg[2]))
                if bar:
                    bar.update(msg[3].chunks_done - reported[i])
                reported[i] = 0
                feed(i)
    except BaseException:
        ex.stop(kill=True)  # Ctrl-C, a crash or a timeout: the workers' state is unknown
        raise
    finally:
        if bar:
            bar.finish()
    if errors:
        raise _first_error(errors)
    return [results[k] for k in sorted(results)]
