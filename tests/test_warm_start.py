"""A warm start (issue 15): the forkserver preloaded with NumPy, numba (its CPU target set
up), sharedcompute and the parent's kernel modules (sharedcompute/_preload.py), and
pool.warmup compiling kernels in every worker before the first call.

The forkserver is process-wide and this test process may have one running already, so the
preload tests run fresh interpreters on small scripts."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS
from sharedcompute.kernels.elementwise import triad
from sharedcompute.kernels.reductions import total
from sharedcompute.kernels.stencils import heat1d

HAS_FORKSERVER = "forkserver" in mp.get_all_start_methods()
needs_forkserver = pytest.mark.skipif(not HAS_FORKSERVER, reason="no forkserver here")
INSTALLED = os.path.dirname(os.path.realpath(sc.__file__))

PROBE = '''
import json, os, sys
import numpy as np
import sharedcompute as sc
from sharedcompute.kernels.elementwise import triad

def probe():
    """What a worker holds before it ran any kernel (submit runs this as its first task)."""
    import sharedcompute
    pre = sys.modules.get("sharedcompute._preload")
    report = getattr(pre, "REPORT", {}) if pre is not None else {}
    from numba.core.registry import cpu_target
    ctx = cpu_target.__dict__.get("_toplevel_target_context")  # made lazily (cached_property)
    return dict(numba="numba" in sys.modules,
                # refresh() installs the implementation registries: ~0.3-1 s on first use
                target_ready=bool(getattr(ctx, "_registries", None)),
                report_pid=report.get("pid"), parent=os.getppid(),
                errors=report.get("errors", {}), steps=sorted(report.get("steps", {})),
                package=os.path.dirname(os.path.realpath(sharedcompute.__file__)))
'''


def run_script(tmp_path, body: str, cwd=None, env=None) -> dict:
    """Run ``body`` (after PROBE) as a script file; it prints one JSON line last."""
    script = tmp_path / "script" / "run.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(PROBE + textwrap.dedent(body))
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, str(script)], cwd=cwd or tmp_path, env=full_env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


POOL_PROBE = '''
if __name__ == "__main__":
    with sc.Pool(2, start_method="forkserver") as pool:
        first = pool.submit(probe).result()
        a = pool.zeros(1000); pool.map(triad, a, a, a, 2.0)
        print(json.dumps(dict(first=first, preload=pool._executor.preload)))
'''


SPAWNED = {"SHAREDCOMPUTE_PRELOAD": "spawn"}  # the server spawned, as before issue 27
SERVERS = pytest.mark.parametrize("server", ["forked", "spawned"])


def server_env(server: str) -> dict:
    """The environment for a script whose forkserver is forked (issue 27's default, from a
    fresh script's single-threaded parent: _fork_server.py) or spawned and preloaded."""
    return SPAWNED if server == "spawned" else {}


@needs_forkserver
@SERVERS
def test_forkserver_workers_inherit_numba_set_up_in_the_server(tmp_path, server):
    got = run_script(tmp_path, POOL_PROBE, env=server_env(server))
    first = got["first"]
    assert got["preload"]["state"] == ("forked" if server == "forked" else "preloaded")
    assert "sharedcompute.kernels.elementwise" in got["preload"]["modules"]
    # the worker's parent is the server, which ran the preload; numba's target came with it
    assert first["report_pid"] == first["parent"]
    assert first["numba"] and first["target_ready"]
    steps = {"numba target"} if server == "forked" else {
        "numba", "numba target", "import sharedcompute.kernels.elementwise"}
    assert steps <= set(first["steps"]) and not first["errors"]
    assert first["package"] == INSTALLED


@needs_forkserver
def test_preload_off_gives_the_stdlib_server(tmp_path):
    """The control: without the preload the first task finds numba's target not set up (so
    the test above can fail)."""
    got = run_script(tmp_path, POOL_PROBE, env={"SHAREDCOMPUTE_PRELOAD": "0"})
    assert got["preload"]["state"] == "off"
    assert got["first"]["report_pid"] is None and not got["first"]["target_ready"]


BROKEN = '''
import os
import sharedcompute as sc

if os.environ.get("BROKEN_OK_PID") != str(os.getpid()):  # only the parent imports it
    raise ValueError("this module refuses to be imported here")

@sc.kernel
def fill(a, v):
    for i in range(a.shape[0]):
        a[i] = v
'''


@needs_forkserver
@SERVERS
def test_a_broken_kernel_module_does_not_break_the_pool(tmp_path, server):
    """A kernel module that raises (not ImportError, which is all CPython's preload loop
    catches) in the server: the server lives, other kernels run, and the broken one fails
    in the workers as it always did, with a KernelError saying why. A server forked from
    the parent has the module as the parent imported it: the kernel runs."""
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "brokenkernels.py").write_text(BROKEN)
    got = run_script(tmp_path, env=server_env(server), body='''
    if __name__ == "__main__":
        os.environ["BROKEN_OK_PID"] = str(os.getpid())
        import brokenkernels
        with sc.Pool(2, start_method="forkserver") as pool:
            first = pool.submit(probe).result()
            a = pool.zeros(1000)
            pool.map(triad, a, pool.array(np.ones(1000)), a, 2.0)
            try:
                pool.map(brokenkernels.fill, a, 3.0)
                broken = "no error"
            except sc.KernelError as exc:
                broken = str(exc)
            ok = float(pool.reduce(__import__("sharedcompute.kernels.reductions",
                                              fromlist=["total"]).total, a))
            print(json.dumps(dict(first=first, broken=broken, ok=ok,
                                  preload=pool._executor.preload)))
    ''')
    assert "brokenkernels" in got["preload"]["modules"]
    assert got["first"]["target_ready"]  # the steps after the broken module still ran
    if server == "forked":
        assert got["broken"] == "no error" and not got["first"]["errors"]
        assert got["ok"] == 3000.0  # fill ran
        return
    assert got["ok"] == 1000.0
    assert "refuses to be imported" in got["first"]["errors"]["import brokenkernels"]
    assert "refuses to be imported" in got["broken"]
    assert "could not import module 'brokenkernels'" in got["broken"]


FAKE = '''
import os
open(os.environ["FAKE_MARK"], "a").write(str(os.getpid()) + "\\n")
'''


@needs_forkserver
@SERVERS
def test_the_preload_never_imports_a_checkout_copy(tmp_path, server):
    """A sharedcompute folder in the current directory (a checkout) that the parent does not
    use: CPython's server puts '' first on sys.path and would import it; ours must not (a
    forked server imports nothing: it has the parent's)."""
    checkout = tmp_path / "checkout"
    (checkout / "sharedcompute").mkdir(parents=True)
    (checkout / "sharedcompute" / "__init__.py").write_text(FAKE)
    mark = tmp_path / "imported"
    env = {"FAKE_MARK": str(mark)}
    # the premise: the stdlib's preload of sharedcompute from this folder imports the copy
    subprocess.run([sys.executable, "-c", textwrap.dedent('''
        import multiprocessing as mp
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["sharedcompute"])
        p = ctx.Process(target=print, args=("",)); p.start(); p.join()
        ''')], cwd=tmp_path / "checkout", env={**os.environ, **env}, check=True, timeout=120)
    assert mark.exists(), "the premise of this test does not hold on this Python"
    mark.unlink()
    got = run_script(tmp_path, POOL_PROBE, cwd=checkout, env={**env, **server_env(server)})
    assert not mark.exists(), f"the checkout copy was imported by {mark.read_text()}"
    assert got["preload"]["state"] == ("forked" if server == "forked" else "shadowed")
    assert got["first"]["package"] == INSTALLED


@needs_forkserver
def test_a_stray_sys_path_entry_is_not_preloaded(tmp_path):
    """A checkout put first on sys.path after the parent imported the installed package
    (the server searches the parent's sys.path on CPython with gh-117378's fix; on older
    ones this checks the detection and what is left out of the preload list)."""
    checkout = tmp_path / "checkout"
    (checkout / "sharedcompute").mkdir(parents=True)
    (checkout / "sharedcompute" / "__init__.py").write_text(FAKE)
    mark = tmp_path / "imported"
    got = run_script(tmp_path, f"""
    import multiprocessing as mp
    if __name__ == "__main__":
        from sharedcompute import _preload
        sys.path.insert(0, {str(checkout)!r})
        shadow = _preload._shadowed()
        started = _preload.start_forkserver(mp.get_context("forkserver"))
        sys.path.pop(0)  # workers get the parent's sys.path (as under spawn): not our test
        with sc.Pool(2, start_method="forkserver") as pool:
            first = pool.submit(probe).result()
            print(json.dumps(dict(first=first, shadow=shadow, started=started,
                                  preload=pool._executor.preload)))
    """, env={"FAKE_MARK": str(mark), **SPAWNED})  # a forked server searches no sys.path
    assert got["shadow"] == str(checkout / "sharedcompute")
    assert got["started"]["state"] == "shadowed"
    assert got["started"]["preload"] == ["numpy", "numba"]  # no __main__, nothing of ours
    assert got["preload"]["state"] == "running"
    assert not mark.exists()
    assert got["first"]["package"] == INSTALLED


@needs_forkserver
@SERVERS
def test_a_running_forkserver_is_reused_and_the_users_list_kept(tmp_path, server):
    """The forkserver is process-wide: one already running (here the user's) is used as it
    is; and a preload list the user set survives our start of the server (a forked server
    imports the user's modules too, as CPython's would)."""
    got = run_script(tmp_path, env=server_env(server), body="""
    import multiprocessing as mp
    from multiprocessing import forkserver
    if __name__ == "__main__":
        ctx = mp.get_context("forkserver")
        if sys.argv[1:] == ["running"]:
            p = ctx.Process(target=os.getpid); p.start(); p.join()
        else:
            ctx.set_forkserver_preload(["json"])
        with sc.Pool(2, start_method="forkserver") as pool:
            first = pool.submit(probe).result()
            a = pool.zeros(100); pool.map(triad, a, a, a, 2.0)
            print(json.dumps(dict(first=first, preload=pool._executor.preload,
                                  theirs=forkserver._forkserver._preload_modules)))
    """)
    assert got["preload"]["preload"] == (["json"] if server == "forked"
                                         else ["json", "sharedcompute._preload"])
    assert got["theirs"] == ["json"] and got["first"]["target_ready"]
    if server == "forked":
        assert "import json" in got["first"]["steps"]
    script = tmp_path / "script" / "run.py"
    out = subprocess.run([sys.executable, str(script), "running"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["preload"]["state"] == "running" and got["first"]["report_pid"] is None


def test_the_server_unloads_a_wrong_copy(monkeypatch):
    """_boot's second check, in process: a config naming another package folder unloads
    sharedcompute from sys.modules instead of preloading it."""
    from sharedcompute import _preload
    saved = dict(sys.modules)
    config = dict(package="/somewhere/else/sharedcompute", sys_path=list(sys.path),
                  modules={}, parent=os.getppid())
    monkeypatch.setenv(_preload.ENV, json.dumps(config))
    monkeypatch.setitem(sys.modules, "multiprocessing.forkserver",
                        sys.modules.get("multiprocessing.forkserver") or object())
    report = dict(_preload.REPORT)
    try:
        _preload._boot()
        assert "sharedcompute" not in sys.modules
        assert "package" in _preload.REPORT["errors"]
        assert _preload.ENV not in os.environ  # the workers never see it
    finally:
        sys.modules.update(saved)
        _preload.REPORT.clear()
        _preload.REPORT.update(report)


# -- warmup ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", START_METHODS)
def test_warmup_moves_compile_time_out_of_the_first_call(method):
    with sc.Pool(2, start_method=method) as pool:
        a, b = pool.zeros(10_000), pool.array(np.ones(10_000))
        names = pool.warmup([(triad, a, b, b, 2.0), total, (heat1d, a, b, 0.1)])
        assert sorted(names) == ["heat1d", "total", "triad"]
        assert len(names["heat1d"]) == 1  # read-only views, the edges' padded copies too
        warm = pool.insights()
        assert all(w["compile_s"] > 0 and w["tasks"] == 0 for w in warm)
        pool.map(triad, a, b, b, 2.0)
        assert float(pool.reduce(total, a)) == 30_000.0  # 1 + 2 * 1
        pool.map(heat1d, b, a, 0.1)
        after = pool.insights()
        assert [w["compile_s"] for w in after] == [w["compile_s"] for w in warm]
        assert all(w["tasks"] >= 3 for w in after)
        # the control: a signature warmup did not cover (float32) still compiles
        # (a fork worker inherits what this test process compiled earlier: no control there)
        inherited = method == "fork" and any("float32" in str(sig)
                                             for sig in triad.dispatcher.signatures)
        c = pool.zeros(10_000, np.float32)
        pool.map(triad, c, c, c, 2.0)
        if not inherited:
            assert sum(w["compile_s"] for w in pool.insights()) > sum(
                w["compile_s"] for w in after)


def test_warmup_with_dtypes_covers_each_dtype():
    with sc.Pool(2, start_method=START_METHODS[-1]) as pool:
        a = pool.zeros(1000)
        names = pool.warmup([(triad, a, a, a, 2.0), total], [np.float64, np.float32])
        assert [s[:21] for s in names["triad"]] == ["array(float64, 1d, C)",
                                                     "array(float32, 1d, C)"]
        assert names["total"] == ["readonly array(float64, 1d, C)",
                                  "readonly array(float32, 1d, C)"]
        before = [w["compile_s"] for w in pool.insights()]
        c = pool.zeros(1000, np.float32)
        pool.map(triad, c, c, c, 2.0)
        pool.reduce(total, c)
        assert [w["compile_s"] for w in pool.insights()] == before


def test_warmup_errors_say_what_to_do():
    with sc.Pool(2, backend="inline") as pool:
        with pytest.raises(sc.InputError, match="example_args"):
            pool.warmup([np.sum])
        with pytest.raises(sc.InputError, match="4 example arguments given, it takes 3"):
            pool.warmup((heat1d, 1, 2, 3, 4))
        # a bare triad means four arrays, but its s is a scalar: numba's typing error
        with pytest.raises(sc.KernelError, match="kernel triad .*warmup for"):
            pool.warmup([triad])
        names = pool.warmup([(triad, np.zeros(3), np.zeros(3), np.zeros(3), 2.0)])
        assert names["triad"][0].startswith("array(float64, 1d, C), readonly")


def test_warmup_error_in_a_worker_is_a_kernel_error_and_the_pool_goes_on():
    with sc.Pool(2, start_method=START_METHODS[-1]) as pool:
        with pytest.raises(sc.KernelError, match="kernel triad .*warmup for"):
            pool.warmup(triad)
        a = pool.zeros(100)
        pool.map(triad, a, a, a, 2.0)
        assert pool.restarts == 0


THREADS = '''
import threading, time
import sharedcompute as sc

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # at import

@sc.kernel
def fill(a, v):
    for i in range(a.shape[0]):
        a[i] = v
'''


@needs_forkserver
def test_a_kernel_module_that_starts_threads_is_left_to_the_workers(tmp_path):
    """Imported in the server it would leave threads there, and every fork after them is
    unsafe: the trial import in a child spots it and the server does not import it."""
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "threadkernels.py").write_text(THREADS)
    got = run_script(tmp_path, '''
    if __name__ == "__main__":
        import threadkernels
        with sc.Pool(2, start_method="forkserver") as pool:
            first = pool.submit(probe).result()
            a = pool.zeros(1000)
            pool.map(threadkernels.fill, a, 3.0)
            print(json.dumps(dict(first=first, total=float(np.asarray(a).sum()))))
    ''')
    assert "started" in got["first"]["errors"].get("import threadkernels", ""), got["first"]
    assert "import sharedcompute.kernels.elementwise" in got["first"]["steps"]
    assert got["total"] == 3000.0


PRESTART_PROBE = '''
if __name__ == "__main__":
    state = sc.prestart()
    again = sc.prestart()
    with sc.Pool(2, start_method="forkserver") as pool:
        first = pool.submit(probe).result()
        a = pool.zeros(1000); pool.map(triad, a, a, a, 2.0)
        print(json.dumps(dict(state=state, again=again, first=first,
                              pool_preload=pool._executor.preload, ok=float(a[0]) == 0.0)))
'''


@needs_forkserver
@SERVERS
def test_prestart_starts_the_preloaded_server_the_first_pool_then_uses(tmp_path, server):
    got = run_script(tmp_path, PRESTART_PROBE, env=server_env(server))
    assert (got["state"], got["again"]) == (
        "forked" if server == "forked" else "preloaded", "running")
    assert got["pool_preload"]["state"] == "running"  # the pool found it up, and reused it
    first = got["first"]
    assert first["report_pid"] == first["parent"] and first["target_ready"]
    assert ("numba target" if server == "forked" else "import sharedcompute.kernels.elementwise"
            ) in first["steps"] and got["ok"]
    server = first["parent"]
    for _ in range(100):  # the server leaves with its parent: no orphan process
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            break
        import time
        time.sleep(0.05)
    else:
        pytest.fail(f"the prestarted forkserver {server} outlived its parent")


def test_prestart_under_fork_and_spawn_and_its_errors(tmp_path):
    got = run_script(tmp_path, '''
if __name__ == "__main__":
    from numba.core.registry import cpu_target
    spawn = sc.prestart("spawn")
    before = bool(getattr(cpu_target.__dict__.get("_toplevel_target_context"), "_registries", None))
    fork = sc.prestart("fork")
    after = bool(getattr(cpu_target.__dict__.get("_toplevel_target_context"), "_registries", None))
    print(json.dumps(dict(spawn=spawn, fork=fork, before=before, after=after)))
''')
    assert (got["spawn"], got["fork"]) == ("spawn", "fork")
    assert not got["before"] and got["after"]  # fork: numba set up here, inherited later
    with pytest.raises(sc.InputError, match="use one of") as info:
        sc.prestart("threads")
    suggested = eval(str(info.value).split("use one of ")[1])  # the message's own list
    assert "spawn" in suggested and sc.prestart("spawn") == "spawn"  # following it works


@pytest.mark.parametrize("method", [m for m in ("forkserver", "spawn")
                                    if m in mp.get_all_start_methods()])
def test_prestart_at_a_scripts_top_level_does_nothing_in_its_workers(tmp_path, method):
    """"Call it early" puts it at the top of a script, which every spawn or forkserver worker
    imports again: there it must not start a process (multiprocessing refuses while a child
    bootstraps, and the worker died of it)."""
    got = run_script(tmp_path, f'''
STATE = sc.prestart("{method}")

def child_state():  # the worker's own import of this script (functions of __main__ go
    import sys        # by value, so a plain STATE here would be the parent's)
    return sys.modules["__mp_main__"].STATE

if __name__ == "__main__":
    with sc.Pool(2, start_method="{method}") as pool:
        a = pool.zeros(1000); pool.map(triad, a, a, a, 2.0)
        children = sorted({{pool.submit(child_state).result() for _ in range(4)}})
        print(json.dumps(dict(parent=STATE, children=children)))
''')
    assert got["parent"] == ("forked" if method == "forkserver" else "spawn")
    assert got["children"] == ["worker"]
