"""What ``progress=True`` costs (issue 27): a plain-Python (``jit=False``) Gaussian smoothing
with an 8-row halo over a 256 x 512 x 512 float32 volume, with and without a progress bar,
interleaved in one run on one pool (medians; the ratio is the median of the per-round
ratios). A bar used to cost one kernel call per chunk (here 256 chunks of one row, each
recomputing its 16 halo rows: 56 s against 5 s); the workers now make the same calls either
way and the bar advances as they return. Each result is checked bitwise against the call
without a bar, and against SciPy on the whole volume.

    python benchmarks/progress_cost.py [--quick] [--repeats N] [--workers N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

import sharedcompute as sc

SIGMA, TRUNCATE = 2.0, 4.0
DEPTH = int(TRUNCATE * SIGMA + 0.5)  # scipy's kernel radius: 8 rows


@sc.kernel(jit=False, depth=DEPTH, boundary="reflect")
def gaussian(out, vol):
    """scipy.ndimage.gaussian_filter on a block with DEPTH halo rows on each side of axis 0:
    its rows are those of the whole-volume call (mode 'reflect' is the pool's 'reflect')."""
    full = ndimage.gaussian_filter(vol, SIGMA, truncate=TRUNCATE, mode="reflect")
    out[:] = full[DEPTH:full.shape[0] - DEPTH]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 64 x 256 x 256 volume")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    shape = (64, 256, 256) if args.quick else (256, 512, 512)
    vol0 = np.random.default_rng(0).random(shape, dtype=np.float32)
    with sc.Pool(args.workers) as pool:
        vol, out = pool.array(vol0), pool.empty(shape, np.float32)
        want = ndimage.gaussian_filter(vol0, SIGMA, truncate=TRUNCATE, mode="reflect")
        n_chunks = [0]

        def count(done: int, total: int) -> None:
            n_chunks[0] = total
        pool.map(gaussian, out, vol, progress=count)  # warm-up; the bar's chunk count
        err = float(np.max(np.abs(out.numpy() - want)))
        rows = []
        for schedule in ("static", "dynamic"):
            times: dict = {False: [], True: []}
            ratios, bits = [], {}
            for _ in range(args.repeats):
                for progress in (False, "transient"):  # "transient": tqdm, erased when done
                    t0 = time.perf_counter()
                    pool.map(gaussian, out, vol, schedule=schedule, progress=progress)
                    times[bool(progress)].append(time.perf_counter() - t0)
                    bits[bool(progress)] = out.numpy().tobytes()
                ratios.append(times[True][-1] / times[False][-1])
            rows.append((schedule, statistics.median(times[False]),
                         statistics.median(times[True]), statistics.median(ratios),
                         bits[True] == bits[False]))
        workers = pool.n_workers
        vol.free(), out.free()
    print(f"gaussian_filter (jit=False, depth={DEPTH}) on {'x'.join(map(str, shape))} float32, "
          f"{workers} workers, {n_chunks[0]} chunks, {args.repeats} rounds; "
          f"max |pool - scipy| = {err:.1e}")
    print("| schedule | no bar (s) | progress bar (s) | bar / no bar | same bits |")
    print("|---|---|---|---|---|")
    for schedule, plain, barred, ratio, same in rows:
        print(f"| {schedule} | {plain:.2f} | {barred:.2f} | {ratio:.2f}x | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
