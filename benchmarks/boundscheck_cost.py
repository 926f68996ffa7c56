"""What Pool(boundscheck=True) costs: the same kernels with and without numba's bounds
checks, interleaved in one run (medians of the ratios): the compiled loops in one process,
then on a 2-worker pool.

    python benchmarks/boundscheck_cost.py [--direct-only]
"""
import statistics
import time

import numpy as np

import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad
from sharedcompute.kernels.reductions import total
from sharedcompute.kernels.stencils import jacobi2d


def timed(fn, repeats=7):
    fn()  # warm-up (compiles)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def direct(rounds: int = 5) -> list[tuple[str, float]]:
    """The compiled loops alone, in this process: numba's bounds checks vs none."""
    rng = np.random.default_rng(0)
    n = 2**22
    a, b, c = np.zeros(n), rng.random(n), rng.random(n)
    g, u = np.zeros((1022, 1024)), rng.random((1024, 1024))
    cases = [("triad 2^22", triad, (a, b, c, 3.0)), ("total 2^22", total, (b,)),
             ("jacobi2d 1024^2", jacobi2d, (g, u))]
    out = []
    for name, k, args in cases:
        plain, checked = k.compiled(False)[0], k.compiled(True)[0]
        ratios = [timed(lambda: checked(*args)) / timed(lambda: plain(*args))
                  for _ in range(rounds)]
        out.append((name, statistics.median(ratios)))
    return out


def main():
    import sys
    for name, r in direct():
        print(f"{name:<18} one process, boundscheck / plain time: {r:.2f}x")
    if "--direct-only" in sys.argv:
        return
    n = 2**24
    rng = np.random.default_rng(0)
    with sc.Pool(2) as fast, sc.Pool(2, boundscheck=True) as checked:
        rows = []
        for name, make in [
            ("triad 2^24", lambda p: (triad, p.zeros(n), p.array(rng.random(n)),
                                      p.array(rng.random(n)), 3.0)),
            ("total 2^24", lambda p: (total, p.array(rng.random(n)))),
            ("jacobi2d 2048^2", lambda p: (jacobi2d, p.zeros((2048, 2048)),
                                           p.array(rng.random((2048, 2048))))),
        ]:
            ratios = []
            for _ in range(3):
                times = {}
                for label, p in (("fast", fast), ("checked", checked)):
                    k, *args = make(p)
                    run = p.reduce if k.kind == "reduce" else p.map
                    times[label] = timed(lambda: run(k, *args))
                    for a in args:
                        if isinstance(a, sc.SharedArray):
                            a.free()
                ratios.append(times["checked"] / times["fast"])
            rows.append((name, statistics.median(ratios)))
    for name, r in rows:
        print(f"{name:<18} boundscheck / plain time: {r:.2f}x")


if __name__ == "__main__":
    main()
