"""The local backend's iterate, after its checks and write claims (LocalBackend.iterate):
hold the fixed edge rows, hand the residual slots out, send one task per worker (or one
inline task for every chunk: the same rows, the same arithmetic) and wait for the sweeps."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..shared import KeptBlock
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


class Scratch(KeptBlock):
    """iterate's residual slots (two rows of float64 partials), one block per backend,
    kept between calls and grown when too small (shared.KeptBlock says why)."""

    def slots(self, width: int) -> Any:
        """Two zeroed rows of ``width``: what the Sweeps carry (a handle for workers)."""
        need = 2 * width  # grown to at least 256: room for the next few calls' grids
        rows = self.grown(need, np.float64, 256)[:need].reshape(2, width)
        if self.in_process:
            rows[:] = 0.0
            return rows
        np.asarray(rows)[:] = 0.0
        return rows.handle()
