"""Code that runs inside a worker process: set-up, the message loop, error capture.

Imports nothing from pool.py: a child process loads only what it needs.
Messages in:  ("task", seq, task, memo id or None, memo ids to drop) | ("forget", [block names]) | ("wake",)
              | ("stop",); and calls rung through the doorbell (doorbell.py)
Messages out: ("ok", seq, result, stats) | ("err", seq, info, stats) | ("progress", seq, n)
              | ("done", seq) (a rung call finished while the parent sleeps)
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

from . import doorbell, execute, shared
from ._system import THREAD_VARS


def _watch_parent() -> None:
    """Exit as soon as the parent dies (SIGKILL included), so no orphan keeps segments alive."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(3)

    threading.Thread(target=watch, name="sharedcompute-parent-watch", daemon=True).start()


def _limit_threads() -> Any:
    for var in THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=1)  # BLAS/OpenMP already loaded (numpy's OpenBLAS)
    except Exception:  # pragma: no cover - threadpoolctl is a dependency
        return None


def main(conn: Any, index: int, barrier: Any, bell: Any = None, n_workers: int = 1) -> None:
    """Worker entry point: serve tasks until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _watch_parent()
    limits = _limit_threads()  # noqa: F841 - kept alive for the worker's lifetime

    pid = os.getpid()
    lines = doorbell.Lines(bell, n_workers) if bell is not None else None
    prepared: dict[int, tuple] = {}  # memo id -> (task, views, prepared run); the parent
    # decides which ids live: it names the ones to drop in its next task message
    if lines is not None:  # sweeps of iterate meet in shared memory, not on semaphores
        barrier = doorbell.SpinBarrier(lines, index)
    pipe_seen = last_ring = 0

    def called() -> bool:  # a rung call or a pipe message is waiting
        # PIPE_SENT is counted after the send, so it can lag behind what we received: ">"
        return (lines.word(index, doorbell.RING) != last_ring
                or lines.word(index, doorbell.PIPE_SENT) > pipe_seen)

    while True:
        if lines is not None:
            if lines.word(index, doorbell.RING) != last_ring:
                last_ring = lines.word(index, doorbell.RING)
                _run_rung(conn, lines, index, last_ring, prepared, barrier, pid)
                continue
            if not doorbell.spin_until(called):
                lines.set_word(index, doorbell.W_ASLEEP, 1)
                doorbell.fence()  # the parent reads W_ASLEEP after writing RING (Dekker)
                if called():
                    lines.set_word(index, doorbell.W_ASLEEP, 0)
                    continue
            elif lines.word(index, doorbell.PIPE_SENT) <= pipe_seen:
                continue
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        pipe_seen += 1
        if lines is not None:
            lines.set_word(index, doorbell.W_ASLEEP, 0)
        kind = msg[0]
        if kind == "wake":
            continue
        if kind == "stop":
            return
        if kind == "forget":
            prepared.clear()  # drop views first, so the blocks can be unmapped
            shared.forget_attached(msg[1])
            continue
        _, seq, task, memo, drop = msg
        for old in drop:
            prepared.pop(old, None)
        views = None
        if lines is not None and task["op"] == "iterate":
            barrier.begin(seq)
        stats = execute.Stats(progress=_reporter(conn, seq))
        t0 = time.perf_counter()
        try:
            if memo is not None:
                views = execute.resolve(task["specs"])
            result = execute.run_task(task, stats, barrier, views)
            if memo is not None:
                prepared[memo] = (task, views, execute.prepare(task, views))
            reply: tuple = ("ok", seq, result, _stats(stats, t0))
            try:
                conn.send(reply)
            except Exception as exc:  # result could not be pickled
                conn.send(("err", seq, _error_info(exc, stats, pid, "result could not be sent "
                                                   "back: "), _stats(stats, t0)))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            conn.send(("err", seq, _error_info(exc, stats, pid), _stats(stats, t0)))


def _reporter(conn: Any, seq: int) -> Any:
    """Progress callback: at most one message per 0.1 s through the pipe."""
    last = [time.perf_counter()]

    def report(n: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 0.1:
            last[0] = now
            conn.send(("progress", seq, n))
            report.pending = 0
        else:
            report.pending = getattr(report, "pending", 0) + n
    return report


def _run_rung(conn: Any, lines: Any, index: int, seq: int, prepared: dict, barrier: Any,
              pid: int) -> None:
    """Run a cached task started through the doorbell; answer through it when the result is
    small, else (errors, big results) through the pipe."""
    memo = lines.word(index, doorbell.MEMO)
    stats = execute.Stats()
    t0 = time.perf_counter()
    try:
        if memo not in prepared:
            raise LookupError(f"sharedcompute internal error: task memo {memo} is unknown to "
                               "this worker")
        task, views, run = prepared[memo]
        result = run(stats) if run is not None else execute.run_task(task, stats, barrier, views)
        data = b"" if result is None else pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        if not lines.set_result(index, data):
            conn.send(("ok", seq, result, _stats(stats, t0)))
            return
        lines.set_stats(index, _stats(stats, t0))
        lines.set_word(index, doorbell.DONE, seq)
        doorbell.fence()  # the parent writes P_ASLEEP before re-reading DONE (Dekker)
        if lines.word(index, doorbell.P_ASLEEP):
            conn.send(("done", seq))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("err", seq, _error_info(exc, stats, pid), _stats(stats, t0)))


def _stats(stats: Any, t0: float) -> tuple:
    return (stats.compile_s, stats.compute_s, time.perf_counter() - t0, stats.chunks_done)


def _error_info(exc: BaseException, stats: Any, pid: int, prefix: str = "") -> dict:
    """A plain, always-picklable description of an exception (some cannot be pickled)."""
    try:
        text = str(exc)
    except Exception:  # pragma: no cover
        text = "<exception text unavailable>"
    return dict(type=type(exc).__name__, message=prefix + text, rows=stats.rows, pid=pid,
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("sharedcompute._worker is started by sharedcompute.Pool")
