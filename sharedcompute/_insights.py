"""What Pool.insights() reports: each worker's seconds attaching, compiling, computing and
idle (``WorkerInsight``, added up by the executors from every answer, and from the running
totals that the doorbell lines keep for rung calls), and the table they print as
(``Insights``)."""
from __future__ import annotations

from typing import Any


class WorkerInsight:
    """Seconds one worker spent attaching, compiling, computing and idle."""

    def __init__(self, pid: int):
        self.pid, self.compile_s, self.compute_s, self.busy_s, self.tasks = pid, 0.0, 0.0, 0.0, 0

    def account(self, compile_s: float, compute_s: float, busy_s: float, *_: Any) -> None:
        """Add one task's seconds (the fields of a TaskStats, which may be passed unpacked)."""
        self.compile_s += compile_s
        self.compute_s += compute_s
        self.busy_s += busy_s
        self.tasks += 1

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
    """Per-worker timings (a list of dicts) that prints as a table."""

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
