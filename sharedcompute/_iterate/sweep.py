"""A worker's iterate: its sweeps, plain or k to a barrier (temporal blocking), and the
residual checks between them.

A block of k sweeps reads the array holding sweep s once and writes sweep s + k into the
other one: each worker goes over its rows in tiles, computing the tile's rows plus ``depth``
rows per remaining level on each side (recomputed by the neighbouring tile or worker too) in
two private scratch buffers, so the intermediate sweeps stay in cache. Every row is computed
from the same values by the same kernel call as in a plain sweep, so the result is bitwise
the same. A check sweep (``residual``/``tol``) and the last sweep always run plain, and
every block has an odd number of sweeps, so after each block the newest sweep is in the
array plain sweeps hold it in. Each level's scratch rows start as the rows of the array
that level belongs to (odd levels: the written array; even ones: the read one), so the
elements a kernel leaves unwritten (edge rows and columns of a ported solver) are that
array's own at every level, as in plain sweeps: both arrays end exactly as plain sweeps
leave them, and the returned array is the same object.

A fused kernel whose combine is idempotent (``np.maximum``; ``@kernel(idempotent=)``) is
checked inside blocks instead: each level's partial comes from the tiles (rows recomputed for a
neighbour count twice, which changes no max), so every sweep is checked; when a
level inside a block reaches tol, its input (intact: a block writes only the other array)
is swept again plainly up to that level, so both arrays end as plain sweeps leave them.

Padded boundaries ('reflect', 'mirror', 'nearest', a constant) are refilled at every level
from that level's own edge rows, which the tile touching the edge holds. 'periodic' reads
the other end of the array (another worker's rows) at every sweep, so it runs plain sweeps
(k = 1), as do arrays of at most 2 * depth + 1 rows, and kernels that may read ``out``
(plan.may_block). The parent chooses all of this (plan.py); the worker runs it here, with a
barrier between sweeps (or blocks) and no parent round trip: ``run_iterate``, which this
module adds to _evaluate.RUNNERS.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from .._evaluate import (RUNNERS, RowCalls, Stats, call, kernel_fn, map_pieces, map_rows,
                         part_rows, read_only, resolve)
from ..errors import InputError
from ..partition import (UNPADDED, padded_rows, position_value, source_row, tree_finish,
                         tree_nodes, tree_reduce, valid_rows)
from ..plan import ArgSpec, WorkOrder
from ..shared import view_from_handle
from .plan import swap


def run_iterate(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> tuple:
    """``steps`` sweeps with the loop here and a barrier between sweeps (no parent round
    trip); returns (sweeps run, last residual checked or None): a residual <= tol stops."""
    try:
        return _sweep(task, stats, barrier)
    except BaseException:
        barrier.abort()  # the other workers leave their barrier wait instead of hanging
        raise


def chunk_partial(task: WorkOrder, func: Any, views: list, s: int, e: int,
                   stats: Stats) -> np.float64:
    """A fused kernel's partial for chunk [s, e): its pieces' partials combined in row order;
    a chunk with no row to write (edges under 'none', an empty array) gets the kernel's
    value for zero rows, so every chunk has a leaf whatever the split."""
    value = None
    for ps, pe, args, _ in map_pieces(task, views, s, e):
        stats.rows = (ps, pe)
        p = call(func, args, stats)
        value = p if value is None else task.kernel.combine(value, p)
    if value is None:
        d, empty = task.depth, []
        for v, spec in zip(views, task.specs):
            if spec.kind != "part":
                empty.append(v)
            elif spec.writable or not d or spec.halo:
                empty.append(part_rows(v, spec, s, s))
            else:  # a read input has 2 * depth more rows than its output
                empty.append(np.zeros((2 * d,) + v.shape[1:], v.dtype))
        if task.kernel.position:
            empty.append(position_value(task.kernel.position, s, s, task.n_rows, d,
                                        task.boundary))
        value = call(func, tuple(empty), stats)
    return partial_number(task.kernel, value)


def _sweep(task: WorkOrder, stats: Stats, barrier: Any) -> tuple:
    sw = task.sweeps
    out_i, in_i = sw.swap
    specs = [ArgSpec(s.kind, s.value, s.writable, s.halo) for s in task.specs]
    specs[in_i].writable = True  # both swap arrays are written in turn: map both writable
    views = resolve(specs)
    specs[in_i].writable = False
    writable = {out_i: views[out_i], in_i: views[in_i]}
    ro = {id(v): read_only(v) for v in writable.values()}  # each array's read view, once
    views[in_i] = ro[id(views[in_i])]
    ca, cb = task.chunk_range
    chunks = task.chunks
    n_chunks = len(chunks)
    lo = chunks[ca][0] if cb > ca else 0
    hi = chunks[cb - 1][1] if cb > ca else 0
    func = kernel_fn(task)
    judge = sw.residual if sw.residual is not None else task.kernel if sw.fused else None
    if judge is not None:
        slots = sw.slots if isinstance(sw.slots, np.ndarray) else view_from_handle(sw.slots)
        check = sw.residual.compiled(task.boundscheck)[0] if sw.residual is not None else None
        mine = tree_nodes(0, n_chunks, ca, cb)  # this worker's subtrees of the fixed tree
        every = [nd for r in sw.ranges for nd in tree_nodes(0, n_chunks, *r)]
    blocks = sw.schedule or (1,) * sw.steps
    scratch = (scratch_for(views[in_i], max(blocks), task.depth, sw.tile_rows)
               if max(blocks, default=1) > 1 else None)
    levels = None
    if sw.in_blocks and scratch:
        blank = LevelCheck.blank_chunk(task)  # its zero-row partial is a leaf of plain's tree
        levels = LevelCheck(task, None if blank is None
                            else chunk_partial(task, func, views, *chunks[blank], stats))
    task = replace(task, specs=specs)  # swap() flips this list in place after each sweep

    def flip() -> None:
        nonlocal swaps
        swaps += 1
        writable[out_i], writable[in_i] = writable[in_i], writable[out_i]
        views[out_i], views[in_i] = writable[out_i], ro[id(writable[in_i])]
        swap(specs, out_i, in_i)

    done, value, checks, swaps = 0, None, 0, 0
    sliced: dict = {}  # per swap parity: each chunk's kernel arguments, sliced once
    plain: dict = {}  # per swap parity: a plain sweep's kernel calls, sliced once
    for size in blocks:
        checking = judge is not None and size == 1 and (done + 1) % sw.check_every == 0
        in_block = size > 1 and levels is not None  # checked at every level, from the block
        if in_block:  # its own barrier, in levels.finish
            run_block(func, task, views, (out_i, in_i), size, lo, hi, scratch, stats, call,
                      levels.start(size))
            hit, level_value = levels.finish(slots[checks % 2], done, barrier)
            checks += 1
            value = level_value if level_value is not None else value
            if hit:  # converged inside: redo those sweeps plain from the block's input,
                for h in range(hit):  # which is intact, so both arrays end as plain ones
                    map_rows(task, views, lo, hi, stats)
                    barrier.wait()
                    if h < hit - 1:
                        flip()
                stats.advance((cb - ca) * hit)
                return done + hit, reported(value)
        elif size > 1:
            run_block(func, task, views, (out_i, in_i), size, lo, hi, scratch, stats, call)
        elif checking and check is None:  # the fused kernel's own partials, same pass
            partials = _fused_partials(task, func, views, ca, cb, stats, sliced, swaps % 2)
        else:
            calls = plain.get(swaps % 2)
            if calls is None:
                calls = plain[swaps % 2] = RowCalls(task, views, lo, hi)
            calls.run(stats)
            if checking:  # residual(new, old) of this worker's own rows: before the barrier
                partials = [partial_number(judge, call(check, (views[out_i][s:e],
                                                               views[in_i][s:e]), stats))
                            for s, e in chunks[ca:cb]]
        if checking:  # two slot rows in turn: nobody overwrites a row still being read
            row = slots[checks % 2]
            for nd in mine:
                row[nd[0]] = tree_reduce(nd[0], nd[1], lambda c: partials[c - ca], judge.combine)
        if not in_block:
            barrier.wait()
        done += size
        stats.advance((cb - ca) * size)
        if checking:
            value = tree_finish(n_chunks, {nd: row[nd[0]] for nd in every}, judge.combine)
            checks += 1
            if value <= sw.tol:
                break
        flip()
    return done, None if value is None else reported(value)


def reported(value: Any) -> float:
    """The residual as a float, the same bits whichever grouping combined it: a max is
    unique up to the sign of a zero and a NaN's payload (np.maximum(0.0, -0.0) is -0.0,
    blocks group partials by tile and plain sweeps by the chunk tree), so +0.0 and the
    standard NaN."""
    v = float(value)
    return math.nan if v != v else v + 0.0


_reported = reported  # its earlier name (tests/test_iterate_fused.py imports it)


def _fused_partials(task: WorkOrder, func: Any, views: list, ca: int, cb: int, stats: Stats,
                    sliced: dict, parity: int) -> list:
    """Each chunk's partial of a fused kernel. The first time per parity goes through
    chunk_partial (compiles count as such); later checks reuse its slices (a few us per
    chunk saved: a checked sweep calls the kernel once per chunk, for the fixed tree)."""
    chunks = task.chunks
    if parity not in sliced:
        pieces = []
        for c in range(ca, cb):
            got = list(map_pieces(task, views, *chunks[c]))
            pieces.append([args for _, _, args, _ in got]
                          if got and all(reusable for *_, reusable in got) else None)
        sliced[parity] = pieces
        return [chunk_partial(task, func, views, *chunks[c], stats) for c in range(ca, cb)]
    combine, kernel, out = task.kernel.combine, task.kernel, []
    t0 = time.perf_counter()
    for c, pieces in zip(range(ca, cb), sliced[parity]):
        if pieces is None:  # padded edge rows or no row to write: built afresh
            stats.compute_s += time.perf_counter() - t0
            out.append(chunk_partial(task, func, views, *chunks[c], stats))
            t0 = time.perf_counter()
            continue
        stats.rows = chunks[c]
        value = func(*pieces[0])
        for args in pieces[1:]:
            value = combine(value, func(*args))
        out.append(partial_number(kernel, value))
    stats.compute_s += time.perf_counter() - t0
    return out


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
    idempotent combine allows. ``invoke(func, args, stats)`` makes each kernel call (_evaluate.call:
    compile time counted as such), with ``stats.rows`` the global rows it writes, as
    errors name them."""
    n, d, boundary = task.n_rows, task.depth, task.boundary
    none = boundary in UNPADDED
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
        r0, r1 = max(base, 0), min(top, n)
        # each level's buffer starts as the rows plain sweeps overwrite with it (an odd
        # level's in dst, an even one's in src; blocks are odd), so what a kernel leaves
        # unwritten (edge rows and columns) is that array's own, as in plain sweeps
        for a, e in zip(scratch, (src, dst)):
            a[r0 - base:r1 - base] = e[r0:r1]
        prev, pbase = src, 0
        if not none and (base < 0 or top > n):  # sweep s with its padded rows, as plain
            _pad(scratch[0], base, r0, r1, n, d, boundary)  # (its rows: src's, above)
            prev, pbase = readable[0], base
        for j in range(1, k + 1):
            r0, r1 = max(t0 - (k - j) * d, vlo), min(t1 + (k - j) * d, vhi)
            if j == k:
                args[out_i] = dst[r0:r1]
            else:
                args[out_i] = scratch[j % 2][r0 - base:r1 - base]
            args[in_i] = prev[r0 - d - pbase:r1 + d - pbase]
            for i, v in others:
                spec = task.specs[i]
                args[i] = (part_rows(v, spec, r0, r1, d)
                           if spec.halo or r0 - d >= 0 and r1 + d <= n
                           else read_only(padded_rows(v, r0, r1, d, boundary)))
            stats.rows = (r0, r1)
            p = invoke(func, (*args, position_value(position, r0, r1, n, d, boundary))
                       if position else tuple(args), stats)
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


RUNNERS["iterate"] = run_iterate
