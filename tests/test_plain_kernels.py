"""Plain-function kernels (jit=False), keyword arguments and call-time halos.

The oracle is the whole-array SciPy / NumPy / scikit-image call a user would compare with."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import ndimage

import sharedcompute as sc
import taskkernels as tk
from conftest import START_METHODS, shared_pool

BOUNDARIES = ["reflect", "mirror", "periodic", "nearest", 0.0, 2.5]


def _scipy_convolve(vol, boundary):
    cval = boundary if not isinstance(boundary, str) else 0.0
    return ndimage.convolve(vol, tk.WEIGHTS, mode=tk._scipy_mode(boundary), cval=cval)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("method", START_METHODS)
def test_scipy_convolve_with_halos_is_bitwise_the_whole_array_call(boundary, method):
    pool = shared_pool(2, method)
    rng = np.random.default_rng(7)
    vol = rng.standard_normal((23, 9, 7)).astype(np.float32)
    want = _scipy_convolve(vol, boundary)
    v, out = pool.array(vol), pool.empty(vol.shape, np.float32)
    for chunk_rows in (None, 1, 2, 5):  # many partition edges, sizes not divisible
        out.numpy()[:] = np.nan
        pool.map(tk.convolve3d, out, v, boundary, boundary=boundary, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(out.numpy(), want)
    v.free(), out.free()


@settings(max_examples=15)
@given(st.integers(0, 40), st.integers(1, 3), st.sampled_from(BOUNDARIES))
def test_convolve_any_rows_and_workers_inline_and_direct(n, workers, boundary):
    vol = np.random.default_rng(n).standard_normal((n, 4, 3))
    want = _scipy_convolve(vol, boundary) if n else vol.copy()
    with sc.Pool(workers, backend="inline") as pool:
        v, out = pool.array(vol), pool.empty(vol.shape)
        pool.map(tk.convolve3d, out, v, boundary, boundary=boundary)
        np.testing.assert_array_equal(out.numpy(), want)
    direct = np.empty_like(vol)
    tk.convolve3d(direct, vol, boundary, boundary=boundary)
    np.testing.assert_array_equal(direct, want)


def test_uniform_filter_with_running_sums_is_close_not_bitwise():
    # scipy's uniform_filter sums a running window along each line: where a block starts
    # changes the rounding, so it matches to rounding, not bit for bit (convolve does).
    pool = shared_pool(2, START_METHODS[-1])
    vol = np.random.default_rng(3).standard_normal((40, 16, 16))
    v, out = pool.array(vol), pool.empty(vol.shape)
    pool.map(tk.box_filter, out, v, 5, chunk_rows=3)
    np.testing.assert_allclose(out.numpy(), ndimage.uniform_filter(vol, 5, mode="reflect"),
                               rtol=1e-12, atol=1e-12)
    v.free(), out.free()


@pytest.mark.parametrize("method", START_METHODS)
def test_numpy_reduction_with_tuple_partials(method):
    pool = shared_pool(2, method)
    for x in (np.array([3.0]), np.arange(1000.0) - 500, np.array([np.inf, -1.0, 2.0])):
        a = pool.array(x)
        count, total, lo, hi = pool.reduce(tk.numpy_moments, a)
        assert (count, lo, hi) == (x.size, x.min(), x.max())
        assert total == pytest.approx(np.sum(x)) or (np.isinf(total) and np.isinf(np.sum(x)))
        a.free()
    e = pool.array(np.zeros(0))
    assert pool.reduce(tk.numpy_moments, e) == (0, 0.0, np.inf, -np.inf)
    e.free()


def test_scikit_image_style_function_writes_its_rows():
    pytest.importorskip("skimage")
    from skimage import exposure
    pool = shared_pool(2, START_METHODS[-1])
    img = np.random.default_rng(5).integers(0, 255, (37, 64)).astype(np.float64)
    x, out = pool.array(img), pool.empty(img.shape)
    pool.map(tk.rescale_rows, out, x, chunk_rows=4)
    want = np.stack([exposure.rescale_intensity(r, out_range=(0.0, 1.0)) for r in img])
    np.testing.assert_array_equal(out.numpy(), want)
    report = sc.verify(pool, tk.rescale_rows, out, x)  # verify treats it like numba kernels
    assert report.ok, report
    x.free(), out.free()


def test_plain_kernel_faults_are_those_of_numba_kernels():
    pool = shared_pool(2, START_METHODS[-1])
    x, out = pool.array(np.ones(100)), pool.zeros(100)
    with pytest.raises(sc.KernelError, match=r"read-only.*writes=\('out', 'x'\)"):
        pool.map(tk.plain_writes_undeclared, out, x)
    np.testing.assert_array_equal(x.numpy(), np.ones(100))  # nothing written
    pool.map(tk.plain_writes_declared, out, x)  # the advice, followed
    np.testing.assert_array_equal(x.numpy(), np.full(100, 2.0))
    with pytest.raises(sc.KernelError, match="ZeroDivisionError.*on purpose") as info:
        pool.map(tk.plain_raises, out, x)
    assert "plain_raises" in str(info.value.__cause__)
    with pytest.raises(sc.KernelTimeoutError):
        pool.map(tk.plain_sleep, out, x, 30.0, timeout=1.0)
    seen = []
    pool.map(tk.plain_sleep, out, x, 0.0, progress=lambda d, t: seen.append((d, t)),
             chunk_rows=10)
    assert seen[-1] == (10, 10)
    np.testing.assert_array_equal(out.numpy(), np.full(100, 2.0))
    x.free(), out.free()


@pytest.mark.parametrize("width", [1, 3, 7, 21])
def test_call_time_depth_from_a_variable(width):
    pool = shared_pool(2, START_METHODS[-1])
    xs = np.random.default_rng(width).standard_normal(200)
    x, out = pool.array(xs), pool.zeros(200)
    d = width // 2
    pool.map(tk.rolling_mean, out, x, width, depth=d, chunk_rows=13)
    want = np.convolve(xs, np.ones(width) / width, mode="valid")
    np.testing.assert_allclose(out.numpy()[d:200 - d], want, rtol=1e-13, atol=1e-13)
    assert not out.numpy()[:d].any() and not out.numpy()[200 - d:].any()  # 'none' edges
    x.free(), out.free()


def test_call_time_depth_and_boundary_for_numba_stencils():
    from sharedcompute.kernels.stencils import heat1d
    pool = shared_pool(2, START_METHODS[-1])
    u = pool.array(np.arange(10.0) ** 2)
    out = pool.zeros(10)
    pool.map(heat1d, out, u, 0.25, boundary="periodic")
    v = np.arange(10.0) ** 2
    np.testing.assert_allclose(out.numpy(), v + 0.25 * (np.roll(v, 1) - 2 * v + np.roll(v, -1)))
    with pytest.raises(sc.InputError, match="depth=-1 must be a non-negative integer"):
        pool.map(heat1d, out, u, 0.25, depth=-1)
    from sharedcompute.kernels.reductions import total
    with pytest.raises(sc.InputError, match="map kernels only"):
        total(np.ones(3), depth=1)
    u.free(), out.free()


def test_keyword_arguments_bind_by_name():
    from sharedcompute.kernels.elementwise import axpy
    from sharedcompute.kernels.reductions import total
    pool = shared_pool(2, START_METHODS[-1])
    y, x = pool.array(np.ones(5)), pool.array(np.arange(5.0))
    names = axpy.params  # (y, x, a) in the kernel library
    kwargs = {names[1]: x, names[2]: 10.0}
    np.testing.assert_array_equal(pool.map(axpy, y, **kwargs).numpy(), 1 + 10 * np.arange(5.0))
    assert float(pool.reduce(total, **{total.params[0]: x})) == 10.0
    with pytest.raises(sc.InputError, match="has no parameter 'r'"):
        pool.map(axpy, y, x, r=3.9)
    with pytest.raises(sc.InputError, match="twice"):
        pool.map(axpy, y, x, 1.0, **{names[1]: x})
    with pytest.raises(sc.InputError, match="missing arguments"):
        pool.map(axpy, y, **{names[1]: x})
    z = np.ones(5)
    axpy(z, **kwargs | {names[1]: np.arange(5.0)})  # direct calls bind names too
    np.testing.assert_array_equal(z, 1 + 10 * np.arange(5.0))
    y.free(), x.free()


def test_mirror_boundary_is_numpy_pad_reflect():
    from sharedcompute.partition import pad_whole
    for n in (1, 2, 3, 7):
        x = np.arange(float(n))
        for d in (1, 2, 5):
            got = pad_whole(x, d, "mirror")
            want = np.pad(x, d, mode="reflect") if n > 1 else np.full(n + 2 * d, x[0])
            np.testing.assert_array_equal(got, want)
