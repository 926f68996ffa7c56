"""Step programs: several kernel calls per time step, for N steps, inside the workers.

A time step of a simulation is more than one kernel on one pair of arrays: FDTD-2D updates
ey and ex from hz, then hz from ex and ey; cavity flow computes a source, runs an inner
Poisson iteration, then updates the velocities. ``pool.iterate(sc.program(...), steps=N)``
runs such a step N times with the loop inside the workers: each worker runs its rows of
stage 1, waits at the barrier, its rows of stage 2, and so on, with no round trip through
the parent per stage (a Python loop of ``pool.map`` calls pays one per call).

Why this shape: a program is data (``sc.program`` of ``sc.stage`` calls), passed where
``pool.iterate`` takes a kernel, so Pool keeps its methods and iterate stays the one way to
loop inside the workers. A stage is written exactly as the ``pool.map`` call it replaces
(``sc.stage(kernel, *args)``), so its partitioning, halos, boundaries, ``position=`` and
``halo=`` are planned by the same ``plan.make_plan`` as that map, once per call, and run
by the same ``_evaluate.map_rows``: the result is bitwise that of the Python loop.
``sc.stage(..., sweeps=k)`` is a nested ``pool.iterate`` (k sweeps of a kernel on its
``(out, u)`` pair, swapped after each, plain sweeps: a Poisson solve inside each step).
``sc.stage(..., order="wavefront")`` sweeps one array in place, all workers pipelined by
column block, bitwise the serial sweep (Gauss-Seidel/SOR: wavefront.py).
``sc.STEP`` as an argument is replaced by the step index (a Python int) at every step.
``swap=[(a, b)]`` exchanges two arrays' roles after every step, as ``a, b = b, a`` does
in the Python loop; an inner iterate's pair is exchanged after each of its sweeps, as
``pool.iterate`` leaves the newest sweep in the array it returns. Arrays are named by the
objects passed, so the call returns their ``Roles``: ``roles[a]``, the array now
holding a's role.

Stopping: when the last stage's kernel is a fused stencil (``combine=``, e.g.
``jacobi2d_residual``), its combined partial is the program's residual, checked after
every ``check_every``-th step as ``pool.iterate`` checks a fused kernel's (the same chunk
tree, so bitwise the same for any number of workers); a step whose residual is <= ``tol``
is the last (its swaps done). ``info=True`` returns ``IterateResult(roles, steps run,
residual, 1)``. Not (yet) in a program: ``residual=`` kernels, temporal blocking (plain
sweeps: the same bits), scans and reductions as stages, the Dask backend.
The worker's loop is stages.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..kernel import Kernel
from ..plan import WorkOrder, Plan, check_kind, make_plan, read_only_error
from ..shared import SharedArray
from ..iterate_result import IterateResult
from .plan import Again, check_iterate, check_tol, fixed_edge_rows, refuse_swapped_aliases
from . import wavefront


class _Step:
    """The type of ``sc.STEP``: one object, which pickles as itself."""

    def __repr__(self) -> str:
        return "sc.STEP"

    def __reduce__(self) -> str:
        return "STEP"


STEP = _Step()  # a stage argument filled with the step index (0, 1, ...) at every step


@dataclass(frozen=True)
class Stage:
    """One kernel call of a step program (see :func:`stage`)."""

    kernel: Kernel
    args: tuple
    sweeps: int | None = None
    boundary: Any = None
    depth: int | None = None
    order: str = "rows"  # or "wavefront": an in-place sweep, pipelined (wavefront.py)
    blocks: int | None = None  # wavefront: column blocks per sweep (None: chosen)


@dataclass(frozen=True)
class Program:
    """Stages run in order at every step, arrays swapped after it (see :func:`program`)."""

    stages: tuple[Stage, ...]
    swap: tuple[tuple[Any, Any], ...] = ()


def stage(kernel: Kernel, *args: Any, sweeps: int | None = None, boundary: Any = None,
          depth: int | None = None, order: Literal["rows", "wavefront"] = "rows",
          blocks: int | None = None, **kwargs: Any) -> Stage:
    """One kernel call of a step program, written as the ``pool.map`` call it replaces.

    ``sc.STEP`` as an argument receives the step index. ``sweeps=k``: a nested iterate,
    k sweeps of ``kernel(out, u, *params)`` with out and u swapped after each, as
    ``pool.iterate(kernel, out, u, *params, steps=k)`` (plain sweeps, no residual).
    ``order="wavefront"``: the kernel is a serial in-place sweep of one 2-D array (Gauss-
    Seidel/SOR), run by all workers at once in ``blocks`` column blocks, each worker
    following the one above it: bitwise the kernel called on the whole array (see
    _iterate/wavefront.py for the kernels this holds for), e.g.
    ``sc.stage(sor, u, 1.5, order="wavefront")``.

    Examples
    --------
    >>> import sharedcompute as sc
    >>> from sharedcompute.kernels.stencils import heat1d
    >>> s = sc.stage(heat1d, "out", "u", 0.25, sweeps=3)
    >>> s.sweeps
    3

    A wavefront: the kernel is the serial sweep (called on the whole array, the reference)

    >>> import numpy as np
    >>> @sc.kernel(writes=("u",), depth=1)
    ... def gauss_seidel(u):
    ...     for i in range(1, u.shape[0] - 1):
    ...         for j in range(1, u.shape[1] - 1):
    ...             u[i, j] = 0.25 * (u[i - 1, j] + u[i, j - 1] + u[i, j + 1] + u[i + 1, j])
    >>> with sc.Pool(2, backend="inline") as pool:
    ...     u = pool.array(np.pad(np.zeros((3, 3)), 1, constant_values=1.0))
    ...     now = pool.iterate(sc.program(sc.stage(gauss_seidel, u, order="wavefront")), steps=1)
    ...     float(u[1, 1]), float(u[1, 2])  # the new u[1, 1] is read by u[1, 2]
    (0.5, 0.375)
    """
    if not isinstance(kernel, Kernel):
        raise InputError(f"sc.stage takes a kernel first (decorate it with @sc.kernel); "
                         f"got {kernel!r}")
    if kwargs:
        args = kernel.ordered_args(args, kwargs)
    if sweeps is not None and (isinstance(sweeps, bool) or not isinstance(sweeps, (int, np.integer))
                               or sweeps < 0):
        raise InputError(f"sweeps={sweeps!r} must be a non-negative integer (the sweeps of "
                         "this stage's inner iterate per step), or None for one map call")
    wavefront.check_order(order, blocks, sweeps)
    return Stage(kernel, tuple(args), None if sweeps is None else int(sweeps), boundary, depth,
                 order, None if blocks is None else int(blocks))


def program(*stages: Stage, swap: Any = ()) -> Program:
    """A step program for ``pool.iterate(program, steps=N)``: the stages run in order at
    every step, each worker on its own rows, a barrier between stages; then each pair in
    ``swap`` exchanges roles (``a, b = b, a`` in the Python loop it replaces).

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> from sharedcompute.kernels.elementwise import axpy
    >>> with sc.Pool(2, backend="inline") as pool:
    ...     y = pool.zeros(4); x = pool.array(np.arange(4.0))
    ...     now = pool.iterate(sc.program(sc.stage(axpy, y, x, 0.5)), steps=4)
    ...     now[y].numpy()  # y's role, in y itself: nothing swapped
    array([0., 2., 4., 6.])
    """
    for s in stages:
        if not isinstance(s, Stage):
            raise InputError(f"sc.program takes stages, e.g. sc.stage(kernel, *args); got {s!r}")
    if not stages:
        raise InputError("sc.program needs at least one stage")
    pairs = []
    for pair in swap:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"swap= takes pairs of arrays, e.g. swap=[(u_new, u)]; got {pair!r}")
        pairs.append(tuple(pair))
    return Program(tuple(stages), tuple(pairs))


@dataclass
class StepWork:
    """What a program's task carries to a worker (its stages cut to that worker's chunks)."""

    stages: list[WorkOrder]  # each stage's "map" order for this worker's chunk range
    names: list[list[Any]]  # per stage, per argument: the array's name (int) or None
    step_args: list[tuple]  # per stage: the arguments filled with the step index
    sweeps: list[int | None]  # per stage: None (one map) or an inner iterate's sweeps
    pairs: list[Any]  # per stage: an inner iterate's (out, u) argument indices, or None
    fixed: list[list]  # per stage: an inner iterate's fixed edge rows (boundary 'none')
    handles: list[Any]  # per name: its array (a handle for workers; the array inline)
    writable: list[bool]  # per name: written by some stage, or swapped with such an array
    swap: list[tuple[int, int]]  # names exchanged after every step
    steps: int
    labels: list[str] = field(default_factory=list)  # per stage, for errors
    check_every: int = 0  # 0: no residual; else the last stage's partial every k steps
    tol: float = 0.0
    slots: Any = None  # two rows of per-chunk partials: a handle (workers) or an array
    ranges: tuple = ()  # every worker's chunk range of the last stage (the tree's nodes)
    snaps: Any = None  # sc.snapshot arguments: snapshot.SnapSpec list (snapshot.py)
    waves: list = field(default_factory=list)  # per stage: a wavefront.Wave, or None
    worker: int = 0  # this task's index (a wavefront's place in the pipeline)
    workers: int = 1  # the tasks of the call (a wavefront splits its rows among them)
    flags: int | None = None  # wavefront counters: slots[0][flags:], after any partials


@dataclass
class ProgramPlan:
    """A planned program call: each stage's Plan and what every task shares."""

    plans: list[Plan]
    arrays: list[Any]  # the caller's arrays, by name
    work: StepWork
    written_blocks: list[Any]
    read_blocks: list[Any]

    @property
    def what(self) -> str:
        return "program(" + ", ".join(p.kernel.name for p in self.plans) + ")"

    def bindings(self, done: int) -> list[int]:
        """Which array holds each name after ``done`` steps (the workers' moves)."""
        w, bind = self.work, list(range(len(self.arrays)))
        for _ in range(done):
            for names, k, pair in zip(w.names, w.sweeps, w.pairs):
                if k and k % 2:
                    a, b = names[pair[0]], names[pair[1]]
                    bind[a], bind[b] = bind[b], bind[a]
            for a, b in w.swap:
                bind[a], bind[b] = bind[b], bind[a]
        return bind

    def result(self, done: int, value: float | None, info: bool) -> Any:
        """The Roles after ``done`` steps (with ``info``: in an IterateResult)."""
        roles = Roles(self.arrays, [self.arrays[p] for p in self.bindings(done)])
        return IterateResult(roles, done, value, 1) if info else roles

    def tasks(self, ranges: list[list[tuple[int, int]]]) -> list[WorkOrder]:
        """One task per worker; ``ranges``: per stage, each worker's chunk range."""
        first = self.plans[0]
        out = []
        for i in range(len(ranges[0])):
            orders = [p.task("map", r[i]) for p, r in zip(self.plans, ranges)]
            work = StepWork(**{**self.work.__dict__, "stages": orders, "worker": i,
                               "workers": len(ranges[0])})
            out.append(WorkOrder("program", first.kernel, [], first.n_rows,
                                 first.rows_per_chunk, first.boundary, ranges[0][i],
                                 sweeps=work))
        return out

    @property
    def total(self) -> int:
        """Chunks run over all steps, for a progress bar."""
        per_step = sum(len(p.chunks) * (1 if k is None else k)
                       for p, k in zip(self.plans, self.work.sweeps))
        return per_step * self.work.steps


class Roles:
    """What ``pool.iterate(program, steps=N)`` returns: ``roles[a]`` is the array now holding
    the role of array ``a`` of the program (``a`` itself unless a swap moved it), as
    ``a, b = b, a`` leaves the names of the Python loop. Keyed by the array objects
    themselves (SharedArrays compare elementwise, so they are no dict keys)."""

    def __init__(self, arrays: list, holders: list):
        self._by_id = {id(a): (a, h) for a, h in zip(arrays, holders)}

    def __getitem__(self, array: Any) -> Any:
        try:
            return self._by_id[id(array)][1]
        except KeyError:
            raise KeyError("that array is not one of the program's") from None

    def __len__(self) -> int:
        return len(self._by_id)

    def items(self) -> list[tuple[Any, Any]]:
        """(array, its holder now) for every array of the program, in order of use."""
        return list(self._by_id.values())

    def __repr__(self) -> str:
        moved = sum(a is not h for a, h in self._by_id.values())
        return f"<program roles: {len(self)} arrays, {moved} moved>"


def check_call(steps: Any, residual: Any, boundary: Any, depth: Any,
               block_sweeps: Any, chunk_rows: Any = None) -> int:
    """The iterate options a program takes; the others refused, saying where they go."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"steps={steps!r} must be a non-negative integer")
    if residual is not None:
        raise InputError("residual= is not supported with sc.program: a program's residual "
                         "is its last stage's partial; declare combine= on the last stage's "
                         "kernel (a fused stencil, as jacobi2d_residual) and pass tol=")
    if boundary is not None or depth is not None:
        raise InputError("boundary= and depth= belong to each stage of a program: "
                         "sc.stage(kernel, *args, boundary=..., depth=...)")
    if block_sweeps not in (None, 1):
        raise InputError(f"block_sweeps={block_sweeps!r}: a step program runs plain sweeps "
                         "(no temporal blocking yet); drop block_sweeps=")
    if chunk_rows is not None:  # not silently ignored
        raise InputError("chunk_rows= does not apply to a step program: its stages "
                         "run on the default chunk grid (leave it out)")
    return int(steps)


def plan_program(prog: Any, steps: int, *, in_process: bool, boundscheck: bool = False,
                 tol: Any = None, check_every: int = 10) -> ProgramPlan:
    """Plan every stage as the pool.map (or pool.iterate) call it stands for; name the
    arrays; check the swaps. Raises InputError before any work."""
    if not isinstance(prog, Program):
        raise InputError(f"expected sc.program(...), got {prog!r}")
    last = prog.stages[-1]
    fused = last.sweeps is None and last.kernel.fused
    if tol is not None and not fused:
        raise InputError(f"tol={tol!r} with a program needs a residual: the last stage's "
                         f"kernel ({last.kernel.name}) must return its partial (declare "
                         "combine= on it, as jacobi2d_residual; not an inner iterate); or "
                         "drop tol=")
    tol = check_tol(last.kernel, None, tol) if fused else 0.0
    if fused and (isinstance(check_every, bool) or int(check_every) != check_every
                  or check_every < 1):
        raise InputError(f"check_every={check_every!r} must be a positive integer")
    arrays: list[Any] = []
    index: dict[int, int] = {}
    plans, names, step_args, pairs, fixed, labels, waves = [], [], [], [], [], [], []
    written: set[int] = set()
    for k, st in enumerate(prog.stages):
        if st.sweeps is None and st.kernel.kind != "map":
            raise InputError(f"stage {k + 1}: {st.kernel.name} is a {st.kernel.kind}; a "
                             "program's stages are map and stencil kernels (call pool.reduce "
                             "or pool.map for it between programs)")
        args = list(st.args)
        steps_at = tuple(j for j, a in enumerate(args) if a is STEP)
        for j in steps_at:
            args[j] = 0  # planned as the int each step passes
        plan = make_plan(st.kernel, args, rows=None, boundary=st.boundary,
                         in_process=in_process, boundscheck=boundscheck, depth=st.depth)
        pair, rows = None, []
        waves.append(wavefront.plan_wave(plan, st.blocks, f"stage {k + 1} ({st.kernel.name})")
                     if st.order == "wavefront" else None)
        if st.sweeps is not None:
            check_kind(st.kernel, "iterate")
            pair = check_iterate(plan, st.sweeps, None, 1)
            refuse_swapped_aliases(plan, *pair)
            rows = fixed_edge_rows(plan)
        stage_names = []
        for j, spec in enumerate(plan.specs):
            a = plan.arrays.get(j)
            if isinstance(a, SharedArray) and spec.kind != "value":
                n = index.setdefault(id(a), len(arrays))
                if n == len(arrays):
                    arrays.append(a)
                stage_names.append(n)
                if spec.writable or (pair is not None and j in pair):
                    written.add(n)
            else:
                stage_names.append(None)
        plans.append(plan)
        names.append(stage_names)
        step_args.append(steps_at)
        pairs.append(pair)
        fixed.append(rows)
        labels.append(f"stage {k + 1} ({st.kernel.name})")
    swaps = _swaps(prog, arrays, index)
    moving = {n for p in swaps for n in p}
    moving |= {ns[p[i]] for ns, p in zip(names, pairs) if p is not None for i in (0, 1)}
    _refuse_moving_aliases(arrays, moving)
    changed = True
    while changed:  # an array swapped with a written one is written too, in its turn
        changed = False
        for a, b in swaps:
            if (a in written) != (b in written):
                written |= {a, b}
                changed = True
    for n in sorted(written):
        a = arrays[n]
        if a.readonly:
            raise read_only_error(prog.stages[0].kernel, _label(prog, a), a)
    handles = [a if in_process else a.handle() for a in arrays]
    work = StepWork([], names, step_args, [st.sweeps for st in prog.stages], pairs, fixed,
                    handles, [n in written for n in range(len(arrays))], swaps, steps, labels,
                    int(check_every) if fused else 0, tol, waves=waves)
    wb = [arrays[n].block for n in sorted(written)]
    rb = [a.block for n, a in enumerate(arrays) if n not in written]
    return ProgramPlan(plans, arrays, work, wb, rb)


def _swaps(prog: Program, arrays: list, index: dict) -> list[tuple[int, int]]:
    out = []
    for a, b in prog.swap:
        for x in (a, b):
            if id(x) not in index:
                raise InputError(f"swap=: {_short(x)} is not a shared array any stage of the "
                                 "program takes; swap arrays the stages read or write")
        if a is b:
            raise InputError(f"swap=: an array swapped with itself ({_short(a)})")
        if a.shape != b.shape or a.dtype != b.dtype:
            raise InputError(f"swap= exchanges arrays of the same shape and dtype; got "
                             f"{a.shape} {a.dtype} and {b.shape} {b.dtype}")
        out.append((index[id(a)], index[id(b)]))
    return out


def first_alias(arrays: list, among: set) -> tuple[int, int] | None:
    """(n, m): an array n of ``among`` that shares memory with another array m, if any."""
    views = [np.asarray(a) for a in arrays]
    for n in sorted(among):
        for m, v in enumerate(views):
            if m != n and np.may_share_memory(views[n], v):
                return n, m
    return None


def _refuse_moving_aliases(arrays: list, moving: set) -> None:
    """An array whose role moves (swap=, an inner iterate's pair) may share memory with no
    other array of the program: a view of it would keep reading the old memory."""
    found = first_alias(arrays, moving)
    if found is not None:
        n, m = found
        raise InputError(
            f"a step program exchanges {_short(arrays[n])} with another array, and "
            f"{_short(arrays[m])} shares memory with it (a view of one block): after "
            "a swap the view would still read the old memory. Pass the same array "
            "object everywhere, or copy the view into its own array")


def _label(prog: Program, a: Any) -> str:
    return f"{_short(a)} (swapped with an array a stage writes, so written in turn)"


def _short(a: Any) -> str:
    shape = getattr(a, "shape", None)
    return f"array of shape {shape}" if shape is not None else repr(a)


def run(ex: Any, pp: ProgramPlan, scratch: Any, timeout: Any, progress: Any,
        memo: int | None = None, drop: list = ()) -> tuple[tuple[int, Any], list]:
    """Run a planned program on executor ``ex`` (a process pool or inline): one task per
    worker holding every stage's chunk range; the caller holds the write claims.
    ``scratch``: the backend's residual slots (_iterate/plan.Scratch). Returns ((steps
    run, last residual or None), the tasks sent); ``memo``: the id under which the
    workers keep their tasks, ``drop``: ids they forget first."""
    if not pp.work.steps:
        return (0, None), []
    ranges = [ex.sweep_ranges(len(p.chunks)) for p in pp.plans]
    width = len(pp.plans[-1].chunks) if pp.work.check_every else 0
    row = slot_width(pp, len(ranges[0]))
    if row:  # one scratch block: row 0 holds a residual's slots, then the flags
        pp.work.slots = scratch.slots(row)
        pp.work.flags = width if row > width else None
    if pp.work.check_every:
        pp.work.ranges = tuple(ranges[-1])
    tasks = pp.tasks(ranges)
    return ex.run(tasks, what=pp.what, timeout=timeout, progress=progress, total=pp.total,
                  memo=memo, drop=drop)[0], tasks


def slot_width(pp: ProgramPlan, n_tasks: int) -> int:
    """The scratch row a call of ``n_tasks`` tasks uses: the last stage's per-chunk
    partials (with tol), then the wavefront stages' counters (0: none)."""
    width = len(pp.plans[-1].chunks) if pp.work.check_every else 0
    return width + (wavefront.flag_words(n_tasks) if any(pp.work.waves) else 0)


class Repeat(Again):
    """A kept program (as plan.Repeat for an iterate): its arrays are found in this call's
    program (built anew for every call) where the planned one first named each; what it
    returns is their Roles."""

    def __init__(self, pp: ProgramPlan, n_tasks: int):
        self.what, self.work, self.width = pp.what, pp.work, slot_width(pp, n_tasks)
        self.firsts = []  # per name: (stage, argument) where the program first passes it
        seen: set = set()
        for k, names in enumerate(pp.work.names):
            for j, n in enumerate(names):
                if n is not None and n not in seen:
                    seen.add(n)
                    self.firsts.append((k, j))

    def arrays(self, prog: Program, args: tuple) -> tuple:
        """The call's shared arrays, by name."""
        return tuple(prog.stages[k].args[j] for k, j in self.firsts)

    def result(self, arrays: tuple, done: int, value: Any, info: bool) -> Any:
        """As ProgramPlan.result, with this call's own array objects."""
        return ProgramPlan([], list(arrays), self.work, [], []).result(done, value, info)
