"""Estimate pi by Monte Carlo on every core, reproducibly.
=======================================================

Each of ``--streams`` random streams is seeded with seed + its index, so the estimate is
the same whatever the number of workers: run it with --workers 1 and --workers 4.

    python examples/monte_carlo_pi.py --streams 256 --samples 1000000
"""
import argparse
import json
import math
import sys
import time
from typing import Any, Sequence

import sharedcompute as sc
from sharedcompute.kernels.compute import monte_carlo_pi


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--samples", type=int, default=200_000, help="samples per stream")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    with sc.Pool(args.workers) as pool:
        t0 = time.perf_counter()
        # its finalize is untyped, so the kernel is Kernel[Any]: say what it gives
        estimate: float = pool.reduce(monte_carlo_pi, args.samples, args.seed, rows=args.streams)
        seconds = time.perf_counter() - t0
    n = args.streams * args.samples
    out = dict(estimate=estimate, error=abs(estimate - math.pi), samples=n,
               expected_error=4 * math.sqrt(math.pi / 4 * (1 - math.pi / 4) / n),
               workers=pool.n_workers, seconds=round(seconds, 4))
    print(f"pi ~ {estimate:.6f} from {n:,} samples on {pool.n_workers} workers in "
          f"{seconds:.2f} s (error {out['error']:.2e}, one standard error "
          f"{out['expected_error']:.2e})")
    print("RESULT " + json.dumps(out))
    return out


if __name__ == "__main__":
    # In Jupyter (this example downloaded as a notebook) sys.argv holds the kernel's own
    # options: run with the defaults there, parse the command line only as a script.
    main([] if "ipykernel" in sys.modules else None)
