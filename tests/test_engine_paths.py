"""How many engine modules one call runs functions of, traced in the calling process with
sys.setprofile (issue #25): the budgets below keep a call's path from spreading sideways
again. The README's "How it works" draws these paths; print_paths() gives them as lists of
module:function (python tests/test_engine_paths.py)."""
from __future__ import annotations

import sys
from typing import Callable

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute.kernels.elementwise import axpy, triad
from sharedcompute.kernels.reductions import dot, total
from sharedcompute.kernels.stencils import jacobi2d

# The budgets: issue #25's (the counts before it: first map 14, repeated map 10, reduce 11,
# iterate 14). A first call adds to the five modules of a repeated one what only a new call
# needs: it plans (plan, partition), checks each new block (shared, segments) and asks the
# kernel whether its content is the one the workers hold (kernel). An iterate the workers
# keep (_cache.py) is rung as a repeated map is, plus _iterate.plan (its fixed edge rows,
# what it returns: shared and segments for the edges' copy) or _iterate.program.
BUDGET = {"first map": 9, "first map, kernel seen before": 9, "repeated map": 5,
          "first reduce": 10, "repeated reduce": 10, "iterate": 10, "repeated iterate": 9,
          "repeated program": 8, "submit": 8}


def trace(call: Callable[[], object]) -> list[str]:
    """The module:function pairs of sharedcompute (not its kernel library) that `call` runs
    in this thread, in the order first entered."""
    seen: dict[str, None] = {}

    def profile(frame, event, arg):
        if event == "call":
            mod = frame.f_globals.get("__name__", "")
            if mod.startswith("sharedcompute.") and not mod.startswith("sharedcompute.kernels"):
                seen.setdefault(f"{mod.split('.', 1)[1]}:{frame.f_code.co_name}")
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return list(seen)


def modules(path: list[str]) -> list[str]:
    return list(dict.fromkeys(p.split(":")[0] for p in path))


def paths(n_workers: int = 2) -> dict[str, list[str]]:
    """Each call of BUDGET on a pool of real worker processes (compiled beforehand, so the
    trace holds the engine's work, not numba's)."""
    out = {}
    with sc.Pool(n_workers) as pool:
        a, b, c = (pool.array(np.full(4096, v)) for v in (0.0, 1.0, 2.0))
        x = pool.array(np.arange(4096.0))
        u, o = pool.zeros((64, 64)), pool.zeros((64, 64))
        warm = pool.array(np.ones(16))
        pool.map(triad, warm, warm, warm, 2.0)  # compile in the workers on other arrays
        pool.map(axpy, warm, warm, 2.0)
        pool.reduce(total, warm), pool.reduce(dot, warm, warm)
        pool.iterate(jacobi2d, o, u, steps=2)
        pool.submit(len, [1]).result()
        out["first map"] = trace(lambda: pool.map(triad, a, b, c, 2.0))
        out["repeated map"] = trace(lambda: pool.map(triad, a, b, c, 2.0))
        out["first map, kernel seen before"] = trace(lambda: pool.map(axpy, b, c, 3.0))
        out["first reduce"] = trace(lambda: pool.reduce(total, x))
        out["repeated reduce"] = trace(lambda: pool.reduce(total, x))
        out["iterate"] = trace(lambda: pool.iterate(jacobi2d, o, u, steps=10))
        out["repeated iterate"] = trace(lambda: pool.iterate(jacobi2d, o, u, steps=10))
        pool.iterate(sc.program(sc.stage(jacobi2d, o, u), sc.stage(axpy, a, b, 2.0),
                                swap=[(o, u)]), steps=3)
        prog = sc.program(sc.stage(jacobi2d, o, u), sc.stage(axpy, a, b, 2.0), swap=[(o, u)])
        out["repeated program"] = trace(lambda: pool.iterate(prog, steps=3))  # same key
        out["submit"] = trace(lambda: pool.submit(len, [1, 2]).result())
    return out


@pytest.fixture(scope="module")
def traced() -> dict[str, list[str]]:
    return paths()


@pytest.mark.parametrize("call", sorted(BUDGET))
def test_a_call_runs_functions_of_few_engine_modules(traced, call):
    mods = modules(traced[call])
    assert len(mods) <= BUDGET[call], (
        f"{call} runs functions of {len(mods)} engine modules (budget {BUDGET[call]}): "
        f"{mods}\n{' '.join(traced[call])}")


def test_the_trace_sees_the_engine(traced):
    # The measure itself: a trace that saw nothing would pass every budget.
    assert modules(traced["repeated map"])[0] == "pool"
    assert any(m.startswith("_executors") for m in modules(traced["first map"]))


def print_paths() -> None:
    for call, path in paths().items():
        print(f"{call} ({len(modules(path))} modules): {' '.join(path)}\n")


if __name__ == "__main__":
    print_paths()
