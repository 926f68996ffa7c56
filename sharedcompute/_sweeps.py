"""iterate's schedule: which sweeps run one at a time and which run k to a barrier
(temporal blocking), the tile size that keeps a block's sweeps in cache, and the blocked
sweeps themselves.

A block of k sweeps reads the array holding sweep s once and writes sweep s + k into the
other one: each worker goes over its rows in tiles, computing the tile's rows plus ``depth``
rows per remaining level on each side (recomputed by the neighbouring tile or worker too) in
two private scratch buffers, so the intermediate sweeps stay in cache. Every row is computed
from the same values by the same kernel call as in a plain sweep, so the result is bitwise
the same. A check sweep (``residual``/``tol``) and the last sweep always run plain, and a
segment runs as many array swaps as plain sweeps would: both arrays end exactly as plain
sweeps leave them, and the returned array is the same object.

A fused kernel whose combine is idempotent (``np.maximum``; ``@kernel(idempotent=)``) is
checked inside blocks instead: each level's partial comes from the tiles (rows recomputed for a
neighbour count twice, which changes no max), so every sweep is checked. Blocks then have
an odd number of sweeps, which keeps the newest sweep in plain's array after each; when a
level inside a block reaches tol, its input (intact: a block writes only the other array)
is swept again plainly up to that level, so both arrays end as plain sweeps leave them.

Padded boundaries ('reflect', 'mirror', 'nearest', a constant) are refilled at every level
from that level's own edge rows, which the tile touching the edge holds. 'periodic' reads
the other end of the array (another worker's rows) at every sweep, so it runs plain sweeps
(k = 1), as do arrays of at most 2 * depth + 1 rows, and kernels that may read ``out``
(may_block). Also here: what iterate refuses before any work (tol with nothing to check it,
an argument sharing memory with one of the swapped arrays).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError
from .partition import padded_rows, source_row, valid_rows
from .shared import SharedArray


class IterateResult(NamedTuple):
    """What ``pool.iterate(..., info=True)`` returns: the array holding the last sweep, how
    many sweeps ran, the last residual checked (None if none was), the largest block."""

    array: Any
    sweeps: int
    residual: float | None
    block_sweeps: int


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
            views[i] = np.ndarray(a.shape, a.dtype, buffer=root, offset=a._offset,
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
    most k, as many blocks as keep the swaps' parity, then one plain sweep. Empty: all
    plain. ``in_blocks`` (a residual checked inside blocks, k odd): blocks of k whatever the
    checks, all of odd size, so after every block the newest sweep is in the array plain
    sweeps would hold it in, then one plain sweep."""
    if k <= 1 or steps <= 1:
        return ()
    if in_blocks:
        body = steps - 1
        rest = body % k
        tail = [rest] if rest % 2 else [rest - 1, 1] if rest else []
        return tuple([k] * (body // k) + [b for b in tail if b] + [1])
    seg = check_every if checks else steps
    out: list[int] = []
    done = 0
    while done < steps:
        length = min(seg - done % seg, steps - done)
        body = length - 1
        nb = -(-body // k)
        if nb % 2 != body % 2:
            nb += 1  # the same number of swaps as plain sweeps: same array at the end
        out += [body // nb + (1 if i < body % nb else 0) for i in range(nb)] + [1]
        done += length
    return tuple(out)


def odd_block(k: int, chosen: bool, n_rows: int, depth: int) -> int:
    """k made odd for residual checks inside blocks: one more when chosen from the cache
    (4 -> 5), one less when given or where halos of k + 1 would not fit the array."""
    if k % 2 or k <= 1:
        return k
    return k + 1 if chosen and k + 1 <= n_rows // (2 * depth) else k - 1


def scratch_for(u: np.ndarray, k: int, depth: int, tile: int) -> list[np.ndarray]:
    """A worker's two private tile buffers for blocks of k sweeps."""
    shape = (tile + 2 * k * depth,) + u.shape[1:]
    return [np.empty(shape, u.dtype) for _ in range(2)]


def run_block(func: Any, task: Any, views: list, swap: tuple[int, int], k: int, lo: int,
              hi: int, scratch: list[np.ndarray], stats: Any, invoke: Any,
              levels: list | None = None) -> None:
    """k sweeps of this worker's rows [lo, hi): from views[in] (holding sweep s) into
    views[out] (sweep s + k), tile by tile through ``scratch``, whose row 0 is global row
    ``t0 - k * depth`` (negative near the top: the padded rows of a boundary live there).
    ``levels``: k slots that receive each level's partial (a fused kernel's) combined over
    the tiles; the rows a tile recomputes for its neighbours count twice, which an
    idempotent combine allows. ``invoke(func, args, stats)`` makes each kernel call (_task.
    call: compile time counted as such), with ``stats.rows`` the global rows it writes, as
    errors name them."""
    n, d, boundary = task.n_rows, task.depth, task.boundary
    none = boundary == "none"
    vlo, vhi = (d, n - d) if none else (0, n)  # the rows a sweep writes
    out_i, in_i = swap
    lo, hi = max(lo, vlo), min(hi, vhi)
    src, dst = views[in_i], views[out_i]
    tile = scratch[0].shape[0] - 2 * k * d
    readable = [a.view() for a in scratch]
    for a in readable:
        a.flags.writeable = False  # the kernel's read argument is typed read-only: one compile
    others = [(i, v) for i, (v, s) in enumerate(zip(views, task.specs))
              if i not in swap and s.kind == "part"]
    args = list(views)
    position = task.kernel.position
    for t0 in range(lo, hi, tile):
        t1 = min(t0 + tile, hi)
        base, top = t0 - k * d, t1 + k * d
        prev, pbase = src, 0
        if none:
            for a in scratch:  # rows that never change, read at every level near the edges
                if base < d:
                    a[max(base, 0) - base:d - base] = src[max(base, 0):d]
                if top > n - d:
                    a[n - d - base:min(top, n) - base] = src[n - d:min(top, n)]
        elif base < 0 or top > n:  # sweep s with its padded rows, as a plain sweep pads it
            a, r0, r1 = scratch[0], max(base, 0), min(top, n)
            a[r0 - base:r1 - base] = src[r0:r1]
            _pad(a, base, r0, r1, n, d, boundary)
            prev, pbase = readable[0], base
        for j in range(1, k + 1):
            r0, r1 = max(t0 - (k - j) * d, vlo), min(t1 + (k - j) * d, vhi)
            if j == k:
                args[out_i] = dst[r0:r1]
            else:
                args[out_i] = scratch[j % 2][r0 - base:r1 - base]
            args[in_i] = prev[r0 - d - pbase:r1 + d - pbase]
            for i, v in others:
                args[i] = (v[r0 - d:r1 + d] if r0 - d >= 0 and r1 + d <= n
                           else padded_rows(v, r0, r1, d, boundary))
            stats.rows = (r0, r1)
            p = invoke(func, (*args, (r0, r1, n)) if position else tuple(args), stats)
            if levels is not None:
                p = partial_number(task.kernel, p)
                q = levels[j - 1]
                levels[j - 1] = p if q is None else task.kernel.combine(q, p)
            if j < k:
                if not none:
                    _pad(scratch[j % 2], base, r0, r1, n, d, boundary)
                prev, pbase = readable[j % 2], base


def _pad(buf: np.ndarray, base: int, r0: int, r1: int, n: int, d: int, boundary: Any) -> None:
    """Fill the rows past the array's edges of one level held in ``buf`` (global rows
    [r0, r1)), from that level's own edge rows: the rows they read lie within d + 1 rows
    of the edge, inside [r0, r1) (blocking needs n > 2 * depth + 1; not 'periodic')."""
    for edge, rows in ((r0 == 0, range(-d, 0)), (r1 == n, range(n, n + d))):
        if not edge:
            continue
        for i in rows:
            if 0 <= i - base < buf.shape[0]:  # rows past the tile's reach are never read
                j = source_row(i, n, boundary)
                buf[i - base] = boundary if j < 0 else buf[j - base]


class LevelCheck:
    """An idempotent fused residual checked at every sweep of a block: each worker's
    partial per level (over its tiles) goes to its own slots after the block, one barrier,
    then every worker combines them alike and finds the first level at or under tol.
    ``blank``: the kernel's partial for zero rows where this worker has a chunk with no
    row to write (plain check sweeps combine it as that chunk's leaf)."""

    def __init__(self, task: Any, blank: Any):
        sw = task.sweeps
        ca, cb = task.chunk_range
        self.combine, self.sw, self.blank = task.kernel.combine, sw, blank
        self.width = max(sw.schedule)
        self.base = len(task.chunks)  # the per-chunk slots come first (plain check sweeps)
        self.givers = [w for w, (a, b) in enumerate(sw.ranges) if b > a]
        self.me = sw.ranges.index(task.chunk_range) if cb > ca else None
        self.levels: list = []

    @staticmethod
    def blank_chunk(task: Any) -> int | None:
        """The first chunk of this worker's with no row to write, if any."""
        vlo, vhi = valid_rows(task.n_rows, task.depth, task.boundary)
        for c in range(*task.chunk_range):
            s, e = task.chunks[c]
            if max(s, vlo) >= min(e, vhi):
                return c
        return None

    def start(self, size: int) -> list:
        self.levels = [None] * size
        return self.levels

    def finish(self, row: np.ndarray, done: int, barrier: Any) -> tuple[int, Any]:
        """(first level whose residual is <= tol, or 0; the residual of that level or of
        the block's last checked one, None if none is checked)."""
        combine, width, base = self.combine, self.width, self.base
        if self.me is not None:
            for j, v in enumerate(self.levels):
                if self.blank is not None:
                    v = self.blank if v is None else combine(v, self.blank)
                row[base + self.me * width + j] = v
        barrier.wait()
        value = None
        for j in range(len(self.levels)):
            if (done + j + 1) % self.sw.check_every:
                continue
            value = functools.reduce(combine, [row[base + w * width + j] for w in self.givers])
            if value <= self.sw.tol:
                return j + 1, value
        return 0, value


def partial_number(kernel: Any, value: Any) -> np.float64:
    """A chunk's residual partial as float64 (the combine then runs on float64, as before)."""
    if type(value) is float:  # what numba returns for a float64: already an IEEE double
        return value
    try:
        number = np.float64(value)
    except (TypeError, ValueError):
        number = None
    if number is None or np.ndim(value) != 0 or isinstance(value, (complex, np.complexfloating)):
        raise InputError(f"kernel {kernel.name} returned {value!r} as a partition's partial; "
                         "iterate compares the combined partial with tol, so it must be one "
                         "real number per partition (e.g. the largest change)")
    return number
