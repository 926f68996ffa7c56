"""Shared helpers of the time-step workloads: line counts, result checks, a counting pool.

Each workload module defines:

- ``NAME``, ``SIZES = {"default": {...}, "small": {...}}``, ``init(**size) -> dict`` (fresh
  NumPy inputs, including the arrays that are written),
- ``OUTPUTS``: the names of the arrays compared after a run,
- ``VARIANTS``: ``{label: (kind, fn)}`` where kind is ``"numpy"``, ``"numba-par"``,
  ``"numba-1t"``, ``"sc"`` (or ``"numba-par-other"`` / ``"numba-1t-other"``: numba on all
  threads / one thread, timed, not a ratio baseline; ``"numba-par-shm"``: numba on all
  threads over arrays in shared memory, as the ``"sc"`` rows' are); ``fn(data,
  size)`` runs in place on the dict of arrays (``fn(pool, data, size)`` for ``"sc"``, where
  ``data`` holds SharedArrays),
- ``CHECK``: ``{label: "bitwise" | (rtol, atol) | None}`` (None: not compared, says why in
  ``NOTES``); labels absent are compared bitwise,
- ``SC_CODE`` / ``NUMBA_CODE``: names of the module's functions that make up each version,
  for the line counts,
- ``NOTES``: a short text printed under the workload's table.
"""
from __future__ import annotations

import ast
import inspect

import numba
import numpy as np


def body_lines(module, names) -> int:
    """Non-blank, non-comment lines of the bodies of the named functions (docstrings and
    decorators excluded) in ``module``'s source."""
    src = inspect.getsource(module)
    tree = ast.parse(src)
    lines = src.splitlines()
    found = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    total = 0
    for name in names:
        fn = found[name]
        body = fn.body
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body = body[1:]
        if not body:
            continue
        for line in lines[body[0].lineno - 1: fn.end_lineno]:
            s = line.strip()
            if s and not s.startswith("#"):
                total += 1
    return total


def compare(got: np.ndarray, want: np.ndarray, how) -> tuple[bool, str]:
    """(ok, text). ``how``: "bitwise" or (rtol, atol) for np.allclose."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False, f"shape {got.shape} != {want.shape}"
    if how == "bitwise":
        same = np.array_equal(got, want, equal_nan=True)
        if same:
            return True, "bitwise"
        diff = np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64)))
        return False, f"NOT bitwise (max |diff| {diff:.3g})"
    rtol, atol = how
    ok = np.allclose(got, want, rtol=rtol, atol=atol)
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0))
    return bool(ok), f"allclose(rtol={rtol:g}, atol={atol:g}) max|diff| {diff:.2g}" + (
        "" if ok else " FAIL")


class CountingPool:
    """Wraps a Pool and counts the calls a run makes to it (map, reduce, iterate, submit,
    and calls of what bind returns)."""

    COUNTED = ("map", "reduce", "iterate", "submit")

    def __init__(self, pool):
        self._pool = pool
        self.calls: dict[str, int] = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def __getattr__(self, name):
        attr = getattr(self._pool, name)
        if name in self.COUNTED:
            def counted(*a, **k):
                self._count(name)
                return attr(*a, **k)
            return counted
        if name == "bind":
            def bind(*a, **k):
                step = attr(*a, **k)

                def call():
                    self._count("bound call")
                    return step()
                return call
            return bind
        return attr

    def summary(self) -> str:
        total = sum(self.calls.values())
        parts = ", ".join(f"{v} {k}" for k, v in sorted(self.calls.items()))
        return f"{total} ({parts})"


def without_fastmath(dispatcher):
    """The same numba function compiled without fastmath (parallel as the original): a
    variant that separates fastmath's effect from the parallel loop's (sharedcompute
    kernels cannot ask for fastmath today). Not cached: a second dispatcher of the same
    function with other flags would share the original's cache file names."""
    return numba.njit(parallel=dispatcher.targetoptions.get("parallel", False))(
        dispatcher.py_func)
