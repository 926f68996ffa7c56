"""The state of one benchmark run: timing, results, shared arrays and pools, answer checks.

``measure`` times a callable the way every approach is timed (warm-up, setup outside the
clock, no garbage collector pauses, a time budget); ``Session.add`` records one approach
on one workload as a ``Result``, its answer checked by ``verdict`` against the reference.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

APPROACHES = ("numpy", "numba-1t", "prange", "pool", "mp.Pool", "joblib")
MANDEL_BOX = (-2.0, 1.0, -1.5, 1.5)
JOBLIB_PREFIX = "sharedcompute-bench-joblib-"


@dataclass
class Result:
    """Timings of one approach on one workload, and whether its answer was right."""

    workload: str
    approach: str
    times: list = field(default_factory=list)
    ok: bool | None = None          # None: not checked (e.g. it is the reference)
    check: str = ""
    note: str = ""
    nbytes: float | None = None     # bytes moved per call (memory-bound workloads)
    stream: str | None = None       # which STREAM figure it is compared with
    wall_s: float = 0.0             # warm-up, setup and check included
    workers: int | None = None      # pool workers or prange threads; None: the run's own

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    def as_dict(self) -> dict:
        d = {"workload": self.workload, "approach": self.approach, "times_s": self.times,
             "median_s": self.median, "min_s": min(self.times) if self.times else None,
             "max_s": max(self.times) if self.times else None, "ok": self.ok,
             "check": self.check,
             "note": self.note, "bytes_per_call": self.nbytes, "stream_ref": self.stream,
             "wall_s": self.wall_s, "workers": self.workers}
        if self.nbytes and self.times:
            d["gb_per_s"] = self.nbytes / self.median / 1e9
        return d


def measure(run: Callable[[], Any], *, repeats: int, warmup: int,
            setup: Callable[[], Any] | None = None, budget_s: float | None = None
            ) -> tuple[list, Any]:
    """Warm-up calls, then ``repeats`` timed calls (setup outside the timing); stops early
    once ``budget_s`` seconds of timed work are spent (at least one timed call)."""
    for _ in range(warmup):
        if setup:
            setup()
        run()
    times: list[float] = []
    out = None
    spent = 0.0
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: no collector pauses inside the timed calls
    try:
        for _ in range(max(1, repeats)):
            if setup:
                setup()
            t0 = time.perf_counter()
            out = run()
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
            if budget_s is not None and spent > budget_s:
                break
    finally:
        if was_enabled:
            gc.enable()
    return times, out


def verdict(got: Any, want: Any, rtol: float, atol: float) -> tuple[bool, str]:
    """``sharedcompute.verify.compare`` on each part of a result (a tuple is several parts):
    whether all agree with the reference, and how far off each was."""
    from sharedcompute.verify import compare
    got_parts = got if isinstance(got, tuple) else (got,)
    want_parts = want if isinstance(want, tuple) else (want,)
    if len(got_parts) != len(want_parts):
        return False, "different number of parts"
    oks, details = [], []
    for i, (g, w) in enumerate(zip(got_parts, want_parts)):
        g, w = np.asarray(g), np.asarray(w)
        c = compare(f"part {i}", g, w, rtol, atol)
        exact = rtol == 0 and atol == 0 and g.dtype.kind in "iub" and w.dtype.kind in "iub"
        detail = "exact" if exact and c.ok else f"max rel err {c.max_rel:.1e} (rtol {rtol:.0e})"
        oks.append(c.ok)
        details.append(detail + (f", {c.detail}" if c.detail else ""))
    return all(oks), "; ".join(details)


def checker(want: Any, rtol: float, atol: float) -> Callable[[Any], tuple[bool, str]]:
    """The check of an approach's output against the reference answer ``want``."""
    return lambda got: verdict(got, want, rtol, atol)


def nan_fill(x: Any) -> Callable[[], None]:
    """A setup that fills ``x`` with NaN (-1 for integers), so unwritten rows show."""
    def setup() -> None:
        v = np.asarray(x)
        if v.dtype.kind == "f":
            v.fill(np.nan)
        else:
            v.fill(-1)
    return setup


def ram_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - no psutil, or it cannot read /proc: ask the OS
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def available_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - as in ram_bytes
        return ram_bytes()


def leftover_segments() -> list[str]:
    """This process's shared-memory blocks (and joblib memmap folders) still in /dev/shm."""
    from .._system import SHM_DIR
    from ..shared import creator_pid, list_segments
    pid = os.getpid()
    left = [n for n in list_segments() if creator_pid(n) == pid]
    try:
        prefixes = (JOBLIB_PREFIX, f"joblib_memmapping_folder_{pid}_")
        left += [n for n in os.listdir(SHM_DIR) if n.startswith(prefixes)]
    except OSError:
        pass
    return left


class Session:
    """One ``sharedcompute bench`` run: its options, pools, shared arrays and results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = bool(args.quick)
        self.workers = int(args.workers)
        self.pthreads = self.workers
        self.pool: Any = None
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.stream: dict = {}
        self.stream_1t: dict = {}
        self.fixed: dict = {}
        self.scaling: dict = {}
        # --plot: the table's pool and prange measurements repeated at the other worker
        # counts (same arrays, setup, repeats and check), for the scaling panel
        self.scaling_results: list[Result] = []
        self._other_pools: dict[int, Any] = {}
        self.step_s: dict = {}
        # timed seconds per approach after which its remaining repeats are dropped (n shows
        # how many ran): keeps the textbook Pool and NumPy's Mandelbrot from eating the run
        self.budget_s = 1.5 if self.quick else 20.0
        self._mp_pool: Any = None
        self._shared: list[Any] = []
        self.ram = ram_bytes()

    # shared arrays made for one workload, freed when it ends
    def share(self, x: np.ndarray) -> Any:
        a = self.pool.array(x)
        self._shared.append(a)
        return a

    def empty(self, shape: Any, dtype: Any = np.float64) -> Any:
        a = self.pool.empty(shape, dtype)
        self._shared.append(a)
        return a

    def free_shared(self) -> None:
        gc.collect()
        for a in self._shared:
            with contextlib.suppress(Exception):  # a view is alive: the pool frees it at close
                a.free()
        self._shared = []

    def mp_pool(self) -> Any:
        if self._mp_pool is None:
            import sharedcompute as sc
            ctx = mp.get_context(sc.default_start_method())
            self._mp_pool = ctx.Pool(self.workers)
        return self._mp_pool

    def scaling_workers(self) -> list[int]:
        """The worker counts of the scaling panel: 1 .. usable cores, and the run's own."""
        if not getattr(self.args, "plot", None):
            return []
        from .._system import usable_cores
        return sorted(set(range(1, usable_cores().n + 1)) | {self.workers})

    def pool_of(self, n_workers: int) -> Any:
        """A pool of ``n_workers`` (the run's main pool for its own count), kept to the end."""
        if n_workers == self.workers:
            return self.pool
        if n_workers not in self._other_pools:
            import sharedcompute as sc
            self._other_pools[n_workers] = sc.Pool(n_workers=n_workers)
        return self._other_pools[n_workers]

    def close(self) -> None:
        self.free_shared()
        for p in self._other_pools.values():
            p.close()
        self._other_pools = {}
        if self._mp_pool is not None:
            self._mp_pool.close()
            self._mp_pool.join()
            self._mp_pool = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def add(self, wl: str, approach: str, run: Callable[[], Any], *, repeats: int,
            setup: Callable[[], Any] | None = None, check: Callable[[Any], tuple] | None = None,
            warmup: int = 1, note: str = "", nbytes: float | None = None,
            stream: str | None = None, workers: int | None = None) -> Result:
        """Time one approach; a failure is recorded in the table, never dropped. With
        ``workers`` (another count than the run's), it goes to ``scaling_results``."""
        res = Result(wl, approach, note=note, nbytes=nbytes, stream=stream, workers=workers)
        if self.args.repeats:
            repeats = self.args.repeats
        t0 = time.perf_counter()
        try:
            res.times, out = measure(run, repeats=repeats, warmup=warmup, setup=setup,
                                     budget_s=self.budget_s)
            if check is None:
                res.ok, res.check = None, "reference"
            else:
                res.ok, res.check = check(out)
            del out
        except Exception as exc:  # noqa: BLE001 - reported in the table
            res.ok, res.check = False, f"error: {type(exc).__name__}: {str(exc)[:160]}"
            res.times = []
        res.wall_s = time.perf_counter() - t0
        (self.results if workers is None else self.scaling_results).append(res)
        return res

    def skip(self, wl: str, approach: str, why: str) -> None:
        self.results.append(Result(wl, approach, ok=None, check="skipped", note=why))

    def mp_fits(self, wl: str, moved_bytes: float) -> bool:
        """The textbook Pool holds pickled copies of inputs and results at once: about three
        times the data moved. Skip (with a note) above a third of the machine's memory."""
        need = 3 * moved_bytes
        if need > self.ram / 3:
            self.skip(wl, "mp.Pool", f"skipped: ~{need / 2**30:.1f} GiB of pickled copies > "
                                     f"1/3 of RAM ({self.ram / 2**30:.0f} GiB)")
            return False
        return True
