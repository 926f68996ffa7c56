"""The sharedcompute command: demo, verify, bench, info, cleanup. Thin: it calls the API."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from ._system import format_bytes, pages_note, shm_huge_pages, shm_space, usable_cores


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


# -- info ------------------------------------------------------------------------------------
def collect_info() -> dict:
    import numba

    import sharedcompute as sc

    from .shared import list_segments
    cores = usable_cores()
    space = shm_space()
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or ("__pycache__ beside each kernel's "
                                                       "source (numba's default)")
    return {
        "version": sc.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "numba_threading_layer": numba.config.THREADING_LAYER,
        "n_workers": cores.n, "n_workers_reason": cores.reason, "os_cpu_count": os.cpu_count(),
        "start_method": sc.default_start_method(), "shm_huge": shm_huge_pages(),
        "shm_path": space.path if space else None, "shm_total": space.total if space else None,
        "shm_free": space.free if space else None, "numba_cache_dir": cache_dir,
        "numba_cache_enabled": os.environ.get("SHAREDCOMPUTE_NUMBA_CACHE", "1") != "0",
        "segments": list_segments()}


def cmd_info(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    shm = ("none (no /dev/shm on this system)" if info["shm_path"] is None else
           f"{info['shm_path']}: {format_bytes(info['shm_free'])} free of "
           f"{format_bytes(info['shm_total'])}{pages_note(info['shm_huge'])}")
    rows = [
        ["sharedcompute", info["version"]],
        ["python / numpy / numba", f"{info['python']} / {info['numpy']} / {info['numba']}"],
        ["workers (default)", (f"{info['n_workers_reason']} (os.cpu_count() = "
                              f"{info['os_cpu_count']})")],
        ["start method (default)", info["start_method"]],
        ["numba threading layer", (f"{info['numba_threading_layer']} (pool workers run "
                                  "kernels single-threaded)")],
        ["shared memory", shm],
        ["numba cache", info["numba_cache_dir"] if info["numba_cache_enabled"] else "disabled"],
        ["our segments in /dev/shm", str(len(info["segments"]))
         + (" (see `sharedcompute cleanup`)" if info["segments"] else "")],
    ]
    _print_table(rows, ["item", "value"])
    return 0


# -- cleanup ---------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_leftovers(directory: str) -> list[dict]:
    """Our segments in ``directory`` with their creator, owner and whether removable: only
    a regular file (not a link, not a folder) whose name carries the package's tag and a
    valid pid, owned by you, whose creator is gone. Anything else is kept, with the reason."""
    import stat

    from .shared import creator_pid, list_segments
    out = []
    for name in list_segments(directory):
        pid = creator_pid(name)
        try:
            st = os.lstat(os.path.join(directory, name))  # never follow a link
        except OSError:
            continue
        regular = stat.S_ISREG(st.st_mode)
        mine = st.st_uid == os.geteuid()
        alive = _pid_alive(pid)
        reason = ("not a regular file" if not regular else "creator alive" if alive
                  else "not owned by you" if not mine else "creator gone")
        out.append({"name": name, "pid": pid, "bytes": st.st_size, "creator_alive": alive,
                    "removable": regular and mine and not alive, "reason": reason})
    return out


def cmd_cleanup(args: argparse.Namespace) -> int:
    found = find_leftovers(args.dir)
    removed = []
    if args.yes:
        for seg in found:
            if seg["removable"]:
                try:
                    os.unlink(os.path.join(args.dir, seg["name"]))
                    removed.append(seg["name"])
                except FileNotFoundError:
                    pass
                except OSError as exc:  # note it and go on with the rest
                    seg["reason"], seg["removable"] = f"could not remove: {exc.strerror}", False
    if args.json:
        print(json.dumps({"segments": found, "removed": removed}, indent=2))
        return 0
    if not found:
        print(f"no sharedcompute segments in {args.dir}")
        return 0
    rows = [[s["name"], str(s["pid"]), format_bytes(s["bytes"]), s["reason"],
             "removed" if s["name"] in removed else
             ("removable" if s["removable"] else "kept")] for s in found]
    _print_table(rows, ["segment", "creator pid", "size", "why", "action"])
    leftover = [s for s in found if s["removable"] and s["name"] not in removed]
    if leftover and not args.yes:
        print(f"\n{len(leftover)} segment(s) whose creator is gone; remove them with "
              "`sharedcompute cleanup --yes`")
    return 0


# -- verify ----------------------------------------------------------------------------------
def summary(doc: str | None, width: int = 72) -> str:
    """A docstring's first sentence on one line, without reST markup, at most ``width``
    characters: cut at a '; ', ', ' or ': ' outside brackets, else at a word."""
    import inspect
    text = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split()).replace("``", "")
    depth, cuts = 0, {";": [], ",": [], ":": [], ".": [], " ": []}
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch in cuts and (ch == " " or text[i + 1:i + 2] in (" ", "")):
            cuts[ch].append(i)
    if cuts["."]:  # the first sentence only
        text = text[:cuts["."][0]]
    if len(text) <= width:
        return text
    for ch in ";,:":
        fits = [i for i in cuts[ch] if i <= width]
        if fits:
            return text[:fits[-1]]
    spaces = [i for i in cuts[" "] if i <= width - 3] or [text.rfind(" ", 0, width - 3)]
    return text[:max(spaces[-1], 1)] + "..."


def kernel_list(names: list[str]) -> list[dict]:
    """Name, kind, dtypes and one-line description of library kernels (``verify --list``)."""
    from .kernels.registry import ENTRIES
    return [{"name": n, "kind": ENTRIES[n].kernel.kind, "dtypes": list(ENTRIES[n].dtypes),
             "description": summary(ENTRIES[n].kernel.__doc__)} for n in names]


def cmd_verify(args: argparse.Namespace) -> int:
    import sharedcompute as sc

    from .kernels.registry import ENTRIES, share_args
    names = args.kernels or sorted(ENTRIES)
    unknown = [n for n in names if n not in ENTRIES]
    if unknown:
        print(f"unknown kernel(s): {', '.join(unknown)}; known: {', '.join(sorted(ENTRIES))} "
              "(`sharedcompute verify --list` describes them)", file=sys.stderr)
        return 2
    if args.list:
        listed = kernel_list(names)
        if args.json:
            print(json.dumps(listed, indent=2))
            return 0
        width = max(len(k["name"]) for k in listed)
        for k in listed:
            print(f"{k['name']:<{width}}  {k['kind']:<6}  {k['description']}")
        return 0
    results = []
    with sc.Pool(args.workers, start_method=args.start_method) as pool:
        for name in names:
            entry = ENTRIES[name]
            for dtype in entry.dtypes:
                rows = max(args.rows, entry.min_rows)  # minmax of nothing is undefined
                call, kwargs = entry.make(np.random.default_rng(0), rows, dtype)
                shared = share_args(pool, call)
                report = sc.verify(pool, entry.kernel, *shared, **kwargs)
                for a in shared:
                    if isinstance(a, sc.SharedArray):
                        a.free()
                for c in report.comparisons:
                    results.append({"kernel": name, "dtype": dtype, "output": c.label,
                                    "splitting": c.splitting,
                                    "chunks": report.splittings.get(c.splitting, ""),
                                    "max_abs": c.max_abs, "max_rel": c.max_rel, "rtol": c.rtol,
                                    "atol": c.atol, "scale": c.scale, "n_terms": c.n_terms,
                                    "err_over_tol": c.worst, "ok": c.ok, "detail": c.detail})
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"workers": pool.n_workers, "results": results, "ok": not bad}, indent=2))
    else:
        if not args.quiet:
            _print_table([[r["kernel"], r["dtype"], r["output"], r["splitting"],
                           f"{r['max_abs']:.3g}", f"{r['max_rel']:.3g}",
                           f"{r['rtol']:.3g}*{r['scale']}/{r['atol']:.3g}",
                           f"{r['err_over_tol']:.2g}",
                           "ok" if r["ok"] else "MISMATCH"] for r in results],
                         ["kernel", "dtype", "output", "splitting", "max abs err",
                          "max rel err", "rtol*scale/atol", "err/tol", "status"])
            for r in bad:
                print(f"  {r['kernel']} {r['dtype']} {r['output']} [{r['splitting']}: "
                      f"{r['chunks']}]: {r['detail']}")
        print(f"\n{len(results) - len(bad)} of {len(results)} comparisons (each output under "
              f"the pool's own and a fine splitting) within tolerance on {pool.n_workers} "
              f"workers" + (f"; MISMATCH in {len(bad)}" if bad else ""))
    return 1 if bad else 0


# -- demo ------------------------------------------------------------------------------------
def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_demo(args: argparse.Namespace) -> int:
    import sharedcompute as sc

    from .kernels import compute, elementwise, reductions, stencils
    space = shm_space()
    budget = min(space.free // 8 if space else 1 << 30, 1 << 30)  # stay far below /dev/shm
    n = int(min(2**24, budget // (3 * 8))) if not args.small else 2**16
    grid = 2048 if not args.small else 256
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    rows, ok_all = [], True
    if args.scheduler:
        from distributed import Client
        pool_ctx = sc.Pool(backend=Client(args.scheduler))
    else:
        pool_ctx = sc.Pool(args.workers, start_method=args.start_method)
    bn, cn = rng.random(n), rng.random(n)
    with pool_ctx as pool:
        t_pool = time.perf_counter() - t_start
        b, c = pool.array(bn), pool.array(cn)
        a = pool.zeros(n)

        def step(label: str, size: str, run_pool: Any, run_one: Any, check: Any) -> None:
            nonlocal ok_all
            run_pool()
            run_one()  # warm both (compile)
            t_p = _median_time(run_pool, 3)
            t_1 = _median_time(run_one, 3)
            ok = bool(check())
            ok_all &= ok
            rows.append([label, size, f"{t_1 * 1e3:.1f}", f"{t_p * 1e3:.1f}",
                         f"{t_1 / t_p:.2f}x", "ok" if ok else "MISMATCH"])
            times[label] = (t_1, t_p)

        times: dict[str, tuple[float, float]] = {}

        a1 = np.zeros(n)
        step("triad a = b + 2c", f"{n:,} float64",
             lambda: pool.map(elementwise.triad, a, b, c, 2.0),
             lambda: elementwise.triad.dispatcher(a1, bn, cn, 2.0),
             lambda: sc.verify(pool, elementwise.triad, a, b, c, 2.0).ok)
        step("dot(b, c)", f"{n:,} float64",
             lambda: pool.reduce(reductions.dot, b, c),
             lambda: reductions.dot.dispatcher(bn, cn),
             lambda: sc.verify(pool, reductions.dot, b, c).ok)
        u0 = np.zeros((grid, grid))
        u0[0] = 100.0
        u, w = pool.array(u0), pool.array(u0)
        sweeps = 50
        one_u, one_w = u0.copy(), u0.copy()

        def sweeps_one() -> None:
            x, y = one_w, one_u
            for _ in range(sweeps):
                stencils.jacobi2d.dispatcher(x[1:-1], y)
                x, y = y, x
        step(f"jacobi2d x{sweeps} (iterate)", f"{grid}x{grid}",
             lambda: pool.iterate(stencils.jacobi2d, w, u, steps=sweeps),
             sweeps_one,
             lambda: sc.verify(pool, stencils.jacobi2d, w, u).ok)
        m = pool.zeros((grid // 2, grid // 2), np.int32)
        m1 = np.zeros((grid // 2, grid // 2), np.int32)
        step("mandelbrot (200 iter)", f"{grid // 2}x{grid // 2}",
             lambda: pool.map(compute.mandelbrot, m, -2.0, 1.0, -1.5, 1.5, 200),
             lambda: compute.mandelbrot.dispatcher(m1, -2.0, 1.0, -1.5, 1.5, 200,
                                                   (0, m1.shape[0], m1.shape[0])),
             lambda: sc.verify(pool, compute.mandelbrot, m, -2.0, 1.0, -1.5, 1.5, 200).ok)
        insights = pool.insights()
    notes = _demo_notes(times, n, pool.n_workers)
    if args.json:
        print(json.dumps({"workers": pool.n_workers, "start_method": pool.start_method,
                          "pool_start_s": t_pool, "rows": rows, "ok": ok_all, "notes": notes},
                         indent=2))
    else:
        why = (f"on the Dask cluster at {args.scheduler}" if args.scheduler
               else usable_cores().reason)
        print(f"sharedcompute demo: {pool.n_workers} workers ({why}), "
              f"start method {pool.start_method}, pool started in {t_pool:.2f} s\n")
        _print_table(rows, ["step", "size", "numba 1 thread ms", "pool ms", "speedup",
                            "verified"])
        for line in notes:
            print(line)
        if args.verbose and not args.scheduler:
            print()
            print(insights)
        verdict = ("all results verified against their NumPy references" if ok_all
                   else "VERIFICATION FAILED")
        print(f"\n{verdict}; shared memory released")
    return 0 if ok_all else 1


def _demo_notes(times: dict, n: int, n_workers: int) -> list[str]:
    """Why the speedups are what they are: the memory-bound steps' bandwidth, the load."""
    notes = []
    moved = {"triad a = b + 2c": 24 * n, "dot(b, c)": 16 * n}  # bytes read + written
    rates = {k: (b / times[k][0] / 1e9, b / times[k][1] / 1e9) for k, b in moved.items()
             if k in times}
    if rates and 24 * n < 64 << 20:
        notes.append("\nThese arrays fit in the caches (--small): each pool call's fixed cost "
                     "(tens of microseconds to reach the workers) outweighs the work, so the "
                     "speedups say little; run without --small.")
    elif rates:
        one = max(r[0] for r in rates.values())
        pool_rate = max(r[1] for r in rates.values())
        notes.append(
            f"\ntriad and dot are memory-bound: one numba thread moved {one:.1f} GB/s, the pool "
            f"{pool_rate:.1f} GB/s. Their speedup is capped by the memory bus, which all cores "
            "share (`sharedcompute bench` measures its STREAM limit), not by the cores; "
            "mandelbrot and jacobi2d do more work per byte, so they are the rows that can "
            f"approach {n_workers}x.")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = usable_cores().n
    slower = sorted(k for k, (t_1, t_p) in times.items() if t_p > t_1)
    if load > 0.75 * cores:
        notes.append(f"The machine is busy (load average {load:.1f} on {cores} cores): "
                     f"{n_workers} workers share the cores with other work, so the timings are "
                     "noisy and the speedups lower than on an idle machine"
                     + (f"; below 1 ({', '.join(slower)}) the pool's workers waited for the "
                        "cores longer than one thread did" if slower else "") + ".")
    elif slower:
        notes.append(f"Below 1 ({', '.join(slower)}): the pool was slower than one thread "
                     "on this run; each call pays a fixed cost to reach the workers, which "
                     "short calls do not win back (see the FAQ: 'The pool is slower than one "
                     "thread').")
    return notes


# -- bench -----------------------------------------------------------------------------------
def _add_bench(sub: Any) -> None:
    from . import bench
    p = sub.add_parser("bench", help="benchmark against NumPy, numba and multiprocessing")
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)


def _count(minimum: int) -> Any:
    """An argparse type: an integer >= minimum (bad values are argparse errors, before work)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _pool_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_count(1), default=None, metavar="N",
                   help="worker processes (default: the cores this process may use)")
    p.add_argument("--start-method", default=None, choices=("fork", "spawn", "forkserver"),
                   help="how workers start (default: forkserver on Linux, else spawn)")


def _library_kernels() -> list[str]:
    from .kernels.registry import ENTRIES
    return sorted(ENTRIES)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # -v/-q before or after the subcommand
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="more detail and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only the summary")
    parser = argparse.ArgumentParser(prog="sharedcompute", description=__doc__,
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    real_add = sub.add_parser
    sub.add_parser = lambda *a, **k: real_add(*a, parents=[common], **k)  # type: ignore

    p = sub.add_parser("demo", help="run the library's kernels on arrays sized to this machine")
    _pool_options(p)
    p.add_argument("--small", action="store_true", help="small arrays (seconds)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on a Dask cluster, e.g. tcp://10.0.0.5:8786 (needs the dask extra)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_demo)

    kernels = _library_kernels()
    p = sub.add_parser("verify", help="check kernels against their NumPy references",
                       description="Run library kernels on a pool and their NumPy references "
                       "on copies, under the pool's own and a finer splitting, and compare. "
                       f"Kernels: {', '.join(kernels)} (--list describes them).")
    p.add_argument("kernels", nargs="*", metavar="KERNEL",
                   help="library kernels to verify (default: all of them)")
    p.add_argument("--list", action="store_true",
                   help="list the kernels (name, map/reduce/scan, what it computes) and exit")
    _pool_options(p)
    p.add_argument("--rows", type=_count(0), default=10_007, metavar="N",
                   help="rows of the generated inputs (default: 10007)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_verify)

    _add_bench(sub)

    p = sub.add_parser("info", help="workers and why, start method, numba, /dev/shm")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("cleanup", help="remove segments left by processes that no longer exist")
    p.add_argument("--yes", action="store_true", help="remove them (default: only list)")
    p.add_argument("--dir", default="/dev/shm", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the segments found as JSON")
    p.set_defaults(func=cmd_cleanup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("verbose", "quiet"):
        if not hasattr(args, name):
            setattr(args, name, False)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a clear one-line error, not a traceback, for known failures
        from .errors import SharedComputeError
        if isinstance(exc, SharedComputeError) and not args.verbose:
            print(f"sharedcompute: error: {exc}", file=sys.stderr)
            return 1
        raise
