"""What the parent decides about an iterate call, the same for every backend: the checks it
runs before any work (options, the swapped pair, aliases, whether a kernel may be blocked),
the schedule of blocks and plain sweeps and the tile that keeps a block in cache, and what
the call returns; the local backend's run of a planned call, and what the repeat of a call
its workers keep needs (``Repeat``: the call is an entry of the pool's call cache,
_cache.py, started through the doorbell with no checks and no planning). The worker's
side is sweep.py."""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..iterate_result import IterateResult
from ..kernel import Kernel
from ..partition import combine_all, valid_rows
from ..plan import ArgSpec, Plan, check_kind, read_only_error
from ..shared import KeptBlock, SharedArray


@dataclass
class Sweeps:
    """What an iterate task adds: the two arrays it swaps, how many sweeps, when to stop."""

    swap: tuple[int, int]  # (index of the written array, index of the one read)
    steps: int
    residual: Kernel | None = None
    slots: Any = None  # per-chunk residual partials: a handle (workers) or an array
    check_every: int = 1
    tol: float = 0.0
    fused: bool = False  # the kernel's own partial is the residual (no second pass)
    ranges: tuple = ()  # every worker's chunk range: where the combine tree's nodes lie
    schedule: tuple = ()  # block sizes (schedule() below); empty: plain sweeps
    tile_rows: int = 0  # rows per tile of a block
    in_blocks: bool = False  # an idempotent fused residual is checked inside blocks too


@dataclass
class Iteration:
    """One planned iterate call: the plan, the swapped pair, when to stop, the blocks."""

    plan: Plan
    swap: tuple[int, int]
    steps: int
    residual: Kernel | None
    tol: float
    check_every: int
    blocks: tuple = ()  # schedule(): block sizes; empty: plain sweeps
    tile_rows: int = 0
    in_blocks: bool = False

    @property
    def checks(self) -> bool:
        """Whether any sweep is checked (a residual kernel, or the kernel's own partial)."""
        return self.residual is not None or self.plan.kernel.fused

    @property
    def block_sweeps(self) -> int:
        """The largest block (1: plain sweeps), as IterateResult reports it."""
        return max(self.blocks, default=1)

    def slot_width(self, n_ranges: int) -> int:
        """Residual slots per row: one per chunk (plain check sweeps), then one per worker
        and level when a block is checked inside."""
        k = self.block_sweeps
        return len(self.plan.chunks) + (n_ranges * k if self.in_blocks and k > 1 else 0)

    def sweeps(self, slots: Any, ranges: list) -> Sweeps:
        """The Sweeps every task of this call carries."""
        return Sweeps(self.swap, self.steps, self.residual, slots, self.check_every,
                      self.tol, self.plan.kernel.fused, tuple(ranges), self.blocks,
                      self.tile_rows, self.in_blocks)

    def result(self, done: int, value: float | None, info: bool) -> Any:
        """What iterate returns after ``done`` sweeps: the array holding the last one."""
        return returned(self.plan.arrays, self.swap, self.block_sweeps, done, value, info)


def returned(arrays: Any, swap: tuple, block_sweeps: int, done: int, value: Any,
             info: bool) -> Any:
    """The array holding the last of ``done`` sweeps, or with ``info`` an IterateResult."""
    last = arrays[swap[0] if done % 2 == 1 else swap[1]]
    return IterateResult(last, done, value, block_sweeps) if info else last


def check_options(kernel: Any, residual: Any, tol: Any, block_sweeps: Any) -> tuple:
    """(block_sweeps, tol) checked, before any planning: the first errors a call can get."""
    return check_block_sweeps(block_sweeps), check_tol(kernel, residual, tol)


def plan_iterate(plan: Plan, steps: int, residual: Kernel | None, tol: float,
                 check_every: int, block_sweeps: int | None, n_workers: int,
                 can_block: bool = True) -> Iteration:
    """Check a planned call and choose its blocks. ``can_block``: the backend can run
    blocks at all (Dask's functional arrays cannot: plain sweeps, the same result); a
    kernel that may read ``out`` is refused a given k > 1 either way."""
    kernel = plan.kernel
    out_i, in_i = check_iterate(plan, steps, residual, check_every)
    refuse_swapped_aliases(plan, out_i, in_i)
    blocking = may_block(kernel, out_i, block_sweeps) and can_block
    in_blocks = bool(kernel.fused and kernel.idempotent)  # checks inside blocks too
    k, tile = 1, 0
    if blocking and plan.boundary != "periodic":  # periodic reads the far end every sweep
        u = plan.arrays[in_i]
        row = math.prod(u.shape[1:]) * u.dtype.itemsize
        k, tile = choose_block(plan.n_rows, row, plan.depth, n_workers, block_sweeps)
        k = odd_block(k, block_sweeps is None, plan.n_rows, plan.depth)  # see schedule
    checks = residual is not None or kernel.fused
    blocks = schedule(int(steps), k, check_every, checks, in_blocks)
    return Iteration(plan, (out_i, in_i), int(steps), residual, tol, check_every, blocks,
                     tile, in_blocks)


def check_iterate(plan: Plan, steps: int, residual: Kernel | None,
                  check_every: int) -> tuple[int, int]:
    """Validate an iterate call; return the indices of the two arrays it swaps."""
    kernel = plan.kernel
    check_kind(kernel, "iterate")
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise InputError(f"steps={steps!r} must be a non-negative integer")
    if residual is not None and (not isinstance(residual, Kernel) or residual.kind != "reduce"):
        raise InputError("residual= must be a reduction kernel taking (new, old) and returning "
                         "a number, e.g. sharedcompute.kernels.reductions.max_abs_diff")
    if residual is not None and kernel.fused:
        raise InputError(f"kernel {kernel.name} returns its own residual (combine=); drop "
                         "residual=, or pass a kernel without combine=")
    if check_every < 1:
        raise InputError(f"check_every={check_every!r} must be >= 1")
    if len(kernel.writes) != 1:
        raise InputError(f"iterate needs a kernel that writes exactly one array; "
                         f"{kernel.name} writes {len(kernel.writes)}")
    out_i = kernel.writes[0]
    reads = [i for i, s in enumerate(plan.specs)
             if s.kind == "part" and not s.writable and not s.halo]
    if not reads:
        raise InputError(f"iterate needs a kernel that reads a partitioned array; "
                         f"{kernel.name} reads none")
    in_i = reads[0]
    out_arr, in_arr = plan.arrays[out_i], plan.arrays[in_i]
    if isinstance(in_arr, SharedArray) and in_arr.readonly:  # written on every other sweep
        raise read_only_error(kernel, kernel.params[in_i], in_arr)
    if out_arr.shape != in_arr.shape or out_arr.dtype != in_arr.dtype:
        raise InputError(f"iterate swaps {kernel.params[out_i]!r} and {kernel.params[in_i]!r}, so "
                         f"they need the same shape and dtype; got {out_arr.shape} {out_arr.dtype} "
                         f"and {in_arr.shape} {in_arr.dtype}")
    return out_i, in_i


def fixed_edge_rows(plan: Plan) -> list[tuple[int, int]]:
    """Row ranges a stencil with boundary 'none' never writes; iterate copies them from u to
    out first, so they stay fixed (Dirichlet). With n <= 2*depth that is every row.
    'fixed' copies nothing: each array keeps its own edge rows (polybench's jacobi_2d)."""
    d, n = plan.depth, plan.n_rows
    if not d or plan.boundary != "none" or not n:
        return []
    lo, hi = valid_rows(n, d, "none")
    return [(0, lo), (hi, n)] if hi > lo else [(0, n)]


def swap(specs: list[ArgSpec], out_i: int, in_i: int) -> None:
    """After a sweep: the array just written is read next, and the other one written."""
    specs[out_i], specs[in_i] = specs[in_i], specs[out_i]
    specs[out_i].writable, specs[in_i].writable = True, False


def residual_value(residual: Kernel, partials: list) -> float:
    """The residual's per-chunk partials as float64, combined along the fixed tree."""
    return float(combine_all([np.float64(p) for p in partials], residual.combine))


def check_block_sweeps(value: Any) -> int | None:
    """``block_sweeps=``: None (chosen from the cache) or a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"block_sweeps={value!r} must be a positive integer (sweeps per "
                         "barrier; 1 runs plain sweeps) or None to choose it from the cache")
    return int(value)


def check_tol(kernel: Any, residual: Any, tol: Any) -> float:
    """``tol=`` as a float (0.0 where not given): a number, and only with a residual to
    compare it with, since a tol nothing checks would silently run every sweep."""
    if tol is None:
        return 0.0
    if residual is None and not getattr(kernel, "fused", True):  # (no kernel: make_plan says)
        raise InputError(f"iterate was given tol={tol!r} but nothing to compare it with: "
                         f"kernel {kernel.name} returns no residual, so every sweep would "
                         "run. Pass residual= (a reduction of (new, old), e.g. sharedcompute.kernels."
                         "reductions.max_abs_diff), or declare combine= on the stencil so it "
                         "returns its own partial (as jacobi2d_residual); or drop tol=")
    try:
        value = float(tol)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(tol, bool) or value != value:
        raise InputError(f"tol={tol!r} must be a real number (no residual is <= NaN: every "
                         "sweep would run)")
    return value


def refuse_swapped_aliases(plan: Any, out_i: int, in_i: int) -> None:
    """Both swapped arrays are written, in turn (make_plan checked only out, the first
    sweep's): neither may share memory with any other argument, in any sweep, on any
    backend. A plain NumPy view counts too: a pool sends a copy, which never sees the
    sweeps, while the inline backend would read the live rows."""
    views, roots = {}, {}  # a file mapped twice: one mapping, as plan._check_aliasing does
    for i, a in plan.arrays.items():
        if isinstance(a, SharedArray) and a.block is not None and a.block.is_file:
            b = roots.setdefault(a.block.ident, a.block)
            if b.nbytes < a.block.nbytes:
                roots[a.block.ident] = a.block
    for i, a in plan.arrays.items():
        if isinstance(a, SharedArray) and a.block is not None:
            root = roots[a.block.ident].root if a.block.is_file else a.block.root
            views[i] = np.ndarray(a.shape, a.dtype, buffer=root, offset=a.offset,
                                  strides=a.strides)
        elif isinstance(a, np.ndarray):
            views[i] = a
    kernel = plan.kernel
    for w in (out_i, in_i):
        for i, a in plan.arrays.items():
            if i in (out_i, in_i):
                continue
            v, x = views.get(w), views.get(i)
            if a is not plan.arrays[w] and (v is None or x is None or not _overlap(v, x)):
                continue
            raise InputError(
                f"kernel {kernel.name}: iterate writes {_param(kernel, w)!r} on every other "
                f"sweep (it swaps {_param(kernel, out_i)!r} and {_param(kernel, in_i)!r}), and "
                f"{_param(kernel, i)!r} of the same call shares its memory: partitions would "
                "read rows that others are writing, and results would change with the worker "
                "count. Pass a separate array there (pool.array(np.array(x)) copies it)")


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.shares_memory(a, b, max_work=100_000))
    except Exception:  # too hard to tell: refuse, as _check_aliasing does
        return True


def _param(kernel: Any, i: int) -> str:
    return kernel.params[i] if i < len(kernel.params) else f"argument {i}"


def may_block(kernel: Any, out_i: int, block_sweeps: int | None) -> bool:
    """Whether iterate may run ``kernel``'s sweeps in blocks: not when it may read its
    ``out`` argument, which in plain sweeps holds the sweep before last (a leapfrog step
    ``2u - out + c*lap(u)`` needs it) but inside a block holds scratch rows or the previous
    level. Blocks stay as they are and such kernels run plain sweeps: giving every level
    the sweep before last would need saving the rows each tile and each worker overwrite
    in the other array (a barrier more per block), for a few kernels. block_sweeps=None
    runs them plain; a given k > 1 is refused, so a request is never silently ignored."""
    if block_sweeps == 1:
        return False
    if not reads_argument(kernel.py_func, kernel.params[out_i]):
        return True
    if block_sweeps is None:
        return False
    name = kernel.params[out_i]
    raise InputError(
        f"kernel {kernel.name} may read {name!r} (iterate's out, which holds the sweep before "
        f"last), so block_sweeps={block_sweeps} cannot be honoured: inside a block {name!r} "
        "holds other rows. Leave block_sweeps out (or pass 1) to run plain sweeps; if the "
        f"kernel only writes {name!r}, write it without reading it back (no {name}[i] += ..., "
        f"no {name}[i][j] = ..., no passing {name} on; keep the value in a local)")


_SIZE_ONLY = frozenset({"shape", "ndim", "dtype", "size"})  # no element values read


def reads_argument(func: Any, name: str) -> bool:
    """Whether ``func`` may read the values of its argument ``name``, from numba's IR of
    its bytecode (jit=False kernels too). Conservative: any use but ``name[...] = value``,
    ``name.shape``/``ndim``/``dtype``/``size`` and ``len(name)`` counts as a read (``+=``,
    ``name[i][j] = ``, aliasing, passing it on, iterating it), as does a function numba
    cannot translate."""
    try:
        hash(func)
    except TypeError:  # not a plain function
        return True
    return _reads_argument(func, getattr(func, "__code__", None), name)


@functools.lru_cache(maxsize=256)
def _reads_argument(func: Any, code: Any, name: str) -> bool:
    # keyed on the code too: %autoreload swaps a function's __code__ in place
    try:
        from numba.core import ir
        from numba.core.compiler import run_frontend
        fir = run_frontend(func)
    except Exception:
        return True
    body = [st for block in fir.blocks.values() for st in block.body]
    defs = [st for st in body if isinstance(st, ir.Assign) and isinstance(st.value, ir.Arg)
            and st.value.name == name]
    if len(defs) != 1:
        return True  # not the IR this was written against: assume the worst
    var = defs[0].target.name  # the variable holding the argument ('out' in numba 0.68)
    for st in body:
        if st is defs[0] or isinstance(st, ir.Del) or var not in {v.name for v in st.list_vars()}:
            continue
        if isinstance(st, ir.Assign) and st.target.name == var:
            return True  # rebound: what follows is no longer provably a store
        if isinstance(st, (ir.SetItem, ir.StaticSetItem)) and st.target.name == var:
            index = st.index_var if isinstance(st, ir.StaticSetItem) else st.index
            if var not in (st.value.name, getattr(index, "name", None)):
                continue  # a store into it
        value = st.value if isinstance(st, ir.Assign) else None
        if isinstance(value, ir.Expr) and value.op == "getattr" and value.attr in _SIZE_ONLY:
            continue
        if (isinstance(value, ir.Expr) and value.op == "call" and len(value.args) == 1
                and not value.kws and value.vararg is None and _is_len(fir, value.func)):
            continue
        return True
    return False


def _is_len(fir: Any, var: Any) -> bool:
    try:
        return fir.get_definition(var).value is len
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def cache_bytes() -> tuple[int, int]:
    """(L2 per core, last-level cache) in bytes from sysfs; (1 MiB, 8 MiB) where unknown."""
    sizes: dict[int, int] = {}
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(root):
            if not entry.startswith("index"):
                continue
            with open(f"{root}/{entry}/level") as f:
                level = int(f.read())
            with open(f"{root}/{entry}/size") as f:
                text = f.read().strip()
            mult = {"K": 1024, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes[level] = int(text.rstrip("KMG")) * mult
    except (OSError, ValueError):
        pass
    l2 = sizes.get(2, 1 << 20)
    return l2, max(sizes.get(3, 8 << 20), l2)


def choose_block(n_rows: int, row_nbytes: int, depth: int, n_workers: int,
                 k: int | None) -> tuple[int, int]:
    """(sweeps per block, tile rows). k = 4 // depth unless given (a deeper halo recomputes
    more); a scratch buffer holds a private L2 of rows, or 10 * k * depth rows where rows
    are wide (recomputed halo rows stay under a fifth of a tile), and no blocking when the
    two buffers would not fit the worker's share of the last-level cache (measured on the
    2-vCPU EPYC: k = 4 and 40-row buffers at 8192^2, 64-row ones at 1024^2, were fastest),
    nor, unless k is given, when both arrays fit the last-level cache: sweeps then stream
    from the cache anyway (Jacobi 1024^2 x20, 16 MiB in a 32 MiB cache: plain sweeps 1.08x
    prange, blocks of 4 0.84x, in one run)."""
    if depth < 1 or n_rows <= 2 * depth + 1:
        return 1, 0
    l2, llc = cache_bytes()
    given = k is not None
    if not given and 2 * n_rows * row_nbytes <= llc:
        return 1, 0
    k = min(k if given else max(1, 4 // depth), 64, n_rows // (2 * depth))  # halos < array
    rows = max(l2 // max(row_nbytes, 1), 10 * k * depth)
    if k == 1 or (not given and 2 * rows * row_nbytes > llc // max(n_workers, 1)):
        return 1, 0
    share = -(-n_rows // max(n_workers, 1))  # a tile never needs more than a worker's rows
    return k, min(rows - 2 * k * depth, share)


def schedule(steps: int, k: int, check_every: int, checks: bool,
             in_blocks: bool = False) -> tuple[int, ...]:
    """Block sizes summing to ``steps``: up to each check sweep (or the end), blocks of at
    most k, every one of odd size, then one plain sweep. Empty: all plain. Odd blocks keep
    each array holding the sweeps plain sweeps put in it, so what a kernel leaves
    unwritten (edge rows and columns) is that array's own at every level (run_block starts
    each level's buffer from that array): an even block would end in the other array.
    ``in_blocks`` (a residual checked inside blocks): blocks of k whatever the checks."""
    if k <= 1 or steps <= 1:
        return ()
    if in_blocks:
        return tuple(odd_split(steps - 1, k) + [1])
    seg = check_every if checks else steps
    out: list[int] = []
    done = 0
    while done < steps:
        length = min(seg - done % seg, steps - done)
        out += odd_split(length - 1, k) + [1]
        done += length
    return tuple(out)


def odd_split(body: int, k: int) -> list[int]:
    """``body`` sweeps as blocks of k (odd) and a tail of odd sizes."""
    rest = body % k
    tail = [rest] if rest % 2 else [rest - 1, 1] if rest else []
    return [k] * (body // k) + [b for b in tail if b]


def odd_block(k: int, chosen: bool, n_rows: int, depth: int) -> int:
    """k made odd (blocks are odd: schedule): one more when chosen from the cache
    (4 -> 5), one less when given or where halos of k + 1 would not fit the array."""
    if k % 2 or k <= 1:
        return k
    return k + 1 if chosen and k + 1 <= n_rows // (2 * depth) else k - 1


# -- the local backend's run, and its repeats -------------------------------------------------
LONG_S = 0.01  # a kept call that took this long is waited for asleep at once (no polling)


def run(ex: Any, it: Iteration, scratch: "Scratch", timeout: Any, progress: Any,
        memo: int | None = None, drop: list = ()) -> tuple[tuple[int, Any], list]:
    """Run a planned iterate on executor ``ex`` (one task per worker, or one inline task for
    every chunk: the same rows, the same arithmetic); returns ((sweeps run, last residual
    or None), the tasks sent). The caller holds the write claims of both swapped arrays.
    ``memo``: the id under which the workers keep their tasks; ``drop``: ids they forget."""
    plan = it.plan
    hold_edges(plan.arrays[it.swap[0]], plan.arrays[it.swap[1]], fixed_edge_rows(plan))
    n_chunks = len(plan.chunks)
    ranges = ex.sweep_ranges(n_chunks)  # each worker's chunks (inline: one task, all)
    slots = scratch.slots(it.slot_width(len(ranges))) if it.checks else None
    if not it.steps:
        return (0, None), []
    tasks = [plan.task("iterate", r, sweeps=it.sweeps(slots, ranges)) for r in ranges]
    return ex.run(tasks, what=plan.kernel.name, timeout=timeout, progress=progress,
                  total=n_chunks * it.steps, memo=memo, drop=drop)[0], tasks


def hold_edges(out: Any, u: Any, rows: list) -> None:
    """Copy the fixed edge rows (fixed_edge_rows: never written) from u to out."""
    for s, e in rows:
        np.asarray(out)[s:e] = np.asarray(u)[s:e]


class Scratch(KeptBlock):
    """iterate's residual slots (two rows of float64 partials), one block per backend,
    kept between calls and grown when too small (shared.KeptBlock says why)."""

    def slots(self, width: int) -> Any:
        """Two zeroed rows of ``width``: what the Sweeps carry (a handle for workers)."""
        need = 2 * width  # grown to at least 256: room for the next few calls' grids
        rows = self.grown(need, np.float64, 256)[:need].reshape(2, width)
        np.asarray(rows)[:] = 0.0
        return rows if self.in_process else rows.handle()

    @property
    def block(self) -> Any:
        """The kept block (a kept call's entry holds its name: growing it drops the call)."""
        return getattr(self.array, "block", None)


class Again:
    """What the repeat of a call the workers keep (an _cache.Entry's ``run``) needs besides
    its entry's tasks, to start it through the doorbell with no checks and no planning and
    return what the planned call returns. It holds no array (indices and handles only).
    ``took``: seconds of its last run (a long one is waited for asleep at once, leaving
    the cores to the workers)."""

    what = ""
    width = 0  # the scratch row it uses (zeroed before every run, as a planned call's)
    took = 0.0

    def ring(self, ex: Any, entry: Any, arrays: tuple, scratch: Scratch,
             timeout: Any) -> tuple[int, Any]:
        """Start it on every worker (each meets the barriers) and wait; returns (sweeps or
        steps run, last residual or None). The caller holds its claims."""
        self.begin(arrays)
        if self.width:
            scratch.slots(self.width)
        t0 = time.perf_counter()
        got = ex.ring(entry.memo_id, entry.active, None, what=self.what, timeout=timeout,
                      tasks=entry.tasks, spin=self.took < LONG_S)[0]
        self.took = time.perf_counter() - t0
        return got

    def begin(self, arrays: tuple) -> None:
        """The parent's share of the work before any worker starts."""


class Repeat(Again):
    """A kept iterate: the fixed edge rows held, the call's own arguments returned."""

    def __init__(self, it: Iteration, n_tasks: int):
        self.what, self.swap, self.block_sweeps = it.plan.kernel.name, it.swap, it.block_sweeps
        self.edges = fixed_edge_rows(it.plan)
        self.width = it.slot_width(n_tasks) if it.checks else 0

    def arrays(self, kernel: Any, args: tuple) -> tuple:
        """The call's shared arrays (with its other arguments): its arguments."""
        return args

    def begin(self, arrays: tuple) -> None:
        hold_edges(arrays[self.swap[0]], arrays[self.swap[1]], self.edges)

    def result(self, arrays: tuple, done: int, value: Any, info: bool) -> Any:
        """As Iteration.result, from this call's own array objects."""
        return returned(arrays, self.swap, self.block_sweeps, done, value, info)
