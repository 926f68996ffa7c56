"""LocalBackend: this machine's calls as tasks on an executor (processes or inline), with the
cache that lets a repeated call skip planning and start through the doorbell.

Policy over mechanics: it plans a call (plan.py), splits the chunk grid over the workers,
hands the tasks to its executor (_executors.py), combines what comes back, and remembers
calls the workers may keep. ``DaskBackend`` (dask_backend.py) has the same methods; the Pool
calls whichever it holds without asking which.
"""
from __future__ import annotations

import contextlib
import logging
import operator
import os
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import doorbell, segments
from ._cache import REPLAN, CallCache, Entry, call_key, iterate_key, values_of
from .futures import imap
from ._inline import InlineExecutor
from .progress import Insights
from ._system import usable_cores
from ._iterate import plan as iterate_plan, program as iterate_program
from ._iterate import snapshot as snapshots
from .errors import BlockBusyError, InputError
from .kernel import Kernel, check_schedule
from .partition import in_chunk_order, map_rows, split_even
from .plan import (Plan, Whole, boundscheck_default, check_kind, finish_reduce, make_plan,
                   scan_offsets)
from .shared import SharedArray
from .futures import submitter
from ._preload import warmup_items

log = logging.getLogger("sharedcompute")


_IDENTITY = operator.attrgetter("identity")  # a new tuple when reshaped

# -- write claims: two calls (of any pools in this process) never write one block at once ----
_busy_writes: dict[str, object] = {}  # block name -> the claim that holds it


def _fresh_claims_after_fork() -> None:  # the parent's running calls are not this child's
    _busy_writes.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_claims_after_fork)


def claim_writes(names: list[str], kernel: Any) -> None:
    """Claim the blocks a call writes; BlockBusyError if another call holds one. A claim is
    one ``dict.setdefault`` per block, atomic under the GIL and in free-threaded builds
    (dicts lock themselves there), so no lock is needed."""
    claim = object()
    for k, name in enumerate(names):
        if _busy_writes.setdefault(name, claim) is not claim:
            for held in names[:k]:
                if _busy_writes.get(held) is claim:
                    del _busy_writes[held]
            raise BlockBusyError(f"kernel {getattr(kernel, 'name', kernel)} would write shared "
                                 f"array {name!r}, which another call is writing right now; "
                                 "wait for it to finish (writes are never interleaved)")


def release_writes(names: list[str]) -> None:
    for name in names:
        _busy_writes.pop(name, None)


def hold(blocks: list, step: int) -> None:
    """Count a running call on each block (+1 before, -1 after): free() refuses meanwhile."""
    for b in blocks:
        if b is not None:
            b.calls += step


@contextlib.contextmanager
def claimed(written: list, kernel: Any, read: list, names: Any = None) -> Iterator[None]:
    """Around a call's run: claim the ``written`` blocks (or ``names``) and hold every
    block (free() refuses meanwhile)."""
    if names is None:
        names = [b.name for b in written if b is not None]
    claim_writes(names, kernel)
    held = written + read
    hold(held, 1)
    try:
        yield
    finally:
        release_writes(names)
        hold(held, -1)


class LocalBackend:
    """Calls on this machine's workers (or inline); see the module docstring."""

    array_types = (SharedArray,)

    def __init__(self, executor: Any):
        self.executor = executor
        self.restarts = 0
        self.cache = CallCache()  # calls whose tasks the workers keep (_cache.py)
        self.scratch = iterate_plan.Scratch(executor.in_process)  # iterate's residual slots
        self.snapshots = snapshots.Store(executor.in_process)  # programs' sc.snapshot slots

    n_workers = property(lambda self: self.executor.n_workers)
    start_method = property(lambda self: self.executor.start_method)
    pids = property(lambda self: self.executor.pids)

    def start(self) -> None:
        self.executor.start()

    # -- arrays ------------------------------------------------------------------------------
    def empty(self, shape: Any, dtype: Any) -> SharedArray:
        return SharedArray.empty(shape, dtype)

    def zeros(self, shape: Any, dtype: Any) -> SharedArray:
        return SharedArray.zeros(shape, dtype)

    def array(self, x: Any) -> SharedArray:
        return SharedArray.from_array(x)

    def open(self, path: Any, mode: str, shape: Any, dtype: Any) -> SharedArray:
        return SharedArray.open(path, mode, shape, dtype)

    def load(self, path: Any) -> SharedArray:
        return SharedArray.load(path)

    # -- calls -------------------------------------------------------------------------------
    def map(self, kernel: Kernel, args: tuple, rows: Any = None, boundary: Any = None,
            timeout: Any = None, progress: Any = False, chunk_rows: Any = None,
            boundscheck: bool = False, depth: Any = None, schedule: Any = None,
            partial: bool = False) -> Any:
        """Run a map (or scan) kernel over the rows of its shared arrays; returns the
        written array(s), and with ``partial`` (a fused kernel) (written, combined partial).
        The arguments are Pool.map's (positional: the hot path)."""
        return self._call("partial" if partial else "map", kernel, args, rows, boundary,
                          timeout, progress, chunk_rows, boundscheck, depth, schedule)

    def reduce(self, kernel: Kernel, args: tuple, rows: Any = None, timeout: Any = None,
               progress: Any = False, chunk_rows: Any = None, boundscheck: bool = False,
               schedule: Any = None) -> Any:
        """Run a reduction; partials combined along the fixed tree."""
        return self._call("reduce", kernel, args, rows, None, timeout, progress, chunk_rows,
                          boundscheck, None, schedule)

    def iterate(self, kernel: Kernel, args: tuple, *, steps: int, residual: Kernel | None,
                tol: float | None, check_every: int, boundary: Any = None, timeout: Any = None,
                progress: Any = False, boundscheck: bool = False, depth: Any = None,
                info: bool = False, block_sweeps: Any = None, chunk_rows: Any = None) -> Any:
        """``steps`` sweeps inside the workers, a barrier between sweeps (or between blocks
        of sweeps): planned and run by _iterate/plan.py. Returns the array holding the last
        sweep, or with ``info`` an IterateResult. ``kernel`` may be a step program
        (sc.program: _iterate/program.py): returns its Roles. The workers keep the call
        (_cache.py): the same call again is rung, as a repeated map is."""
        ex, program = self.executor, isinstance(kernel, iterate_program.Program)
        found = iterate_key(kernel, args, boundary, depth, chunk_rows, (
            steps, tol, check_every, boundscheck, residual, block_sweeps)) \
            if ex.rings and not progress else None  # a bar: planned and sent (_cache.py)
        out = REPLAN if found is None else self._iterate_again(found[0], kernel, args,
                                                               timeout, info)
        if out is not REPLAN:
            return out
        if program:
            n = iterate_program.check_call(steps, residual, boundary, depth, block_sweeps,
                                           chunk_rows)
            kernels = [st.kernel for st in kernel.stages]
        else:
            block_sweeps, tol = iterate_plan.check_options(kernel, residual, tol, block_sweeps)
            kernels = [k for k in (kernel, residual) if k is not None]
        self._check_sendable(*kernels)
        watches = [k.content_watch() for k in kernels]  # what a kept call is valid for
        self.ensure_workers()
        releases = segments.releases  # planning checks every block intact (plan.py)
        if program:
            pp = snapshots.plan(kernel, n, in_process=ex.in_process, boundscheck=boundscheck,
                                tol=tol, check_every=check_every)
            with claimed(pp.written_blocks, pp.what, pp.read_blocks):
                snapshots.begin(pp, self.snapshots)  # under the claims: before any worker
                done, value = self._sent(found, iterate_program, pp, tuple(pp.arrays), pp,
                                         timeout, progress, watches, releases)
            return pp.result(done, value, info)
        plan = make_plan(kernel, args, rows=None, boundary=boundary, in_process=ex.in_process,
                         chunk_rows_override=chunk_rows, boundscheck=boundscheck, depth=depth)
        it = iterate_plan.plan_iterate(plan, steps, residual, tol, check_every, block_sweeps,
                                       ex.n_workers)
        with claimed(plan.written_blocks, kernel, plan.read_blocks):
            done, value = self._sent(found, iterate_plan, it, args, plan, timeout, progress,
                                     watches, releases)
        return it.result(done, value, info)

    def _sent(self, found: Any, how: Any, planned: Any, arrays: tuple, plan: Any,
              timeout: Any, progress: Any, watches: list, releases: int) -> tuple:
        """Run a planned iterate (an Iteration; ``how``: _iterate/plan.py) or program (a
        ProgramPlan, also ``plan``; ``how``: _iterate/program.py): ``how.run``; ``plan``
        holds its blocks, ``arrays`` its shared arrays. With a key (``found``) the workers
        keep its tasks and the cache remembers it, with ``how.Repeat`` (Entry.of_run)."""
        cache, ex = self.cache, self.executor
        with cache.sending(found) as memo:
            got, tasks = how.run(ex, planned, self.scratch, timeout, progress, memo,
                                 cache.take_drop())
        if memo is not None and tasks:  # (no steps: nothing sent, nothing kept)
            again = how.Repeat(planned, len(tasks))
            slots = [self.scratch.block] if again.width else []  # grown: a released block
            cache.keep(Entry.of_run(found[0], memo, ex.generation, arrays, plan.written_blocks,
                                    plan.read_blocks + slots, tasks, watches, again),
                       arrays, releases)
        return got

    def _iterate_again(self, key: tuple, kernel: Any, args: tuple, timeout: Any,
                       info: bool) -> Any:
        """A kept iterate or program (_cache.py): check its blocks (none when quiet, as a
        repeated map) and ring it (its run: _iterate/plan.Again); REPLAN where none is kept
        (or its kernels changed). A call that fails is dropped: a lost task is never rung
        again."""
        ex, cache = self.executor, self.cache
        quiet = cache.quiet(ex)
        if not quiet:
            self.ensure_workers()
        entry = cache.lookup(key, ex.generation)  # every kernel current
        if entry is None:
            return REPLAN
        doorbell.wake_sleepers(ex)  # it is rung: its workers wake while it is checked
        again = entry.run
        arrays = again.arrays(kernel, args)
        held = entry.checked_blocks(arrays, quiet)
        try:
            with claimed(held, again.what, [], entry.written_names):
                got = again.ring(ex, entry, arrays, self.scratch, timeout)
        except BaseException:
            cache.discard(key)
            raise
        return again.result(arrays, *got, info)

    def _check_sendable(self, *kernels: Any) -> None:
        for k in kernels:
            self.executor.check_sendable(k)

    def _call(self, op: str, kernel: Kernel, args: tuple, rows: Any, boundary: Any,
              timeout: Any, progress: Any, chunk_rows: Any, boundscheck: bool, depth: Any,
              schedule: Any) -> Any:
        if not log.isEnabledFor(logging.DEBUG):
            return self._run_call(op, kernel, args, rows, boundary, timeout, progress,
                                  chunk_rows, boundscheck, depth, schedule)
        t0 = time.perf_counter()
        out = self._run_call(op, kernel, args, rows, boundary, timeout, progress, chunk_rows,
                             boundscheck, depth, schedule)
        n_rows = next((a.shape[0] for a in args if isinstance(a, SharedArray) and a.ndim),
                      rows)
        log.debug("%s %s: %s rows on %d %s workers, %.6f s", op, getattr(kernel, "name", kernel),
                  n_rows, self.n_workers, self.start_method, time.perf_counter() - t0)
        return out

    def _run_call(self, op: str, kernel: Kernel, args: tuple, rows: Any, boundary: Any,
                  timeout: Any, progress: Any, chunk_rows: Any, boundscheck: bool, depth: Any,
                  schedule: Any) -> Any:
        ex = self.executor
        dynamic = _dynamic(kernel, schedule, ex)
        key = vals = None
        if ex.rings and not progress:  # a bar: see "progress" in _cache.py
            found = call_key(op, kernel, args, rows, boundary, depth, chunk_rows, dynamic)
            if found is not None:
                key, vals = found
        cache = self.cache
        quiet = key is not None and cache.quiet(ex)
        if not quiet:
            self.ensure_workers()
        memo = cache.lookup(key, ex.generation) if key is not None else None  # kernel current
        if memo is not None:
            doorbell.wake_sleepers(ex)  # a repeat is rung: its workers wake while it is checked
            try:
                out = self._call_again(memo, kernel, args, timeout, vals, quiet)
            except BaseException as exc:
                # a worker lost the task (re-running a map is not safe: y += x twice), or
                # new values may have reached some workers only: never ring it again
                if getattr(exc, "lost_task", False) or vals != memo.vals:
                    cache.discard(key)
                raise
            if out is not REPLAN:
                return out
            cache.discard(key)
        watch = None  # a cached call's kernel is as it was checked (Entry.current): else
        ex.check_sendable(kernel)  # cheap once passed; follows a reload (inline: no-op)
        if key is not None and isinstance(kernel, Kernel):
            watch = kernel.content_watch()  # what the entry stored below is valid for
        check_kind(kernel, op)  # before planning: a reduction passed to map says so first
        releases = segments.releases  # planning checks every block intact (plan.py)
        if any(type(a) is snapshots.Snapshot for a in args):  # never cached (call_key)
            args = snapshots.take(args)  # the parent's copies, before any worker starts
        plan = make_plan(kernel, args, rows=rows, boundary=boundary, in_process=ex.in_process,
                         chunk_rows_override=chunk_rows, boundscheck=boundscheck, depth=depth)
        if chunk_rows is None:
            map_grid(plan, op, ex.n_workers, dynamic)
        with cache.sending(key) as memo_id, claimed(plan.written_blocks, kernel,
                                                    plan.read_blocks):
            out, tasks = self.execute(op, plan, timeout, progress, memo_id, dynamic)
        if memo_id is not None:
            cache.store(key, memo_id, ex.generation, args, plan, tasks, vals, releases, watch)
        return out

    def execute(self, op: str, plan: Plan, timeout: Any = None, progress: Any = False,
                memo: int | None = None, dynamic: bool = False) -> tuple[Any, list]:
        """Run a planned map (or scan) or reduce; returns (result, the tasks sent). The
        caller has checked ``op`` against the kernel's kind (_run_call before planning;
        run_inline picks ``op`` from it). ``dynamic``: idle workers take the next chunks
        (a map or reduce; the same chunks and combine tree, so the same result)."""
        kernel, ex = plan.kernel, self.executor
        n_chunks = len(plan.chunks)
        ranges = split_even(n_chunks, ex.n_workers)
        drop = self.cache.take_drop()  # every worker hears which cached tasks to drop
        if dynamic and kernel.kind != "scan":
            whole = plan.task(op, (0, n_chunks))
            results = ex.run_dynamic(whole, n_chunks, what=kernel.name, timeout=timeout,
                                     progress=progress, memo=memo, drop=drop)
            return _result(op, plan, n_chunks, results), [whole] * ex.n_workers
        if kernel.kind == "scan":
            offsets = scan_offsets(kernel, self.scan_totals(plan, timeout, drop))
            return plan.written(), self.scan_apply(plan, offsets, timeout, progress)
        tasks = [plan.task(op, r) for r in ranges]
        results = ex.run(tasks, what=kernel.name, timeout=timeout, progress=progress,
                         total=n_chunks, memo=memo, drop=drop)
        return _result(op, plan, n_chunks, results), tasks

    def scan_totals(self, plan: Plan, timeout: Any = None, drop: Any = ()) -> list:
        """A planned scan's first phase: every chunk's total, in chunk order (the node
        pools' nodes run it on their chunks, dask_nodes.py)."""
        ex = self.executor
        totals: list = []
        for part in ex.run([plan.task("scan_totals", r)
                            for r in split_even(len(plan.chunks), ex.n_workers)],
                           what=plan.kernel.name, timeout=timeout, progress=None, drop=drop):
            totals.extend(part)
        return totals

    def scan_apply(self, plan: Plan, offsets: list, timeout: Any = None,
                   progress: Any = False) -> list:
        """A planned scan's second phase: each chunk from its offset (``offsets[i]``: the
        combined totals of every chunk before chunk i, scan_offsets); the tasks sent."""
        ex, n_chunks = self.executor, len(plan.chunks)
        tasks = [plan.task("scan_apply", r, offsets=offsets[r[0]:r[1]])
                 for r in split_even(n_chunks, ex.n_workers)]
        ex.run(tasks, what=plan.kernel.name, timeout=timeout, progress=progress,
               total=n_chunks)
        return tasks

    def _call_again(self, memo: Entry, kernel: Kernel, args: tuple, timeout: Any,
                    vals: tuple = (), drained: bool = False) -> Any:
        """A call the workers have cached: check the arrays (with one read of the tamper
        watch for all; none when ``drained`` and checked since the last release, as a bound
        call), send changed values with the doorbell, ring it. _REPLAN: the new values do
        not fit in a line; plan the call afresh."""
        held = memo.checked_blocks(args, drained)
        if vals == memo.vals:  # the values the workers hold: ring() clears VALUES
            return self._ring(memo, kernel, args, held, timeout)
        if memo.check is not None:  # the kernel's own argument check, on the new values
            memo.check(*[a.array if type(a) is Whole else a for a in args])
        data = doorbell.pack_values([(i, args[i]) for i in memo.value_at])
        if not self.executor.lines.set_values(memo.active, data):
            return REPLAN
        out = self._ring(memo, kernel, args, held, timeout, clear_values=False)
        memo.vals = vals
        return out

    def _ring(self, memo: Entry, kernel: Kernel, args: tuple, held: list, timeout: Any,
              clear_values: bool = True, written: Any = None) -> Any:
        """Ring a cached call; ``written``: what a map returns, when the caller knows it."""
        claim_writes(memo.written_names, kernel)
        hold(held, 1)
        try:
            results = self.executor.ring(memo.memo_id, memo.active,
                                         {} if memo.reduces else None, what=kernel.name,
                                         timeout=timeout, tasks=memo.tasks,
                                         clear_values=clear_values,
                                         results=memo.reduces or memo.dynamic,
                                         shares=memo.n_chunks if memo.dynamic else 0)
        finally:
            release_writes(memo.written_names)
            hold(held, -1)
        if memo.dynamic:
            results = in_chunk_order(results, memo.n_chunks, kernel.name)
        if memo.reduces:
            value = finish_reduce(kernel, memo.n_chunks, results)
            return (memo.result(args), value) if memo.partial else value
        return written if written is not None else memo.result(args)

    # -- bound calls (bind.py) ---------------------------------------------------------------
    def check_bound(self, b: Any) -> None:
        """Plan a bound call once, to check it (nothing runs): wrong arguments fail at bind."""
        self._check_sendable(b.kernel)
        check_kind(b.kernel, b.op)  # partial=True with a kernel that is not fused
        _dynamic(b.kernel, b.schedule, self.executor)
        make_plan(b.kernel, snapshots.take(b.args), rows=b.rows, boundary=b.boundary,
                  in_process=self.executor.in_process, chunk_rows_override=b.chunk_rows,
                  boundscheck=b.boundscheck, depth=b.depth)

    def call_bound(self, b: Any) -> Any:
        """Ring a bound call's cached task when nothing changed since its last call (one
        poll, one attribute read per array); else the checking path of a repeated call, which plans
        again where needed (restarted workers, an evicted entry)."""
        memo = b.entry
        if (memo is not None and memo.live and memo.fresh()
                and memo.generation == self.executor.generation
                and memo.current()  # the kernel's content is the one the workers hold
                and self.cache.quiet(self.executor)
                and list(map(_IDENTITY, b.arrays)) == b.idents  # no a.shape = ... since
                and (not b.plain or values_of(b.args) == memo.vals)):
            try:
                return self._ring(memo, b.kernel, b.args, b.blocks, b.timeout, True, b.written)
            except BaseException as exc:
                if getattr(exc, "lost_task", False):
                    self.cache.discard(b.key)
                raise
        out = self._run_call(b.op, b.kernel, b.args, b.rows, b.boundary, b.timeout, False,
                             b.chunk_rows, b.boundscheck, b.depth, b.schedule)
        found = call_key(b.op, b.kernel, b.args, b.rows, b.boundary, b.depth, b.chunk_rows,
                         _dynamic(b.kernel, b.schedule, self.executor))
        b.key = None if found is None else found[0]  # reshaped arrays, or a new content
        b.entry = memo = self.cache.entries.get(b.key) if b.key is not None else None
        b.blocks = memo.blocks(b.args) if memo is not None else []
        b.arrays = [] if memo is None else memo.arrays(b.args)
        b.idents = [a.identity for a in b.arrays]  # compared by identity first: a new tuple
        b.written = None if memo is None or memo.reduces else out
        return out

    # -- tasks and warmup (Pool.submit, imap, warmup) -------------------------------------------
    def submit(self, fn: Any, args: tuple, kwargs: dict, timeout: Any,
               runner: Callable[[], Any]) -> Future:
        """A task: on the workers through the pool's TaskRunner (``runner()``), or at once
        inline (futures.submitter)."""
        return submitter(self.executor, fn, runner)(fn, args, kwargs, timeout)

    def imap(self, fn: Any, iterable: Iterable, ordered: bool, chunksize: Any, timeout: Any,
             progress: Any, runner: Callable[[], Any]) -> Iterator:
        """Tasks over ``iterable``, chunked (futures.py), yielded in order or as they finish."""
        return imap(submitter(self.executor, fn, runner), fn, iterable, ordered=ordered,
                    chunksize=chunksize, timeout=timeout, progress=progress,
                    what=getattr(fn, "__name__", "task"), n_workers=self.n_workers)

    def warmup(self, kernels: Any, dtypes: Any, boundscheck: bool, timeout: Any) -> dict:
        """Compile the kernels' signatures (_preload.warmup_items) in every worker, or in
        this process inline; returns {kernel name: [signature text]}."""
        items, names = warmup_items(kernels, dtypes, boundscheck, self.executor)
        self.ensure_workers()  # dead workers: start new ones first
        self.executor.warmup(items, timeout)
        return names

    # -- workers -----------------------------------------------------------------------------
    def ensure_workers(self) -> None:
        """Before work: start new workers if one died (a restart: the cache is cleared), else
        tell them which released blocks to forget."""
        ex = self.executor
        if not ex.alive:
            ex.stop(kill=True)
            log.info("restarting %d %s workers after a failure", ex.n_workers,
                     ex.start_method)
            self.restarts += 1
            self.cache.clear()
            ex.start()
        elif self.cache.forget:  # the entries holding released blocks are gone already
            ex.send_all(("forget",) + self.cache.take_forget())


    def block_released(self, name: str) -> None:
        self.cache.block_released(name)  # inline: nothing cached, no workers to tell

    def insights(self) -> Insights:
        wall = time.perf_counter() - self.executor.started_at
        return Insights.of(self.executor.worker_insights(), wall)

    def interrupt(self) -> None:
        """From another thread (Pool.close): end the running call (its workers are killed)."""
        self.executor.interrupt()

    def forget_after_fork(self) -> None:
        """In an os.fork() child: the workers are the parent's; let go of them."""
        self.executor.forget_after_fork()

    def close(self) -> None:
        self.executor.stop()
        self.scratch.free()
        self.snapshots.free()


def _result(op: str, plan: Plan, n_chunks: int, results: list) -> Any:
    """What a map or reduce returns from the workers' results: a reduction's value, the
    written array(s), or for partial=True (written, value)."""
    if op == "map":
        return plan.written()
    value = finish_reduce(plan.kernel, n_chunks, results)
    return (plan.written(), value) if op == "partial" else value


def _dynamic(kernel: Any, schedule: Any, executor: Any) -> bool:
    """Whether this call hands chunks out as workers finish (worth it with 2+ workers)."""
    if schedule is None:
        schedule = getattr(kernel, "schedule", "static")
    elif check_schedule(schedule) == "dynamic" and getattr(kernel, "kind", "") == "scan":
        raise InputError(f"kernel {kernel.name} is a scan, whose chunks depend on the ones "
                         "before them; it runs with schedule='static' only")
    return schedule == "dynamic" and executor.n_workers > 1


def map_grid(plan: Plan, op: str, n_workers: int, dynamic: bool = False) -> None:
    """A plain map's grid (partition.map_rows): even shares of rows, or at least
    DYNAMIC_CHUNKS (64) chunks per worker when dynamic. Its bits do not depend on the grid;
    a reduction's, a scan's and a fused stencil's partials do, so they keep theirs."""
    k = plan.kernel
    if op == "map" and k.kind == "map" and not getattr(k, "fused", False):
        plan.rows_per_chunk = map_rows(plan.n_rows, plan.rows_per_chunk, n_workers, dynamic)


def run_inline(kernel: Kernel, args: Sequence[Any], *, rows: int | None = None,
               boundary: Any = None, boundscheck: bool | None = None,
               depth: int | None = None, workers: int | None = None,
               partial: bool = False) -> Any:
    """A direct kernel call: the partitioning and combine order of a pool of ``workers``
    (default: sc.Pool()'s), in this process; ``partial``: a fused kernel's (written,
    combined partial), as pool.map(..., partial=True)."""
    if boundscheck is None:
        boundscheck = boundscheck_default()
    if workers is None:
        workers = usable_cores().n
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers={workers!r} must be a positive integer: the pool size "
                         "whose partitioning the direct call reproduces")
    op = "partial" if partial else "reduce" if kernel.kind == "reduce" else "map"
    check_kind(kernel, op)
    plan = make_plan(kernel, args, rows=rows, boundary=boundary, in_process=True, direct=True,
                     boundscheck=boundscheck, depth=depth)
    map_grid(plan, op, workers)  # the split of a pool of as many workers
    return LocalBackend(InlineExecutor(workers)).execute(op, plan)[0]
