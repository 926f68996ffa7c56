"""pool.iterate against numba prange, side by side in one run (issue 15, iterate items).

1. A Laplace solve checking convergence every sweep (default 3000^2, 100 sweeps, max-change
   residual): pool.iterate of the fused jacobi2d_residual, the previous way (jacobi2d plus
   residual=max_abs_diff), a prange loop computing the residual in the same pass, and the
   same loop on one numba thread (the serial result: the pool must equal it bitwise).
2. Jacobi sweeps without checks (default 8192^2 and 1024^2, 20 sweeps): pool.iterate with
   temporal blocking (block_sweeps chosen, and given), plain sweeps (block_sweeps=1), and
   the prange sweep loop of `sharedcompute bench`.

Every approach runs once per round, in rotated order, so all see the same machine state;
medians over the rounds. Usage:

    python benchmarks/iterate_blocking.py [--workers 2] [--rounds 5] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import numpy as np
from numba import njit, prange

import sharedcompute as sc
from sharedcompute._iterate.plan import cache_bytes, choose_block
from sharedcompute.kernels.reductions import max_abs_diff
from sharedcompute.kernels.stencils import jacobi2d, jacobi2d_residual


def _laplace(a, b, sweeps, tol, rows):
    n, m = b.shape
    done, res = 0, 0.0
    for k in range(sweeps):
        src = b if k % 2 == 0 else a
        dst = a if k % 2 == 0 else b
        big = 0.0
        for r in rows(1, n - 1):
            dst[r, 0] = src[r, 0]
            row_big = 0.0
            for j in range(1, m - 1):
                v = 0.25 * (((src[r - 1, j] + src[r + 1, j]) + src[r, j - 1]) + src[r, j + 1])
                dst[r, j] = v
                row_big = max(row_big, abs(v - src[r, j]))
            dst[r, m - 1] = src[r, m - 1]
            big = max(big, row_big)
        done, res = k + 1, big
        if big <= tol:
            break
    return done, res


@njit(parallel=True)
def p_laplace(a, b, sweeps, tol):
    """The fused prange loop: sweep and max change in one pass, checked every sweep."""
    n, m = b.shape
    done, res = 0, 0.0
    for k in range(sweeps):
        src = b if k % 2 == 0 else a
        dst = a if k % 2 == 0 else b
        big = 0.0
        for r in prange(1, n - 1):
            dst[r, 0] = src[r, 0]
            row_big = 0.0
            for j in range(1, m - 1):
                v = 0.25 * (((src[r - 1, j] + src[r + 1, j]) + src[r, j - 1]) + src[r, j + 1])
                dst[r, j] = v
                row_big = max(row_big, abs(v - src[r, j]))
            dst[r, m - 1] = src[r, m - 1]
            big = max(big, row_big)
        done, res = k + 1, big
        if big <= tol:
            break
    return done, res


@njit(parallel=True)
def p_laplace_rows(a, b, sweeps, tol):
    """The fused prange loop with jacobi2d_residual's row code: each row's |change| stored,
    then its maximum taken over the bit patterns (an integer max, which vectorizes; the
    loop above keeps a float max, which does not). The same values, faster."""
    n, m = b.shape
    done, res = 0, 0.0
    for k in range(sweeps):
        src = b if k % 2 == 0 else a
        dst = a if k % 2 == 0 else b
        big = 0
        for r in prange(1, n - 1):
            change = np.zeros(m)
            bits = change.view(np.int64)
            dst[r, 0] = src[r, 0]
            for j in range(1, m - 1):
                v = 0.25 * (((src[r - 1, j] + src[r + 1, j]) + src[r, j - 1]) + src[r, j + 1])
                dst[r, j] = v
                change[j] = abs(v - src[r, j])
            row_big = 0
            for j in range(1, m - 1):
                row_big = max(row_big, bits[j])
            dst[r, m - 1] = src[r, m - 1]
            big = max(big, row_big)
        done, res = k + 1, np.array([big]).view(np.float64)[0]
        if res <= tol:
            break
    return done, res


@njit
def s_laplace(a, b, sweeps, tol):
    """The same loop on one thread: the serial result."""
    n, m = b.shape
    done, res = 0, 0.0
    for k in range(sweeps):
        src = b if k % 2 == 0 else a
        dst = a if k % 2 == 0 else b
        big = 0.0
        for r in range(1, n - 1):
            dst[r, 0] = src[r, 0]
            row_big = 0.0
            for j in range(1, m - 1):
                v = 0.25 * (((src[r - 1, j] + src[r + 1, j]) + src[r, j - 1]) + src[r, j + 1])
                dst[r, j] = v
                row_big = max(row_big, abs(v - src[r, j]))
            dst[r, m - 1] = src[r, m - 1]
            big = max(big, row_big)
        done, res = k + 1, big
        if big <= tol:
            break
    return done, res


@njit(parallel=True)
def p_jacobi(a, b, sweeps):
    """`sharedcompute bench`'s prange sweep loop (sharedcompute/bench/peers.py)."""
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


def grid(n: int) -> np.ndarray:
    g = np.random.default_rng(0).random((n, n))
    g[0], g[-1], g[:, 0], g[:, -1] = 1.0, 0.0, 0.5, 0.5
    return g


def rounds(approaches: dict, n_rounds: int) -> dict:
    """{name: [seconds]}; each round runs every approach once, the order rotated."""
    names = list(approaches)
    times: dict = {k: [] for k in names}
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.3)  # OpenMP's threads spin after a prange region: let them settle
            t0 = time.perf_counter()
            approaches[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def show(title: str, times: dict, base: str, checks: dict) -> None:
    print(f"\n{title}")
    ref = statistics.median(times[base])
    print(f"{'approach':44s} {'median':>9s} {'min..max':>19s} {'x ' + base:>12s}  check")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:44s} {med * 1e3:7.1f}ms {min(ts) * 1e3:8.1f}..{max(ts) * 1e3:7.1f}ms "
              f"{ref / med:11.2f}x  {checks.get(name, '')}")


def laplace(pool, n: int, sweeps: int, n_rounds: int) -> None:
    g = grid(n)
    a, b = np.array(g), np.array(g)
    sa, sb = np.array(g), np.array(g)
    u, out = pool.array(g), pool.array(g)
    u2, out2 = pool.array(g), pool.array(g)
    u3, out3 = pool.array(g), pool.array(g)
    a2, b2 = np.array(g), np.array(g)
    state: dict = {}

    def fused():
        np.asarray(u)[:] = g
        state["fused"] = pool.iterate(jacobi2d_residual, out, u, steps=sweeps, tol=0.0,
                                      check_every=1, info=True)

    def separate():
        np.asarray(u2)[:] = g
        state["separate"] = pool.iterate(jacobi2d, out2, u2, steps=sweeps, tol=0.0,
                                         residual=max_abs_diff, check_every=1, info=True)

    def prange_():
        b[:] = g
        state["prange"] = p_laplace(a, b, sweeps, 0.0)

    def prange_rows():
        b2[:] = g
        state["prange_rows"] = p_laplace_rows(a2, b2, sweeps, 0.0)

    def fused_k(k):
        def run():
            np.asarray(u3)[:] = g
            state[f"fused{k}"] = pool.iterate(jacobi2d_residual, out3, u3, steps=sweeps,
                                              tol=0.0, check_every=1, info=True,
                                              block_sweeps=k)
        return run

    def serial():
        sb[:] = g
        state["serial"] = s_laplace(sa, sb, sweeps, 0.0)

    approaches = {"pool.iterate fused (jacobi2d_residual)": fused,
                  "  the same, block_sweeps=9": fused_k(9),
                  "  the same, block_sweeps=1 (plain sweeps)": fused_k(1),
                  "pool.iterate + residual=max_abs_diff": separate,
                  "prange, residual in the same pass": prange_,
                  "prange, jacobi2d_residual's row code": prange_rows,
                  "numba 1 thread, same loop": serial}
    for f in approaches.values():
        f()  # compile, warm the pages
    times = rounds(approaches, n_rounds)
    done, res = state["serial"]
    want = sa if done % 2 == 1 else sb
    r, r2 = state["fused"], state["separate"]
    checks = {
        "pool.iterate fused (jacobi2d_residual)":
            f"bitwise serial: {np.array_equal(np.asarray(r.array), want)}, sweeps {r.sweeps}, "
            f"residual {r.residual == res}",
        "pool.iterate + residual=max_abs_diff":
            f"bitwise serial: {np.array_equal(np.asarray(r2.array), want)}, residual "
            f"{r2.residual == res}",
        "prange, residual in the same pass":
            f"equal serial: {np.array_equal(a if done % 2 else b, want)}",
        "prange, jacobi2d_residual's row code":
            f"equal serial: {np.array_equal(a2 if done % 2 else b2, want)}, residual "
            f"{state['prange_rows'][1] == res}",
        "numba 1 thread, same loop": f"{done} sweeps, final residual {res:.3e}",
    }
    for k in (9, 1):
        rk = state[f"fused{k}"]
        checks[f"  the same, block_sweeps={k}" + (" (plain sweeps)" if k == 1 else "")] = (
            f"bitwise serial: {np.array_equal(np.asarray(rk.array), want)}, residual "
            f"{rk.residual == res}, blocks of {rk.block_sweeps}")
    checks["pool.iterate fused (jacobi2d_residual)"] += f", blocks of {r.block_sweeps}"
    show(f"Laplace {n}^2, {sweeps} sweeps, max-change residual checked every sweep",
         times, "prange, residual in the same pass", checks)
    del r, r2, rk, state
    for x in (u, out, u2, out2, u3, out3):
        x.free()


def jacobi(pool, n: int, sweeps: int, n_rounds: int, ks: tuple) -> None:
    g = grid(n)
    a, b = np.array(g), np.array(g)
    u, out = pool.array(g), pool.array(g)
    results: dict = {}
    approaches = {}
    row = n * 8
    auto_k, tile = choose_block(n, row, 1, pool.n_workers, None)

    def run_pool(k):
        def f():
            np.asarray(u)[:] = g
            results[k] = pool.iterate(jacobi2d, out, u, steps=sweeps, block_sweeps=k,
                                      info=True)
        return f

    def prange_():
        b[:] = g
        p_jacobi(a, b, sweeps)
    for k in (None,) + ks + (1,):
        label = (f"pool.iterate blocked, auto (k={auto_k}, tile {tile} rows)" if k is None
                 else "pool.iterate plain sweeps (block_sweeps=1)" if k == 1
                 else f"pool.iterate block_sweeps={k}")
        approaches[label] = run_pool(k)
    approaches["prange sweep loop"] = prange_
    for f in approaches.values():
        f()
    times = rounds(approaches, n_rounds)
    prange_()
    want = a if sweeps % 2 else b
    checks = {}
    for label, k in zip(approaches, (None,) + ks + (1,)):
        r = results[k]
        checks[label] = (f"equal prange: {np.array_equal(np.asarray(r.array), want)}, "
                         f"k used {r.block_sweeps}")
    show(f"Jacobi {n}^2 x{sweeps} (no residual)", times, "prange sweep loop", checks)
    u.free(), out.free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args()
    w = args.workers
    numba.set_num_threads(w)
    l2, llc = cache_bytes()
    print(f"{w} workers, prange on {numba.get_num_threads()} threads; "
          f"L2 {l2 >> 10} KiB, last-level cache {llc >> 20} MiB; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    with sc.Pool(w) as pool:
        print(f"pool start method {pool.start_method}")
        p_jacobi(np.zeros((4, 4)), np.zeros((4, 4)), 1)  # start numba's threads
        print(f"numba threading layer {numba.threading_layer()}")
        if args.quick:
            laplace(pool, 500, 50, args.rounds)
            jacobi(pool, 1024, 20, args.rounds, (4,))
        else:
            laplace(pool, 3000, 100, args.rounds)
            jacobi(pool, 8192, 20, args.rounds, (4, 8))
            jacobi(pool, 1024, 20, args.rounds, (4, 8))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
