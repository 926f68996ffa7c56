"""numba's on-disk cache under a pool of processes (sharedcompute/_compile.py, KernelCache).

Two processes saving their first signatures of one function at once both read an index
without the other's entry, picked the same data file, and one signature's entry then
held the other's code (numba#10128, #4807). Seen here: a padded edge piece (writable)
and an in-place view (read-only) of one FDTD kernel, compiled by two workers at once; from
then on every read-only call reloaded the writable build from disk (5x slower). With two
dtypes it is another dtype's code run on the data. Each test runs fresh processes against
a private NUMBA_CACHE_DIR, as a pool's workers or two notebooks would.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

KERNELS = '''
import sharedcompute as sc


@sc.kernel
def plus_one(y, x):
    for i in range(y.shape[0]):
        y[i] = x[i] + 1
'''

# one process: calls plus_one on the dtypes given, prints the results' check and numba's
# cache hits and misses (argv: module dir, barrier dir or "-", dtypes...)
CALLER = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    barrier, dtypes = sys.argv[2], sys.argv[3:]
    if barrier != "-":
        # a wide window between reading the index and saving it, as under load: both
        # processes read the index before either has saved
        import numba.core.caching as caching
        read = caching.IndexDataCacheFile._load_index
        def slow_read(self):
            out = read(self)
            time.sleep(1.0)
            return out
        caching.IndexDataCacheFile._load_index = slow_read
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        t0 = time.monotonic()
        while len(os.listdir(barrier)) < 2 and time.monotonic() - t0 < 60:
            time.sleep(0.01)
    # the argument types of every cache entry numba rebuilds (links) in this process
    from numba.core.compiler import CompileResult
    rebuild, rebuilt = CompileResult._rebuild.__func__, []
    def recording_rebuild(cls, target_context, *payload):
        rebuilt.append(str(payload[3].args[0].dtype))
        return rebuild(cls, target_context, *payload)
    CompileResult._rebuild = classmethod(recording_rebuild)
    import polykernels as pk
    ok = {}
    for name in dtypes:
        x = np.arange(-50, 50).astype(name)
        y = np.zeros_like(x)
        pk.plus_one(y, x)
        ok[name] = bool(np.array_equal(y, x + 1))
    stats = pk.plus_one.compiled()[0].stats
    print(json.dumps(dict(ok=ok, hits=sum(stats.cache_hits.values()),
                          misses=sum(stats.cache_misses.values()), rebuilt=rebuilt)))
''')


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def _setup(tmp_path):
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "polykernels.py").write_text(KERNELS)
    cache = tmp_path / "numba-cache"
    return mod, cache, subprocess_env(NUMBA_CACHE_DIR=str(cache))


def _start(mod, env, barrier: str, *dtypes: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CALLER, str(mod), barrier, *dtypes],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(mod.parent))


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(180)
def test_an_entry_holding_another_signatures_code_is_refused_and_the_cache_heals(tmp_path):
    """Each of two entries holds the other dtype's code (the data files swapped, as the
    race leaves them): a process asking for int64 must not run the float64 build on its
    data; it compiles, and the next process loads both from the cache again."""
    mod, cache, env = _setup(tmp_path)
    first = _result(_start(mod, env, "-", "float64", "int64"))
    assert first["ok"] == {"float64": True, "int64": True} and first["misses"] == 2
    data = sorted(p for p in cache.rglob("*plus_one*.nbc"))
    assert len(data) == 2, data
    a, b = data[0].read_bytes(), data[1].read_bytes()
    data[0].write_bytes(b)
    data[1].write_bytes(a)
    poisoned = _result(_start(mod, env, "-", "int64", "float64"))
    assert poisoned["ok"] == {"int64": True, "float64": True}, poisoned
    # refused before numba linked it: the float64 code never entered the int64 process
    assert poisoned["rebuilt"] == [] and poisoned["misses"] == 2, poisoned
    healed = _result(_start(mod, env, "-", "int64", "float64"))
    assert healed["ok"] == {"int64": True, "float64": True}, healed
    assert healed["misses"] == 0 and healed["hits"] == 2, healed
    assert healed["rebuilt"] == ["int64", "float64"], healed


@pytest.mark.timeout(180)
def test_an_entry_for_another_layout_is_refused_before_it_is_linked(tmp_path):
    """The race's other victim: a strided view's entry holding the contiguous build of
    the same dtype (the same data file copied over). The process that already runs the
    contiguous build from the cache must not link a second copy of it for the view: it
    compiles the view's own code instead."""
    mod, cache, env = _setup(tmp_path)
    view = textwrap.dedent('''
        import json, sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from numba.core.compiler import CompileResult
        rebuild, rebuilt = CompileResult._rebuild.__func__, []
        def recording_rebuild(cls, target_context, *payload):
            rebuilt.append(str(payload[3].args[1]))
            return rebuild(cls, target_context, *payload)
        CompileResult._rebuild = classmethod(recording_rebuild)
        import polykernels as pk
        x, y = np.arange(200.0), np.zeros(100)
        pk.plus_one(y, x[:100])  # contiguous (layout C)
        ok = bool(np.array_equal(y, x[:100] + 1))
        pk.plus_one(y, x[::2])   # strided (layout A)
        ok = ok and bool(np.array_equal(y, x[::2] + 1))
        stats = pk.plus_one.compiled()[0].stats
        print(json.dumps(dict(ok=ok, rebuilt=rebuilt,
                              misses=sum(stats.cache_misses.values()))))
    ''')

    def run() -> dict:
        return _result(subprocess.Popen([sys.executable, "-c", view, str(mod)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env, cwd=str(mod.parent)))
    first = run()
    assert first["ok"] and first["misses"] == 2 and first["rebuilt"] == [], first
    data = sorted(cache.rglob("*plus_one*.nbc"))
    assert len(data) == 2, data
    with open(next(cache.rglob("*plus_one*.nbi")), "rb") as f:  # numba's index file
        pickle.load(f)  # numba's version
        _, entries = pickle.loads(f.read())
    by_layout = {key[0][1].layout: name for key, name in entries.items()}
    (cache_dir,) = {p.parent for p in data}
    contiguous = (cache_dir / by_layout["C"]).read_bytes()
    (cache_dir / by_layout["A"]).write_bytes(contiguous)  # the view's entry: the C build
    poisoned = run()
    assert poisoned["ok"], poisoned
    assert poisoned["rebuilt"] == ["readonly array(float64, 1d, C)"], poisoned
    assert poisoned["misses"] == 1, poisoned


@pytest.mark.timeout(180)
def test_two_processes_saving_their_first_signatures_at_once_leave_a_sound_cache(tmp_path):
    """Two cold processes, one compiling float64 and one int64, both reading the index
    before either saves (a 1 s window): the save lock makes the second pick its own data
    file, so a third process loads both signatures from the cache, no compile."""
    mod, cache, env = _setup(tmp_path)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [_start(mod, env, str(barrier), name) for name in ("float64", "int64")]
    for p, name in zip(procs, ("float64", "int64")):
        assert _result(p)["ok"] == {name: True}
    later = _result(_start(mod, env, "-", "int64", "float64"))
    assert later["ok"] == {"int64": True, "float64": True}, later
    assert later["misses"] == 0 and later["hits"] == 2, later
