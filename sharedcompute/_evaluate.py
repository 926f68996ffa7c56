"""Run one WorkOrder on array views: what a worker does with its chunks, and what the calling
process does for the inline backend and direct kernel calls (the same code, so the same
partitioning, halos and combine order). iterate's sweeps run from _iterate/sweep.py, which
adds its runner to RUNNERS."""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .errors import InputError
from .kernel import Kernel
from .partition import (halo_pieces, padded_rows, position_value, source_row, tree_nodes,
                        tree_reduce, valid_rows)
from .plan import ArgSpec, WorkOrder
from .shared import SharedArray, view_from_handle


class TaskStats(NamedTuple):
    """What a finished task reports: seconds compiling, computing and busy; chunks done."""

    compile_s: float
    compute_s: float
    busy_s: float
    chunks_done: int


class Stats:
    """Seconds a task spent compiling and computing; the rows it was running (for errors);
    the chunks it finished, reported to ``progress`` (a worker's throttled pipe message, or
    the inline bar) after each kernel call that finishes chunks, never by extra calls."""

    __slots__ = ("compile_s", "compute_s", "rows", "chunks_done", "progress")

    def __init__(self, progress: Callable[[int], None] | None = None):
        self.compile_s = self.compute_s = 0.0
        self.rows: tuple[int, int] = (0, 0)
        self.chunks_done = 0
        self.progress = progress

    def report(self, t0: float) -> TaskStats:
        return TaskStats(self.compile_s, self.compute_s, time.perf_counter() - t0,
                         self.chunks_done)

    def advance(self, chunks: int) -> None:
        self.chunks_done += chunks
        if self.progress:
            self.progress(chunks)


def resolve(specs: list[ArgSpec]) -> list[Any]:
    """Arrays behind the specs: attach handles (workers) or use arrays as given (in process).
    Every array a kernel does not declare in ``writes=`` is a read-only view, in workers and
    in process alike, so a write to it fails the same way everywhere."""
    out = []
    for spec in specs:
        v = spec.value
        if isinstance(v, (np.ndarray, SharedArray)):
            v = np.asarray(v)
            out.append(v if spec.writable else read_only(v))
        elif spec.kind == "value":
            out.append(v)
        else:
            out.append(view_from_handle(v, writable=spec.writable))
    return out


def read_only(view: np.ndarray) -> np.ndarray:
    ro = view.view()
    ro.flags.writeable = False
    return ro


def call(func: Any, args: tuple, stats: Stats) -> Any:
    """Call a numba dispatcher; a call that compiled a new signature counts as compile time
    (typing the arguments ourselves first would cost more than the kernel on small calls)."""
    overloads = getattr(func, "overloads", None)
    before = len(overloads) if overloads is not None else 0
    t0 = time.perf_counter()
    result = func(*args)
    elapsed = time.perf_counter() - t0
    if overloads is not None and len(overloads) > before:
        stats.compile_s += elapsed
    else:
        stats.compute_s += elapsed
    return result


def explain(exc: BaseException, task: WorkOrder, rows: tuple[int, int]) -> BaseException:
    """Numba's words for two user mistakes, in the engine's: a write to an argument missing
    from ``writes=``, and (bounds-checked builds) a read outside the rows and halo given."""
    kernel: Kernel = task.kernel
    text = str(exc)
    numba_words = (type(exc).__name__ == "TypingError" and "readonly array" in text
                   and "setitem" in text)
    numpy_words = (not kernel.jit and isinstance(exc, ValueError) and "read-only" in text)
    if numba_words or numpy_words:
        read_only_args = [kernel.params[i] for i, spec in enumerate(task.specs[:len(kernel.params)])
                          if not spec.writable and (spec.kind != "value"
                                                    or isinstance(spec.value, np.ndarray))]
        declared = tuple(kernel.params[i] for i in kernel.writes)
        advice = declared + tuple(read_only_args[:1])
        stencil = (f". A stencil (depth={task.depth}) gets no halo rows of an array it "
                   "writes (other workers write them meanwhile): to update an array from its "
                   "neighbours, write the new values into an output and swap the two "
                   "(pool.iterate)") if task.depth else ""
        return InputError(
            f"kernel {kernel.name} writes one of {read_only_args}, which are read-only because "
            f"writes={declared} does not name them; declare every array the kernel writes, "
            f"e.g. @sc.kernel(writes={advice}){stencil}")
    if isinstance(exc, IndexError) and task.boundscheck and "out of bounds" in text:
        d = task.depth
        return IndexError(
            f"{text}: kernel {kernel.name} indexed outside the rows it was given (rows "
            f"[{rows[0]}, {rows[1]}) of {task.n_rows}, with {d} halo rows on each side); "
            f"a stencil that reads neighbouring rows must declare how far, e.g. "
            f"@sc.kernel(depth={d + 1})")
    return exc


# -- the pieces of a task --------------------------------------------------------------------------
def kernel_fn(task: WorkOrder) -> Any:
    return task.kernel.compiled(task.boundscheck)[0]


def _chunk_args(views: list[Any], specs: list[ArgSpec], s: int, e: int,
                include_written: bool = True) -> list[Any]:
    out = []
    for v, spec in zip(views, specs):
        if spec.writable and not include_written:
            continue
        out.append(part_rows(v, spec, s, e) if spec.kind == "part" else v)
    return out


def part_rows(v: Any, spec: ArgSpec, s: int, e: int, depth: int = 0) -> Any:
    """Rows of a split argument for output rows [s, e): those rows, ``depth`` more on each
    side for a read stencil input (in place: the caller checked they exist), or for an
    argument with its own halo (kernel ``halo=``) its rows [s, e + before + after)."""
    if spec.halo:
        return v[s:e + spec.halo[0] + spec.halo[1]]
    return v[s - depth:e + depth] if depth and not spec.writable else v[s:e]


def map_pieces(task: WorkOrder, views: list[Any], lo: int, hi: int) -> Iterator[tuple]:
    """(start, stop, kernel arguments, reusable) for each piece of rows lo..hi; a piece
    is not reusable when it got a padded copy of edge rows (stencils at the array's edge).
    With a padded boundary the rows within depth of an edge are a piece of their own (as
    few as one row: the kernel docstring says so); under 'none'/'fixed' no piece holds a
    row the call does not write. Arguments with their own halo (``halo=``) are sliced in
    place, never padded."""
    kernel = task.kernel
    n, d, boundary = task.n_rows, task.depth, task.boundary
    vlo, vhi = valid_rows(n, d, boundary)
    lo, hi = max(lo, vlo), min(hi, vhi)
    for s, e, in_place in halo_pieces(lo, hi, n, d):
        args = []
        for v, spec in zip(views, task.specs):
            if spec.kind != "part":
                args.append(v)
            elif in_place or _sliced_in_place(spec, d):
                args.append(part_rows(v, spec, s, e, d))
            else:
                # read-only, as an in-place piece's view: an undeclared write is refused
                # (not dropped into the copy) and the signature is the same
                args.append(read_only(padded_rows(v, s, e, d, boundary)))
        if kernel.position:
            args.append(position_value(kernel.position, s, e, n, d, boundary))
        yield s, e, tuple(args), in_place or d == 0


def _sliced_in_place(spec: ArgSpec, depth: int) -> bool:
    """Whether a split argument is sliced in place even in a piece at the array's edge."""
    return spec.writable or bool(spec.halo) or depth == 0


class RowCalls:
    """The kernel calls of ``map_rows(task, views, lo, hi)``, sliced once, for a loop that
    repeats them on the same views (iterate's sweeps, a program's stages): an in-place
    piece keeps its arguments; a padded one (a stencil's edge rows) keeps its copy of the
    edge rows and refills it before every call, row by row as padded_rows fills a new one,
    so the kernel sees the same values and types. ``step_args``: argument indices that
    ``run(stats, step)`` sets to the step index first (a program's ``sc.STEP``)."""

    def __init__(self, task: WorkOrder, views: list[Any], lo: int, hi: int,
                 step_args: tuple = ()):
        self.func, self.kernel, self.step_args = kernel_fn(task), task.kernel, step_args
        n, d, boundary = task.n_rows, task.depth, task.boundary
        self.calls: list[tuple] = []  # (rows, arguments, refills: (buffer, [(row, source)]))
        for s, e, args, in_place in map_pieces(task, views, lo, hi):
            refills = []
            if not in_place:
                for j, (v, spec) in enumerate(zip(views, task.specs)):
                    if spec.kind == "part" and not _sliced_in_place(spec, d):
                        source = [source_row(r, n, boundary) for r in range(s - d, e + d)]
                        # the writable copy behind map_pieces' read-only view
                        refills.append((args[j].base, _row_runs(v, source)))
            self.calls.append(((s, e), list(args), refills))
        self.compiled = False  # the first run goes through call(): compile time counted

    def run(self, stats: Stats, step: int = 0) -> None:
        func, fused, first = self.func, self.kernel.fused, not self.compiled
        t0 = time.perf_counter()
        for rows, args, refills in self.calls:
            for buf, fill in refills:
                for k, stop, src in fill:
                    buf[k:stop] = src
            for j in self.step_args:
                args[j] = step
            stats.rows = rows
            got = call(func, tuple(args), stats) if first else func(*args)
            if got is not None and not fused:
                raise _returned(self.kernel)
        if first:
            self.compiled = True
        else:
            stats.compute_s += time.perf_counter() - t0


def _row_runs(src: Any, source: list[int]) -> list[tuple]:
    """padded_rows' filling of rows ``source`` (-1: the constant) as a few slice copies:
    (first, stop, rows of src) for each run of rows that follow each other. The constant's
    rows are left as padded_rows filled them: the kernel gets a read-only view, so they
    never change (refilling them cost a slice copy per edge call)."""
    runs: list[list] = []
    for k, i in enumerate(source):
        last = runs[-1] if runs else None
        if last and last[1] == k and (i < 0) == (last[2] < 0) and (i < 0 or i == last[3] + 1):
            last[1], last[3] = k + 1, i
        else:
            runs.append([k, k + 1, i, i])
    return [(a, b, src[i:j + 1]) for a, b, i, j in runs if i >= 0]


def map_rows(task: WorkOrder, views: list[Any], lo: int, hi: int, stats: Stats) -> None:
    func = kernel_fn(task)
    for s, e, args, _ in map_pieces(task, views, lo, hi):
        stats.rows = (s, e)
        if call(func, args, stats) is not None and not task.kernel.fused:
            raise _returned(task.kernel)


def _returned(kernel: Any) -> InputError:
    return InputError(
        f"kernel {kernel.name} returned a value, which map drops: a map kernel writes its "
        "outputs in place. To combine what each partition returns, declare "
        "@sc.kernel(combine=...) and call pool.reduce")


def _reduce_leaves(task: WorkOrder, views: list[Any]) -> dict[int, tuple]:
    """Each chunk's (rows, kernel arguments), sliced once."""
    n, leaves = task.n_rows, {}
    for c in range(*task.chunk_range):
        s, e = task.span(c, c + 1)
        args = _chunk_args(views, task.specs, s, e)
        if task.kernel.position:
            args.append(position_value(task.kernel.position, s, e, n, 0, task.boundary))
        leaves[c] = ((s, e), tuple(args))
    return leaves


# -- one function per op: (task, views, stats, barrier) -> result ---------------------------------
def _run_map(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> None:
    """One kernel call over all this task's rows (a stencil's edge rows, which get padded
    copies, are calls of their own), with or without a progress bar: a bar advances by the
    task's chunks once its call returns, so a halo is never read, nor recomputed, more often
    for progress (a bar that moves per chunk would cost one call per chunk)."""
    ca, cb = task.chunk_range
    if cb > ca:
        map_rows(task, views, *task.span(ca, cb), stats)
        stats.advance(cb - ca)


def piece_runner(task: WorkOrder, views: list[Any]) -> Callable[[Stats], None] | None:
    """A dynamic map's kernel call for its current piece (``task.chunk_range``, which the
    claim loop sets), for ``run_task(..., piece=)``: each split argument is sliced straight
    from ``views``, read afresh so a rung call's new values count. The general path
    (_run_map: map_pieces, part_rows, ...) cost about 20 us a piece in a worker coming back
    from a long kernel call, most of a piece's overhead. None for a stencil (depth > 0),
    whose pieces at the array's edges need padded rows: _run_map does those."""
    if task.op != "map" or task.depth:
        return None
    func, kernel, n = kernel_fn(task), task.kernel, task.n_rows
    parts = [(i, spec) for i, spec in enumerate(task.specs) if spec.kind == "part"]

    def run(stats: Stats) -> None:
        ca, cb = task.chunk_range
        s, e = task.span(ca, cb)
        args = list(views)
        for i, spec in parts:  # rows [s, e), and an own halo's (halo=) rows around them
            args[i] = part_rows(views[i], spec, s, e)
        if kernel.position:
            args.append(position_value(kernel.position, s, e, n, 0, task.boundary))
        stats.rows = (s, e)
        if e > s and call(func, tuple(args), stats) is not None and not kernel.fused:
            raise _returned(kernel)
        stats.advance(cb - ca)
    return run


def _run_reduce(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> dict:
    """{tree node: partial} for the maximal nodes of the fixed tree inside this range."""
    func, leaves = kernel_fn(task), _reduce_leaves(task, views)

    def leaf(c: int) -> Any:
        rows, args = leaves[c]
        stats.rows = rows
        value = call(func, args, stats)
        stats.advance(1)
        return value
    ca, cb = task.chunk_range
    return {node: tree_reduce(node[0], node[1], leaf, task.kernel.combine)
            for node in tree_nodes(0, task.n_chunks, ca, cb)}


def chunk_partial(task: WorkOrder, func: Any, views: list[Any], s: int, e: int,
                  stats: Stats) -> Any:
    """A fused kernel's partial for chunk [s, e) (map with ``partial=True``): it writes the
    chunk's rows and returns their partial; the pieces of a chunk (edge rows of a padded
    stencil are a piece of their own) are combined in row order. A chunk with no row to
    write (edges under 'none'/'fixed', an empty array) gets the kernel's value for zero
    rows, as a reduction's empty chunk does: every chunk is a leaf of the fixed tree."""
    value, got = None, False
    for ps, pe, args, _ in map_pieces(task, views, s, e):
        stats.rows = (ps, pe)
        p = call(func, args, stats)
        value, got = (task.kernel.combine(value, p) if got else p), True
    return value if got else call(func, empty_args(task, views, s), stats)


def empty_args(task: WorkOrder, views: list[Any], s: int) -> tuple:
    """Kernel arguments for zero output rows at row s: a read stencil input gets its
    2 * depth halo rows (zeros: nothing is computed from them)."""
    d, out = task.depth, []
    for v, spec in zip(views, task.specs):
        if spec.kind != "part":
            out.append(v)
        elif spec.writable or not d or spec.halo:
            out.append(part_rows(v, spec, s, s))
        else:
            out.append(np.zeros((2 * d,) + v.shape[1:], v.dtype))
    if task.kernel.position:
        out.append(position_value(task.kernel.position, s, s, task.n_rows, d, task.boundary))
    return tuple(out)


def _run_partial(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> dict:
    """A fused kernel's rows written and {tree node: partial}, one call per chunk (its
    leaf), combined along the fixed tree as a reduction's: the same for any worker count."""
    func = kernel_fn(task)

    def leaf(c: int) -> Any:
        value = chunk_partial(task, func, views, *task.span(c, c + 1), stats)
        stats.advance(1)
        return value
    ca, cb = task.chunk_range
    return {node: tree_reduce(node[0], node[1], leaf, task.kernel.combine)
            for node in tree_nodes(0, task.n_chunks, ca, cb)}


def _run_scan_totals(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> list:
    totals, chunks, out = task.kernel.compiled(task.boundscheck)[1], task.chunks, []
    for c in range(*task.chunk_range):
        s, e = chunks[c]
        stats.rows = (s, e)
        out.append(call(totals, tuple(_chunk_args(views, task.specs, s, e, False)), stats))
    return out


def _run_scan_apply(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> None:
    func, chunks, ca = kernel_fn(task), task.chunks, task.chunk_range[0]
    for c in range(*task.chunk_range):
        s, e = chunks[c]
        stats.rows = (s, e)
        call(func, tuple(_chunk_args(views, task.specs, s, e) + [task.offsets[c - ca]]), stats)
        stats.advance(1)


RUNNERS: dict[str, Callable[[WorkOrder, list, Stats, Any], Any]] = {
    "map": _run_map, "reduce": _run_reduce, "partial": _run_partial,
    "scan_totals": _run_scan_totals, "scan_apply": _run_scan_apply,
}  # "iterate" is _iterate/sweep.py's, which adds itself here


def run_task(task: WorkOrder, stats: Stats, barrier: Any = None, views: list | None = None,
             piece: Callable[[Stats], None] | None = None) -> Any:
    """Do one worker's share of a call. Returns map: None; reduce and partial (a fused
    kernel's map with partial=True): {tree node: partial};
    scan totals: [partial per chunk]; iterate (_iterate/sweep.py): (sweeps run, last
    residual checked or None). ``views``: the specs' arrays when already resolved (a
    worker's cached task); ``piece``: a dynamic map's piece_runner, run instead. Numba's
    errors for undeclared writes and bounds-checked reads are explained in the engine's
    words."""
    try:
        if piece is not None:
            return piece(stats)
        runner = RUNNERS[task.op]
        own = task.op == "iterate"  # maps its views itself: both swapped arrays writable
        return runner(task, resolve(task.specs) if views is None and not own else views,
                      stats, barrier)
    except Exception as exc:
        # a program's stages explain their errors for their own kernels (_iterate/stages.py)
        better = explain(exc, task, stats.rows) if task.op != "program" else exc
        if better is exc:
            raise
        detached(exc)
    try:  # raised outside the handler, and no frame keeps it: nothing pins the views
        raise better
    finally:
        better = None


def detached(exc: BaseException) -> BaseException:
    """``exc`` to hand on without pinning this call's arrays: numba keeps a failed
    compilation's exception in its dispatcher (``_FunctionCompiler._failed_cache``), and the
    traceback our frames add to it would keep their array views, and so the blocks, alive.
    Returns a copy that carries the traceback; the cached original keeps none."""
    if not type(exc).__module__.startswith("numba"):
        return exc
    try:
        twin = copy.copy(exc)
    except Exception:  # pragma: no cover - an exception type copy cannot rebuild
        twin = RuntimeError(str(exc))
    twin.__traceback__, exc.__traceback__ = exc.__traceback__, None
    return twin


def prepare(task: WorkOrder, views: list[Any]) -> Callable[[Stats], Any] | None:
    """A worker's cached map or reduce task with every kernel argument sliced once, so a
    repeated call costs the kernel calls only (the first call compiled them: the whole run
    counts as compute). None when a piece needs fresh padding (stencil edges): run_task.
    The run's ``patch([(i, value), ...])`` puts new values into argument i of every sliced
    call (a rung call's new scalars: far cheaper than slicing again)."""
    ca, cb = task.chunk_range
    dispatcher = kernel_fn(task)
    if task.op == "map":
        pieces = []
        if cb > ca:
            chunks = task.chunks
            for s, e, args, reusable in map_pieces(task, views, chunks[ca][0], chunks[cb - 1][1]):
                if not reusable:
                    return None
                pieces.append(((s, e), args))

        fused = task.kernel.fused

        def run_map(stats: Stats) -> None:
            t0 = time.perf_counter()
            for rows, args in pieces:
                stats.rows = rows
                if dispatcher(*args) is not None and not fused:
                    raise _returned(task.kernel)  # as a planned call (map_rows)
            stats.compute_s += time.perf_counter() - t0
            stats.chunks_done += cb - ca
        run_map.patch = _patcher(pieces, range(len(pieces)))  # type: ignore[attr-defined]
        return run_map
    if task.op == "partial":
        return _prepare_partial(task, views, dispatcher)
    if task.op == "reduce":
        leaves = _reduce_leaves(task, views)
        nodes = tree_nodes(0, len(task.chunks), ca, cb)
        combine = task.kernel.combine

        def run_reduce(stats: Stats) -> dict:
            def leaf(c: int) -> Any:
                rows, args = leaves[c]
                stats.rows = rows
                return dispatcher(*args)
            t0 = time.perf_counter()
            out = {node: tree_reduce(node[0], node[1], leaf, combine) for node in nodes}
            stats.compute_s += time.perf_counter() - t0
            stats.chunks_done += cb - ca
            return out
        run_reduce.patch = _patcher(leaves, list(leaves))  # type: ignore[attr-defined]
        return run_reduce
    return None


def _prepare_partial(task: WorkOrder, views: list[Any], dispatcher: Any) -> Any:
    """prepare() of a fused map with partial=True: each chunk's pieces sliced once (as
    chunk_partial calls them); None where a chunk needs padded edge rows or has no row to
    write (run_task builds those afresh)."""
    ca, cb = task.chunk_range
    chunks, combine = task.chunks, task.kernel.combine
    leaves: dict = {}
    for c in range(ca, cb):
        got = list(map_pieces(task, views, *chunks[c]))
        if not got or not all(reusable for *_, reusable in got):
            return None
        leaves[c] = (chunks[c], tuple(args for _, _, args, _ in got))
    nodes = tree_nodes(0, len(chunks), ca, cb)

    def run_partial(stats: Stats) -> dict:
        def leaf(c: int) -> Any:
            rows, pieces = leaves[c]
            stats.rows = rows
            value = dispatcher(*pieces[0])
            for args in pieces[1:]:
                value = combine(value, dispatcher(*args))
            return value
        t0 = time.perf_counter()
        out = {node: tree_reduce(node[0], node[1], leaf, combine) for node in nodes}
        stats.compute_s += time.perf_counter() - t0
        stats.chunks_done += cb - ca
        return out

    def patch(changes: list) -> None:  # new values into every piece of every chunk
        for c, (rows, pieces) in leaves.items():
            fresh = []
            for args in pieces:
                args = list(args)
                for i, value in changes:
                    args[i] = value
                fresh.append(tuple(args))
            leaves[c] = (rows, tuple(fresh))
    run_partial.patch = patch  # type: ignore[attr-defined]
    return run_partial


def _patcher(store: Any, keys: Any) -> Callable[[list], None]:
    """patch() of a prepared run: ``store[k]`` is (rows, arguments) for each k in keys."""
    def patch(changes: list) -> None:
        for k in keys:
            rows, args = store[k]
            args = list(args)
            for i, value in changes:
                args[i] = value
            store[k] = (rows, tuple(args))
    return patch
