"""Issue 14's three benchmarks, each measured side by side in one run (medians of repeats).

    python benchmarks/tasks_and_balance.py [--workers 2] [--repeats 5] [--quick]
                                           [--only imbalance,filter,tasks]

imbalance: a Mandelbrot frame whose upper half lies mostly inside the set (rows differ in
    cost by 10x and more), and a compute-heavy kernel over 10,000 float64 rows (the size
    that was cut into two chunks of 8,192 and 1,808 rows). Pool static vs
    ``schedule="dynamic"`` vs numba ``prange`` (static) vs one numba thread; the dynamic
    result is checked bitwise against the static one.
filter: ``scipy.ndimage.uniform_filter(size=5)`` on a 256x512x512 float32 volume: a
    ``jit=False`` kernel with 2 halo rows on the pool, against ``dask.array.map_overlap``
    (threaded scheduler, the same workers) and SciPy on one core (the bound is SciPy's
    time divided by the workers); results compared with SciPy's (running sums: to
    rounding, see the docs).
tasks: 10,000 tiny tasks (``abs``) through ``pool.submit`` and ``pool.imap_unordered``,
    against ``multiprocessing.Pool.imap_unordered`` (its default chunksize 1) and
    ``concurrent.futures.ProcessPoolExecutor.submit``; all forkserver, pools warm.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numba
import numpy as np

import sharedcompute as sc

MAX_ITER = 400


@numba.njit(nogil=True, cache=True)
def _escape(c_re, c_im, max_iter):
    z_re = z_im = 0.0
    for k in range(max_iter):
        z_re, z_im = z_re * z_re - z_im * z_im + c_re, 2.0 * z_re * z_im + c_im
        if z_re * z_re + z_im * z_im > 4.0:
            return k
    return max_iter


@numba.njit(nogil=True, cache=True)
def _row(out, local, i, total, max_iter):
    im = 0.05 + 1.6 * i / max(total, 1)
    width = out.shape[1]
    for j in range(width):
        out[local, j] = _escape(-1.9 + 2.4 * j / width, im, max_iter)


@sc.kernel(position=True)
def mandel_rows(out, max_iter, pos):
    """Rows near the top cross the set's body (slow); the lower half lies outside (fast)."""
    start, _, total = pos
    for i in range(out.shape[0]):
        _row(out, i, start + i, total, max_iter)


@numba.njit(parallel=True, cache=True)
def mandel_prange(out, max_iter):
    total = out.shape[0]
    for i in numba.prange(total):
        _row(out, i, i, total, max_iter)


@numba.njit(cache=True)
def mandel_serial(out, max_iter):
    total = out.shape[0]
    for i in range(total):
        _row(out, i, i, total, max_iter)


@numba.njit(nogil=True, cache=True)
def _heavy(x, steps):
    v = x
    for _ in range(steps):
        v = 3.9 * v * (1.0 - v)
    return v


@sc.kernel
def heavy_rows(out, x, steps):
    for i in range(out.shape[0]):
        out[i] = _heavy(x[i], steps)


@numba.njit(parallel=True, cache=True)
def heavy_prange(out, x, steps):
    for i in numba.prange(out.shape[0]):
        out[i] = _heavy(x[i], steps)


@numba.njit(cache=True)
def heavy_serial(out, x, steps):
    for i in range(out.shape[0]):
        out[i] = _heavy(x[i], steps)


@sc.kernel(jit=False, depth=2, boundary="reflect")
def box5(out, vol):
    """scipy's 5-wide box filter on a block with 2 halo rows each side of axis 0."""
    from scipy import ndimage
    full = ndimage.uniform_filter(vol, 5, mode="reflect")
    out[:] = full[2:full.shape[0] - 2]


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def show(title, rows, base):
    print(f"\n{title}")
    print(f"{'':34} {'median s':>9} {'min..max':>17} {'vs ' + base:>12}")
    ref = dict((k, v) for k, v in rows)[base][0]
    for name, (med, lo, hi) in rows:
        print(f"{name:34} {med:9.4f} {lo:8.4f}..{hi:<8.4f} {ref / med:11.2f}x")


def bench_imbalance(pool, workers, repeats, quick):
    rows_, width = (256, 256) if quick else (1024, 1024)
    numba.set_num_threads(workers)
    out = pool.zeros((rows_, width), np.int32)
    static, dynamic = pool.zeros((rows_, width), np.int32), pool.zeros((rows_, width), np.int32)
    pool.map(mandel_rows, static, MAX_ITER)
    pool.map(mandel_rows, dynamic, MAX_ITER, schedule="dynamic")
    assert np.array_equal(static.numpy(), dynamic.numpy()), "dynamic differs from static"
    plain = np.zeros((rows_, width), np.int32)
    mandel_prange(plain, MAX_ITER)
    mandel_serial(plain, MAX_ITER)
    assert np.array_equal(plain, static.numpy()), "pool differs from numba"
    costs = static.numpy().sum(axis=1)
    print(f"Mandelbrot {rows_}x{width}, {MAX_ITER} iterations: row cost max/min "
          f"{costs.max() / max(costs.min(), 1):.0f}x; upper half {costs[:rows_ // 2].sum() / costs.sum():.0%}"
          " of the work")
    results = [
        ("pool static", median_time(lambda: pool.map(mandel_rows, out, MAX_ITER), repeats)),
        ("pool schedule='dynamic'", median_time(
            lambda: pool.map(mandel_rows, out, MAX_ITER, schedule="dynamic"), repeats)),
        (f"numba prange ({workers} threads)", median_time(lambda: mandel_prange(plain, MAX_ITER),
                                                          repeats)),
        ("numba, one thread", median_time(lambda: mandel_serial(plain, MAX_ITER), repeats)),
    ]
    show("imbalanced: Mandelbrot frame", results, "numba prange ({} threads)".format(workers))
    show("", results, "numba, one thread")
    steps = 200 if quick else 2000
    x0 = np.random.default_rng(0).uniform(0.1, 0.9, 10_000)
    x, y_s, y_d = pool.array(x0), pool.zeros(10_000), pool.zeros(10_000)
    pool.map(heavy_rows, y_s, x, steps)
    pool.map(heavy_rows, y_d, x, steps, schedule="dynamic")
    assert np.array_equal(y_s.numpy(), y_d.numpy())
    yp = np.zeros(10_000)
    heavy_prange(yp, x0, steps)
    heavy_serial(yp, x0, steps)
    results = [
        ("pool static (16 chunks)", median_time(lambda: pool.map(heavy_rows, y_s, x, steps),
                                                repeats)),
        ("pool schedule='dynamic'", median_time(
            lambda: pool.map(heavy_rows, y_d, x, steps, schedule="dynamic"), repeats)),
        (f"numba prange ({workers} threads)", median_time(lambda: heavy_prange(yp, x0, steps),
                                                          repeats)),
        ("numba, one thread", median_time(lambda: heavy_serial(yp, x0, steps), repeats)),
    ]
    show(f"compute-heavy kernel, 10,000 float64 rows x {steps} logistic steps", results,
         "numba, one thread")
    print(pool.insights())
    for a in (out, static, dynamic, x, y_s, y_d):
        a.free()


def bench_filter(pool, workers, repeats, quick):
    from scipy import ndimage
    import dask
    import dask.array as da
    shape = (64, 256, 256) if quick else (256, 512, 512)
    vol0 = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    want = ndimage.uniform_filter(vol0, 5, mode="reflect")
    vol, out = pool.array(vol0), pool.empty(shape, np.float32)
    pool.map(box5, out, vol)
    assert np.allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)
    dvol = da.from_array(vol0, chunks=(shape[0] // (2 * workers),) + shape[1:])

    def with_dask():
        res = dvol.map_overlap(lambda b: ndimage.uniform_filter(b, 5, mode="reflect"),
                               depth={0: 2, 1: 0, 2: 0}, boundary="reflect", dtype=np.float32)
        with dask.config.set(scheduler="threads", num_workers=workers):
            return res.compute()
    assert np.allclose(with_dask(), want, rtol=1e-5, atol=1e-5)
    results = [
        ("pool, jit=False kernel", median_time(lambda: pool.map(box5, out, vol), repeats)),
        (f"dask map_overlap ({workers} threads)", median_time(with_dask, repeats)),
        ("scipy, one core", median_time(lambda: ndimage.uniform_filter(vol0, 5, mode="reflect"),
                                        repeats)),
    ]
    show(f"scipy.ndimage.uniform_filter(size=5) on {shape} float32", results, "scipy, one core")
    pool_s = results[0][1][0]
    print(f"pool / (scipy / {workers}) = {pool_s / (results[2][1][0] / workers):.2f} "
          "(1.0 = perfect scaling)")
    vol.free(), out.free()


def bench_tasks(pool, workers, repeats, quick):
    n = 2_000 if quick else 10_000
    ctx = mp.get_context("forkserver")
    items = list(range(n))

    def sc_submit():
        futures = [pool.submit(abs, i) for i in items]
        return [f.result() for f in futures]

    with ctx.Pool(workers) as mpool, ProcessPoolExecutor(workers, mp_context=ctx) as ppe:
        list(mpool.imap_unordered(abs, range(100)))
        list(ppe.map(abs, range(100)))
        list(pool.imap_unordered(abs, range(100)))

        def ppe_submit():
            futures = [ppe.submit(abs, i) for i in items]
            return [f.result() for f in futures]
        results = [
            ("pool.submit", median_time(sc_submit, repeats)),
            ("pool.imap_unordered", median_time(lambda: list(pool.imap_unordered(abs, items)),
                                                repeats)),
            ("multiprocessing imap_unordered", median_time(
                lambda: list(mpool.imap_unordered(abs, items)), repeats)),
            ("ProcessPoolExecutor.submit", median_time(ppe_submit, repeats)),
        ]
    show(f"{n:,} tiny tasks (abs), {workers} workers", results, "multiprocessing imap_unordered")
    show("", results, "ProcessPoolExecutor.submit")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", default="imbalance,filter,tasks")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with sc.Pool(args.workers, start_method="forkserver") as pool:
        for name in args.only.split(","):
            {"imbalance": bench_imbalance, "filter": bench_filter,
             "tasks": bench_tasks}[name](pool, args.workers, args.repeats, args.quick)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
