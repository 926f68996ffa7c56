"""schedule="dynamic" against "static" on 2 workers, side by side in one run (issue #26 item 9).

The workload is time_steps/rowcost's kernel: row i sums sqrt(j + L[i]) for j < L[i]; "sorted"
rows grow with i (the last rows cost the most: static gives one worker most of the work),
"uniform" rows all have the mean length (the same total work: dynamic must not lose there).
Two chunk grids: the default one (2,000 float64 rows are 4 chunks of 512: a dynamic
schedule can balance no finer than a chunk) and ``chunk_rows=20`` (100 chunks), both
schedules on the same grid.
Each configuration runs quiet, then beside one CPU hog (a ``while True: pass`` process,
killed by its pid after). Calls alternate static/dynamic so a load change hits both; medians.
The load average is printed with each table: on a shared machine "quiet" means no hog of ours.

    python benchmarks/dynamic_claims.py [--repeats 15] [--rows 2000] [--slope 50] [--chunk-rows 20]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # import time_steps.rowcost

import sharedcompute as sc  # noqa: E402
from sharedcompute.partition import chunk_grid, chunk_rows  # noqa: E402
from time_steps.rowcost import init, sc_rows  # noqa: E402


def measure(pool, out, lengths, repeats, chunk):
    """Median seconds of static and dynamic, calls alternating; checks dynamic == static."""
    times = {"static": [], "dynamic": []}
    pool.map(sc_rows, out, lengths, schedule="static", chunk_rows=chunk)  # compile, attach
    first = out.numpy().copy()
    for _ in range(repeats):
        for schedule in ("static", "dynamic"):
            t0 = time.perf_counter()
            pool.map(sc_rows, out, lengths, schedule=schedule, chunk_rows=chunk)
            times[schedule].append(time.perf_counter() - t0)
    assert np.array_equal(out.numpy(), first), "dynamic differs from static"
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--slope", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=20, help="the finer of the two grids")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, {args.workers} workers, {args.repeats} repeats, "
          f"sharedcompute from {os.path.dirname(sc.__file__)}")
    print(f"{'rows':8} {'chunks':>6} {'beside':8} {'static ms':>10} {'dynamic ms':>11} "
          f"{'static/dyn':>11} {'load avg':>9}")
    with sc.Pool(args.workers) as pool:
        for hog in (False, True):
            proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if hog else None
            try:
                time.sleep(0.5 if hog else 0.0)
                for uniform, chunk in itertools.product((False, True), (None, args.chunk_rows)):
                    data = init(args.rows, args.slope, uniform, False)
                    out, lengths = pool.array(data["out"]), pool.array(data["lengths"])
                    t = measure(pool, out, lengths, args.repeats, chunk)
                    grid = len(chunk_grid(args.rows, chunk or chunk_rows(args.rows, 8)))
                    print(f"{'uniform' if uniform else 'sorted':8} {grid:6} "
                          f"{'a hog' if hog else '-':8} "
                          f"{t['static'] * 1e3:10.1f} {t['dynamic'] * 1e3:11.1f} "
                          f"{t['static'] / t['dynamic']:10.2f}x {os.getloadavg()[0]:9.2f}",
                          flush=True)
                    out.free(), lengths.free()
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
        fixed_cost(pool, args.rows, args.chunk_rows, args.repeats * 20)


def fixed_cost(pool, rows, chunk, repeats):
    """What a call costs beyond its work: rows of one sqrt each, both schedules (a static
    call repeated is rung through the doorbell; a dynamic one sends a claim order)."""
    out, lengths = pool.zeros(rows), pool.array(np.ones(rows, np.int64))
    t = measure(pool, out, lengths, repeats, chunk)
    print(f"fixed cost of a call ({rows} rows of one sqrt, {len(chunk_grid(rows, chunk))} "
          f"chunks): static {t['static'] * 1e6:.0f} us, dynamic {t['dynamic'] * 1e6:.0f} us, "
          f"load avg {os.getloadavg()[0]:.2f}")
    out.free(), lengths.free()


if __name__ == "__main__":
    main()
