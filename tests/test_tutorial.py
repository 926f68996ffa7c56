"""The user guide's tutorial (docs/guide/tutorial.md, code in examples/tutorial.py) runs as a
script and, exactly as the page shows it, as a notebook; each step is checked against NumPy
(the file's own asserts, and here)."""
from __future__ import annotations

import json
import os
import re
import textwrap

import numpy as np
import pytest

from test_examples import run_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "guide", "tutorial.md")
DONE = "TUTORIAL-DONE"


def expected_sum(n: int) -> float:
    return float(np.sum(2.0 * np.random.default_rng(0).random(n) + 1.0))


def test_tutorial_script_runs_from_another_folder_and_matches_numpy():
    out = run_example("tutorial.py", "--n", "200000", "--grid", "40", "--workers", "2")
    assert out["verify_ok"] is True and out["matches_numpy"] is True and out["is_numpy"]
    assert out["sum"] == pytest.approx(expected_sum(200_000), rel=1e-12)
    assert out["residual"] <= 1e-5 and out["sweeps"] > 0 and out["sweeps"] % 10 == 0


def page_cells() -> list[str]:
    """The code the tutorial page shows, in order: its ```python blocks and its
    literalinclude pieces of examples/tutorial.py (start-after/end-before/dedent)."""
    text = open(PAGE, encoding="utf-8").read()
    cells = []
    for m in re.finditer(r"```(python|\{literalinclude\} (\S+))\n(.*?)```", text, re.S):
        if m.group(1) == "python":
            cells.append(m.group(3))
            continue
        opts = dict(re.findall(r':([\w-]+): ?"?([^"\n]*)"?', m.group(3)))
        src = open(os.path.normpath(os.path.join(os.path.dirname(PAGE), m.group(2))),
                   encoding="utf-8").read()
        piece = src.split(opts["start-after"], 1)[1].split(opts["end-before"], 1)[0]
        piece = piece.split("\n", 1)[1]            # the marker's own line ends first
        cells.append(textwrap.dedent(piece) if "dedent" in opts else piece)
    return cells


def test_tutorial_page_pieces_are_the_files_steps():
    cells = page_cells()
    assert len(cells) == 10, [c[:40] for c in cells]
    assert "import sharedcompute as sc" in cells[0] and "def scale_add(" in cells[1]
    assert "sc.Pool()" in cells[2]
    assert "pool.iterate(" in "".join(cells) and cells[-1].startswith("pool.close()")
    for cell in cells:
        compile(cell, "<cell>", "exec")            # dedented correctly: valid at top level


@pytest.mark.timeout(600)
def test_tutorial_page_runs_as_a_notebook(kernel_env):
    """Each code block of the page is a cell, run in a Jupyter kernel; a last cell checks the
    results against NumPy and that the pool's blocks are gone after pool.close()."""
    from test_notebooks import client_for, nbformat, text_of
    cells = page_cells() + [f"""
        from sharedcompute.shared import creator_pid, list_segments
        assert type(result) is np.ndarray and type(solution) is np.ndarray
        assert np.allclose(result, 2.0 * x_np + 1.0)
        assert np.allclose(solution, ref, rtol=0, atol=1e-12) and res.residual <= 1e-5
        assert report.ok
        assert not [s for s in list_segments() if creator_pid(s) == os.getpid()]
        print("RESULT " + json.dumps(dict(sum=float(s), n=n)))
        print({DONE!r})
    """]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    nb.cells.insert(0, nbformat.v4.new_code_cell("import json, os"))
    client_for(nb, kernel_env).execute()
    printed = "".join(text_of(c) for c in nb.cells)
    assert DONE in printed
    result = json.loads(printed.split("RESULT ")[-1].splitlines()[0])
    assert result["sum"] == pytest.approx(expected_sum(result["n"]), rel=1e-12)
    assert "verify scale_add" in printed and ": OK" in printed


from test_notebooks import kernel_env  # noqa: E402,F401  (the fixture: a kernel spec)
