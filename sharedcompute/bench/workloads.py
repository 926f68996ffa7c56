"""The workloads: one function per kind of registry kernel, each running every approach.

Which workload a kernel gets, its sizes, repeats and parameters come from its registry
entry's ``bench`` dict alone (``kernels.registry.ENTRIES[name].bench``): ``workload="triad"``
names ``wl_triad`` here; an entry without ``workload`` runs ``wl_generic`` (NumPy, the
engine in process and the pool). ``size`` / ``quick`` are the problem size of a full and
a ``--quick`` run; ``bytes_per_row`` the bytes moved per row (for GB/s);
``peak_bytes_per_cell`` the peak memory per cell of an n x n workload (to skip what does
not fit). Every result is checked against the kernel's NumPy reference.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .peers import (bounds, have_joblib, joblib_triad, mp_dot, mp_jacobi, mp_logistic,
                    mp_mandelbrot, mp_matmul, mp_total, mp_triad, twins)
from .session import MANDEL_BOX, Session, checker, nan_fill, verdict


def workload_for(entry: Any) -> Callable[[Session, Any], None]:
    """The workload the entry's ``bench["workload"]`` names (``wl_<name>``), else wl_generic."""
    name = entry.bench.get("workload", "generic")
    wl = globals().get(f"wl_{name}")
    if wl is None:
        raise LookupError(f"registry entry {entry.name!r}: no bench workload {name!r} "
                          f"(sharedcompute/bench/workloads.py has no wl_{name})")
    return wl


def problem_size(entry: Any, quick: bool) -> int:
    """The registry's problem size of a full run, or of a ``--quick`` one."""
    return int(entry.bench["quick"] if quick else entry.bench["size"])


def scale(ctx: Session, name: str, pool_run: Callable[[Any], Callable[[], Any]],
          pool_kw: dict, prange_run: Callable[[], Any], prange_kw: dict) -> None:
    """With --plot: this workload's pool and prange rows again at the scaling panel's other
    worker counts, timed exactly as the table's rows (same arrays, setup, repeats, check),
    so the panel's curve runs through the table's own figures."""
    import numba
    for w in ctx.scaling_workers():
        if w != ctx.workers:
            ctx.add(name, "pool", pool_run(ctx.pool_of(w)), workers=w, **pool_kw)
    for w in ctx.scaling_workers():
        if w != ctx.pthreads and w <= numba.config.NUMBA_NUM_THREADS:
            numba.set_num_threads(w)
            try:
                ctx.add(name, "prange", prange_run, workers=w, **prange_kw)
            finally:
                numba.set_num_threads(ctx.pthreads)


def wl_triad(ctx: Session, entry: Any) -> None:
    k, n, reps = entry.kernel, problem_size(entry, ctx.quick), entry.bench.get("repeats", 5)
    name = f"triad n=2^{int(math.log2(n))}" if n & (n - 1) == 0 else f"triad n={n}"
    tw, W, s = twins(), ctx.workers, 3.0
    rng = np.random.default_rng(0)
    b, c = rng.random(n), rng.random(n)
    nbytes = entry.bench.get("bytes_per_row", 24) * n
    rtol, atol = k.tolerance(np.float64)
    want = np.empty(n)
    ctx.add(name, "numpy", lambda: k.reference(want, b, c, s), repeats=reps,
            setup=nan_fill(want), nbytes=nbytes, stream="triad")
    chk = checker(want, rtol, atol)
    a = np.empty(n)
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(a, b, c, s), a)[1], repeats=reps,
            setup=nan_fill(a), check=chk, nbytes=nbytes, stream="triad")
    prange_kw = {"repeats": reps, "setup": nan_fill(a), "check": chk, "nbytes": nbytes,
                 "stream": "triad"}
    ctx.add(name, "prange", lambda: (tw.triad(a, b, c, s), a)[1], **prange_kw)
    bs, cs, as_ = ctx.share(b), ctx.share(c), ctx.empty(n)
    pool_kw = {"repeats": reps, "setup": nan_fill(as_), "check": chk, "nbytes": nbytes,
               "stream": "triad"}
    ctx.add(name, "pool", lambda: ctx.pool.map(k, as_, bs, cs, s), **pool_kw)
    scale(ctx, name, lambda p: lambda: p.map(k, as_, bs, cs, s), pool_kw,
          lambda: (tw.triad(a, b, c, s), a)[1], prange_kw)
    chunks = bounds(n, W)
    if ctx.mp_fits(name, nbytes):
        def mp_run() -> np.ndarray:
            parts = ctx.mp_pool().map(mp_triad, [(b[i:j], c[i:j], s) for i, j in chunks])
            np.concatenate(parts, out=a)
            return a
        ctx.add(name, "mp.Pool", mp_run, repeats=min(reps, 5), setup=nan_fill(a), check=chk,
                nbytes=nbytes, stream="triad", note=f"{len(chunks)} pickled chunks")
    if have_joblib() and ctx.mp_fits(name, nbytes):
        joblib_triad(ctx, name, a, b, c, s, chunks, chk, reps, nbytes)


def wl_total(ctx: Session, entry: Any) -> None:
    _reduction(ctx, entry, 1)


def wl_dot(ctx: Session, entry: Any) -> None:
    _reduction(ctx, entry, 2)


def _reduction(ctx: Session, entry: Any, n_in: int) -> None:
    k, n, reps = entry.kernel, problem_size(entry, ctx.quick), entry.bench.get("repeats", 5)
    name = f"{k.name} n=2^{int(math.log2(n))}" if n & (n - 1) == 0 else f"{k.name} n={n}"
    tw, W = twins(), ctx.workers
    rng = np.random.default_rng(1)
    xs = [rng.random(n) for _ in range(n_in)]
    nbytes = entry.bench.get("bytes_per_row", 8 * n_in) * n
    rtol, atol = k.tolerance(np.float64)
    ctx.add(name, "numpy", lambda: k.reference(*xs), repeats=reps, nbytes=nbytes,
            stream="read")
    want = k.reference(*xs)
    chk = checker(want, rtol, atol)
    ctx.add(name, "numba-1t", lambda: k.dispatcher(*xs), repeats=reps, check=chk,
            nbytes=nbytes, stream="read")
    par = tw.total if n_in == 1 else tw.dot
    ctx.add(name, "prange", lambda: par(*xs), repeats=reps, check=chk, nbytes=nbytes,
            stream="read")
    shared = [ctx.share(x) for x in xs]
    ctx.add(name, "pool", lambda: ctx.pool.reduce(k, *shared), repeats=reps, check=chk,
            nbytes=nbytes, stream="read")
    chunks = bounds(n, W)
    if ctx.mp_fits(name, nbytes):
        if n_in == 1:
            def mp_run() -> float:
                return sum(ctx.mp_pool().map(mp_total, [xs[0][i:j] for i, j in chunks]))
        else:
            def mp_run() -> float:
                return sum(ctx.mp_pool().map(mp_dot, [(xs[0][i:j], xs[1][i:j])
                                                       for i, j in chunks]))
        ctx.add(name, "mp.Pool", mp_run, repeats=min(reps, 5), check=chk, nbytes=nbytes,
                stream="read", note=f"{len(chunks)} pickled chunks")


def wl_logistic_map(ctx: Session, entry: Any) -> None:
    k, n, reps = entry.kernel, problem_size(entry, ctx.quick), entry.bench.get("repeats", 5)
    n_iter, r = int(entry.bench.get("n_iter", 200)), 3.7
    name = f"logistic_map n=2^{int(math.log2(n))} x{n_iter}"
    tw, W = twins(), ctx.workers
    x = np.random.default_rng(2).uniform(0.1, 0.9, n)
    want = np.empty(n)
    rtol, atol = k.tolerance(np.float64)
    ctx.add(name, "numpy", lambda: k.reference(want, x, r, n_iter), repeats=reps,
            setup=nan_fill(want))
    chk = checker(want, rtol, atol)
    y = np.empty(n)
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(y, x, r, n_iter), y)[1], repeats=reps,
            setup=nan_fill(y), check=chk)
    ctx.add(name, "prange", lambda: (tw.logistic(y, x, r, n_iter), y)[1], repeats=reps,
            setup=nan_fill(y), check=chk)
    xs, ys = ctx.share(x), ctx.empty(n)
    ctx.add(name, "pool", lambda: ctx.pool.map(k, ys, xs, r, n_iter), repeats=reps,
            setup=nan_fill(ys), check=chk)
    chunks = bounds(n, W)

    def mp_run() -> np.ndarray:
        parts = ctx.mp_pool().map(mp_logistic, [(x[i:j], r, n_iter) for i, j in chunks])
        np.concatenate(parts, out=y)
        return y
    ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=nan_fill(y), check=chk,
            note=f"{len(chunks)} pickled chunks")


def jacobi_sweeps(sweep: Callable, a: np.ndarray, b: np.ndarray, sweeps: int) -> np.ndarray:
    """``sweeps`` sweeps from b (rows 0, n-1 fixed); returns the array with the last one."""
    src, dst = b, a
    for _ in range(sweeps):
        sweep(dst[1:-1], src)
        src, dst = dst, src
    return src


def wl_jacobi2d(ctx: Session, entry: Any) -> None:
    k, reps = entry.kernel, entry.bench.get("repeats", 3)
    n, sweeps = problem_size(entry, ctx.quick), int(entry.bench.get("sweeps", 20))
    _jacobi(ctx, k, n, sweeps, reps, with_mp=ctx.quick, prange=True)
    if not ctx.quick:
        # The textbook Pool pickles the whole grid twice per sweep: 20 round trips of
        # 2 x 512 MiB per run at 8192^2; it is compared at the quick size instead.
        ctx.skip(f"jacobi2d {n}^2 x{sweeps}", "mp.Pool",
                 f"at the full size: see jacobi2d {entry.bench['quick']}^2 (pickles the grid "
                 "both ways every sweep)")
        ctx.free_shared()
        _jacobi(ctx, k, int(entry.bench["quick"]), sweeps, reps, with_mp=True, prange=True)


def _jacobi(ctx: Session, k: Any, n: int, sweeps: int, reps: int, *, with_mp: bool,
            prange: bool) -> None:
    name = f"jacobi2d {n}^2 x{sweeps}"
    tw, W = twins(), ctx.workers
    u0 = np.random.default_rng(3).random((n, n))
    nbytes = 16.0 * n * n * sweeps  # read u once and write out once per sweep, ideally
    rtol, atol = k.tolerance(np.float64)

    def pair() -> tuple[np.ndarray, np.ndarray]:
        return np.empty((n, n)), np.empty((n, n))

    def reset(a: Any, b: Any) -> Callable[[], None]:
        def setup() -> None:
            av, bv = np.asarray(a), np.asarray(b)
            bv[...] = u0
            av.fill(np.nan)
            av[0], av[-1] = u0[0], u0[-1]
        return setup

    ra, rb = pair()
    ctx.add(name, "numpy", lambda: jacobi_sweeps(k.reference, ra, rb, sweeps), repeats=reps,
            setup=reset(ra, rb), warmup=0, nbytes=nbytes, stream="triad")
    want = ra if sweeps % 2 else rb  # the array holding the numpy run's last sweep
    chk = checker(want, rtol, atol)
    a, b = pair()
    ctx.add(name, "numba-1t", lambda: jacobi_sweeps(k.dispatcher, a, b, sweeps), repeats=reps,
            setup=reset(a, b), check=chk, nbytes=nbytes, stream="triad")
    if prange:
        ctx.add(name, "prange", lambda: (tw.jacobi(a, b, sweeps), a if sweeps % 2 else b)[1],
                repeats=reps, setup=reset(a, b), check=chk, nbytes=nbytes, stream="triad",
                note="sweep loop inside numba")
    us, outs = ctx.empty((n, n)), ctx.empty((n, n))
    ctx.add(name, "pool", lambda: ctx.pool.iterate(k, outs, us, steps=sweeps), repeats=reps,
            setup=reset(outs, us), check=chk, nbytes=nbytes, stream="triad",
            note="pool.iterate")
    if with_mp and ctx.mp_fits(name, 16.0 * n * n):
        chunks = bounds(n - 1, W, lo=1)

        def mp_run() -> np.ndarray:
            src, dst = b, a
            pool = ctx.mp_pool()
            for _ in range(sweeps):
                parts = pool.map(mp_jacobi, [src[i - 1:j + 1] for i, j in chunks])
                for (i, j), p in zip(chunks, parts):
                    dst[i:j] = p
                src, dst = dst, src
            return src
        ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=reset(a, b), check=chk,
                nbytes=nbytes, stream="triad", note="blocks+halo pickled each sweep")


def wl_mandelbrot(ctx: Session, entry: Any) -> None:
    k, reps = entry.kernel, entry.bench.get("repeats", 3)
    n, max_iter = problem_size(entry, ctx.quick), int(entry.bench.get("max_iter", 200))
    name = f"mandelbrot {n}^2 x{max_iter}"
    tw, W, box = twins(), ctx.workers, MANDEL_BOX
    want = np.empty((n, n), np.int32)
    ctx.add(name, "numpy", lambda: k.reference(want, *box, max_iter), repeats=reps,
            setup=nan_fill(want), warmup=0,
            note="" if ctx.quick else "runs all iterations on every pixel")
    chk = checker(want, 0.0, 0.0)
    out = np.empty((n, n), np.int32)
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(out, *box, max_iter, (0, n, n)), out)[1],
            repeats=reps, setup=nan_fill(out), check=chk)
    prange_kw = {"repeats": reps, "setup": nan_fill(out), "check": chk, "note": "static schedule"}
    ctx.add(name, "prange", lambda: (tw.mandelbrot(out, *box, max_iter), out)[1], **prange_kw)
    outs = ctx.empty((n, n), np.int32)
    pool_kw = {"repeats": reps, "setup": nan_fill(outs), "check": chk}
    ctx.add(name, "pool", lambda: ctx.pool.map(k, outs, *box, max_iter), **pool_kw)
    scale(ctx, name, lambda p: lambda: p.map(k, outs, *box, max_iter), pool_kw,
          lambda: (tw.mandelbrot(out, *box, max_iter), out)[1], prange_kw)
    chunks = bounds(n, W)

    def mp_run() -> np.ndarray:
        parts = ctx.mp_pool().map(mp_mandelbrot, [(i, j, n, n, box, max_iter)
                                                   for i, j in chunks])
        np.concatenate(parts, out=out)
        return out
    ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=nan_fill(out), check=chk,
            note=f"{len(chunks)} row blocks returned pickled")


def wl_matmul(ctx: Session, entry: Any) -> None:
    k, n, reps = entry.kernel, problem_size(entry, ctx.quick), entry.bench.get("repeats", 3)
    name = f"matmul {n}^3"
    tw, W = twins(), ctx.workers
    rng = np.random.default_rng(4)
    a, b = rng.random((n, n)), rng.random((n, n))
    want = np.empty((n, n))
    try:
        from threadpoolctl import threadpool_limits
        limit: Any = threadpool_limits(limits=W, user_api="blas")
    except Exception:  # noqa: BLE001  # pragma: no cover - BLAS keeps its threads
        limit = None
    try:
        ctx.add(name, "numpy", lambda: k.reference(want, a, b), repeats=reps,
                setup=nan_fill(want), note=f"BLAS on {W} threads")
    finally:
        if limit is not None:
            limit.unregister()
    rtol = 4 * n * float(np.finfo(np.float64).eps)  # BLAS sums in another order
    chk = checker(want, rtol, 0.0)
    c = np.empty((n, n))
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(c, a, b), c)[1], repeats=reps,
            setup=nan_fill(c), check=chk)
    ctx.add(name, "prange", lambda: (tw.matmul(c, a, b), c)[1], repeats=reps,
            setup=nan_fill(c), check=chk)
    As, Bs, Cs = ctx.share(a), ctx.share(b), ctx.empty((n, n))
    ctx.add(name, "pool", lambda: ctx.pool.map(k, Cs, As, Bs), repeats=reps,
            setup=nan_fill(Cs), check=chk, note="b passed whole")
    chunks = bounds(n, W)

    def mp_run() -> np.ndarray:
        parts = ctx.mp_pool().map(mp_matmul, [(a[i:j], b) for i, j in chunks])
        np.concatenate(parts, out=c)
        return c
    ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=nan_fill(c), check=chk,
            note="b pickled to every task")


def wl_generic(ctx: Session, entry: Any) -> None:
    """Any other registry kernel: NumPy reference, the engine in process (one thread, its
    chunking) and the pool; no prange twin."""
    from sharedcompute.verify import run_reference
    k, n, reps = entry.kernel, problem_size(entry, ctx.quick), entry.bench.get("repeats", 3)
    dtype = entry.dtypes[0]
    args, kwargs = entry.make(np.random.default_rng(5), n, dtype)
    rows = kwargs.get("rows")
    if "samples" in entry.bench:
        args = (int(entry.bench["quick_samples" if ctx.quick else "samples"]),) + args[1:]
    name = f"{k.name} n={n}"
    nbytes = entry.bench.get("bytes_per_row", 0) * n or None
    stream = None if nbytes is None else ("read" if k.kind == "reduce" else "triad")
    rtol, atol = k.tolerance(np.dtype(dtype))

    def fresh() -> list:
        return [np.array(x) if isinstance(x, np.ndarray) else x for x in args]

    def restore(work: list) -> Callable[[], None]:
        def setup() -> None:  # in-place kernels (axpy) must start from the same inputs
            for w, x in zip(work, args):
                if isinstance(x, np.ndarray):
                    np.asarray(w)[...] = x
        return setup

    ref_args, here = fresh(), fresh()
    shared = [ctx.share(x) if isinstance(x, np.ndarray) else x for x in args]
    if k.kind == "reduce":
        call_ref = (lambda: k.reference(*ref_args, rows=rows)) if rows is not None \
            else (lambda: k.reference(*ref_args))
        ctx.add(name, "numpy", call_ref, repeats=reps, nbytes=nbytes, stream=stream)
        want = call_ref()
        chk = checker(want, rtol, atol)
        ctx.add(name, "numba-1t", lambda: k(*here, rows=rows), repeats=reps, check=chk,
                nbytes=nbytes, stream=stream, note="engine in process (its chunking)")
        ctx.add(name, "pool", lambda: ctx.pool.reduce(k, *shared, rows=rows), repeats=reps,
                check=chk, nbytes=nbytes, stream=stream)
    else:
        out_i = k.writes[0]
        ctx.add(name, "numpy", lambda: run_reference(k, ref_args), repeats=reps,
                setup=restore(ref_args), nbytes=nbytes, stream=stream, warmup=0,
                note="one call" if k.depth else "")
        want = ref_args[out_i]
        keep = np.ones(want.shape[0], bool)
        if k.depth and k.boundary == "none":  # edge rows are never written
            keep[:k.depth] = keep[want.shape[0] - k.depth:] = False
        chk = lambda got: verdict(np.asarray(got)[keep], want[keep], rtol, atol)
        ctx.add(name, "numba-1t", lambda: (k(*here, rows=rows), here[out_i])[1],
                repeats=reps, setup=restore(here), check=chk, nbytes=nbytes, stream=stream,
                note="engine in process (its chunking)")
        ctx.add(name, "pool", lambda: (ctx.pool.map(k, *shared, rows=rows), shared[out_i])[1],
                repeats=reps, setup=restore(shared), check=chk, nbytes=nbytes, stream=stream)
    ctx.skip(name, "prange", "no prange twin for this kernel")


def peak_bytes(entry: Any, n: int) -> float:
    """Rough peak memory of a workload (private copies + shared copies + reference)."""
    if "peak_bytes_per_cell" in entry.bench:  # an n x n workload
        return float(entry.bench["peak_bytes_per_cell"]) * n * n
    return entry.bench.get("bytes_per_row", 24) * n * 4.0
