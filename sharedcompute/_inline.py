"""InlineExecutor: a call's tasks run in the calling process, in order, with the partitions
and combine order of a pool of ``n_workers`` (backend="inline", and direct kernel calls):
breakpoints and print() work. It is an ``Executor`` (_executors.py) with no workers to
start, stop, signal or forget."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ._executors import Accounts, WorkerInsight
from ._evaluate import Stats, detached, run_task
from ._worker import compile_signatures
from ._compile import one_numba_thread
from .errors import kernel_error, remote_error_info
from .partition import split_even
from .plan import WorkOrder
from .progress import progress_bar


class _NoBarrier:
    """Inline iterate runs all chunks in one task: its sweeps need no meeting point."""

    def wait(self) -> None:
        pass

    def abort(self) -> None:
        pass


class InlineExecutor(Accounts):
    """Runs every task in the calling process, in order: breakpoints and print() work. It
    has no workers to start, stop, signal or forget: those are no-ops."""

    in_process = True
    queues_tasks = False  # a user task runs at once, in the caller (futures.run_now)
    rings = False
    generation = 0
    alive = True
    pids: list[int] = []

    def __init__(self, n_workers: int):
        self.n_workers = n_workers
        self.insights = [WorkerInsight(0)]
        self.started_at = time.perf_counter()
        self.start_method = "inline"

    def start(self) -> None:
        pass

    def stop(self, kill: bool = False) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def forget_after_fork(self) -> None:
        pass

    def send_all(self, msg: tuple) -> None:
        pass

    def check_sendable(self, kernel: Any) -> None:
        pass  # nothing is sent

    def sweep_ranges(self, n_chunks: int) -> list[tuple[int, int]]:
        """An iterate's chunks as one task: tasks run one after another here, so a barrier
        between them could never be passed."""
        return [(0, n_chunks)]

    def run(self, tasks: list[WorkOrder], *, what: str, timeout: float | None, progress: Any,
            total: int = 0, memo: int | None = None, drop: list[int] = ()) -> list:
        bar = progress_bar(progress, total, what)
        out: list = []
        failure = cause = None
        try:
            for task in tasks:
                stats = Stats(progress=bar.update if bar else None)
                t0 = time.perf_counter()
                try:
                    with one_numba_thread(task.kernel.parallel):  # a worker's bits
                        out.append(run_task(task, stats, _NoBarrier()))
                except Exception as exc:
                    failure = kernel_error(what, remote_error_info(exc, stats.rows, None))
                    cause = detached(exc)
                finally:
                    self.account_answer(0, ("ok", 0, None, stats.report(t0)))
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

    def run_dynamic(self, task: WorkOrder, n_chunks: int, *, what: str,
                    timeout: float | None, progress: Any, memo: int | None = None,
                    drop: list[int] = ()) -> list:
        """Inline, every piece runs in order anyway: the static split's tasks (the same
        chunks and combine tree, so the same result)."""
        tasks = [replace(task, chunk_range=r) for r in split_even(n_chunks, self.n_workers)]
        return self.run(tasks, what=what, timeout=timeout, progress=progress, total=n_chunks)

    def warmup(self, items: list, timeout: float | None) -> None:
        """Compile the items' signatures in this process; a typing error raises the
        KernelError a worker's would give."""
        t0, current = time.perf_counter(), []
        try:
            compile_signatures(items, current)
        except Exception as exc:
            info = remote_error_info(exc, (0, 0), None, f"warmup for ({current[1]}): "
                                     if current else "warmup: ")
            raise kernel_error(current[0] if current else "warmup", info) from None
        finally:
            busy = time.perf_counter() - t0
            self.account_answer(0, ("ok", 0, None, (busy, 0.0, busy, 0)), tasks=0)
