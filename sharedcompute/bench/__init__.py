"""``sharedcompute bench``: the library's workloads, every approach side by side, in one run.

For each workload (sizes and repeats from ``kernels.registry.ENTRIES[name].bench``) the same
computation runs as

* ``numpy``     the kernel's plain-NumPy reference (also the correctness reference),
* ``numba-1t``  the kernel's numba dispatcher on the whole array, one thread,
* ``prange``    a numba ``parallel=True`` twin (defined here) on as many threads as workers,
* ``pool``      ``sharedcompute.Pool.map / reduce / iterate`` on shared arrays,
* ``mp.Pool``   the textbook ``multiprocessing.Pool.map`` over pickled chunks (same numba
                kernel in the workers, so only the data movement differs),
* ``joblib``    ``joblib.Parallel`` (loky, default auto-memmapping), only if importable,

after warm-up (compiles excluded), with medians over repeats and every result checked
against the reference. Memory-bound workloads are reported as GB/s and as a percentage of a
STREAM-like bandwidth (numba prange copy / triad / read) measured in the same run. Fixed
costs (pool start per start method, dispatch latency, per-sweep cost of ``pool.iterate``,
worker private memory) are measured separately.

Order matters: pools with start_method='fork' are measured first, before any numba parallel
(OpenMP) thread exists in this process; everything after uses the default start method
(forkserver on Linux), which is safe after threads have started.

The parts: ``session`` (timing, results, checks), ``workloads`` (one function per kind of
registry kernel), ``peers`` (prange twins, STREAM, textbook Pool and joblib), ``costs``
(fixed costs, scaling), ``report`` (tables, figure). The engine never imports this package.

Run ``sharedcompute bench --help`` (or ``python -m sharedcompute.bench``).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from typing import Any

from .costs import fixed_costs, stream_scaling
from .peers import stream
from .report import env_info, plot, print_report, scaling_series
from .session import Result, Session, available_bytes, leftover_segments
from .workloads import peak_bytes, problem_size, workload_for

DEFAULT_KERNELS = ("triad", "total", "dot", "logistic_map", "jacobi2d", "mandelbrot", "matmul")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sharedcompute bench`` options."""
    from .._system import usable_cores
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (CI smoke run, well under a minute on 2 cores)")
    parser.add_argument("--workers", type=int, default=usable_cores().n,
                        help="workers (and prange threads); default: the usable cores "
                             "(%(default)s here)")
    parser.add_argument("--kernels", nargs="+", metavar="NAME",
                        help=f"registry kernels to run (default: {' '.join(DEFAULT_KERNELS)}; "
                             "'all' for every registry kernel)")
    parser.add_argument("--json", metavar="PATH", help="write every result (all timings) as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a figure (needs matplotlib) of the run's table: speedup "
                             "with 1..cores workers (triad and mandelbrot, also timed at the "
                             "other worker counts) and time per approach")
    parser.add_argument("--repeats", type=int,
                        help="timed repeats per approach (default: the registry's per workload)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--mem-n", type=int, default=0, help=argparse.SUPPRESS)


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc="bench", unit="step", file=sys.stderr, leave=False)
    except ImportError:
        return None


def _kernel_names(args: argparse.Namespace) -> list[str] | None:
    """The registry kernels the options ask for; None (after saying why) if they are off."""
    from sharedcompute.kernels.registry import ENTRIES
    if args.workers < 1:
        print("sharedcompute bench: --workers must be >= 1", file=sys.stderr)
        return None
    if args.repeats is not None and args.repeats < 1:
        print("sharedcompute bench: --repeats must be >= 1", file=sys.stderr)
        return None
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("sharedcompute bench: --plot needs matplotlib, which is not installed; "
                  "pip install 'sharedcompute[plot]' (or matplotlib), or drop --plot",
                  file=sys.stderr)
            return None
    for label, path in (("--plot", args.plot), ("--json", getattr(args, "json", None))):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.access(folder, os.W_OK):  # say so now, not after the whole run
            print(f"sharedcompute bench: {label} {path}: the folder {folder} does not exist "
                  "or is not writable", file=sys.stderr)
            return None
    names = list(args.kernels or DEFAULT_KERNELS)
    if names == ["all"]:
        names = list(ENTRIES)
    unknown = [n for n in names if n not in ENTRIES]
    if unknown:
        print(f"sharedcompute bench: unknown kernel(s) {unknown}; known: {', '.join(ENTRIES)}",
              file=sys.stderr)
        return None
    return names


def _run_workload(ctx: Session, entry: Any) -> None:
    """One registry kernel's workload, unless it would not fit in memory; errors recorded."""
    need = peak_bytes(entry, problem_size(entry, ctx.quick))
    if need > 0.8 * available_bytes():
        ctx.skip(entry.name, "all", f"skipped: needs ~{need / 2**30:.1f} GiB, "
                                    f"{available_bytes() / 2**30:.1f} GiB available")
    else:
        try:
            workload_for(entry)(ctx, entry)
        except Exception as exc:  # noqa: BLE001 - e.g. MemoryError building inputs
            ctx.results.append(Result(entry.name, "all", ok=False, check=(
                f"error: {type(exc).__name__}: {str(exc)[:160]}")))
    ctx.free_shared()
    gc.collect()


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``; returns the exit status."""
    names = _kernel_names(args)
    if names is None:
        return 2
    import numba

    from sharedcompute.kernels.registry import ENTRIES

    ctx = Session(args)
    if ctx.workers > numba.config.NUMBA_NUM_THREADS:
        ctx.pthreads = numba.config.NUMBA_NUM_THREADS
        ctx.notes.append(f"prange runs on {ctx.pthreads} threads (NUMBA_NUM_THREADS), not "
                         f"{ctx.workers}")
    t_start = time.perf_counter()
    load_start = _loadavg()
    steps = ["fixed costs", "STREAM"] + names + (["bandwidth per workers"] if args.plot else [])
    bar = _progress(not args.no_progress, len(steps))
    step_t = [time.perf_counter(), ""]

    def step(label: str) -> None:
        now = time.perf_counter()
        if step_t[1]:
            ctx.step_s[step_t[1]] = now - step_t[0]
            if bar is not None:
                bar.update(1)
        step_t[0], step_t[1] = now, label
        if bar is not None:
            bar.set_postfix_str(label)
        elif not args.no_progress:
            print(f"[bench] {label}", file=sys.stderr, flush=True)
    try:
        step("fixed costs")
        fixed_costs(ctx, reps=1 if ctx.quick else 3)
        step("STREAM")
        sn = 2**23 if ctx.quick else max(2**26, problem_size(ENTRIES["triad"], False))
        ctx.stream = stream(sn, ctx.pthreads, 5 if ctx.quick else 10)
        ctx.stream_1t = stream(sn, 1, 3 if ctx.quick else 5)
        numba.set_num_threads(ctx.pthreads)
        for name in names:
            step(name)
            _run_workload(ctx, ENTRIES[name])
        if args.plot:
            step("bandwidth per workers")
            stream_scaling(ctx)
        step("")
    finally:
        if bar is not None:
            bar.close()
        env = env_info(ctx)
        env["loadavg_start"] = load_start
        ctx.close()
    elapsed = time.perf_counter() - t_start
    leftovers = leftover_segments()
    env["loadavg_end"] = _loadavg()
    print_report(ctx, env, elapsed, leftovers)
    rc = 1 if leftovers or any(r.ok is False for r in ctx.results) else 0
    if args.json:
        data = {"env": env, "stream": ctx.stream, "stream_1t": ctx.stream_1t, "fixed": ctx.fixed,
                "results": [r.as_dict() for r in ctx.results],
                "scaling": dict(ctx.scaling, speedups=scaling_series(ctx)),
                "scaling_results": [r.as_dict() for r in ctx.scaling_results],
                "notes": ctx.notes, "elapsed_s": elapsed, "step_s": ctx.step_s,
                "leftover_segments": leftovers}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=float)
        print(f"wrote {args.json}")
    if args.plot:
        plot(ctx, args.plot, env)
        print(f"wrote {args.plot}")
    return rc


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return math.nan


def main(argv: list[str] | None = None) -> int:
    """``sharedcompute bench`` as a program of its own (benchmarks/run_bench.py, -m)."""
    parser = argparse.ArgumentParser(prog="sharedcompute bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
