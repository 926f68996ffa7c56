"""Time-stepping workloads of issue #26, side by side in one run.

For each workload: a NumPy version (the oracle), a numba ``parallel=True`` version (prange
over rows, ``fastmath=True`` as NPBench's numba variants use), the same numba function on
one thread (``numba.set_num_threads(1)``), and a sharedcompute version written with
today's public API (``pool.map`` / ``reduce`` / ``iterate`` / ``submit``). Every variant is
checked against the NumPy result (the sharedcompute ones before timing; bitwise where the
arithmetic is the same order, else allclose with the stated tolerance); then each round
runs every variant once, in rotated order, and the table gives medians and ratios
(``x numba-par`` = numba parallel's median / this median: above 1 is faster than numba;
``x no-fm``: the same against the numba prange function compiled without fastmath, which
sharedcompute kernels cannot use today).

    python benchmarks/time_steps/run.py [--small] [--workers 2] [--repeats 5]
        [--only jacobi2d fdtd2d ...] [--validate-only] [--hog]

``--hog`` runs one busy-looping process beside the whole run (a CPU hog).
"""
from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import statistics
import sys
import time

import numba
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/: import time_steps.<workload>

import sharedcompute as sc  # noqa: E402

from time_steps.common import CountingPool, body_lines, compare  # noqa: E402

WORKLOADS = ("jacobi2d", "fdtd2d", "cavity", "hdiff", "sor", "floyd", "gemver", "rowcost",
             "rowcost_uniform", "rowcost_steep")


def load(name):
    return importlib.import_module(f"time_steps.{name}")


class Runner:
    def __init__(self, pool, workers: int, small: bool):
        self.pool, self.workers, self.small = pool, workers, small

    def prepare(self, mod, label, kind, size):
        """Fresh inputs for one variant: (data dict, reset function)."""
        init = mod.init(**size)
        if kind == "sc" or kind.endswith("-shm"):  # numba's "-shm" rows: the same memory
            data = {k: (self.pool.array(v) if isinstance(v, np.ndarray) else v)
                    for k, v in init.items()}
        else:
            data = {k: (np.array(v) if isinstance(v, np.ndarray) else v)
                    for k, v in init.items()}

        def reset():
            for k, v in init.items():
                if isinstance(v, np.ndarray):
                    np.asarray(data[k])[...] = v
        return data, reset

    def call(self, kind, fn, data, size, pool=None):
        if kind.startswith("numba-par"):  # "numba-par-other": parallel, not a baseline
            numba.set_num_threads(self.workers)
        elif kind.startswith("numba-1t"):
            numba.set_num_threads(1)
        if kind == "sc":
            return fn(pool or self.pool, data, size)
        if kind.endswith("-shm"):  # numba on the SharedArrays' own pages
            data = {k: np.asarray(v) if isinstance(v, sc.SharedArray) else v
                    for k, v in data.items()}
        return fn(data, size)

    def validate(self, mod, size, numba_too=True):
        """Runs every variant once (compiles, warms up) and checks it against NumPy's.
        Returns ({label: (ok, text)}, prepared variants, calls summary)."""
        prepared, checks, calls = {}, {}, {}
        want = None
        for label, (kind, fn) in mod.VARIANTS.items():
            if kind.startswith("numba") and not numba_too:
                continue
            data, reset = self.prepare(mod, label, kind, size)
            counting = CountingPool(self.pool) if kind == "sc" else None
            self.call(kind, fn, data, size, counting)
            if counting is not None:
                calls[label] = counting.summary()
            got = {k: np.array(data[k]) for k in mod.OUTPUTS}
            if kind == "numpy":
                want = got
                checks[label] = (True, "oracle")
            else:
                how = mod.CHECK.get(label, "bitwise")
                if how is None:
                    checks[label] = (True, "not compared (see note)")
                else:
                    res = [compare(got[k], want[k], how.get(k, "bitwise")
                                   if isinstance(how, dict) else how) for k in mod.OUTPUTS]
                    checks[label] = (all(r[0] for r in res),
                                     "; ".join(f"{k}: {r[1]}" for k, r in zip(mod.OUTPUTS, res)))
            prepared[label] = (kind, fn, data, reset)
        return checks, prepared, calls

    def time(self, mod, size, prepared, repeats):
        labels = [k for k in prepared if k not in getattr(mod, "UNTIMED", ())]
        times = {k: [] for k in labels}
        for r in range(repeats):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                kind, fn, data, reset = prepared[label]
                reset()
                time.sleep(0.15)  # OpenMP threads spin a while after a prange region
                t0 = time.perf_counter()
                self.call(kind, fn, data, size)
                times[label].append(time.perf_counter() - t0)
        return times


def hog():
    while True:
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--small", action="store_true", help="the small sizes (tests)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--validate-only", action="store_true")
    p.add_argument("--hog", action="store_true", help="one busy-looping process beside the run")
    p.add_argument("--no-numba", action="store_true",
                   help="leave out the numba variants (the test: no prange compiles)")
    args = p.parse_args(argv)
    failures = validate_and_time(args.only, args.small, args.workers, args.repeats,
                                 args.validate_only, args.hog, numba_too=not args.no_numba)
    return 1 if failures else 0


def validate_and_time(names, small=True, workers=2, repeats=5, validate_only=True,
                      with_hog=False, out=print, numba_too=True) -> list:
    """Returns the list of (workload, variant, text) that failed validation."""
    failures = []
    hog_proc = None
    if with_hog:
        hog_proc = mp.get_context("fork").Process(target=hog, daemon=True)
        hog_proc.start()
    try:
        with sc.Pool(workers) as pool:
            runner = Runner(pool, workers, small)
            out(f"time_steps: {workers} workers, numba {numba.__version__} (threading layer "
                f"{numba.config.THREADING_LAYER!r} asked), "
                f"sizes {'small' if small else 'default'}, "
                f"{'CPU hog beside' if with_hog else 'no hog'}, "
                f"{'validation only' if validate_only else f'{repeats} rounds after a warm-up'}, "
                f"load average {os.getloadavg()[0]:.1f}")
            for name in names:
                mod = load(name)
                size = mod.SIZES["small" if small else "default"]
                checks, prepared, calls = runner.validate(mod, size, numba_too)
                for label, (ok, text) in checks.items():
                    if not ok:
                        failures.append((name, label, text))
                code = getattr(mod, "CODE_MODULE", mod)
                sc_lines = body_lines(code, mod.SC_CODE)
                nb_lines = body_lines(code, mod.NUMBA_CODE)
                out(f"\n== {name} {size}: sharedcompute {sc_lines} lines vs numba {nb_lines} "
                    f"({sc_lines / nb_lines:.1f}x); pool calls per run: "
                    + "; ".join(f"{k}: {v}" for k, v in calls.items()))
                for label, names_ in getattr(mod, "SC_VARIANT_CODE", {}).items():
                    lines_ = body_lines(code, names_)  # a variant with code of its own
                    out(f"  {label}: {lines_} lines ({lines_ / nb_lines:.1f}x numba's)")
                if validate_only:
                    for label, (ok, text) in checks.items():
                        out(f"  {label:28s} {'ok  ' if ok else 'FAIL'} {text}")
                else:
                    times = runner.time(mod, size, prepared, repeats)
                    show(mod, times, checks, out)
                out(f"  note: {mod.NOTES}")
                for data in (v[2] for v in prepared.values()):
                    for a in data.values():
                        if isinstance(a, sc.SharedArray):
                            a.free()
    finally:
        if hog_proc is not None:
            hog_proc.kill()
            hog_proc.join()
    out(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if failures:
        out("\nFAILED: " + "; ".join(f"{w}/{v}: {t}" for w, v, t in failures))
    return failures


def show(mod, times, checks, out):
    med = {k: statistics.median(v) for k, v in times.items()}
    par = [k for k, (kind, _) in mod.VARIANTS.items() if kind == "numba-par"]
    one = [k for k, (kind, _) in mod.VARIANTS.items() if kind == "numba-1t"]
    nofm = [k for k, (kind, _) in mod.VARIANTS.items()
            if kind == "numba-par-other" and "no fastmath" in k]
    out(f"  {'variant':28s} {'median s':>9s} {'min..max s':>17s} {'x numba-par':>11s} "
        f"{'x numba-1t':>10s} {'x no-fm':>7s}  check")
    for label in (k for k in mod.VARIANTS if k not in times and k in checks):
        ok, text = checks[label]
        out(f"  {label:28s} {'(not timed)':>9s} {'':17s} {'':>11s} {'':>10s} {'':>7s}  "
            f"{'ok' if ok else 'FAIL'}: {text}")
    for label, ts in times.items():
        rp = f"{med[par[0]] / med[label]:.2f}" if par and par[0] in med else "-"
        r1 = f"{med[one[0]] / med[label]:.2f}" if one and one[0] in med else "-"
        rf = f"{med[nofm[0]] / med[label]:.2f}" if nofm and nofm[0] in med else "-"
        ok, text = checks[label]
        out(f"  {label:28s} {med[label]:9.4f} {min(ts):8.4f}..{max(ts):7.4f} {rp:>11s} "
            f"{r1:>10s} {rf:>7s}  {'ok' if ok else 'FAIL'}: {text}")


if __name__ == "__main__":
    sys.exit(main())
