"""Tutorial: arrays in, a kernel, a reduction, a stencil solve, verify, results out.
===================================================================================

The five-minute tutorial of the user guide, as one script. Every step checks its result
against plain NumPy. Run it as a script (the work sits under ``if __name__ == "__main__":``,
which spawn and forkserver workers need) or download it as a notebook.

    python examples/tutorial.py --n 5000000 --grid 300
"""
import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

import sharedcompute as sc
from sharedcompute.kernels.stencils import jacobi2d_residual


# [kernels]
Vec = npt.NDArray[np.float64]  # type hints are optional; mypy then follows the results


def scale_add_reference(y: Vec, x: Vec, a: float, b: float) -> None:
    y[:] = a * x + b                        # plain NumPy: the answer the kernel must give


@sc.kernel(reference=scale_add_reference)   # writes its first argument, in place
def scale_add(y: Vec, x: Vec, a: float, b: float) -> None:
    for i in range(y.shape[0]):
        y[i] = a * x[i] + b


@sc.kernel(reference=np.sum, combine=np.add)   # a reduction: each worker returns a partial
def total(x: Vec) -> float:
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
    return acc
# [/kernels]


def tutorial(pool: sc.Pool, n: int, grid: int) -> dict[str, Any]:
    # [arrays]
    rng = np.random.default_rng(0)
    x_np = rng.random(n)                  # an ordinary NumPy array
    x = pool.array(x_np)                  # copied once into shared memory
    y = pool.zeros(n)                     # a new shared array, all zeros
    assert np.array_equal(np.asarray(x), x_np)   # np.asarray(x) is a view, not a copy
    # [/arrays]

    # [map]
    pool.map(scale_add, y, x, 2.0, 1.0)   # every worker writes its rows of y in place
    assert np.allclose(np.asarray(y), 2.0 * x_np + 1.0)
    # [/map]

    # [reduce]
    s = pool.reduce(total, y)             # partials combined in a fixed order
    assert np.isclose(s, np.sum(2.0 * x_np + 1.0))
    assert s == total(np.asarray(y))      # in one process: bitwise the pool's answer
    # [/reduce]

    # [iterate]
    g = np.zeros((grid, grid))
    g[0] = 1.0                            # top edge held at 1, the other edges at 0
    u = pool.array(g)
    out = pool.empty_like(u)              # the sweeps alternate between u and out
    res = pool.iterate(jacobi2d_residual, out, u, steps=50_000, tol=1e-5,
                       check_every=10, info=True)
    solution = np.array(res.array)        # a NumPy copy of the last sweep
    ref = g.copy()                        # the same Jacobi sweeps in NumPy
    for _ in range(res.sweeps):
        ref[1:-1, 1:-1] = 0.25 * (ref[:-2, 1:-1] + ref[2:, 1:-1]
                                  + ref[1:-1, :-2] + ref[1:-1, 2:])
    assert res.residual is not None and res.residual <= 1e-5
    assert np.allclose(solution, ref, rtol=0, atol=1e-12)
    # [/iterate]

    # [verify]
    report = sc.verify(pool, scale_add, y, x, 2.0, 1.0)   # pool vs reference, on copies
    assert report.ok, report
    print(report)
    # [/verify]

    # [out]
    result = np.array(y)                  # copy out: the pool frees its arrays on close
    print(f"n={n:,}: sum {s:.6f}; Laplace {grid}x{grid}: {res.sweeps} sweeps, "
          f"residual {res.residual:.1e}; verify ok={report.ok}")
    # [/out]
    return dict(n=n, grid=grid, sum=float(s), sweeps=int(res.sweeps),
                residual=float(res.residual), verify_ok=bool(report.ok),
                is_numpy=type(result) is np.ndarray and type(solution) is np.ndarray,
                matches_numpy=bool(np.allclose(result, 2.0 * x_np + 1.0)
                                   and np.allclose(solution, ref, rtol=0, atol=1e-12)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--grid", type=int, default=100)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    with sc.Pool(args.workers) as pool:   # one worker per usable core
        out = tutorial(pool, args.n, args.grid)
    print("RESULT " + json.dumps(out))
    return out


if __name__ == "__main__":
    # In Jupyter (this example downloaded as a notebook) sys.argv holds the kernel's own
    # options: run with the defaults there, parse the command line only as a script.
    main([] if "ipykernel" in sys.modules else None)
