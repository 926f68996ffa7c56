"""Out of core: one job on a float32 .npy on disk, four ways, side by side in one run.

    python benchmarks/out_of_core.py [--gb 2] [--dir /tmp] [--workers 2] [--repeats 3]

The job: ``histogram`` (256 bins) + ``mean_var`` of the file, and one ``heat1d`` stencil pass
writing a second .npy of the same size, flushed to disk (msync) before the clock stops.

- pool.open: ``pool.open(path)`` and ``pool.open(out, "w+")`` on N workers (no copy);
- numpy: ``np.load(path, mmap_mode="r")`` in one process, whole-array expressions (what a
  user writes: np.histogram, np.mean/np.var with dtype=float64, the stencil by slices into
  ``open_memmap``), which allocate full-size temporaries;
- dask: ``dask.array.from_array`` over the same memmap, threaded scheduler with N workers
  (the memmap is shared, not pickled), ``da.histogram``, ``.mean()/.var()``,
  ``map_overlap`` stored into ``open_memmap``;
- /dev/shm: the same pool job on ``pool.load(path)`` (in RAM) writing a shared array.

Cold: the page cache is dropped before each run (``/proc/sys/vm/drop_caches`` where
allowed, else ``posix_fadvise(DONTNEED)`` on the files); warm: the input was just read.
Reported: median seconds (min..max), input GB/s (file bytes / job seconds), ratio to the
pool, and ``dd`` read bandwidth of the file, cold and warm, measured in the same run.
The results of every approach are checked against each other.
"""
import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
from numpy.lib.format import open_memmap

import sharedcompute as sc
from sharedcompute.kernels.reductions import histogram, mean_var
from sharedcompute.kernels.stencils import heat1d

BINS, LO, HI, ALPHA = 256, -5.0, 5.0, 0.1


def drop_caches(paths):
    """Evict the files' pages: drop_caches if we may, else fadvise on each file."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        for p in paths:
            if os.path.exists(p):
                fd = os.open(p, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        return "fadvise"


def dd_gbps(path):
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=16M"], check=True,
                   capture_output=True)
    return os.path.getsize(path) / (time.perf_counter() - t0) / 1e9


def make_input(path, n):
    x = open_memmap(path, mode="w+", dtype=np.float32, shape=(n,))
    rng = np.random.default_rng(0)
    step = 1 << 24
    for s in range(0, n, step):
        x[s:s + step] = rng.standard_normal(min(step, n - s), dtype=np.float32)
    x.flush()
    del x


def job_pool(pool, src, out_path, shm=False):
    x = pool.load(src) if shm else pool.open(src)
    t0 = time.perf_counter()
    h = pool.reduce(histogram, x, BINS, LO, HI)
    mv = pool.reduce(mean_var, x)
    out = pool.empty(x.shape, x.dtype) if shm else pool.open(out_path, "w+", x.shape, x.dtype)
    np.asarray(out)[[0, -1]] = np.asarray(x)[[0, -1]]  # boundary "none": edges stay fixed
    pool.map(heat1d, out, x, ALPHA)
    out.flush()
    dt = time.perf_counter() - t0
    probe = np.array(np.asarray(out)[:: max(1, x.shape[0] // 4096)])
    x.free()
    out.free()
    return dt, h, mv, probe


def job_numpy(src, out_path):
    t0 = time.perf_counter()
    x = np.load(src, mmap_mode="r")
    h = np.histogram(x, BINS, (LO, HI))[0]
    mv = (float(x.size), np.mean(x, dtype=np.float64), np.var(x, dtype=np.float64))
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    out[[0, -1]] = x[[0, -1]]
    out[1:-1] = x[1:-1] + ALPHA * ((x[:-2] - 2.0 * x[1:-1]) + x[2:])
    out.flush()
    dt = time.perf_counter() - t0
    probe = np.array(out[:: max(1, x.shape[0] // 4096)])
    del out, x
    return dt, h, mv, probe


def _heat_block(b):
    o = b.copy()
    o[1:-1] = b[1:-1] + ALPHA * ((b[:-2] - 2.0 * b[1:-1]) + b[2:])
    return o


def job_dask(src, out_path, workers, chunk):
    import dask
    import dask.array as da
    t0 = time.perf_counter()
    x = da.from_array(np.load(src, mmap_mode="r"), chunks=chunk)
    with dask.config.set(scheduler="threads", num_workers=workers):
        hist, _ = da.histogram(x, bins=BINS, range=(LO, HI))
        h, m, v = dask.compute(hist, x.mean(dtype=np.float64), x.var(dtype=np.float64))
        out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
        y = x.map_overlap(_heat_block, depth=1, boundary="none", dtype=x.dtype)
        da.store(y, out)
        out.flush()
    dt = time.perf_counter() - t0
    probe = np.array(out[:: max(1, x.shape[0] // 4096)])
    del out
    return dt, np.asarray(h), (float(x.size), float(m), float(v)), probe


def summary(times):
    return float(np.median(times)), min(times), max(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="input size in GiB (float32)")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n = int(args.gb * (1 << 30)) // 4
    src = os.path.join(args.dir, "sc_ooc_in.npy")
    outs = {k: os.path.join(args.dir, f"sc_ooc_out_{k}.npy") for k in ("pool", "numpy", "dask")}
    print(f"input {src}: {n * 4 / (1 << 30):.2f} GiB float32; workers={args.workers}; "
          f"repeats={args.repeats} per cell")
    make_input(src, n)
    nbytes = os.path.getsize(src)
    chunk = 1 << 24
    results = {}
    checks = {}
    try:
        with sc.Pool(args.workers) as pool:
            job_pool(pool, src, outs["pool"])  # compile everywhere (numba cache) once
            runs = {
                "pool.open": lambda: job_pool(pool, src, outs["pool"]),
                "numpy": lambda: job_numpy(src, outs["numpy"]),
                "dask": lambda: job_dask(src, outs["dask"], args.workers, chunk),
            }
            ddc, ddw = [], []
            for cache in ("cold", "warm"):
                for rep in range(args.repeats):
                    for name, fn in runs.items():  # interleaved: the same machine state
                        for p in outs.values():
                            if os.path.exists(p):
                                os.unlink(p)
                        if cache == "cold":
                            how = drop_caches([src])
                        else:
                            dd_gbps(src)  # warm: the input is in the page cache
                        dt, h, mv, probe = fn()
                        results.setdefault((name, cache), []).append(dt)
                        checks[name] = (h, mv, probe)
                    if cache == "cold":
                        drop_caches([src])
                        ddc.append(dd_gbps(src))
                    else:
                        ddw.append(dd_gbps(src))
            for rep in range(args.repeats):  # /dev/shm: load once per run (not timed)
                dt, h, mv, probe = job_pool(pool, src, None, shm=True)
                results.setdefault(("pool, /dev/shm", "in RAM"), []).append(dt)
                checks["shm"] = (h, mv, probe)
    finally:
        for p in [src] + list(outs.values()):
            if os.path.exists(p):
                os.unlink(p)
    ref = checks["pool.open"]
    for name, (h, mv, probe) in checks.items():
        same_h = np.array_equal(np.asarray(h), np.asarray(ref[0]))
        dmv = max(abs(float(a) - float(b)) for a, b in zip(mv, ref[1]))
        dprobe = float(np.max(np.abs(probe.astype(np.float64) - ref[2])))
        print(f"check {name:>10}: histogram identical={same_h}, |mean_var diff|<={dmv:.2e}, "
              f"|stencil diff|<={dprobe:.2e}")
    print(f"\ncold cache by {how}; dd read bandwidth of the file: cold "
          f"{np.median(ddc):.2f} GB/s, warm {np.median(ddw):.2f} GB/s\n")
    print("| approach | cache | median s (min..max) | input GB/s | vs pool.open | vs dd |")
    print("|---|---|---|---|---|---|")
    for (name, cache), times in results.items():
        med, lo, hi = summary(times)
        base = summary(results[("pool.open", cache if cache != "in RAM" else "warm")])[0]
        dd = np.median(ddc if cache == "cold" else ddw)
        gbps = nbytes / med / 1e9
        print(f"| {name} | {cache} | {med:.2f} ({lo:.2f}..{hi:.2f}) | {gbps:.2f} | "
              f"{med / base:.2f}x time | {gbps / dd:.2f} |")


if __name__ == "__main__":
    main()
