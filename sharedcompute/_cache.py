"""The repeated-call cache, in one place: what identifies a call the workers keep (its key),
the cached call itself (``Entry``), when its blocks may skip their check, eviction, and
invalidation per block. ``LocalBackend`` owns one ``CallCache``; a ``BoundCall`` (bind.py)
is a handle on one of its entries.

The key holds everything that decides a result, other than the contents of shared arrays:

- the kernel object (a redefined kernel is a new object), the op ("map", "reduce", or
  "partial": a fused kernel's map with ``partial=True``), rows, boundary, depth and
  chunk_rows (the grid: a reduction's combine tree);
- each SharedArray by ``SharedArray.identity``: its block (the name, or a file's path, device
  and inode), the block's size, offset, shape, strides, dtype and writability. An in-place
  reshape (``a.shape = ...``) or another view of the same memory is another call; a view
  made afresh for each call (``a[1:]``) is the same call;
- scalars by type, their exact bits in the values (NaN payloads and -0.0 included);
- small plain arrays by dtype, shape and strides, their bytes in the values.

The kernel's content is not in the key: an entry keeps what decides it (its code, the
globals it reads, its module's ``__spec__``: Kernel.content_watch) and is used only while
each is the very object it was (a kernel whose module was reloaded in place, as IPython's
%autoreload 2 does, keeps its object). A stale entry is discarded, and the call is checked
and planned again.

An iterate (``pool.iterate``) is kept too, under op ``"iterate"``: its key adds to a map's
its options (steps, residual, tol, check_every, block_sweeps, boundscheck) by their bits,
and holds its scalars (an iterate sends no values: another scalar is another call). A step
program (``sc.program``) is kept under ``program_key``: per stage its kernel, options and
arguments (a SharedArray by its identity and by which of the program's objects it is, the
order in which the program first names it: the same memory under two objects is two
names), ``sc.STEP``, its swaps, steps, tol and check_every. Their entries (``Entry.of_run``)
watch every kernel's content (the residual's, each stage's) and hold their residual
slots' block among their blocks (a grown scratch block is a released one); what a repeat
needs besides (the fixed edge rows, what it returns) is _iterate/plan.Again's. A program
with an ``sc.snapshot`` argument or a plain array is never kept (as a map's snapshot,
copied by the parent for each call, never is).

A call with a progress bar (``progress=``) is planned and sent every time, never cached: a
rung call reports no progress (each worker answers once, through its doorbell line), and a
bar is for calls long enough that planning (tens of microseconds) is nothing beside them.
A ``schedule="dynamic"`` call is cached under its own key (its grid differs): each worker
keeps its claim loop, and every ring sets the shares' bounds afresh before any worker
starts (ProcessExecutor.ring), so each ring claims every chunk once. With a bar the
workers make the very kernel calls they make without one (_evaluate.py), so the result is
the cached call's, bit for bit; the cache's oracle tests (tests/test_cache_state.py) use
``progress=`` as the cache-off path.

A call whose key matches but whose values changed sends the new values with the doorbell
(doorbell.pack_values) instead of being planned again. A released block (free, close, a
pool's iterate scratch) drops only the entries that hold it: the workers hear those ids and
the block's name, and unmap it.
"""
from __future__ import annotations

import contextlib
import itertools
import select
import struct
import weakref
from typing import Any, Iterator

import numpy as np

from . import segments
from ._iterate.program import STEP, Program
from .kernel import Kernel
from .plan import Plan, Whole, written_of
from .shared import SharedArray

MEMO_SIZE = 32  # cached calls per pool (each worker keeps what the parent names)
SMALL_BYTES = 2048  # plain arrays up to this size are cached by their bytes (sent in a line)
_SCALARS = (int, float, complex, bool, np.number, np.bool_)
REPLAN = object()  # LocalBackend._call_again: plan this call afresh
_pack_d = struct.Struct("<d").pack
_GONE = object()  # a global no longer defined (Entry.current)


# -- the key ---------------------------------------------------------------------------------
def call_key(op: str, kernel: Any, args: tuple, rows: Any, boundary: Any,
             depth: Any = None, chunk_rows: int | None = None,
             dynamic: bool = False, options: tuple = ()) -> tuple | None:
    """(key, values) of a repeatable call; None: not cacheable (see the module docstring).
    ``chunk_rows``: None or an int (Pool checked its type, so 5.0 never meets 5 here);
    ``dynamic``: the call's schedule is "dynamic" (local._dynamic: its grid and pieces);
    ``options``: an iterate's (op "iterate"), keyed by their bits with its values."""
    if not isinstance(kernel, Kernel) or kernel.kind != op and not (
            op == "partial" and kernel.fused or op == "iterate"):
        return None  # maps, reductions, partial=True maps, iterates (a scan is two calls)
    key: list = [op, kernel, rows, scalar_bits(boundary), depth,  # content: Entry.current
                 chunk_rows, dynamic]
    vals: list = []
    for a in args:
        t = type(a)
        if t is SharedArray:
            key.append(a.identity)
        elif isinstance(a, _SCALARS):
            key.append(t)
            vals.append(scalar_bits(a))
        elif t is Whole and type(a.array) is SharedArray:
            key.append((Whole, a.array.identity))
        elif t is np.ndarray and a.nbytes <= SMALL_BYTES and a.dtype.kind in "biufc":
            key.append((a.dtype, a.shape, a.strides))
            vals.append(_plain_value(a))
        else:
            return None
    if op == "iterate":  # it sends no values: its scalars and options are in the key
        key += [*vals, *map(scalar_bits, options)]
        vals = []
    return _hashable(key, tuple(vals))


def _hashable(key: list, vals: tuple) -> tuple | None:
    try:
        hash(tuple(key))
    except TypeError:
        return None
    return tuple(key), vals


def iterate_key(kernel: Any, args: tuple, boundary: Any, depth: Any, chunk_rows: Any,
                options: tuple) -> tuple | None:
    """(key, ()) of an iterate call: call_key's with op "iterate" and ``options`` (steps,
    tol, check_every, boundscheck, residual, block_sweeps), or a step program's."""
    if type(kernel) is Program:
        return program_key(kernel, options + (boundary, depth, chunk_rows))
    return call_key("iterate", kernel, args, None, boundary, depth, chunk_rows,
                    options=options)


def program_key(prog: Any, options: tuple) -> tuple | None:
    """(key, ()) of a step program call (see the module docstring); ``options``: every
    option of the iterate call (those a program refuses too: a refused call is never
    kept, so its repeat is refused again). None: not cacheable (a snapshot, a plain array, a
    swap naming an array no stage passes: the planned call says what is wrong)."""
    if type(prog) is not Program:
        return None
    seen: dict[int, int] = {}  # id of an array object -> its name (the order first passed)
    key: list = ["program", *map(scalar_bits, options)]
    for st in prog.stages:
        part = [st.kernel, st.sweeps, scalar_bits(st.boundary), st.depth, st.order, st.blocks]
        for a in st.args:
            if type(a) is SharedArray:
                part.append((a.identity, seen.setdefault(id(a), len(seen))))
            elif a is STEP:
                part.append(STEP)
            elif isinstance(a, _SCALARS):
                part.append(scalar_bits(a))
            else:
                return None
        key.append(tuple(part))
    for pair in prog.swap:
        if not all(type(a) is SharedArray and id(a) in seen for a in pair):
            return None
        key.append(tuple(seen[id(a)] for a in pair))
    return _hashable(key, ())


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
    until one of its blocks is released or it is evicted: a map's, or (``of_run``) an
    iterate's or a step program's, whose ``run`` is what its repeat needs besides."""

    run: Any = None  # an iterate's or a program's repeat (_iterate/plan.Again); a map: None

    def __init__(self, key: tuple, memo_id: int, generation: int, args: tuple, plan: Plan,
                 tasks: list, vals: tuple, watch: tuple):
        self._hold(key, memo_id, generation, args, plan.written_blocks, plan.read_blocks,
                   tasks, (watch,))
        self.n_chunks = len(plan.chunks)
        self.value_at = [i for i, a in enumerate(args)
                         if type(a) is not SharedArray and type(a) is not Whole]
        self.vals = vals  # the values the workers hold (call_key)
        self.check = plan.kernel.check  # run again when the values change
        self.writes = sorted(plan.kernel.writes)  # indices: never hold the arrays themselves
        self.result = written_of(self.writes)  # what a map returns, from a call's arguments
        self.active = [i for i, t in enumerate(tasks) if t.chunk_range[1] > t.chunk_range[0]]
        self.partial = key[0] == "partial"  # a fused map returning (written, partial)
        self.dynamic = key[6]  # the workers claim its pieces: each ring resets the shares
        # else a plain map, whose workers return nothing
        self.reduces = self.partial or plan.kernel.kind == "reduce"

    @classmethod
    def of_run(cls, key: tuple, memo_id: int, generation: int, arrays: tuple, written: list,
               read: list, tasks: list, watches: list, run: Any) -> "Entry":
        """An iterate's or a step program's entry: ``arrays`` its SharedArrays (an
        iterate's arguments; a program's, by name), ``written``/``read`` their blocks and
        the residual slots' (a grown scratch block drops it), every kernel's content_watch;
        every worker is rung (each meets the barriers), with no values."""
        entry = cls.__new__(cls)
        entry._hold(key, memo_id, generation, arrays, written, read, tasks, tuple(watches))
        entry.vals, entry.active, entry.run = (), list(range(len(tasks))), run
        return entry

    def _hold(self, key: tuple, memo_id: int, generation: int, args: tuple, written: list,
              read: list, tasks: list, watches: tuple) -> None:
        self.key, self.memo_id, self.generation = key, memo_id, generation
        self.watches = watches  # Kernel.content_watch()s when checked: see current()
        self.shared_at = [i for i, a in enumerate(args)
                          if type(a) is SharedArray or type(a) is Whole]
        self.names = {b.name for b in written + read if b is not None}
        self.live = True  # False once dropped: a bound call holding it plans again
        self.checked_at = -1  # segments.releases when its blocks were last checked intact
        self.watched = False  # every block watched by inotify: quiet() then vouches for them
        self.held: list = []  # weak references to the blocks last checked (checked_blocks):
        # a block's segment goes when its last array does, never held by a cache
        self.written_names = [b.name for b in written if b is not None]
        self.tasks = tasks  # for error messages: the rows each worker covers (handles only)

    def current(self) -> bool:
        """Each kernel's content is the one the workers hold: its ``__code__``, the globals
        it reads and its module's ``__spec__`` are the very objects they were when it was
        checked (the identities _identity.watch_list lists; the same rule as
        _identity.unchanged, here so that a repeated call need not ask the kernel)."""
        for func, code, reads in self.watches:
            if func.__code__ is not code:
                return False
            for namespace, name, value in reads:
                if namespace.get(name, _GONE) is not value:
                    return False
        return True

    def fresh(self) -> bool:
        """Its blocks were checked intact since the last release and inotify watches them
        all: with no tamper event queued (CallCache.quiet), they need no check."""
        return self.watched and self.checked_at == segments.releases

    def checked(self, releases: int, blocks: list) -> None:
        """Record a check of its blocks; ``releases``: segments.releases before it began (a
        drain during the check bumps it, so the next call checks again)."""
        self.checked_at = releases
        self.watched = all(not b.is_file and b.watched for b in blocks)
        # while fresh(), the blocks of any call of its key (a block is one object per name
        # here, and a release or a close makes it not fresh)
        self.held = list(map(weakref.ref, blocks))

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

    def checked_blocks(self, args: tuple, drained: bool) -> list:
        """The blocks of this call's arrays, checked intact; the ones kept from the last
        check, with none, when fresh() and ``drained`` (quiet(): no event queued), the
        rule bound calls use too."""
        if drained and self.fresh():
            held = [ref() for ref in self.held]
            if None not in held:
                return held
        blocks = self.blocks(args)
        releases = segments.releases
        check_blocks(blocks, drained)
        self.checked(releases, blocks)
        return blocks


def check_blocks(blocks: list, drained: bool = False) -> None:
    """check_intact on every block with one read of the tamper watch (segments.py) for all."""
    w = segments.watcher()
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
        self._poller: tuple = (None, None, None)  # (generation, tamper watch, poll over the
        # workers' sentinels and the watch's descriptor): made once per generation

    def lookup(self, key: tuple, generation: int) -> Entry | None:
        """The entry of ``key`` for these workers, if its kernel is current (a stale one is
        discarded: the caller checks and plans the call again)."""
        entry = self.entries.get(key)
        if entry is None or entry.generation != generation:
            return None
        if not entry.current():
            self.discard(key)
            return None
        self.entries[key] = self.entries.pop(key)  # most recently used: evicted last
        return entry

    def new_id(self) -> int:
        return next(self._ids)

    @contextlib.contextmanager
    def sending(self, key: Any) -> Iterator[int | None]:
        """The id under which the workers keep a call about to be sent (None: ``key`` is
        None, not cached); if sending it fails, they drop it (some may keep it)."""
        memo = self.new_id() if key is not None else None
        try:
            yield memo
        except BaseException:
            if memo is not None:
                self.drop.append(memo)
            raise

    def store(self, key: tuple, memo_id: int, generation: int, args: tuple, plan: Plan,
              tasks: list, vals: tuple, releases: int, watch: tuple) -> Entry:
        """Remember a call just run; ``releases``: segments.releases before it was planned
        (planning checked every block intact); ``watch``: its kernel's content_watch()
        when it was checked."""
        return self.keep(Entry(key, memo_id, generation, args, plan, tasks, vals, watch),
                         args, releases)

    def keep(self, entry: Entry, args: tuple, releases: int) -> Entry:
        """Remember an entry (store's, or Entry.of_run's with its ``args``: its arrays)."""
        key = entry.key
        self.discard(key)
        if len(self.entries) >= self.size:
            self.discard(next(iter(self.entries)))
        self.entries[key] = entry
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
        queued (then no block needs a stat, segments.py). False: take the checking path."""
        if self.forget:
            return False
        generation, w, poll = self._poller
        if generation != ex.generation or poll is None:
            sentinels = ex.sentinels
            if len(sentinels) != ex.n_workers:  # workers missing: nothing to poll yet
                return False
            w = segments.watcher()  # the process's one watch (a forked child's pool is closed)
            poller = select.poll()
            for fd in sentinels:  # a stopped or dead worker's sentinel reads as an event
                poller.register(fd, select.POLLIN)
            if w is not None:
                poller.register(w.fd, select.POLLIN)
            poll = poller.poll
            self._poller = (ex.generation, w, poll)
        return w is not None and not poll(0)
