"""What a pool costs apart from the work: starts, dispatch, sweeps, memory; and scaling.

``fixed_costs`` measures pool start per start method (fork first, before any numba thread
exists in this process), the dispatch latency of tiny maps and reductions on a warm pool,
the per-sweep cost of ``pool.iterate`` against one ``pool.map`` per sweep, and the workers'
private memory after a map over shared arrays; it also starts the run's main pool.
``stream_scaling`` (for ``--plot``) measures the memory bandwidth at each worker count.
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time

import numpy as np

from .peers import stream
from .session import Session
from .workloads import jacobi_sweeps


def worker_memory(pids: list[int]) -> list[dict]:
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for pid in pids:
        d: dict = {"pid": pid}
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


def fixed_costs(ctx: Session, reps: int) -> None:
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
            rows.append({"start_s": t1 - t0, "first_map_s": t2 - t1, "total_s": t2 - t0,
                         "close_s": t3 - t2})
        if method == "forkserver":  # the first start also starts the fork server itself
            starts["forkserver (first, starts server)"] = rows[:1]
            rows = rows[1:]
        starts[method] = rows
    ctx.fixed["pool_start"] = {m: {"runs": r, "median_total_s": statistics.median(
        [x["total_s"] for x in r]), "median_start_s": statistics.median([x["start_s"] for x in r]),
        "median_first_map_s": statistics.median([x["first_map_s"] for x in r]),
        "median_close_s": statistics.median([x["close_s"] for x in r])} for m, r in starts.items()}

    done("pool starts")
    # the run's main pool (default start method: forkserver on Linux)
    ctx.pool = sc.Pool(n_workers=W)
    pool = ctx.pool
    ctx.fixed["main_pool"] = {"workers": W, "start_method": pool.start_method}
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
    ctx.fixed["dispatch"] = {
        "n": n_maps, "map_median_s": statistics.median(lat),
        "map_p10_s": float(np.percentile(lat, 10)),
        "map_p90_s": float(np.percentile(lat, 90)), "reduce_median_s": statistics.median(rlat),
        "reduce_p90_s": float(np.percentile(rlat, 90)), "rows": 1000}

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
    jacobi_sweeps(jacobi2d.dispatcher, a, b, steps)
    one = (time.perf_counter() - t0) / steps
    ctx.fixed["iterate"] = {"grid": g, "steps": steps, "iterate_per_sweep_s": statistics.median(it),
                            "map_per_sweep_s": statistics.median(mp_),
                            "numba_1t_per_sweep_s": one, "map_sweeps": n_map_sweeps}
    for x in (us, outs):
        x.free()

    done("iterate")
    # private memory per worker after a map over a big array
    n = ctx.args.mem_n or (2**22 if ctx.quick else 2**26)
    mem: dict = {"n": n, "array_bytes": 8 * n, "idle": worker_memory(pool.pids)}
    bs, cs, as_ = pool.array(np.ones(n)), pool.array(np.ones(n)), pool.zeros(n)
    pool.map(triad, as_, bs, cs, 2.0)
    mem["after_map"] = worker_memory(pool.pids)
    v = np.asarray(as_)
    float(v.sum())  # the parent now maps the output pages too
    del v
    mem["after_parent_read"] = worker_memory(pool.pids)
    ctx.fixed["memory"] = mem
    for x in (bs, cs, as_):
        x.free()
    for x in tiny:
        x.free()
    done("memory")


def stream_scaling(ctx: Session) -> None:
    """The bandwidth limit of the scaling panel: STREAM triad GB/s at each of its worker
    counts. 1 thread and the run's prange threads reuse the run's own STREAM figures (so the
    line ends where the report's 'bandwidth ceiling' says); other counts are measured."""
    import numba
    gbs: dict[int, float] = {}
    if ctx.stream:
        gbs[ctx.pthreads] = ctx.stream["triad"]
    if ctx.stream_1t:  # the 1-thread figure wins when prange itself runs on one thread
        gbs[1] = ctx.stream_1t["triad"]
    for w in ctx.scaling_workers():
        if w not in gbs and w <= numba.config.NUMBA_NUM_THREADS and ctx.stream:
            gbs[w] = stream(ctx.stream["n"], w, 5)["triad"]
    numba.set_num_threads(ctx.pthreads)
    ctx.scaling["stream_triad"] = dict(sorted(gbs.items()))
