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
    import polykernels as pk
    ok = {}
    for name in dtypes:
        x = np.arange(-50, 50).astype(name)
        y = np.zeros_like(x)
        pk.plus_one(y, x)
        ok[name] = bool(np.array_equal(y, x + 1))
    stats = pk.plus_one.compiled()[0].stats
    print(json.dumps(dict(ok=ok, hits=sum(stats.cache_hits.values()),
                          misses=sum(stats.cache_misses.values()))))
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
    healed = _result(_start(mod, env, "-", "int64", "float64"))
    assert healed["ok"] == {"int64": True, "float64": True}, healed
    assert healed["misses"] == 0 and healed["hits"] == 2, healed


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
