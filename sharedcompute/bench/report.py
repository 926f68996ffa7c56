"""What a run shows: the results table, fixed costs, STREAM, environment, the figure.

``print_report`` writes the whole text report of a finished ``Session``; ``plot`` the figure
of ``--plot`` (scaling with workers, time per approach; needs matplotlib).
"""
from __future__ import annotations

import math
import platform
from typing import Any

import numpy as np

from .._system import format_bytes, shm_space
from .session import APPROACHES, Result, Session


def format_time(t: float) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def speedup(base: Result | None, r: Result) -> float:
    """How many times faster ``r`` ran than ``base``: the ratio of their median times, as the
    table's 'x numba1' and 'x prange' columns and the figure's panel (a) show it."""
    if base is None or not base.times or not r.times:
        return math.nan
    return base.median / r.median


def table(ctx: Session) -> str:
    """The results as a plain-text table (ratios: time of the baseline / time of the row)."""
    lines = []
    hdr = (f"{'workload':<26} {'approach':<9} {'n':>2} {'median':>9} {'min..max':>19} "
           f"{'x numba1':>8} {'x prange':>8} {'GB/s':>6} {'%STREAM':>7}  check")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    by_wl: dict[str, list[Result]] = {}
    for r in ctx.results:
        by_wl.setdefault(r.workload, []).append(r)
    for wl, rows in by_wl.items():
        base = {r.approach: r for r in rows if r.times}
        for r in rows:
            if not r.times:
                lines.append(f"{wl:<26} {r.approach:<9} {'':>2} {'-':>9} {'':>19} {'':>8} "
                             f"{'':>8} {'':>6} {'':>7}  "
                             f"{'FAIL ' if r.ok is False else ''}{r.check}"
                             f"{'; ' + r.note if r.note else ''}")
                continue
            med = r.median
            mm = f"{format_time(min(r.times))}..{format_time(max(r.times))}"
            x1 = f"{speedup(base['numba-1t'], r):.2f}" if "numba-1t" in base else "-"
            xp = f"{speedup(base['prange'], r):.2f}" if "prange" in base else "-"
            gbs = pct = "-"
            if r.nbytes:
                g = r.nbytes / med / 1e9
                gbs = f"{g:.1f}"
                ref = ctx.stream.get(r.stream or "")
                if ref:
                    pct = f"{100 * g / ref:.0f}%"
            status = "ok" if r.ok else ("ref" if r.ok is None else "FAIL")
            detail = r.check if r.ok is not None else ""
            lines.append(f"{wl:<26} {r.approach:<9} {len(r.times):>2} {format_time(med):>9} "
                         f"{mm:>19} {x1:>8} {xp:>8} {gbs:>6} {pct:>7}  {status}"
                         f"{' ' + detail if detail and not r.ok else ''}"
                         f"{' (' + r.note + ')' if r.note else ''}")
        lines.append("")
    return "\n".join(lines)


def fixed_report(ctx: Session) -> str:
    f = ctx.fixed
    out = []
    if "pool_start" in f:
        out.append(f"Pool start, {ctx.workers} workers (start + first tiny map; numba cache warm):")
        for m, d in f["pool_start"].items():
            out.append(f"  {m:<34} {format_time(d['median_total_s']):>9}  (start "
                       f"{format_time(d['median_start_s'])}, first map "
                       f"{format_time(d['median_first_map_s'])}, close "
                       f"{format_time(d['median_close_s'])}; n={len(d['runs'])})")
    if "dispatch" in f:
        d = f["dispatch"]
        out.append(f"Dispatch latency on a warm pool ({d['n']} tiny calls, {d['rows']} rows): "
                   f"map median {format_time(d['map_median_s'])} (p10 "
                   f"{format_time(d['map_p10_s'])}, p90 {format_time(d['map_p90_s'])}); reduce "
                   f"median {format_time(d['reduce_median_s'])} (p90 "
                   f"{format_time(d['reduce_p90_s'])})")
    if "iterate" in f:
        d = f["iterate"]
        out.append(f"Per sweep, jacobi2d {d['grid']}^2: pool.iterate "
                   f"{format_time(d['iterate_per_sweep_s'])} ({d['steps']} steps) vs one pool.map "
                   f"per sweep {format_time(d['map_per_sweep_s'])} ({d['map_sweeps']} calls): "
                   f"{d['map_per_sweep_s'] / d['iterate_per_sweep_s']:.1f}x; numba-1t compute "
                   f"alone {format_time(d['numba_1t_per_sweep_s'])}")
    if "memory" in f:
        m = f["memory"]

        def row(label: str, xs: list) -> str:
            if not xs:
                return f"  {label}: psutil not installed"
            return f"  {label:<22}" + "; ".join(
                f"USS {format_bytes(x.get('uss', 0))}, anon {format_bytes(x.get('RssAnon', 0))}, "
                f"shmem {format_bytes(x.get('RssShmem', 0))}" for x in xs)
        out.append(f"Worker memory (psutil USS; /proc RssAnon, RssShmem), triad over 3 x "
                   f"{format_bytes(m['array_bytes'])} shared arrays:")
        out.append(row("idle", m["idle"]))
        out.append(row("after map", m["after_map"]))
        out.append(row("after parent read", m["after_parent_read"]))
    return "\n".join(out)


def stream_report(ctx: Session) -> str:
    s, s1 = ctx.stream, ctx.stream_1t
    if not s:
        return ""
    line = (f"STREAM-like (numba prange, float64, n={s['n']}): {s['threads']} threads: copy "
            f"{s['copy']:.1f}, triad {s['triad']:.1f}, read {s['read']:.1f} GB/s (medians)")
    if s1:
        line += (f"; 1 thread: copy {s1['copy']:.1f}, triad {s1['triad']:.1f}, read "
                 f"{s1['read']:.1f} GB/s -> bandwidth ceiling on speedup "
                 f"{s['triad'] / s1['triad']:.2f}x (triad)")
    return line


def env_info(ctx: Session) -> dict:
    import numba

    import sharedcompute as sc
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def read(p: str) -> str:
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return "n/a"
    shm = shm_space()
    try:
        layer = numba.threading_layer()
    except Exception:  # noqa: BLE001 - ValueError until a parallel region has run
        layer = "not started"
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "sharedcompute": sc.__version__, "cpu": cpu,
            "usable_cores": sc.usable_cores().reason, "workers": ctx.workers,
            "prange_threads": ctx.pthreads, "numba_threading_layer": layer,
            "ram_bytes": ctx.ram, "shm_total_bytes": shm.total if shm else None,
            "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
            "thp_shmem": read("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
            "platform": platform.platform(), "quick": ctx.quick}


SCALED = ("triad", "mandelbrot")  # the workloads of panel (a): memory- and compute-bound
LABELS = {"numpy": "NumPy (one core)", "numba-1t": "numba, 1 thread",
          "prange": "numba prange (parallel=True threads)", "pool": "sharedcompute Pool",
          "mp.Pool": "multiprocessing.Pool (pickled chunks)", "joblib": "joblib (loky)"}


def scaling_series(ctx: Session) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """Panel (a)'s points: for triad and mandelbrot, pool and prange, the worker counts and
    the speedups over the table's numba-1t row of the same workload. At the run's own count
    the point is the table's row itself; the others were timed the same way (``scale``)."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for wl in dict.fromkeys(r.workload for r in ctx.results):
        if wl.split()[0] not in SCALED:
            continue
        rows = [r for r in ctx.results if r.workload == wl]
        base = next((r for r in rows if r.approach == "numba-1t" and r.times), None)
        for ap, own in (("pool", ctx.workers), ("prange", ctx.pthreads)):
            pts = [(own, r) for r in rows if r.approach == ap]
            pts += [(r.workers, r) for r in ctx.scaling_results
                    if r.workload == wl and r.approach == ap]
            xy = sorted((w, speedup(base, r)) for w, r in pts if r.times)
            if xy:
                out.setdefault(wl, {})[ap] = ([w for w, _ in xy], [s for _, s in xy])
    return out


def bandwidth_limit(ctx: Session) -> tuple[list[int], list[float]]:
    """Panel (a)'s grey line: STREAM triad GB/s with w threads over that with one thread."""
    gbs = ctx.scaling.get("stream_triad") or {}
    one = gbs.get(1)
    if not one:
        return [], []
    ws = sorted(w for w, g in gbs.items() if g and math.isfinite(g))
    return ws, [gbs[w] / one for w in ws]


def figure(ctx: Session, env: dict | None = None) -> Any:
    """The ``--plot`` figure of a finished run, drawn from the same records as ``table``."""
    import textwrap

    from matplotlib.figure import Figure
    fig = Figure(figsize=(14, 7.4))
    ax1, ax2 = fig.subplots(1, 2)
    series = scaling_series(ctx)
    ws = sorted({w for s in series.values() for xs, _ in s.values() for w in xs})
    if ws:
        ax1.plot(ws, ws, "k--", label="ideal: w workers, w times faster")
        for wl, marker in zip(series, "os^v"):
            kind = "memory-bound" if wl.startswith("triad") else "compute-bound"
            for ap, style in (("pool", "-"), ("prange", ":")):
                if ap in series[wl]:
                    xs, ys = series[wl][ap]
                    ax1.plot(xs, ys, marker=marker, linestyle=style,
                             label=f"{wl} ({kind}): {LABELS[ap]}")
        lx, ly = bandwidth_limit(ctx)
        if lx:
            ax1.plot(lx, ly, color="grey", linewidth=3, alpha=0.5,
                     label="memory-speed limit: bandwidth with w threads / with 1")
        ax1.axvline(ctx.workers, color="k", alpha=0.3, linewidth=1, linestyle="-.",
                    label=f"{ctx.workers} workers: the table's own rows")
        ax1.set_xticks(ws)
        ax1.legend(fontsize=7.5, loc="best")
    else:
        ax1.text(0.5, 0.5, "no triad or mandelbrot rows in this run\n(add them to --kernels)",
                 ha="center", va="center", transform=ax1.transAxes)
    ax1.set_xlabel("workers (pool processes, or prange threads)")
    ax1.set_ylabel("times faster than one numba thread (higher is better)")
    ax1.set_title("(a) speedup as workers are added")
    ax1.grid(alpha=0.3)
    by_wl: dict[str, dict[str, float]] = {}
    for r in ctx.results:
        if r.times:
            by_wl.setdefault(r.workload, {})[r.approach] = r.median
    wls = list(by_wl)
    width = 0.8 / len(APPROACHES)
    for k, ap in enumerate(APPROACHES):
        xs = [i + k * width for i, wl in enumerate(wls) if ap in by_wl[wl]]
        ys = [by_wl[wl][ap] for wl in wls if ap in by_wl[wl]]
        if xs:
            ax2.bar(xs, ys, width, label=LABELS[ap])
    ax2.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))])
    ax2.set_xticklabels(wls, rotation=30, ha="right", fontsize=8)
    ax2.set_yscale("log")
    tallest = max((y for d in by_wl.values() for y in d.values()), default=0.0)
    if tallest > 0:
        ax2.set_ylim(top=tallest * 30)  # headroom for the legend above the bars
    ax2.set_ylabel("median seconds per call (log scale; lower is better)")
    ax2.set_title(f"(b) time per call of each approach, {ctx.workers} workers")
    ax2.legend(fontsize=7.5, loc="upper left", ncol=2)
    env = env or {}
    loads = [f"{env[k]:.1f} at {k[8:]}" for k in ("loadavg_start", "loadavg_end")
             if isinstance(env.get(k), float) and math.isfinite(env[k])]
    run = (f"sharedcompute bench{' --quick' if ctx.quick else ''}, {ctx.workers} workers"
           + (f", {env['cpu']}" if env.get("cpu") else "")
           + (f", cores: {env['usable_cores']}" if env.get("usable_cores") else "")
           + (f", load average {' and '.join(loads)}" if loads else ""))
    caption = (
        f"{run}. (a) How many times faster than a single numba thread each approach runs "
        "triad (a = b + s*c over float64 arrays: little arithmetic per byte, so limited by "
        "memory speed) and mandelbrot (much arithmetic per pixel, limited by the cores). "
        f"The points at {ctx.workers} workers are the table's 'x numba1' figures; the other "
        "counts were timed the same way in the same run. The grey line is how much faster w "
        "threads move memory than one (a copy-and-add loop over large arrays, the STREAM "
        "triad): a memory-bound kernel cannot beat it however many cores it gets. "
        "(b) The table's median time per call of each approach, per workload.")
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(caption, 190)), fontsize=8.5, va="bottom")
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig


def plot(ctx: Session, path: str, env: dict | None = None) -> None:
    """Write the ``--plot`` figure (``figure``) to ``path``."""
    figure(ctx, env).savefig(path, dpi=110)


def print_report(ctx: Session, env: dict, elapsed: float, leftovers: list[str]) -> None:
    """The text report of a finished run, on stdout."""
    print(f"sharedcompute bench{' --quick' if ctx.quick else ''}: {ctx.workers} workers "
          f"({env['usable_cores']}), prange on {ctx.pthreads} threads "
          f"[{env['numba_threading_layer']}], pool start method "
          f"{ctx.fixed.get('main_pool', {}).get('start_method', '?')}")
    print(f"{env['cpu']}; Python {env['python']}, NumPy {env['numpy']}, numba {env['numba']}; "
          f"THP anon {env['thp']}, shmem {env['thp_shmem']}")
    print(f"load average (1 min) at start {env['loadavg_start']:.2f}, at end "
          f"{env['loadavg_end']:.2f}")
    print(stream_report(ctx))
    print()
    print(table(ctx))
    print("x numba1 / x prange: median time of that baseline / median time of the row (> 1: "
          "faster). %STREAM: against the STREAM triad (writers) or read (reductions) figure.")
    for note in ctx.notes:
        print("note:", note)
    print()
    print(fixed_report(ctx))
    print(f"\ntotal bench time {elapsed:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in ctx.step_s.items()) + ")")
    if leftovers:
        print(f"WARNING: shared-memory segments of this run left in /dev/shm: {leftovers}")
    else:
        print("no shared-memory segment of this run is left in /dev/shm")
    failed = [r for r in ctx.results if r.ok is False]
    if failed:
        print(f"{len(failed)} approach(es) FAILED their check or raised: "
              + ", ".join(f"{r.workload}/{r.approach}" for r in failed))
