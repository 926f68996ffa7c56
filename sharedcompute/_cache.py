"""The repeated-call cache, in one place: what identifies a call the workers keep (its key),
the cached call itself (``Entry``), when its blocks may skip their check, eviction, and
invalidation per block. ``LocalBackend`` owns one ``CallCache``; a ``BoundCall`` (bind.py)
is a handle on one of its entries.

The key holds everything that decides a result, other than the contents of shared arrays:

- the kernel object (a redefined kernel is a new object) and its content token (a kernel
  whose module was reloaded in place keeps its object: kernel.py), the op, rows, boundary
  and depth;
- each SharedArray by ``SharedArray._ident``: its block (the name, or a file's path, device
  and inode), the block's size, offset, shape, strides, dtype and writability. An in-place
  reshape (``a.shape = ...``) or another view of the same memory is another call; a view
  made afresh for each call (``a[1:]``) is the same call;
- scalars by type, their exact bits in the values (NaN payloads and -0.0 included);
- small plain arrays by dtype, shape and strides, their bytes in the values.

A call whose key matches but whose values changed sends the new values with the doorbell
(doorbell.pack_values) instead of being planned again. A released block (free, close, a
pool's iterate scratch) drops only the entries that hold it: the workers hear those ids and
the block's name, and unmap it.
"""
from __future__ import annotations

import itertools
import select
import struct
from typing import Any

import numpy as np

from . import _watch
from .kernel import Kernel
from .plan import Plan, Whole
from .shared import SharedArray

MEMO_SIZE = 32  # cached calls per pool (each worker keeps what the parent names)
SMALL_BYTES = 2048  # plain arrays up to this size are cached by their bytes (sent in a line)
_SCALARS = (int, float, complex, bool, np.number, np.bool_)
REPLAN = object()  # LocalBackend._call_again: plan this call afresh
_pack_d = struct.Struct("<d").pack


# -- the key ---------------------------------------------------------------------------------
def call_key(op: str, kernel: Any, args: tuple, rows: Any, boundary: Any,
             depth: Any = None) -> tuple | None:
    """(key, values) of a repeatable call; None: not cacheable (see the module docstring)."""
    if not isinstance(kernel, Kernel) or kernel.kind != op:
        return None  # maps and reductions only (a scan is two calls)
    # the kernel and its content: one whose module was reloaded in place (IPython's
    # %autoreload 2 keeps the object) is another call. The caller's check_sendable() has
    # just refreshed the token (a bound call's first key may be stale: it plans anyway)
    token = kernel._token if kernel._token is not None else kernel.content_token()
    key: list = [op, kernel, token, rows, scalar_bits(boundary), depth]
    vals: list = []
    for a in args:
        t = type(a)
        if t is SharedArray:
            key.append(a._ident)
        elif isinstance(a, _SCALARS):
            key.append(t)
            vals.append(scalar_bits(a))
        elif t is Whole and type(a.array) is SharedArray:
            key.append((Whole, a.array._ident))
        elif t is np.ndarray and a.nbytes <= SMALL_BYTES and a.dtype.kind in "biufc":
            key.append((a.dtype, a.shape, a.strides))
            vals.append(_plain_value(a))
        else:
            return None
    try:
        hash(tuple(key))
    except TypeError:
        return None
    return tuple(key), tuple(vals)


def _plain_value(a: np.ndarray) -> tuple:
    # dtype, shape and strides too: a bound call compares values only, and ``w.shape = ...``
    # or ``w.dtype = ...`` keeps the bytes
    return (a.dtype, a.shape, a.strides, a.tobytes())  # dtypes compare by value


def values_of(args: tuple) -> tuple:
    """The values part of call_key for arguments of a known key (a bound call's)."""
    return tuple(scalar_bits(a) if isinstance(a, _SCALARS) else _plain_value(a)
                 for a in args if type(a) is not SharedArray and type(a) is not Whole)


def scalar_bits(value: Any) -> Any:
    """A scalar as its type and exact bits: 0.0 == -0.0, and every NaN is ``'nan'`` to
    float.hex, so zeros and NaNs go by their IEEE bits. A nonzero, non-NaN float is its own
    key (equal floats have equal bits), the cheapest case."""
    t = type(value)
    if t is float:
        return (t, value) if value and value == value else (t, _pack_d(value))
    if t is int:
        return (t, value)
    if isinstance(value, np.generic):
        return (type(value), value.tobytes())
    if isinstance(value, float):
        return (type(value), _pack_d(value))
    if isinstance(value, complex):
        return (type(value), _pack_d(value.real), _pack_d(value.imag))
    return (type(value), value)


# -- an entry ----------------------------------------------------------------------------------
class Entry:
    """A call whose tasks every worker keeps under ``memo_id``, for one generation of workers,
    until one of its blocks is released or it is evicted."""

    def __init__(self, key: tuple, memo_id: int, generation: int, args: tuple, plan: Plan,
                 tasks: list, vals: tuple):
        self.key, self.memo_id, self.generation = key, memo_id, generation
        self.n_chunks = len(plan.chunks)
        self.shared_at = [i for i, a in enumerate(args)
                          if type(a) is SharedArray or type(a) is Whole]
        self.value_at = [i for i, a in enumerate(args)
                         if type(a) is not SharedArray and type(a) is not Whole]
        self.names = {b.name for b in plan.written_blocks + plan.read_blocks if b is not None}
        self.vals = vals  # the values the workers hold (call_key)
        self.check = plan.kernel.check  # run again when the values change
        self.live = True  # False once dropped: a bound call holding it plans again
        self.checked_at = -1  # _watch.releases when its blocks were last checked intact
        self.watched = False  # every block watched by inotify: quiet() then vouches for them
        self.writes = sorted(plan.kernel.writes)  # indices: never hold the arrays themselves
        self.written_names = [b.name for b in plan.written_blocks if b is not None]
        self.tasks = tasks  # for error messages: the rows each worker covers (handles only)
        self.active = [i for i, t in enumerate(tasks) if t.chunk_range[1] > t.chunk_range[0]]
        self.reduces = plan.kernel.kind == "reduce"  # else a map: its workers return nothing

    def fresh(self) -> bool:
        """Its blocks were checked intact since the last release and inotify watches them
        all: with no tamper event queued (CallCache.quiet), they need no check."""
        return self.watched and self.checked_at == _watch.releases

    def checked(self, releases: int, blocks: list) -> None:
        """Record a check of its blocks; ``releases``: _watch.releases before it began (a
        drain during the check bumps it, so the next call checks again)."""
        self.checked_at = releases
        self.watched = all(not b.is_file and b.watched for b in blocks)

    def arrays(self, args: tuple) -> list:
        """The call's SharedArrays (sc.whole unwrapped)."""
        return [a.array if type(a) is Whole else a for a in (args[i] for i in self.shared_at)]

    def blocks(self, args: tuple) -> list:
        """The blocks of the call's shared arrays (``.block`` refuses a closed array)."""
        out = []
        for i in self.shared_at:
            a = args[i]
            b = (a.array if type(a) is Whole else a).block
            if b is not None:
                out.append(b)
        return out

    def check_blocks(self, blocks: list, drained: bool) -> None:
        """Check its blocks intact, unless fresh() and ``drained`` (quiet(): no event
        queued), the rule bound calls use too."""
        if drained and self.fresh():
            return
        releases = _watch.releases
        check_blocks(blocks, drained)
        self.checked(releases, blocks)


def check_blocks(blocks: list, drained: bool = False) -> None:
    """check_intact on every block with one read of the tamper watch (_watch.py) for all."""
    w = _watch.watcher()
    if w is not None and not drained:
        w.drain()
    for b in blocks:
        if b.is_file:
            b.check_intact()
        else:
            b.check_intact(True)


# -- the cache -------------------------------------------------------------------------------
class CallCache:
    """One pool's cached calls, most recently used last, and what its workers must hear:
    the ids to drop (with the next task message) and the released blocks to unmap."""

    def __init__(self, size: int = MEMO_SIZE):
        self.size = size
        self.entries: dict[tuple, Entry] = {}
        self.by_block: dict[str, set] = {}  # block name -> keys of the entries holding it
        self._ids = itertools.count(1)
        self.drop: list[int] = []  # ids the workers should drop
        self.forget: list[str] = []  # released blocks the workers should unmap
        self._poller: tuple = (None, None)  # (generation, poll over sentinels + tamper watch)

    def lookup(self, key: tuple, generation: int) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None or entry.generation != generation:
            return None
        self.entries[key] = self.entries.pop(key)  # most recently used: evicted last
        return entry

    def new_id(self) -> int:
        return next(self._ids)

    def store(self, key: tuple, memo_id: int, generation: int, args: tuple, plan: Plan,
              tasks: list, vals: tuple, releases: int) -> Entry:
        """Remember a call just run; ``releases``: _watch.releases before it was planned
        (planning checked every block intact)."""
        self.discard(key)
        if len(self.entries) >= self.size:
            self.discard(next(iter(self.entries)))
        entry = self.entries[key] = Entry(key, memo_id, generation, args, plan, tasks, vals)
        for name in entry.names:
            self.by_block.setdefault(name, set()).add(key)
        entry.checked(releases, entry.blocks(args))
        return entry

    def discard(self, key: Any) -> None:
        """Forget a cached call; the workers drop it with the next message."""
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        entry.live = False
        self.drop.append(entry.memo_id)
        for name in entry.names:
            keys = self.by_block.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_block[name]

    def block_released(self, name: str) -> None:
        """A block was freed or closed: drop the entries that hold it, and no other."""
        for key in list(self.by_block.get(name, ())):
            self.discard(key)
        self.forget.append(name)

    def take_drop(self) -> list[int]:
        drop, self.drop = self.drop, []
        return drop

    def take_forget(self) -> tuple[list[str], list[int]]:
        """(released block names, ids to drop first) for the workers' "forget" message."""
        names, self.forget = self.forget, []
        return names, self.take_drop()

    def clear(self) -> None:
        """New workers hold nothing: forget every entry and what the old ones should hear."""
        for key in list(self.entries):
            self.discard(key)
        self.drop, self.forget = [], []

    def quiet(self, ex: Any) -> bool:
        """One poll(0): every worker alive, no released block to name, no tamper event
        queued (then no block needs a stat, _watch.py). False: take the checking path."""
        if self.forget or len(ex.procs) != ex.n_workers:
            return False
        w = _watch.watcher()
        key, poll = self._poller
        if key != (ex.generation, w) or poll is None:
            poller = select.poll()
            for p in ex.procs:
                poller.register(p.sentinel, select.POLLIN)
            if w is not None:
                poller.register(w.fd, select.POLLIN)
            poll = poller.poll
            self._poller = ((ex.generation, w), poll)
        return w is not None and not poll(0)
