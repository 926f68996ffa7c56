"""Code that runs inside a worker process: set-up, the message loop, error capture.

Imports nothing from pool.py: a child process loads only what it needs.
Messages in:  ("task", seq, task) | ("forget", [block names]) | ("stop",)
Messages out: ("ok", seq, result, stats) | ("err", seq, info, stats) | ("progress", seq, n)
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

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


def main(conn: Any, index: int, barrier: Any) -> None:
    """Worker entry point: serve tasks until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _watch_parent()
    limits = _limit_threads()  # noqa: F841 - kept alive for the worker's lifetime
    from . import execute, shared

    pid = os.getpid()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "stop":
            return
        if kind == "forget":
            shared.forget_attached(msg[1])
            continue
        _, seq, task = msg
        last = [time.perf_counter()]

        def report(n: int, seq: int = seq) -> None:
            now = time.perf_counter()
            if now - last[0] > 0.1:
                last[0] = now
                conn.send(("progress", seq, n))
                report.pending = 0
            else:
                report.pending = getattr(report, "pending", 0) + n

        stats = execute.Stats(progress=report)
        t0 = time.perf_counter()
        try:
            result = execute.run_task(task, stats, barrier)
            reply: tuple = ("ok", seq, result, _stats(stats, t0))
            try:
                conn.send(reply)
            except Exception as exc:  # result could not be pickled
                conn.send(("err", seq, _error_info(exc, stats, pid, "result could not be sent "
                                                   "back: "), _stats(stats, t0)))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
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
