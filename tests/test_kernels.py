"""The kernel library, driven from its registry: verify, bitwise determinism, properties."""
import doctest
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute.kernels import compute, reductions, scans, stencils
from sharedcompute.verify import run_reference
from sharedcompute.kernels.registry import ENTRIES, library_kernels, share_args

NAMES = sorted(ENTRIES)


def _verify(pool, entry, n, dtype, seed=0):
    args, kwargs = entry.make(np.random.default_rng(seed), n, dtype)
    shared = share_args(pool, args)
    try:
        report = sc.verify(pool, entry.kernel, *shared, **kwargs)
    finally:
        for a in shared:
            if isinstance(a, sc.SharedArray):
                a.free()
    return report


def test_every_library_kernel_is_registered_with_reference_example_and_benchmark():
    kernels = library_kernels()
    assert len(kernels) >= 16
    for k in kernels:
        assert k.name in ENTRIES, f"{k.name} is missing from kernels/registry.py"
        assert k.reference is not None, f"{k.name} has no reference"
        assert ">>>" in (k.__doc__ or ""), f"{k.name} has no runnable example"
        assert ENTRIES[k.name].bench.get("size"), f"{k.name} has no benchmark entry"


@pytest.mark.parametrize("module", ["sharedcompute.kernels.elementwise",
                                    "sharedcompute.kernels.reductions",
                                    "sharedcompute.kernels.stencils",
                                    "sharedcompute.kernels.scans",
                                    "sharedcompute.kernels.compute",
                                    "sharedcompute.shared", "sharedcompute.kernel",
                                    "sharedcompute.verify", "sharedcompute.pool",
                                    "sharedcompute._iterate.snapshot", "sharedcompute"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder()
    tests = finder.find(mod)
    for name, obj in vars(mod).items():  # Kernel objects: their docstring lives on py_func
        if isinstance(obj, sc.Kernel) and obj.module == mod.__name__:
            tests += finder.find(obj.py_func, f"{module}.{name}", module=mod,
                                 globs=dict(vars(mod)))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("n_workers", [1, 2, 3, 4])
@pytest.mark.parametrize("name", NAMES)
def test_every_kernel_verifies_on_awkward_sizes(name, n_workers, method):
    entry = ENTRIES[name]
    pool = shared_pool(n_workers, method)
    # not a multiple of the worker count; fewer rows than workers plus halo; several chunks
    for n in sorted({max(entry.min_rows, 1), 3, 2 * n_workers + 1, 12_347}):
        report = _verify(pool, entry, n, entry.dtypes[0])
        assert report.ok, f"n={n}: {report}"


@pytest.mark.parametrize("name", NAMES)
def test_every_kernel_verifies_for_each_dtype(name):
    entry = ENTRIES[name]
    pool = shared_pool(2, START_METHODS[-1])
    for dtype in entry.dtypes:
        report = _verify(pool, entry, 4099, dtype, seed=1)
        assert report.ok, f"{dtype}: {report}"


@pytest.mark.parametrize("boundary", ["none", "reflect", "periodic", "nearest", 0.5])
def test_jacobi_50_sweeps_on_4_workers_equal_reference_bitwise(boundary):
    rng = np.random.default_rng(3)
    u0 = rng.random((203, 41))
    pool = shared_pool(4, START_METHODS[-1])
    u, out = pool.array(u0), pool.array(u0)
    last = pool.iterate(stencils.jacobi2d, out, u, steps=50, boundary=boundary)
    ref_u, ref_out = u0.copy(), u0.copy()
    for _ in range(50):
        run_reference(stencils.jacobi2d, [ref_out, ref_u], boundary)
        ref_u, ref_out = ref_out, ref_u
    np.testing.assert_array_equal(np.asarray(last), ref_u)
    for a in (u, out):
        a.free()


def test_iterate_matches_one_map_per_sweep_and_inline():
    u0 = np.random.default_rng(4).random(10_001)
    results = []
    for pool in (shared_pool(3, START_METHODS[-1]), sc.Pool(3, backend="inline")):
        u, out = pool.array(u0), pool.array(u0)
        results.append(np.array(pool.iterate(stencils.heat1d, out, u, 0.2, steps=7)))
        if pool.start_method == "inline":
            pool.close()
        else:
            u.free()
            out.free()
    pool = shared_pool(2, START_METHODS[-1])
    a, b = pool.array(u0), pool.array(u0)
    for _ in range(7):
        pool.map(stencils.heat1d, b, a, 0.2)
        a, b = b, a
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], np.asarray(a))
    a.free()
    b.free()


def test_iterate_stops_early_on_the_residual():
    n = 64
    u0 = np.zeros((n, n))
    u0[0] = 1.0
    results = []
    for pool in (shared_pool(2, START_METHODS[-1]), sc.Pool(2, backend="inline")):
        u, out = pool.array(u0), pool.array(u0)
        last = pool.iterate(stencils.jacobi2d, out, u, steps=100_000,
                            residual=reductions.max_abs_diff, tol=1e-4, check_every=5)
        results.append(np.array(last))
        diff = pool.reduce(reductions.max_abs_diff, out, u)
        assert 0 < diff <= 1e-4  # the last two sweeps differ by at most tol
        if pool.start_method == "inline":
            pool.close()
        else:
            u.free()
            out.free()
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name", ["total", "dot", "sum_squares", "minmax", "mean_var",
                                  "histogram", "max_abs_diff", "cumsum", "monte_carlo_pi"])
def test_reductions_scans_and_monte_carlo_are_bitwise_identical_for_1_to_4_workers(name):
    entry = ENTRIES[name]
    args, kwargs = entry.make(np.random.default_rng(5), 100_003, entry.dtypes[0])
    outs = []
    for n in (1, 2, 3, 4):
        pool = shared_pool(n, START_METHODS[-1])
        shared = share_args(pool, args)
        if entry.kernel.kind == "reduce":
            value = pool.reduce(entry.kernel, *shared, **kwargs)
            outs.append(np.concatenate([np.ravel(v) for v in
                                        (value if isinstance(value, tuple) else (value,))]))
        else:
            outs.append(np.array(pool.map(entry.kernel, *shared, **kwargs)))
        for a in shared:
            if isinstance(a, sc.SharedArray):
                a.free()
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


# -- property tests, one per family --------------------------------------------------------------
finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@settings(max_examples=15)
@given(values=st.lists(finite, max_size=3000), alpha=finite, n_workers=st.integers(1, 4))
def test_property_elementwise_axpy(values, alpha, n_workers):
    pool = shared_pool(n_workers, START_METHODS[-1])
    x = np.array(values, dtype=np.float64)
    y0 = np.linspace(-1, 1, x.size)
    y = pool.array(y0)
    pool.map(ENTRIES["axpy"].kernel, y, pool.array(x), alpha)
    np.testing.assert_array_equal(np.asarray(y), y0 + alpha * x)
    y.free()


@settings(max_examples=15)
@given(values=st.lists(finite, min_size=1, max_size=3000), n_workers=st.integers(1, 4))
def test_property_reductions_minmax_mean_var(values, n_workers):
    pool = shared_pool(n_workers, START_METHODS[-1])
    x = pool.array(np.array(values))
    lo, hi = pool.reduce(reductions.minmax, x)
    assert (lo, hi) == (min(values), max(values))
    count, mean, var = pool.reduce(reductions.mean_var, x)
    assert count == len(values)
    np.testing.assert_allclose([mean, var], [np.mean(values), np.var(values)], rtol=1e-9,
                               atol=1e-9)
    x.free()


@settings(max_examples=15)
@given(rows=st.integers(1, 60), cols=st.integers(1, 9), n_workers=st.integers(1, 4),
       boundary=st.sampled_from(["none", "reflect", "periodic", "nearest", -1.0]),
       seed=st.integers(0, 1000))
def test_property_stencil_blur_matches_reference(rows, cols, n_workers, boundary, seed):
    pool = shared_pool(n_workers, START_METHODS[-1])
    img = pool.array(np.random.default_rng(seed).random((rows, cols)))
    out = pool.zeros((rows, cols))
    report = sc.verify(pool, stencils.blur3x3, out, img, boundary=boundary)
    assert report.ok, report
    img.free()
    out.free()


@settings(max_examples=15)
@given(values=st.lists(st.integers(-10**6, 10**6), max_size=5000), n_workers=st.integers(1, 4))
def test_property_scan_cumsum_of_integers_is_exact(values, n_workers):
    pool = shared_pool(n_workers, START_METHODS[-1])
    x = pool.array(np.array(values, dtype=np.int64))
    out = pool.zeros(len(values), np.int64)
    pool.map(scans.cumsum, out, x)
    np.testing.assert_array_equal(np.asarray(out), np.cumsum(np.array(values, dtype=np.int64)))
    x.free()
    out.free()


@settings(max_examples=10)
@given(rows=st.integers(1, 40), cols=st.integers(1, 30), max_iter=st.integers(1, 40),
       n_workers=st.integers(1, 4))
def test_property_mandelbrot_matches_reference_exactly(rows, cols, max_iter, n_workers):
    pool = shared_pool(n_workers, START_METHODS[-1])
    out = pool.zeros((rows, cols), np.int32)
    pool.map(compute.mandelbrot, out, -2.0, 1.0, -1.2, 1.2, max_iter)
    want = np.zeros((rows, cols), np.int32)
    compute.mandelbrot_reference(want, -2.0, 1.0, -1.2, 1.2, max_iter)
    np.testing.assert_array_equal(np.asarray(out), want)
    out.free()


@settings(max_examples=10)
@given(rows=st.integers(1, 64), seed=st.integers(0, 2**20), n_workers=st.integers(1, 4))
def test_property_monte_carlo_is_seeded_per_row(rows, seed, n_workers):
    pool = shared_pool(n_workers, START_METHODS[-1])
    got = pool.reduce(compute.monte_carlo_pi, 50, seed, rows=rows)
    assert got == compute.monte_carlo_pi_reference(50, seed, rows)
