"""Heat equation on a rod: explicit finite differences, halo exchange through shared memory.
=========================================================================================

The rod starts cold with a hot spot in the middle; its two ends are held at 0 (boundary
'none' keeps edge rows fixed). pool.iterate runs every time step inside the workers, each
reading its neighbours' edge cells straight from shared memory.

    python examples/heat_equation.py --cells 2000000 --steps 500
"""
import argparse
import json
import sys
import time
from typing import Any, Sequence

import numpy as np

import sharedcompute as sc
from sharedcompute.kernels.stencils import heat1d


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--cells", type=int, default=200_001)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    alpha = 0.25  # stable for alpha <= 0.5
    u0 = np.zeros(args.cells)
    mid = args.cells // 2
    u0[mid - args.cells // 100: mid + args.cells // 100] = 100.0
    with sc.Pool(args.workers) as pool:
        u, scratch = pool.array(u0), pool.array(u0)
        t0 = time.perf_counter()
        last = pool.iterate(heat1d, scratch, u, alpha, steps=args.steps)
        seconds = time.perf_counter() - t0
        result = np.array(last)  # copy out before the pool frees its arrays
    # The same steps in plain NumPy, as a check.
    ref = u0.copy()
    for _ in range(args.steps):
        ref[1:-1] = ref[1:-1] + alpha * ((ref[:-2] - 2.0 * ref[1:-1]) + ref[2:])
    out = dict(cells=args.cells, steps=args.steps, seconds=round(seconds, 4),
               heat_total=float(result.sum()), peak=float(result.max()),
               matches_numpy=bool(np.array_equal(result, ref)))
    print(f"{args.steps} steps on {args.cells:,} cells in {seconds:.2f} s; peak temperature "
          f"{out['peak']:.3f}, total heat {out['heat_total']:.1f} (started at {u0.sum():.1f})")
    print("RESULT " + json.dumps(out))
    return out


if __name__ == "__main__":
    # In Jupyter (this example downloaded as a notebook) sys.argv holds the kernel's own
    # options: run with the defaults there, parse the command line only as a script.
    main([] if "ipykernel" in sys.modules else None)
