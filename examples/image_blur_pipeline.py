"""An image pipeline that starts and ends with plain NumPy arrays.
===============================================================

A noisy synthetic image goes into shared memory once, is blurred ``--passes`` times with a
3x3 box filter (edges reflected) on every core, and comes back as an ordinary array. The
noise drops by about 3x per pass; the result is checked against NumPy.

    python examples/image_blur_pipeline.py --size 4000 --passes 3
"""
import argparse
import json
import sys
import time
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

import sharedcompute as sc
from sharedcompute.kernels.stencils import blur3x3
from sharedcompute.verify import run_reference


def blur_image(image: npt.NDArray[Any], passes: int,
               workers: int | None = None) -> npt.NDArray[np.float64]:
    """NumPy in, NumPy out: ``passes`` 3x3 blurs computed on all cores."""
    with sc.Pool(workers) as pool:
        src = pool.array(image.astype(np.float64))
        dst = pool.empty_like(src)
        last = pool.iterate(blur3x3, dst, src, steps=passes)
        return np.array(last)  # a private copy; the shared blocks are freed on exit


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--size", type=int, default=1025)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:args.size, 0:args.size] / max(args.size, 1)
    clean = np.sin(6 * xx) * np.cos(4 * yy)
    noisy = clean + rng.normal(0, 0.5, clean.shape)
    t0 = time.perf_counter()
    smooth = blur_image(noisy, args.passes, args.workers)
    seconds = time.perf_counter() - t0
    ref = noisy.copy()
    for _ in range(args.passes):
        out = np.empty_like(ref)
        run_reference(blur3x3, [out, ref])
        ref = out
    out = dict(size=args.size, passes=args.passes, seconds=round(seconds, 4),
               noise_before=float(np.std(noisy - clean)), noise_after=float(np.std(smooth - clean)),
               is_numpy=type(smooth) is np.ndarray,
               max_error_vs_numpy=float(np.max(np.abs(smooth - ref))))
    print(f"blurred a {args.size}x{args.size} image {args.passes}x in {seconds:.2f} s: noise "
          f"{out['noise_before']:.3f} -> {out['noise_after']:.3f}; max difference from NumPy "
          f"{out['max_error_vs_numpy']:.2e}")
    print("RESULT " + json.dumps(out))
    return out


if __name__ == "__main__":
    # In Jupyter (this example downloaded as a notebook) sys.argv holds the kernel's own
    # options: run with the defaults there, parse the command line only as a script.
    main([] if "ipykernel" in sys.modules else None)
