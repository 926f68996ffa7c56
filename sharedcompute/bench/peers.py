"""The approaches sharedcompute is measured against, outside the library.

* numba ``parallel=True`` (prange) twins of the workloads, over the same rows,
* ``stream``: a STREAM-like copy / triad / read bandwidth on numba threads,
* the functions the textbook ``multiprocessing.Pool`` workers run on pickled chunks (the
  same numba kernels as the library's, so only the data movement differs), and the
  row blocks they get (``bounds``),
* ``joblib_triad``: triad through ``joblib.Parallel`` with its defaults.

The worker functions are module-level so that they pickle by name
(``sharedcompute.bench.peers.mp_*``) and import only NumPy and the kernel they run.
"""
from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from .session import JOBLIB_PREFIX, Session, measure, nan_fill

# -- numba parallel twins and STREAM -----------------------------------------------------------
_TWINS: Any = None


def _njit_parallel() -> Callable:
    import numba
    try:
        return numba.njit(parallel=True, cache=True)
    except Exception:  # noqa: BLE001 - no writable cache location  # pragma: no cover
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
    out: dict = {"n": n, "threads": threads}
    for name, run, nbytes in (("copy", lambda: tw.copy(a, b), 16 * n),
                              ("triad", lambda: tw.triad(a, b, c, 3.0), 24 * n),
                              ("read", lambda: tw.total(b), 8 * n)):
        times, _ = measure(run, repeats=repeats, warmup=1)
        out[name] = nbytes / statistics.median(times) / 1e9
        out["best_" + name] = nbytes / min(times) / 1e9
    return out


# -- functions the textbook multiprocessing.Pool / joblib workers run ------------------------
def mp_triad(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.elementwise import triad
    b, c, s = task
    a = np.empty_like(b)
    triad.dispatcher(a, b, c, s)
    return a


def mp_total(x: np.ndarray) -> float:
    from sharedcompute.kernels.reductions import total
    return float(total.dispatcher(x))


def mp_dot(task: tuple) -> float:
    from sharedcompute.kernels.reductions import dot
    return float(dot.dispatcher(*task))


def mp_logistic(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.elementwise import logistic_map
    x, r, n_iter = task
    y = np.empty_like(x)
    logistic_map.dispatcher(y, x, r, n_iter)
    return y


def mp_jacobi(block: np.ndarray) -> np.ndarray:
    """One Jacobi sweep of the interior rows of a block that carries one halo row each side."""
    from sharedcompute.kernels.stencils import jacobi2d
    out = np.empty((block.shape[0] - 2, block.shape[1]), block.dtype)
    jacobi2d.dispatcher(out, block)
    return out


def mp_mandelbrot(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.compute import mandelbrot
    s, e, n, m, box, max_iter = task
    out = np.empty((e - s, m), np.int32)
    mandelbrot.dispatcher(out, *box, max_iter, (s, e, n))
    return out


def mp_matmul(task: tuple) -> np.ndarray:
    from sharedcompute.kernels.compute import matmul
    a, b = task
    c = np.empty((a.shape[0], b.shape[1]), a.dtype)
    matmul.dispatcher(c, a, b)
    return c


def bounds(n: int, parts: int, lo: int = 0) -> list[tuple[int, int]]:
    """Rows lo..n in ``parts`` near-equal blocks (empty ones dropped): the textbook chunks."""
    edges = np.linspace(lo, n, parts + 1).astype(int)
    return [(int(s), int(e)) for s, e in itertools.pairwise(edges) if e > s]


def have_joblib() -> bool:
    try:
        import joblib  # noqa: F401
        return True
    except ImportError:
        return False


def joblib_triad(ctx: Session, name: str, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                 s: float, chunks: list, chk: Callable, reps: int, nbytes: float) -> None:
    """joblib.Parallel with its defaults (loky workers, inputs over 1 MB memmapped), in a
    temp folder of our own: joblib would otherwise leave its folder until interpreter exit."""
    import shutil
    import tempfile

    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    from .._system import SHM_DIR
    tmp = tempfile.mkdtemp(prefix=JOBLIB_PREFIX, dir=SHM_DIR if os.path.isdir(SHM_DIR) else None)
    try:
        with Parallel(n_jobs=ctx.workers, temp_folder=tmp) as par:
            def jl_run() -> np.ndarray:
                parts = par(delayed(mp_triad)((b[i:j], c[i:j], s)) for i, j in chunks)
                np.concatenate(parts, out=a)
                return a
            ctx.add(name, "joblib", jl_run, repeats=min(reps, 5), setup=nan_fill(a),
                    check=chk, nbytes=nbytes, stream="triad",
                    note="loky, inputs auto-memmapped")
    finally:
        get_reusable_executor().shutdown(wait=True)
        shutil.rmtree(tmp, ignore_errors=True)
