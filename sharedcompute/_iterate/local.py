"""The local backend's iterate, after its checks and write claims (LocalBackend.iterate):
hold the fixed edge rows, hand the residual slots out, send one task per worker (or one
inline task for every chunk: the same rows, the same arithmetic) and wait for the sweeps."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..shared import SharedArray
from .plan import Iteration, fixed_edge_rows


def run(ex: Any, it: Iteration, scratch: "Scratch", timeout: Any,
        progress: Any) -> tuple[int, float | None]:
    """Run a planned iterate on executor ``ex``; returns (sweeps run, last residual or
    None). The caller holds the write claims of both swapped arrays."""
    plan = it.plan
    out_i, in_i = it.swap
    o, u = np.asarray(plan.arrays[out_i]), np.asarray(plan.arrays[in_i])
    for s, e in fixed_edge_rows(plan):  # never written: held fixed in both arrays
        o[s:e] = u[s:e]
    del o, u
    n_chunks = len(plan.chunks)
    ranges = ex.sweep_ranges(n_chunks)  # each worker's chunks (inline: one task, all)
    slots = scratch.slots(it.slot_width(len(ranges))) if it.checks else None
    if not it.steps:
        return 0, None
    tasks = [plan.task("iterate", r, sweeps=it.sweeps(slots, ranges)) for r in ranges]
    return ex.run(tasks, what=plan.kernel.name, timeout=timeout, progress=progress,
                  total=n_chunks * it.steps)[0]


class Scratch:
    """iterate's residual slots (two rows of float64 partials), one block per backend,
    kept between calls and grown when too small. Freeing a block per call would make every
    pool of this process drop its cached calls at its next call (a released block's name
    goes to the workers): an iterate frees nothing, the backend's close frees this."""

    def __init__(self, in_process: bool):
        self.in_process = in_process
        self.array: Any = None  # flat float64: a SharedArray, or NumPy inline

    def slots(self, width: int) -> Any:
        """Two zeroed rows of ``width``: what the Sweeps carry (a handle for workers)."""
        need = 2 * width
        if self.array is None or self.array.shape[0] < need:
            self.free()
            size = max(need, 256)  # room for the next few calls' grids
            self.array = np.zeros(size) if self.in_process else SharedArray.zeros(size)
        rows = self.array[:need].reshape(2, width)
        if self.in_process:
            rows[:] = 0.0
            return rows
        np.asarray(rows)[:] = 0.0
        return rows.handle()

    @property
    def name(self) -> str | None:
        """The block's name while one is kept (a pool's own, as its workers are)."""
        return self.array.name if isinstance(self.array, SharedArray) else None

    def free(self) -> None:
        """Free the block (at close, or before growing it)."""
        array, self.array = self.array, None
        if isinstance(array, SharedArray):
            array.free()
