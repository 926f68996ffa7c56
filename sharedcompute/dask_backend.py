"""The same kernels and calls on a Dask distributed cluster (``sc.Pool(backend=client)``).

Arrays live on the cluster as dask arrays; ``map`` is functional there: each chunk of the
fixed chunk grid (partition.py, the same as the local pool's) becomes one task that copies
its output rows, runs the numba kernel on them and returns the new block, and the handle is
rebound to the result. Halos are built per chunk with the local pool's own padding rules, and
reduction partials are combined here, in the parent, along the same fixed tree, so results
are bitwise those of the local pool. Imported only when a Dask backend is asked for.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._system import THREAD_ENV, limit_threads, nanny_config
from .errors import ArrayFreedError, InputError, KernelTimeoutError, kernel_error, remote_error_info
from .kernel import Kernel, check_schedule
from .partition import (chunk_rows, combine_all, position_value, source_row, split_even,
                        valid_rows)
from ._iterate.plan import check_options, fixed_edge_rows, plan_iterate, residual_value, swap
from ._iterate.program import Program
from .plan import Plan, check_kind, make_plan, scan_offsets
from .progress import progress_bar
from .shared import ArrayShape, check_dtype, native_array
from .progress import Insights
from .files import check_file_dtype, check_regular, read_header


def _import_dask():
    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as exc:
        raise InputError("the Dask backend needs dask and distributed: "
                         'pip install "sharedcompute[dask]"') from exc
    return dask, da, distributed


class DaskArray(ArrayShape):
    """An array on the Dask backend: lazy; ``np.asarray`` gathers it (a copy); kernels that
    write it rebind it to their result instead of writing in place."""

    def __init__(self, data: Any):
        self.data = data

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def numpy(self) -> np.ndarray:
        """Gather to a new NumPy array (a copy, unlike SharedArray.numpy)."""
        if self.data is None:
            raise ArrayFreedError("this Dask array was freed")
        return np.asarray(self.data.compute())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.numpy()
        return out if dtype is None else out.astype(dtype, copy=False)

    def free(self) -> None:
        self.data = None

    def __repr__(self) -> str:
        return f"DaskArray(shape={self.shape}, dtype={self.dtype}, chunks={self.data.chunks[0][:3]}...)"


def _npy_header(path: str) -> tuple:
    """On a worker: the shape and dtype of a .npy file (refusing what cannot be mapped)."""
    real = check_regular(path, "r")
    with open(real, "rb") as f:
        shape, dt, _, fortran = read_header(real, f)
    check_file_dtype(real, dt, fortran, shape, check_dtype)
    return shape, dt


def _npy_rows(path: str, s: Any, e: Any) -> np.ndarray:
    """On a worker: rows [s, e) of a .npy file as a view of its page-cache mapping."""
    m = np.load(path, mmap_mode="r")
    return np.asarray(m if s is None else m[s:e])


def _check_schedule(kernel: Any, schedule: Any) -> None:
    if schedule is not None:
        check_schedule(schedule)


class _KernelFailure(Exception):
    """Raised on a Dask worker: a plain dict describing the kernel's exception."""


def _call_kernel(kernel: Kernel, func: Any, args: list, rows: tuple) -> Any:
    try:
        return func(*args)
    except Exception as exc:
        raise _KernelFailure(remote_error_info(exc, rows, os.getpid())) from None


def _map_block(kernel: Kernel, kinds: tuple, s: int, e: int, vs: int, ve: int, n: int,
               boundary: Any, extra: Any, d: int, *inputs: Any) -> tuple:
    """One chunk on a worker: copy the output rows, run the kernel on rows [vs, ve) with
    ``d`` halo rows on each side."""
    args, outs = [], []
    for (kind, writable, const_mask), inp in zip(kinds, inputs):
        if kind == "value" or kind == "whole":
            args.append(inp)
        elif writable:
            block = np.array(inp)  # copy: Dask blocks are never written in place
            outs.append(block)
            args.append(block[vs - s:ve - s])
        elif d:
            local = np.array(inp)
            if const_mask is not None:
                local[const_mask] = boundary
            args.append(local)
        else:
            args.append(inp)
    if ve > vs:
        if kernel.position:
            args.append(position_value(kernel.position, vs, ve, n, d, boundary))
        if extra is not None:
            args.append(extra)
        _call_kernel(kernel, kernel.dispatcher, args, (vs, ve))
    return tuple(outs)


def _leaves_block(kernel: Kernel, func_name: str, bounds: list, n: int, kinds: tuple,
                  *args: Any) -> list:
    """Partials of several consecutive chunks (args hold the rows of all of them)."""
    func = getattr(kernel, func_name)
    base = bounds[0][0] if bounds else 0
    out = []
    for s, e in bounds:
        call = [a if extra is None else a[s - base:e - base + extra]
                for a, extra in zip(args, kinds)]  # extra: an own halo's rows (halo=)
        if kernel.position and func_name == "dispatcher":
            call.append(position_value(kernel.position, s, e, n, 0, "none"))
        out.append(_call_kernel(kernel, func, call, (s, e)))
    return out


def _task_groups(n_chunks: int, n_workers: int) -> list[tuple[int, int]]:
    """Consecutive chunks per Dask task: a few tasks per worker, since each task costs
    milliseconds of scheduling. Results do not depend on it: every chunk's partial and
    every row's value is computed exactly as on the local pool."""
    return [r for r in split_even(n_chunks, min(n_chunks, 4 * max(n_workers, 1))) if r[1] > r[0]]


_thread_limits: list = []  # keeps each Dask worker's threadpoolctl limit alive


def _setup_worker() -> None:
    """On each Dask worker: one BLAS/numba thread per worker process, kernels importable."""
    _thread_limits.append(limit_threads())
    import sharedcompute.kernels  # noqa: F401


def _worker_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class SharedcomputeSetup(WorkerPlugin):
        name = "sharedcompute-setup"

        def setup(self, worker: Any) -> None:
            _setup_worker()
    return SharedcomputeSetup()


WORKER_WAIT_S = 120.0  # how long a new Dask pool waits for its workers to join


class ClusterCalls:
    """What the two Dask backends (DaskBackend and dask_nodes.NodesBackend) do alike:
    bound calls run as plain calls, and tasks and warmup are refused."""

    executor = None  # no local processes, no restarts
    restarts = 0

    def check_bound(self, b: Any) -> None:
        """Nothing to check ahead: a Dask call plans when it runs."""

    def call_bound(self, b: Any) -> Any:
        if b.op == "reduce":
            return self.reduce(b.kernel, b.args, b.rows, b.timeout, False, b.chunk_rows,
                               b.boundscheck, b.schedule)
        return self.map(b.kernel, b.args, b.rows, b.boundary, b.timeout, False, b.chunk_rows,
                        b.boundscheck, b.depth, b.schedule, b.op == "partial")

    def check_iterate(self, kernel: Any, residual: Any, tol: Any, block_sweeps: Any,
                      where: str) -> tuple:
        """iterate's checks on a cluster (``where``: which one, for the messages): step
        programs and fused sweeps refused, then the local checks; (block_sweeps, tol)."""
        if isinstance(kernel, Program):
            raise InputError(f"step programs (sc.program) run on local pools (backend "
                             f"'processes' or 'inline'); on {where}, call pool.map per stage "
                             "in a Python loop of steps")
        block_sweeps, tol = check_options(kernel, residual, tol, block_sweeps)
        if getattr(kernel, "fused", False):
            raise InputError(f"kernel {kernel.name} returns its residual from the sweep "
                             f"(combine=), which {where} does not collect; use the same "
                             "stencil without combine= and residual=max_abs_diff there")
        return block_sweeps, tol

    # -- what runs on process and inline pools only ---------------------------------------
    def submit(self, fn: Any, args: tuple, kwargs: dict, timeout: Any, runner: Any) -> Any:
        """Refused: Dask's own client.submit runs a function on the cluster."""
        raise InputError("tasks (submit, imap) run on the 'processes' and 'inline' "
                         "backends; on a Dask cluster use client.submit directly")

    def imap(self, fn: Any, iterable: Any, ordered: bool, chunksize: Any, timeout: Any,
             progress: Any, runner: Any) -> Any:
        """Refused, as submit is."""
        return self.submit(fn, (), {}, timeout, runner)

    def warmup(self, kernels: Any, dtypes: Any, boundscheck: bool, timeout: Any) -> dict:
        """Refused: each Dask worker compiles a kernel at its first call."""
        raise InputError("warmup runs on process and inline pools; on a Dask cluster each "
                         "worker compiles a kernel at its first call")


class DaskBackend(ClusterCalls):
    """Runs Pool calls on a distributed Client, with LocalBackend's methods; see the module
    docstring."""

    array_types = (DaskArray,)
    start_method = "dask"
    pids: list[int] = []

    def __init__(self, client: Any = None, n_workers: int | None = None):
        dask, da, distributed = _import_dask()
        self._own_cluster = None
        if client is None:
            # The workers' thread limits go in their own environment (_system.nanny_config:
            # the nannies run in this process); what a nanny still writes here at the start
            # (PYTHONHASHSEED) is given back.
            kept = {k: os.environ.get(k) for k in (*THREAD_ENV, "PYTHONHASHSEED")}
            try:
                with dask.config.set(nanny_config()):
                    self._own_cluster = distributed.LocalCluster(
                        n_workers=n_workers or 2, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=40)
            finally:
                _restore_environ(kept)
            client = distributed.Client(self._own_cluster)
        self.client = client
        # On a busy machine the workers may not have joined when the Client returns: a pool
        # of 0 workers would split by zero (seen under two CPU hogs). Wait for ours, and for
        # at least one of a cluster we were given.
        try:
            wanted = (n_workers or 2) if self._own_cluster is not None else 1
            client.wait_for_workers(wanted, timeout=WORKER_WAIT_S)
        except Exception as exc:  # distributed's TimeoutError
            self.close()
            raise InputError(f"the Dask cluster has no workers after {WORKER_WAIT_S:g} s; "
                             "start some (dask worker <scheduler address>) or check the "
                             "address") from exc
        client.register_plugin(_worker_plugin())
        self.n_workers = max(1, len(client.scheduler_info()["workers"]))

    # -- arrays --------------------------------------------------------------------------------
    def array(self, x: Any) -> DaskArray:
        _, da, _ = _import_dask()
        src = native_array(x)
        chunks = self._storage_rows(src.shape, src.itemsize)
        chunks = (chunks,) + src.shape[1:] if src.ndim else ()
        data = da.from_array(src, chunks=chunks, name=False)  # name=False: no hashing of GBs
        return DaskArray(self.client.persist(data))

    def _storage_rows(self, shape: tuple, itemsize: int) -> int:
        """Storage chunks: whole groups of grid chunks, a few per worker, so that a task's
        rows are one stored block (Dask charges milliseconds per task, not per byte)."""
        rows = shape[0] if shape else 1
        row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if shape else 8
        grid = chunk_rows(rows, row_bytes)
        n_grid = max(1, -(-rows // grid))
        return max(1, -(-n_grid // min(n_grid, 4 * self.n_workers)) * grid)

    def open(self, path: Any, mode: str = "r", shape: Any = None, dtype: Any = None,
             persist: bool = False) -> DaskArray:
        """A dask array read from ``path`` by the workers themselves: each storage chunk is
        a task that maps the file (np.load(mmap_mode='r')) and views its rows, so no data
        passes through the client. Read-only: Dask kernels return new arrays rather than
        write in place, so "r+"/"w+" would silently leave the file unchanged."""
        import dask
        _, da, _ = _import_dask()
        if mode != "r" or shape is not None or dtype is not None:
            raise InputError(
                f"mode={mode!r}: on the Dask backend pool.open reads files (mode='r'); kernels "
                "there return new arrays instead of writing in place, so a file opened 'r+' "
                "would not change. Open with mode='r' and save results with "
                "np.save(path2, np.asarray(result)) or dask.array.to_npy_stack")
        path = os.path.abspath(os.fspath(path))
        shape, dt = self.client.submit(_npy_header, path, pure=False).result()
        check_dtype(dt)
        rows = self._storage_rows(shape, dt.itemsize)
        n = shape[0] if shape else 1
        blocks = [da.from_delayed(dask.delayed(_npy_rows, pure=False)(path, s, min(s + rows, n)),
                                  shape=(min(s + rows, n) - s,) + tuple(shape[1:]), dtype=dt)
                  for s in range(0, n, rows)] if shape else []
        if not shape:
            data = da.from_delayed(dask.delayed(_npy_rows, pure=False)(path, None, None),
                                   shape=(), dtype=dt)
        else:
            data = da.concatenate(blocks, axis=0) if blocks else da.zeros(shape, dt)
        return DaskArray(self.client.persist(data) if persist else data)

    def load(self, path: Any) -> DaskArray:
        """The file read into the workers' memory (persisted) by the workers themselves."""
        return self.open(path, persist=True)

    def zeros(self, shape: Any, dtype: Any = np.float64) -> DaskArray:
        return self.array(np.zeros(shape, check_dtype(dtype)))

    def empty(self, shape: Any, dtype: Any = np.float64) -> DaskArray:
        return self.zeros(shape, dtype)

    # -- calls ---------------------------------------------------------------------------------
    def _plan(self, kernel: Kernel, args: tuple, rows: Any = None, boundary: Any = None,
              chunk_rows: int | None = None, depth: int | None = None) -> Plan:
        return make_plan(kernel, args, rows=rows, boundary=boundary, in_process=True,
                         array_types=(DaskArray,), chunk_rows_override=chunk_rows,
                         shared_ok=False, depth=depth)

    def start(self) -> None:
        """Nothing to start: the cluster is running."""

    def block_released(self, name: str) -> None:
        """Nothing to forget: the cluster's workers never map this machine's blocks."""

    def insights(self) -> Any:
        return Insights()

    def _gather(self, futures: list, timeout: float | None, progress: Any, what: str,
                fetch: bool = True) -> list:
        """Wait for the futures; raise the first kernel failure; return results if fetch."""
        from distributed import wait
        bar = progress_bar(progress, len(futures), what)
        try:
            done, not_done = wait(futures, timeout=timeout, return_when="ALL_COMPLETED")
        except Exception:  # distributed raises its own TimeoutError subclass
            for f in futures:
                f.cancel()
            raise KernelTimeoutError(f"kernel {what} did not finish within timeout={timeout} s "
                                     "on the Dask cluster; its tasks were cancelled") from None
        if bar:
            bar.finish()
        for f in futures:
            if f.status == "error":
                exc = f.exception()
                if isinstance(exc, _KernelFailure):
                    err = kernel_error(what, exc.args[0])
                    raise err from err.__cause__  # the worker's traceback, not this frame's
                raise exc
        # map results stay on the cluster; only reductions' small partials come back
        return self.client.gather(futures) if fetch else []

    def _chunk_inputs(self, plan: Plan, s: int, e: int, vs: int, ve: int) -> tuple[tuple, list]:
        n, d = plan.n_rows, plan.depth
        kinds, inputs = [], []
        for spec in plan.specs:
            if spec.kind == "value":
                kinds.append(("value", False, None))
                inputs.append(spec.value)
            elif spec.kind == "whole":
                kinds.append(("whole", False, None))
                inputs.append(spec.value.data)
            elif spec.halo:  # its own halo rows, in place: passed as they are
                kinds.append(("whole", False, None))
                inputs.append(spec.value.data[vs:ve + sum(spec.halo)] if ve > vs else
                              spec.value.data[:0])
            elif spec.writable or not d:
                kinds.append(("part", spec.writable, None))
                inputs.append(spec.value.data[s:e])
            else:
                src = [source_row(i, n, plan.boundary) for i in range(vs - d, ve + d)]
                if ve <= vs:
                    src = []
                if src and all(b == a + 1 for a, b in zip(src, src[1:])) and src[0] >= 0:
                    inputs.append(spec.value.data[src[0]:src[-1] + 1])
                    kinds.append(("part", False, None))
                else:
                    idx = np.array([max(j, 0) for j in src], dtype=np.int64)
                    mask = np.array([j < 0 for j in src], dtype=bool)
                    inputs.append(spec.value.data[idx] if len(idx) else
                                  spec.value.data[:0])
                    kinds.append(("part", False, mask if mask.any() else None))
        return tuple(kinds), inputs

    def _map_chunks(self, plan: Plan, timeout: Any, progress: Any,
                    extras: list | None = None) -> None:
        import dask
        _, da, _ = _import_dask()
        kernel, n = plan.kernel, plan.n_rows
        vlo, vhi = valid_rows(n, plan.depth, plan.boundary)
        tasks = []
        grid = plan.chunks if n else []
        if extras is None:  # plain maps: group chunks into bigger tasks
            chunks = [(grid[a][0], grid[b - 1][1]) for a, b in _task_groups(len(grid),
                                                                           self.n_workers)]
        else:  # scans: one task per chunk, each with its own offset
            chunks = grid
        for c, (s, e) in enumerate(chunks):
            vs, ve = max(s, vlo), min(e, vhi)
            vs, ve = (vs, ve) if ve > vs else (s, s)
            kinds, inputs = self._chunk_inputs(plan, s, e, vs, ve)
            extra = extras[c] if extras is not None else None
            tasks.append(dask.delayed(_map_block, pure=False)(
                kernel, kinds, s, e, vs, ve, n, plan.boundary, extra, plan.depth, *inputs))
        futures = self.client.compute(tasks)
        self._gather(futures, timeout, progress, kernel.name, fetch=False)
        writes = [i for i, sp in enumerate(plan.specs) if sp.writable]
        for k, i in enumerate(writes):
            handle = plan.specs[i].value
            if not chunks:
                continue
            blocks = [da.from_delayed(dask.delayed(lambda t, k=k: t[k])(f),
                                      shape=(e - s,) + handle.shape[1:], dtype=handle.dtype)
                      for f, (s, e) in zip(futures, chunks)]
            handle.data = self.client.persist(da.concatenate(blocks, axis=0))

    def map(self, kernel: Kernel, args: tuple, rows: Any = None, boundary: Any = None,
            timeout: Any = None, progress: Any = None, chunk_rows: Any = None,
            boundscheck: bool = False, depth: Any = None, schedule: Any = None,
            partial: bool = False) -> Any:
        """As LocalBackend.map; ``schedule`` is accepted and left to Dask's own scheduler,
        which hands tasks to idle workers already. ``partial=True`` is refused: Dask's map
        tasks return new blocks, not partials."""
        check_kind(kernel, "partial" if partial else "map")
        if partial:
            raise InputError(f"kernel {kernel.name}: map(..., partial=True) is not available "
                             "on the Dask backend (its map tasks return new blocks, not "
                             "partials); there, call pool.map with the same kernel (its "
                             "partial is dropped) and then pool.reduce with a reduction "
                             "kernel over the written array")
        _check_schedule(kernel, schedule)
        plan = self._plan(kernel, args, rows, boundary, chunk_rows, depth)
        if kernel.kind == "scan":
            offsets = scan_offsets(kernel, self._leaves(plan, "totals", timeout))
            self._map_chunks(plan, timeout, progress, extras=offsets)
        else:
            self._map_chunks(plan, timeout, progress)
        return plan.written()

    def _leaves(self, plan: Plan, func_name: str, timeout: Any, progress: Any = None) -> list:
        import dask
        kernel, n = plan.kernel, plan.n_rows
        grid = plan.chunks
        tasks = []
        for a, b in _task_groups(len(grid), self.n_workers):
            s, e = grid[a][0], grid[b - 1][1]
            args, kinds = [], []
            for spec in plan.specs:
                if spec.writable and func_name == "totals":
                    continue
                kinds.append(sum(spec.halo) if spec.kind == "part" else None)
                if spec.kind == "value":
                    args.append(spec.value)
                elif spec.kind == "whole":
                    args.append(spec.value.data)
                else:
                    args.append(spec.value.data[s:e + sum(spec.halo)])
            tasks.append(dask.delayed(_leaves_block, pure=False)(
                kernel, func_name, grid[a:b], n, tuple(kinds), *args))
        groups = self._gather(self.client.compute(tasks), timeout, progress, kernel.name)
        return [p for group in groups for p in group]

    def reduce(self, kernel: Kernel, args: tuple, rows: Any = None, timeout: Any = None,
               progress: Any = None, chunk_rows: Any = None, boundscheck: bool = False,
               schedule: Any = None) -> Any:
        check_kind(kernel, "reduce")
        _check_schedule(kernel, schedule)
        plan = self._plan(kernel, args, rows, None, chunk_rows)
        partials = self._leaves(plan, "dispatcher", timeout, progress)
        value = combine_all(partials, kernel.combine)
        return kernel.finalize(value) if kernel.finalize is not None else value

    def iterate(self, kernel: Kernel, args: tuple, *, steps: int, residual: Kernel | None,
                tol: float | None, check_every: int, boundary: Any = None, timeout: Any = None,
                progress: Any = None, boundscheck: bool = False, depth: Any = None,
                info: bool = False, block_sweeps: Any = None, chunk_rows: Any = None) -> Any:
        """One persisted map per sweep, with the local pool's checks and plan
        (_iterate/plan.py); Dask arrays are functional (no halos in place), so sweeps are
        plain whatever ``block_sweeps`` says: the same result."""
        block_sweeps, tol = self.check_iterate(kernel, residual, tol, block_sweeps,
                                               "the Dask backend")
        plan = self._plan(kernel, args, None, boundary, chunk_rows, depth)
        it = plan_iterate(plan, steps, residual, tol, check_every, block_sweeps,
                          self.n_workers, can_block=False)
        (out_i, in_i), specs = it.swap, plan.specs
        out_h, in_h = specs[out_i].value, specs[in_i].value
        edges = fixed_edge_rows(plan)
        if edges:  # never written: held fixed in both arrays, as on the local pool
            _, da, _ = _import_dask()
            pieces, last = [], 0
            for s, e in edges:
                pieces += [out_h.data[last:s], in_h.data[s:e]]
                last = e
            out_h.data = self.client.persist(da.concatenate(
                [p for p in pieces + [out_h.data[last:]] if p.shape[0]], axis=0))
        done, value = 0, None
        for step in range(it.steps):
            self._map_chunks(plan, timeout, None)
            done = step + 1
            if residual is not None and done % check_every == 0:
                rplan = self._plan(residual, (specs[out_i].value, specs[in_i].value),
                                   chunk_rows=chunk_rows)
                value = residual_value(residual, self._leaves(rplan, "dispatcher", timeout))
                if value <= tol:
                    break
            swap(specs, out_i, in_i)
        return it.result(done, value, info)

    def interrupt(self) -> None:
        """Pool.close from another thread: a running Dask call is waited for."""

    def forget_after_fork(self) -> None:
        """A forked child holds no Dask workers of its own: nothing to let go of."""

    def close(self) -> None:
        if self._own_cluster is not None:
            self.client.close()
            self._own_cluster.close()


def _restore_environ(kept: dict) -> None:
    os.environ.update({k: v for k, v in kept.items() if v is not None})
    for key in [k for k, v in kept.items() if v is None]:  # unset before: unset again
        os.environ.pop(key, None)


__all__ = ["DaskBackend", "DaskArray"]
