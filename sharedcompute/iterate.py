"""Iterated stencil sweeps: ``pool.iterate`` and its in-process twin, with the same arithmetic."""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .execute import Plan, map_call
from .kernel import Kernel
from .partition import combine_all, split_even, valid_rows


def _swap_indices(plan: Plan) -> tuple[int, int]:
    kernel = plan.kernel
    if len(kernel.writes) != 1:
        raise InputError(f"iterate needs a kernel that writes exactly one array; "
                         f"{kernel.name} writes {len(kernel.writes)}")
    out_i = kernel.writes[0]
    reads = [i for i, s in enumerate(plan.specs) if s.kind == "part" and not s.writable]
    if not reads:
        raise InputError(f"iterate needs a kernel that reads a partitioned array; "
                         f"{kernel.name} reads none")
    return out_i, reads[0]


def check_iterate(plan: Plan, steps: int, residual: Kernel | None,
                  check_every: int) -> tuple[int, int]:
    """Validate an iterate call; return the indices of the two arrays it swaps."""
    kernel = plan.kernel
    if kernel.kind != "map":
        raise InputError(f"iterate runs map/stencil kernels; {kernel.name} is a {kernel.kind}")
    if int(steps) != steps or steps < 0:
        raise InputError(f"steps={steps!r} must be a non-negative integer")
    if residual is not None and (not isinstance(residual, Kernel) or residual.kind != "reduce"):
        raise InputError("residual= must be a reduction kernel taking (new, old) and returning "
                         "a number, e.g. sharedcompute.kernels.reductions.max_abs_diff")
    if check_every < 1:
        raise InputError(f"check_every={check_every!r} must be >= 1")
    out_i, in_i = _swap_indices(plan)
    out_arr, in_arr = plan.arrays[out_i], plan.arrays[in_i]
    if out_arr.shape != in_arr.shape or out_arr.dtype != in_arr.dtype:
        raise InputError(f"iterate swaps {kernel.params[out_i]!r} and {kernel.params[in_i]!r}, so "
                         f"they need the same shape and dtype; got {out_arr.shape} {out_arr.dtype} "
                         f"and {in_arr.shape} {in_arr.dtype}")
    return out_i, in_i


def iterate_call(plan: Plan, executor: Any, *, steps: int, residual: Kernel | None, tol: float,
                 check_every: int, pool: Any, timeout: float | None = None,
                 progress: Any = None) -> Any:
    kernel = plan.kernel
    out_i, in_i = check_iterate(plan, steps, residual, check_every)
    out_arr, in_arr = plan.arrays[out_i], plan.arrays[in_i]
    d, n = kernel.depth, plan.n_rows
    if d and plan.boundary == "none":
        lo, hi = valid_rows(n, d, "none")
        # n <= 2*depth: no row has a full halo, so every row is an edge row
        keep = [(0, lo), (hi, n)] if hi > lo else [(0, n)]
        o, u = np.asarray(out_arr), np.asarray(in_arr)
        for s, e in keep:  # edge rows are never written: hold them fixed in both arrays
            o[s:e] = u[s:e]
        del o, u
    if steps == 0:
        return in_arr
    if executor.in_process:
        done = _iterate_here(plan, executor, steps, residual, tol, check_every, out_i, in_i,
                             timeout, progress)
    else:
        done = _iterate_in_workers(plan, executor, steps, residual, tol, check_every, out_i,
                                   in_i, pool, timeout, progress)
    return out_arr if done % 2 == 1 else in_arr


def _residual_value(residual: Kernel, new: np.ndarray, old: np.ndarray, chunks: list) -> float:
    from .execute import Stats, call
    stats = Stats()
    partial = [np.float64(call(residual.dispatcher, (new[s:e], old[s:e]), stats))
               for s, e in chunks]
    return combine_all(partial, residual.combine)


def _iterate_here(plan, executor, steps, residual, tol, check_every, out_i, in_i, timeout,
                  progress) -> int:
    specs = plan.specs
    done = 0
    for step in range(steps):
        map_call(plan, executor, timeout=timeout, progress=None)
        done = step + 1
        if residual is not None and done % check_every == 0:
            new = np.asarray(specs[out_i].value)
            old = np.asarray(specs[in_i].value)
            if _residual_value(residual, new, old, plan.chunks) <= tol:
                break
        specs[out_i], specs[in_i] = specs[in_i], specs[out_i]
        specs[out_i].writable, specs[in_i].writable = True, False
    if done % 2 == 0:  # put the specs back in call order
        specs[out_i], specs[in_i] = specs[in_i], specs[out_i]
        specs[out_i].writable, specs[in_i].writable = True, False
    if progress:
        from .progress import Progress
        bar = Progress(progress, len(plan.chunks) * done, plan.kernel.name)
        bar.finish()
    return done


def _iterate_in_workers(plan, executor, steps, residual, tol, check_every, out_i, in_i, pool,
                        timeout, progress) -> int:
    n_chunks = len(plan.chunks)
    if executor.barrier is not None:  # the semaphore fallback: a failed earlier iterate left
        executor.barrier.reset()      # it broken; the workers are idle now
    slots = pool.zeros(n_chunks, np.float64) if residual is not None else None
    try:
        tasks = [plan.task("iterate", r, swap=(out_i, in_i), steps=int(steps), residual=residual,
                           slots=slots.handle() if slots is not None else None,
                           check_every=check_every, tol=tol)
                 for r in split_even(n_chunks, executor.n_workers)]
        results = executor.run(tasks, what=plan.kernel.name, timeout=timeout,
                               progress=(progress, n_chunks * steps))
    finally:
        if slots is not None:
            slots.free()
    return results[0]

