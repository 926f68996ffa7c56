"""Tamper watch: one inotify descriptor per process tells which shared blocks another process
may have truncated, unlinked or replaced, so a repeated call need not stat every array.

``Block.check_intact`` (segments.py) stats a block's name once, with a watch added *before*
the stat, and remembers how many events the watch had then. Later checks compare that count
with the events read since (one ``read`` per call, or none: a bound call polls the
descriptor together with the workers' sentinels), and stat again only when they differ.
Truncation is IN_MODIFY, unlink and rename-over are IN_ATTRIB (the link count), a move is
IN_MOVE_SELF; a lost event (queue overflow) starts a new ``key``, so every block is stat-ed
again. Linux only: elsewhere ``watcher()`` is None and every check stats, as before.
Releases (free, close, the pool's close) and events read bump ``releases``, which bound
calls compare: an event another call drained is still seen by them. Reads in the parent
(``SharedArray.numpy``, so every ``np.asarray``, ufunc and index) ask ``unchanged``: a poll(0)
while nothing happened, a stat after an event, so a truncated block raises, not SIGBUS.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import select
import struct
import sys
from typing import Any

# inotify(7) masks
_EVENTS = 0x2 | 0x4 | 0x400 | 0x800  # IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
_OVERFLOW = 0x4000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
_keys = itertools.count(1)

releases = 0  # bumped by every block release and SharedArray.close in this process


def released() -> None:
    """Count a release: bound calls holding an older count re-check their arrays."""
    global releases
    releases += 1


class Watcher:
    """The process's inotify descriptor and the event count of every watch."""

    def __init__(self, libc: Any, fd: int):
        self.libc, self.fd = libc, fd
        self.key = next(_keys)  # a new key: no earlier verification counts
        self.counts: dict[int, int] = {}
        self.poll = select.poll()  # "nothing queued" is one poll(0), no read and no raise
        self.poll.register(fd, select.POLLIN)

    def add(self, path: str) -> int | None:
        """Watch ``path`` (the same wd again if it is watched); None if it cannot be."""
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), _EVENTS)
        return None if wd < 0 else wd

    def drain(self) -> None:
        """Count the events queued since the last drain (one read when there are none)."""
        counts = self.counts
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            released()  # bound calls poll the queue, which is now empty: they check again
            off = 0
            while off + _HEADER.size <= len(buf):
                wd, mask, _, n = _HEADER.unpack_from(buf, off)
                off += _HEADER.size + n
                if mask & _OVERFLOW:
                    self.key = next(_keys)  # events were lost: verify every block again
                counts[wd] = counts.get(wd, 0) + 1


_watcher: Watcher | None = None
_tried = False


def unchanged(seen: tuple | None) -> bool:
    """True if the watch in ``seen`` (a Block's ``watched``) had no event since that stat:
    a poll(0) when nothing is queued. SharedArray reads ask this (about 0.5 us, a stat is
    2): False means stat the block again."""
    w = _watcher
    if w is None or seen is None:
        return False
    if w.poll.poll(0):
        w.drain()  # events, for this block or others; an overflow starts a new key
    return seen[0] == w.key and w.counts.get(seen[1], 0) == seen[2]


def watcher() -> Watcher | None:
    """This process's Watcher, made at the first check or SharedArray read (a worker makes
    one only if a task reads a SharedArray; kernels' views are not checked)."""
    global _watcher, _tried
    if _tried:
        return _watcher
    _tried = True
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd >= 0:
        _watcher = Watcher(libc, fd)
    return _watcher


def _after_fork_in_child() -> None:  # the parent's queue is not ours to drain
    global _watcher, _tried
    if _watcher is not None:
        try:
            os.close(_watcher.fd)
        except OSError:
            pass
    _watcher, _tried = None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
