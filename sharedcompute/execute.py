"""Validate a call, plan it over the fixed chunk grid, run tasks, combine their results.

``make_plan`` turns (kernel, arguments) into argument specs and a chunk grid; ``run_task``
is what a worker (or the calling process, for the inline backend and direct kernel calls)
does with its range of chunks; ``map_call``/``reduce_call``/``scan_call``/``iterate_call``
split the chunks over an executor's workers and combine what comes back.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from .errors import InputError
from .kernel import Kernel
from .partition import (check_boundary, chunk_grid, combine_all, chunk_rows, halo_pieces, padded_rows,
                        split_even, tree_finish, tree_nodes, tree_reduce, valid_rows,
                        TARGET_CHUNKS)
from .shared import SharedArray, check_dtype, view_from_handle


class Whole:
    """Mark a SharedArray argument to be passed whole (unpartitioned) to every partition."""

    def __init__(self, array: Any):
        self.array = array


def whole(array: Any) -> Whole:
    """Pass ``array`` unpartitioned to every partition, without a copy.

    Examples
    --------
    >>> import sharedcompute as sc
    >>> w = sc.whole([1.0, 2.0])
    """
    return Whole(array)


@dataclass
class ArgSpec:
    kind: str            # "part" (rows of axis 0), "whole" (entire array) or "value"
    value: Any           # handle (process pool), ndarray (in process) or a plain value
    writable: bool = False


@dataclass
class Plan:
    kernel: Kernel
    specs: list[ArgSpec]
    n_rows: int
    rows_per_chunk: int
    boundary: Any
    arrays: dict[int, Any] = field(default_factory=dict)  # the caller's array objects by index
    written_blocks: list[Any] = field(default_factory=list)
    read_blocks: list[Any] = field(default_factory=list)
    boundscheck: bool = False  # run the kernels compiled with numba's bounds checks

    @property
    def outputs(self) -> list[Any]:
        """The caller's written arrays, in argument order."""
        return [self.arrays[i] for i in sorted(self.kernel.writes)]

    def written(self) -> Any:
        """What map returns: the written array, or a tuple when a kernel writes several."""
        outs = self.outputs
        return outs[0] if len(outs) == 1 else tuple(outs)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return chunk_grid(self.n_rows, self.rows_per_chunk)

    def task(self, op: str, chunk_range: tuple[int, int], **extra: Any) -> dict:
        return dict(op=op, kernel=self.kernel, specs=self.specs, n_rows=self.n_rows,
                    rows_per_chunk=self.rows_per_chunk, boundary=self.boundary,
                    range=chunk_range, boundscheck=self.boundscheck, **extra)


def _label(kernel: Kernel, i: int) -> str:
    return kernel.params[i] if i < len(kernel.params) else f"argument {i}"


def make_plan(kernel: Kernel, args: Sequence[Any], *, rows: int | None, boundary: Any,
              in_process: bool, array_types: tuple = (), chunk_rows_override: int | None = None,
              direct: bool = False, shared_ok: bool = True, boundscheck: bool = False) -> Plan:
    """Check arguments and describe how to split them; raises InputError before any work.

    Plain NumPy arrays are read-only and sent whole to every partition, as a process pool
    must (they are not shared), on every backend; only a direct kernel call (``direct``)
    splits them, since they are all it has. ``array_types``: the backend's own array
    handles; ``shared_ok``: whether SharedArrays of this machine are usable (not on Dask);
    ``chunk_rows_override`` forces a chunk size (verify checks a second, finer splitting).
    """
    if not isinstance(kernel, Kernel):
        raise InputError(f"{kernel!r} is not a sharedcompute kernel; decorate it with @sc.kernel")
    if len(args) != len(kernel.params):
        raise InputError(f"kernel {kernel.name} takes {len(kernel.params)} arguments "
                         f"{tuple(kernel.params)}, got {len(args)}")
    if kernel.check is not None:
        kernel.check(*[a.array if isinstance(a, Whole) else a for a in args])
    boundary = kernel.boundary if boundary is None else check_boundary(boundary)
    specs: list[ArgSpec] = []
    plan = Plan(kernel, specs, 0, 1, boundary, boundscheck=boundscheck)
    split_rows = _direct_rows(kernel, args) if direct else None
    partitioned: list[tuple[int, Any]] = []  # (index, array) split on axis 0
    sent_whole: list[tuple[int, np.ndarray]] = []  # plain arrays sent whole, not by request
    for i, raw in enumerate(args):
        label = _label(kernel, i)
        writable = i in kernel.writes
        asked_whole = isinstance(raw, Whole) or i in kernel.whole
        arg = raw.array if isinstance(raw, Whole) else raw
        _refuse_foreign(kernel, label, arg, array_types, shared_ok)
        if isinstance(arg, list):
            arg = np.asarray(arg)
        if isinstance(arg, (SharedArray,) + array_types):
            if isinstance(arg, SharedArray):
                if arg.block is not None:
                    arg.block.check_intact()
                (plan.written_blocks if writable else plan.read_blocks).append(arg.block)
            else:
                check_dtype(arg.dtype)
            is_whole = asked_whole or arg.ndim == 0
        elif isinstance(arg, np.ndarray):
            check_dtype(arg.dtype)
            if writable and not direct:
                raise InputError(f"kernel {kernel.name} writes {label!r}, a plain NumPy array; "
                                 "create outputs in shared memory (pool.empty / pool.array)")
            if writable and not arg.flags.writeable:
                raise InputError(f"kernel {kernel.name} writes {label!r}, but that array is "
                                 "read-only; pass a writable array")
            is_whole = asked_whole or arg.ndim == 0 or not direct or (
                not writable and arg.shape[0] != split_rows)
            if is_whole and not writable:
                if not asked_whole and arg.ndim > 0 and not direct:
                    sent_whole.append((i, arg))
                plan.arrays[i] = arg
                specs.append(ArgSpec("value", arg))
                continue
        else:
            if writable:
                raise InputError(f"kernel {kernel.name} writes {label!r}, which is not an array")
            specs.append(ArgSpec("value", arg))
            continue
        if writable and is_whole:
            raise InputError(f"kernel {kernel.name} writes {label!r}, which is passed whole; "
                             "outputs must be partitioned so each worker writes its own rows")
        plan.arrays[i] = arg
        value = arg if in_process or not isinstance(arg, SharedArray) else arg.handle()
        specs.append(ArgSpec("whole" if is_whole else "part", value, writable))
        if not is_whole:
            partitioned.append((i, arg))
    _size_grid(plan, kernel, partitioned, sent_whole, rows)
    if chunk_rows_override is not None:
        plan.rows_per_chunk = max(1, int(chunk_rows_override))
    _check_aliasing(kernel, plan, in_process)
    return plan


def _direct_rows(kernel: Kernel, args: Sequence[Any]) -> int | None:
    """Rows a direct kernel call splits: those of its first written array, else of its first
    array argument not asked to be whole; other arrays with as many rows are split too."""
    order = sorted(range(len(args)), key=lambda i: i not in kernel.writes)
    for i in order:
        a = args[i]
        if isinstance(a, (np.ndarray, SharedArray)) and a.ndim >= 1 and i not in kernel.whole:
            return a.shape[0]
    return None


def _refuse_foreign(kernel: Kernel, label: str, arg: Any, array_types: tuple,
                    shared_ok: bool) -> None:
    """Arguments that would silently compute something else: refuse them by name."""
    where = f"kernel {kernel.name}, argument {label!r}"
    if isinstance(arg, np.ma.MaskedArray):
        raise InputError(f"{where} is a masked array; kernels see only its data, so the mask "
                         "would be lost. Pass x.filled(value) with a neutral value (0 for a "
                         "sum), or np.ma.getdata(x) and np.ma.getmaskarray(x) as two arrays "
                         "to a kernel that reads both")
    if isinstance(arg, SharedArray) and not shared_ok:
        raise InputError(f"{where} is a SharedArray in this machine's shared memory, which "
                         "the cluster's workers cannot see; copy it into the cluster with "
                         "pool.array(x)")
    if isinstance(arg, (SharedArray, np.ndarray, np.generic, list) + array_types):
        return
    if hasattr(arg, "__array__") or hasattr(arg, "__array_interface__") or (
            hasattr(arg, "shape") and hasattr(arg, "dtype")):
        kind = f"{type(arg).__module__}.{type(arg).__qualname__}"
        raise InputError(f"{where} is a {kind}, which this pool cannot pass to a kernel (an "
                         "array of another pool or library); bring it here with "
                         "pool.array(np.asarray(x)) (one copy)")


def _size_grid(plan: Plan, kernel: Kernel, partitioned: list, sent_whole: list,
               rows: int | None) -> None:
    """The number of rows to split and the chunk size, from the split arrays or rows=N."""
    if partitioned:
        first, n_rows = partitioned[0][0], partitioned[0][1].shape[0]
        for i, a in partitioned[1:]:
            if a.shape[0] != n_rows:
                raise InputError(
                    f"kernel {kernel.name}: mismatched leading dimensions: "
                    f"{_label(kernel, first)!r} has {n_rows} rows but {_label(kernel, i)!r} "
                    f"has {a.shape[0]}; partitioned arrays must agree on axis 0 "
                    "(pass an array unpartitioned with sc.whole(x))")
        if rows is not None and rows != n_rows:
            raise InputError(f"rows={rows} disagrees with the arrays' {n_rows} rows; leave "
                             "rows= out when arrays are split")
        _refuse_lookalikes(kernel, sent_whole, n_rows, "as the shared arrays")
        row_nbytes = max(math.prod(a.shape[1:]) * a.dtype.itemsize for _, a in partitioned)
        plan.n_rows = n_rows
        plan.rows_per_chunk = chunk_rows(n_rows, row_nbytes)
        return
    if rows is None:
        if sent_whole:
            i, _ = sent_whole[0]
            raise InputError(
                f"kernel {kernel.name} has no shared array to split: {_label(kernel, i)!r} is "
                "a plain NumPy array, which is sent whole to every partition. Share it with "
                "pool.array(x) so that each worker reads its own rows (or pass sc.whole(x) "
                "and rows=N if each of N work items really needs all of it)")
        if kernel.position or kernel.kind == "reduce":
            raise InputError(f"kernel {kernel.name} has no partitioned array; say how many "
                             "rows (independent work items) to split with rows=N")
        rows = 0
    if isinstance(rows, bool) or int(rows) != rows or rows < 0:
        raise InputError(f"rows={rows!r} must be a non-negative integer")
    _refuse_lookalikes(kernel, sent_whole, int(rows), f"as rows={rows}")
    plan.n_rows = int(rows)
    plan.rows_per_chunk = max(1, -(-int(rows) // TARGET_CHUNKS))


def _refuse_lookalikes(kernel: Kernel, sent_whole: list, n_rows: int, what: str) -> None:
    for i, a in sent_whole:
        if a.shape[0] == n_rows and n_rows > 1:
            raise InputError(
                f"kernel {kernel.name}: {_label(kernel, i)!r} is a plain NumPy array with the "
                f"same {n_rows} rows {what}; plain arrays are sent whole to every partition "
                "(a copy), so each would see all of it. Use pool.array(x) to share and split "
                "it, or sc.whole(x) if every partition really needs all of it")


def _check_aliasing(kernel: Kernel, plan: Plan, in_process: bool) -> None:
    """Refuse a written array that shares memory with another argument: workers would read
    rows that others are writing. Only a kernel declared ``elementwise`` may read the very
    same rows it writes (the same array passed twice)."""
    views = {}
    for i, a in plan.arrays.items():
        if isinstance(a, SharedArray) and a.block is not None:
            views[i] = a.numpy()
        elif isinstance(a, np.ndarray) and (in_process or i in kernel.writes):
            views[i] = a  # (a pool pickles plain read arrays: a copy cannot alias)
    for w in kernel.writes:
        if w not in views:
            continue
        for i, v in views.items():
            if i == w or not np.may_share_memory(views[w], v):  # bounds only: cheap
                continue
            same = (v.__array_interface__["data"][0] == views[w].__array_interface__["data"][0]
                    and v.shape == views[w].shape and v.strides == views[w].strides)
            if (same and kernel.elementwise and i not in kernel.writes
                    and plan.specs[i].kind == "part"):
                continue
            try:
                overlap = np.shares_memory(views[w], v, max_work=100_000)
            except np.exceptions.TooHardError if hasattr(np, "exceptions") else Exception:
                overlap = True
            if not overlap:
                continue
            hint = ("use a separate output array (pool.iterate swaps two arrays for you)"
                    if kernel.depth else
                    "write into a separate output array (pool.empty_like(x))"
                    + ("" if kernel.elementwise or not same else
                       ", or declare @sc.kernel(elementwise=True) if each output row depends "
                       "only on the same row of its inputs"))
            raise InputError(f"kernel {kernel.name} writes {_label(kernel, w)!r}, which shares "
                             f"memory with {_label(kernel, i)!r} of the same call: partitions "
                             f"would read rows that others are writing; {hint}")


# -- executing a task (in a worker or in process) --------------------------------------------
def resolve(specs: list[ArgSpec]) -> list[Any]:
    """Arrays behind the specs: attach handles (workers) or use arrays as given (in process).
    Every array a kernel does not declare in ``writes=`` is a read-only view, in workers and
    in process alike, so a write to it fails the same way everywhere."""
    out = []
    for spec in specs:
        v = spec.value
        if isinstance(v, (np.ndarray, SharedArray)):
            v = np.asarray(v)
            out.append(v if spec.writable else _read_only(v))
        elif spec.kind == "value":
            out.append(v)
        else:
            out.append(view_from_handle(v, writable=spec.writable))
    return out


def _kernel_fn(task: dict) -> Any:
    return task["kernel"].compiled(task.get("boundscheck", False))[0]


def explain(exc: BaseException, task: dict, rows: tuple[int, int]) -> BaseException:
    """Numba's words for two user mistakes, in the engine's: a write to an argument missing
    from ``writes=``, and (bounds-checked builds) a read outside the rows and halo given."""
    kernel: Kernel = task["kernel"]
    text = str(exc)
    if type(exc).__name__ == "TypingError" and "readonly array" in text and "setitem" in text:
        read_only = [kernel.params[i] for i, spec in enumerate(task["specs"][:len(kernel.params)])
                     if not spec.writable and (spec.kind != "value"
                                               or isinstance(spec.value, np.ndarray))]
        declared = tuple(kernel.params[i] for i in kernel.writes)
        return InputError(
            f"kernel {kernel.name} writes one of {read_only}, which are read-only because "
            f"writes={declared} does not name them; declare every array the kernel writes, "
            f"e.g. @sc.kernel(writes={declared + (read_only[0],) if read_only else declared})")
    if isinstance(exc, IndexError) and task.get("boundscheck") and "out of bounds" in text:
        d = kernel.depth
        return IndexError(
            f"{text}: kernel {kernel.name} indexed outside the rows it was given (rows "
            f"[{rows[0]}, {rows[1]}) of {task['n_rows']}, with {d} halo rows on each side); "
            f"a stencil that reads neighbouring rows must declare how far, e.g. "
            f"@sc.kernel(depth={d + 1})")
    return exc


class Stats:
    """Seconds a task spent compiling and computing; the rows it was running (for errors)."""

    __slots__ = ("compile_s", "compute_s", "rows", "chunks_done", "progress")

    def __init__(self, progress: Callable[[int], None] | None = None):
        self.compile_s = self.compute_s = 0.0
        self.rows: tuple[int, int] = (0, 0)
        self.chunks_done = 0
        self.progress = progress


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


def _chunk_args(views: list[Any], specs: list[ArgSpec], s: int, e: int,
                include_written: bool = True) -> list[Any]:
    out = []
    for v, spec in zip(views, specs):
        if spec.writable and not include_written:
            continue
        out.append(v[s:e] if spec.kind == "part" else v)
    return out


def _map_pieces(task: dict, views: list[Any], lo: int, hi: int) -> Iterator[tuple]:
    """(start, stop, kernel arguments, reusable) for each piece of rows lo..hi; a piece
    is not reusable when it got a padded copy of edge rows (stencils at the array's edge)."""
    kernel: Kernel = task["kernel"]
    n, d, boundary = task["n_rows"], kernel.depth, task["boundary"]
    vlo, vhi = valid_rows(n, d, boundary)
    lo, hi = max(lo, vlo), min(hi, vhi)
    for s, e, in_place in halo_pieces(lo, hi, n, d):
        args = []
        for v, spec in zip(views, task["specs"]):
            if spec.kind != "part":
                args.append(v)
            elif spec.writable or d == 0:
                args.append(v[s:e])
            elif in_place:
                args.append(v[s - d:e + d])
            else:
                args.append(padded_rows(v, s, e, d, boundary))
        if kernel.position:
            args.append((s, e, n))
        yield s, e, tuple(args), in_place or d == 0


def _map_rows(task: dict, views: list[Any], lo: int, hi: int, stats: Stats) -> None:
    for s, e, args, _ in _map_pieces(task, views, lo, hi):
        stats.rows = (s, e)
        call(_kernel_fn(task), args, stats)


def prepare(task: dict, views: list[Any]) -> Callable[[Stats], Any] | None:
    """A worker's cached map or reduce task with every kernel argument sliced once, so a
    repeated call costs the kernel calls only (the first call compiled them: the whole run
    counts as compute). None when a piece needs fresh padding (stencil edges): run_task."""
    kernel: Kernel = task["kernel"]
    ca, cb = task["range"]
    chunks = chunk_grid(task["n_rows"], task["rows_per_chunk"])
    dispatcher = _kernel_fn(task)
    if task["op"] == "map":
        pieces = []
        if cb > ca:
            for s, e, args, reusable in _map_pieces(task, views, chunks[ca][0], chunks[cb - 1][1]):
                if not reusable:
                    return None
                pieces.append(((s, e), args))

        def run_map(stats: Stats) -> None:
            t0 = time.perf_counter()
            for rows, args in pieces:
                stats.rows = rows
                dispatcher(*args)
            stats.compute_s += time.perf_counter() - t0
            stats.chunks_done += cb - ca
        return run_map
    if task["op"] == "reduce":
        n = task["n_rows"]
        leaves = {}
        for c in range(ca, cb):
            s, e = chunks[c]
            args = _chunk_args(views, task["specs"], s, e)
            if kernel.position:
                args.append((s, e, n))
            leaves[c] = ((s, e), tuple(args))
        nodes = tree_nodes(0, len(chunks), ca, cb)

        def run_reduce(stats: Stats) -> dict:
            def leaf(c: int) -> Any:
                rows, args = leaves[c]
                stats.rows = rows
                return dispatcher(*args)
            t0 = time.perf_counter()
            out = {node: tree_reduce(node[0], node[1], leaf, kernel.combine) for node in nodes}
            stats.compute_s += time.perf_counter() - t0
            stats.chunks_done += cb - ca
            return out
        return run_reduce
    return None


def run_task(task: dict, stats: Stats, barrier: Any = None, views: list | None = None) -> Any:
    """Do one worker's share of a call (see _run_task); numba's errors for undeclared
    writes and bounds-checked reads are explained in the engine's words."""
    try:
        return _run_task(task, stats, barrier, views)
    except Exception as exc:
        better = explain(exc, task, stats.rows)
        if better is exc:
            raise
        raise better from None


def _run_task(task: dict, stats: Stats, barrier: Any = None, views: list | None = None) -> Any:
    """Do one worker's share of a call. Returns map: None; reduce: {tree node: partial};
    scan totals: [partial per chunk]; iterate: index of the spec holding the last sweep.
    ``views``: the specs' arrays when already resolved (a worker's cached task)."""
    kernel: Kernel = task["kernel"]
    specs: list[ArgSpec] = task["specs"]
    if views is None:
        views = resolve(specs)
    chunks = chunk_grid(task["n_rows"], task["rows_per_chunk"])
    ca, cb = task["range"]
    op = task["op"]
    if op == "map":
        if cb > ca:
            _map_rows(task, views, chunks[ca][0], chunks[cb - 1][1], stats)
            stats.chunks_done += cb - ca
            if stats.progress:
                stats.progress(cb - ca)
        return None
    if op == "reduce":
        n = task["n_rows"]

        def leaf(c: int) -> Any:
            s, e = chunks[c]
            stats.rows = (s, e)
            args = _chunk_args(views, specs, s, e)
            if kernel.position:
                args.append((s, e, n))
            value = call(_kernel_fn(task), tuple(args), stats)
            stats.chunks_done += 1
            if stats.progress:
                stats.progress(1)
            return value
        return {node: tree_reduce(node[0], node[1], leaf, kernel.combine)
                for node in tree_nodes(0, len(chunks), ca, cb)}
    if op == "scan_totals":
        out = []
        for c in range(ca, cb):
            s, e = chunks[c]
            stats.rows = (s, e)
            out.append(call(kernel.compiled(task.get("boundscheck", False))[1],
                            tuple(_chunk_args(views, specs, s, e, False)), stats))
        return out
    if op == "scan_apply":
        offsets = task["offsets"]
        for c in range(ca, cb):
            s, e = chunks[c]
            stats.rows = (s, e)
            args = _chunk_args(views, specs, s, e) + [offsets[c - ca]]
            call(_kernel_fn(task), tuple(args), stats)
            stats.chunks_done += 1
            if stats.progress:
                stats.progress(1)
        return None
    if op == "iterate":
        try:
            return _iterate_in_worker(task, chunks, stats, barrier)
        except BaseException:
            barrier.abort()  # the other workers leave their barrier wait instead of hanging
            raise
    raise ValueError(f"unknown task op {op!r}")


def _iterate_in_worker(task: dict, chunks: list, stats: Stats, barrier: Any) -> int:
    """n sweeps with the loop here and a barrier between sweeps (no parent round trip)."""
    out_i, in_i = task["swap"]
    specs = [ArgSpec(s.kind, s.value, s.writable) for s in task["specs"]]
    specs[in_i].writable = True  # both swap arrays are written in turn: map both writable
    views = resolve(specs)
    specs[in_i].writable = False
    writable_views = {out_i: views[out_i], in_i: views[in_i]}
    views[in_i] = _read_only(views[in_i])
    ca, cb = task["range"]
    lo = chunks[ca][0] if cb > ca else 0
    hi = chunks[cb - 1][1] if cb > ca else 0
    residual: Kernel | None = task.get("residual")
    slots = view_from_handle(task["slots"]) if task.get("slots") else None
    every, tol = task.get("check_every", 0), task.get("tol", 0.0)
    done = 0
    for step in range(task["steps"]):
        sub = dict(task, specs=specs)
        _map_rows(sub, views, lo, hi, stats)
        barrier.wait()
        done = step + 1
        stats.chunks_done += cb - ca
        if stats.progress:
            stats.progress(cb - ca)
        if residual is not None and done % every == 0:
            for c in range(ca, cb):
                s, e = chunks[c]
                slots[c] = call(residual.compiled(task.get("boundscheck", False))[0],
                                (views[out_i][s:e], views[in_i][s:e]), stats)
            barrier.wait()
            value = combine_all(slots, residual.combine)
            barrier.wait()  # everyone has read the slots before they are overwritten
            if value <= tol:
                break
        writable_views[out_i], writable_views[in_i] = writable_views[in_i], writable_views[out_i]
        views[out_i], views[in_i] = writable_views[out_i], _read_only(writable_views[in_i])
        specs[out_i], specs[in_i] = specs[in_i], specs[out_i]
        specs[out_i].writable, specs[in_i].writable = True, False
    return done


def _read_only(view: np.ndarray) -> np.ndarray:
    ro = view.view()
    ro.flags.writeable = False
    return ro


# -- splitting a call over an executor ---------------------------------------------------------
class Executor(Protocol):
    n_workers: int

    def run(self, tasks: list[dict], *, what: str, timeout: float | None,
            progress: Any, memo: int | None = None) -> list[Any]: ...


def _ranges(n_chunks: int, n_workers: int) -> list[tuple[int, int]]:
    return split_even(n_chunks, n_workers)


def check_kind(kernel: Any, op: str) -> None:
    """map runs map and scan kernels, reduce runs reductions: checked before any planning."""
    if not isinstance(kernel, Kernel):
        return  # make_plan says what is wrong
    if op == "map" and kernel.kind == "reduce":
        raise InputError(f"kernel {kernel.name} is a reduction; call pool.reduce")
    if op == "reduce" and kernel.kind != "reduce":
        raise InputError(f"kernel {kernel.name} is not a reduction (declare combine=); "
                         "call pool.map")


def map_call(plan: Plan, executor: Executor, timeout: float | None = None,
             progress: Any = None, memo: int | None = None) -> Any:
    """Run a map; ``memo``: an id under which the workers keep this call's tasks."""
    kernel = plan.kernel
    check_kind(kernel, "map")
    if kernel.kind == "scan":
        return scan_call(plan, executor, timeout, progress)
    n_chunks = len(plan.chunks)
    tasks = [plan.task("map", r) for r in _ranges(n_chunks, executor.n_workers)]
    executor.run(tasks, what=kernel.name, timeout=timeout, progress=(progress, n_chunks),
                 memo=memo)
    return plan.written()


def reduce_call(plan: Plan, executor: Executor, timeout: float | None = None,
                progress: Any = None, memo: int | None = None) -> Any:
    kernel = plan.kernel
    check_kind(kernel, "reduce")
    n_chunks = len(plan.chunks)
    tasks = [plan.task("reduce", r) for r in _ranges(n_chunks, executor.n_workers)]
    return finish_reduce(kernel, n_chunks, executor.run(
        tasks, what=kernel.name, timeout=timeout, progress=(progress, n_chunks), memo=memo))


def finish_reduce(kernel: Kernel, n_chunks: int, results: list) -> Any:
    """Combine the workers' tree nodes into the final value (the same order for any split)."""
    nodes: dict = {}
    for result in results:
        nodes.update(result)
    value = tree_finish(n_chunks, nodes, kernel.combine)
    return kernel.finalize(value) if kernel.finalize is not None else value


def scan_call(plan: Plan, executor: Executor, timeout: float | None = None,
              progress: Any = None) -> Any:
    """Two phases: per-chunk totals, then each chunk with the totals of all chunks before it."""
    kernel = plan.kernel
    n_chunks = len(plan.chunks)
    ranges = _ranges(n_chunks, executor.n_workers)
    totals: list = []
    for part in executor.run([plan.task("scan_totals", r) for r in ranges], what=kernel.name,
                             timeout=timeout, progress=None):
        totals.extend(part)
    offsets = scan_offsets(kernel, totals)
    tasks = [plan.task("scan_apply", r, offsets=offsets[r[0]:r[1]]) for r in ranges]
    executor.run(tasks, what=kernel.name, timeout=timeout, progress=(progress, n_chunks))
    return plan.written()


def scan_offsets(kernel: Kernel, totals: list) -> list:
    """Each chunk's offset: the combined totals of all chunks before it, in chunk order (the
    same sequence for any worker count or backend)."""
    offsets, running = [], kernel.identity
    for t in totals:
        offsets.append(running)
        running = kernel.combine(running, t)
    return offsets


def boundscheck_default() -> bool:
    """SHAREDCOMPUTE_BOUNDSCHECK=1 turns numba's bounds checks on where not given."""
    return os.environ.get("SHAREDCOMPUTE_BOUNDSCHECK", "0") not in ("", "0")


def run_inline(kernel: Kernel, args: Sequence[Any], *, rows: int | None = None,
               boundary: Any = None, boundscheck: bool | None = None) -> Any:
    """A direct kernel call: the pool's partitioning and combine order, in this process."""
    from .pool import _InlineExecutor
    if boundscheck is None:
        boundscheck = boundscheck_default()
    plan = make_plan(kernel, args, rows=rows, boundary=boundary, in_process=True, direct=True,
                     boundscheck=boundscheck)
    executor = _InlineExecutor(1)
    if kernel.kind == "reduce":
        return reduce_call(plan, executor)
    return map_call(plan, executor)
