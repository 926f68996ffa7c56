"""A worker's step program (program.py plans it): for each step, each stage's rows of this
worker, a barrier after each stage (and after each sweep of an inner iterate), then the
step's swaps; no parent round trip. Registered in _evaluate.RUNNERS as "program".

Each array the program names is attached once; a stage's arguments are that stage's views
of the arrays its names are bound to now (writable where the stage writes them, read-only
elsewhere), the step index where the stage passed ``sc.STEP``, and its plain values. A
stage runs through ``_evaluate.map_rows`` over this worker's chunks of the stage's own
grid, as the ``pool.map`` it stands for, so halos, boundaries and ``position=`` are
that map's and the result is bitwise the Python loop's. A halo row another worker wrote
is read after the barrier: in shared memory an exchange is just that.

A checked step (a fused last stage, ``check_every``) runs that stage chunk by chunk for
its partials, puts this worker's subtrees of the fixed chunk tree into the shared slots
before the stage's barrier, and every worker then combines all of them alike (as
sweep.py's plain check sweeps do): all stop at the same step, with the same residual.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .._evaluate import (RUNNERS, RowCalls, Stats, call, explain, kernel_fn, map_rows, read_only,
                         resolve)
from ..partition import tree_finish, tree_nodes, tree_reduce
from ..plan import ArgSpec, WorkOrder
from ..shared import view_from_handle
from .snapshot import Copier
from .sweep import chunk_partial, reported
from .wavefront import Progress


def run_program(task: WorkOrder, views: list, stats: Stats, barrier: Any) -> tuple:
    """Every step of the program in ``task.sweeps`` (a program.StepWork); returns (steps
    run, last residual checked or None)."""
    try:
        return _run(task.sweeps, stats, barrier)
    except BaseException:
        barrier.abort()  # the other workers leave their barrier wait instead of hanging
        raise


def _run(w: Any, stats: Stats, barrier: Any) -> tuple:
    phys = resolve([ArgSpec("part", h, wr) for h, wr in zip(w.handles, w.writable)])
    ro = [read_only(v) for v in phys]
    bind = list(range(len(phys)))  # name -> the array holding its role now
    base = []  # per stage: its arguments, names left to fill per step
    for order, names in zip(w.stages, w.names):
        base.append([None if n is not None else resolve([spec])[0]
                     for spec, n in zip(order.specs, names)])
    # the rows each stage owns here (a snapshot's owner copies them): a wavefront stage's
    # are its even share (wavefront.Wave.rows, the fixed edge rows with the end workers),
    # not its chunks of the map grid
    rows = [_rows(order) if wv is None else wv.rows(w.worker, w.workers, edges=True)
            for order, wv in zip(w.stages, w.waves)]
    snaps = Copier(w, phys, rows) if w.snaps else None  # sc.snapshot: snapshot.py
    sliced: dict = {}  # (stage, the arrays its names hold) -> its RowCalls

    def views(k: int, t: int) -> list:
        order, out = w.stages[k], list(base[k])
        for j, n in enumerate(w.names[k]):
            if n is not None:
                out[j] = phys[bind[n]] if order.specs[j].writable else ro[bind[n]]
        for j in w.step_args[k]:
            out[j] = t
        if snaps:
            snaps.put(k, t, out)
        return out

    def sweep(k: int, t: int) -> None:
        order = w.stages[k]
        try:
            if w.waves[k] is not None:  # a pipelined in-place sweep (wavefront.py)
                wave.sweep(order, views(k, t), w.waves[k], stats, call)
            elif snaps:  # its snapshot arguments change with the step
                map_rows(order, views(k, t), *rows[k], stats)
            else:  # sliced once per binding of its names (swaps alternate two or so)
                key = (k, *(bind[n] for n in w.names[k] if n is not None))
                calls = sliced.get(key)
                if calls is None:
                    calls = sliced[key] = RowCalls(order, views(k, t), *rows[k],
                                                   w.step_args[k])
                calls.run(stats, t)
        except Exception as exc:
            raise _located(exc, order, stats, f"{w.labels[k]} of step {t}") from None
        if snaps:
            snaps.copy(k, t, bind)  # rows the next stage's snapshots read, before the barrier
        barrier.wait()
        stats.advance(order.chunk_range[1] - order.chunk_range[0])

    def checked(k: int, t: int, row: np.ndarray) -> Any:
        """The last stage with its partials; the residual of the whole grid."""
        order = w.stages[k]
        ca, cb = order.chunk_range
        chunks, func, combine = order.chunks, kernel_fn(order), order.kernel.combine
        args = views(k, t)
        try:
            partials = [chunk_partial(order, func, args, *chunks[c], stats) for c in range(ca, cb)]
        except Exception as exc:
            raise _located(exc, order, stats, f"{w.labels[k]} of step {t}") from None
        for nd in tree_nodes(0, len(chunks), ca, cb):
            row[nd[0]] = tree_reduce(nd[0], nd[1], lambda c: partials[c - ca], combine)
        if snaps:
            snaps.copy(k, t, bind)
        barrier.wait()
        stats.advance(cb - ca)
        every = [nd for r in w.ranges for nd in tree_nodes(0, len(chunks), *r)]
        return tree_finish(len(chunks), {nd: row[nd[0]] for nd in every}, combine)

    slots = wave = None
    if w.check_every or w.flags is not None:
        slots = w.slots if isinstance(w.slots, np.ndarray) else view_from_handle(w.slots)
    if w.flags is not None:
        wave = Progress(slots[0, w.flags:], w.worker, w.workers)
    value, checks, last = None, 0, len(w.sweeps) - 1
    for t in range(w.steps):
        checking = w.check_every and (t + 1) % w.check_every == 0
        for k, sweeps in enumerate(w.sweeps):
            if checking and k == last:  # two slot rows in turn: none overwritten while read
                value = checked(k, t, slots[checks % 2])
                checks += 1
                continue
            if sweeps is None:
                sweep(k, t)
                continue
            a, b = (w.names[k][i] for i in w.pairs[k])
            lo, hi = rows[k]
            for s, e in w.fixed[k]:  # as pool.iterate: u's edge rows held fixed in out
                s, e = max(s, lo), min(e, hi)  # (this worker's own rows)
                if e > s:
                    phys[bind[a]][s:e] = phys[bind[b]][s:e]
            for _ in range(sweeps):
                sweep(k, t)
                bind[a], bind[b] = bind[b], bind[a]
        for a, b in w.swap:
            bind[a], bind[b] = bind[b], bind[a]
        if checking and value <= w.tol:
            return t + 1, reported(value)
    return w.steps, None if value is None else reported(value)


def _rows(order: WorkOrder) -> tuple[int, int]:
    """The rows [lo, hi) of this worker's chunks of a stage's grid."""
    ca, cb = order.chunk_range
    chunks = order.chunks
    return (chunks[ca][0], chunks[cb - 1][1]) if cb > ca else (0, 0)


def _located(exc: Exception, order: WorkOrder, stats: Stats, where: str) -> BaseException:
    """The stage's error, explained for its own kernel, naming the stage and step
    (errors.remote_error_info adds ``sc_where`` to the message)."""
    better = explain(exc, order, stats.rows)
    if not isinstance(better, threading.BrokenBarrierError):
        try:
            better.sc_where = where  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - an exception type with __slots__
            pass
    return better


RUNNERS["program"] = run_program
