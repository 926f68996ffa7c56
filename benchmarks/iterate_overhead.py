#!/usr/bin/env python
"""Per-sweep overhead of ``pool.iterate`` (loop inside the workers, a barrier between sweeps)
versus driving the same Jacobi sweeps with one ``pool.map`` call per sweep from the parent.

    python benchmarks/iterate_overhead.py            # 256^2 x 2000 sweeps, 2048^2 x 50 sweeps
    python benchmarks/iterate_overhead.py --quick    # fewer sweeps, for a smoke run

Prints, per grid, the median time per sweep of each driver (over --repeats runs, after a
warm-up), their ratio, and numba's single-thread time per sweep (the compute alone); checks
that both drivers end on bitwise the same grid.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import sharedcompute as sc
from sharedcompute.kernels.stencils import jacobi2d


def _fmt(t: float) -> str:
    return f"{t * 1e6:8.1f} us" if t < 1e-3 else f"{t * 1e3:8.2f} ms"


def measure(pool: sc.Pool, n: int, sweeps: int, repeats: int) -> dict:
    u0 = np.random.default_rng(0).random((n, n))
    u, out = pool.array(u0), pool.zeros((n, n))

    def reset() -> None:
        np.asarray(u)[...] = u0
        o = np.asarray(out)
        o[...] = 0.0
        o[0], o[-1] = u0[0], u0[-1]  # edge rows are held fixed (boundary 'none')

    def by_iterate() -> np.ndarray:
        return np.array(pool.iterate(jacobi2d, out, u, steps=sweeps))

    def by_map() -> np.ndarray:
        src, dst = u, out
        for _ in range(sweeps):
            pool.map(jacobi2d, dst, src)
            src, dst = dst, src
        return np.array(src)

    res: dict = dict(n=n, sweeps=sweeps, workers=pool.n_workers)
    finals = {}
    for label, fn in (("iterate", by_iterate), ("map", by_map)):
        reset()
        fn()  # warm-up: compiles/attaches outside the timing
        times = []
        for _ in range(repeats):
            reset()
            t0 = time.perf_counter()
            finals[label] = fn()
            times.append(time.perf_counter() - t0)
        res[label] = statistics.median(times) / sweeps
        res[label + "_minmax"] = (min(times) / sweeps, max(times) / sweeps)
    res["same_result"] = bool(np.array_equal(finals["iterate"], finals["map"]))
    a, b = np.zeros((n, n)), u0.copy()
    a[0], a[-1] = u0[0], u0[-1]
    jacobi2d.dispatcher(a[1:-1], b)  # warm
    k = max(1, min(sweeps, 50))
    t0 = time.perf_counter()
    for _ in range(k):
        jacobi2d.dispatcher(a[1:-1], b)
        a, b = b, a
    res["numba_1t"] = (time.perf_counter() - t0) / k
    u.free()
    out.free()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=sc.usable_cores().n)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    grids = [(256, 200), (1024, 20)] if args.quick else [(256, 2000), (2048, 50)]
    ok = True
    with sc.Pool(n_workers=args.workers) as pool:
        print(f"jacobi2d sweeps on {pool.n_workers} workers ({pool.start_method}); medians of "
              f"{args.repeats} runs after a warm-up, time per sweep")
        print(f"{'grid':>10} {'sweeps':>6} {'pool.iterate':>12} {'pool.map/sweep':>14} "
              f"{'map/iterate':>11} {'numba-1t':>11} {'iterate saves':>13}  same result")
        for n, sweeps in grids:
            r = measure(pool, n, sweeps, args.repeats)
            ok &= r["same_result"]
            print(f"{f'{n}x{n}':>10} {sweeps:>6} {_fmt(r['iterate']):>12} {_fmt(r['map']):>14} "
                  f"{r['map'] / r['iterate']:>10.2f}x {_fmt(r['numba_1t']):>11} "
                  f"{_fmt(r['map'] - r['iterate']):>13}  {r['same_result']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
