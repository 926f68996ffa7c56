"""benchmarks/time_steps (issue #26): every workload's variants, at the --small sizes,
match the NumPy version (bitwise where the arithmetic is the same, else the tolerance each
workload states). No timing is asserted. The numba variants are checked by the runner
itself (and here for one workload): with a cold numba cache their parallel compiles take
most of a minute.

The runner starts numba's parallel threads, so it runs in a subprocess (a test process
that launched them could no longer fork: see conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
RUNNER = os.path.join(BENCHMARKS, "time_steps", "run.py")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

from time_steps import run  # noqa: E402
from time_steps.common import body_lines  # noqa: E402


def runner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUNNER, "--small", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_every_workload_validates_at_small_size():
    proc = runner("--validate-only", "--no-numba")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in run.WORKLOADS:  # every workload ran: its header and its sharedcompute rows
        assert f"== {name} " in proc.stdout
        mod = run.load(name)
        for label, (kind, _) in mod.VARIANTS.items():
            if kind.startswith("numba"):
                continue  # left out here (their prange compiles take most of a cold run)
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"  {label} "))
            assert " ok " in line, line
    assert "FAIL" not in proc.stdout


def test_line_counts_and_variants_are_declared():
    for name in run.WORKLOADS:
        mod = run.load(name)
        code = getattr(mod, "CODE_MODULE", mod)
        assert body_lines(code, mod.SC_CODE) > 0 and body_lines(code, mod.NUMBA_CODE) > 0
        assert set(mod.VARIANTS) >= set(mod.CHECK)
        kinds = [k for k, _ in mod.VARIANTS.values()]
        assert kinds.count("numpy") == 1 and "sc" in kinds and "numba-1t" in kinds
        assert mod.OUTPUTS and set(mod.SIZES) == {"default", "small"}


def test_runner_times_a_workload():
    proc = runner("--only", "floyd", "--repeats", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x numba-par" in proc.stdout and "sc map per k" in proc.stdout
