"""What identifies a kernel or task function: its content, never its name (issue 23 item 7,
issue 24). The token is compared with itself across processes and across edits that do and
do not change what the code computes."""
from __future__ import annotations

import importlib
import math
import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute import _identity


def make(src: str, name: str = "f", filename: str = "<cell>", **glob):
    """Run ``src`` as a notebook cell would and return what it defines as ``name``."""
    ns = {"__name__": "__main__", "np": np, "sc": sc, **glob}
    exec(compile(textwrap.dedent(src), filename, "exec"), ns)
    return ns[name]


BASE = """
def f(x, k=2):
    return x * k + C
"""


def test_same_content_same_token_whatever_the_lines_or_file():
    a = make(BASE, C=1.0)
    b = make("\n\n\n" + BASE, C=1.0, filename="/tmp/ipykernel_1/other.py")  # a re-run cell
    assert a is not b and _identity.token(a) == _identity.token(b)


NAN_1 = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]


@pytest.mark.parametrize("base_c, src, other_c", [
    pytest.param(1.0, BASE.replace("x * k", "x * k * 1"), 1.0, id="code"),
    pytest.param(1.0, BASE.replace("k=2", "k=3"), 1.0, id="default"),
    pytest.param(1.0, BASE.replace("k=2", "k=2.0"), 1.0, id="default type"),
    pytest.param(1.0, BASE, 2.0, id="global value"),
    pytest.param(0.0, BASE, -0.0, id="minus zero"),
    pytest.param(math.nan, BASE, NAN_1, id="NaN payload"),
    pytest.param(1.0, BASE, np.float32(1.0), id="global type"),
    pytest.param(np.arange(3.0), BASE, np.arange(3.0)[::-1].copy(), id="global array"),
])
def test_what_changes_the_result_changes_the_token(base_c, src, other_c):
    base, changed = make(BASE, C=base_c), make(src, C=other_c)
    assert _identity.token(base) != _identity.token(changed)
    assert _identity.token(base) == _identity.token(make(BASE, C=base_c))  # and only that


def test_closures_helpers_and_module_attributes_are_content():
    def outer(scale):
        def inner(x):
            return x * scale
        return inner
    assert _identity.token(outer(2.0)) == _identity.token(outer(2.0))
    assert _identity.token(outer(2.0)) != _identity.token(outer(3.0))
    helper1 = make("def h(x):\n    return x + 1\n", "h")
    helper2 = make("def h(x):\n    return x + 2\n", "h")
    f1, f2 = (make("def f(x):\n    return h(x)\n", h=h) for h in (helper1, helper2))
    assert _identity.token(f1) != _identity.token(f2)  # a helper it calls changed
    import types
    cfg = types.ModuleType("cfg")
    cfg.C = 1.0
    g = make("def f(x):\n    return x * cfg.C\n", cfg=cfg)
    t1 = _identity.token(g)
    cfg.C = 5.0  # numba freezes cfg.C too: the token follows it
    assert _identity.token(g) != t1


def test_kernel_options_are_content():
    src = """
    def k(out, u):
        for i in range(1, u.shape[0] - 1):
            out[i - 1] = u[i]
    """
    kinds = [sc.kernel(make(src, "k"), depth=1),
             sc.kernel(make(src, "k"), depth=1, boundary="reflect"),
             sc.kernel(make(src, "k"), depth=2),
             sc.kernel(make(src, "k"), depth=1, combine=np.maximum),
             sc.kernel(make(src, "k"), depth=1, jit=False)]
    tokens = [k.content_token() for k in kinds]
    assert len(set(tokens)) == len(tokens)
    assert sc.kernel(make(src, "k"), depth=1).content_token() == tokens[0]


def test_a_rebound_global_gives_the_kernel_new_content(pool2):
    """IPython 9's %autoreload 2 rebinds a module's globals in place, keeping the kernel
    object: the next call must run with the new value, through the call cache and a bound
    call too (they key on the content token)."""
    ns = {"__name__": "__main__", "sc": sc, "C": 1.0}
    exec(textwrap.dedent("""
    @sc.kernel
    def put(o):
        for i in range(o.shape[0]):
            o[i] = C
    """), ns)
    put = ns["put"]
    o = pool2.zeros(64)
    bound = pool2.bind(put, o)
    for c in (1.0, 2.0, -0.0, 7.5):
        ns["C"] = c
        want = np.full(64, c)
        assert np.array_equal(np.asarray(pool2.map(put, o)), want)
        assert np.array_equal(np.asarray(pool2.map(put, o)), want)  # the cached call
        assert np.array_equal(np.asarray(bound()), want)
        assert np.signbit(np.asarray(o)[0]) == np.signbit(c)
    del bound, o


def test_code_replaced_in_place_runs_the_new_code(pool2):
    """%autoreload 2 also swaps a function's ``__code__`` in place, keeping the kernel object
    and every global: the cached call and a bound call must run the new code (the cache
    entry compares the code object too, _cache.Entry.current)."""
    ns = {"__name__": "__main__", "sc": sc}
    exec(textwrap.dedent("""
    @sc.kernel
    def put(o):
        for i in range(o.shape[0]):
            o[i] = 1.0

    def edited(o):
        for i in range(o.shape[0]):
            o[i] = 2.0
    """), ns)
    put = ns["put"]
    o = pool2.zeros(64)
    bound = pool2.bind(put, o)
    for _ in range(2):  # the second: the cached call
        assert np.array_equal(np.asarray(pool2.map(put, o)), np.full(64, 1.0))
    assert np.array_equal(np.asarray(bound()), np.full(64, 1.0))
    put.py_func.__code__ = ns["edited"].__code__
    for _ in range(2):
        assert np.array_equal(np.asarray(pool2.map(put, o)), np.full(64, 2.0))
    o[:] = 0.0
    assert np.array_equal(np.asarray(bound()), np.full(64, 2.0))
    del bound, o


@pytest.fixture
def pool2(start_method):
    from conftest import shared_pool
    return shared_pool(2, start_method)


def test_tokens_agree_across_processes():
    """A module kernel's token, made again in a fresh interpreter with another hash seed
    (frozenset constants iterate in another order there), is the same."""
    from sharedcompute.kernels import elementwise, reductions, stencils
    here = {k.name: k.content_token() for k in
            (elementwise.triad, reductions.histogram, stencils.jacobi2d_residual)}
    code = textwrap.dedent("""
        import json
        from sharedcompute.kernels import elementwise, reductions, stencils
        print(json.dumps({k.name: k.content_token() for k in
              (elementwise.triad, reductions.histogram, stencils.jacobi2d_residual)}))
    """)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd="/tmp", env=env)
    assert out.returncode == 0, out.stderr
    import json
    assert json.loads(out.stdout) == here


def test_a_module_reloaded_in_the_caller_runs_its_new_code(tmp_path, start_method):
    """importlib.reload of a kernel module in the caller: the live pool (whose workers
    imported the old file) and a new pool run the new code; a worker never runs code that
    differs from the caller's."""
    name = f"reloadmod_{start_method}"
    src = "import sharedcompute as sc\nC = {c}\n@sc.kernel\ndef put(o):\n" \
          "    for i in range(o.shape[0]):\n        o[i] = C\ndef times(v):\n    return v * C\n"
    path = tmp_path / f"{name}.py"

    def write(c: float) -> None:
        path.write_text(src.format(c=c))
        t = time.time() + 10 * c
        os.utime(path, (t, t))
        importlib.invalidate_caches()
    write(1.0)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
        with sc.Pool(2, start_method=start_method) as pool:
            o = pool.zeros(32)
            assert np.asarray(pool.map(mod.put, o)).sum() == 32.0
            assert pool.submit(mod.times, 2.0).result(timeout=60) == 2.0
            write(3.0)
            mod = importlib.reload(mod)
            assert np.asarray(pool.map(mod.put, o)).sum() == 96.0
            assert pool.submit(mod.times, 2.0).result(timeout=60) == 6.0
            with sc.Pool(2, start_method=start_method) as fresh:
                o2 = fresh.zeros(32)
                assert np.asarray(fresh.map(mod.put, o2)).sum() == 96.0
                del o2
            # the file changes again, but the caller does not reload: a worker that must
            # import the module anew finds other code than the caller's, and says so
            write(5.0)
            with sc.Pool(1, start_method="spawn") as fresh:
                with pytest.raises(sc.KernelNotSendableError, match="differs from the caller"):
                    fresh.submit(mod.times, 2.0).result(timeout=60)
                o3 = fresh.zeros(32)
                with pytest.raises(sc.SharedComputeError, match="differs from the caller"):
                    fresh.map(mod.put, o3)
                assert not np.asarray(o3).any()
                mod = importlib.reload(mod)  # the advice, followed: the caller reloads
                assert fresh.submit(mod.times, 2.0).result(timeout=60) == 10.0
                assert np.asarray(fresh.map(mod.put, o3)).sum() == 160.0
                del o3
            del o
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


PROBE = """
def built(token):
    import os, sys, time
    time.sleep(0.3)  # so that each worker takes one of the probes sent together
    k = sys.modules["sharedcompute.kernel"]._BUILT.get(token)
    return os.getpid(), None if k is None else id(k)
"""


def _built(pool, token: str) -> dict:
    """{worker pid: id of the kernel it built for ``token``} (by value: a cell's function)."""
    probe = make(PROBE, "built")
    out: dict = {}
    for _ in range(10):
        if len(out) == pool.n_workers:
            break
        for fut in [pool.submit(probe, token) for _ in range(pool.n_workers)]:
            pid, ident = fut.result(timeout=60)
            out[pid] = ident
    assert len(out) == pool.n_workers
    return out


def test_a_rerun_cell_is_built_once_per_worker(pool2):
    """The same cell run twice (two kernel objects, one content) is built and compiled once
    per worker; an edited one is built anew."""
    src = """
    @sc.kernel
    def step(o, x, v):
        for i in range(o.shape[0]):
            o[i] = v * x[i]
    """
    first, again = make(src, "step"), make(src, "step")
    edited = make(src.replace("v * x[i]", "v * x[i] + 1.0"), "step")
    assert first is not again and first.content_token() == again.content_token()
    assert edited.content_token() != first.content_token()
    o, x = pool2.zeros(100), pool2.array(np.arange(100.0))  # split over both workers
    assert np.array_equal(np.asarray(pool2.map(first, o, x, 2.0)), 2.0 * np.arange(100))
    once = _built(pool2, first.content_token())
    assert None not in once.values()
    assert np.array_equal(np.asarray(pool2.map(again, o, x, 3.0)), 3.0 * np.arange(100))
    assert _built(pool2, first.content_token()) == once  # the very same kernel objects
    assert np.array_equal(np.asarray(pool2.map(edited, o, x, 2.0)), 2.0 * np.arange(100) + 1)
    assert None not in _built(pool2, edited.content_token()).values()
    del o, x


def test_a_kernel_whose_module_name_is_rebound_runs_its_own_code(tmp_path, start_method):
    """A kernel found by name when first sent (Kernel.check_sendable records it) whose
    ``module.name`` is then rebound to another kernel: later calls, in this pool and in a
    new one (under fork its workers inherit the rebinding), still run the kernel passed,
    because a worker that finds another object under the name checks its token."""
    name = f"rebindmod_{start_method}"
    (tmp_path / f"{name}.py").write_text(
        "import sharedcompute as sc\n@sc.kernel\ndef put(o):\n    for i in range(o.shape[0]):\n"
        "        o[i] = 1.0\n@sc.kernel\ndef other(o):\n    for i in range(o.shape[0]):\n"
        "        o[i] = 7.0\n")
    importlib.invalidate_caches()
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
        put = mod.put
        with sc.Pool(2, start_method=start_method) as pool:
            o = pool.zeros(32)
            assert np.asarray(pool.map(put, o)).sum() == 32.0
            mod.put = mod.other  # the name now holds another kernel
            o[:] = 0.0
            assert np.asarray(pool.map(put, o)).sum() == 32.0
            with sc.Pool(2, start_method=start_method) as fresh:
                o2 = fresh.zeros(32)
                assert np.asarray(fresh.map(put, o2)).sum() == 32.0
                assert np.asarray(fresh.map(mod.put, o2)).sum() == 7.0 * 32
                del o2
            del o
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
