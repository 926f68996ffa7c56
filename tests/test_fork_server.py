"""A quick first pool (issue 27): the forkserver forked from a parent where that is safe
(sharedcompute/_fork_server.py), spawned and preloaded where it is not.

Scripts run in fresh interpreters: the forkserver is process-wide, and this test process
(pytest's faulthandler watchdog is a thread) would spawn its server anyway."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import pytest

from sharedcompute import _fork_server

pytestmark = pytest.mark.skipif(
    "forkserver" not in mp.get_all_start_methods() or not sys.platform.startswith("linux"),
    reason="the server is forked on Linux only")

PRELUDE = '''
import json, os, signal, sys, threading, time
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad
import numba

@numba.njit(parallel=True)
def openmp(n):  # called in the parent: launches numba's threading layer there
    s = 0.0
    for i in numba.prange(n):
        s += i
    return s

def probe():
    """A worker's view: who forked it, what it inherited, what its main module is."""
    from sharedcompute import _preload
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    main = sys.modules["__main__"]
    return dict(parent=os.getppid(), report=_preload.REPORT, fds=fds,
                main_name=main.__name__, main_file=getattr(main, "__file__", None),
                sigterm_default=signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                marker=getattr(main, "MARKER", None))

def run_pool():
    with sc.Pool(2, start_method="forkserver") as pool:
        first = pool.submit(probe).result(timeout=120)
        a = pool.zeros(1000)
        pool.map(triad, a, pool.array(np.ones(1000)), a, 2.0)
        return dict(first=first, preload=pool._executor.preload,
                    ok=float(np.asarray(a).sum()) == 1000.0)
'''


def run_script(tmp_path, body: str, env: dict | None = None) -> dict:
    script = tmp_path / "run.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    full.update(env or {})
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=full,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == "", out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_fresh_script_forks_its_server_and_it_keeps_nothing_of_the_parent(tmp_path):
    """The server is the parent forked: numba's target set up there, the workers its
    children; it keeps no file of the parent open (a pipe's write end: the reader sees EOF
    once the parent closes it), no signal handler of the parent, and the workers import the
    main module again, as a spawned server's workers do."""
    got = run_script(tmp_path, """
    MARKER = "imported"  # top level: also set by a worker's own import of this script

    if __name__ == "__main__":
        MARKER = "the parent's"
        r, w = os.pipe()
        kept = open(os.path.join(os.path.dirname(__file__), "kept.txt"), "w")
        signal.signal(signal.SIGTERM, lambda *_: None)
        got = run_pool()
        os.close(w)
        import select
        got["eof"] = bool(select.select([r], [], [], 10)[0]) and os.read(r, 1) == b""
        from multiprocessing import forkserver
        got["server"] = forkserver._forkserver._forkserver_pid
        print(json.dumps(got))
    """)
    first = got["first"]
    assert got["preload"]["state"] == "forked" and got["preload"]["not_forked"] == []
    assert got["ok"]
    assert first["parent"] == got["server"] == first["report"]["pid"]
    assert first["report"]["forked"] and "numba target" in first["report"]["steps"]
    assert not first["report"].get("errors")
    assert got["eof"], "the forked server holds the parent's pipe open"
    assert not [f for f in first["fds"] if f.endswith("kept.txt")], first["fds"]
    assert first["sigterm_default"]
    assert first["main_name"] == "__mp_main__" and first["main_file"].endswith("run.py")
    assert first["marker"] == "imported"  # its own import, not the parent's __main__


SETUPS = {
    "a thread": ("threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
                 "Python threads"),
    "memory": ("big = np.ones(48 << 20)  # 384 MiB", "MiB of private memory"),
    "a shared mapping": ("from multiprocessing import shared_memory\n"
                         "        shm = shared_memory.SharedMemory(create=True, size=4096)",
                         "shared mappings"),
    "numba's threads": ("openmp(100)", "numba's threading layer"),
    "the setting": ("", "SHAREDCOMPUTE_PRELOAD=spawn"),
}


@pytest.mark.parametrize("case", sorted(SETUPS))
def test_the_server_is_spawned_where_forking_is_unsafe(tmp_path, case):
    setup, reason = SETUPS[case]
    env = {"SHAREDCOMPUTE_PRELOAD": "spawn"} if case == "the setting" else {}
    got = run_script(tmp_path, f"""
    if __name__ == "__main__":
        {setup}
        got = run_pool()
        if "shm" in globals():
            shm.close(); shm.unlink()
        print(json.dumps(got))
    """, env=env)
    assert got["preload"]["state"] == "preloaded" and got["ok"]
    assert any(reason in why for why in got["preload"]["not_forked"]), got["preload"]
    assert got["first"]["parent"] == got["first"]["report"]["pid"]  # the spawned server
    assert "forked" not in got["first"]["report"]


def test_later_pools_start_from_the_clean_server_after_threads_and_openmp(tmp_path):
    """Once forked, the server stays as it was: a pool made after the parent started threads
    and numba's OpenMP layer (where start_method='fork' is refused) starts from it."""
    got = run_script(tmp_path, """
    if __name__ == "__main__":
        first = run_pool()
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        openmp(100)
        try:
            sc.Pool(2, start_method="fork").close()
            fork = "allowed"
        except sc.InputError:
            fork = "refused"
        later = run_pool()
        print(json.dumps(dict(first=first, later=later, fork=fork)))
    """)
    assert got["first"]["preload"]["state"] == "forked"
    assert got["later"]["preload"]["state"] == "running" and got["later"]["ok"]
    assert got["later"]["first"]["parent"] == got["first"]["first"]["parent"]
    assert got["fork"] == "refused"


def test_a_pool_made_while_a_module_is_imported_spawns_the_server(tmp_path, monkeypatch):
    """Forking then would leave the server a half-made module and its import lock."""
    (tmp_path / "importing_probe.py").write_text(
        "from sharedcompute import _fork_server\nBLOCKERS = _fork_server.blockers()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importing_probe
    assert any("importing importing_probe" in b for b in importing_probe.BLOCKERS)
    assert not any("importing" in b for b in _fork_server.blockers())


@pytest.mark.parametrize("server", ["forked", "spawned"])
def test_workers_of_a_python_c_parent_have_a_main_module_alias(server):
    """No main module to import again (``python -c``, a notebook, sphinx-gallery's examples):
    the workers keep the server's ``__main__``, aliased as ``__mp_main__`` as importing
    multiprocessing does in a new interpreter; numba's cache of a kernel defined in a
    worker's ``__main__`` imports that name (a forked server that dropped it failed there)."""
    code = textwrap.dedent("""
        import json, sys
        import sharedcompute as sc

        def probe():
            import sys
            return "__mp_main__" in sys.modules, sys.modules["__main__"].__name__

        with sc.Pool(2, start_method="forkserver") as pool:
            print(json.dumps([pool._executor.preload["state"], pool.submit(probe).result()]))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    if server == "spawned":
        env["SHAREDCOMPUTE_PRELOAD"] = "spawn"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=240, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.returncode == 0, out.stderr
    state, (alias, name) = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == ("forked" if server == "forked" else "preloaded")
    assert alias and name == "__main__"
