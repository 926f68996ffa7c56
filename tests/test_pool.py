"""Pool: in-place maps, deterministic reductions, zero copy, errors, under every start method."""
import gc
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sharedcompute as sc
from conftest import START_METHODS, shared_pool, wait_no_segments
from sharedcompute.shared import list_segments
from testkernels import (fill_ones, nd_sum, raise_on_negative, report_threads, scale_add,
                         try_write_input, write_pid)

DTYPES = ["float32", "float64", "int32", "int64"]


def _shape(draw):
    ndim = draw(st.integers(1, 3))
    rows = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 64, 1000, 4099]))
    tail = tuple(draw(st.integers(1, 4)) for _ in range(ndim - 1))
    return (rows,) + tail


shapes = st.composite(lambda draw: _shape(draw))()


def _values(rng, shape, dtype):
    if np.dtype(dtype).kind == "i":
        return rng.integers(-1000, 1000, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("method", START_METHODS)
@settings(max_examples=12)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), n_workers=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_map_equals_reference_bitwise(method, shape, dtype, n_workers, seed):
    pool = shared_pool(n_workers, method)
    rng = np.random.default_rng(seed)
    x, y = _values(rng, shape, dtype), _values(rng, shape, dtype)
    s = np.dtype(dtype).type(3)
    xs, ys, out = pool.array(x), pool.array(y), pool.zeros(shape, dtype)
    assert pool.map(scale_add, out, xs, ys, s) is out
    want = np.empty(shape, dtype)
    scale_add.reference(want, x, y, s)
    np.testing.assert_array_equal(np.asarray(out), want)
    for arr in (xs, ys, out):
        arr.free()


@pytest.mark.parametrize("method", START_METHODS)
@settings(max_examples=10)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_reduce_is_bitwise_identical_for_1_to_4_workers(method, shape, dtype, seed):
    x = _values(np.random.default_rng(seed), shape, dtype)
    results = []
    for n in (1, 2, 3, 4):
        pool = shared_pool(n, method)
        xs = pool.array(x)
        results.append(pool.reduce(nd_sum, xs))
        xs.free()
    inline = nd_sum(x)  # the in-process call uses the same chunk grid and combine tree
    assert all(r == results[0] for r in results), results
    assert inline == results[0]
    np.testing.assert_allclose(results[0], nd_sum.reference(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", START_METHODS)
def test_writes_in_workers_are_visible_in_the_parent(method):
    pool = shared_pool(2, method)
    out = pool.zeros(10_000, np.int64)
    pool.map(write_pid, out)
    seen = set(np.unique(np.asarray(out)).tolist())
    assert seen == set(pool.pids)  # both workers wrote, straight into shared memory
    out.free()


def _rss_anon(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")


def test_map_over_1gib_adds_no_private_memory():
    """Private (anonymous) memory of the parent and of each worker grows by far less than
    the 1 GiB array: the data lives once, in shared memory. (psutil's USS would count
    shared-memory pages that only one process has touched as 'unique', so we read RssAnon.)"""
    pool = sc.Pool(2)
    try:
        a = pool.zeros(2**27)  # 1 GiB of float64
        pool.map(fill_ones, pool.zeros(10))  # workers warm and compiled
        pids = [os.getpid()] + pool.pids
        before = {p: _rss_anon(p) for p in pids}
        pool.map(fill_ones, a)
        total = pool.reduce(nd_sum, a)
        after = {p: _rss_anon(p) for p in pids}
        assert total == 2.0**27
        growth = {p: after[p] - before[p] for p in pids}
        assert all(g < a.nbytes // 20 for g in growth.values()), growth
    finally:
        pool.close()


def test_errors_before_any_work_are_clear():
    pool = shared_pool(2, START_METHODS[-1])
    a, b = pool.zeros(10), pool.zeros(11)
    with pytest.raises(sc.InputError, match="mismatched leading dimensions: 'out' has 10 rows "
                                            "but 'x' has 11"):
        pool.map(scale_add, a, b, a, 1.0)
    with pytest.raises(sc.InputError, match="takes 4 arguments"):
        pool.map(scale_add, a, a)
    with pytest.raises(sc.InputError, match="not a sharedcompute kernel"):
        pool.map(lambda x: x, a)
    with pytest.raises(sc.InputError, match="plain NumPy array with the same 10 rows"):
        pool.map(scale_add, a, np.ones(10), a, 1.0)
    with pytest.raises(sc.InputError, match="writes 'out', a plain NumPy array"):
        pool.map(scale_add, np.ones(10), a, a, 1.0)
    with pytest.raises(sc.InputError, match="is a reduction; call pool.reduce"):
        pool.map(nd_sum, a)
    with pytest.raises(sc.InputError, match="not a reduction"):
        pool.reduce(scale_add, a, a, a, 1.0)
    with pytest.raises(sc.InputError, match="n_workers=0 must be a positive integer"):
        sc.Pool(0)
    with pytest.raises(sc.InputError, match="start_method='threads' is not available"):
        sc.Pool(1, start_method="threads")
    with pytest.raises(sc.InputError, match="backend='ray' is not known"):
        sc.Pool(1, backend="ray")
    a.free()
    b.free()


def test_closed_pool_and_freed_arrays_are_clear_errors():
    pool = sc.Pool(1, backend="inline")
    a = pool.zeros(5)
    pool.close()
    with pytest.raises(sc.PoolClosedError, match="pool is closed"):
        pool.map(fill_ones, a)
    with pytest.raises(sc.PoolClosedError):
        pool.zeros(3)
    with pytest.raises(sc.ArrayFreedError, match="freed"):
        np.asarray(a)
    live = sc.Pool(1, backend="inline")
    b = live.zeros(5)
    b.free()
    with pytest.raises(sc.ArrayFreedError, match="freed"):
        live.map(fill_ones, b)
    live.close()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(live)


@pytest.mark.parametrize("method", START_METHODS)
def test_inputs_are_read_only_in_workers(method):
    pool = shared_pool(2, method)
    out, x = pool.zeros(100), pool.array(np.ones(100))
    with pytest.raises(sc.KernelError, match=r"(?s)try_write_input writes one of \['x'\], which "
                       r"are read-only because writes=\('out',\).*writes=\('out', 'x'\)"):
        pool.map(try_write_input, out, x)
    assert np.asarray(x).min() == 1.0  # nothing was written
    out.free()
    x.free()


@pytest.mark.parametrize("method", START_METHODS)
def test_kernel_error_names_kernel_and_rows_and_keeps_the_pool(method):
    pool = shared_pool(2, method)
    pids = pool.pids
    x = pool.array(np.r_[np.ones(50_000), -np.ones(1)])
    with pytest.raises(sc.KernelError, match=r"raise_on_negative raised ValueError: negative "
                       r"value found \(rows \[\d+, 50001\)") as info:
        pool.reduce(raise_on_negative, x)
    assert "Traceback" in str(info.value.__cause__)
    assert info.value.rows[1] == 50001
    assert pool.pids == pids
    np.asarray(x)[-1] = 1.0
    assert pool.reduce(raise_on_negative, x) == 0.0
    x.free()


def test_inline_backend_is_bitwise_the_process_pool():
    x = np.random.default_rng(1).standard_normal((5000, 3))
    inline = sc.Pool(3, backend="inline")
    procs = shared_pool(3, START_METHODS[-1])
    try:
        a, b = inline.array(x), procs.array(x)
        assert inline.reduce(nd_sum, a) == procs.reduce(nd_sum, b)
        oa, ob = inline.zeros_like(a), procs.zeros_like(b)
        inline.map(scale_add, oa, a, a, 0.5)
        procs.map(scale_add, ob, b, b, 0.5)
        np.testing.assert_array_equal(np.asarray(oa), np.asarray(ob))
        b.free()
        ob.free()
    finally:
        inline.close()


def test_default_workers_follow_affinity():
    cores = sc.usable_cores()
    assert cores.n == len(os.sched_getaffinity(0)) or "quota" in cores.reason
    pool = sc.Pool(backend="inline")
    assert pool.n_workers == cores.n
    pool.close()


def test_numba_and_blas_are_single_threaded_in_workers():
    pool = shared_pool(2, START_METHODS[-1])
    out = pool.zeros((2, 2), np.int64)
    pool.map(report_threads, out)
    # column 0: threads threadpoolctl reports for each loaded BLAS/OpenMP library (max);
    # column 1: NUMBA_NUM_THREADS seen in the worker
    assert (np.asarray(out) == 1).all(), np.asarray(out)
    out.free()


def test_script_in_main_under_spawn_works_and_leaves_nothing(tmp_path):
    """A kernel defined in a script's __main__ works under spawn (the script is re-imported
    by workers); stderr stays empty (no resource-tracker warnings) and /dev/shm is clean."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import sharedcompute as sc

        @sc.kernel
        def double(out, x):
            for i in range(out.shape[0]):
                out[i] = 2 * x[i]

        if __name__ == "__main__":
            with sc.Pool(2, start_method="spawn") as pool:
                x = pool.array(np.arange(10.0))
                out = pool.zeros(10)
                pool.map(double, out, x)
                print(float(np.asarray(out).sum()))
    """))
    before = set(list_segments())
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "90.0"
    assert stderr == ""
    assert wait_no_segments(before, creator=proc.pid) == []  # the script's own segments


def test_interactive_main_kernel_runs_under_spawn():
    """python -c: the kernel goes by value (spawn workers could not import it)."""
    code = textwrap.dedent("""
        import numpy as np, sharedcompute as sc
        @sc.kernel
        def double(out):
            out[0] = 2.0
        with sc.Pool(1, start_method="spawn") as pool:
            a = pool.zeros(1)
            print("got", float(np.asarray(pool.map(double, a))[0]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd="/tmp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "got 2.0"
    assert proc.stderr == ""


def test_pool_close_frees_its_arrays():
    pool = sc.Pool(1, backend="inline")
    a = pool.zeros(100)
    name = a.name
    view = np.asarray(a)  # a live view does not stop close(); the mapping stays valid
    pool.close()
    assert name not in list_segments()
    assert view.sum() == 0.0
    del view
    gc.collect()
