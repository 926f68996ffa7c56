"""Node-local pools (sc.DaskNodes) vs today's Dask backend vs the local pool, in one run.

    python benchmarks/dask_nodes.py [--n 8388608] [--repeats 7] [--quick]

Two simulated nodes: a LocalCluster of 2 single-threaded worker processes, each holding a
local pool of 1 process (per_node=1); today's Dask backend on its own cluster of 2 workers;
the local pool with 2 workers. Prints median seconds per call (min..max), the ratios, the
bitwise check of results against the local pool, and what one call sends to the nodes.
Stencils (Jacobi) are not measured: halo maps and iterate are refused on node pools yet.
"""
import argparse
import os
import pickle
import time

import numpy as np

import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad
from sharedcompute.kernels.reductions import total


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
    p.add_argument("--n", type=int, default=2**23)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n = 2**18 if args.quick else args.n
    rng = np.random.default_rng(0)
    b, c = rng.random(n), rng.standard_normal(n) * 10.0 ** rng.integers(-8, 17, n)
    print(f"load average before: {os.getloadavg()}")
    out = {}
    pools = [("local x2", lambda: sc.Pool(2)),
             ("dask nodes 2x1", lambda: sc.Pool(backend=sc.DaskNodes(None, per_node=1,
                                                                       nodes=2))),
             ("dask backend x2", lambda: sc.Pool(backend="dask", n_workers=2))]
    for label, make in pools:
        with make() as pool:
            a_, b_, c_ = pool.zeros(n), pool.array(b), pool.array(c)
            t_map = timed(lambda: pool.map(triad, a_, b_, c_, 2.0), args.repeats)
            t_red = timed(lambda: pool.reduce(total, a_), args.repeats)
            out[label] = (np.array(a_), pool.reduce(total, a_), t_map, t_red)
            if label.startswith("dask nodes"):
                backend = pool._backend  # noqa: SLF001 - a benchmark's look inside
                desc = backend._plan(triad, (a_, b_, c_, 2.0), None, None, None, None,
                                     "map")[1]
                sent = len(pickle.dumps((triad, desc, False, None)))
    print(f"load average after:  {os.getloadavg()}")
    base = out["local x2"]
    print(f"{n:,} float64 rows; median s (min..max) over {args.repeats} calls")
    print(f"{'pool':<16} {'triad map':>28} {'total reduce':>28} {'map/local':>9} "
          f"{'red/local':>9} bitwise")
    for label, (a, v, tm, tr) in out.items():
        same = np.array_equal(a, base[0]) and np.float64(v).tobytes() == \
            np.float64(base[1]).tobytes()
        print(f"{label:<16} {tm[0]:>9.4f} ({tm[1]:.4f}..{tm[2]:.4f}) "
              f"{tr[0]:>9.4f} ({tr[1]:.4f}..{tr[2]:.4f}) {tm[0] / base[2][0]:>8.2f}x "
              f"{tr[0] / base[3][0]:>8.2f}x {same}")
    nodes, dask_ = out["dask nodes 2x1"], out["dask backend x2"]
    print(f"dask backend / node-local: triad {dask_[2][0] / nodes[2][0]:.1f}x, "
          f"total {dask_[3][0] / nodes[3][0]:.1f}x")
    print(f"node-local map: one task per node, {sent} pickled bytes of call each "
          f"(array rows: {n * 8 // 2:,} bytes per node stay there)")


if __name__ == "__main__":
    main()
