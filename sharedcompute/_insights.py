"""What the executors account from each worker's answer, in one place (``Accounts.account_answer``):
the seconds it spent attaching, compiling, computing and idle (``WorkerInsight``, added up
from every answer and from the running totals that the doorbell lines keep for rung calls;
``Insights`` is the table Pool.insights() prints), and the chunks it finished
(``ChunkProgress``, a call's progress bar)."""
from __future__ import annotations

from typing import Any

from .errors import kernel_error
from .progress import progress_bar


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

    def as_dict(self, wall: float) -> dict:
        other = max(self.busy_s - self.compile_s - self.compute_s, 0.0)
        return dict(pid=self.pid, tasks=self.tasks, attach_s=other, compile_s=self.compile_s,
                    compute_s=self.compute_s, idle_s=max(wall - self.busy_s, 0.0))


class Insights(list):
    """Per-worker timings (a list of dicts) that prints as a table (Pool.insights)."""

    @property
    def imbalance(self) -> float:
        busy = [w["compute_s"] for w in self]
        return max(busy) / (sum(busy) / len(busy)) if busy and sum(busy) > 0 else 1.0

    def __str__(self) -> str:
        lines = [f"{'worker pid':>10} {'tasks':>6} {'attach s':>9} {'compile s':>9} "
                 f"{'compute s':>9} {'idle s':>9}"]
        for w in self:
            lines.append(f"{w['pid']:>10} {w['tasks']:>6} {w['attach_s']:>9.3f} "
                         f"{w['compile_s']:>9.3f} {w['compute_s']:>9.3f} {w['idle_s']:>9.3f}")
        lines.append(f"imbalance (max/mean compute): {self.imbalance:.2f}")
        return "\n".join(lines)

    __repr__ = __str__  # a REPL shows the table, not a raw list


class ChunkProgress:
    """A call's progress bar, advanced by the workers' progress messages, then by the rest
    of each answered task's chunks."""

    def __init__(self, progress: Any, total: int, what: str, n_workers: int):
        self.bar = progress_bar(progress, total, what) if progress else None  # none asked: no call
        self.reported = [0] * n_workers  # chunks of the running task already reported

    def advance(self, i: int, msg: tuple) -> None:
        if msg[0] == "progress":
            n, self.reported[i] = msg[2], self.reported[i] + msg[2]
        else:
            n, self.reported[i] = msg[3].chunks_done - self.reported[i], 0
        if self.bar:
            self.bar.update(n)

    def finish(self) -> None:
        if self.bar:
            self.bar.finish()


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
