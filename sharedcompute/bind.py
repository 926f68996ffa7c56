"""``BoundCall``: a call planned and checked once whose later calls only ring the workers
(``Pool.bind``). A handle on the backend's call cache (_cache.py), nothing more: the Pool
checks it once when it is made (``backend.check_bound``) and hands it the function that
runs it, which takes the Pool's lock and checks it is open around ``backend.call_bound``.

A bound call's fast path (``LocalBackend.call_bound``) does no per-array work: one poll(0)
over the workers' sentinels and the tamper watch (segments.py) says no worker died and no
block was touched by another process; ``segments.releases`` unchanged says none was freed or
closed here; each array's ``identity`` is the very tuple it had (``a.shape = ...`` makes a new
one); the values of its plain arguments (scalars cannot change; small plain arrays
can, in place, reshaped and retyped too) are compared with those its entry holds. Anything
else takes the checking path of a plain repeated call, which plans again where needed (a
restarted pool, an evicted or invalidated entry), so it stays transparent.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._cache import call_key
from .errors import InputError
from .kernel import Kernel
from .plan import check_chunk_rows, check_timeout


class BoundCall:
    """``pool.bind(kernel, *args, **options)``: call it (no arguments) to run the call
    again; see Pool.bind."""

    def __init__(self, run: Any, kernel: Any, args: tuple, kwargs: dict,
                 boundscheck: bool = False, rows: Any = None, boundary: Any = None,
                 depth: Any = None, schedule: Any = None, timeout: Any = None,
                 partial: bool = False, chunk_rows: Any = None):
        """``run(bound_call)``: what calling it does (the Pool's wrapper of its backend's
        call_bound); the rest are Pool.bind's arguments, checked here."""
        if not isinstance(kernel, Kernel):
            raise InputError(f"pool.bind needs a sharedcompute kernel, not {kernel!r}; "
                             "decorate it with @sc.kernel (plain functions: pool.submit)")
        if kwargs:
            args = kernel.ordered_args(args, kwargs)
        self.op = "partial" if partial else "reduce" if kernel.kind == "reduce" else "map"
        self._run, self.kernel, self.args = run, kernel, tuple(args)
        self.rows, self.boundary, self.depth, self.schedule = rows, boundary, depth, schedule
        self.timeout, self.boundscheck = check_timeout(timeout), boundscheck
        self.chunk_rows = check_chunk_rows(chunk_rows)
        found = call_key(self.op, kernel, self.args, rows, boundary, depth, self.chunk_rows)
        self.key = None if found is None else found[0]
        self.plain = any(type(a) is np.ndarray for a in self.args)  # may change in place
        self.entry: Any = None  # the cache entry, set by the first call()
        self.blocks: list = []  # the blocks of its shared arrays (held while it runs)
        self.written: Any = None  # what the call returns (a map's written arrays)
        self.arrays: list = []  # its SharedArrays, and their identity when the entry was
        self.idents: list = []  # made: a.shape = ... since makes a new one

    def __call__(self) -> Any:
        """Run the call: what pool.map (the written array; with partial=True, (written,
        partial)) or pool.reduce returns."""
        return self._run(self)

    def __repr__(self) -> str:
        return f"<bound {self.op} of kernel {self.kernel.name}, {len(self.args)} arguments>"
