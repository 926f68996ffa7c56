"""The benchmark package's own parts, in process and without a pool (the whole command runs
in tests/test_cli.py): workload lookup from the registry, answer checks, recorded failures."""
import argparse
import ast
import os

import numpy as np
import pytest

from sharedcompute.bench import workloads
from sharedcompute.bench.session import Session, measure, verdict
from sharedcompute.kernels.registry import ENTRIES

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(workloads.__file__)))


def test_every_registry_entry_has_a_workload():
    for name, entry in ENTRIES.items():
        wl = workloads.workload_for(entry)
        assert wl.__name__ == "wl_" + entry.bench.get("workload", "generic"), name
    assert workloads.workload_for(ENTRIES["triad"]) is workloads.wl_triad


def test_an_unknown_workload_name_is_an_error():
    entry = argparse.Namespace(name="x", bench=dict(workload="no_such"))
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
        tree = ast.parse(open(os.path.join(PACKAGE, fname)).read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any("bench" in n for n in names), f"{fname} imports {names}"
