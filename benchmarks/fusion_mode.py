"""The fusion mode (``@sc.kernel(parallel=True)``, issue 26) on a NumPy-style body: the
5-point stencil ``out[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] +
u[1:-1, 2:])`` written with whole-array slices, run side by side in one process:

- ``pool``: the body on partitions (``depth=1``), ``njit`` as always: numba evaluates each
  array expression into a temporary array;
- ``pool fused``: the same kernel with ``parallel=True``: numba's parallel pipeline fuses
  the expression into one loop, on one numba thread per worker;
- ``numba par``: ``numba.njit(parallel=True)`` of the whole-array body on 2 threads, in
  this process (what issue 26 compares against);
- ``numba 1t``: ``numba.njit`` of the whole-array body, one thread; ``numpy``: the body.

Each round times every approach (median of ``--repeats`` calls, compiles excluded); the
table gives per approach the median over rounds and its speed relative to ``numba par``
(>1: faster). Every result is checked bitwise against NumPy's. The load average is
printed before and after: the machine is shared, so compare ratios within one run.

    python benchmarks/fusion_mode.py [--sizes 2000 4000] [--rounds 5] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import numpy as np

import sharedcompute as sc


def body(out, u):
    out[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


def _part(out, u):  # the body on a partition: u carries one halo row each side
    out[:, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])


stencil = sc.kernel(_part, depth=1)
stencil_fused = sc.kernel(_part, depth=1, parallel=True)
numba_1t = numba.njit(body)
numba_par = numba.njit(parallel=True)(body)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_size(pool: sc.Pool, n: int, rounds: int, repeats: int) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    u = rng.standard_normal((n, n))
    want = np.zeros_like(u)
    body(want, u)
    us, out = pool.array(u), pool.zeros((n, n))
    plain_out = np.zeros_like(u)
    approaches = {
        "pool": lambda: pool.map(stencil, out, us),
        "pool fused": lambda: pool.map(stencil_fused, out, us),
        "numba par": lambda: numba_par(plain_out, u),
        "numba 1t": lambda: numba_1t(plain_out, u),
        "numpy": lambda: body(plain_out, u),
    }
    try:
        for name, fn in approaches.items():  # warm-up (compiles) and the bitwise check
            out[:] = 0.0
            plain_out[:] = 0.0
            fn()
            got = np.asarray(out) if name.startswith("pool") else plain_out
            if not np.array_equal(got, want):
                raise SystemExit(f"{name} differs from NumPy at n={n}")
        per = {name: [] for name in approaches}
        for _ in range(rounds):
            for name, fn in approaches.items():
                per[name].append(timed(fn, repeats))
        return [(name, statistics.median(t)) for name, t in per.items()]
    finally:
        us.free()
        out.free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs")
    with sc.Pool(2) as pool:  # started before numba's threads launch here
        numba.set_num_threads(2)
        for i, n in enumerate(args.sizes):
            rows = run_size(pool, n, args.rounds, args.repeats)
            if i == 0:
                print(f"pool: {pool.n_workers} workers ({pool.start_method}); numba par: "
                      f"{numba.get_num_threads()} threads ({numba.threading_layer()} layer)")
            ref = dict(rows)["numba par"]
            print(f"\n{n} x {n} float64, median of {args.rounds} rounds x {args.repeats} calls")
            print(f"  {'approach':<12} {'ms':>9} {'speed vs numba par':>19}")
            for name, t in rows:
                print(f"  {name:<12} {t * 1e3:>9.2f} {ref / t:>18.2f}x")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
