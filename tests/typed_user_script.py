"""A user's script, typed throughout: tests/test_typing.py runs ``mypy --strict`` on it and
then runs it, so the types mypy accepts here are checked against what the calls return.

    python tests/typed_user_script.py [inline|processes]
"""
from __future__ import annotations

import math
import sys
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import sharedcompute as sc
from sharedcompute import Kernel, SharedArray
from sharedcompute.kernels.reductions import total
from sharedcompute.kernels.stencils import heat1d

if TYPE_CHECKING:  # the dask extra is optional at runtime
    from distributed import Client

F64 = npt.NDArray[np.float64]
Stats = tuple[int, float, float]  # a reduction's partial: count, min, max


def scale_reference(y: F64, x: F64, s: float) -> None:
    y[:] = s * x


@sc.kernel(reference=scale_reference)
def scale(y: F64, x: F64, s: float) -> None:
    for i in range(y.shape[0]):
        y[i] = s * x[i]


@sc.kernel
def square(y: F64) -> None:
    for i in range(y.shape[0]):
        y[i] = y[i] * y[i]


@sc.kernel(writes=("lo", "hi"), elementwise=True)
def clip_split(lo: F64, hi: F64, x: F64, cut: float) -> None:
    for i in range(x.shape[0]):
        lo[i] = min(x[i], cut)
        hi[i] = max(x[i], cut)


def merge(p: Stats, q: Stats) -> Stats:
    return (p[0] + q[0], min(p[1], q[1]), max(p[2], q[2]))


def spread(s: Stats) -> float:
    return s[2] - s[1]


@sc.kernel(combine=merge)
def stats(x: F64) -> Stats:
    lo, hi = math.inf, -math.inf
    for i in range(x.shape[0]):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
    return (x.shape[0], lo, hi)


@sc.kernel(combine=merge, finalize=spread, jit=False)  # plain NumPy on each partition
def value_range(x: F64) -> Stats:
    return (x.shape[0], float(np.min(x, initial=np.inf)), float(np.max(x, initial=-np.inf)))


@sc.kernel(writes=("y",), combine=max)  # writes y and returns its rows' largest change
def relax(y: F64, x: F64) -> float:
    change = 0.0
    for i in range(y.shape[0]):
        new = 0.5 * (y[i] + x[i])
        change = max(change, abs(new - y[i]))
        y[i] = new
    return change


def cube(n: int) -> int:
    return n * n * n


def on_cluster(client: Client) -> float:
    """The same calls on a Dask cluster: backend= takes a distributed.Client."""
    with sc.Pool(backend=client) as pool:
        return float(pool.reduce(total, pool.array(np.ones(10))))


def run(pool: sc.Pool, n: int = 1000) -> dict[str, Any]:
    x = pool.array(np.linspace(0.0, 1.0, n))
    y = pool.zeros_like(x)

    scaled: SharedArray = pool.map(scale, y, x, 2.0)
    squared: SharedArray = pool.map(square, y)
    lo, hi = pool.map(clip_split, pool.empty_like(x), pool.empty_like(x), x, 0.5)
    pair: tuple[SharedArray, ...] = (lo, hi)
    report = sc.verify(pool, scale, pool.zeros_like(x), x, 2.0)

    counted: Stats = pool.reduce(stats, x)
    width: float = pool.reduce(value_range, x)
    s = float(pool.reduce(total, x))  # combine=np.add: Any, so say what it is

    head: SharedArray = x[:10]
    every_other: SharedArray = x[::2]
    both_axes: SharedArray = pool.zeros((4, 6))[1:3, ::2]
    picked: npt.NDArray[Any] = x[[0, 2, 4]]
    big: npt.NDArray[Any] = x[np.asarray(x) > 0.5]
    first = float(x[0])

    relaxed, change = pool.map(relax, pool.zeros_like(x), x, partial=True)
    relaxed_too: SharedArray = relaxed
    largest = float(change)  # the partial types as Any: say what it is

    u = pool.array(np.where(np.arange(101) == 50, 1.0, 0.0))
    last: SharedArray = pool.iterate(heat1d, pool.empty_like(u), u, 0.25, steps=20)

    future: Future[int] = pool.submit(cube, 3)
    cubed: int = future.result()
    roots: list[float] = pool.map(math.sqrt, [1.0, 4.0, 9.0])
    in_order: list[int] = list(pool.imap(cube, range(5)))
    as_done: set[int] = set(pool.imap_unordered(cube, range(5), chunksize=2))

    kernels: list[Kernel[SharedArray]] = [scale, square]
    return dict(scaled=scaled, squared=squared, pair=pair, report_ok=report.ok,
                counted=counted, width=width, s=s, head=head, every_other=every_other,
                both_axes=both_axes, picked=picked, big=big, first=first, last=last,
                cubed=cubed, roots=roots, in_order=in_order, as_done=as_done,
                kernels=kernels, relaxed=relaxed_too, largest=largest)


def check(out: dict[str, Any]) -> None:
    """What the annotations above claim, checked at runtime."""
    for name in ("scaled", "squared", "head", "every_other", "both_axes", "last", "relaxed"):
        assert type(out[name]) is SharedArray, (name, type(out[name]))
    assert len(out["pair"]) == 2 and all(type(a) is SharedArray for a in out["pair"])
    for name in ("picked", "big"):
        assert type(out[name]) is np.ndarray, (name, type(out[name]))
    assert out["report_ok"] is True
    count, lo, hi = out["counted"]
    assert (count, lo, hi) == (1000, 0.0, 1.0) and isinstance(count, int)
    assert isinstance(out["width"], float) and out["width"] == 1.0
    assert out["largest"] == 0.5  # x[-1] = 1.0 moved half way from 0.0
    assert out["cubed"] == 27 and out["roots"] == [1.0, 2.0, 3.0]
    assert out["in_order"] == [0, 1, 8, 27, 64] and out["as_done"] == {0, 1, 8, 27, 64}
    assert all(isinstance(k, Kernel) for k in out["kernels"])


def main(argv: list[str]) -> None:
    backend = argv[0] if argv else "processes"
    with sc.Pool(2, backend=backend) as pool:
        check(run(pool))
    print("typed_user_script: ok")


if __name__ == "__main__":
    main(sys.argv[1:])
