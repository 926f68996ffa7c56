"""What the pool shows its user: progress bars that advance as chunks complete (tqdm when
installed, else a plain line, or a callback(done, total); ``progress=True`` leaves the
finished bar on screen, "transient" erases it), and the table ``Pool.insights()`` prints
(``Insights``, made from the executors' per-worker seconds, _executors.WorkerInsight)."""
from __future__ import annotations

import sys
from typing import Any, Iterable

from .errors import InputError


class _Callback:
    """progress=callable: called as callback(done, total) whenever chunks complete."""

    def __init__(self, callback: Any, total: int):
        self.callback, self.total, self.n = callback, total, 0

    def update(self, k: int) -> None:
        self.n += k
        self.callback(self.n, self.total)


class _PlainBar:
    def __init__(self, total: int, desc: str, leave: bool = True):
        self.total, self.desc, self.n, self.leave = total, desc, 0, leave
        self._last = -1

    def update(self, k: int) -> None:
        self.n += k
        pct = 100 * self.n // max(self.total, 1)
        if pct != self._last:
            self._last = pct
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} partitions ({pct}%)")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n" if self.leave else "\r\033[K")
        sys.stderr.flush()


def progress_bar(enabled: Any, total: int, desc: str) -> "Progress | None":
    """A bar over ``total`` partitions when ``enabled`` (True, or an object with update/close),
    else None."""
    return Progress(enabled, total, desc) if enabled else None


class Progress:
    """Counts completed partitions (chunks); shows tqdm.auto, a plain line, or nothing."""

    def __init__(self, enabled: Any, total: int, desc: str):
        self.total, self.n = total, 0
        self._bar: Any = None
        if enabled is True or enabled == "transient":
            leave = enabled is True  # True: the finished bar stays on screen (tqdm's leave)
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=desc, unit="part", leave=leave)
            except ImportError:
                self._bar = _PlainBar(total, desc, leave)
        elif hasattr(enabled, "update"):  # a bar-like object, e.g. a tqdm instance
            self._bar = enabled
        elif callable(enabled):  # callback(done, total) for custom UIs
            self._bar = _Callback(enabled, total)
        else:
            raise InputError(f"progress={enabled!r}: use True, 'transient' (erased when done), "
                             "an object with update(n) such as a tqdm bar, or a callable "
                             "callback(done, total)")

    def update(self, k: int) -> None:
        k = min(k, self.total - self.n)
        if k > 0:
            self.n += k
            if self._bar is not None:
                self._bar.update(k)

    def finish(self) -> None:
        self.update(self.total - self.n)
        if self._bar is not None and hasattr(self._bar, "close"):
            self._bar.close()


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

    @classmethod
    def of(cls, workers: Iterable[Any], wall: float) -> "Insights":
        """The table of executors' WorkerInsights over ``wall`` seconds: what is neither
        compile nor compute of a worker's busy time was attaching and unpickling."""
        return cls(dict(pid=w.pid, tasks=w.tasks,
                        attach_s=max(w.busy_s - w.compile_s - w.compute_s, 0.0),
                        compile_s=w.compile_s, compute_s=w.compute_s,
                        idle_s=max(wall - w.busy_s, 0.0)) for w in workers)


class ChunkProgress:
    """A call's progress bar, advanced by the workers' progress messages, then by the rest
    of each answered task's chunks."""

    def __init__(self, progress: Any, total: int, what: str, n_workers: int):
        self.bar = progress_bar(progress, total, what)  # made only when one is asked
        self.reported = [0] * n_workers  # chunks of the running task already reported

    def advance(self, i: int, msg: tuple) -> None:
        if msg[0] == "progress":
            n, self.reported[i] = msg[2], self.reported[i] + msg[2]
        else:
            n, self.reported[i] = msg[3].chunks_done - self.reported[i], 0
        self.bar.update(n)

    def finish(self) -> None:
        self.bar.finish()
