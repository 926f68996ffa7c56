"""Cold start (issues 15, 27): Pool() plus the first call, in fresh `python -c` processes.

Each run is a new interpreter that imports sharedcompute and a library kernel, then times
  first pool:   sc.Pool(n) + the first pool.map(triad, ...) (workers start and load kernels)
  later pool:   a second sc.Pool(n) + its first map in the same process (a forkserver is
                already running then; spawn and fork start from scratch again)
for each start method; under forkserver with the server as it comes (issue 27: forked from
the parent where that is safe), spawned and preloaded (SHAREDCOMPUTE_PRELOAD=spawn), and
without the preload (SHAREDCOMPUTE_PRELOAD=0); with ``pool.warmup`` before the first call;
and with ``sc.prestart()`` called right after the imports and 1 s of other work (a program
loading its data) before ``Pool()`` (warm cache; fork and forkserver);
with a cold numba cache (a new NUMBA_CACHE_DIR every run) and a warm one (one directory per
tree, filled by an untimed run first).

``--old PATH`` runs a checkout of the code before a change (a git worktree of main, say)
beside this one: each row is timed for both trees, side by side. The old tree is imported
through PYTHONPATH from a folder of links that puts its ``kernels/`` where the package
keeps them (``sharedcompute.kernels``); each run checks which copy it imported.

Runs of all rows (and both trees) are interleaved round-robin, so a change of machine load
hits them alike; the table gives medians, the first pool's range and the load average.

    python benchmarks/cold_start.py            # 5 runs each, 2 workers
    python benchmarks/cold_start.py --runs 7 --cache warm --old ../wt-main --json out.json
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
out = dict(import_s=t1 - t0, package=sc.__file__)
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


def configs(warmup: bool, caches: tuple) -> list[dict]:
    methods = [m for m in ("fork", "forkserver", "spawn") if m in mp.get_all_start_methods()]
    out = []
    for cache in caches:
        for m in methods:
            out.append(dict(method=m, preload="1", cache=cache, warmup=False))
            if m == "forkserver":
                out.append(dict(method=m, preload="spawn", cache=cache, warmup=False))
                out.append(dict(method=m, preload="0", cache=cache, warmup=False))
                if warmup:
                    out.append(dict(method=m, preload="1", cache=cache, warmup=True))
            if cache == "warm" and m != "spawn":  # prestart, then 1 s of other work
                out.append(dict(method=m, preload="1", cache=cache, warmup=False, early=1.0))
    return out


def link_tree(old: str, into: str) -> str:
    """A folder holding ``sharedcompute/``: links to the old checkout's package files and its
    ``kernels/`` folder, laid out as an installed package (setuptools' package-dir)."""
    pkg = os.path.join(into, "sharedcompute")
    os.makedirs(pkg)
    src = os.path.join(old, "sharedcompute")
    for name in os.listdir(src):
        if name != "__pycache__":
            os.symlink(os.path.join(src, name), os.path.join(pkg, name))
    os.symlink(os.path.join(old, "kernels"), os.path.join(pkg, "kernels"))
    return into


def run_one(cfg: dict, workers: int, cache_dir: str, cwd: str, path: str | None) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, SHAREDCOMPUTE_PRELOAD=cfg["preload"])
    env.pop("PYTHONPATH", None)
    if path:
        env["PYTHONPATH"] = path
    out = subprocess.run([sys.executable, "-c", CHILD, cfg["method"], str(workers),
                          "1" if cfg["warmup"] else "0", str(cfg.get("early", 0))],
                         env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{cfg}: {out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if path and not got["package"].startswith(path):
        raise RuntimeError(f"the old tree's run imported {got['package']}, not {path}")
    got["load"] = os.getloadavg()[0]
    return got


def name(cfg: dict) -> str:
    extra = "" if cfg["method"] != "forkserver" else {
        "1": "", "spawn": " (server spawned: SHAREDCOMPUTE_PRELOAD=spawn)",
        "0": " (preload off)"}[cfg["preload"]]
    early = f" + sc.prestart(), {cfg['early']:g} s before Pool()" if cfg.get("early") else ""
    return cfg["method"] + extra + (" + warmup" if cfg["warmup"] else "") + early


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-warmup", action="store_true", help="leave out the warmup rows")
    ap.add_argument("--cache", choices=("cold", "warm", "both"), default="both")
    ap.add_argument("--old", metavar="PATH", help="a checkout of the code before a change, "
                    "run beside this one (a git worktree: `git worktree add PATH main`)")
    ap.add_argument("--json", help="also write every run's figures here")
    args = ap.parse_args(argv)
    caches = ("cold", "warm") if args.cache == "both" else (args.cache,)
    cfgs = configs(not args.no_warmup, caches)
    with tempfile.TemporaryDirectory() as tmp:  # cwd: no checkout on the server's sys.path
        trees = {"after": None}
        if args.old:
            trees = {"before": link_tree(os.path.abspath(args.old), os.path.join(tmp, "old")),
                     **trees}
        results = {(t, i): [] for t in trees for i in range(len(cfgs))}
        for t, path in trees.items():  # fill each tree's warm cache, untimed
            run_one(dict(method="spawn", preload="1", warmup=False), args.workers,
                    os.path.join(tmp, f"warm-{t}"), tmp, path)
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        for r in range(args.runs):
            for i, cfg in enumerate(cfgs):
                for t, path in trees.items():
                    cache = (os.path.join(tmp, f"warm-{t}") if cfg["cache"] == "warm"
                             else os.path.join(tmp, f"c{r}-{i}-{t}"))
                    results[t, i].append(run_one(cfg, args.workers, cache, tmp, path))
        load_after = os.getloadavg()
    loads = sorted(x["load"] for runs in results.values() for x in runs)
    print(f"{args.workers} workers, {args.runs} runs per row (medians), "
          f"{time.perf_counter() - t0:.0f} s; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after, {statistics.median(loads):.2f} median over the runs "
          f"({loads[0]:.2f}-{loads[-1]:.2f}); Python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs")
    print()
    med = lambda t, i, key: statistics.median(x[key] for x in results[t, i])  # noqa: E731

    def server(t: str, i: int) -> str:  # the states the runs saw (forked, preloaded, ...)
        return ", ".join(sorted({x.get("preload") or "-" for x in results[t, i]}))

    def first(t: str, i: int) -> str:
        firsts = sorted(x["first_s"] for x in results[t, i])
        return f"{med(t, i, 'first_s'):.3f} s ({firsts[0]:.2f}-{firsts[-1]:.2f})"

    if args.old:
        print("| numba cache | start method | first pool, before | first pool, after "
              "| after: (start, call) | later pool, before | later pool, after "
              "| server, before / after |")
        print("|---|---|---|---|---|---|---|---|")
        for i, cfg in enumerate(cfgs):
            print(f"| {cfg['cache']} | {name(cfg)} | {first('before', i)} | {first('after', i)} "
                  f"| {med('after', i, 'first_start_s'):.3f}, "
                  f"{med('after', i, 'first_call_s'):.3f} | {med('before', i, 'later_s'):.3f} s "
                  f"| {med('after', i, 'later_s'):.3f} s | {server('before', i)} / "
                  f"{server('after', i)} |")
    else:
        print("| numba cache | start method | first pool: start + first call | (start, call) "
              "| later pool in the process | server |")
        print("|---|---|---|---|---|---|")
        for i, cfg in enumerate(cfgs):
            print(f"| {cfg['cache']} | {name(cfg)} | {first('after', i)} | "
                  f"{med('after', i, 'first_start_s'):.3f}, "
                  f"{med('after', i, 'first_call_s'):.3f} | {med('after', i, 'later_s'):.3f} s "
                  f"| {server('after', i)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(workers=args.workers, runs=args.runs, load=[load_before, load_after],
                           configs=cfgs, trees=list(trees),
                           results={f"{t}:{i}": v for (t, i), v in results.items()}),
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
