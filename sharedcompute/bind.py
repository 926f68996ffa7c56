"""Bound calls and the repeated-call cache: what identifies a call the workers keep
(``_memo_key``), the cached call itself (``_Memo``), and ``BoundCall``, a call planned and
checked once whose later calls only ring the workers (``Pool.bind``).

A bound call's fast path (``LocalBackend.call_bound``) does no per-array work: one poll(0)
over the workers' sentinels and the tamper watch (_watch.py) says no worker died and no
block was touched by another process; ``_watch.releases`` unchanged says none was freed or
closed here. Anything else takes the checking path of a plain repeated call, which plans
again where needed (a restarted pool, an evicted cache entry), so it stays transparent.
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from . import _watch
from .errors import InputError
from .kernel import Kernel
from .plan import Plan, Whole, check_timeout
from .shared import SharedArray

SMALL_BYTES = 2048  # plain arrays up to this size are cached by their bytes (sent in a line)
_SCALARS = (int, float, complex, bool, np.number, np.bool_)
_REPLAN = object()  # _call_again: plan this call afresh


# -- the repeated-call cache -------------------------------------------------------------------
def _memo_key(op: str, kernel: Any, args: tuple, rows: Any, boundary: Any,
              depth: Any = None) -> tuple | None:
    """What identifies a repeatable call, as (key, values); None: not cacheable. The key:
    the kernel, the very same SharedArray objects (by id, checked with weak references; also
    inside sc.whole), the types of scalars and the dtype and shape of small plain arrays.
    The values: their exact bits. A cached call whose values changed sends the new ones with
    the doorbell (doorbell.VALUES) instead of being planned again."""
    if not isinstance(kernel, Kernel) or kernel.kind != op:
        return None  # maps and reductions only (a scan is two calls)
    # the kernel and its content: a kernel whose module was reloaded in place (IPython's
    # %autoreload 2 keeps the object) is another call (_run_call checked it just before)
    key: list = [op, kernel, kernel.content_token(), rows, _scalar_key(boundary), depth]
    vals: list = []
    for a in args:
        t = type(a)
        if t is SharedArray:
            key.append(id(a))
        elif isinstance(a, _SCALARS):
            key.append(t)
            vals.append(_scalar_key(a))
        elif t is Whole and type(a.array) is SharedArray:
            key.append((Whole, id(a.array)))
        elif t is np.ndarray and a.nbytes <= SMALL_BYTES and a.dtype.kind in "biufc":
            key.append((a.dtype.str, a.shape))
            vals.append(a.tobytes())  # a mutated array has other bytes: never stale
        else:
            return None
    try:
        hash(tuple(key))
    except TypeError:
        return None
    return tuple(key), tuple(vals)


def _values_of(args: tuple) -> tuple:
    """The values part of _memo_key for arguments of a known key (a bound call's)."""
    return tuple(_scalar_key(a) if isinstance(a, _SCALARS) else a.tobytes()
                 for a in args if type(a) is not SharedArray and type(a) is not Whole)


def _scalar_key(value: Any) -> Any:
    """A scalar as its type and exact bits: 0.0 == -0.0 would otherwise share a cached call.
    A nonzero, non-NaN float is its own key (equal floats have equal bits), which costs a
    third of ``float.hex``."""
    t = type(value)
    if t is float:
        return (t, value) if value and value == value else (t, value.hex())
    if t is int:
        return (t, value)
    if isinstance(value, np.generic):
        return (type(value), value.tobytes())
    if isinstance(value, float):
        return (type(value), value.hex())
    if isinstance(value, complex):
        return (type(value), value.real.hex(), value.imag.hex())
    return (type(value), value)


class _Memo:
    """A call whose tasks every worker keeps under ``memo_id``: valid for one generation of
    workers, and only while the very same array objects are passed."""

    def __init__(self, memo_id: int, generation: int, args: tuple, plan: Plan, tasks: list,
                 vals: tuple = ()):
        self.memo_id, self.generation = memo_id, generation
        self.n_chunks = len(plan.chunks)
        shared = [(i, a.array if type(a) is Whole else a) for i, a in enumerate(args)
                  if type(a) is SharedArray or type(a) is Whole]
        self.refs = [(i, weakref.ref(a)) for i, a in shared]
        self.value_at = [i for i, a in enumerate(args)
                         if type(a) is not SharedArray and type(a) is not Whole]
        self.vals = vals  # the values the workers hold (_memo_key)
        self.check = plan.kernel.check  # run again when the values change
        self.live = True  # False once dropped: a bound call holding it plans again
        self.checked_at = -1  # _watch.releases when its blocks were last checked intact
        self.watched = False  # every block watched by inotify: quiet() then vouches for them
        self.writes = sorted(plan.kernel.writes)  # indices: never hold the arrays themselves
        self.written_names = [b.name for b in plan.written_blocks if b is not None]
        self.tasks = tasks  # for error messages: the rows each worker covers (handles only)
        self.active = [i for i, t in enumerate(tasks) if t.chunk_range[1] > t.chunk_range[0]]
        self.reduces = plan.kernel.kind == "reduce"  # else a map: its workers return nothing

    def matches(self, args: tuple, generation: int) -> bool:
        if generation != self.generation:
            return False
        for i, r in self.refs:
            a = args[i]
            if r() is not (a.array if type(a) is Whole else a):
                return False
        return True

    def fresh(self) -> bool:
        """Its blocks were checked intact since the last release and inotify watches them
        all: with no tamper event queued (LocalBackend.quiet), they need no check."""
        return self.watched and self.checked_at == _watch.releases

    def checked(self, releases: int, blocks: list) -> None:
        """Record a check of its blocks; ``releases``: _watch.releases before it began (a
        drain during the check bumps it, so the next call checks again)."""
        self.checked_at = releases
        self.watched = all(not b.is_file and b.watched for b in blocks)

    def blocks(self, args: tuple) -> list:
        """The blocks of the call's shared arrays (``.block`` refuses a closed array)."""
        out = []
        for i, _ in self.refs:
            a = args[i]
            b = (a.array if type(a) is Whole else a).block
            if b is not None:
                out.append(b)
        return out


def check_blocks(blocks: list, drained: bool = False, memo: Any = None) -> None:
    """check_intact on every block with one read of the tamper watch (_watch.py) for all.
    With ``memo`` (a _Memo) and ``drained`` (quiet(): no event queued), nothing is checked
    when the memo is fresh(), the rule bound calls use too (LocalBackend.call_bound)."""
    if memo is not None:
        if drained and memo.fresh():
            return
        releases = _watch.releases
        check_blocks(blocks, drained)
        memo.checked(releases, blocks)
        return
    w = _watch.watcher()
    if w is not None and not drained:
        w.drain()
    for b in blocks:
        if b.is_file:
            b.check_intact()
        else:
            b.check_intact(True)


class BoundCall:
    """``pool.bind(kernel, *args, **options)``: call it (no arguments) to run the call
    again; see Pool.bind."""

    def __init__(self, pool: Any, kernel: Any, args: tuple, kwargs: dict, rows: Any = None,
                 boundary: Any = None, depth: Any = None, schedule: Any = None,
                 timeout: Any = None):
        if not isinstance(kernel, Kernel):
            raise InputError(f"pool.bind needs a sharedcompute kernel, not {kernel!r}; "
                             "decorate it with @sc.kernel (plain functions: pool.submit)")
        if kwargs:
            args = kernel.bind(args, kwargs)
        self.op = "reduce" if kernel.kind == "reduce" else "map"
        self.pool, self.kernel, self.args = pool, kernel, tuple(args)
        self.rows, self.boundary, self.depth, self.schedule = rows, boundary, depth, schedule
        self.timeout, self.boundscheck = check_timeout(timeout), pool.boundscheck
        found = _memo_key(self.op, kernel, self.args, rows, boundary, depth)
        self.key = None if found is None else found[0]
        self.plain = any(type(a) is np.ndarray for a in self.args)  # may change in place
        self.memo: Any = None  # the cached call, made by the first call()
        self.token: Any = None  # the kernel's content token it was made for
        self.blocks: list = []  # the blocks of its shared arrays (held while it runs)
        self.written: Any = None  # what the call returns (a map's written arrays)
        pool._refuse_in_task_thread()
        with pool._lock:
            pool._check_open()
            check = getattr(pool._backend, "check_bound", None)
            if check is not None:
                check(self)  # plans once, runs nothing: a wrong argument fails here

    def __call__(self) -> Any:
        """Run the call: what pool.map (the written array) or pool.reduce returns."""
        pool = self.pool
        pool._refuse_in_task_thread()
        with pool._lock:
            pool._check_open()
            backend = pool._backend
            call_bound = getattr(backend, "call_bound", None)
            if call_bound is not None:
                return call_bound(self)
            if self.op == "reduce":  # backends without a cache: a plain call each time
                return backend.reduce(self.kernel, self.args, self.rows, self.timeout, False,
                                      None, self.boundscheck, self.schedule)
            return backend.map(self.kernel, self.args, self.rows, self.boundary, self.timeout,
                               False, None, self.boundscheck, self.depth, self.schedule)

    def __repr__(self) -> str:
        return f"<bound {self.op} of kernel {self.kernel.name}, {len(self.args)} arguments>"
