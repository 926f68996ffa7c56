"""Wavefront stages: an in-place sweep (Gauss-Seidel/SOR, PRK p2p) run by all workers at
once, bitwise the serial sweep: ``sc.stage(kernel, u, ..., order="wavefront")`` in a step
program (issue #26 item 7).

The kernel is the SERIAL sweep, written for a halo-padded 2-D block; called on the whole
array it is the reference (``sor.py_func(u, 1.5)`` in Python, or numba's
``sor.compiled(False)[0](u, 1.5)``; not ``sor(u, 1.5)``, a direct call, which runs it as
a map over row chunks)::

    @sc.kernel(writes=("u",), depth=1)
    def sor(u, omega):
        for i in range(1, u.shape[0] - 1):
            for j in range(1, u.shape[1] - 1):
                u[i, j] = (1 - omega) * u[i, j] + omega * 0.25 * (
                    u[i - 1, j] + u[i, j - 1] + u[i, j + 1] + u[i + 1, j])

    pool.iterate(sc.program(sc.stage(sor, u, 1.5, order="wavefront")), steps=100)

Each step is one sweep. The elements the sweep writes are those ``depth`` (d) or more
from every edge (the edges are the fixed boundary: ``boundary="none"``). Worker w owns
rows [s, e), its even share of the writable rows (not the map's chunks, which leave a
small array to one worker: a pipeline wants every worker busy), and splits the writable
columns into ``blocks`` column blocks (by default about 8 columns wide: default_blocks
says why); for each block b in order it calls the kernel on
``u[s-d:e+d, c0-d:c1+d]``: its rows x that block, with a d-wide halo all round, so the
kernel writes exactly the elements the worker owns there, in serial (row-major) order.
Every other 2-D argument of the written array's shape is cut the same way (read-only);
``sc.whole`` arguments and values are passed as they are.

Worker w > 0 starts block b only once worker w - 1 has finished blocks 0..b+1 of this
sweep (the LAG of 2 blocks; the last blocks wait for all of them); a barrier ends each
sweep. Progress is one counter per worker in a shared scratch block (blocks finished
since the call began: monotonic, never reset between sweeps), written after the block's
kernel returns, behind a memory fence (doorbell.fence), and polled by the next worker.

Why this is the serial sweep. In row-major order element (i, j) reads NEW values at
(i', j') before it (rows above, and left in its row) and OLD values after it. Column
blocking keeps that for reads (di, dj), |di|, |dj| <= d, that are NEW to the upper left
(di < 0, dj <= 0; di = 0, dj < 0) or OLD to the lower right (di > 0, dj >= 0;
di = 0, dj > 0): within a worker, block b - 1's rows are all done (new, on the left) and
block b + 1's untouched (old, on the right). Across workers: w reads w - 1's last rows at
columns up to j (block b or before), done since w - 1 finished b; w - 1 reads w's first
rows at columns >= j' of its block c >= b + 2 (and their right halo), which w, still at
block <= c - 2, has not written. Blocks are at least d wide, so a halo reaches one block
over and the argument holds for any depth (and, progress being monotonic, for workers
with fewer than d rows, reading rows two workers away). A LAG of 1 would already do for
these reads; the LAG of 2 also makes the 9-point corner reads (upper right, lower left)
race-free: the result is then the same on every run for any depth-d stencil, though it
is the serial sweep's only for the patterns above (5-point and 9-point-without-corners
Gauss-Seidel/SOR, PRK p2p ``a[i,j] = a[i-1,j] + a[i,j-1] - a[i-1,j-1]``). A NEW read to
the upper right (i-1, j+1) or an OLD one to the lower left (i+1, j-1) is not the serial
sweep's under column blocking (nor under any row split of the workers): check a kernel
against its own serial call on the whole array in a plain loop, as tests/test_wavefront.py
does. The cost of the pipeline: about LAG * (workers - 1) / blocks of a sweep at its
start and end. Bitwise means every value's bits but a NaN's: NaN where the serial sweep
has NaN, but its sign may differ, since numba compiles a strided column block apart from
a C-contiguous whole array and LLVM may commute an addition's operands, which picks the
NaN that goes on.

Refused, before any work (InputError, saying what to change): a kernel that writes more
than one array or returns a partial (combine=), a written array not 2-D, a depth below 1,
a padded boundary, ``position=`` and ``halo=``, a 2-D argument of another shape, ``sweeps=``
on the stage, a ``blocks=`` outside [1, writable columns / depth]. The Dask backend runs no
programs. The inline backend runs the one worker's blocks in order: the same bits.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..doorbell import fence
from ..errors import InputError

ORDERS = ("rows", "wavefront")
LAG = 2  # blocks of the previous worker finished before a worker starts one (see above)
STRIDE = 8  # float64 words per counter: each on its own cache line
SPIN_S = 2e-3  # poll with sched_yield this long before napping (a block takes ~10-100 us)


@dataclass(frozen=True)
class Wave:
    """A planned wavefront stage: the written array's shape, the halo, the blocks asked."""

    shape: tuple[int, int]
    depth: int
    blocks: int | None  # None: chosen by default_blocks for the call's workers
    parts: tuple[int, ...]  # the argument indices cut into pieces

    def rows(self, worker: int, workers: int, edges: bool = False) -> tuple[int, int]:
        """The rows [lo, hi) ``worker`` sweeps: its even share of the writable rows;
        ``edges``: with the unwritten edge rows for the first and last worker."""
        d, n = self.depth, max(0, self.shape[0] - 2 * self.depth)
        lo, hi = d + n * worker // workers, d + n * (worker + 1) // workers
        if edges:
            lo, hi = (0 if worker == 0 else lo), (self.shape[0] if worker == workers - 1 else hi)
        return lo, hi

    def edges(self, workers: int) -> tuple[int, ...]:
        """The column edges: block b is columns [edges[b], edges[b + 1])."""
        n, m = self.shape
        d = self.depth
        cols = max(0, m - 2 * d)
        blocks = self.blocks or default_blocks(max(0, n - 2 * d) // workers, cols, d, workers)
        return tuple(int(c) for c in np.linspace(d, d + cols, blocks + 1).round())


def check_order(order: Any, blocks: Any, sweeps: Any) -> None:
    """sc.stage's ``order=`` and ``blocks=`` (blocks is checked against the array later)."""
    if order not in ORDERS:
        raise InputError(f"order={order!r}: a stage runs in order 'rows' (each worker its "
                         "rows, the default) or 'wavefront' (an in-place sweep, pipelined)")
    if order == "rows" and blocks is not None:
        raise InputError("blocks= is the column blocks of order='wavefront'; drop it or "
                         "add order='wavefront'")
    if order == "wavefront" and sweeps is not None:
        raise InputError("order='wavefront' sweeps in place once per step: drop sweeps= "
                         "and give the sweeps as steps= of pool.iterate")
    if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer))
                               or blocks < 1):
        raise InputError(f"blocks={blocks!r} must be a positive integer (column blocks per "
                         "sweep), or None to choose")


def default_blocks(rows: int, cols: int, depth: int, workers: int) -> int:
    """Blocks about 8 columns wide, or wider where a worker has few ``rows`` (at least
    ~4096 elements per kernel call: a call costs a few microseconds); at least
    4 * LAG * workers blocks (the pipeline's fill, LAG * (workers - 1) / blocks of a
    sweep, stays small), at most one per ``depth`` columns.

    Narrow blocks are faster even on one worker: the serial sweep is a chain of
    dependent additions along each row (latency-bound), and with 8-column blocks the
    next row's chain overlaps the last one's in the core (0.05 s against 0.12 s for 30
    sweeps of 1000 x 1000 on one worker here; 32 blocks: 0.11 s)."""
    width = max(8, -(-4096 // max(rows, 1)))
    return max(1, min(cols // max(depth, 1), max(cols // width, 4 * LAG * workers)))


def plan_wave(plan: Any, blocks: int | None, label: str) -> Wave:
    """Check a wavefront stage's planned map and cut its columns into blocks."""
    k = plan.kernel
    fix = f"{label}: order='wavefront' "
    written = [j for j, spec in enumerate(plan.specs) if spec.writable]
    if len(written) != 1 or k.combine is not None:
        raise InputError(fix + f"sweeps ONE array in place; {k.name} writes "
                         f"{[k.params[j] for j in written]}{' and returns a partial' if k.combine else ''}"
                         ": write one array (writes=...) and no combine=")
    a = plan.arrays[written[0]]
    if getattr(a, "ndim", 0) != 2:
        raise InputError(fix + f"sweeps a 2-D array; {k.params[written[0]]} has shape "
                         f"{getattr(a, 'shape', None)}")
    d = plan.depth
    if d < 1:
        raise InputError(fix + f"needs the halo the sweep reads: declare @sc.kernel(depth=1) "
                         f"(or depth=d) on {k.name}, or pass depth= to sc.stage")
    if plan.boundary != "none":
        raise InputError(fix + f"keeps the {d} edge rows and columns fixed (boundary='none'); "
                         f"got boundary={plan.boundary!r}")
    if k.position or any(spec.halo for spec in plan.specs):
        raise InputError(fix + "takes no position= or halo= kernels: each call gets its rows "
                         "x one column block, with the halo all round")
    parts = tuple(j for j, spec in enumerate(plan.specs) if spec.kind == "part")
    for j in parts:
        if plan.arrays[j].shape != a.shape:
            raise InputError(fix + f"cuts every split argument as the swept array: "
                             f"{k.params[j]} has shape {plan.arrays[j].shape}, not {a.shape}; "
                             "pass it as sc.whole(x) to give every call all of it")
    n, m = a.shape
    cols = max(0, m - 2 * d)
    most = max(1, cols // d)
    if blocks is not None and blocks > most:
        raise InputError(fix + f"blocks={blocks} is more column blocks than {cols} writable "
                         f"columns allow (at most {most}: each block at least depth={d} wide)")
    return Wave((n, m), d, blocks, parts)


def flag_words(workers: int) -> int:
    """Scratch words for the counters: an abort word, then one line per worker."""
    return STRIDE * (workers + 1)


class Progress:
    """A worker's side of the wavefront counters, for one program call."""

    def __init__(self, flags: np.ndarray, worker: int, workers: int):
        self.flags, self.worker, self.workers = flags, worker, workers
        self.base = 0  # blocks every worker finished in earlier wavefront sweeps
        self.edges: dict = {}  # per Wave: its column edges for this call's workers

    def sweep(self, order: Any, args: list, wave: Wave, stats: Any,
              call: Callable[[Any, tuple, Any], Any]) -> None:
        """This worker's rows of one sweep, block by block, each after the previous
        worker's LAG blocks ahead. A failure marks the abort word first, so that no worker
        waits for this one's progress."""
        try:
            self._sweep(order, args, wave, stats, call)
        except BaseException:
            self.flags[0] = 1.0
            raise
        self.base += len(self.edges[wave]) - 1

    def _sweep(self, order: Any, args: list, wave: Wave, stats: Any,
               call: Callable[[Any, tuple, Any], Any]) -> None:
        func = order.kernel.compiled(order.boundscheck)[0]
        cols = self.edges.get(wave) or self.edges.setdefault(wave, wave.edges(self.workers))
        d, nb = wave.depth, len(cols) - 1
        lo, hi = wave.rows(self.worker, self.workers)
        flags, base = self.flags, self.base
        mine, prev = STRIDE * (self.worker + 1), STRIDE * self.worker
        bands = {j: args[j][lo - d:hi + d] for j in wave.parts} if hi > lo else {}
        piece = list(args)
        for b in range(nb):
            if self.worker:
                _wait(flags, prev, base + min(b + LAG, nb))
            if bands:
                c0, c1 = cols[b] - d, cols[b + 1] + d
                for j, band in bands.items():
                    piece[j] = band[:, c0:c1]
                stats.rows = (lo, hi)
                call(func, tuple(piece), stats)
            fence()  # the block's writes before its count
            flags[mine] = base + b + 1


def _wait(flags: np.ndarray, at: int, target: int) -> None:
    """Until ``flags[at] >= target``: sched_yield for SPIN_S, then naps of at most 1 ms.
    The abort word (another worker failed) raises BrokenBarrierError: the executor reports
    the first failure, not this echo."""
    if flags[at] < target:
        t0, nap = time.perf_counter(), 0.0
        while flags[at] < target:
            if flags[0]:
                raise threading.BrokenBarrierError
            if nap or time.perf_counter() - t0 > SPIN_S:
                nap = min(max(nap * 2, 20e-6), 1e-3)
                time.sleep(nap)
            else:
                os.sched_yield()
    fence()  # the previous worker's writes are read after its count
