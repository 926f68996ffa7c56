"""A/B of two checkouts of the engine, side by side in one run: warm dispatch of a tiny map,
iterate's cost per sweep, a triad and Jacobi 8192^2 x20 through iterate. Each round runs
one fresh process per checkout, alternating, and the medians over rounds are compared.

    git worktree add /tmp/old <commit>     # or: git archive <commit> | tar -x -C /tmp/old
    python benchmarks/engine_ab.py --old /tmp/old --new . --rounds 3

Only the public API is used, so any two versions since the doorbell can be compared.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

PROBE = r'''
import json, statistics, sys, time
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad
from sharedcompute.kernels.stencils import jacobi2d

def med(f, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); out.append(time.perf_counter() - t0)
    return statistics.median(out)

res = {}
with sc.Pool(2) as pool:
    a, b, c = pool.zeros(1000), pool.array(np.ones(1000)), pool.array(np.ones(1000))
    for _ in range(200):
        pool.map(triad, a, b, c, 2.0)
    res["dispatch_us"] = 1e6 * med(lambda: pool.map(triad, a, b, c, 2.0), 2000)
    u, w = pool.array(np.random.default_rng(0).random((32, 32))), pool.zeros((32, 32))
    pool.iterate(jacobi2d, w, u, steps=50)
    res["sweep_32_us"] = 1e6 * med(lambda: pool.iterate(jacobi2d, w, u, steps=200), 5) / 200
    g = int(sys.argv[1])
    if not g:  # --dispatch-only
        print("RESULT " + json.dumps(res)); raise SystemExit
    n = 2**25
    A, B, C = pool.zeros(n), pool.array(np.ones(n)), pool.array(np.ones(n))
    pool.map(triad, A, B, C, 3.0)
    res["triad_2^25_ms"] = 1e3 * med(lambda: pool.map(triad, A, B, C, 3.0), 10)
    for x in (A, B, C):
        x.free()
    U, W = pool.array(np.random.default_rng(1).random((g, g))), pool.zeros((g, g))
    pool.iterate(jacobi2d, W, U, steps=1)
    res[f"jacobi_{g}^2_x20_s"] = med(lambda: pool.iterate(jacobi2d, W, U, steps=20), 3)
print("RESULT " + json.dumps(res))
'''


def run(tree: str, grid: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    with tempfile.TemporaryDirectory() as cwd:  # never import a checkout by accident
        out = subprocess.run([sys.executable, "-c", PROBE, str(grid)], capture_output=True,
                             text=True, env=env, cwd=cwd, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{tree}: no result\n{out.stdout}\n{out.stderr}")


def _import_root(tree: str) -> tempfile.TemporaryDirectory:
    """A copy of a checkout laid out as installed: ./kernels becomes sharedcompute.kernels."""
    root = tempfile.TemporaryDirectory()
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    shutil.copytree(os.path.join(tree, "sharedcompute"),
                    os.path.join(root.name, "sharedcompute"), ignore=ignore)
    shutil.copytree(os.path.join(tree, "kernels"),
                    os.path.join(root.name, "sharedcompute", "kernels"), ignore=ignore)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", default=".")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grid", type=int, default=8192)
    ap.add_argument("--dispatch-only", action="store_true",
                    help="only the warm dispatch and the per-sweep cost")
    args = ap.parse_args()
    roots = {"old": _import_root(args.old), "new": _import_root(args.new)}
    rows: dict[str, dict[str, list]] = {"old": {}, "new": {}}
    for r in range(args.rounds):
        for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
            for k, v in run(roots[label].name, 0 if args.dispatch_only else args.grid).items():
                rows[label].setdefault(k, []).append(v)
    print(f"{'measure':<22} {'old median':>12} {'new median':>12} {'new/old':>8}   all rounds")
    for k in rows["old"]:
        o, n = statistics.median(rows["old"][k]), statistics.median(rows["new"][k])
        print(f"{k:<22} {o:>12.4g} {n:>12.4g} {n / o:>8.3f}   old {rows['old'][k]} "
              f"new {rows['new'][k]}")


if __name__ == "__main__":
    main()
