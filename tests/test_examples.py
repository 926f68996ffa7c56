"""The examples/ scripts run at small sizes and their results are checked."""
import json
import math
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *args):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                          capture_output=True, text=True, timeout=300, cwd="/tmp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_heat_equation_conserves_heat_and_matches_numpy():
    out = run_example("heat_equation.py", "--cells", "20001", "--steps", "200")
    assert out["matches_numpy"] is True
    assert out["heat_total"] == pytest.approx(100.0 * 2 * (20001 // 100), rel=1e-9)
    assert 0 < out["peak"] <= 100.0


def test_monte_carlo_is_accurate_and_identical_for_any_worker_count():
    one = run_example("monte_carlo_pi.py", "--streams", "24", "--samples", "20000",
                      "--workers", "1")
    two = run_example("monte_carlo_pi.py", "--streams", "24", "--samples", "20000",
                      "--workers", "2")
    assert one["estimate"] == two["estimate"]
    assert abs(one["estimate"] - math.pi) < 5 * one["expected_error"]


def test_image_blur_pipeline_returns_numpy_and_reduces_noise():
    out = run_example("image_blur_pipeline.py", "--size", "257", "--passes", "3")
    assert out["is_numpy"] is True
    assert out["max_error_vs_numpy"] == 0.0
    assert out["noise_after"] < out["noise_before"] / 3
