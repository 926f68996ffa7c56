"""Real notebooks, executed in a Jupyter kernel (ipykernel, driven by nbclient) running this
suite's own Python, under fork, spawn and forkserver (issue 24).

Every cell checks its results against NumPy (or plain Python) with ``assert``, so a wrong
answer fails the cell and nbclient raises CellExecutionError with the cell's traceback; the
last cell prints a marker the test looks for, so a notebook that stopped early cannot pass.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
import threading
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from conftest import START_METHODS  # noqa: E402
from sharedcompute.shared import list_segments  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
DONE = "NOTEBOOK-DONE"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernel spec for this Python (whatever kernels the machine has) and a folder for the
    notebook, which is the kernel's working directory (and so on its sys.path)."""
    spec = tmp_path / "jupyter" / "kernels" / "sc-python"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sharedcompute tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # numba's cell cache lives here
    work = tmp_path / "nb"
    work.mkdir()
    return work


def notebook(cells: list[str]):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    return nb


def client_for(nb, work, timeout: int = 240):
    return nbclient.NotebookClient(nb, timeout=timeout, kernel_name="sc-python",
                                   resources={"metadata": {"path": str(work)}})


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


# -- cell-defined code under every start method --------------------------------------------------
SETUP = """
    import importlib, os, time
    import numpy as np
    import sharedcompute as sc
    METHOD = {method!r}
    pool = sc.Pool(2, start_method=METHOD)
    x = np.linspace(-3.0, 5.0, 10_001)
"""

# Kernels of every kind defined in cells after the pool started, each against NumPy.
KERNELS = """
    OFFSET = 0.5  # a global the kernel reads: numba freezes it, so it is part of the content

    @sc.kernel
    def scale(y, x, s):
        for i in range(y.shape[0]):
            y[i] = s * x[i] + OFFSET

    def add(p, q):  # a combine function from a cell travels by value too
        return p + q

    @sc.kernel(combine=add)
    def total(x):
        t = 0.0
        for i in range(x.shape[0]):
            t += x[i]
        return t

    def row_sum(x):
        t = 0.0
        for i in range(x.shape[0]):
            t += x[i]
        return t

    @sc.kernel(totals=row_sum)
    def cumsum(out, x, carry):
        c = carry
        for i in range(x.shape[0]):
            c += x[i]
            out[i] = c

    @sc.kernel(depth=1, combine=np.maximum)
    def smooth(out, u):
        m = 0.0
        for i in range(1, u.shape[0] - 1):
            out[i - 1] = 0.5 * u[i] + 0.25 * (u[i - 1] + u[i + 1])
            m = max(m, abs(out[i - 1] - u[i]))
        return m

    @sc.kernel(jit=False)
    def clip(y, x):
        np.clip(x, -1.0, 1.0, out=y)

    a, y = pool.array(x), pool.zeros(x.shape)
    assert np.array_equal(np.asarray(pool.map(scale, y, a, 2.0)), 2.0 * x + 0.5)
    assert pool.reduce(total, a) == total(x)  # the direct call: the pool's combine tree
    assert np.isclose(pool.reduce(total, a), x.sum(), rtol=1e-12)
    assert np.allclose(np.asarray(pool.map(cumsum, y, a)), np.cumsum(x), rtol=1e-9, atol=1e-9)
    assert np.array_equal(np.asarray(pool.map(clip, y, a)), np.clip(x, -1, 1))
    u0 = np.zeros(2001); u0[1000] = 1.0
    u, w = pool.array(u0), pool.array(u0)
    last = np.asarray(pool.iterate(smooth, w, u, steps=40))
    ref = u0.copy()
    for _ in range(40):
        ref[1:-1] = 0.5 * ref[1:-1] + 0.25 * (ref[:-2] + ref[2:])
    assert np.array_equal(last, ref)
    print("kernels ok")
"""

# The same names redefined with other results: the pool must run the new code.
REDEFINE = """
    @sc.kernel
    def scale(y, x, s):
        for i in range(y.shape[0]):
            y[i] = s * x[i] - 1.0
    assert np.array_equal(np.asarray(pool.map(scale, y, a, 2.0)), 2.0 * x - 1.0)
    bound = pool.bind(scale, y, a, 3.0)
    assert np.array_equal(np.asarray(bound()), 3.0 * x - 1.0)

    @sc.kernel(combine=add)
    def total(x):
        t = 0.0
        for i in range(x.shape[0]):
            t += 2.0 * x[i]
        return t
    assert np.isclose(pool.reduce(total, a), 2.0 * x.sum(), rtol=1e-12)

    def task(v):
        return v + 1
    assert pool.submit(task, 1).result() == 2 and list(pool.imap(task, [1, 2])) == [2, 3]
    def task(v):
        return v * 10
    assert pool.submit(task, 1).result() == 10
    assert list(pool.imap_unordered(task, [1])) == [10] and pool.map(task, [2, 3]) == [20, 30]
    assert pool.map(lambda v: -v, [4]) == [-4]
    print("redefined ok")
"""

# A kernel module on disk, edited and reloaded: importlib.reload, in the live pool and a new
# one (the forkserver preloaded the old file into its server).
RELOAD = """
    SRC = '''
    import sharedcompute as sc
    C = {c}

    @sc.kernel
    def put(o):
        for i in range(o.shape[0]):
            o[i] = C

    def times(v):
        return v * C
    '''
    def write(name, c):
        path = name + ".py"
        with open(path, "w") as f:
            f.write(SRC.format(c=c))
        t = time.time() + 10 * c  # a later mtime than any before: reload and autoreload see it
        os.utime(path, (t, t))
        importlib.invalidate_caches()

    write("nbkmod", 1.0)
    import nbkmod
    o = pool.zeros(1000)
    assert np.asarray(pool.map(nbkmod.put, o)).sum() == 1000.0
    assert pool.submit(nbkmod.times, 2.0).result() == 2.0
    write("nbkmod", 3.0)
    importlib.reload(nbkmod)
    assert np.asarray(pool.map(nbkmod.put, o)).sum() == 3000.0
    assert pool.submit(nbkmod.times, 2.0).result() == 6.0
    with sc.Pool(2, start_method=METHOD) as fresh:
        o2 = fresh.zeros(1000)
        assert np.asarray(fresh.map(nbkmod.put, o2)).sum() == 3000.0
        assert fresh.submit(nbkmod.times, 2.0).result() == 6.0
        del o2
    print("reload ok")
"""

AUTORELOAD_1 = """
    %load_ext autoreload
    %autoreload 2
    write("nbkauto", 1.0)
    from nbkauto import put as auto_put, times as auto_times
    o3 = pool.zeros(100)
    assert np.asarray(pool.map(auto_put, o3)).sum() == 100.0
    assert pool.submit(auto_times, 2.0).result() == 2.0
"""

# %autoreload 2 looks at the files before each cell: the edit gets a cell of its own
EDIT = 'write("nbkauto", 4.0)'

AUTORELOAD_2 = """
    # reloaded before this cell: IPython 9 re-runs only the changed line (C = 4.0) and keeps
    # every kernel and function object, so identity by object or name would run C = 1.0
    import nbkauto
    for k in (auto_put, nbkauto.put):
        assert np.asarray(pool.map(k, o3)).sum() == 400.0, k
    bound_auto = pool.bind(nbkauto.put, o3)
    assert np.asarray(bound_auto()).sum() == 400.0
    for f in (auto_times, nbkauto.times):
        assert pool.submit(f, 2.0).result() == 8.0
    with sc.Pool(2, start_method=METHOD) as fresh:
        o4 = fresh.zeros(100)
        assert np.asarray(fresh.map(nbkauto.put, o4)).sum() == 400.0
        assert fresh.submit(nbkauto.times, 2.0).result() == 8.0
        del o4
    SRC = SRC.replace("o[i] = C", "o[i] = -C")  # now the kernel's body changes
"""

EDIT_BODY = 'write("nbkauto", 5.0)'

AUTORELOAD_3 = """
    assert np.asarray(pool.map(nbkauto.put, o3)).sum() == -500.0
    assert pool.submit(nbkauto.times, 2.0).result() == 10.0
    # a changed body is a new kernel object in the module; a bound call (like a name taken
    # with from-import) keeps the object it holds, whose globals it follows: the pool runs
    # exactly what a direct call of that object runs
    held = np.zeros(100)
    bound_auto.kernel(held)
    assert np.array_equal(np.asarray(bound_auto()), held) and held.sum() == 500.0
    %autoreload 0
    del bound_auto
    print("autoreload ok")
"""

PROGRESS = """
    pool.map(scale, y, a, 2.0, progress=True)
"""

FINISH = """
    del a, y, u, w, o, o3, bound
    pool.close()
    print({done!r})
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", START_METHODS)
def test_cell_defined_code_redefined_and_reloaded(method, kernel_env):
    cells = [SETUP.format(method=method), KERNELS, REDEFINE, RELOAD, AUTORELOAD_1, EDIT,
             AUTORELOAD_2, EDIT_BODY, AUTORELOAD_3, PROGRESS, FINISH.format(done=DONE)]
    nb = notebook(cells)
    client_for(nb, kernel_env).execute()
    assert "kernels ok" in text_of(nb.cells[1]) and "redefined ok" in text_of(nb.cells[2])
    assert "reload ok" in text_of(nb.cells[3]) and "autoreload ok" in text_of(nb.cells[8])
    # progress=True draws tqdm's notebook widget (ipywidgets is installed with the tests)
    kinds = {k for o in nb.cells[9].outputs for k in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in kinds, nb.cells[9].outputs
    assert DONE in text_of(nb.cells[-1])


# -- interrupting a cell, then shutting the kernel down with a pool open --------------------------
LIFE = [
    """
    import os, numpy as np, psutil, sharedcompute as sc
    pool = sc.Pool(2, start_method={method!r})

    @sc.kernel(jit=False)
    def slow(o):
        import time
        time.sleep(60)
        o[:] = 1.0

    @sc.kernel
    def ones(o):
        for i in range(o.shape[0]):
            o[i] = 1.0
    out = pool.zeros(4096)
    assert np.asarray(pool.map(ones, out)).sum() == 4096.0
    before = set(pool.pids)
    print("PID", os.getpid(), flush=True)
    """,
    """
    pool.map(slow, out)  # interrupted by the test
    """,
    """
    # a usable pool and no orphans of the interrupted call: every process below the kernel
    # (but the resource tracker and the forkserver) is one of the pool's workers now
    import multiprocessing.forkserver as mpfs
    out[:] = 0.0
    assert np.asarray(pool.map(ones, out)).sum() == 4096.0
    server = getattr(mpfs._forkserver, "_forkserver_pid", None)
    kids = {p.pid for p in psutil.Process().children(recursive=True)
            if p.pid != server and p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())}
    assert kids == set(pool.pids), (kids, pool.pids)
    assert not (before - set(pool.pids)) & kids
    print("WORKERS", " ".join(map(str, pool.pids)))
    print("SEGMENT", out.name, flush=True)
    """,
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", START_METHODS)
def test_interrupted_cell_then_shutdown_with_a_pool_open(method, kernel_env):
    psutil = pytest.importorskip("psutil")
    cells = [LIFE[0].format(method=method), LIFE[1], LIFE[2]]
    nb = notebook(cells)
    client = client_for(nb, kernel_env)
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        pid = int(text_of(nb.cells[0]).split("PID")[1].split()[0])
        timer = threading.Timer(4.0, os.kill, (pid, signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(nbclient.exceptions.CellExecutionError, match="KeyboardInterrupt"):
            client.execute_cell(nb.cells[1], 1)
        assert time.monotonic() - t0 < 30  # not the kernel's 60 s sleep
        client.execute_cell(nb.cells[2], 2)
        out = text_of(nb.cells[2])
        workers = [int(p) for p in out.split("WORKERS")[1].split("\n")[0].split()]
        segment = out.split("SEGMENT")[1].split()[0]
        assert segment in list_segments()
        t0 = time.monotonic()
    # leaving setup_kernel shuts the kernel down, the pool still open in it
    shutdown_s = time.monotonic() - t0
    assert shutdown_s < 20, f"shutting the kernel down took {shutdown_s:.1f} s"
    end = time.monotonic() + 15
    while time.monotonic() < end and (segment in list_segments()
                                      or any(psutil.pid_exists(p) for p in workers)):
        time.sleep(0.2)
    assert segment not in list_segments(), "the kernel's pool left its segment in /dev/shm"
    alive = [p for p in workers if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"workers outlived the kernel: {alive}"


# -- the gallery's notebooks, as the docs site offers them for download ---------------------------
@pytest.mark.timeout(600)
def test_gallery_notebooks_run_as_downloaded(kernel_env):
    """Each examples/*.py converted by sphinx-gallery (what "Download Jupyter notebook"
    gives) runs in a kernel at its default sizes and prints its RESULT line."""
    from sphinx_gallery.notebook import python_to_jupyter_cli
    names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py"))
    assert names
    for name in names:
        shutil.copy(os.path.join(EXAMPLES, name), kernel_env / name)
        python_to_jupyter_cli([str(kernel_env / name)],
                              sphinx_gallery_conf={"remove_config_comments": True})
        nb = nbformat.read(str(kernel_env / name.replace(".py", ".ipynb")), as_version=4)
        client_for(nb, kernel_env).execute()
        printed = "".join(text_of(c) for c in nb.cells if c.cell_type == "code")
        result = json.loads(printed.split("RESULT ")[-1].splitlines()[0])
        assert result, name
        if "matches_numpy" in result:
            assert result["matches_numpy"] is True
        if "max_error_vs_numpy" in result:
            assert result["max_error_vs_numpy"] == 0.0
