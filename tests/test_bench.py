"""The benchmark package's own parts, in process and without a pool (the whole command runs
in tests/test_cli.py): workload lookup from the registry, answer checks, recorded failures."""
import argparse
import ast
import os

import numpy as np
import pytest
from sharedcompute.kernels.registry import ENTRIES

from sharedcompute.bench import report, workloads
from sharedcompute.bench.session import Result, Session, measure, verdict

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(workloads.__file__)))


def test_every_registry_entry_has_a_workload():
    for name, entry in ENTRIES.items():
        wl = workloads.workload_for(entry)
        assert wl.__name__ == "wl_" + entry.bench.get("workload", "generic"), name
    assert workloads.workload_for(ENTRIES["triad"]) is workloads.wl_triad


def test_an_unknown_workload_name_is_an_error():
    entry = argparse.Namespace(name="x", bench={"workload": "no_such"})
    with pytest.raises(LookupError, match="wl_no_such"):
        workloads.workload_for(entry)


def test_verdict_checks_values_nans_shapes_and_parts():
    a = np.array([1.0, 2.0, np.inf])
    assert verdict(a, a.copy(), 1e-12, 0.0)[0]
    assert not verdict(a + [0, 1e-6, 0], a, 1e-12, 0.0)[0]
    assert not verdict(np.array([np.nan, 2.0, np.inf]), a, 1e-12, 0.0)[0]  # NaN where a value
    assert not verdict(a[:2], a, 1e-12, 0.0)[0]
    ints = np.arange(5, dtype=np.int32)
    assert verdict(ints, ints.copy(), 0.0, 0.0) == (True, "exact")
    assert verdict((1.0, 2.0), (1.0, 2.0), 1e-12, 0.0)[0]
    assert not verdict((1.0, 2.5), (1.0, 2.0), 1e-12, 0.0)[0]
    assert verdict((1.0,), (1.0, 2.0), 1e-12, 0.0) == (False, "different number of parts")


def test_measure_stops_at_the_budget_and_a_failure_is_recorded():
    times, out = measure(lambda: 7, repeats=1000, warmup=1, budget_s=0.0)
    assert len(times) == 1 and out == 7
    ctx = Session(argparse.Namespace(quick=True, workers=1, repeats=None))
    res = ctx.add("w", "a", lambda: 1 / 0, repeats=2, check=lambda got: (True, ""))
    assert res.ok is False and res.check.startswith("error: ZeroDivisionError")
    assert ctx.results == [res] and res.times == []


def test_the_engine_never_imports_bench():
    for fname in os.listdir(PACKAGE):
        if not fname.endswith(".py") or fname == "cli.py":
            continue
        with open(os.path.join(PACKAGE, fname)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any("bench" in n for n in names), f"{fname} imports {names}"


def _finished_run(workers=2):
    """A Session as a run with --plot leaves it: the table's rows, the same workloads' pool
    and prange rows at the other worker count, and the STREAM figures."""
    ctx = Session(argparse.Namespace(quick=True, workers=workers, repeats=None, plot="x.png"))
    tri, man = "triad n=2^20", "mandelbrot 512^2 x200"
    ctx.results = [
        Result(tri, "numpy", [2.5e-3, 2.8e-3, 2.6e-3], check="reference"),
        Result(tri, "numba-1t", [1.1e-3, 1.3e-3, 1.2e-3], ok=True),
        Result(tri, "prange", [7.5e-4, 8.0e-4, 7.0e-4], ok=True),
        Result(tri, "pool", [1.1e-3, 1.0e-3, 1.05e-3], ok=True),
        Result(tri, "mp.Pool", [0.12, 0.13], ok=True),
        Result(man, "numba-1t", [33e-3, 32e-3, 34e-3], ok=True),
        Result(man, "prange", [18e-3, 17.5e-3, 18.5e-3], ok=True),
        Result(man, "pool", [18.2e-3, 18.0e-3, 18.4e-3], ok=True),
        Result("total n=2^20", "pool", [4e-4], ok=True),
        Result("dot n=2^20", "mp.Pool", ok=False, check="error: boom"),  # no times: no bar
    ]
    ctx.scaling_results = [Result(tri, "pool", [1.3e-3, 1.4e-3], ok=True, workers=1),
                           Result(tri, "prange", [1.25e-3], ok=True, workers=1),
                           Result(man, "pool", [33.5e-3], ok=True, workers=1),
                           Result(man, "prange", [34e-3], ok=True, workers=1)]
    ctx.stream = {"n": 2**23, "threads": 2, "copy": 17.0, "triad": 21.1, "read": 15.0}
    ctx.stream_1t = {"n": 2**23, "threads": 1, "copy": 10.6, "triad": 16.7, "read": 7.5}
    ctx.scaling["stream_triad"] = {1: 16.7, 2: 21.1}
    return ctx


def _table_column(ctx, column):
    """{(workload, approach): value} of one numeric column of the printed table."""
    lines = report.table(ctx).splitlines()
    header = lines[0]
    start = header.index(column)
    out = {}
    for line in lines[2:]:
        if not line.strip() or line[start - 1:start + len(column)].strip() in ("", "-"):
            continue
        out[(line[:26].strip(), line[27:36].strip())] = float(line[start - 1:start + len(column)])
    return out


def test_the_plot_shows_the_tables_values_for_the_same_run():
    pytest.importorskip("matplotlib")
    ctx = _finished_run()
    x_numba1 = _table_column(ctx, "x numba1")
    fig = report.figure(ctx, {"cpu": "Test CPU", "usable_cores": "2 from CPU affinity",
                              "loadavg_start": 0.5, "loadavg_end": 1.25})
    ax1, ax2 = fig.axes
    lines = {ln.get_label(): ln for ln in ax1.get_lines()}
    checked = 0
    for wl in ("triad n=2^20", "mandelbrot 512^2 x200"):
        for ap in ("pool", "prange"):
            [label] = [k for k in lines if k.startswith(wl) and k.endswith(report.LABELS[ap])]
            xs, ys = list(lines[label].get_xdata()), list(lines[label].get_ydata())
            assert xs == [1, 2], label
            assert round(ys[1], 2) == x_numba1[(wl, ap)], label  # what the table prints
            rows = {r.approach: r for r in ctx.results if r.workload == wl}
            assert ys[1] == rows["numba-1t"].median / rows[ap].median
            [other] = [r for r in ctx.scaling_results if r.workload == wl and r.approach == ap]
            assert ys[0] == rows["numba-1t"].median / other.median
            checked += 1
    assert checked == 4
    assert x_numba1[("triad n=2^20", "pool")] == 1.14  # 1.2 ms / 1.05 ms
    # the grey line ends at the ceiling the text report states
    [limit] = [ln for k, ln in lines.items() if k.startswith("memory-speed limit")]
    assert list(limit.get_ydata()) == [1.0, 21.1 / 16.7]
    assert f"bandwidth ceiling on speedup {21.1 / 16.7:.2f}x" in report.stream_report(ctx)
    # panel (b): one bar per timed row, its height the row's median time
    bars = {(c.get_label(), int(p.get_x())): p.get_height()  # x: workload i + offset < 0.8
            for c in ax2.containers for p in c.patches}
    timed = list(dict.fromkeys(r.workload for r in ctx.results if r.times))
    want = {(report.LABELS[r.approach], timed.index(r.workload)): r.median
            for r in ctx.results if r.times}
    assert bars == want and len(bars) == 9
    # plain words on the axes, and a caption naming the run
    assert ax1.get_ylabel() == "times faster than one numba thread (higher is better)"
    assert ax2.get_ylabel().startswith("median seconds per call")
    [caption] = fig.texts
    text = " ".join(caption.get_text().split())
    assert ("2 workers, Test CPU, cores: 2 from CPU affinity, load average 0.5 at start and "
            "1.2 at end") in text
    assert "The grey line is how much faster w threads move memory than one" in text
    assert "the table's 'x numba1' figures" in text


def test_the_plot_without_scaled_workloads_says_what_is_missing(tmp_path):
    pytest.importorskip("matplotlib")
    ctx = _finished_run()
    ctx.results = [r for r in ctx.results if r.workload.startswith("total")]
    ctx.scaling_results = []
    report.plot(ctx, str(tmp_path / "x.png"))
    fig = report.figure(ctx)
    assert "no triad or mandelbrot rows" in fig.axes[0].texts[0].get_text()
    assert (tmp_path / "x.png").stat().st_size > 10_000


def test_the_bandwidth_line_reuses_the_runs_stream_figures(monkeypatch):
    from sharedcompute.bench import costs
    measured = []
    monkeypatch.setattr(costs, "stream", lambda n, w, reps: measured.append(w) or {"triad": 99.0})
    # numba.set_num_threads launches numba's threading layer in this process, after which the
    # engine (rightly) refuses fork pools: every later fork test of the suite would skip
    import numba
    monkeypatch.setattr(numba, "set_num_threads", lambda n: None)
    ctx = _finished_run(workers=2)
    costs.stream_scaling(ctx)
    gbs = ctx.scaling["stream_triad"]
    assert gbs[1] == 16.7 and gbs[2] == 21.1  # the STREAM line's 1-thread and 2-thread figures
    assert 1 not in measured and 2 not in measured and all(gbs[w] == 99.0 for w in measured)
    ctx = _finished_run(workers=1)
    ctx.pthreads = 1
    costs.stream_scaling(ctx)
    assert ctx.scaling["stream_triad"][1] == 16.7  # the line starts at 1.0 even so
