"""Node-local pools (sc.DaskNodes) vs today's Dask backend vs the local pool, in one run.

    python benchmarks/dask_nodes.py [--n 8388608] [--side 4096] [--steps 100]
                                    [--dask-steps 10] [--repeats 7] [--quick]

Two simulated nodes: a LocalCluster of 2 single-threaded worker processes, each holding a
local pool of 1 process (per_node=1); today's Dask backend on its own cluster of 2 workers;
the local pool with 2 workers. Prints median seconds per call (min..max), the ratios, the
bitwise check of results against the local pool, and what one call sends to the nodes.
Jacobi (side^2, pool.iterate): seconds per sweep for the local pool and the node pools
over ``--steps`` sweeps, and for today's Dask backend and dask.array's map_overlap (on a
cluster of 2 single-threaded workers) over ``--dask-steps`` (they are that much slower);
and the bytes the node pools' workers sent each other per sweep vs the halo rows' size.
"""
import argparse
import os
import pickle
import time

import numpy as np

import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad
from sharedcompute.kernels.reductions import total
from dask_vs_local import timed  # the same median timer (a script beside this one)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2**23)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--side", type=int, default=4096)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--dask-steps", type=int, default=10)
    p.add_argument("--skip-triad", action="store_true")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.side, args.steps, args.dask_steps = 512, 20, 4
    if not args.skip_triad:
        triad_part(args)
    jacobi_part(args)


def triad_part(args):
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


def sent_bytes(client):
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
               .values())


def overlap_sweeps(client, u0, steps):
    """dask.array's map_overlap: one persisted graph step per sweep (rows 0 and n-1, and
    columns 0 and m-1, held fixed as jacobi2d's boundary 'none' under iterate)."""
    import dask.array as da
    from distributed import wait

    def sweep(u):
        out = u.copy()
        out[1:-1, 1:-1] = 0.25 * (((u[:-2, 1:-1] + u[2:, 1:-1]) + u[1:-1, :-2]) + u[1:-1, 2:])
        return out
    x = client.persist(da.from_array(u0, chunks=(u0.shape[0] // 2, u0.shape[1])))
    wait(x)
    t0 = time.perf_counter()
    for _ in range(steps):
        x = client.persist(x.map_overlap(sweep, depth={0: 1, 1: 0}, boundary="none",
                                         dtype=u0.dtype))
        wait(x)
    return (time.perf_counter() - t0) / steps, np.asarray(x.compute())


def jacobi_part(args):
    from sharedcompute.dask_nodes import GHOST, local_cluster
    from sharedcompute.kernels.stencils import jacobi2d
    side, steps, dsteps = args.side, args.steps, args.dask_steps
    u0 = np.random.default_rng(1).random((side, side))
    print(f"\nJacobi {side}^2 float64, pool.iterate; load average before: {os.getloadavg()}")
    per, last = {}, {}
    for label, make, k in (("local x2", lambda: sc.Pool(2), steps),
                           ("dask nodes 2x1", lambda: sc.Pool(backend=sc.DaskNodes(
                               None, per_node=1, nodes=2)), steps)):
        with make() as pool:
            a, b = pool.array(u0), pool.array(u0)
            pool.iterate(jacobi2d, b, a, steps=2)  # warm-up: compile, caches
            times = []
            for _ in range(3):
                a, b = pool.array(u0), pool.array(u0)
                t0 = time.perf_counter()
                got = pool.iterate(jacobi2d, b, a, steps=k)
                times.append((time.perf_counter() - t0) / k)
            per[label] = (float(np.median(times)), min(times), max(times))
            last[label] = np.array(got)
            if label.startswith("dask nodes"):
                client = pool._backend.client  # noqa: SLF001 - a benchmark's look inside
                before = sent_bytes(client)
                pool.iterate(jacobi2d, b, a, steps=2 * GHOST)  # two blocks
                moved = (sent_bytes(client) - before) / (2 * GHOST)
    client, cl = local_cluster(2)
    try:
        with sc.Pool(backend=client) as pool:
            a, b = pool.array(u0), pool.array(u0)
            pool.iterate(jacobi2d, b, a, steps=1)
            a, b = pool.array(u0), pool.array(u0)
            t0 = time.perf_counter()
            got = pool.iterate(jacobi2d, b, a, steps=dsteps)
            t = (time.perf_counter() - t0) / dsteps
            per["dask backend x2"] = (t, t, t)
            dask_last = np.asarray(got)
        overlap_sweeps(client, u0, 1)
        t, ov_last = overlap_sweeps(client, u0, dsteps)
        per["map_overlap x2"] = (t, t, t)
    finally:
        client.close()
        cl.close()
    print(f"load average after: {os.getloadavg()}")
    with sc.Pool(2) as pool:  # the local pool's result after dask-steps sweeps, to compare
        a, b = pool.array(u0), pool.array(u0)
        ref = np.array(pool.iterate(jacobi2d, b, a, steps=dsteps))
    same = {"local x2": True,
            "dask nodes 2x1": last["dask nodes 2x1"].tobytes() == last["local x2"].tobytes(),
            "dask backend x2": dask_last.tobytes() == ref.tobytes(),
            "map_overlap x2": ov_last.tobytes() == ref.tobytes()}
    base = per["local x2"][0]
    print(f"{'pool':<16} {'s per sweep (min..max)':>30} {'sweeps':>6} {'vs local':>9} bitwise")
    for label, (t, lo, hi) in per.items():
        k = steps if label in ("local x2", "dask nodes 2x1") else dsteps
        print(f"{label:<16} {t:>10.5f} ({lo:.5f}..{hi:.5f}) {k:>6} {t / base:>8.2f}x "
              f"{same[label]}")
    nodes = per["dask nodes 2x1"][0]
    print(f"today's Dask backend / node-local: {per['dask backend x2'][0] / nodes:.1f}x; "
          f"map_overlap / node-local: {per['map_overlap x2'][0] / nodes:.1f}x")
    print(f"bytes the node workers sent each other per sweep: {moved:,.0f}; halo rows: "
          f"2 rows x {side * 8:,} bytes = {2 * side * 8:,} bytes (blocks of {GHOST} sweeps "
          f"send {GHOST}-row halos of both arrays once a block: about 2x, for 1/{GHOST} of "
          "the messages)")


if __name__ == "__main__":
    main()
