"""Pool: the facade users hold. It checks its arguments, chooses a backend once, owns the
arrays it creates, and hands every call to ``self._backend`` without asking which one:

- ``LocalBackend(ProcessExecutor)``: persistent, core-sized worker processes (default);
- ``LocalBackend(InlineExecutor)``: the same partitions run in this process, for debugging;
- ``DaskBackend``: a Dask distributed cluster (the optional ``dask`` extra, imported lazily).

The path of one call, cold and repeated, is drawn in _executors.py.
"""
from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal, TypeVar, overload

import numpy as np

from .bind import BoundCall
from ._inline import InlineExecutor
from .progress import Insights
from ._start import (START_METHODS, _check_worker_limits, exit_if_importing_main,  # noqa: F401 - re-exported
                     _forget_parents_forkserver, _numba_threads_started, _process_backend,
                     default_start_method)
from .iterate_result import IterateResult
from ._iterate.program import Program, Roles
from ._system import usable_cores
from .errors import InputError, PoolClosedError, PoolError
from .local import LocalBackend
from .dask_nodes import DaskNodes, NodesBackend
from .kernel import Kernel
from .plan import boundscheck_default, check_chunk_rows, check_timeout
from .shared import SharedArray, on_block_release
from .futures import TaskRunner, items_to_map

if TYPE_CHECKING:
    from distributed import Client  # the optional dask extra: for type checkers only

_R = TypeVar("_R")  # what a kernel's call returns (its Kernel[...] parameter)
_X = TypeVar("_X")  # a task's item
_Y = TypeVar("_Y")  # a task's result

_live_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()


class Pool:
    """A persistent pool of worker processes running numba kernels in place on shared arrays.

    Parameters
    ----------
    n_workers : number of worker processes; None means the cores this process may use
        (CPU affinity, capped by a cgroup CPU quota), not os.cpu_count().
    start_method : "fork", "spawn", "forkserver", or None for forkserver on Linux (the
        Python 3.14 default) and spawn elsewhere. fork is refused once numba's parallel
        threads have run in this process (the forked child would be killed by OpenMP).
    backend : "processes" (default); "inline", which runs every partition in this process
        with the same partitioning, halos and combine order, for debugging; "dask" (a new
        local Dask cluster) or a ``distributed.Client`` (needs the ``dask`` extra), whose
        tasks copy each chunk; or ``sc.DaskNodes(client)``: a local pool on every Dask
        worker (node) holding its rows of every array, kernels run in place there.
    boundscheck : compile kernels with numba's bounds checks (default: the environment
        variable SHAREDCOMPUTE_BOUNDSCHECK=1), so a read outside a partition's rows and
        halo raises KernelError instead of reading a neighbour's rows; slower, for debugging.

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> from sharedcompute.kernels.elementwise import triad
    >>> from sharedcompute.kernels.reductions import total
    >>> with sc.Pool(n_workers=2) as pool:
    ...     b = pool.array(np.ones(1000)); c = pool.array(np.ones(1000)); a = pool.zeros(1000)
    ...     _ = pool.map(triad, a, b, c, 2.0)
    ...     float(pool.reduce(total, a))
    3000.0
    """

    def __init__(self, n_workers: int | None = None, start_method: str | None = None,
                 backend: str | Client | DaskNodes = "processes",
                 boundscheck: bool | None = None):
        nodes = isinstance(backend, DaskNodes)
        if nodes and n_workers is not None:
            raise InputError("n_workers= does not apply to sc.DaskNodes: a node pool has one "
                             "pool per Dask worker; set its size with sc.DaskNodes(client, "
                             "per_node=...)")
        if backend == "processes":
            exit_if_importing_main()
        if n_workers is None:
            n_workers = usable_cores().n
        if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) \
                or n_workers < 1:
            raise InputError(f"n_workers={n_workers!r} must be a positive integer (or None for "
                             "the usable cores)")
        if backend == "processes":
            _check_worker_limits(int(n_workers))
        self._lock = threading.RLock()
        self._closed = False
        self._blocks: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.boundscheck = boundscheck_default() if boundscheck is None else bool(boundscheck)
        if nodes:
            self._backend = NodesBackend(backend)
        elif backend == "dask" or type(backend).__module__.startswith("distributed"):
            from .dask_backend import DaskBackend  # optional extra: imported when asked for
            self._backend: Any = DaskBackend(None if backend == "dask" else backend,
                                             int(n_workers))
        elif backend == "inline":
            self._backend = LocalBackend(InlineExecutor(int(n_workers)))
        elif backend == "processes":
            self._backend = _process_backend(int(n_workers), start_method)
        else:
            raise InputError(f"backend={backend!r} is not known; use 'processes', 'inline', "
                             "'dask', a distributed.Client or sc.DaskNodes(client)")
        self.n_workers = self._backend.n_workers
        self.start_method = self._backend.start_method
        self._tasks: TaskRunner | None = None  # made at the first submit
        self._backend.start()
        self._owner_pid = os.getpid()
        _live_pools.add(self)

    @property
    def _executor(self) -> Any:
        return self._backend.executor

    @property
    def array_types(self) -> tuple:
        """The array types this pool's kernels take: SharedArray, or the cluster's arrays."""
        return self._backend.array_types

    # -- arrays --------------------------------------------------------------------------------
    def _own(self, arr: Any) -> Any:
        if isinstance(arr, SharedArray) and arr.block is not None:  # (Dask's: none here)
            self._blocks.add(arr.block)
        return arr

    def empty(self, shape: int | tuple, dtype: Any = np.float64) -> SharedArray:
        """A new shared array owned by this pool (freed when the pool closes)."""
        self._check_open()
        return self._own(self._backend.empty(shape, dtype))

    def zeros(self, shape: int | tuple, dtype: Any = np.float64) -> SharedArray:
        """A new zero-filled shared array owned by this pool."""
        self._check_open()
        return self._own(self._backend.zeros(shape, dtype))

    def empty_like(self, x: Any, dtype: Any = None) -> SharedArray:
        """A new shared array with the shape (and dtype) of ``x``."""
        return self.empty(_shape_of(x), _dtype_of(x) if dtype is None else dtype)

    def zeros_like(self, x: Any, dtype: Any = None) -> SharedArray:
        """A new zero-filled shared array with the shape (and dtype) of ``x``."""
        return self.zeros(_shape_of(x), _dtype_of(x) if dtype is None else dtype)

    def array(self, x: Any) -> SharedArray:
        """Copy ``x`` (once) into a new C-ordered shared array owned by this pool."""
        self._check_open()
        return self._own(self._backend.array(x))

    def open(self, path: Any, mode: str = "r", shape: Any = None,
             dtype: Any = None) -> SharedArray:
        """Map a ``.npy`` file in place in every worker (MAP_SHARED: no copy, no /dev/shm).

        ``mode``: "r" (read-only everywhere; a kernel that writes it is refused), "r+"
        (kernels write the file in place) or "w+" (create or replace ``path`` with a new
        ``.npy`` of ``shape`` and ``dtype``, as ``numpy.lib.format.open_memmap``). The result
        is a SharedArray that pickles as a handle naming the file; ``a.flush()`` msyncs, and
        closing the pool (or ``a.free()``) msyncs, unmaps and closes the file, which stays.
        On a Dask pool the workers read the file themselves (mode "r" only).

        Examples
        --------
        >>> import numpy as np, os, tempfile, sharedcompute as sc
        >>> from sharedcompute.kernels.reductions import total
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(path, np.arange(10.0))
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     float(pool.reduce(total, pool.open(path)))
        45.0
        """
        self._check_open()
        return self._own(self._backend.open(path, mode, shape, dtype))

    def load(self, path: Any) -> SharedArray:
        """Read a ``.npy`` file into a new shared array (readinto the block: no temporary
        copy); for RAM speed when the file fits in /dev/shm."""
        self._check_open()
        return self._own(self._backend.load(path))

    # -- running kernels -----------------------------------------------------------------------
    @overload
    def map(self, kernel: Kernel[_R], *args: Any, rows: int | None = None,
            boundary: Any = None, depth: int | None = None, schedule: str | None = None,
            timeout: float | None = None, progress: Any = False, chunk_rows: int | None = None,
            partial: Literal[False] = False, **kwargs: Any) -> _R: ...
    @overload
    def map(self, kernel: Kernel[_R], *args: Any, rows: int | None = None,
            boundary: Any = None, depth: int | None = None, schedule: str | None = None,
            timeout: float | None = None, progress: Any = False, chunk_rows: int | None = None,
            partial: Literal[True], **kwargs: Any) -> tuple[_R, Any]: ...
    @overload
    def map(self, kernel: Callable[[_X], _Y], items: Iterable[_X], /, *,
            chunksize: int | None = None, timeout: float | None = None,
            progress: Any = False) -> list[_Y]: ...
    def map(self, kernel: Any, *args: Any, rows: int | None = None, boundary: Any = None,
            depth: int | None = None, schedule: str | None = None,
            timeout: float | None = None, progress: Any = False, chunksize: int | None = None,
            chunk_rows: int | None = None, partial: bool = False, **kwargs: Any) -> Any:
        """Run ``kernel`` in place over the rows of its shared-array arguments; returns the
        written array (a tuple if it writes several), as the kernel's type says.

        Kernel arguments may be given by name (``pool.map(k, a, x, r=3.9)``). ``depth`` and
        ``boundary`` override a stencil's halo for this call (a window width from the
        command line); ``schedule="dynamic"`` hands chunks to workers as they finish (rows
        of unequal cost; the same result); ``timeout`` (seconds, positive and finite) raises
        KernelTimeoutError and replaces stuck workers.

        ``progress=True`` shows a bar over the call's chunks that stays on screen
        ("transient" erases it when done; a tqdm bar or a ``callback(done, total)`` also
        work). It costs nothing: the kernel is called exactly as without it, once per
        worker's share (a piece of it under ``schedule="dynamic"``; once per chunk with
        ``partial=True``), and the bar advances by a call's chunks when it returns. ``schedule="dynamic"`` makes a bar that
        moves piece by piece, with more, smaller calls (a halo kernel recomputes its halo
        for each).

        ``chunk_rows``: rows per chunk, a whole number from 1 to the rows split (default:
        about 1/256 of the array, in chunks of 64 KiB to 4 MiB); anything else is an
        InputError that says what is valid. Chunks are what the workers' shares are made
        of, what ``schedule="dynamic"`` hands out and what the bar counts (without it a
        static map takes even shares of rows, one chunk per worker); a map kernel is
        still called once per share, and its result is bitwise the same for any chunk size
        and any ``depth`` (a scan's offsets combine chunk totals, so its floats may round
        differently).

        ``partial=True`` runs a fused kernel (one that writes its rows and declares
        ``combine=``, such as a stencil with a residual) and returns ``(written, value)``:
        the written array(s) and the kernel's partials from the same pass, one per chunk of
        the fixed grid combined along reduce's fixed tree and ``finalize``d as reduce does,
        so ``value`` is bitwise the same for any number of workers, and bitwise what
        ``pool.reduce`` gives for a reduction returning the same per-chunk values. A chunk
        with no row to write (the edges of a ``boundary="none"`` stencil, an empty array)
        contributes the kernel's value for zero rows; a padded stencil's edge rows are a
        piece of their own, combined in row order within their chunk. The kernel's partial
        type is not in its ``Kernel[...]`` type: ``value`` types as Any.

        Given a plain function and one iterable instead of a kernel, this is the stdlib's
        ``Pool.map``: ``pool.map(fn, items)`` returns ``[fn(x) for x in items]`` computed as
        tasks (see :meth:`imap`; ``chunksize`` as there).

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.elementwise import axpy
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     y = pool.array(np.ones(5)); x = pool.array(np.arange(5.0))
        ...     pool.map(axpy, y, x, 10.0).numpy()
        array([ 1., 11., 21., 31., 41.])

        Write and reduce in one pass: ``y = 2 x`` and ``sum(y)``, bitwise as
        ``pool.reduce`` of a kernel summing ``2 x`` per chunk.

        >>> @sc.kernel(writes=("y",), combine=np.add)
        ... def double_and_sum(y, x):
        ...     acc = 0.0
        ...     for i in range(y.shape[0]):
        ...         y[i] = 2.0 * x[i]
        ...         acc += y[i]
        ...     return acc
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     y = pool.zeros(4); x = pool.array(np.arange(4.0))
        ...     out, total = pool.map(double_and_sum, y, x, partial=True)
        ...     out.numpy(), float(total)
        (array([0., 2., 4., 6.]), 12.0)
        """
        if not isinstance(kernel, Kernel):
            if chunk_rows is not None:
                raise InputError("chunk_rows= sets a kernel's rows per chunk; a plain "
                                 "function's items per task are chunksize=")
            if partial:
                raise InputError(f"partial=True needs a sharedcompute kernel that writes "
                                 f"arrays and declares combine=, not {kernel!r}")
            return self._map_tasks(kernel, args, kwargs, chunksize, timeout, progress)
        if chunk_rows is not None:  # the size is checked against the rows when planned
            chunk_rows = check_chunk_rows(chunk_rows)
        if chunksize is not None:
            raise InputError(f"chunksize= is the items per task of a plain function; kernel "
                             f"{kernel.name} splits rows: use chunk_rows={chunksize!r}")
        if kwargs:
            args = kernel.ordered_args(args, kwargs)
        if timeout is not None:  # None needs no check
            timeout = check_timeout(timeout)
        self._refuse_in_task_thread()
        with self._lock:
            self._check_open()
            if partial:  # a separate positional: the plain map path stays as it was
                return self._backend.map(kernel, args, rows, boundary, timeout, progress,
                                         chunk_rows, self.boundscheck, depth, schedule, True)
            return self._backend.map(kernel, args, rows, boundary, timeout, progress,
                                     chunk_rows, self.boundscheck, depth, schedule)

    def reduce(self, kernel: Kernel[_R], *args: Any, rows: int | None = None,
               schedule: str | None = None, timeout: float | None = None,
               progress: Any = False, chunk_rows: int | None = None, **kwargs: Any) -> _R:
        """Run a reduction kernel; partials are combined in a fixed pairwise order, so the
        result is bitwise the same for any number of workers, and under
        ``schedule="dynamic"`` too. Kernel arguments may be given by name.

        ``chunk_rows`` (as in :meth:`map`) sets the leaves of that order: the kernel is
        called once per chunk, and the partials are combined along a fixed tree over the
        chunks. Another chunk size groups them differently, so a floating-point result may
        differ in its last bits (integer, min/max and other exact combines do not).
        ``progress`` advances as each chunk's partial is done (no extra call).

        Its type is the kernel's: ``T`` for ``combine: Callable[[T, T], T]``, the result of
        ``finalize`` when given, and ``Any`` for a NumPy ufunc as ``combine`` (``np.add``,
        as most library reductions use): NumPy types a ufunc call as returning Any, since
        the result depends on the operands' dtypes (see "Types" in :func:`kernel`).

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.reductions import mean_var
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     tuple(float(v) for v in pool.reduce(mean_var, pool.array(np.arange(4.0))))
        (4.0, 1.5, 1.25)
        """
        if kwargs and isinstance(kernel, Kernel):
            args = kernel.ordered_args(args, kwargs)
        elif kwargs:
            raise InputError(f"{kernel!r} is not a sharedcompute kernel; decorate it with "
                             "@sc.kernel(combine=...)")
        if timeout is not None:  # None needs no check
            timeout = check_timeout(timeout)
        if chunk_rows is not None:
            chunk_rows = check_chunk_rows(chunk_rows)
        self._refuse_in_task_thread()
        with self._lock:
            self._check_open()
            return self._backend.reduce(kernel, args, rows, timeout, progress, chunk_rows,
                                        self.boundscheck, schedule)

    @overload
    def iterate(self, kernel: Program, *, steps: int, timeout: float | None = None,
                progress: Any = False) -> Roles: ...
    @overload
    def iterate(self, kernel: Kernel, out: SharedArray, u: SharedArray, *params: Any,
                steps: int, residual: Kernel | None = None, tol: float | None = None,
                check_every: int = 10, boundary: Any = None, depth: int | None = None,
                timeout: float | None = None, progress: Any = False,
                info: Literal[False] = False, block_sweeps: int | None = None,
                chunk_rows: int | None = None, **kwargs: Any) -> SharedArray: ...
    @overload
    def iterate(self, kernel: Kernel, out: SharedArray, u: SharedArray, *params: Any,
                steps: int, residual: Kernel | None = None, tol: float | None = None,
                check_every: int = 10, boundary: Any = None, depth: int | None = None,
                timeout: float | None = None, progress: Any = False, info: Literal[True],
                block_sweeps: int | None = None, chunk_rows: int | None = None,
                **kwargs: Any) -> IterateResult: ...
    def iterate(self, kernel: Kernel | Program, out: SharedArray | None = None,
                u: SharedArray | None = None, *params: Any,
                steps: int, residual: Kernel | None = None, tol: float | None = None,
                check_every: int = 10, boundary: Any = None, depth: int | None = None,
                timeout: float | None = None, progress: Any = False, info: bool = False,
                block_sweeps: int | None = None, chunk_rows: int | None = None,
                **kwargs: Any) -> Any:
        """Run ``steps`` sweeps of ``kernel(out, u, *params)``, swapping out and u after each,
        with the loop inside the workers and a barrier between sweeps.

        Stops early once the residual is <= ``tol``, checked every ``check_every`` sweeps
        (``tol`` with neither ``residual`` nor a fused kernel is an InputError).
        The residual is ``residual`` (a reduction of (new, old) to a number, one more pass
        over the grid per check) or, for a stencil declared with ``combine=`` (e.g.
        ``jacobi2d_residual``), the partial the kernel returns from the sweep itself, with
        no second pass. Partials are combined along the fixed chunk tree, so the sweep
        count and residual are bitwise the same for any number of workers. With boundary
        'none' the edge rows of ``u`` are copied to ``out`` first, so they stay fixed; with
        'fixed' nothing is copied: each array keeps its own edges (rows and whatever else
        the kernel leaves unwritten), as in a NumPy loop updating the two in turn.
        The kernel's ``out`` holds the sweep before last (a leapfrog step may read it). Both
        arrays are written in turn, so no other argument may share memory with either.

        Returns the array holding the last sweep (the other holds the sweep before), or
        with ``info=True`` an ``IterateResult(array, sweeps, residual, block_sweeps)``:
        the sweeps run and the last residual checked (None without one).

        ``block_sweeps``: stencils run up to k sweeps per barrier in
        cache-sized tiles (temporal blocking: halo rows recomputed to save memory traffic);
        None chooses k from the depth, the row size and the cache, 1 runs plain sweeps
        (a given k is capped at 64 and at rows / (2 * depth); blocks have an odd number of
        sweeps, so an even k runs as k - 1: both arrays then end as plain sweeps leave
        them, the elements a kernel never writes included).
        A fused stencil whose combine is idempotent (``np.maximum``, or declared with
        ``@kernel(idempotent=True)``, as ``jacobi2d_residual``) is checked at every level
        of a block, from the block's own pass, and a solve that converges inside a block sweeps that block again plainly up to the
        converged sweep (once, at the end). Any other residual is checked only at block
        boundaries: every check sweep (and the last) ends a block and runs plain. Either
        way results, residuals, the sweep count and both arrays are bitwise those of plain
        sweeps. 'periodic' runs k = 1 (it needs the other end of the array at every
        sweep), as do arrays of <= 2 * depth + 1 rows and kernels that may read ``out``
        (anything but ``out[...] = v``, ``out.shape`` and ``len(out)``, from numba's IR;
        a given k > 1 is refused for them).

        ``progress`` advances after every sweep (or block of sweeps), by the chunks swept;
        the kernel is called as without it. ``chunk_rows`` (as in :meth:`map`) sets the
        chunks that the workers' rows are split into and a residual's combine tree: the
        sweeps are bitwise the same for any chunk size, a residual whose combine is exact
        (``np.maximum``) too, while a sum of partials may round differently.
        **Step programs**: ``kernel`` may be ``sc.program(sc.stage(k1, *args1),
        sc.stage(k2, *args2), ..., swap=[(a, b)])`` (and no out, u): every step runs the
        stages in order inside the workers, a barrier between them, bitwise as the Python
        loop of ``pool.map`` calls they are written as; ``sc.STEP`` as a stage argument is
        the step index; ``sc.stage(k, out, u, ..., sweeps=n)`` is a nested iterate of n
        plain sweeps. When the last stage is a fused stencil (``combine=``), its combined
        partial is the residual: ``tol=``/``check_every=`` stop after a step as above (no
        ``residual=``, no blocking; local pools). Returns ``roles``: ``roles[a]`` is the
        array now holding a's role (swaps move them); with ``info=True``,
        ``IterateResult(roles, steps run, residual, 1)``. See
        sharedcompute/_iterate/program.py and the guide's "Step programs".

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.stencils import heat1d, jacobi2d_residual
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     u = pool.array(np.array([0.0, 0.0, 4.0, 0.0, 0.0])); out = pool.empty_like(u)
        ...     pool.iterate(heat1d, out, u, 0.25, steps=2).numpy()
        array([0. , 1. , 1.5, 1. , 0. ])
        >>> with sc.Pool(2, backend="inline") as pool:
        ...     g = np.zeros((6, 6)); g[0] = 1.0
        ...     u = pool.array(g); out = pool.empty_like(u)
        ...     r = pool.iterate(jacobi2d_residual, out, u, steps=10_000, tol=1e-3,
        ...                      check_every=1, info=True)
        ...     r.sweeps, r.residual <= 1e-3
        (21, True)
        """
        if isinstance(kernel, Program):
            if out is not None or u is not None or params or kwargs:
                raise InputError("pool.iterate(program, steps=N) takes no arrays: each "
                                 "stage names its own, sc.stage(kernel, *args)")
            args: tuple = ()
        else:
            args = (out, u) + params
        if kwargs and isinstance(kernel, Kernel):
            args = kernel.ordered_args(args, kwargs)
        if timeout is not None:  # None needs no check
            timeout = check_timeout(timeout)
        chunk_rows = check_chunk_rows(chunk_rows)
        self._refuse_in_task_thread()
        with self._lock:
            self._check_open()
            return self._backend.iterate(kernel, args, steps=steps,
                                         residual=residual, tol=tol, check_every=check_every,
                                         boundary=boundary, timeout=timeout, progress=progress,
                                         boundscheck=self.boundscheck, depth=depth, info=info,
                                         block_sweeps=block_sweeps, chunk_rows=chunk_rows)

    def bind(self, kernel: Kernel, *args: Any, rows: int | None = None, boundary: Any = None,
             depth: int | None = None, schedule: str | None = None,
             timeout: float | None = None, partial: bool = False,
             chunk_rows: int | None = None, **kwargs: Any) -> Any:
        """A call planned and checked once, for hot loops: ``call()`` runs it again and
        returns what ``map`` (or, for a reduction, ``reduce``; with ``partial=True``,
        ``map(..., partial=True)``) returns.

        Arguments and options are those of map/reduce, fixed now; wrong ones raise here.
        The first ``call()`` sends the task; later calls only ring the workers (no planning,
        no per-array checks: one poll says no worker died and no block was touched).
        Arrays freed, closed, truncated or unlinked are still refused before any worker
        runs, and a restarted pool plans again by itself. A small plain NumPy argument may
        be changed in place between calls: its new contents are used.

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.elementwise import axpy
        >>> with sc.Pool(2) as pool:
        ...     y = pool.zeros(4); x = pool.array(np.arange(4.0))
        ...     step = pool.bind(axpy, y, x, 0.5)
        ...     for _ in range(4):
        ...         _ = step()
        ...     y.numpy()
        array([0., 2., 4., 6.])
        """
        b = BoundCall(self._call_bound, kernel, args, kwargs, self.boundscheck, rows, boundary,
                      depth, schedule, timeout, partial, chunk_rows)
        self._check_bound(b)  # plans once, runs nothing: a wrong argument fails here
        return b

    def _check_bound(self, b: Any) -> None:
        self._refuse_in_task_thread()
        with self._lock:
            self._check_open()
            self._backend.check_bound(b)

    def _call_bound(self, b: Any) -> Any:
        """A bound call's run: the backend's cached path (a plain call on Dask)."""
        self._refuse_in_task_thread()
        with self._lock:
            self._check_open()
            return self._backend.call_bound(b)

    # -- tasks ----------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., _Y], /, *args: Any, timeout: float | None = None,
               **kwargs: Any) -> Future[_Y]:
        """Run ``fn(*args, **kwargs)`` in a worker; returns a ``concurrent.futures.Future``.

        ``fn`` is any function (numba or not; from a module by name, from a notebook cell,
        ``__main__`` or a closure by value, with cloudpickle). SharedArray arguments travel as
        handles (no copy) and a task may write its own slice of a shared output; the result
        comes back pickled, an exception with the worker's traceback as its cause. Idle
        workers take the next task; tiny tasks are batched automatically. ``timeout``
        (seconds from the task's start; for a keyword of that name, use functools.partial)
        raises KernelTimeoutError in the future and replaces its worker. A worker that dies fails only its own task's future, with
        WorkerCrashedError; the pool restarts its workers and goes on. ``future.cancel()``
        works until the task starts. Kernel calls wait while tasks run, and tasks while a
        kernel call runs.

        Examples
        --------
        >>> import math, sharedcompute as sc
        >>> from concurrent.futures import as_completed
        >>> with sc.Pool(2) as pool:
        ...     futures = [pool.submit(math.factorial, n) for n in range(5)]
        ...     sorted(f.result() for f in as_completed(futures))
        [1, 1, 2, 6, 24]
        """
        if timeout is not None:  # None needs no check
            timeout = check_timeout(timeout)
        self._check_open()
        return self._backend.submit(fn, args, kwargs, timeout, self._task_runner)

    def imap(self, fn: Callable[[_X], _Y], iterable: Iterable[_X],
             chunksize: int | None = None, *, timeout: float | None = None,
             progress: Any = False) -> Iterator[_Y]:
        """``fn(x)`` for each item of ``iterable`` as tasks, yielded in order (the stdlib's
        ``Pool.imap``). Items are taken lazily (at most about a thousand ahead); with
        ``chunksize=None`` tiny tasks are batched by their measured cost, and every item is
        still its own task (a crash fails only it). ``timeout`` applies to each task,
        ``progress`` advances per finished task; a failed item raises when reached, and
        leaving the loop early cancels the items not yet started.

        Examples
        --------
        >>> import math, sharedcompute as sc
        >>> with sc.Pool(2) as pool:
        ...     list(pool.imap(math.sqrt, [1, 4, 9]))
        [1.0, 2.0, 3.0]
        """
        return self._imap(fn, iterable, True, chunksize, timeout, progress)

    def imap_unordered(self, fn: Callable[[_X], _Y], iterable: Iterable[_X],
                       chunksize: int | None = None, *, timeout: float | None = None,
                       progress: Any = False) -> Iterator[_Y]:
        """As :meth:`imap`, but results are yielded as tasks finish.

        Examples
        --------
        >>> import math, sharedcompute as sc
        >>> with sc.Pool(2) as pool:
        ...     sorted(pool.imap_unordered(math.sqrt, [1, 4, 9]))
        [1.0, 2.0, 3.0]
        """
        return self._imap(fn, iterable, False, chunksize, timeout, progress)

    def _imap(self, fn: Any, iterable: Iterable, ordered: bool, chunksize: Any, timeout: Any,
              progress: Any) -> Iterator:
        if timeout is not None:  # None needs no check
            timeout = check_timeout(timeout)
        self._check_open()
        return self._backend.imap(fn, iterable, ordered, chunksize, timeout, progress,
                                  self._task_runner)

    def _map_tasks(self, fn: Any, args: tuple, kwargs: dict, chunksize: Any, timeout: Any,
                   progress: Any) -> list:
        items = items_to_map(fn, args, kwargs)
        return list(self._imap(fn, items, True, chunksize, timeout, progress))

    def _refuse_in_task_thread(self) -> None:
        if self._tasks is not None and self._tasks.thread is threading.current_thread():
            raise PoolError("a kernel call from a task's done-callback would wait for the "
                            "tasks that run the callback; submit it as a task, or call it "
                            "after future.result() in your own thread")

    def _task_runner(self) -> TaskRunner:
        """The pool's task runner, made when the backend first queues a task."""
        if self._tasks is None:
            with self._lock:
                if self._tasks is None:
                    self._tasks = TaskRunner(self._backend, self._lock)
        return self._tasks

    def _block_released(self, name: str) -> None:
        if not self._closed:
            self._backend.block_released(name)

    # -- state and lifetime ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def restarts(self) -> int:
        """How many times the workers were restarted after a crash, timeout or Ctrl-C."""
        return self._backend.restarts

    @property
    def pids(self) -> list[int]:
        return list(self._backend.pids)

    def insights(self) -> Insights:
        """Per-worker seconds spent attaching, compiling, computing and idle.

        Examples
        --------
        >>> import sharedcompute as sc
        >>> with sc.Pool(1, backend="inline") as pool:
        ...     "imbalance" in str(pool.insights())
        True
        """
        return self._backend.insights()

    def warmup(self, kernels: Any, dtypes: Any = None, *,
               timeout: float | None = None) -> dict:
        """Load or compile kernels in every worker now, so that the first call does not.

        ``kernels``: a kernel, a ``(kernel, *example_args)`` tuple, or a list of them. The
        example arguments give the signature that a call with those arguments compiles:
        arrays (SharedArray or NumPy: only their dtype, dimensions and layout count; nothing
        is sent) and scalars (``2.0`` is float64, ``3`` int64). A bare kernel stands for one
        whose every parameter is a 1-d array. ``dtypes``: every array argument takes each of
        these dtypes in turn (one signature each); by default the examples' own, float64
        for a bare kernel. Each worker loads the machine code from numba's disk cache, or
        compiles (and caches) it; the seconds show as compile time in :meth:`insights`, and
        the first call then compiles nothing. Returns ``{kernel name: [signature, ...]}``.
        Scan kernels warm their totals pass only (the carry's type comes from a real call).

        Under forkserver (Linux's default here) the server that forks the workers has
        already imported NumPy, numba and the kernel modules and set up numba. Under spawn
        (macOS, Windows) every worker still imports NumPy, numba and the kernel modules
        itself when it starts (about 0.8 s, in parallel); warmup moves only the cache load
        or compile out of the first call.

        Examples
        --------
        >>> import numpy as np, sharedcompute as sc
        >>> from sharedcompute.kernels.elementwise import triad
        >>> from sharedcompute.kernels.reductions import total
        >>> with sc.Pool(2) as pool:
        ...     a = pool.zeros(1000)
        ...     signatures = pool.warmup([(triad, a, a, a, 2.0), total],
        ...                              [np.float64, np.float32])
        ...     len(signatures["triad"]), len(signatures["total"])
        (2, 2)
        """
        if timeout is not None:  # None needs no check
            timeout = check_timeout(timeout)
        self._refuse_in_task_thread()
        with self._lock:
            self._check_open()
            return self._backend.warmup(kernels, dtypes, self.boundscheck, timeout)

    def _check_open(self) -> None:
        if self._closed:
            if self._owner_pid != os.getpid():
                raise PoolError(f"this pool belongs to process {self._owner_pid}, which forked "
                                "this one; a forked child cannot use its parent's workers: "
                                "create a new sc.Pool() here")
            raise PoolClosedError("this pool is closed; create a new sc.Pool()")

    def _forked_away(self) -> None:
        """In a child made by os.fork(): this pool's workers are the parent's. Let go of
        them without stopping, joining or signalling any, and refuse further use."""
        self._lock = threading.RLock()  # a parent thread may have held it at the fork
        self._closed = True
        self._blocks = weakref.WeakSet()  # the parent's to free, not ours
        self._backend.forget_after_fork()

    def close(self) -> None:
        """Stop the workers and free every shared array this pool created. Tasks not yet
        started are cancelled and running ones fail with PoolClosedError (leaving a
        ``with`` block normally waits for submitted tasks first)."""
        if self._closed:
            return
        runner = self._tasks
        if runner is not None:
            runner.close()
        if not self._lock.acquire(blocking=False):
            # a call is running in another thread: interrupt it as Ctrl-C would (its workers
            # are killed; it raises PoolClosedError), instead of waiting for it for ever
            self._backend.interrupt()
            self._lock.acquire()
        try:
            self._closed = True
            self._backend.close()
            for block in list(self._blocks):
                block.release(strict=False)
        finally:
            self._lock.release()
        if runner is not None:
            runner.wait_idle()  # every future is settled when close() returns
        _live_pools.discard(self)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None and self._tasks is not None and not self._closed:
            self._tasks.wait_idle()  # as ProcessPoolExecutor's shutdown(wait=True)
        self.close()

    def __reduce__(self):
        raise TypeError("a sharedcompute Pool cannot be pickled or sent to another process; "
                        "send its SharedArrays instead")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<sharedcompute.Pool {self.n_workers} workers, {self.start_method}, {state}>"

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _shape_of(x: Any) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _dtype_of(x: Any) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _on_release(name: str) -> None:
    for pool in list(_live_pools):
        pool._block_released(name)


on_block_release(_on_release)


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._forked_away()
    _live_pools.clear()
    _forget_parents_forkserver()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
