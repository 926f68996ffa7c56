"""Every ```python block of README.md runs, as written, so the README cannot drift.

Each block is written to its own .py file in a temporary folder (outside the repository, so
the installed package is what it imports) and run with this interpreter in a subprocess:
blocks are scripts, and under spawn/forkserver the workers re-import the script, which is why
README blocks that start a pool guard it with ``if __name__ == "__main__":``.

HTML comments right above a block (only blank lines between) control it:

- ``<!-- readme-test: skip (reason) -->``: not run; the test is reported as skipped with the
  reason (a block that needs a real Dask cluster, a GPU or a long run). Keep these rare.
- ``<!-- readme-test: before CODE -->``: ``CODE`` runs first, in a separate process in the same
  folder, with ``numpy`` imported as ``np`` (e.g. to create the ``.npy`` file a block opens).
  It is not part of the block's file, so spawned workers do not run it again.

Any other ``readme-test:`` comment is an error, so a misspelled marker cannot hide a block.
"""
import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")


def python_blocks(path=README):
    """[(line, code, markers)] for every ```python (or ```py) fenced block of the file."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in ("python", "py", "python3"):
            continue
        markers, j = [], start - 1
        while j >= 0 and (not lines[j].strip() or MARKER.match(lines[j].strip())):
            mm = MARKER.match(lines[j].strip())
            if mm:
                markers.insert(0, mm.group(1))
            j -= 1
        blocks.append((start + 1, "\n".join(body) + "\n", markers))
    return blocks


BLOCKS = python_blocks()


def test_readme_has_python_blocks_and_few_skips():
    assert len(BLOCKS) >= 3, "README.md lost its Python examples?"
    skipped = [b for b in BLOCKS if any(m.startswith("skip") for m in b[2])]
    assert len(skipped) <= len(BLOCKS) // 2, "most README blocks are skipped"


@pytest.mark.parametrize("line,code,markers", BLOCKS, ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_readme_block_runs(line, code, markers, tmp_path):
    before = []
    for marker in markers:
        if marker.startswith("skip"):
            reason = marker[len("skip"):].strip().strip("()").strip()
            assert reason, f"README.md:{line}: a skip marker needs a reason"
            pytest.skip(f"README.md:{line}: {reason}")
        elif marker.startswith("before "):
            before.append(marker[len("before "):])
        else:
            pytest.fail(f"README.md:{line}: unknown marker <!-- readme-test: {marker} -->")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    for setup in before:
        proc = subprocess.run([sys.executable, "-c", "import numpy as np\n" + setup],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"README.md:{line}: 'before' code failed:\n{proc.stderr}"
    script = tmp_path / f"readme_block_line{line}.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"README.md:{line}: the block failed (exit {proc.returncode}):\n{code}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
