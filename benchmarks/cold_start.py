"""Cold start (issue 15): Pool() plus the first call, in fresh `python -c` processes.

Each run is a new interpreter that imports sharedcompute and a library kernel, then times
  first pool:   sc.Pool(n) + the first pool.map(triad, ...) (workers start and load kernels)
  later pool:   a second sc.Pool(n) + its first map in the same process (a forkserver is
                already running then; spawn and fork start from scratch again)
for each start method, with the forkserver preload on and off (SHAREDCOMPUTE_PRELOAD=0),
and with ``sc.prestart()`` called right after the imports and 1 s of other work (a program
loading its data) before ``Pool()`` (warm cache; fork and forkserver),
with a cold numba cache (a new NUMBA_CACHE_DIR every run) and a warm one (one directory,
filled by an untimed run first). Runs of all configurations are interleaved (round-robin),
so a change of machine load hits them alike; the table gives medians and the load.

    python benchmarks/cold_start.py            # 5 runs each, 2 workers
    python benchmarks/cold_start.py --runs 7 --workers 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad
t1 = time.perf_counter()
method, n, warm = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
early = float(sys.argv[4])  # > 0: sc.prestart(), then that many seconds of other work
out = dict(import_s=t1 - t0)
if early:
    out["prestart"] = sc.prestart(method)
    time.sleep(early)  # the program loading its data meanwhile
for label in ("first", "later"):
    t = time.perf_counter()
    with sc.Pool(n, start_method=method) as pool:
        started = time.perf_counter()
        a = pool.zeros(100_000); b = pool.zeros(100_000)
        made = time.perf_counter()
        if warm:
            pool.warmup([(triad, a, b, b, 2.0)])
        warmed = time.perf_counter()
        pool.map(triad, a, b, b, 2.0)
        done = time.perf_counter()
        out[label + "_start_s"] = started - t
        out[label + "_call_s"] = done - warmed + (warmed - made)  # warmup counts as call
        out[label + "_s"] = (started - t) + (done - made)  # arrays' creation left out
        out[label + "_compile_s"] = sum(w["compile_s"] for w in pool.insights())
        if label == "first":
            out["preload"] = getattr(pool._executor, "preload", {}).get("state")
print(json.dumps(out))
"""


def configs(warmup: bool) -> list[dict]:
    methods = [m for m in ("fork", "forkserver", "spawn") if m in mp.get_all_start_methods()]
    out = []
    for cache in ("cold", "warm"):
        for m in methods:
            out.append(dict(method=m, preload=True, cache=cache, warmup=False))
            if m == "forkserver":
                out.append(dict(method=m, preload=False, cache=cache, warmup=False))
                if warmup:
                    out.append(dict(method=m, preload=True, cache=cache, warmup=True))
            if cache == "warm" and m != "spawn":  # prestart, then 1 s of other work
                out.append(dict(method=m, preload=True, cache=cache, warmup=False, early=1.0))
    return out


def run_one(cfg: dict, workers: int, cache_dir: str, cwd: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    if not cfg["preload"]:
        env["SHAREDCOMPUTE_PRELOAD"] = "0"
    out = subprocess.run([sys.executable, "-c", CHILD, cfg["method"], str(workers),
                          "1" if cfg["warmup"] else "0", str(cfg.get("early", 0))],
                         env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{cfg}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def name(cfg: dict) -> str:
    extra = "" if cfg["method"] != "forkserver" else (
        " + preload" if cfg["preload"] else " (preload off)")
    early = f" + sc.prestart(), {cfg['early']:g} s before Pool()" if cfg.get("early") else ""
    return cfg["method"] + extra + (" + warmup" if cfg["warmup"] else "") + early


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-warmup", action="store_true", help="leave out the warmup rows")
    ap.add_argument("--json", help="also write every run's figures here")
    args = ap.parse_args(argv)
    cfgs = configs(not args.no_warmup)
    results: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
    with tempfile.TemporaryDirectory() as tmp:  # cwd: no checkout on the server's sys.path
        warm_dir = os.path.join(tmp, "warm-cache")
        run_one(dict(method="spawn", preload=True, warmup=False), args.workers, warm_dir, tmp)
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        for r in range(args.runs):
            for i, cfg in enumerate(cfgs):
                cache = warm_dir if cfg["cache"] == "warm" else os.path.join(tmp, f"c{r}-{i}")
                results[i].append(run_one(cfg, args.workers, cache, tmp))
        load_after = os.getloadavg()
    med = lambda i, key: statistics.median(x[key] for x in results[i])  # noqa: E731
    print(f"{args.workers} workers, {args.runs} runs per row (medians), "
          f"{time.perf_counter() - t0:.0f} s; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; Python {sys.version.split()[0]}")
    print()
    print("| numba cache | start method | first pool: start + first call | (start, call) "
          "| later pool in the process | server preloaded |")
    print("|---|---|---|---|---|---|")
    for i, cfg in enumerate(cfgs):
        firsts = sorted(x["first_s"] for x in results[i])
        print(f"| {cfg['cache']} | {name(cfg)} | {med(i, 'first_s'):.3f} s "
              f"({firsts[0]:.2f}-{firsts[-1]:.2f}) | {med(i, 'first_start_s'):.3f}, "
              f"{med(i, 'first_call_s'):.3f} | {med(i, 'later_s'):.3f} s | "
              f"{results[i][0].get('preload') or '-'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(workers=args.workers, runs=args.runs, load=[load_before,
                           load_after], configs=cfgs, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
