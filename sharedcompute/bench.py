"""``sharedcompute bench``: the library's workloads, every approach side by side, in one run.

For each workload (sizes and repeats from ``kernels.registry.ENTRIES[name].bench``) the same
computation runs as

* ``numpy``     the kernel's plain-NumPy reference (also the correctness reference),
* ``numba-1t``  the kernel's numba dispatcher on the whole array, one thread,
* ``prange``    a numba ``parallel=True`` twin (defined here) on as many threads as workers,
* ``pool``      ``sharedcompute.Pool.map / reduce / iterate`` on shared arrays,
* ``mp.Pool``   the textbook ``multiprocessing.Pool.map`` over pickled chunks (same numba
                kernel in the workers, so only the data movement differs),
* ``joblib``    ``joblib.Parallel`` (loky, default auto-memmapping), only if importable,

after warm-up (compiles excluded), with medians over repeats and every result checked
against the reference. Memory-bound workloads are reported as GB/s and as a percentage of a
STREAM-like bandwidth (numba prange copy / triad / read) measured in the same run. Fixed
costs (pool start per start method, dispatch latency, per-sweep cost of ``pool.iterate``,
worker private memory) are measured separately.

Order matters: pools with start_method='fork' are measured first, before any numba parallel
(OpenMP) thread exists in this process; everything after uses the default start method
(forkserver on Linux), which is safe after threads have started.

Run ``sharedcompute bench --help`` (or ``python -m sharedcompute.bench``).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

DEFAULT_KERNELS = ("triad", "total", "dot", "logistic_map", "jacobi2d", "mandelbrot", "matmul")
APPROACHES = ("numpy", "numba-1t", "prange", "pool", "mp.Pool", "joblib")
MANDEL_BOX = (-2.0, 1.0, -1.5, 1.5)
JOBLIB_PREFIX = "sharedcompute-bench-joblib-"


# -- results -----------------------------------------------------------------------------------
@dataclass
class Result:
    """Timings of one approach on one workload, and whether its answer was right."""

    workload: str
    approach: str
    times: list = field(default_factory=list)
    ok: bool | None = None          # None: not checked (e.g. it is the reference)
    check: str = ""
    note: str = ""
    nbytes: float | None = None     # bytes moved per call (memory-bound workloads)
    stream: str | None = None       # which STREAM figure it is compared with
    wall_s: float = 0.0             # warm-up, setup and check included

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    def as_dict(self) -> dict:
        d = dict(workload=self.workload, approach=self.approach, times_s=self.times,
                 median_s=self.median, min_s=min(self.times) if self.times else None,
                 max_s=max(self.times) if self.times else None, ok=self.ok, check=self.check,
                 note=self.note, bytes_per_call=self.nbytes, stream_ref=self.stream,
                 wall_s=self.wall_s)
        if self.nbytes and self.times:
            d["gb_per_s"] = self.nbytes / self.median / 1e9
        return d


def _measure(run: Callable[[], Any], *, repeats: int, warmup: int,
             setup: Callable[[], Any] | None = None, budget_s: float | None = None
             ) -> tuple[list, Any]:
    """Warm-up calls, then ``repeats`` timed calls (setup outside the timing); stops early
    once ``budget_s`` seconds of timed work are spent (at least one timed call)."""
    for _ in range(warmup):
        if setup:
            setup()
        run()
    times: list[float] = []
    out = None
    spent = 0.0
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: no collector pauses inside the timed calls
    try:
        for _ in range(max(1, repeats)):
            if setup:
                setup()
            t0 = time.perf_counter()
            out = run()
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
            if budget_s is not None and spent > budget_s:
                break
    finally:
        if was_enabled:
            gc.enable()
    return times, out


def _compare(got: Any, want: Any, rtol: float, atol: float = 0.0) -> tuple[bool, str]:
    """allclose-style check that says how far off the answer was."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False, f"shape {got.shape} != reference {want.shape}"
    if want.dtype.kind in "iub" and got.dtype.kind in "iub" and rtol == 0 and atol == 0:
        bad = int(np.count_nonzero(got != want))
        return bad == 0, ("exact" if bad == 0 else f"{bad} of {want.size} elements differ")
    g = got.astype(np.float64, copy=False)
    w = want.astype(np.float64, copy=False)
    with np.errstate(all="ignore"):
        err = np.abs(g - w)
        nan_mismatch = bool(np.any(np.isnan(g) != np.isnan(w)))
        scale = np.abs(w)
        rel = float(np.nanmax(err / np.where(scale > 0, scale, 1.0))) if err.size else 0.0
        ok = (not nan_mismatch) and bool(np.all((err <= atol + rtol * scale) | np.isnan(w)))
    detail = f"max rel err {rel:.1e} (rtol {rtol:.0e})"
    if nan_mismatch:
        detail += ", NaNs differ (rows not written?)"
    del err, g, w, scale
    return ok, detail


def _compare_values(got: Any, want: Any, rtol: float, atol: float) -> tuple[bool, str]:
    gp = got if isinstance(got, tuple) else (got,)
    wp = want if isinstance(want, tuple) else (want,)
    if len(gp) != len(wp):
        return False, "different number of parts"
    oks, details = [], []
    for g, w in zip(gp, wp):
        ok, d = _compare(np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64),
                         rtol, atol)
        oks.append(ok)
        details.append(d)
    return all(oks), "; ".join(details)


# -- numba parallel twins and STREAM -----------------------------------------------------------
_TWINS: Any = None


def _njit_parallel() -> Callable:
    import numba
    try:
        return numba.njit(parallel=True, cache=True)
    except Exception:  # pragma: no cover - no writable cache location
        return numba.njit(parallel=True)


def twins() -> Any:
    """numba ``parallel=True`` versions of the workloads (prange over the same rows)."""
    global _TWINS
    if _TWINS is not None:
        return _TWINS
    from types import SimpleNamespace

    from numba import prange
    jit = _njit_parallel()

    def p_copy(a, b):
        for i in prange(a.shape[0]):
            a[i] = b[i]

    def p_triad(a, b, c, s):
        for i in prange(a.shape[0]):
            a[i] = b[i] + s * c[i]

    def p_total(x):
        acc = 0.0
        for i in prange(x.shape[0]):
            acc += np.float64(x[i])
        return acc

    def p_dot(x, y):
        acc = 0.0
        for i in prange(x.shape[0]):
            acc += np.float64(x[i]) * np.float64(y[i])
        return acc

    def p_logistic(y, x, r, n_iter):
        for i in prange(y.shape[0]):
            v = x[i]
            for _ in range(n_iter):
                v = r * v * (1 - v)
            y[i] = v

    def p_jacobi(a, b, sweeps):
        # sweep k reads b (k even) or a (k odd) and writes the other; rows 0 and n-1 fixed.
        n, m = b.shape
        for k in range(sweeps):
            src = b if k % 2 == 0 else a
            dst = a if k % 2 == 0 else b
            for r in prange(1, n - 1):
                dst[r, 0] = src[r, 0]
                for j in range(1, m - 1):
                    dst[r, j] = 0.25 * (((src[r - 1, j] + src[r + 1, j]) + src[r, j - 1])
                                        + src[r, j + 1])
                if m > 1:
                    dst[r, m - 1] = src[r, m - 1]
        return sweeps

    def p_mandelbrot(out, x0, x1, y0, y1, max_iter):
        n, m = out.shape
        for i in prange(n):
            ci = y0 + (y1 - y0) * (np.float64(i) / n)
            for j in range(m):
                cr = x0 + (x1 - x0) * (np.float64(j) / m)
                zr = 0.0
                zi = 0.0
                count = max_iter
                for k in range(max_iter):
                    zr2 = zr * zr
                    zi2 = zi * zi
                    if zr2 + zi2 > 4.0:
                        count = k
                        break
                    zi = 2.0 * zr * zi + ci
                    zr = (zr2 - zi2) + cr
                out[i, j] = count

    def p_matmul(c, a, b):
        n, k = a.shape
        p = b.shape[1]
        for i in prange(n):
            for j in range(p):
                c[i, j] = 0.0
            for t in range(k):
                av = a[i, t]
                for j in range(p):
                    c[i, j] += av * b[t, j]

    _TWINS = SimpleNamespace(**{f.__name__[2:]: jit(f) for f in (
        p_copy, p_triad, p_total, p_dot, p_logistic, p_jacobi, p_mandelbrot, p_matmul)})
    return _TWINS


def stream(n: int, threads: int, repeats: int) -> dict:
    """STREAM-like copy / triad / read bandwidth (GB/s, STREAM byte counting) on ``threads``
    numba threads over float64 arrays of ``n`` elements (medians; best in 'best_')."""
    import numba
    tw = twins()
    a, b, c = np.zeros(n), np.full(n, 1.0), np.full(n, 2.0)
    numba.set_num_threads(threads)
    out: dict = dict(n=n, threads=threads)
    for name, run, nbytes in (("copy", lambda: tw.copy(a, b), 16 * n),
                              ("triad", lambda: tw.triad(a, b, c, 3.0), 24 * n),
                              ("read", lambda: tw.total(b), 8 * n)):
        times, _ = _measure(run, repeats=repeats, warmup=1)
        out[name] = nbytes / statistics.median(times) / 1e9
        out["best_" + name] = nbytes / min(times) / 1e9
    return out


# -- functions the textbook multiprocessing.Pool / joblib workers run ------------------------
def _mp_triad(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.elementwise import triad
    b, c, s = task
    a = np.empty_like(b)
    triad.dispatcher(a, b, c, s)
    return a


def _mp_total(x: np.ndarray) -> float:
    from sharedcompute.kernels.reductions import total
    return float(total.dispatcher(x))


def _mp_dot(task: tuple) -> float:
    from sharedcompute.kernels.reductions import dot
    return float(dot.dispatcher(*task))


def _mp_logistic(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.elementwise import logistic_map
    x, r, n_iter = task
    y = np.empty_like(x)
    logistic_map.dispatcher(y, x, r, n_iter)
    return y


def _mp_jacobi(block: np.ndarray) -> np.ndarray:
    """One Jacobi sweep of the interior rows of a block that carries one halo row each side."""
    from sharedcompute.kernels.stencils import jacobi2d
    out = np.empty((block.shape[0] - 2, block.shape[1]), block.dtype)
    jacobi2d.dispatcher(out, block)
    return out


def _mp_mandelbrot(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.compute import mandelbrot
    s, e, n, m, box, max_iter = task
    out = np.empty((e - s, m), np.int32)
    mandelbrot.dispatcher(out, *box, max_iter, (s, e, n))
    return out


def _mp_matmul(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.compute import matmul
    a, b = task
    c = np.empty((a.shape[0], b.shape[1]), a.dtype)
    matmul.dispatcher(c, a, b)
    return c


def _bounds(n: int, parts: int, lo: int = 0) -> list[tuple[int, int]]:
    edges = np.linspace(lo, n, parts + 1).astype(int)
    return [(int(s), int(e)) for s, e in zip(edges[:-1], edges[1:]) if e > s]


# -- the run's shared state -------------------------------------------------------------------
class _Ctx:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = bool(args.quick)
        self.workers = int(args.workers)
        self.pthreads = self.workers
        self.pool: Any = None
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.stream: dict = {}
        self.stream_1t: dict = {}
        self.fixed: dict = {}
        self.scaling: dict = {}
        self.step_s: dict = {}
        # timed seconds per approach after which its remaining repeats are dropped (n shows
        # how many ran): keeps the textbook Pool and NumPy's Mandelbrot from eating the run
        self.budget_s = 1.5 if self.quick else 20.0
        self._mp_pool: Any = None
        self._shared: list[Any] = []
        self.ram = _ram_bytes()

    # shared arrays made for one workload, freed when it ends
    def share(self, x: np.ndarray) -> Any:
        a = self.pool.array(x)
        self._shared.append(a)
        return a

    def empty(self, shape: Any, dtype: Any = np.float64) -> Any:
        a = self.pool.empty(shape, dtype)
        self._shared.append(a)
        return a

    def free_shared(self) -> None:
        gc.collect()
        for a in self._shared:
            try:
                a.free()
            except Exception:  # a view is still alive: the pool frees it at close
                pass
        self._shared = []

    def mp_pool(self) -> Any:
        if self._mp_pool is None:
            import sharedcompute as sc
            ctx = mp.get_context(sc.default_start_method())
            self._mp_pool = ctx.Pool(self.workers)
        return self._mp_pool

    def close(self) -> None:
        self.free_shared()
        if self._mp_pool is not None:
            self._mp_pool.close()
            self._mp_pool.join()
            self._mp_pool = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def add(self, wl: str, approach: str, run: Callable[[], Any], *, repeats: int,
            setup: Callable[[], Any] | None = None, check: Callable[[Any], tuple] | None = None,
            warmup: int = 1, note: str = "", nbytes: float | None = None,
            stream: str | None = None) -> Result:
        """Time one approach; a failure is recorded in the table, never dropped."""
        res = Result(wl, approach, note=note, nbytes=nbytes, stream=stream)
        if self.args.repeats:
            repeats = self.args.repeats
        t0 = time.perf_counter()
        try:
            res.times, out = _measure(run, repeats=repeats, warmup=warmup, setup=setup,
                                      budget_s=self.budget_s)
            if check is None:
                res.ok, res.check = None, "reference"
            else:
                res.ok, res.check = check(out)
            del out
        except Exception as exc:  # noqa: BLE001 - reported in the table
            res.ok, res.check = False, f"error: {type(exc).__name__}: {str(exc)[:160]}"
            res.times = []
        res.wall_s = time.perf_counter() - t0
        self.results.append(res)
        return res

    def skip(self, wl: str, approach: str, why: str) -> None:
        self.results.append(Result(wl, approach, ok=None, check="skipped", note=why))


def _ram_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except Exception:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _avail_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:
        return _ram_bytes()


def _mp_fits(ctx: _Ctx, wl: str, moved_bytes: float) -> bool:
    """The textbook Pool holds pickled copies of inputs and results at once: about three
    times the data moved. Skip (with a note) above a third of the machine's memory."""
    need = 3 * moved_bytes
    if need > ctx.ram / 3:
        ctx.skip(wl, "mp.Pool", f"skipped: ~{need / 2**30:.1f} GiB of pickled copies > 1/3 of "
                                f"RAM ({ctx.ram / 2**30:.0f} GiB)")
        return False
    return True


def _have_joblib() -> bool:
    try:
        import joblib  # noqa: F401
        return True
    except ImportError:
        return False


def _nan_fill(x: Any) -> Callable[[], None]:
    def setup() -> None:
        v = np.asarray(x)
        if v.dtype.kind == "f":
            v.fill(np.nan)
        else:
            v.fill(-1)
    return setup


# -- workloads --------------------------------------------------------------------------------
def _size(entry: Any, quick: bool) -> int:
    return int(entry.bench["quick"] if quick else entry.bench["size"])


def wl_triad(ctx: _Ctx, entry: Any) -> None:
    k, n, reps = entry.kernel, _size(entry, ctx.quick), entry.bench.get("repeats", 5)
    name = f"triad n=2^{int(math.log2(n))}" if n & (n - 1) == 0 else f"triad n={n}"
    tw, W, s = twins(), ctx.workers, 3.0
    rng = np.random.default_rng(0)
    b, c = rng.random(n), rng.random(n)
    nbytes = entry.bench.get("bytes_per_row", 24) * n
    rtol, atol = k.tolerance(np.float64)
    want = np.empty(n)
    ctx.add(name, "numpy", lambda: k.reference(want, b, c, s), repeats=reps,
            setup=_nan_fill(want), nbytes=nbytes, stream="triad")
    chk = lambda out: _compare(out, want, rtol, atol)  # noqa: E731
    a = np.empty(n)
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(a, b, c, s), a)[1], repeats=reps,
            setup=_nan_fill(a), check=chk, nbytes=nbytes, stream="triad")
    ctx.add(name, "prange", lambda: (tw.triad(a, b, c, s), a)[1], repeats=reps,
            setup=_nan_fill(a), check=chk, nbytes=nbytes, stream="triad")
    bs, cs, as_ = ctx.share(b), ctx.share(c), ctx.empty(n)
    ctx.add(name, "pool", lambda: ctx.pool.map(k, as_, bs, cs, s), repeats=reps,
            setup=_nan_fill(as_), check=chk, nbytes=nbytes, stream="triad")
    chunks = _bounds(n, W)
    if _mp_fits(ctx, name, nbytes):
        def mp_run() -> np.ndarray:
            parts = ctx.mp_pool().map(_mp_triad, [(b[i:j], c[i:j], s) for i, j in chunks])
            np.concatenate(parts, out=a)
            return a
        ctx.add(name, "mp.Pool", mp_run, repeats=min(reps, 5), setup=_nan_fill(a), check=chk,
                nbytes=nbytes, stream="triad", note=f"{len(chunks)} pickled chunks")
    if _have_joblib() and _mp_fits(ctx, name, nbytes):
        _joblib_triad(ctx, name, a, b, c, s, chunks, chk, reps, nbytes)


def _joblib_triad(ctx: _Ctx, name: str, a: np.ndarray, b: np.ndarray, c: np.ndarray, s: float,
                  chunks: list, chk: Callable, reps: int, nbytes: float) -> None:
    """joblib.Parallel with its defaults (loky workers, inputs over 1 MB memmapped), in a
    temp folder of our own: joblib would otherwise leave its folder until interpreter exit."""
    import shutil
    import tempfile

    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor
    from ._system import SHM_DIR
    tmp = tempfile.mkdtemp(prefix=JOBLIB_PREFIX, dir=SHM_DIR if os.path.isdir(SHM_DIR) else None)
    try:
        with Parallel(n_jobs=ctx.workers, temp_folder=tmp) as par:
            def jl_run() -> np.ndarray:
                parts = par(delayed(_mp_triad)((b[i:j], c[i:j], s)) for i, j in chunks)
                np.concatenate(parts, out=a)
                return a
            ctx.add(name, "joblib", jl_run, repeats=min(reps, 5), setup=_nan_fill(a),
                    check=chk, nbytes=nbytes, stream="triad",
                    note="loky, inputs auto-memmapped")
    finally:
        get_reusable_executor().shutdown(wait=True)
        shutil.rmtree(tmp, ignore_errors=True)


def wl_total(ctx: _Ctx, entry: Any) -> None:
    _reduction(ctx, entry, 1)


def wl_dot(ctx: _Ctx, entry: Any) -> None:
    _reduction(ctx, entry, 2)


def _reduction(ctx: _Ctx, entry: Any, n_in: int) -> None:
    k, n, reps = entry.kernel, _size(entry, ctx.quick), entry.bench.get("repeats", 5)
    name = f"{k.name} n=2^{int(math.log2(n))}" if n & (n - 1) == 0 else f"{k.name} n={n}"
    tw, W = twins(), ctx.workers
    rng = np.random.default_rng(1)
    xs = [rng.random(n) for _ in range(n_in)]
    nbytes = entry.bench.get("bytes_per_row", 8 * n_in) * n
    rtol, atol = k.tolerance(np.float64)
    ctx.add(name, "numpy", lambda: k.reference(*xs), repeats=reps, nbytes=nbytes,
            stream="read")
    want = k.reference(*xs)
    chk = lambda got: _compare_values(got, want, rtol, atol)  # noqa: E731
    ctx.add(name, "numba-1t", lambda: k.dispatcher(*xs), repeats=reps, check=chk,
            nbytes=nbytes, stream="read")
    par = tw.total if n_in == 1 else tw.dot
    ctx.add(name, "prange", lambda: par(*xs), repeats=reps, check=chk, nbytes=nbytes,
            stream="read")
    shared = [ctx.share(x) for x in xs]
    ctx.add(name, "pool", lambda: ctx.pool.reduce(k, *shared), repeats=reps, check=chk,
            nbytes=nbytes, stream="read")
    chunks = _bounds(n, W)
    if _mp_fits(ctx, name, nbytes):
        if n_in == 1:
            def mp_run() -> float:
                return sum(ctx.mp_pool().map(_mp_total, [xs[0][i:j] for i, j in chunks]))
        else:
            def mp_run() -> float:
                return sum(ctx.mp_pool().map(_mp_dot, [(xs[0][i:j], xs[1][i:j])
                                                       for i, j in chunks]))
        ctx.add(name, "mp.Pool", mp_run, repeats=min(reps, 5), check=chk, nbytes=nbytes,
                stream="read", note=f"{len(chunks)} pickled chunks")


def wl_logistic_map(ctx: _Ctx, entry: Any) -> None:
    k, n, reps = entry.kernel, _size(entry, ctx.quick), entry.bench.get("repeats", 5)
    n_iter, r = int(entry.bench.get("n_iter", 200)), 3.7
    name = f"logistic_map n=2^{int(math.log2(n))} x{n_iter}"
    tw, W = twins(), ctx.workers
    x = np.random.default_rng(2).uniform(0.1, 0.9, n)
    want = np.empty(n)
    rtol, atol = k.tolerance(np.float64)
    ctx.add(name, "numpy", lambda: k.reference(want, x, r, n_iter), repeats=reps,
            setup=_nan_fill(want))
    chk = lambda out: _compare(out, want, rtol, atol)  # noqa: E731
    y = np.empty(n)
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(y, x, r, n_iter), y)[1], repeats=reps,
            setup=_nan_fill(y), check=chk)
    ctx.add(name, "prange", lambda: (tw.logistic(y, x, r, n_iter), y)[1], repeats=reps,
            setup=_nan_fill(y), check=chk)
    xs, ys = ctx.share(x), ctx.empty(n)
    ctx.add(name, "pool", lambda: ctx.pool.map(k, ys, xs, r, n_iter), repeats=reps,
            setup=_nan_fill(ys), check=chk)
    chunks = _bounds(n, W)

    def mp_run() -> np.ndarray:
        parts = ctx.mp_pool().map(_mp_logistic, [(x[i:j], r, n_iter) for i, j in chunks])
        np.concatenate(parts, out=y)
        return y
    ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=_nan_fill(y), check=chk,
            note=f"{len(chunks)} pickled chunks")


def _jacobi_loop(sweep: Callable, a: np.ndarray, b: np.ndarray, sweeps: int) -> np.ndarray:
    """``sweeps`` sweeps from b (rows 0, n-1 fixed); returns the array with the last one."""
    src, dst = b, a
    for _ in range(sweeps):
        sweep(dst[1:-1], src)
        src, dst = dst, src
    return src


def wl_jacobi2d(ctx: _Ctx, entry: Any) -> None:
    k, reps = entry.kernel, entry.bench.get("repeats", 3)
    n, sweeps = _size(entry, ctx.quick), int(entry.bench.get("sweeps", 20))
    _jacobi(ctx, k, n, sweeps, reps, with_mp=ctx.quick, prange=True)
    if not ctx.quick:
        # The textbook Pool pickles the whole grid twice per sweep: 20 round trips of
        # 2 x 512 MiB per run at 8192^2; it is compared at the quick size instead.
        ctx.skip(f"jacobi2d {n}^2 x{sweeps}", "mp.Pool",
                 f"at the full size: see jacobi2d {entry.bench['quick']}^2 (pickles the grid "
                 "both ways every sweep)")
        ctx.free_shared()
        _jacobi(ctx, k, int(entry.bench["quick"]), sweeps, reps, with_mp=True, prange=True)


def _jacobi(ctx: _Ctx, k: Any, n: int, sweeps: int, reps: int, *, with_mp: bool,
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
    ctx.add(name, "numpy", lambda: _jacobi_loop(k.reference, ra, rb, sweeps), repeats=reps,
            setup=reset(ra, rb), warmup=0, nbytes=nbytes, stream="triad")
    want = ra if sweeps % 2 else rb  # the array holding the numpy run's last sweep
    chk = lambda out: _compare(out, want, rtol, atol)  # noqa: E731
    a, b = pair()
    ctx.add(name, "numba-1t", lambda: _jacobi_loop(k.dispatcher, a, b, sweeps), repeats=reps,
            setup=reset(a, b), check=chk, nbytes=nbytes, stream="triad")
    if prange:
        ctx.add(name, "prange", lambda: (tw.jacobi(a, b, sweeps), a if sweeps % 2 else b)[1],
                repeats=reps, setup=reset(a, b), check=chk, nbytes=nbytes, stream="triad",
                note="sweep loop inside numba")
    us, outs = ctx.empty((n, n)), ctx.empty((n, n))
    ctx.add(name, "pool", lambda: ctx.pool.iterate(k, outs, us, steps=sweeps), repeats=reps,
            setup=reset(outs, us), check=chk, nbytes=nbytes, stream="triad",
            note="pool.iterate")
    if with_mp and _mp_fits(ctx, name, 16.0 * n * n):
        chunks = _bounds(n - 1, W, lo=1)

        def mp_run() -> np.ndarray:
            src, dst = b, a
            pool = ctx.mp_pool()
            for _ in range(sweeps):
                parts = pool.map(_mp_jacobi, [src[i - 1:j + 1] for i, j in chunks])
                for (i, j), p in zip(chunks, parts):
                    dst[i:j] = p
                src, dst = dst, src
            return src
        ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=reset(a, b), check=chk,
                nbytes=nbytes, stream="triad", note="blocks+halo pickled each sweep")


def wl_mandelbrot(ctx: _Ctx, entry: Any) -> None:
    k, reps = entry.kernel, entry.bench.get("repeats", 3)
    n, max_iter = _size(entry, ctx.quick), int(entry.bench.get("max_iter", 200))
    name = f"mandelbrot {n}^2 x{max_iter}"
    tw, W, box = twins(), ctx.workers, MANDEL_BOX
    want = np.empty((n, n), np.int32)
    ctx.add(name, "numpy", lambda: k.reference(want, *box, max_iter), repeats=reps,
            setup=_nan_fill(want), warmup=0,
            note="" if ctx.quick else "runs all iterations on every pixel")
    chk = lambda out: _compare(out, want, 0.0, 0.0)  # noqa: E731
    out = np.empty((n, n), np.int32)
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(out, *box, max_iter, (0, n, n)), out)[1],
            repeats=reps, setup=_nan_fill(out), check=chk)
    ctx.add(name, "prange", lambda: (tw.mandelbrot(out, *box, max_iter), out)[1],
            repeats=reps, setup=_nan_fill(out), check=chk, note="static schedule")
    outs = ctx.empty((n, n), np.int32)
    ctx.add(name, "pool", lambda: ctx.pool.map(k, outs, *box, max_iter), repeats=reps,
            setup=_nan_fill(outs), check=chk)
    chunks = _bounds(n, W)

    def mp_run() -> np.ndarray:
        parts = ctx.mp_pool().map(_mp_mandelbrot, [(i, j, n, n, box, max_iter)
                                                   for i, j in chunks])
        np.concatenate(parts, out=out)
        return out
    ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=_nan_fill(out), check=chk,
            note=f"{len(chunks)} row blocks returned pickled")


def wl_matmul(ctx: _Ctx, entry: Any) -> None:
    k, n, reps = entry.kernel, _size(entry, ctx.quick), entry.bench.get("repeats", 3)
    name = f"matmul {n}^3"
    tw, W = twins(), ctx.workers
    rng = np.random.default_rng(4)
    a, b = rng.random((n, n)), rng.random((n, n))
    want = np.empty((n, n))
    try:
        from threadpoolctl import threadpool_limits
        limit: Any = threadpool_limits(limits=W, user_api="blas")
    except Exception:  # pragma: no cover
        limit = None
    try:
        ctx.add(name, "numpy", lambda: k.reference(want, a, b), repeats=reps,
                setup=_nan_fill(want), note=f"BLAS on {W} threads")
    finally:
        if limit is not None:
            limit.unregister()
    rtol = 4 * n * float(np.finfo(np.float64).eps)  # BLAS sums in another order
    chk = lambda out: _compare(out, want, rtol, 0.0)  # noqa: E731
    c = np.empty((n, n))
    ctx.add(name, "numba-1t", lambda: (k.dispatcher(c, a, b), c)[1], repeats=reps,
            setup=_nan_fill(c), check=chk)
    ctx.add(name, "prange", lambda: (tw.matmul(c, a, b), c)[1], repeats=reps,
            setup=_nan_fill(c), check=chk)
    As, Bs, Cs = ctx.share(a), ctx.share(b), ctx.empty((n, n))
    ctx.add(name, "pool", lambda: ctx.pool.map(k, Cs, As, Bs), repeats=reps,
            setup=_nan_fill(Cs), check=chk, note="b passed whole")
    chunks = _bounds(n, W)

    def mp_run() -> np.ndarray:
        parts = ctx.mp_pool().map(_mp_matmul, [(a[i:j], b) for i, j in chunks])
        np.concatenate(parts, out=c)
        return c
    ctx.add(name, "mp.Pool", mp_run, repeats=reps, setup=_nan_fill(c), check=chk,
            note="b pickled to every task")


def wl_generic(ctx: _Ctx, entry: Any) -> None:
    """Any other registry kernel: NumPy reference, the engine in process (one thread, its
    chunking) and the pool; no prange twin."""
    from sharedcompute.verify import run_reference
    k, n, reps = entry.kernel, _size(entry, ctx.quick), entry.bench.get("repeats", 3)
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
        chk = lambda got: _compare_values(got, want, rtol, atol)  # noqa: E731
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
        chk = lambda got: _compare(np.asarray(got)[keep], want[keep], rtol, atol)  # noqa: E731
        ctx.add(name, "numba-1t", lambda: (k(*here, rows=rows), here[out_i])[1],
                repeats=reps, setup=restore(here), check=chk, nbytes=nbytes, stream=stream,
                note="engine in process (its chunking)")
        ctx.add(name, "pool", lambda: (ctx.pool.map(k, *shared, rows=rows), shared[out_i])[1],
                repeats=reps, setup=restore(shared), check=chk, nbytes=nbytes, stream=stream)
    ctx.skip(name, "prange", "no prange twin for this kernel")


WORKLOADS: dict[str, Callable[[_Ctx, Any], None]] = {
    "triad": wl_triad, "total": wl_total, "dot": wl_dot, "logistic_map": wl_logistic_map,
    "jacobi2d": wl_jacobi2d, "mandelbrot": wl_mandelbrot, "matmul": wl_matmul,
}


def _est_bytes(entry: Any, n: int) -> float:
    """Rough peak memory of a workload (private copies + shared copies + reference)."""
    name = entry.name
    if name == "jacobi2d":
        return 8.0 * n * n * 8
    if name == "mandelbrot":
        return 4.0 * n * n * 14
    if name == "matmul":
        return 8.0 * n * n * 8
    per_row = entry.bench.get("bytes_per_row", 24)
    return per_row * n * 4.0


# -- fixed costs ------------------------------------------------------------------------------
def _worker_mem(pids: list[int]) -> list[dict]:
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for pid in pids:
        d: dict = dict(pid=pid)
        try:
            d["uss"] = psutil.Process(pid).memory_full_info().uss
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in ("RssAnon", "RssShmem", "RssFile"):
                        d[key] = int(line.split()[1]) * 1024
        except Exception as exc:  # noqa: BLE001
            d["error"] = str(exc)
        out.append(d)
    return out


def fixed_costs(ctx: _Ctx, reps: int) -> None:
    """Pool start per start method (fork first: no numba threads yet), map dispatch latency,
    per-sweep cost of iterate vs one map per sweep, and worker private memory."""
    import sharedcompute as sc
    from sharedcompute.kernels.elementwise import triad
    from sharedcompute.kernels.reductions import total
    from sharedcompute.kernels.stencils import jacobi2d
    W = ctx.workers
    phase = [time.perf_counter()]
    phases: dict = {}
    ctx.fixed["phase_s"] = phases

    def done(label: str) -> None:
        now = time.perf_counter()
        phases[label] = now - phase[0]
        phase[0] = now
    # warm the numba on-disk cache so workers load, not compile
    triad.dispatcher(np.zeros(4), np.ones(4), np.ones(4), 1.0)
    jacobi2d.dispatcher(np.zeros((2, 4)), np.ones((4, 4)))
    total.dispatcher(np.ones(4))
    tiny = [sc.SharedArray.from_array(np.ones(1000)) for _ in range(3)]
    starts: dict = {}
    for method in ("fork", "spawn", "forkserver"):
        if method not in mp.get_all_start_methods():
            continue
        rows = []
        for _ in range(reps + (1 if method == "forkserver" else 0)):
            t0 = time.perf_counter()
            p = sc.Pool(n_workers=W, start_method=method)
            t1 = time.perf_counter()
            p.map(triad, tiny[0], tiny[1], tiny[2], 2.0)
            t2 = time.perf_counter()
            p.close()
            t3 = time.perf_counter()
            rows.append(dict(start_s=t1 - t0, first_map_s=t2 - t1, total_s=t2 - t0,
                             close_s=t3 - t2))
        if method == "forkserver":  # the first start also starts the fork server itself
            starts["forkserver (first, starts server)"] = rows[:1]
            rows = rows[1:]
        starts[method] = rows
    ctx.fixed["pool_start"] = {m: dict(runs=r, median_total_s=statistics.median(
        [x["total_s"] for x in r]), median_start_s=statistics.median([x["start_s"] for x in r]),
        median_first_map_s=statistics.median([x["first_map_s"] for x in r]),
        median_close_s=statistics.median([x["close_s"] for x in r])) for m, r in starts.items()}

    done("pool starts")
    # the run's main pool (default start method: forkserver on Linux)
    ctx.pool = sc.Pool(n_workers=W)
    pool = ctx.pool
    ctx.fixed["main_pool"] = dict(workers=W, start_method=pool.start_method)
    n_maps = 60 if ctx.quick else 200
    for _ in range(20):
        pool.map(triad, tiny[0], tiny[1], tiny[2], 2.0)
    lat = []
    for _ in range(n_maps):
        t0 = time.perf_counter()
        pool.map(triad, tiny[0], tiny[1], tiny[2], 2.0)
        lat.append(time.perf_counter() - t0)
    rlat = []
    for _ in range(n_maps):
        t0 = time.perf_counter()
        pool.reduce(total, tiny[1])
        rlat.append(time.perf_counter() - t0)
    ctx.fixed["dispatch"] = dict(
        n=n_maps, map_median_s=statistics.median(lat), map_p10_s=float(np.percentile(lat, 10)),
        map_p90_s=float(np.percentile(lat, 90)), reduce_median_s=statistics.median(rlat),
        reduce_p90_s=float(np.percentile(rlat, 90)), rows=1000)

    done("main pool + dispatch")
    # iterate: per-sweep cost with the loop in the workers vs one pool.map per sweep
    g = 32
    steps = 500 if ctx.quick else 2000
    n_map_sweeps = 100 if ctx.quick else 400
    u0 = np.random.default_rng(6).random((g, g))
    us, outs = pool.array(u0), pool.zeros((g, g))
    pool.iterate(jacobi2d, outs, us, steps=10)
    it = []
    for _ in range(3):
        np.asarray(us)[...] = u0
        t0 = time.perf_counter()
        pool.iterate(jacobi2d, outs, us, steps=steps)
        it.append((time.perf_counter() - t0) / steps)
    mp_ = []
    for _ in range(3):
        src, dst = us, outs
        t0 = time.perf_counter()
        for _ in range(n_map_sweeps):
            pool.map(jacobi2d, dst, src)
            src, dst = dst, src
        mp_.append((time.perf_counter() - t0) / n_map_sweeps)
    a, b = np.zeros((g, g)), u0.copy()
    t0 = time.perf_counter()
    _jacobi_loop(jacobi2d.dispatcher, a, b, steps)
    one = (time.perf_counter() - t0) / steps
    ctx.fixed["iterate"] = dict(grid=g, steps=steps, iterate_per_sweep_s=statistics.median(it),
                                map_per_sweep_s=statistics.median(mp_),
                                numba_1t_per_sweep_s=one, map_sweeps=n_map_sweeps)
    for x in (us, outs):
        x.free()

    done("iterate")
    # private memory per worker after a map over a big array
    n = ctx.args.mem_n or (2**22 if ctx.quick else 2**26)
    mem: dict = dict(n=n, array_bytes=8 * n, idle=_worker_mem(pool.pids))
    bs, cs, as_ = pool.array(np.ones(n)), pool.array(np.ones(n)), pool.zeros(n)
    pool.map(triad, as_, bs, cs, 2.0)
    mem["after_map"] = _worker_mem(pool.pids)
    v = np.asarray(as_)
    float(v.sum())  # the parent now maps the output pages too
    del v
    mem["after_parent_read"] = _worker_mem(pool.pids)
    ctx.fixed["memory"] = mem
    for x in (bs, cs, as_):
        x.free()
    for x in tiny:
        x.free()
    done("memory")


# -- scaling (for --plot) ---------------------------------------------------------------------
def scaling(ctx: _Ctx, max_workers: int) -> None:
    """Speedup over numba-1t of pool and prange for 1..max_workers, triad and mandelbrot
    (full run: triad 2^24 and mandelbrot at half the side, enough for the curve's shape)."""
    import numba

    import sharedcompute as sc
    from sharedcompute.kernels.compute import mandelbrot
    from sharedcompute.kernels.elementwise import triad
    from sharedcompute.kernels.registry import ENTRIES
    tw = twins()
    nt = _size(ENTRIES["triad"], ctx.quick)
    nm = _size(ENTRIES["mandelbrot"], ctx.quick)
    if not ctx.quick:
        nt, nm = min(nt, 2**24), max(nm // 2, 1)
    out_sizes = dict(triad_n=nt, mandelbrot_n=nm)
    mi = int(ENTRIES["mandelbrot"].bench.get("max_iter", 200))
    reps = 3
    rng = np.random.default_rng(7)
    b, c, a = rng.random(nt), rng.random(nt), np.empty(nt)
    m = np.empty((nm, nm), np.int32)
    out: dict = dict(workers=[], triad=dict(pool=[], prange=[]),
                     mandelbrot=dict(pool=[], prange=[]), stream_triad=[])
    t1 = statistics.median(_measure(lambda: triad.dispatcher(a, b, c, 3.0), repeats=reps,
                                    warmup=1)[0])
    m1 = statistics.median(_measure(lambda: mandelbrot.dispatcher(m, *MANDEL_BOX, mi,
                                                                  (0, nm, nm)),
                                    repeats=reps, warmup=1)[0])
    out["numba_1t"] = dict(triad=t1, mandelbrot=m1)
    out["sizes"] = out_sizes
    max_threads = numba.config.NUMBA_NUM_THREADS
    for w in range(1, max_workers + 1):
        out["workers"].append(w)
        pool = ctx.pool if w == ctx.workers and ctx.pool is not None else sc.Pool(n_workers=w)
        try:
            bs, cs, as_ = pool.array(b), pool.array(c), pool.empty(nt)
            ms = pool.empty((nm, nm), np.int32)
            tp = _measure(lambda: pool.map(triad, as_, bs, cs, 3.0), repeats=reps, warmup=1)[0]
            mp_ = _measure(lambda: pool.map(mandelbrot, ms, *MANDEL_BOX, mi), repeats=reps,
                           warmup=1)[0]
            out["triad"]["pool"].append(t1 / statistics.median(tp))
            out["mandelbrot"]["pool"].append(m1 / statistics.median(mp_))
            for x in (bs, cs, as_, ms):
                x.free()
        finally:
            if pool is not ctx.pool:
                pool.close()
        if w <= max_threads:
            numba.set_num_threads(w)
            tp = _measure(lambda: tw.triad(a, b, c, 3.0), repeats=reps, warmup=1)[0]
            mp_ = _measure(lambda: tw.mandelbrot(m, *MANDEL_BOX, mi), repeats=reps, warmup=1)[0]
            out["triad"]["prange"].append(t1 / statistics.median(tp))
            out["mandelbrot"]["prange"].append(m1 / statistics.median(mp_))
            out["stream_triad"].append(stream(max(nt, 2**23), w, 5)["triad"])
        else:
            out["triad"]["prange"].append(math.nan)
            out["mandelbrot"]["prange"].append(math.nan)
            out["stream_triad"].append(math.nan)
    numba.set_num_threads(ctx.pthreads)
    ctx.scaling = out


# -- report -----------------------------------------------------------------------------------
def _fmt_t(t: float) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def _fmt_b(n: float) -> str:
    from ._system import format_bytes
    return format_bytes(n)


def table(ctx: _Ctx) -> str:
    """The results as a plain-text table (ratios: time of the baseline / time of the row)."""
    lines = []
    hdr = (f"{'workload':<26} {'approach':<9} {'n':>2} {'median':>9} {'min..max':>19} "
           f"{'x numba1':>8} {'x prange':>8} {'GB/s':>6} {'%STREAM':>7}  check")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    by_wl: dict[str, list[Result]] = {}
    for r in ctx.results:
        by_wl.setdefault(r.workload, []).append(r)
    for wl, rows in by_wl.items():
        base = {r.approach: r.median for r in rows if r.times}
        for r in rows:
            if not r.times:
                lines.append(f"{wl:<26} {r.approach:<9} {'':>2} {'-':>9} {'':>19} {'':>8} "
                             f"{'':>8} {'':>6} {'':>7}  "
                             f"{'FAIL ' if r.ok is False else ''}{r.check}"
                             f"{'; ' + r.note if r.note else ''}")
                continue
            med = r.median
            mm = f"{_fmt_t(min(r.times))}..{_fmt_t(max(r.times))}"
            x1 = f"{base['numba-1t'] / med:.2f}" if "numba-1t" in base else "-"
            xp = f"{base['prange'] / med:.2f}" if "prange" in base else "-"
            gbs = pct = "-"
            if r.nbytes:
                g = r.nbytes / med / 1e9
                gbs = f"{g:.1f}"
                ref = ctx.stream.get(r.stream or "")
                if ref:
                    pct = f"{100 * g / ref:.0f}%"
            status = "ok" if r.ok else ("ref" if r.ok is None else "FAIL")
            detail = r.check if r.ok is not None else ""
            lines.append(f"{wl:<26} {r.approach:<9} {len(r.times):>2} {_fmt_t(med):>9} "
                         f"{mm:>19} {x1:>8} {xp:>8} {gbs:>6} {pct:>7}  {status}"
                         f"{' ' + detail if detail and not r.ok else ''}"
                         f"{' (' + r.note + ')' if r.note else ''}")
        lines.append("")
    return "\n".join(lines)


def fixed_report(ctx: _Ctx) -> str:
    f = ctx.fixed
    out = []
    if "pool_start" in f:
        out.append(f"Pool start, {ctx.workers} workers (start + first tiny map; numba cache warm):")
        for m, d in f["pool_start"].items():
            out.append(f"  {m:<34} {_fmt_t(d['median_total_s']):>9}  (start "
                       f"{_fmt_t(d['median_start_s'])}, first map {_fmt_t(d['median_first_map_s'])}"
                       f", close {_fmt_t(d['median_close_s'])}; n={len(d['runs'])})")
    if "dispatch" in f:
        d = f["dispatch"]
        out.append(f"Dispatch latency on a warm pool ({d['n']} tiny calls, {d['rows']} rows): "
                   f"map median {_fmt_t(d['map_median_s'])} (p10 {_fmt_t(d['map_p10_s'])}, "
                   f"p90 {_fmt_t(d['map_p90_s'])}); reduce median "
                   f"{_fmt_t(d['reduce_median_s'])} (p90 {_fmt_t(d['reduce_p90_s'])})")
    if "iterate" in f:
        d = f["iterate"]
        out.append(f"Per sweep, jacobi2d {d['grid']}^2: pool.iterate "
                   f"{_fmt_t(d['iterate_per_sweep_s'])} ({d['steps']} steps) vs one pool.map per "
                   f"sweep {_fmt_t(d['map_per_sweep_s'])} ({d['map_sweeps']} calls): "
                   f"{d['map_per_sweep_s'] / d['iterate_per_sweep_s']:.1f}x; numba-1t compute "
                   f"alone {_fmt_t(d['numba_1t_per_sweep_s'])}")
    if "memory" in f:
        m = f["memory"]

        def row(label: str, xs: list) -> str:
            if not xs:
                return f"  {label}: psutil not installed"
            return f"  {label:<22}" + "; ".join(
                f"USS {_fmt_b(x.get('uss', 0))}, anon {_fmt_b(x.get('RssAnon', 0))}, "
                f"shmem {_fmt_b(x.get('RssShmem', 0))}" for x in xs)
        out.append(f"Worker memory (psutil USS; /proc RssAnon, RssShmem), triad over 3 x "
                   f"{_fmt_b(m['array_bytes'])} shared arrays:")
        out.append(row("idle", m["idle"]))
        out.append(row("after map", m["after_map"]))
        out.append(row("after parent read", m["after_parent_read"]))
    return "\n".join(out)


def stream_report(ctx: _Ctx) -> str:
    s, s1 = ctx.stream, ctx.stream_1t
    if not s:
        return ""
    line = (f"STREAM-like (numba prange, float64, n={s['n']}): {s['threads']} threads: copy "
            f"{s['copy']:.1f}, triad {s['triad']:.1f}, read {s['read']:.1f} GB/s (medians)")
    if s1:
        line += (f"; 1 thread: copy {s1['copy']:.1f}, triad {s1['triad']:.1f}, read "
                 f"{s1['read']:.1f} GB/s -> bandwidth ceiling on speedup "
                 f"{s['triad'] / s1['triad']:.2f}x (triad)")
    return line


def env_info(ctx: _Ctx) -> dict:
    import numba

    import sharedcompute as sc
    from ._system import shm_space
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def read(p: str) -> str:
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return "n/a"
    shm = shm_space()
    try:
        layer = numba.threading_layer()
    except Exception:
        layer = "not started"
    return dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                sharedcompute=sc.__version__, cpu=cpu, usable_cores=sc.usable_cores().reason,
                workers=ctx.workers, prange_threads=ctx.pthreads, numba_threading_layer=layer,
                ram_bytes=ctx.ram, shm_total_bytes=shm.total if shm else None,
                thp=read("/sys/kernel/mm/transparent_hugepage/enabled"),
                thp_shmem=read("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
                platform=platform.platform(), quick=ctx.quick)


def plot(ctx: _Ctx, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    sc_ = ctx.scaling
    if sc_:
        ws = sc_["workers"]
        ax1.plot(ws, ws, "k--", label="ideal")
        for wl, marker in (("triad", "o"), ("mandelbrot", "s")):
            ax1.plot(ws, sc_[wl]["pool"], marker=marker, label=f"{wl}: pool")
            ax1.plot(ws, sc_[wl]["prange"], marker=marker, linestyle=":",
                     label=f"{wl}: prange")
        st = sc_["stream_triad"]
        if st and math.isfinite(st[0]) and st[0] > 0:
            ceil = [x / st[0] for x in st]
            ax1.plot(ws, ceil, color="grey", linewidth=3, alpha=0.5,
                     label="bandwidth ceiling (STREAM(w) / STREAM(1))")
        ax1.set_xlabel("workers / threads")
        ax1.set_ylabel("speedup over numba, 1 thread")
        ax1.set_xticks(ws)
        sz = sc_.get("sizes", {})
        ax1.set_title(f"(a) scaling: triad n={sz.get('triad_n')}, mandelbrot "
                      f"{sz.get('mandelbrot_n')}^2")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
    by_wl: dict[str, dict[str, float]] = {}
    for r in ctx.results:
        if r.times:
            by_wl.setdefault(r.workload, {})[r.approach] = r.median
    wls = list(by_wl)
    width = 0.8 / len(APPROACHES)
    for k, ap in enumerate(APPROACHES):
        xs = [i + k * width for i, wl in enumerate(wls) if ap in by_wl[wl]]
        ys = [by_wl[wl][ap] for wl in wls if ap in by_wl[wl]]
        if xs:
            ax2.bar(xs, ys, width, label=ap)
    ax2.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))])
    ax2.set_xticklabels(wls, rotation=30, ha="right", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("median time per call (s, log)")
    ax2.set_title(f"(b) time per approach, {ctx.workers} workers")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sharedcompute bench`` options."""
    from ._system import usable_cores
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (CI smoke run, well under a minute on 2 cores)")
    parser.add_argument("--workers", type=int, default=usable_cores().n,
                        help="workers (and prange threads); default: the usable cores "
                             "(%(default)s here)")
    parser.add_argument("--kernels", nargs="+", metavar="NAME",
                        help=f"registry kernels to run (default: {' '.join(DEFAULT_KERNELS)}; "
                             "'all' for every registry kernel)")
    parser.add_argument("--json", metavar="PATH", help="write every result (all timings) as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a figure (needs matplotlib): scaling with workers and time "
                             "per approach")
    parser.add_argument("--repeats", type=int,
                        help="timed repeats per approach (default: the registry's per workload)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--mem-n", type=int, default=0, help=argparse.SUPPRESS)


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc="bench", unit="step", file=sys.stderr, leave=False)
    except ImportError:
        return None


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``; returns the exit status."""
    from sharedcompute.kernels.registry import ENTRIES
    if args.workers < 1:
        print("sharedcompute bench: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.repeats is not None and args.repeats < 1:
        print("sharedcompute bench: --repeats must be >= 1", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("sharedcompute bench: --plot needs matplotlib, which is not installed; "
                  "pip install 'sharedcompute[plot]' (or matplotlib), or drop --plot",
                  file=sys.stderr)
            return 2
    names = list(args.kernels or DEFAULT_KERNELS)
    if names == ["all"]:
        names = list(ENTRIES)
    unknown = [n for n in names if n not in ENTRIES]
    if unknown:
        print(f"sharedcompute bench: unknown kernel(s) {unknown}; known: {', '.join(ENTRIES)}",
              file=sys.stderr)
        return 2
    import numba
    ctx = _Ctx(args)
    if ctx.workers > numba.config.NUMBA_NUM_THREADS:
        ctx.pthreads = numba.config.NUMBA_NUM_THREADS
        ctx.notes.append(f"prange runs on {ctx.pthreads} threads (NUMBA_NUM_THREADS), not "
                         f"{ctx.workers}")
    t_start = time.perf_counter()
    load_start = _loadavg()
    from ._system import usable_cores
    cores = usable_cores().n
    steps = ["fixed costs", "STREAM"] + names + (["scaling"] if args.plot else [])
    bar = _progress(not args.no_progress, len(steps))
    rc = 0

    step_t = [time.perf_counter(), ""]

    def step(label: str) -> None:
        now = time.perf_counter()
        if step_t[1]:
            ctx.step_s[step_t[1]] = now - step_t[0]
        step_t[0], step_t[1] = now, label
        if bar is not None:
            bar.set_postfix_str(label)
        elif not args.no_progress:
            print(f"[bench] {label}", file=sys.stderr, flush=True)
    try:
        step("fixed costs")
        fixed_costs(ctx, reps=1 if ctx.quick else 3)
        if bar is not None:
            bar.update(1)
        step("STREAM")
        sn = 2**23 if ctx.quick else max(2**26, _size(ENTRIES["triad"], False))
        ctx.stream = stream(sn, ctx.pthreads, 5 if ctx.quick else 10)
        ctx.stream_1t = stream(sn, 1, 3 if ctx.quick else 5)
        import numba as _nb
        _nb.set_num_threads(ctx.pthreads)
        if bar is not None:
            bar.update(1)
        for name in names:
            step(name)
            entry = ENTRIES[name]
            need = _est_bytes(entry, _size(entry, ctx.quick))
            if need > 0.8 * _avail_bytes():
                ctx.skip(name, "all", f"skipped: needs ~{need / 2**30:.1f} GiB, "
                                      f"{_avail_bytes() / 2**30:.1f} GiB available")
            else:
                try:
                    WORKLOADS.get(name, wl_generic)(ctx, entry)
                except Exception as exc:  # noqa: BLE001 - e.g. MemoryError building inputs
                    ctx.results.append(Result(name, "all", ok=False, check=(
                        f"error: {type(exc).__name__}: {str(exc)[:160]}")))
            ctx.free_shared()
            gc.collect()
            if bar is not None:
                bar.update(1)
        if args.plot:
            step("scaling")
            scaling(ctx, max(cores, 1))
            if bar is not None:
                bar.update(1)
        step("")
    finally:
        if bar is not None:
            bar.close()
        env = env_info(ctx)
        env["loadavg_start"] = load_start
        ctx.close()
    elapsed = time.perf_counter() - t_start
    leftovers = _leftover_segments()
    env["loadavg_end"] = _loadavg()
    print(f"sharedcompute bench{' --quick' if ctx.quick else ''}: {ctx.workers} workers "
          f"({env['usable_cores']}), prange on {ctx.pthreads} threads "
          f"[{env['numba_threading_layer']}], pool start method "
          f"{ctx.fixed.get('main_pool', {}).get('start_method', '?')}")
    print(f"{env['cpu']}; Python {env['python']}, NumPy {env['numpy']}, numba {env['numba']}; "
          f"THP anon {env['thp']}, shmem {env['thp_shmem']}")
    print(f"load average (1 min) at start {load_start:.2f}, at end {env['loadavg_end']:.2f}")
    print(stream_report(ctx))
    print()
    print(table(ctx))
    print("x numba1 / x prange: median time of that baseline / median time of the row (> 1: "
          "faster). %STREAM: against the STREAM triad (writers) or read (reductions) figure.")
    for note in ctx.notes:
        print("note:", note)
    print()
    print(fixed_report(ctx))
    print(f"\ntotal bench time {elapsed:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in ctx.step_s.items()) + ")")
    if leftovers:
        print(f"WARNING: shared-memory segments of this run left in /dev/shm: {leftovers}")
        rc = 1
    else:
        print("no shared-memory segment of this run is left in /dev/shm")
    failed = [r for r in ctx.results if r.ok is False]
    if failed:
        print(f"{len(failed)} approach(es) FAILED their check or raised: "
              + ", ".join(f"{r.workload}/{r.approach}" for r in failed))
        rc = 1
    if args.json:
        data = dict(env=env, stream=ctx.stream, stream_1t=ctx.stream_1t, fixed=ctx.fixed,
                    results=[r.as_dict() for r in ctx.results], scaling=ctx.scaling,
                    notes=ctx.notes, elapsed_s=elapsed, step_s=ctx.step_s,
                    leftover_segments=leftovers)
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=float)
        print(f"wrote {args.json}")
    if args.plot:
        plot(ctx, args.plot)
        print(f"wrote {args.plot}")
    return rc


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return math.nan


def _leftover_segments() -> list[str]:
    """This process's shared-memory blocks (and joblib memmap folders) still in /dev/shm."""
    from ._system import SHM_DIR
    from .shared import creator_pid, list_segments
    pid = os.getpid()
    left = [n for n in list_segments() if creator_pid(n) == pid]
    try:
        left += [n for n in os.listdir(SHM_DIR) if n.startswith(JOBLIB_PREFIX)
                 or n.startswith(f"joblib_memmapping_folder_{pid}_")]
    except OSError:
        pass
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sharedcompute bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    from sharedcompute.bench import main as _main  # functions pickle as sharedcompute.bench.*
    sys.exit(_main())
