"""The Dask backend on a 2-worker LocalCluster (processes, one thread each): every library
kernel gives the local pool's results, bitwise; reductions are identical across backends."""
import builtins

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute.kernels import reductions, stencils
from sharedcompute.kernels.registry import ENTRIES, share_args
from testkernels import raise_on_negative


@pytest.fixture(scope="module")
def dask_pool():
    pool = sc.Pool(backend="dask", n_workers=2)
    yield pool
    pool.close()


def _flat(value):
    parts = value if isinstance(value, tuple) else (value,)
    return np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in parts])


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_kernel_equals_the_local_pool_bitwise(dask_pool, name):
    entry = ENTRIES[name]
    local = shared_pool(2, START_METHODS[-1])
    args, kwargs = entry.make(np.random.default_rng(11), 5003, entry.dtypes[0])
    on_dask, on_local = share_args(dask_pool, args), share_args(local, args)
    report = sc.verify(dask_pool, entry.kernel, *on_dask, **kwargs)
    assert report.ok, str(report)  # every splitting, in full
    if entry.kernel.kind == "reduce":
        got = dask_pool.reduce(entry.kernel, *on_dask, **kwargs)
        want = local.reduce(entry.kernel, *on_local, **kwargs)
        np.testing.assert_array_equal(_flat(got), _flat(want))
    else:
        got = dask_pool.map(entry.kernel, *on_dask, **kwargs)
        want = local.map(entry.kernel, *on_local, **kwargs)
        assert got is on_dask[entry.kernel.writes[0]]  # the handle was rebound, not replaced
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for a in on_local:
        if isinstance(a, sc.SharedArray):
            a.free()


def test_reduce_is_identical_across_backends_and_worker_counts(dask_pool):
    x = np.random.default_rng(12).standard_normal(300_001)
    values = [dask_pool.reduce(reductions.total, dask_pool.array(x))]
    for n in (1, 2, 3, 4):
        pool = shared_pool(n, START_METHODS[-1])
        xs = pool.array(x)
        values.append(pool.reduce(reductions.total, xs))
        xs.free()
    assert len(set(values)) == 1, values


@pytest.mark.parametrize("boundary", ["none", "reflect", "periodic", 1.5])
def test_iterate_equals_the_local_pool_bitwise(dask_pool, boundary):
    u0 = np.random.default_rng(13).random((97, 31))
    local = shared_pool(2, START_METHODS[-1])
    a, b = dask_pool.array(u0), dask_pool.array(u0)
    c, d = local.array(u0), local.array(u0)
    got = dask_pool.iterate(stencils.jacobi2d, b, a, steps=11, boundary=boundary)
    want = local.iterate(stencils.jacobi2d, d, c, steps=11, boundary=boundary)
    assert got is b and want is d
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    c.free()
    d.free()


def test_kernel_error_on_a_dask_worker_names_kernel_and_chunk(dask_pool):
    x = dask_pool.array(np.r_[np.ones(1000), -1.0])
    with pytest.raises(sc.KernelError, match=r"raise_on_negative raised ValueError: negative "
                                             r"value found \(rows \[\d+, 1001\)") as info:
        dask_pool.reduce(raise_on_negative, x)
    assert "Traceback" in str(info.value.__cause__)


def test_missing_dask_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name == "dask" or name.startswith(("dask.", "distributed")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(sc.InputError, match=r'pip install "sharedcompute\[dask\]"'):
        sc.Pool(backend="dask", n_workers=1)


def test_open_reads_the_file_on_the_workers_with_the_local_bits(dask_pool, tmp_path):
    """pool.open on Dask (issue 13): the workers map the file themselves (the graph holds
    the path, not the data), and every reduction equals the local pool's, bitwise."""
    import cloudpickle
    x = np.random.default_rng(5).standard_normal((257, 33, 17)).astype(np.float32)  # 575 KB
    p = str(tmp_path / "x.npy")
    np.save(p, x)
    d = dask_pool.open(p)
    assert d.shape == x.shape and d.dtype == x.dtype
    graph = dict(d.data.__dask_graph__())
    assert len(cloudpickle.dumps(graph)) < 50_000       # no chunk of data in the graph
    local = shared_pool(2, START_METHODS[-1])
    a = local.open(p)
    for k, extra in [(reductions.total, ()), (reductions.minmax, ()), (reductions.mean_var, ()),
                     (reductions.histogram, (20, -3.0, 3.0)), (reductions.sum_squares, ())]:
        np.testing.assert_array_equal(_flat(dask_pool.reduce(k, d, *extra)),
                                      _flat(local.reduce(k, a, *extra)))
    np.testing.assert_array_equal(np.asarray(d), x)
    with pytest.raises(sc.InputError, match="mode='r'"):
        dask_pool.open(p, "r+")
    loaded = dask_pool.load(p)                          # persisted in the workers' memory
    np.testing.assert_array_equal(_flat(dask_pool.reduce(reductions.total, loaded)),
                                  _flat(local.reduce(reductions.total, a)))
    a.free()


def test_dask_pools_refuse_tasks_with_the_way_to_do_it(dask_pool):
    import math
    with pytest.raises(sc.InputError, match="client.submit"):
        dask_pool.submit(math.sqrt, 4.0)
    with pytest.raises(sc.InputError, match="client.submit"):
        list(dask_pool.imap(math.sqrt, [4.0]))


def test_dask_pools_refuse_step_programs_and_fused_sweeps_with_the_way_to_do_it(dask_pool):
    from sharedcompute.kernels import stencils
    from sharedcompute.kernels.reductions import max_abs_diff
    u, v = dask_pool.array(np.ones((64, 16))), dask_pool.zeros((64, 16))
    with pytest.raises(sc.InputError, match="returns its residual .* residual=max_abs_diff"):
        dask_pool.iterate(stencils.jacobi2d_residual, v, u, steps=2, tol=1e-3)
    with pytest.raises(sc.InputError,
                       match="step programs .* on the Dask backend, call pool.map"):
        dask_pool.iterate(sc.program(sc.stage(stencils.jacobi2d, v, u)), steps=2)
    done = dask_pool.iterate(stencils.jacobi2d, v, u, steps=2, residual=max_abs_diff,
                             tol=0.0, info=True)  # the advice, followed
    assert done.sweeps == 2


def test_a_dask_pool_leaves_the_callers_environment_and_config_alone(monkeypatch):
    """The nanny sets its workers' thread caps with os.environ.update in this process: the
    caller's own numba pools and subprocesses must not inherit NUMBA_NUM_THREADS=1 (they
    did, until session 8). The workers still get the caps."""
    import os

    import dask
    import distributed  # noqa: F401 - its defaults are part of the config compared
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    before = dask.config.get("distributed.nanny.pre-spawn-environ", default=None)
    with sc.Pool(backend="dask", n_workers=1) as pool:
        assert "NUMBA_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ
        seen = pool._backend.client.run(lambda: os.environ.get("NUMBA_NUM_THREADS"))
        assert set(seen.values()) == {"1"}, seen
    assert dask.config.get("distributed.nanny.pre-spawn-environ", default=None) == before
