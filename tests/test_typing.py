"""``mypy --strict`` on a typed user script and on examples/: what a user's checker sees.

The package ships py.typed, so mypy reads an installed copy (``make test``) as PEP 561
says. An editable install maps sharedcompute.kernels with an import hook mypy cannot
follow; there mypy reads a mirror of the installed layout (symlinks to the same files).
A snippet that must fail proves mypy really sees the types (not Any everywhere).
"""
from __future__ import annotations

import importlib.util
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "typed_user_script.py"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

needs_mypy = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (the test extra has it on Python >= 3.11)")

# Each line ending in "# E: text" must be reported as an error containing text; no others.
NEGATIVE = '''\
from __future__ import annotations

import numpy as np
import numpy.typing as npt

import sharedcompute as sc
from sharedcompute import SharedArray

F64 = npt.NDArray[np.float64]


def add(p: float, q: float) -> float:
    return p + q


def describe(p: float) -> str:
    return f"{p:.3f}"


@sc.kernel(combine=add)
def total(x: F64) -> float:
    return float(x.sum())


@sc.kernel(combine=add, finalize=describe)
def total_text(x: F64) -> float:
    return float(x.sum())


@sc.kernel
def fill(y: F64) -> None:
    y[:] = 1.0


@sc.kernel(writes=("a", "b"))
def fill_two(a: F64, b: F64) -> None:
    a[:] = b[:] = 1.0


@sc.kernel(combine=add)  # E: expected "Callable[..., float]"
def returns_text(x: F64) -> str:
    return ""


@sc.kernel(refrence=None)  # E: Unexpected keyword argument "refrence"
def typo(y: F64) -> None:
    y[:] = 0.0


def use(pool: sc.Pool, x: SharedArray) -> None:
    s: str = pool.reduce(total, x)  # E: expression has type "float", variable has type "str"
    f: float = pool.reduce(total_text, x)  # E: expression has type "str", variable has type "float"
    n: int = pool.map(fill, x)  # E: expression has type "SharedArray", variable has type "int"
    one: SharedArray = pool.map(fill_two, x, x)  # E: expression has type "tuple[SharedArray, ...]"
    lengths: list[str] = pool.map(len, ["ab", "c"])  # E: expected "Callable[[str], str]"
    text: str = pool.submit(len, "ab").result()  # E: expression has type "int", variable has type "str"
    picked: SharedArray = x[[0, 1]]  # E: expression has type "ndarray[
    sc.Pool(backend=3)  # E: Argument "backend" to "Pool" has incompatible type "int"
'''


def _search_path(tmp: Path) -> dict[str, str]:
    """{} where mypy finds the package itself (installed, with py.typed); else MYPYPATH of
    a mirror with the installed layout (sharedcompute/kernels inside the package)."""
    import sharedcompute
    import sharedcompute.kernels
    pkg = Path(sharedcompute.__file__).resolve().parent
    kernels = Path(sharedcompute.kernels.__file__).resolve().parent
    sites = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if kernels == pkg / "kernels" and pkg.parent in sites:
        return {}
    mirror = tmp / "mirror" / "sharedcompute"
    mirror.mkdir(parents=True)
    for entry in pkg.iterdir():
        if entry.name not in ("__pycache__", "kernels"):
            (mirror / entry.name).symlink_to(entry)
    (mirror / "kernels").symlink_to(kernels)
    return {"MYPYPATH": str(mirror.parent)}


@pytest.fixture(scope="module")
def mypy(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("mypy")
    # The library's own modules are not held to --strict here (as for any installed package,
    # whose errors mypy does not report): only what a user's code sees of them.
    config = tmp / "mypy.ini"
    config.write_text("[mypy]\n[mypy-sharedcompute.*]\nignore_errors = True\n")
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    env.update(_search_path(tmp))

    def run(*files: Path) -> subprocess.CompletedProcess[str]:
        # cwd=tmp: the source tree's sharedcompute/ must not shadow what is installed
        return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--config-file",
                               str(config), "--cache-dir", str(tmp / "cache"),
                               "--no-color-output", *map(str, files)],
                              capture_output=True, text=True, timeout=500, cwd=tmp, env=env)
    return run, tmp


@needs_mypy
@pytest.mark.timeout(600)
def test_user_script_and_examples_pass_mypy_strict(mypy):
    run, _ = mypy
    assert EXAMPLES, "no examples found"
    proc = run(SCRIPT, *EXAMPLES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Success: no issues found in {1 + len(EXAMPLES)} source files" in proc.stdout


@needs_mypy
@pytest.mark.timeout(600)
def test_mypy_rejects_wrongly_typed_results(mypy):
    run, tmp = mypy
    snippet = tmp / "negative_typing.py"
    snippet.write_text(NEGATIVE)
    proc = run(snippet)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found: dict[int, list[str]] = {}
    for m in re.finditer(r"^[^\n:]*negative_typing\.py:(\d+): error: (.*)$", proc.stdout, re.M):
        found.setdefault(int(m.group(1)), []).append(m.group(2))
    expected = {i: line.split("# E: ", 1)[1] for i, line in
                enumerate(NEGATIVE.splitlines(), start=1) if "# E: " in line}
    assert len(expected) == 10
    for line, text in expected.items():
        assert any(text in message for message in found.get(line, [])), (
            f"line {line} should fail with {text!r}; mypy said:\n{proc.stdout}")
    # Nothing else fails, except the typo's knock-on: its decorator call is then untyped.
    typo_line = next(i for i, text in expected.items() if "refrence" in text)
    for line, messages in found.items():
        for message in messages:
            assert (line in expected and expected[line] in message) or (
                line == typo_line and 'Untyped decorator makes function "typo"' in message), (
                f"unexpected error at line {line}: {message}\n{proc.stdout}")


def test_typed_user_script_runs_and_its_types_hold():
    """The annotations mypy accepted are what the calls return (checked in the script)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "inline"], capture_output=True,
                          text=True, timeout=300, cwd="/tmp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "typed_user_script: ok" in proc.stdout
