"""One table for the whole library: kernel -> input generator, dtypes, tolerance, benchmark.

The tests, ``sharedcompute verify`` and the benchmarks are all driven from ``ENTRIES``; a
test fails if a library kernel is missing here or lacks a reference, example or benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import compute, elementwise, reductions, scans, stencils

FLOATS = ("float64", "float32")
NUMERIC = ("float64", "float32", "int64", "int32")


@dataclass(frozen=True)
class Entry:
    """How to exercise one kernel.

    make(rng, n, dtype) -> (args, kwargs): plain NumPy inputs of about ``n`` rows; the caller
    turns arrays into SharedArrays. bench: the benchmark workload (size and repeats, bytes
    moved per call for GB/s) used by ``sharedcompute bench``.
    """

    kernel: Any
    make: Callable[[np.random.Generator, int, str], tuple[tuple, dict]]
    dtypes: tuple[str, ...] = FLOATS
    min_rows: int = 0
    bench: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.name


def _vec(rng, n, dtype, lo=0.0, hi=1.0):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return rng.integers(-1000, 1000, size=n).astype(dt)
    return rng.uniform(lo, hi, size=n).astype(dt)


def _scalar(dtype, value):
    return np.dtype(dtype).type(value)


def _histogram_args(rng, n, dtype):
    """Floats over [-0.2, 1.2] in 16 bins of [0, 1] (about 1/7 outside); integers over
    -2..17 in 16 bins of [0, 16], so many values sit exactly on edges."""
    if np.dtype(dtype).kind in "iu":
        return (rng.integers(-2, 18, size=n).astype(dtype), 16, 0, 16), {}
    return (_vec(rng, n, dtype, -0.2, 1.2), 16, 0.0, 1.0), {}


def _grid(n):
    return max(n, 0), 37


ENTRIES: dict[str, Entry] = {e.name: e for e in [
    Entry(elementwise.triad,
          lambda rng, n, dt: ((np.zeros(n, dt), _vec(rng, n, dt), _vec(rng, n, dt),
                               _scalar(dt, 3)), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=24, family="memory",
                     workload="triad")),
    Entry(elementwise.axpy,
          lambda rng, n, dt: ((_vec(rng, n, dt), _vec(rng, n, dt), _scalar(dt, 2)), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=24, family="memory")),
    Entry(elementwise.logistic_map,
          lambda rng, n, dt: ((np.zeros(n, dt), _vec(rng, n, dt, 0.1, 0.9), _scalar(dt, 3.7),
                               50), {}), FLOATS,
          bench=dict(size=2**22, quick=2**16, repeats=5, n_iter=200, family="compute",
                     workload="logistic_map")),
    Entry(reductions.total, lambda rng, n, dt: ((_vec(rng, n, dt),), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=8, family="memory",
                     workload="total")),
    Entry(reductions.dot, lambda rng, n, dt: ((_vec(rng, n, dt), _vec(rng, n, dt)), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=16, family="memory",
                     workload="dot")),
    Entry(reductions.sum_squares, lambda rng, n, dt: ((_vec(rng, n, dt),), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=8, family="memory")),
    Entry(reductions.minmax, lambda rng, n, dt: ((_vec(rng, n, dt, -5, 5),), {}), NUMERIC,
          min_rows=1,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=8, family="memory")),
    Entry(reductions.mean_var, lambda rng, n, dt: ((_vec(rng, n, dt, -5, 5),), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=8, family="memory")),
    Entry(reductions.histogram, lambda rng, n, dt: _histogram_args(rng, n, dt), NUMERIC,
          bench=dict(size=2**25, quick=2**20, repeats=5, bytes_per_row=8, family="memory")),
    Entry(reductions.max_abs_diff,
          lambda rng, n, dt: ((_vec(rng, n, dt), _vec(rng, n, dt)), {}), NUMERIC,
          bench=dict(size=2**26, quick=2**20, repeats=10, bytes_per_row=16, family="memory")),
    Entry(stencils.jacobi2d,
          lambda rng, n, dt: ((np.zeros(_grid(n), dt), _vec(rng, _grid(n), dt)), {}), FLOATS,
          bench=dict(size=8192, quick=1024, repeats=3, sweeps=20, family="stencil",
                     workload="jacobi2d", peak_bytes_per_cell=64)),
    Entry(stencils.jacobi2d_residual,
          lambda rng, n, dt: ((np.zeros(_grid(n), dt), _vec(rng, _grid(n), dt)), {}), FLOATS,
          bench=dict(size=3000, quick=512, repeats=3, sweeps=100, family="stencil")),
    Entry(stencils.heat1d,
          lambda rng, n, dt: ((np.zeros(n, dt), _vec(rng, n, dt), _scalar(dt, 0.25)), {}),
          FLOATS, bench=dict(size=2**25, quick=2**20, repeats=3, sweeps=20, family="stencil")),
    Entry(stencils.blur3x3,
          lambda rng, n, dt: ((np.zeros(_grid(n), dt), _vec(rng, _grid(n), dt)), {}), FLOATS,
          bench=dict(size=4096, quick=512, repeats=5, family="stencil")),
    Entry(scans.cumsum,
          lambda rng, n, dt: ((np.zeros(n, dt), _vec(rng, n, dt)), {}), NUMERIC,
          bench=dict(size=2**25, quick=2**20, repeats=5, bytes_per_row=16, family="memory")),
    Entry(compute.mandelbrot,
          lambda rng, n, dt: ((np.zeros((max(n, 0), 24), np.int32), -2.0, 1.0, -1.5, 1.5, 60),
                              {}), ("int32",),
          bench=dict(size=4096, quick=512, repeats=3, max_iter=200, family="compute",
                     workload="mandelbrot", peak_bytes_per_cell=56)),
    Entry(compute.matmul,
          lambda rng, n, dt: ((np.zeros((n, 7), dt), _vec(rng, (n, 5), dt),
                               _vec(rng, (5, 7), dt)), {}), FLOATS,
          bench=dict(size=1024, quick=256, repeats=3, family="compute",
                     workload="matmul", peak_bytes_per_cell=64)),
    Entry(compute.monte_carlo_pi,
          lambda rng, n, dt: ((200, 1234), {"rows": min(max(n, 1), 300)}), ("float64",),
          bench=dict(size=256, quick=32, samples=100_000, quick_samples=10_000, repeats=3,
                     family="compute")),
]}


def library_kernels() -> list[Any]:
    """Every Kernel defined in the library's family modules."""
    from sharedcompute.kernel import Kernel
    out = []
    for mod in (compute, elementwise, reductions, scans, stencils):
        out.extend(v for v in vars(mod).values() if isinstance(v, Kernel) and v.module == mod.__name__)
    return out


def share_args(pool: Any, args: tuple) -> tuple:
    """Turn the generator's NumPy arrays into pool SharedArrays (scalars stay as they are)."""
    return tuple(pool.array(a) if isinstance(a, np.ndarray) else a for a in args)
