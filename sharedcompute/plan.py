"""Plan a call: check its arguments, choose what is split, size the fixed chunk grid.

``make_plan`` turns (kernel, arguments) into argument specs and a chunk grid, raising
InputError before any work; ``Plan.task`` cuts it into the typed ``WorkOrder`` a worker (or the
calling process) runs. Also here: what every backend shares about a call's shape, such as
map/reduce kind checks, the scan offsets and the reduce finish (iterate's own plan is
_iterate/plan.py).
"""
from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import InputError, ReadOnlyArrayError
from .kernel import Kernel
from .partition import TARGET_CHUNKS, check_boundary, chunk_grid, chunk_rows, tree_finish
from .shared import SharedArray, check_dtype

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
    halo: tuple = ()     # (before, after): a read "part" with rows of its own (kernel halo=)


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
    depth: int = 0  # halo rows: the kernel's, or the call's depth=

    @property
    def outputs(self) -> list[Any]:
        """The caller's written arrays, in argument order."""
        return [self.arrays[i] for i in sorted(self.kernel.writes)]

    def written(self) -> Any:
        """What map returns: the written array, or a tuple when a kernel writes several."""
        return written_result(self.outputs)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return chunk_grid(self.n_rows, self.rows_per_chunk)

    def task(self, op: str, chunk_range: tuple[int, int], **extra: Any) -> "WorkOrder":
        return WorkOrder(op, self.kernel, self.specs, self.n_rows, self.rows_per_chunk,
                    self.boundary, chunk_range, self.boundscheck, depth=self.depth, **extra)


def written_result(outputs: list) -> Any:
    """What map returns: the written array, or a tuple when a kernel writes several."""
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def written_of(writes: list) -> Any:
    """written_result as a function of a call's arguments, given the written indices: made
    once for a cached call (_cache.Entry), so a repeated map needs no planning module."""
    return operator.itemgetter(*writes) if writes else _nothing_written


def _nothing_written(args: tuple) -> tuple:
    return written_result([])


@dataclass
class WorkOrder:
    """One worker's share of a call: the kernel, its argument specs, the chunk grid and the
    contiguous range of chunks it runs. Pickled to a worker as is (both ends run the same
    code); ``op`` is "map", "reduce", "partial" (a fused kernel's map with partial=True),
    "scan_totals", "scan_apply", "iterate" or "program"."""

    op: str
    kernel: Kernel
    specs: list[ArgSpec]
    n_rows: int
    rows_per_chunk: int
    boundary: Any
    chunk_range: tuple[int, int]
    boundscheck: bool = False
    depth: int = 0  # halo rows on each side (the kernel's default or the call's)
    offsets: list | None = None  # scan_apply: each chunk's offset
    sweeps: Any = None  # iterate: its _iterate.plan.Sweeps; program: _iterate.program.StepWork

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return chunk_grid(self.n_rows, self.rows_per_chunk)

    @property
    def n_chunks(self) -> int:
        """len(self.chunks), without building the grid."""
        return max(1, -(-self.n_rows // self.rows_per_chunk))

    def span(self, ca: int, cb: int) -> tuple[int, int]:
        """The rows [start, stop) of chunks [ca, cb), ca < cb, without building the grid:
        a dynamic call runs many pieces of one order, and ``.chunks`` per piece cost
        O(chunks) each (1,000 chunks: 0.5 ms a piece)."""
        return ca * self.rows_per_chunk, min(cb * self.rows_per_chunk, self.n_rows)

    @property
    def barriered(self) -> bool:
        """Whether the workers meet at a barrier inside this task (iterate, a program)."""
        return self.op in ("iterate", "program")

    @property
    def rows(self) -> tuple[int, int]:
        """The rows [start, stop) this task covers (for error messages)."""
        ca, cb = self.chunk_range
        if cb <= ca:
            return (0, 0)
        return self.span(ca, cb)



def _label(kernel: Kernel, i: int) -> str:
    return kernel.params[i] if i < len(kernel.params) else f"argument {i}"


def make_plan(kernel: Kernel, args: Sequence[Any], *, rows: int | None, boundary: Any,
              in_process: bool, array_types: tuple = (), chunk_rows_override: int | None = None,
              direct: bool = False, shared_ok: bool = True, boundscheck: bool = False,
              depth: int | None = None) -> Plan:
    """Check arguments and describe how to split them; raises InputError before any work.

    Plain NumPy arrays are read-only and sent whole to every partition, as a process pool
    must (they are not shared), on every backend; only a direct kernel call (``direct``)
    splits them, since they are all it has. ``array_types``: the backend's own array
    handles; ``shared_ok``: whether SharedArrays of this machine are usable (not on Dask);
    ``chunk_rows_override``: the call's ``chunk_rows=`` (checked here against the rows);
    ``depth`` overrides the kernel's halo depth for this call (a window from a command line).
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
    plan = Plan(kernel, specs, 0, 1, boundary, boundscheck=boundscheck,
                depth=check_depth(kernel, depth))
    split_rows = _direct_rows(kernel, args) if direct else None
    partitioned: list[tuple[int, Any]] = []  # (index, array) split on axis 0
    sent_whole: list[tuple[int, np.ndarray]] = []  # plain arrays sent whole, not by request
    for i, raw in enumerate(args):
        label = _label(kernel, i)
        writable = i in kernel.writes
        asked_whole = isinstance(raw, Whole) or i in kernel.whole
        arg = raw.array if isinstance(raw, Whole) else raw
        halo = kernel.halo.get(i, ())
        if isinstance(arg, np.memmap) and shared_ok and not direct:
            # np.memmap / np.load(mmap_mode=...): the workers map the same file by path
            arg = SharedArray.from_memmap(arg) or np.asarray(arg)
        _refuse_foreign(kernel, label, arg, array_types, shared_ok)
        if isinstance(arg, list):
            arg = np.asarray(arg)
        if halo:
            _check_halo_arg(kernel, label, raw, arg, direct)
        if isinstance(arg, (SharedArray,) + array_types):
            if isinstance(arg, SharedArray):
                if arg.block is not None:
                    arg.block.check_intact()
                if writable and arg.readonly:
                    raise read_only_error(kernel, label, arg)
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
                not writable and arg.shape[0] - sum(halo) != split_rows)
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
        specs.append(ArgSpec("whole" if is_whole else "part", value, writable,
                             () if is_whole else halo))
        if not is_whole:
            partitioned.append((i, arg))
    _size_grid(plan, kernel, partitioned, sent_whole, rows)
    if chunk_rows_override is not None:
        plan.rows_per_chunk = check_chunk_rows(chunk_rows_override, plan.n_rows,
                                               min(plan.rows_per_chunk, plan.n_rows))
    _check_aliasing(kernel, plan, in_process)
    return plan


def read_only_error(kernel: Kernel, label: str, arg: SharedArray) -> ReadOnlyArrayError:
    """The error for writing ``arg``, mapped read-only (also iterate's swapped input)."""
    where = arg.filename or "its file"
    return ReadOnlyArrayError(
        f"kernel {kernel.name} writes {label!r}, which is mapped read-only ({where} opened "
        "with mode='r', or a mode-'r' memmap); open it with pool.open(path, mode='r+') (or "
        "np.load(path, mmap_mode='r+')) to write the file in place, or write into a new "
        "array (pool.empty_like(x), or pool.open(path2, mode='w+', shape=..., dtype=...))")


def _check_halo_arg(kernel: Kernel, label: str, raw: Any, arg: Any, direct: bool) -> None:
    """An argument named in halo= is split with the output's rows: an array with rows,
    shared (a pool sends a plain NumPy array whole, a copy, which would be wrong here)."""
    if isinstance(raw, Whole) or np.ndim(arg) == 0:
        raise InputError(f"kernel {kernel.name} declares halo= for {label!r}, so it is split "
                         "with the output's rows; pass it as an array with rows, not "
                         "sc.whole(x) or a scalar")
    if isinstance(arg, np.ndarray) and not direct:
        raise InputError(f"kernel {kernel.name} declares halo= for {label!r}, a plain NumPy "
                         "array, which a pool would send whole; share it with pool.array(x) "
                         "so that each worker reads its own rows")


def _grid_rows(kernel: Kernel, i: int, a: Any) -> int:
    """The output rows argument i spans: its rows less those of its own halo (halo=)."""
    before, after = kernel.halo.get(i, (0, 0))
    return a.shape[0] - before - after


def _direct_rows(kernel: Kernel, args: Sequence[Any]) -> int | None:
    """Rows a direct kernel call splits: those of its first written array, else of its first
    array argument not asked to be whole; other arrays with as many rows are split too."""
    order = sorted(range(len(args)), key=lambda i: i not in kernel.writes)
    for i in order:
        a = args[i]
        if isinstance(a, (np.ndarray, SharedArray)) and a.ndim >= 1 and i not in kernel.whole:
            return _grid_rows(kernel, i, a)
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
    if isinstance(arg, (memoryview, bytes, bytearray)):
        raise InputError(f"{where} is a {type(arg).__name__}; pass an array: "
                         "np.frombuffer(x, dtype=...) views its bytes without a copy")
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
        first = partitioned[0][0]
        n_rows = _grid_rows(kernel, first, partitioned[0][1])
        for i, a in partitioned:
            if _grid_rows(kernel, i, a) == n_rows and n_rows >= 0:
                continue
            if i in kernel.halo or first in kernel.halo:
                b, f = kernel.halo.get(i, (0, 0)), kernel.halo.get(first, (0, 0))
                raise InputError(
                    f"kernel {kernel.name}: {_label(kernel, i)!r} has {a.shape[0]} rows, "
                    f"which with halo {b} (rows before, after) does not line up with the "
                    f"{partitioned[0][1].shape[0]} rows of {_label(kernel, first)!r} "
                    f"(halo {f}): an argument with halo=(before, after) has before + n + "
                    "after rows, n being the written array's")
            raise InputError(
                f"kernel {kernel.name}: mismatched leading dimensions: "
                f"{_label(kernel, first)!r} has {n_rows} rows but {_label(kernel, i)!r} "
                f"has {a.shape[0]}; partitioned arrays must agree on axis 0 "
                "(pass an array unpartitioned with sc.whole(x), or declare "
                "@sc.kernel(halo={name: (before, after)}) for a field with rows of its own)")
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
    """Refuse a written array that shares memory with another argument, a plain NumPy view
    of its block included: workers would read rows that others are writing. Only a kernel declared ``elementwise`` may read the very
    same rows it writes (the same array passed twice)."""
    views = {}
    widest = {}  # a file mapped twice (pool.open and a memmap): one mapping for the check
    for a in plan.arrays.values():
        if isinstance(a, SharedArray) and a.block is not None and a.block.is_file:
            k = a.block.ident
            if k not in widest or widest[k].nbytes < a.block.nbytes:
                widest[k] = a.block
    for i, a in plan.arrays.items():
        if isinstance(a, SharedArray) and a.block is not None:
            views[i] = a.numpy()
            if a.block.is_file and widest[a.block.ident] is not a.block:
                views[i] = np.ndarray(a.shape, a.dtype, buffer=widest[a.block.ident].root,
                                      offset=a.offset, strides=a.strides)
        elif isinstance(a, np.ndarray):
            # a plain array too, on every backend: a pool pickles each worker's copy when
            # it sends that worker's task, after others began writing (issue 23 #3)
            views[i] = a
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
                    if plan.depth else
                    "write into a separate output array (pool.empty_like(x))"
                    + ("" if kernel.elementwise or not same else
                       ", or declare @sc.kernel(elementwise=True) if each output row depends "
                       "only on the same row of its inputs"))
            raise InputError(f"kernel {kernel.name} writes {_label(kernel, w)!r}, which shares "
                             f"memory with {_label(kernel, i)!r} of the same call: partitions "
                             f"would read rows that others are writing; {hint}")


# -- what every backend shares about a call ----------------------------------------------------
def boundscheck_default() -> bool:
    """SHAREDCOMPUTE_BOUNDSCHECK=1 turns numba's bounds checks on where not given."""
    return os.environ.get("SHAREDCOMPUTE_BOUNDSCHECK", "0") not in ("", "0")


def check_timeout(timeout: Any) -> float | None:
    """``timeout=`` as seconds: None, or a positive finite number (checked before any work,
    so a bad value never costs the workers)."""
    if timeout is None:
        return None
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(timeout, bool) or not 0 < value < 1e9:  # also NaN and inf
        raise InputError(f"timeout={timeout!r} must be a positive, finite number of seconds "
                         "(or None to wait as long as the call takes)")
    return value


def check_depth(kernel: Kernel, depth: Any) -> int:
    """A call's ``depth=`` (None: the kernel's): halo rows for map kernels only."""
    if depth is None:
        return kernel.depth
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise InputError(f"depth={depth!r} must be a non-negative integer (halo rows on each "
                         "side)")
    if depth and kernel.kind != "map":
        raise InputError(f"kernel {kernel.name}: halos (depth=) apply to map kernels only; it "
                         f"is a {kernel.kind} (a stencil that returns a partial declares both "
                         "depth= and combine= in @sc.kernel)")
    return int(depth)


def check_chunk_rows(chunk_rows: Any, n_rows: int | None = None, default: int = 0) -> int | None:
    """A call's ``chunk_rows=``: None (the default grid) or rows per chunk, a whole number
    from 1 to the rows the call splits (``n_rows``, known once planned: the Pool checks the
    type first, make_plan the size; an empty array takes any). Any size works with any
    ``depth``: every kernel call reads its own halo rows, whatever the grid."""
    if chunk_rows is None:
        return None
    if (isinstance(chunk_rows, (bool, np.bool_)) or not isinstance(chunk_rows, (int, np.integer))
            or chunk_rows < 1):
        raise InputError(f"chunk_rows={chunk_rows!r} must be a whole number of rows per chunk, "
                         "at least 1 (or None: the default grid, about 1/256 of the array in "
                         "chunks of 64 KiB to 4 MiB)")
    if n_rows and chunk_rows > n_rows:
        raise InputError(f"chunk_rows={chunk_rows} is more than the {n_rows} rows this call "
                         f"splits; use 1 to {n_rows} (the default here is {default})")
    return int(chunk_rows)


def check_kind(kernel: Any, op: str) -> None:
    """map runs map and scan kernels, reduce runs reductions, "partial" (map with
    ``partial=True``) runs fused kernels: checked before any planning."""
    if not isinstance(kernel, Kernel):
        return  # make_plan says what is wrong
    if op == "map" and kernel.kind == "reduce":
        raise InputError(f"kernel {kernel.name} is a reduction; call pool.reduce")
    if op == "reduce" and kernel.fused:
        raise InputError(f"kernel {kernel.name} writes {_written_names(kernel)} and returns a "
                         "partial (combine=): a fused kernel, which pool.reduce cannot run "
                         "(it writes no arrays); call pool.map(kernel, ..., partial=True) for "
                         "(written array, combined partial) from one pass, or pool.iterate "
                         "to use the partial as a residual")
    if op == "reduce" and kernel.kind != "reduce":
        raise InputError(f"kernel {kernel.name} is not a reduction (declare combine=); "
                         "call pool.map")
    if op == "partial" and not kernel.fused:
        call = "reduce" if kernel.kind == "reduce" else "map"
        raise InputError(f"partial=True needs a kernel that writes arrays and returns a "
                         f"partial (writes= or depth=, and combine=); {kernel.name} is a "
                         f"{kernel.kind}: call pool.{call}(kernel, ...) without partial=True")
    if op == "iterate" and kernel.kind != "map":
        raise InputError(f"iterate runs map/stencil kernels; {kernel.name} is a {kernel.kind}")


def _written_names(kernel: Kernel) -> str:
    return ", ".join(repr(_label(kernel, i)) for i in sorted(kernel.writes))


def finish_reduce(kernel: Kernel, n_chunks: int, results: list) -> Any:
    """Combine the workers' tree nodes into the final value (the same order for any split)."""
    nodes: dict = {}
    for result in results:
        nodes.update(result)
    value = tree_finish(n_chunks, nodes, kernel.combine)
    return kernel.finalize(value) if kernel.finalize is not None else value


def scan_offsets(kernel: Kernel, totals: list) -> list:
    """Each chunk's offset: the combined totals of all chunks before it, in chunk order (the
    same sequence for any worker count or backend)."""
    offsets, running = [], kernel.identity
    for t in totals:
        offsets.append(running)
        running = kernel.combine(running, t)
    return offsets
