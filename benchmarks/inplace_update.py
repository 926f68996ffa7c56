"""The in-place update ``a += b + s * c`` (issue 15): the pool against numba prange, and where
the difference comes from, side by side in one run.

Rows, each timed over ``--iters`` updates of 2^``--log2`` float64 (default 2^25, 20 updates),
in rotated order per round (medians over ``--rounds``); bandwidth counts STREAM bytes, 32
per element (a, b and c read, a written):

    pool.map           pool.map(update, A, B, C, s) on the pool's shared arrays
    pool.bind          call = pool.bind(update, A, B, C, s); call()
    prange, NumPy      a prange loop on NumPy arrays (anonymous memory: NumPy asks for
                       transparent huge pages where the kernel allows them)
    prange, shared     the same prange loop on views of the pool's shared arrays: the same
                       memory as the pool, so pool / this row is the library's own cost
    numba 1 thread     the loop on one thread, NumPy arrays

The page setting of shared memory is printed: /dev/shm's pages are huge only if
/sys/kernel/mm/transparent_hugepage/shmem_enabled allows it (it is 'never' on most systems,
and only root can change it). ``--huge-tmpfs DIR`` adds a row with prange on arrays in
files of DIR (mount one with ``mount -t tmpfs -o huge=always,size=4g none DIR``), to
measure what 2 MiB pages would give shared memory.

    python benchmarks/inplace_update.py [--workers 2] [--rounds 7] [--log2 25] [--iters 20]
"""
from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time

import numba
import numpy as np
from numba import njit, prange

import sharedcompute as sc

S = 3.0


@sc.kernel(elementwise=True)
def update(a, b, c, s):
    for i in range(a.shape[0]):
        a[i] += b[i] + s * c[i]


@njit(parallel=True)
def p_update(a, b, c, s):
    for i in prange(a.shape[0]):
        a[i] += b[i] + s * c[i]


@njit
def one_update(a, b, c, s):
    for i in range(a.shape[0]):
        a[i] += b[i] + s * c[i]


def huge_arrays(folder: str, n: int) -> list[np.ndarray]:
    out = []
    for k in range(3):
        path = os.path.join(folder, f"inplace_update_{os.getpid()}_{k}")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, 8 * n)
            mm = mmap.mmap(fd, 8 * n)
        finally:
            os.close(fd)
            os.unlink(path)  # the mapping keeps the memory until it goes
        out.append(np.frombuffer(mm, np.float64))
    return out


def setting(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--log2", type=int, default=25)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--huge-tmpfs", default=None)
    args = ap.parse_args()
    n, iters, w = 1 << args.log2, args.iters, args.workers
    numba.set_num_threads(w)
    rng = np.random.default_rng(0)
    b0, c0 = rng.random(n), rng.random(n)
    print(f"a += b + {S} * c, n = 2^{args.log2} float64, {iters} updates per timing, {w} "
          f"workers / prange threads, {args.rounds} rounds; load average at start "
          f"{os.getloadavg()[0]:.2f}")
    print(f"shmem_enabled: {setting('/sys/kernel/mm/transparent_hugepage/shmem_enabled')}; "
          f"THP enabled: {setting('/sys/kernel/mm/transparent_hugepage/enabled')}")
    with sc.Pool(w) as pool:
        A, B, C = pool.zeros(n), pool.array(b0), pool.array(c0)
        a, b, c = np.zeros(n), b0.copy(), c0.copy()
        sets = {"prange, shared": [np.asarray(x) for x in (A, B, C)]}
        if args.huge_tmpfs:
            hs = huge_arrays(args.huge_tmpfs, n)
            hs[1][:], hs[2][:] = b0, c0
            sets["prange, huge-page tmpfs"] = hs
        call = pool.bind(update, A, B, C, S)
        rows = {
            "pool.map": lambda: pool.map(update, A, B, C, S),
            "pool.bind": call,
            "prange, NumPy": lambda: p_update(a, b, c, S),
            **{k: (lambda v=v: p_update(*v, S)) for k, v in sets.items()},
            "numba 1 thread": lambda: one_update(a, b, c, S),
        }
        for f in rows.values():
            f()  # compile, map the pages
        times: dict[str, list[float]] = {k: [] for k in rows}
        names = list(rows)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                time.sleep(0.2)  # OpenMP's threads spin a while after a region
                t0 = time.perf_counter()
                for _ in range(iters):
                    rows[name]()
                times[name].append(time.perf_counter() - t0)
        # A took the updates of three rows (pool.map, pool.bind, prange on its views), a
        # of two, each rounds * iters + 1 (the warm-up) times
        step = (args.rounds * iters + 1) * (b0 + S * c0)
        checks = {"A": bool(np.allclose(np.asarray(A), 3 * step, rtol=1e-9)),
                  "a": bool(np.allclose(a, 2 * step, rtol=1e-9))}
        ref = statistics.median(times["prange, NumPy"])
        print(f"\n{'row':28s} {'GB/s':>7s} {'min..max GB/s':>15s} {'x prange NumPy':>15s}")
        for name, ts in times.items():
            gbs = [32 * n * iters / t / 1e9 for t in ts]
            print(f"{name:28s} {statistics.median(gbs):7.1f} {min(gbs):7.1f}..{max(gbs):<7.1f}"
                  f" {ref / statistics.median(ts):14.2f}x")
        shared = statistics.median(times["prange, shared"])
        print(f"\npool.map / prange on the same shared memory: "
              f"{shared / statistics.median(times['pool.map']):.2f}x; pool.bind: "
              f"{shared / statistics.median(times['pool.bind']):.2f}x")
        print(f"results checked (a after all updates): {checks}")
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        del sets, rows, call
        for x in (A, B, C):
            x.free()


if __name__ == "__main__":
    main()
