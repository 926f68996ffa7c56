"""Progress bars that advance when partitions complete: tqdm when installed, else a plain line."""
from __future__ import annotations

import sys
from typing import Any


class _PlainBar:
    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n = total, desc, 0
        self._last = -1

    def update(self, k: int) -> None:
        self.n += k
        pct = 100 * self.n // max(self.total, 1)
        if pct != self._last:
            self._last = pct
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} partitions ({pct}%)")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
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
        if enabled is True:
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=desc, unit="part", leave=False)
            except ImportError:
                self._bar = _PlainBar(total, desc)
        elif enabled:  # a user object with update(n) and close(), e.g. a tqdm instance
            self._bar = enabled

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
