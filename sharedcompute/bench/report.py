"""What a run shows: the results table, fixed costs, STREAM, environment, the figure.

``print_report`` writes the whole text report of a finished ``Session``; ``plot`` the figure
of ``--plot`` (scaling with workers, time per approach; needs matplotlib).
"""
from __future__ import annotations

import math
import platform

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
        base = {r.approach: r.median for r in rows if r.times}
        for r in rows:
            if not r.times:
                lines.append(f"{wl:<26} {r.approach:<9} {'':>2} {'-':>9} {'':>19} {'':>8} "
                             f"{'':>8} {'':>6} {'':>7}  "
                             f"{'FAIL ' if r.ok is False else ''}{r.check}"
                             f"{'; ' + r.note if r.note else ''}")
                continue
            med = r.median
            mm = f"{format_time(min(r.times))}..{format_time(max(r.times))}"
            x1 = f"{base['numba-1t'] / med:.2f}" if "numba-1t" in base else "-"
            xp = f"{base['prange'] / med:.2f}" if "prange" in base else "-"
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
    except Exception:
        layer = "not started"
    return dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                sharedcompute=sc.__version__, cpu=cpu, usable_cores=sc.usable_cores().reason,
                workers=ctx.workers, prange_threads=ctx.pthreads, numba_threading_layer=layer,
                ram_bytes=ctx.ram, shm_total_bytes=shm.total if shm else None,
                thp=read("/sys/kernel/mm/transparent_hugepage/enabled"),
                thp_shmem=read("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
                platform=platform.platform(), quick=ctx.quick)


def plot(ctx: Session, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    sc_ = ctx.scaling
    if sc_:
        ws = sc_["workers"]
        ax1.plot(ws, ws, "k--", label="ideal")
        for wl, marker in (("triad", "o"), ("mandelbrot", "s")):
            ax1.plot(ws, sc_[wl]["pool"], marker=marker, label=f"{wl}: pool")
            ax1.plot(ws, sc_[wl]["prange"], marker=marker, linestyle=":",
                     label=f"{wl}: prange")
        st = sc_["stream_triad"]
        if st and math.isfinite(st[0]) and st[0] > 0:
            ceil = [x / st[0] for x in st]
            ax1.plot(ws, ceil, color="grey", linewidth=3, alpha=0.5,
                     label="bandwidth ceiling (STREAM(w) / STREAM(1))")
        ax1.set_xlabel("workers / threads")
        ax1.set_ylabel("speedup over numba, 1 thread")
        ax1.set_xticks(ws)
        sz = sc_.get("sizes", {})
        ax1.set_title(f"(a) scaling: triad n={sz.get('triad_n')}, mandelbrot "
                      f"{sz.get('mandelbrot_n')}^2")
        ax1.legend(fontsize=8)
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
            ax2.bar(xs, ys, width, label=ap)
    ax2.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))])
    ax2.set_xticklabels(wls, rotation=30, ha="right", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("median time per call (s, log)")
    ax2.set_title(f"(b) time per approach, {ctx.workers} workers")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
