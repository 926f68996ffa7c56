"""Local shared-memory pool vs the Dask backend on one machine, side by side in one run.

    python benchmarks/dask_vs_local.py [--workers 2] [--repeats 5] [--quick]

Prints median seconds per call (min..max) and the ratio Dask / local for a memory-bound
kernel (triad) and a compute-bound one (logistic_map), plus the bitwise check of results.
"""
import argparse
import time

import numpy as np

import sharedcompute as sc
from sharedcompute.kernels.elementwise import logistic_map, triad


def timed(fn, repeats):
    fn()  # warm-up: compile on every worker, ship the kernel
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), min(times), max(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=sc.usable_cores().n)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n_mem = 2**20 if args.quick else 2**25
    n_cpu = 2**16 if args.quick else 2**21
    rng = np.random.default_rng(0)
    b, c, x = rng.random(n_mem), rng.random(n_mem), rng.uniform(0.1, 0.9, n_cpu)
    rows, results = [], {}
    with sc.Pool(args.workers) as local, sc.Pool(backend="dask", n_workers=args.workers) as dsk:
        for label, pool in (("local", local), ("dask", dsk)):
            a_, b_, c_ = pool.zeros(n_mem), pool.array(b), pool.array(c)
            y_, x_ = pool.zeros(n_cpu), pool.array(x)
            t_mem = timed(lambda: pool.map(triad, a_, b_, c_, 2.0), args.repeats)
            t_cpu = timed(lambda: pool.map(logistic_map, y_, x_, 3.7, 200), args.repeats)
            results[label] = (np.array(a_), np.array(y_), t_mem, t_cpu)
    for i, (name, size) in enumerate([("triad (memory-bound)", f"{n_mem:,} float64"),
                                      ("logistic_map x200 (compute-bound)", f"{n_cpu:,}")]):
        lt, dt = results["local"][2 + i], results["dask"][2 + i]
        same = np.array_equal(results["local"][i], results["dask"][i])
        rows.append((name, size, lt, dt, dt[0] / lt[0], same))
    print(f"{args.workers} workers; median s (min..max) over {args.repeats} calls")
    print(f"{'workload':<34} {'size':>18} {'local':>22} {'dask':>22} {'dask/local':>10} bitwise")
    for name, size, lt, dt, ratio, same in rows:
        print(f"{name:<34} {size:>18} {lt[0]:>8.4f} ({lt[1]:.4f}..{lt[2]:.4f}) "
              f"{dt[0]:>8.4f} ({dt[1]:.4f}..{dt[2]:.4f}) {ratio:>9.1f}x {same}")


if __name__ == "__main__":
    main()
