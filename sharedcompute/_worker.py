"""The worker process's main loop: set-up, then serve messages and rung calls until told to
stop or the parent goes away.

Imports only the worker side (_task, plan, kernel, partition, shared, doorbell, errors,
_system), never the executors or the pool.
Messages in:  ("work", seq, WorkOrder, memo id or None, memo ids to drop, report progress?)
              | ("claim", seq, WorkOrder of all chunks, memo ids to drop, report progress?):
                schedule="dynamic", pieces claimed through ``claims`` (partition.claim_piece)
              | ("task", [(seq, pickled (function, args, kwargs)), ...]): tasks (futures.py),
                each answered on its own, so a crash is charged to the one that ran
              | ("forget", [block names], [memo ids to drop first: those holding them])
              | ("warmup", seq, [(kernel, boundscheck, signatures, totals signatures)]):
                compile (or load from numba's cache) before any call (Pool.warmup)
              | ("wake",) | ("stop",); and calls rung through the doorbell (doorbell.py)
Messages out: ("ok", seq, result, TaskStats) | ("err", seq or -1 when the message could not
              be read, error info, TaskStats)
              | ("progress", seq, n) | ("done", seq) (a rung call finished while the parent sleeps)
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from . import doorbell, shared
from ._system import limit_threads
from ._evaluate import (Stats, TaskStats, detached, piece_runner, prepare, read_only, resolve,
                        run_task)
from .errors import TaskLostError, remote_error_info
from .partition import claim_piece


UNREADABLE = -1  # the seq of an error about a message the worker could not unpickle (the
# parent's wait, _executors.ProcessExecutor._wait, takes it as the answer it waits for)


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


def main(conn: Any, index: int, barrier: Any, bell: Any = None, n_workers: int = 1,
         claims: Any = None) -> None:
    """Worker entry point: serve tasks until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _watch_parent()
    limits = limit_threads()  # noqa: F841 - kept alive for the worker's lifetime

    pid = os.getpid()
    line = doorbell.WorkerBell(doorbell.Lines(bell, n_workers), index) if bell is not None \
        else None
    if line is not None:  # sweeps of iterate meet in shared memory, not on semaphores
        barrier = doorbell.SpinBarrier(line.lines, index)
    prepared: dict[int, tuple] = {}  # memo id -> (task, views, prepared run); the parent
    # decides which ids live: it names the ones to drop in its next task message
    woken = 0.0  # a wake ahead of a call: poll longer for its ring (doorbell.wake_sleepers)
    while True:
        budget, woken = woken, 0.0
        if line is not None and line.wait(budget) == "ring":
            _run_rung(conn, line, prepared, barrier, pid)
            continue
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # unpickling the task failed, e.g. importing its kernel's
            if line is not None:  # module raised: say why, instead of dying with exit code 1
                line.got_pipe_message()
            conn.send(("err", UNREADABLE, unreadable(exc, pid), TaskStats(0.0, 0.0, 0.0, 0)))
            detached(exc)
            continue
        if line is not None:
            line.got_pipe_message()
        kind = msg[0]
        if kind == "wake":
            woken = doorbell.WOKEN_SPIN_S
            continue
        if kind == "stop":
            return
        if kind == "task":
            _run_tasks(conn, msg[1], pid)
            continue
        if kind == "warmup":
            _run_warmup(conn, msg[1], msg[2], pid)
            continue
        if kind == "forget":  # the parent names the cached calls that hold these blocks
            for memo in msg[2]:
                prepared.pop(memo, None)  # views first, so the blocks can be unmapped
            shared.forget_attached(msg[1])
            continue
        if kind == "work":
            _run_sent(conn, msg, prepared, barrier, pid)
            continue
        if kind == "claim":
            _run_claims(conn, msg, prepared, claims, index, pid)
            continue
        raise AssertionError(f"unknown message {kind!r}")  # a parent of another version


def import_failure(exc: BaseException) -> tuple[str, str, str, Any] | None:
    """When ``exc`` was raised importing a module (its top-level code, or the import system's
    ImportError): (the outermost module imported: the one asked for, the innermost: the one
    that raised, " (file, line N)" where it raised, the traceback from the outermost
    module's frame on); else None."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name != "<module>":
        tb = tb.tb_next
    if tb is None:
        name = exc.name if isinstance(exc, ImportError) else None
        return (name, name, "", None) if name else None
    outer = inner = tb.tb_frame.f_globals.get("__name__", "?")
    last = tb
    while last.tb_next is not None:
        last = last.tb_next
        if last.tb_frame.f_code.co_name == "<module>":
            inner = last.tb_frame.f_globals.get("__name__", "?")
    return outer, inner, f" ({last.tb_frame.f_code.co_filename}, line {last.tb_lineno})", tb


def unreadable(exc: BaseException, pid: int) -> dict:
    """The error for a message this worker could not unpickle. Mostly importing the module of
    its kernel (or task function) failed here, not in the parent: name that module, the
    line that raised and why, keep only that module's frames (not pickle's and importlib's)
    and mark it a start-up failure, printed short (errors.short_traceback)."""
    failed = import_failure(exc)
    if failed is None:
        return remote_error_info(exc, (0, 0), pid, "the task could not be read: ")
    module, _, where, tb = failed
    info = remote_error_info(exc.with_traceback(tb), (0, 0), pid,
                             f"worker {pid} could not import module {module!r}{where}: ")
    info["startup"] = True
    return info


def _run_sent(conn: Any, msg: tuple, prepared: dict, barrier: Any, pid: int) -> None:
    """A task sent through the pipe; with a memo id, keep it prepared for rung calls."""
    _, seq, task, memo, drop, wants_progress = msg
    for old in drop:
        prepared.pop(old, None)
    views = None
    if task.barriered and barrier is not None:
        barrier.begin(seq)
    stats = Stats(progress=_reporter(conn, seq) if wants_progress else None)
    t0 = time.perf_counter()
    try:
        if memo is not None:
            views = resolve(task.specs)
        result = run_task(task, stats, barrier, views)
        if memo is not None:
            prepared[memo] = (task, views, prepare(task, views))
        try:
            conn.send(("ok", seq, result, stats.report(t0)))
        except Exception as exc:  # result could not be pickled
            conn.send(("err", seq, remote_error_info(exc, stats.rows, pid, "result could not "
                                                     "be sent back: "), stats.report(t0)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        conn.send(("err", seq, remote_error_info(exc, stats.rows, pid), stats.report(t0)))
        detached(exc)  # numba's cache of failed compiles must not pin this call's views


def claim(claims: Any, index: int) -> tuple[int, int] | None:
    """Worker ``index``'s next piece of a dynamic call (partition.claim_piece), under the
    bounds' lock, so no two workers ever take the same chunk."""
    with claims.get_lock():
        return claim_piece(claims.get_obj(), index)


def _run_claims(conn: Any, msg: tuple, prepared: dict, claims: Any, index: int,
                pid: int) -> None:
    """schedule="dynamic": claim pieces and run them until none is left, then answer once
    with [(piece, its result)]; with a memo id, keep the claim loop for rung calls."""
    _, seq, task, memo, drop, wants_progress = msg
    for old in drop:
        prepared.pop(old, None)
    stats = Stats(progress=_reporter(conn, seq) if wants_progress else None)
    t0 = time.perf_counter()
    try:
        views = resolve(task.specs)
        run = claim_loop(task, views, claims, index)
        done = run(stats)
        if memo is not None:
            prepared[memo] = (task, views, run)
        del views, run
        conn.send(("ok", seq, done, stats.report(t0)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        conn.send(("err", seq, remote_error_info(exc, stats.rows, pid), stats.report(t0)))
        detached(exc)


def claim_loop(task: Any, views: list, claims: Any, index: int) -> Callable[[Stats], list]:
    """run(stats): claim pieces of ``task`` and run them on ``views`` until none is left;
    returns [(piece, its result)]. On an error it ends the claims for all (the call fails).
    Its ``patch`` does nothing: a rung call's new values are put into ``views`` itself
    (_take_values), which every piece slices afresh."""
    fast = piece_runner(task, views)

    def run(stats: Stats) -> list:
        done = []
        try:
            while (piece := claim(claims, index)) is not None:
                task.chunk_range = piece
                done.append((piece, run_task(task, stats, None, views, fast)))
        except BaseException:
            with claims.get_lock():  # the others stop claiming
                claims.get_obj()[:] = [0] * len(claims)
            raise
        return done
    run.patch = lambda changes: None  # type: ignore[attr-defined]
    return run


def _run_tasks(conn: Any, items: list, pid: int) -> None:
    """Tasks: call each function on its arguments (SharedArrays arrive as handles and attach
    here) and answer with its pickled result, or its exception (pickled when it can be, so
    the caller can catch its own type) and traceback text."""
    for seq, payload in items:
        t0 = time.perf_counter()
        try:
            fn, args, kwargs = pickle.loads(payload)
            result = fn(*args, **kwargs)
            busy = time.perf_counter() - t0
            del fn, args, kwargs  # views into blocks: not kept past the task
            try:
                conn.send(("ok", seq, result, TaskStats(0.0, busy, busy, 1)))
            except Exception as exc:  # pickling fails before anything is written
                raise TypeError(f"the task's result ({type(result).__name__}) could not be "
                                f"pickled back to the caller: {exc}") from exc
            finally:
                del result
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            info = remote_error_info(exc, (0, 0), pid, keep=True)  # errors.task_error rebuilds it
            busy = time.perf_counter() - t0
            conn.send(("err", seq, info, TaskStats(0.0, busy, busy, 1)))
            detached(exc)


def compile_signatures(items: list, current: list) -> int:
    """Compile each kernel's dispatcher for each signature; Dispatcher.compile loads the
    machine code from numba's disk cache first (numba/core/dispatcher.py). Returns how many;
    ``current`` holds the kernel and signature being compiled, for an error message."""
    n = 0
    for kernel, boundscheck, sigs, totals_sigs in items:
        func, totals = kernel.compiled(boundscheck)
        for disp, group in ((func, sigs), (totals, totals_sigs)):
            for sig in group:
                current[:] = [kernel.name, ", ".join(map(str, sig))]
                disp.compile(sig)
                n += 1
    return n


def _run_warmup(conn: Any, seq: int, items: list, pid: int) -> None:
    """Answer a warmup message: the seconds count as compile time in Pool.insights()."""
    t0 = time.perf_counter()
    current: list = []
    try:
        n = compile_signatures(items, current)
        busy = time.perf_counter() - t0
        conn.send(("ok", seq, n, TaskStats(busy, 0.0, busy, 0)))
    except BaseException as exc:  # noqa: BLE001 - a typing error goes back to the parent
        busy = time.perf_counter() - t0
        info = remote_error_info(exc, (0, 0), pid, f"warmup for ({current[1]}): "
                                 if current else "warmup: ")
        info["kernel"] = current[0] if current else "warmup"
        conn.send(("err", seq, info, TaskStats(busy, 0.0, busy, 0)))
        detached(exc)


PROGRESS_EVERY_S = 0.05  # at most 20 progress messages a second per worker


def _reporter(conn: Any, seq: int) -> Any:
    """Progress callback: the chunks done since the last message, at most one message per
    PROGRESS_EVERY_S through the pipe (the rest arrive with the result)."""
    state = [time.perf_counter(), 0]  # last send, chunks not yet reported

    def report(n: int) -> None:
        state[1] += n
        now = time.perf_counter()
        if now - state[0] >= PROGRESS_EVERY_S:
            conn.send(("progress", seq, state[1]))
            state[0], state[1] = now, 0
    return report


def _run_rung(conn: Any, line: Any, prepared: dict, barrier: Any, pid: int) -> None:
    """Run a cached task started through the doorbell; answer through it when the result is
    small, else (errors, big results) through the pipe."""
    seq, memo = line.last_ring, line.memo()
    stats = Stats()
    t0 = time.perf_counter()
    try:
        entry = prepared.get(memo)
        if entry is None:
            raise TaskLostError(f"sharedcompute internal error: task memo {memo} is unknown to "
                                "this worker")
        if line.has_values():
            entry = _take_values(line, prepared, memo)
        task, views, run = entry
        if task.barriered and barrier is not None:  # a kept iterate: its sweeps' barrier
            barrier.begin(seq)  # counts from this call's epoch, as a sent task's do
        result = run(stats) if run is not None else run_task(task, stats, barrier, views)
        data = b"" if result is None else pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        if not line.answer(seq, data, stats, t0, conn):
            conn.send(("ok", seq, result, stats.report(t0)))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("err", seq, remote_error_info(exc, stats.rows, pid), stats.report(t0)))
        detached(exc)


def _take_values(line: Any, prepared: dict, memo: int) -> tuple:
    """A rung call that carries new scalar (or small plain array) arguments: patch them into
    the cached task (its arrays and slices stay the same), or prepare it again where it has
    no prepared run; returns it."""
    task, views, run = prepared[memo]  # this worker's own copies: changed in place
    changes = []
    for i, value in line.lines.values(line.index):
        task.specs[i].value = value
        views[i] = read_only(value) if isinstance(value, np.ndarray) else value
        changes.append((i, views[i]))
    if not _patch_run(run, changes):
        prepared[memo] = (task, views, prepare(task, views))
    return prepared[memo]


def _patch_run(run: Any, changes: list) -> bool:
    """Put new values into a prepared run (its ``patch``, _evaluate.prepare); False when there
    is none (no prepared run: prepare the task again)."""
    patch = getattr(run, "patch", None)
    if patch is None:
        return False
    patch(changes)
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit("sharedcompute._worker is started by sharedcompute.Pool")
