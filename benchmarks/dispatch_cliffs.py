"""Dispatch of a repeated tiny map on a warm pool, and the cliffs of issue 15, side by side.

Every case runs a 1,000-row map (a few ns of work per row), so what is timed is the call's
own cost: planning (or the cache lookup), the checks, ringing the workers and collecting
their answers. Cases, each timed ``--calls`` times per round, rounds interleaved:

    map         pool.map(tiny, out, x, 2.0), the same call again (the warm dispatch)
    bind        call = pool.bind(tiny, out, x, 2.0); call()
    whole-decl  a SharedArray the kernel declares whole= in its decorator
    sc.whole    the same array wrapped in sc.whole(W) at every call
    plain       a small plain ndarray argument (16 float64, sent whole)
    cycle32     the scalar cycling over 32 distinct values
    cycle33     ... over 33 distinct values (the old cache held 32 calls)
    fresh       a new scalar value at every call (a time step, say)

    python benchmarks/dispatch_cliffs.py [--workers 2] [--calls 2000] [--rounds 3] [--json out]
    python benchmarks/dispatch_cliffs.py --old /tmp/old --new . --runs 3   # A/B, alternating

Set PYTHONPATH to a checkout to measure it; ``bind`` is skipped where Pool has no bind.
With --old/--new, fresh processes of each checkout alternate and the medians over runs are
compared side by side (as engine_ab.py does).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import sharedcompute as sc

N = 1000


@sc.kernel
def tiny(out, x, s):
    for i in range(out.shape[0]):
        out[i] = x[i] * s


@sc.kernel(whole=("w",))
def tiny_decl(out, x, w):
    for i in range(out.shape[0]):
        out[i] = x[i] + w[0]


@sc.kernel
def tiny_any(out, x, w):
    for i in range(out.shape[0]):
        out[i] = x[i] + w[0]


def cases(pool: sc.Pool) -> dict:
    out, x = pool.zeros(N), pool.array(np.arange(N, dtype=float))
    W = pool.array(np.ones(16))
    small = np.ones(16)
    state = {"i": 0, "t": 0.5}

    def cycle(k: int):  # values of its own: no case hits another's cached calls
        values = [float(k * 1000 + v) for v in range(k)]

        def run():
            state["i"] += 1
            pool.map(tiny, out, x, values[state["i"] % k])
        return run

    def fresh():
        state["t"] += 1.0
        pool.map(tiny, out, x, state["t"])

    found = {
        "map": lambda: pool.map(tiny, out, x, 2.0),
        "whole-decl": lambda: pool.map(tiny_decl, out, x, W),
        "sc.whole": lambda: pool.map(tiny_any, out, x, sc.whole(W)),
        "plain": lambda: pool.map(tiny_any, out, x, small),
        "cycle32": cycle(32),
        "cycle33": cycle(33),
        "fresh": fresh,
    }
    if hasattr(pool, "bind"):
        found["bind"] = pool.bind(tiny, out, x, 2.0)
    return found


def timed(f, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def ab(args: argparse.Namespace) -> None:
    """Alternate fresh processes of two checkouts; print the median over runs of each."""
    got: dict[str, list[dict]] = {"old": [], "new": []}
    load0 = os.getloadavg()[0]
    for _ in range(args.runs):
        for label, tree in (("old", args.old), ("new", args.new)):
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
                subprocess.run([sys.executable, os.path.abspath(__file__), "--workers",
                                str(args.workers), "--calls", str(args.calls), "--rounds",
                                str(args.rounds), "--json", f.name], env=env, check=True,
                               stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
                with open(f.name) as g:
                    got[label].append(json.load(g)["median_us"])
    load1 = os.getloadavg()[0]
    print(f"A/B dispatch of a {N}-row map, {args.workers} workers, {args.runs} runs each "
          f"(alternating), medians of per-run medians; load average {load0:.2f} -> {load1:.2f}")
    print(f"{'case':<11} {'old us':>8} {'new us':>8} {'old x map':>10} {'new x map':>10}")
    med = {k: {c: statistics.median(r[c] for r in v if c in r) for c in v[0]}
           for k, v in got.items()}
    for c in med["new"]:
        old = med["old"].get(c)
        o = f"{old:>8.1f}" if old is not None else f"{'-':>8}"
        orat = f"{old / med['old']['map']:>10.2f}" if old is not None else f"{'-':>10}"
        print(f"{c:<11} {o} {med['new'][c]:>8.1f} {orat} {med['new'][c] / med['new']['map']:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--start-method", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--old", default=None, help="A/B: the checkout to compare against")
    ap.add_argument("--new", default=".", help="A/B: the checkout under test")
    ap.add_argument("--runs", type=int, default=3, help="A/B: processes of each checkout")
    args = ap.parse_args()
    if args.old:
        return ab(args)
    load0 = os.getloadavg()[0]
    with sc.Pool(args.workers, start_method=args.start_method) as pool:
        found = cases(pool)
        for f in found.values():  # compile, attach, fill the caches
            timed(f, 100)
        samples: dict[str, list[float]] = {k: [] for k in found}
        for _ in range(args.rounds):
            for k, f in found.items():
                samples[k] += timed(f, args.calls)
        method = pool.start_method
    load1 = os.getloadavg()[0]
    med = {k: 1e6 * statistics.median(v) for k, v in samples.items()}
    print(f"dispatch of a {N}-row map, {args.workers} workers ({method}), "
          f"{args.rounds} rounds x {args.calls} calls; load average {load0:.2f} -> {load1:.2f}")
    print(f"{'case':<11} {'median us':>10} {'p10 us':>8} {'p90 us':>8} {'x map':>6}")
    for k, v in samples.items():
        q = np.percentile(np.array(v) * 1e6, [10, 90])
        print(f"{k:<11} {med[k]:>10.1f} {q[0]:>8.1f} {q[1]:>8.1f} {med[k] / med['map']:>6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median_us": med, "load": [load0, load1], "workers": args.workers,
                       "start_method": method}, f, indent=1)


if __name__ == "__main__":
    main()
