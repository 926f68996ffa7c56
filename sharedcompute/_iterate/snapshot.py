"""Snapshots of rows being written: ``sc.snapshot(d, k)`` is an argument that gives the kernel
a read-only copy of row k (or of a slice of rows) of the shared array ``d`` as it was when the
call (or the program's stage) started, so the same call may write ``d``, row k included.

Floyd-Warshall reads row k while every worker updates its own rows of ``d`` (row k's owner
too); covariance mirrors finished rows. Without a snapshot such a read is refused (a worker
may not read rows another worker writes) and the ports copied row k in the parent, one
``pool.map`` per k. With it Floyd-Warshall is one call, the k loop inside the workers and
one barrier per step::

    pool.iterate(sc.program(sc.stage(relax, d, sc.snapshot(d, sc.STEP), sc.STEP)), steps=n)

Why one marker, no new keyword: a snapshot is an argument like ``sc.whole(x)``, so it works
wherever an argument does: ``pool.map`` (and ``bind``, which plans again per call: a
snapshot is never cached) and a program's stages, where ``sc.STEP`` as its index is the step
index. The index is one row (an int), a slice of rows, or ``sc.STEP``; the kernel gets
``d[index]``'s shape (a row: ``d.shape[1:]``).

``pool.map``: the parent copies the rows before any worker starts and sends the copy by
value with the task, as ``sc.whole(np.array(d[k]))`` would: one row is far cheaper to
pickle (a few KiB) than a shared block to create, map and release per call, and a block per
call would also make the workers drop their cached calls (see _iterate/plan.Scratch).

A step program: every snapshot has two slots in shared memory (a block per backend, kept
between calls as iterate's residual slots are), slot ``t % 2`` holding the rows for step
``t``, read in place by every worker (read-only views, no private copies). The rows for
stage s of step t are written into their slot by the workers at the end of the stage before
s (the program's last stage of step t - 1 when s is the first; the parent, before the call
starts, for the first stage of step 0), each worker copying the rows it wrote itself in
that stage, before the barrier that ends it. So a snapshot costs no barrier of its own:
Floyd-Warshall runs one barrier per k, not two. Why this is correct:

1. Final: a stage writes a row of an array only through the worker that owns the row in
   that stage's grid (written arguments are split, never whole, and no other array of the
   program may share memory with a snapshotted one: refused below). So when worker w has
   finished its share of the stage before s, the rows it owns there are final for s: nobody
   else writes them before s starts. Rows the stage before does not write were final at its
   start (the barrier before it); the first worker of that stage copies those.
2. Visible: the copies are made before the barrier ending that stage, so every worker sees
   them when stage s starts (the barrier is a full memory fence, as for the arrays).
3. Never overwritten while read: slot ``t % 2`` is read during stage s of step t and next
   written for step t + 2, during the stage before s in step t + 2 (or the last stage of step
   t + 1 when s is the first): after the barrier that ends stage s of step t. Step t + 1's
   copies go to the other slot, which may be written while step t's is read (a one-stage
   program fills step t + 1's slot during step t): hence two slots.
4. The same bits inline: the inline pool runs each stage over all rows in one task, which
   copies every row at the same point of the order.

Which array holds a role after ``swap=`` is followed (the copy is taken from the array
holding the snapshot's role when stage s starts). Refused, with how to fix it: an int or
slice outside the array, ``sc.STEP`` past its rows (``steps`` > rows), ``sc.STEP`` in
``pool.map``, a snapshot of anything but a shared array of this machine (a plain NumPy
array never changes during a call: pass it itself), of an array no stage of the program
takes, or of one that shares memory with another array of the program; a snapshot in an
inner iterate's stage (``sweeps=``) or in the stage after one; the Dask backend and direct
kernel calls (make_plan refuses it there as an array of another library: ``__array__``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..plan import ArgSpec, Whole
from ..shared import KeptBlock, SharedArray, view_from_handle
from .program import STEP, Program, ProgramPlan, first_alias, plan_program as _plan_steps

_ALIGN = 64  # bytes: each slot starts on its own cache line


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A read-only copy of rows of a shared array, taken when its call or stage starts (see
    :func:`snapshot`)."""

    array: Any
    index: Any  # an int, a slice, or sc.STEP

    def rows(self, step: int = 0) -> range:
        """The rows copied (at step ``step`` when the index is sc.STEP)."""
        n = self.array.shape[0]
        if self.index is STEP:
            return range(step, step + 1)
        if isinstance(self.index, slice):
            return range(*self.index.indices(n))
        r = int(self.index)
        r = r + n if r < 0 else r
        return range(r, r + 1)

    @property
    def shape(self) -> tuple:
        """The shape the kernel gets."""
        rest = tuple(self.array.shape[1:])
        return rest if not isinstance(self.index, slice) else (len(self.rows()),) + rest

    def __repr__(self) -> str:
        return f"sc.snapshot(array of shape {self.array.shape}, {self.index!r})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The rows now (a copy). Also what makes plan.make_plan refuse a snapshot where no
        backend took it first (the Dask backend, direct kernel calls) as a foreign array."""
        v = _copy(self)
        return v if dtype is None else v.astype(dtype)


def snapshot(array: SharedArray, index: int | slice | Any) -> Snapshot:
    """An argument that gives a kernel ``array[index]`` (rows of axis 0) as a read-only copy,
    taken when the call starts (``pool.map``) or, in a step program, when the stage starts,
    so the same call may write ``array``, those rows included. ``index``: one row (an int),
    a slice of rows, or ``sc.STEP`` (in a program: the row of the step index, Floyd-Warshall's
    row k).

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> @sc.kernel(writes=("d",))
    ... def relax(d, dk, k):
    ...     for i in range(d.shape[0]):
    ...         for j in range(d.shape[1]):
    ...             d[i, j] = min(d[i, j], d[i, k] + dk[j])
    >>> with sc.Pool(2, backend="inline") as pool:
    ...     d = pool.array(np.array([[0.0, 4.0, 9.0], [1.0, 0.0, 2.0], [9.0, 1.0, 0.0]]))
    ...     step = sc.stage(relax, d, sc.snapshot(d, sc.STEP), sc.STEP)
    ...     _ = pool.iterate(sc.program(step), steps=3)
    ...     d.numpy()
    array([[0., 4., 6.],
           [1., 0., 2.],
           [2., 1., 0.]])
    """
    if isinstance(array, np.ndarray):
        raise InputError("sc.snapshot takes a shared array (pool.array(x), pool.empty(...)); "
                         "got a plain NumPy array, which never changes during a call: pass it "
                         "(or its rows) itself")
    if not isinstance(array, SharedArray):
        raise InputError(f"sc.snapshot takes a shared array of this machine (pool.array(x), "
                         f"pool.empty(...)); got {type(array).__module__}."
                         f"{type(array).__qualname__} (the Dask backend has no snapshots: pass "
                         "the rows as a plain array, np.asarray(x[k]), or use a local pool)")
    if array.ndim < 1:
        raise InputError("sc.snapshot takes an array with rows; got a 0-d array")
    n = array.shape[0]
    if index is STEP:
        pass
    elif isinstance(index, slice):
        for end in (index.start, index.stop, index.step):
            if end is not None and (isinstance(end, bool) or not isinstance(end, (int, np.integer))):
                raise InputError(f"sc.snapshot: slice {index!r} must have integer bounds")
        if index.step == 0:
            raise InputError(f"sc.snapshot: slice {index!r} has step 0")
        for end in (index.start, index.stop):
            if end is not None and not -n <= end <= n:
                raise InputError(f"sc.snapshot: slice {index!r} reaches outside the array's "
                                 f"{n} rows; use bounds in [-{n}, {n}]")
    elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        if not -n <= index < n:
            raise InputError(f"sc.snapshot: row {index} is outside the array's {n} rows "
                             f"(valid: {-n} to {n - 1})")
        index = int(index)
    else:
        raise InputError(f"sc.snapshot(array, index): index must be a row (an int), a slice "
                         f"of rows, or sc.STEP; got {index!r}")
    return Snapshot(array, index)


# -- pool.map: a copy taken by the parent, sent by value -------------------------------------
def take(args: tuple) -> tuple:
    """``args`` with each snapshot replaced by its copy, passed whole (read-only)."""
    return tuple(Whole(_copy(a)) if type(a) is Snapshot else a for a in args)


def _copy(s: Snapshot) -> np.ndarray:
    if s.index is STEP:
        raise InputError("sc.snapshot(x, sc.STEP) in pool.map: sc.STEP is a step program's "
                         "step index; give the row (sc.snapshot(x, k)), or run the k loop as "
                         "pool.iterate(sc.program(sc.stage(...)), steps=N)")
    v = np.array(s.array.numpy()[s.index])
    v.flags.writeable = False
    return v


# -- step programs: the parent's plan ----------------------------------------------------------
@dataclass
class SnapSpec:
    """One snapshot of a program, as the workers use it."""

    stage: int  # the stage that reads it
    arg: int  # its argument index there
    name: int  # the array's name in the program (ProgramPlan.arrays)
    rows: Any  # sc.STEP, or the fixed rows (a range)
    squeeze: bool  # one row (an int or sc.STEP): the kernel gets the row itself
    pre: int  # the stage at whose end it is copied (the one before, cyclically)
    slot: Any = None  # (2, rows, ...) slots: a handle (workers) or an array (inline)


def plan(prog: Any, steps: int, **options: Any) -> ProgramPlan:
    """program.plan_program, with each snapshot argument planned as a placeholder of its
    shape (passed whole) and described in ``work.snaps``; refusals before any work."""
    found = [(k, j, a) for k, st in enumerate(getattr(prog, "stages", ()))
             for j, a in enumerate(st.args) if type(a) is Snapshot]
    if not found:
        return _plan_steps(prog, steps, **options)
    stages = list(prog.stages)
    last = len(stages) - 1
    for k, j, s in found:
        pre = k - 1 if k else last
        if stages[k].sweeps is not None or stages[pre].sweeps is not None:
            which = "is" if stages[k].sweeps is not None else "follows"
            raise InputError(f"stage {k + 1} ({stages[k].kernel.name}) takes {s!r} and "
                             f"{which} an inner iterate (sweeps=): a snapshot is copied at the "
                             "end of the stage before its own, a plain one; move it to a plain "
                             "stage that follows a plain stage")
        args = list(stages[k].args)
        args[j] = Whole(np.zeros(s.shape, s.array.dtype))
        stages[k] = dataclasses.replace(stages[k], args=tuple(args))
    pp = _plan_steps(Program(tuple(stages), prog.swap), steps, **options)
    names = {id(a): n for n, a in enumerate(pp.arrays)}
    specs = []
    for k, j, s in found:
        where = f"stage {k + 1} ({stages[k].kernel.name}): {s!r}"
        if id(s.array) not in names:
            raise InputError(f"{where} is of an array no stage of the program takes, so it "
                             "never changes during the call: pass the array itself (sc.whole(x)"
                             " or its rows) instead of a snapshot")
        if s.index is STEP and steps > s.array.shape[0]:
            raise InputError(f"{where} reads row k at step k, but steps={steps} is more than "
                             f"its {s.array.shape[0]} rows: pass steps <= {s.array.shape[0]}")
        pre = k - 1 if k else last
        if not pp.plans[pre].chunks:
            raise InputError(f"{where}: stage {pre + 1}, before it, has no rows to split")
        pp.plans[k].specs[j] = ArgSpec("value", None)  # the slot, put in by the workers
        rows = STEP if s.index is STEP else s.rows()
        specs.append(SnapSpec(k, j, names[id(s.array)], rows, not isinstance(s.index, slice),
                              pre))
    _refuse_aliases(pp.arrays, {sp.name for sp in specs})
    pp.work.snaps = specs
    return pp


def _refuse_aliases(arrays: list, snapped: set) -> None:
    found = first_alias(arrays, snapped)
    if found is not None:
        n, m = found
        raise InputError(
            f"a snapshot's array (shape {arrays[n].shape}) shares memory with another "
            f"array of the program (shape {arrays[m].shape}): its rows could change "
            "through that one. Pass the same array object everywhere, or copy the "
            "view into its own array")


def begin(pp: ProgramPlan, store: "Store") -> None:
    """Give each snapshot its two slots and copy the rows the first stage reads at step 0
    (the parent, once, before any worker starts)."""
    specs = getattr(pp.work, "snaps", None)
    if not specs or not pp.work.steps:
        return
    shapes = [(2, 1 if sp.squeeze else len(sp.rows)) + pp.arrays[sp.name].shape[1:]
              for sp in specs]
    slots = store.slots([(sh, pp.arrays[sp.name].dtype) for sh, sp in zip(shapes, specs)])
    for sp, (view, handle) in zip(specs, slots):
        sp.slot = view if store.in_process else handle
        if sp.stage == 0:
            src = np.asarray(pp.arrays[sp.name])
            view[0] = src[_rows_at(sp, 0)]


def _rows_at(sp: SnapSpec, t: int) -> Any:
    return slice(t, t + 1) if sp.rows is STEP else np.asarray(sp.rows)


class Store(KeptBlock):
    """Snapshot slots: one block of bytes per backend, kept between calls and grown when
    too small (shared.KeptBlock says why)."""

    def slots(self, wanted: list) -> list:
        """(view, handle) for each (shape, dtype) wanted, each on its own cache line."""
        offsets, size = [], 0
        for shape, dtype in wanted:
            offsets.append(size)
            size += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
        buf = np.asarray(self.grown(size, np.uint8, 4096))
        out = []
        for (shape, dtype), off in zip(wanted, offsets):
            dtype = np.dtype(dtype)
            view = np.ndarray(shape, dtype, buffer=buf, offset=off)
            handle = None
            if not self.in_process:
                name, nbytes, _, _, base, _ = self.array.handle()
                handle = (name, nbytes, tuple(shape), dtype.str, base + off, view.strides)
            out.append((view, handle))
        return out


class Copier:
    """A worker's snapshots of a program (StepWork ``w``): the kernel's slot views, and the
    copies at the end of each stage (see the module docstring for why they are safe)."""

    def __init__(self, w: Any, phys: list, rows: list):
        self.w, self.phys, self.rows = w, phys, rows
        self.specs = w.snaps
        self.slots = [sp.slot if isinstance(sp.slot, np.ndarray) else view_from_handle(sp.slot)
                      for sp in self.specs]
        self.ro = []
        for sp, slot in zip(self.specs, self.slots):
            pair = [slot[b][0] if sp.squeeze else slot[b] for b in (0, 1)]
            for v in pair:
                v.flags.writeable = False
            self.ro.append(pair)
        self.reads = [[i for i, sp in enumerate(self.specs) if sp.stage == k]
                      for k in range(len(w.stages))]
        self.copies = [[i for i, sp in enumerate(self.specs) if sp.pre == k]
                       for k in range(len(w.stages))]
        # the worker that copies rows a stage does not write: the one owning its chunk 0
        self.first = [o.chunk_range[0] == 0 < o.chunk_range[1] for o in w.stages]

    def put(self, k: int, t: int, args: list) -> None:
        """Stage k's snapshot arguments at step t (its slot views)."""
        for i in self.reads[k]:
            args[self.specs[i].arg] = self.ro[i][t % 2]

    def copy(self, k: int, t: int, bind: list) -> None:
        """At the end of stage k of step t (before its barrier): copy the rows this worker
        owns of every snapshot read by the next stage, into that stage's slot."""
        w = self.w
        for i in self.copies[k]:
            sp = self.specs[i]
            tt = t + 1 if sp.stage == 0 else t
            if tt >= w.steps:
                continue
            now = bind
            if sp.stage == 0 and w.swap:  # the step's swaps come before the next step
                now = list(bind)
                for a, b in w.swap:
                    now[a], now[b] = now[b], now[a]
            p = now[sp.name]
            order = w.stages[k]
            written = any(n is not None and bind[n] == p and order.specs[j].writable
                          for j, n in enumerate(w.names[k]))
            if written:
                lo, hi = self.rows[k]
            else:
                lo, hi = (0, 1 << 62) if self.first[k] else (0, 0)
            src, slot = self.phys[p], self.slots[i][tt % 2]
            if sp.rows is STEP:
                if lo <= tt < hi:
                    slot[0] = src[tt]
                continue
            r = np.asarray(sp.rows)
            mine = (r >= lo) & (r < hi)
            if mine.all():
                slot[...] = src[r]
            elif mine.any():
                slot[mine] = src[r[mine]]
