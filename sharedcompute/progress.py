"""Progress bars that advance as chunks complete: tqdm when installed, else a plain line, or a
callback(done, total). ``progress=True`` leaves the finished bar on screen, "transient"
erases it."""
from __future__ import annotations

import sys
from typing import Any

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
