"""Short errors when workers cannot start (issue 27): a script without its
``if __name__ == "__main__":`` guard, and a kernel module that fails to import in the workers
only, print the library's message and its fix in at most 25 lines of stderr, with no
resource-tracker noise, and leave /dev/shm clean; following the advice then works.

Each case runs a script file in a fresh interpreter (the forkserver is process-wide, and a
script's main module is what the workers import again)."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import pytest

from sharedcompute.shared import creator_pid, list_segments

METHODS = [m for m in ("spawn", "forkserver") if m in mp.get_all_start_methods()]
MAX_LINES = 25
# What the resource tracker prints when it is handed a name it does not hold, or finds
# blocks left at exit; and a traceback through the engine's own files.
NOISE = ("KeyError", "resource_tracker", "leaked shared_memory", "UserWarning")

# The top level makes an array before its pool: every worker's import of the script makes
# one too, before it stops at Pool(); it must not be left to the resource tracker, which
# would report it as leaked when the parent exits.
UNGUARDED = """
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.reductions import total

ones = sc.SharedArray.from_array(np.ones(10))
with sc.Pool(2, start_method={method!r}) as pool:
    x = pool.array(np.arange(10.0))
    print("RESULT", float(pool.reduce(total, x)), float(pool.reduce(total, ones)))
"""

GUARDED = """
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.reductions import total

if __name__ == "__main__":
    ones = sc.SharedArray.from_array(np.ones(10))
    with sc.Pool(2, start_method={method!r}) as pool:
        x = pool.array(np.arange(10.0))
        print("RESULT", float(pool.reduce(total, x)), float(pool.reduce(total, ones)))
"""


def run(path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a script; return it and the blocks its process left in /dev/shm."""
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    full.update(env or {})
    proc = subprocess.Popen([sys.executable, str(path)], cwd=path.parent, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=240)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, [n for n in list_segments() if creator_pid(n) == proc.pid]


def assert_short(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode != 0, err
    lines = err.splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines of stderr:\n{err}"
    for needle in needles:
        assert needle in err, f"{needle!r} missing from:\n{err}"
    for noise in NOISE:
        assert noise not in err, f"{noise!r} in:\n{err}"
    assert err.count("Traceback (most recent call last)") <= 2, err  # ours (and a remote one)
    assert os.sep + "sharedcompute" + os.sep not in err, f"engine frames in:\n{err}"


@pytest.mark.parametrize("method", METHODS)
def test_a_missing_guard_is_a_short_message_with_its_fix(tmp_path, method):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.format(method=method))
    proc, left = run(script)
    assert_short(proc, "could not start", 'if __name__ == "__main__":',
                 "restarting the workers cannot help", f"start_method={method!r}",
                 str(script))
    assert "RESULT" not in proc.stdout
    assert left == [], f"blocks left in /dev/shm: {left}"
    # the advice, followed
    script.write_text(GUARDED.format(method=method))
    proc, left = run(script)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "RESULT 45.0 10.0" in proc.stdout and left == []


@pytest.mark.parametrize("method", METHODS)
def test_a_missing_guard_is_named_for_tasks_too_and_never_restarted(tmp_path, method):
    """A task's worker that cannot start is the guard error too (not "died while running
    task"), and every later call says the same at once (no new workers are started)."""
    script = tmp_path / "tasks.py"
    script.write_text(textwrap.dedent(f"""
        import os
        import sharedcompute as sc

        with sc.Pool(2, start_method={method!r}) as pool:
            for _ in range(2):
                try:
                    pool.submit(os.getpid).result(timeout=120)
                except sc.WorkerCrashedError as exc:
                    print("ERROR", exc)
            try:
                pool.map(__import__("sharedcompute.kernels.elementwise",
                                    fromlist=["triad"]).triad, pool.zeros(4), pool.zeros(4),
                         pool.zeros(4), 1.0)
            except sc.WorkerCrashedError as exc:
                print("ERROR", exc)
    """))
    proc, left = run(script)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 3 and all('if __name__ == "__main__":' in e for e in errors), (
        proc.stdout + proc.stderr)
    assert proc.stderr == "" and left == [], proc.stderr


BROKEN = """
import os
import sharedcompute as sc

if os.environ.get("LICENCE_PID") != str(os.getpid()):  # holds only in the parent
    raise RuntimeError("no licence server here")

@sc.kernel
def fill(a, v):
    for i in range(a.shape[0]):
        a[i] = v
"""

# The kernel module is imported once the pool runs: its workers import it when the call
# arrives (under forkserver too: the server was forked before the import).
LATE_IMPORT = """
import os
import numpy as np
import sharedcompute as sc

if __name__ == "__main__":
    os.environ.setdefault("LICENCE_PID", str(os.getpid()))
    with sc.Pool(2, start_method={method!r}) as pool:
        import brokenkernels
        a = pool.zeros(100)
        pool.map(brokenkernels.fill, a, 3.0)
        print("RESULT", float(np.asarray(a).sum()))
"""


@pytest.mark.parametrize("method", METHODS)
def test_a_kernel_module_failing_in_the_workers_is_named_short(tmp_path, method):
    (tmp_path / "brokenkernels.py").write_text(BROKEN)
    script = tmp_path / "late.py"
    script.write_text(LATE_IMPORT.format(method=method))
    proc, left = run(script)
    assert_short(proc, "could not import module 'brokenkernels'", "no licence server here",
                 "brokenkernels.py, line 6", "RuntimeError", "late.py")
    assert left == [], f"blocks left in /dev/shm: {left}"
    # the fix: the module imports in the workers too
    (tmp_path / "brokenkernels.py").write_text(BROKEN.replace("raise RuntimeError", "print"))
    proc, left = run(script)
    assert proc.returncode == 0 and "RESULT 300.0" in proc.stdout and left == [], proc.stderr


# The main module imports a module that fails in the workers only: under forkserver the
# worker's import of the main module fails (in a forked server, any module the parent did
# not import before its first pool; in a spawned one, every module).
MAIN_IMPORT = """
import multiprocessing as mp
import os
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad

os.environ.setdefault("LICENCE_PID", str(os.getpid()))
ones = sc.SharedArray.from_array(np.ones(4))  # made by each worker too, before it fails
if mp.current_process().name != "MainProcess":
    import brokenkernels  # noqa: F401 - the workers' import of this script only

if __name__ == "__main__":
    with sc.Pool(2, start_method="forkserver") as pool:
        a = pool.zeros(100)
        for _ in range(2):
            try:
                pool.map(triad, a, a, a, 1.0)
            except sc.WorkerCrashedError as exc:
                print("ERROR", exc)
        print("RESTARTS", pool.restarts)
        pool.map(triad, a, a, a, 1.0)
"""


@pytest.mark.skipif("forkserver" not in METHODS, reason="no forkserver here")
@pytest.mark.parametrize("server", ["forked", "spawned"])
def test_a_main_module_failing_in_forkserver_workers_is_named_short(tmp_path, server):
    (tmp_path / "brokenkernels.py").write_text(BROKEN)
    script = tmp_path / "main_import.py"
    script.write_text(MAIN_IMPORT)
    env = {"SHAREDCOMPUTE_PRELOAD": "spawn"} if server == "spawned" else {}
    proc, left = run(script, env=env)
    assert_short(proc, "could not import the main module", "module 'brokenkernels'",
                 "no licence server here", "brokenkernels.py, line 6", "could not start",
                 "restarting the workers cannot help")
    assert proc.stdout.count("ERROR") == 2, proc.stdout
    assert left == [], f"blocks left in /dev/shm: {left}"
