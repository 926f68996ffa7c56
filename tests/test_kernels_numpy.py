"""Every library kernel against the NumPy/SciPy function a user would compare it with
(never against the kernels' own ``reference=``), on NaN, ±inf, ±0, values on bin edges,
huge offsets, empty and one-element arrays, int32 near overflow and float32, for 1-3
workers and many small chunks (``chunk_rows=``), so offsets and combines run for real."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings, strategies as st

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute.errors import InputError
from sharedcompute.kernels import compute, elementwise, reductions, scans, stencils
from sharedcompute.kernels.registry import ENTRIES, library_kernels, share_args

I32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def inline():
    pools = {n: sc.Pool(n, backend="inline") for n in (1, 2, 3)}
    yield pools
    for p in pools.values():
        p.close()


def procpool(n=2):
    return shared_pool(n, START_METHODS[-1])


def run(pool, kernel, *args, chunk_rows=None, **kw):
    """Share the array arguments, run, copy results out, free. Map: the written arrays.
    ``chunk_rows`` is capped at the rows split (more is refused: one chunk is all rows)."""
    shared = share_args(pool, args)
    split = [a.shape[0] for i, a in enumerate(shared)
             if isinstance(a, sc.SharedArray) and a.ndim and i not in kernel.whole]
    split += [kw["rows"]] if kw.get("rows") is not None else []
    if chunk_rows is not None and split:
        chunk_rows = min(chunk_rows, max(split[0], 1))
    try:
        if kernel.kind == "reduce":
            return pool.reduce(kernel, *shared, chunk_rows=chunk_rows, **kw)
        pool.map(kernel, *shared, chunk_rows=chunk_rows, **kw)
        outs = [np.array(shared[i]) for i in kernel.writes]
        return outs[0] if len(outs) == 1 else tuple(outs)
    finally:
        for a in shared:
            if isinstance(a, sc.SharedArray):
                a.free()


def same(got, want, rtol=0.0, atol=0.0):
    """Equal within tolerance; NaNs in the same places; infinities equal."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(want) & (got == want), np.isinf(want))
    m = np.isfinite(want)
    err = np.abs(got[m] - want[m])
    bound = atol + rtol * np.abs(want[m])
    assert np.all(err <= bound), f"max err {err.max() if err.size else 0} > bound"


specials = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0])
finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)
floats_with_specials = st.lists(st.one_of(finite, specials), max_size=300)
workers = st.integers(1, 3)
chunks = st.sampled_from([None, 1, 7, 64])


# -- the oracle table: every registry entry is compared with its NumPy/SciPy function ----------
def _modes(boundary):
    return {"reflect": "reflect", "nearest": "nearest", "periodic": "wrap"}.get(boundary,
                                                                               "constant")


def _oracle_map(name, args, got, boundary=None):
    a = [np.asarray(v) if isinstance(v, np.ndarray) else v for v in args]
    eps32 = float(np.finfo(np.float32).eps)
    if name == "triad":
        want = a[1] + a[3] * a[2]
        same(got, want.astype(a[0].dtype), 4 * eps32 if a[0].dtype == np.float32 else 1e-15)
    elif name == "axpy":
        want = a[0].copy()
        want += a[2] * a[1]
        same(got, want, 4 * eps32 if a[0].dtype == np.float32 else 1e-15)
    elif name == "logistic_map":
        v = a[1].copy()
        for _ in range(a[3]):
            v = a[2] * v * (1 - v)
        np.testing.assert_array_equal(got, v)
    elif name in ("jacobi2d", "jacobi2d_residual"):
        b = boundary or "none"
        k = np.array([[0, .25, 0], [.25, 0, .25], [0, .25, 0]])
        want = ndi.correlate(a[1].astype(np.float64), k, mode=_modes(b),
                             cval=b if not isinstance(b, str) else 0.0)
        rows = slice(1, -1) if b == "none" else slice(None)
        tol = 8 * eps32 if a[1].dtype == np.float32 else 1e-14
        same(got[rows, 1:-1], want[rows, 1:-1], tol, tol)
        np.testing.assert_array_equal(got[rows, [0, -1]] if got.shape[1] else got[rows],
                                      a[1][rows, [0, -1]] if got.shape[1] else a[1][rows])
    elif name == "heat1d":
        b = boundary or "none"
        u = a[1].astype(np.float64)
        want = u + float(a[2]) * ndi.correlate1d(u, [1.0, -2.0, 1.0], mode=_modes(b),
                                                 cval=b if not isinstance(b, str) else 0.0)
        rows = slice(1, -1) if b == "none" else slice(None)
        tol = 8 * eps32 if a[1].dtype == np.float32 else 1e-14
        same(got[rows], want[rows], tol, tol)
    elif name == "blur3x3":
        b = boundary or "reflect"
        img = a[1].astype(np.float64)
        cval = b if not isinstance(b, str) else 0.0
        if np.isfinite(img).all():
            want = ndi.uniform_filter(img, size=3, mode=(_modes(b), "reflect"), cval=cval)
        else:  # uniform_filter's running sums smear a NaN along the row: sum directly
            padded = np.pad(img, ((0, 0), (1, 1)), mode="symmetric")  # = scipy 'reflect'
            want = ndi.correlate(padded, np.full((3, 3), 1 / 9), mode=_modes(b),
                                 cval=cval)[:, 1:-1]
        rows = slice(1, -1) if b == "none" else slice(None)
        tol = 4 * eps32 if a[1].dtype == np.float32 else 1e-14
        same(got[rows], want[rows], tol, tol)
    elif name == "cumsum":
        x = a[1]
        if x.dtype.kind in "iu":
            want = np.empty_like(a[0])
            np.cumsum(x, out=want)
            np.testing.assert_array_equal(got, want)
        else:
            want = np.cumsum(x.astype(np.float64))
            x64 = x.astype(np.float64)
            scale = np.cumsum(np.abs(np.where(np.isfinite(x64), x64, 0.0)))
            eps = eps32 if a[0].dtype == np.float32 else 2.0**-52
            same(got, want, eps, len(x) * 2.0**-52 * scale.max(initial=0.0) + 0.0)
    elif name == "mandelbrot":
        np.testing.assert_array_equal(got, _numpy_mandelbrot(got.shape, *a[1:]))
    elif name == "matmul":
        want = a[1] @ a[2]
        tol = 1e-5 if a[1].dtype == np.float32 else 1e-12
        same(got, want, tol, tol * max(1.0, float(np.abs(a[1]).sum(initial=0.0))))
    else:
        raise AssertionError(f"no NumPy oracle for map kernel {name}")


def _oracle_reduce(name, args, got, kwargs=None):
    a = [np.asarray(v) if isinstance(v, np.ndarray) else v for v in args]
    isint = all(v.dtype.kind in "iu" for v in a if isinstance(v, np.ndarray))
    if name in ("total", "dot", "sum_squares"):
        x = a[0]
        y = a[1] if name == "dot" else x
        if isint:
            want = np.sum(x.astype(np.int64) * y.astype(np.int64)) if name != "total" \
                else np.sum(x)
            assert isinstance(got, np.int64) and got == want, (got, want)
        else:
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            want = np.sum(x64) if name == "total" else np.dot(x64, y64)
            scale = np.sum(np.abs(x64 * (y64 if name != "total" else 1.0)))
            assert isinstance(got, np.float64)
            same(got, want, 0, 1e-13 * scale if np.isfinite(scale) else 0.0)
    elif name == "minmax":
        want = (np.min(a[0]), np.max(a[0]))
        assert got[0].dtype == a[0].dtype
        same(np.array(got, np.float64), np.array(want, np.float64))
    elif name == "mean_var":
        x = a[0].astype(np.float64)
        if x.size == 0:
            assert got[0] == 0 and math.isnan(got[1]) and math.isnan(got[2])
            return
        k = x[0] if np.isfinite(x[0]) else 0.0
        same(got, (x.size, np.mean(x), np.var(x - k) if np.isfinite(x).all() else np.var(x)),
             1e-12, 1e-300)
    elif name == "histogram":
        want = np.histogram(a[0], bins=a[1], range=(a[2], a[3]))[0]
        np.testing.assert_array_equal(got, want)
    elif name == "max_abs_diff":
        d = np.abs(a[0].astype(np.float64) - a[1].astype(np.float64))
        want = np.max(d) if d.size else 0.0
        same(got, want)
    elif name == "monte_carlo_pi":
        rows = kwargs["rows"]
        hits = 0
        for r in range(rows):
            u = np.random.RandomState(a[1] + r).random_sample(2 * a[0])
            hits += int(np.count_nonzero(u[0::2] ** 2 + u[1::2] ** 2 < 1.0))
        assert got == 4.0 * hits / (rows * a[0])
    else:
        raise AssertionError(f"no NumPy oracle for reduction {name}")


ORACLE_NAMES = {  # the NumPy/SciPy function each docstring must name
    "triad": "b + s * c", "axpy": "y += alpha * x", "logistic_map": "r * v * (1 - v)",
    "total": "np.sum", "dot": "np.dot", "sum_squares": "np.sum", "minmax": "np.min",
    "mean_var": "np.var", "histogram": "np.histogram", "max_abs_diff": "np.max",
    "jacobi2d": "scipy.ndimage.correlate", "jacobi2d_residual": "scipy.ndimage.correlate",
    "heat1d": "scipy.ndimage.correlate1d",
    "blur3x3": "scipy.ndimage.uniform_filter", "cumsum": "np.cumsum",
    "mandelbrot": "mandelbrot_reference", "matmul": "a @ b",
    "monte_carlo_pi": "np.random.RandomState",
}


def _numpy_mandelbrot(shape, x0, x1, y0, y1, max_iter):
    """Independent NumPy complex arithmetic (z = z*z + c, escape when |z|^2 > 4)."""
    n, m = shape
    c = (x0 + (x1 - x0) * (np.arange(m) / m))[None, :] + \
        1j * (y0 + (y1 - y0) * (np.arange(n) / n))[:, None]
    z = np.zeros_like(c)
    counts = np.full(shape, max_iter, np.int32)
    alive = np.ones(shape, bool)
    for k in range(max_iter):
        esc = alive & (z.real * z.real + z.imag * z.imag > 4.0)
        counts[esc] = k
        alive &= ~esc
        z = np.where(alive, z * z + c, z)
    return counts


def check_entry(pool, name, args, kwargs=None, chunk_rows=None, boundary=None):
    entry = ENTRIES[name]
    kwargs = kwargs or {}
    if entry.kernel.kind == "reduce":
        got = run(pool, entry.kernel, *args, chunk_rows=chunk_rows, **kwargs)
        _oracle_reduce(name, args, got, kwargs)
    else:
        if boundary is not None:
            kwargs = dict(kwargs, boundary=boundary)
        got = run(pool, entry.kernel, *args, chunk_rows=chunk_rows, **kwargs)
        _oracle_map(name, args, got, boundary)


def test_every_registry_entry_has_a_numpy_oracle_named_in_its_docstring():
    assert set(ORACLE_NAMES) == set(ENTRIES) == {k.name for k in library_kernels()}
    for name, fn in ORACLE_NAMES.items():
        doc = ENTRIES[name].kernel.__doc__ or ""
        assert fn in " ".join(doc.split()), f"{name}'s docstring does not name {fn}"
        assert ENTRIES[name].kernel.check is not None, f"{name} has no check="


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_registry_inputs_agree_with_numpy_for_each_dtype_and_size(name, inline):
    entry = ENTRIES[name]
    for dtype in entry.dtypes:
        for n in sorted({max(entry.min_rows, 0), 1, 2, 7, 130}):
            for w, cr in ((1, None), (2, 7), (3, 3)):
                args, kw = entry.make(np.random.default_rng(n), n, dtype)
                check_entry(inline[w], name, args, kw, chunk_rows=cr)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_registry_inputs_agree_with_numpy_on_a_process_pool(name):
    entry = ENTRIES[name]
    n = 12_347 if name not in ("mandelbrot", "matmul", "monte_carlo_pi", "jacobi2d",
                               "jacobi2d_residual", "blur3x3") else 61
    args, kw = entry.make(np.random.default_rng(7), n, entry.dtypes[-1])
    check_entry(procpool(3), name, args, kw, chunk_rows=None if n > 100 else 5)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_dtypes_outside_the_registry_list_are_refused_with_input_error(name, inline):
    entry = ENTRIES[name]
    pool = inline[2]
    for bad in ("int16", "complex128", "float16", "uint8"):
        if bad in entry.dtypes:
            continue
        args, kw = entry.make(np.random.default_rng(0), 9, entry.dtypes[0])
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        if not arrays:
            continue
        args = list(args)
        args[arrays[-1]] = args[arrays[-1]].astype(bad)
        with pytest.raises(InputError):
            run(pool, entry.kernel, *args, **kw)


# -- 1. cumsum ---------------------------------------------------------------------------------
@settings(max_examples=25)
@given(values=st.lists(st.integers(-2**31, I32_MAX), max_size=400),
       near=st.booleans(), out_dt=st.sampled_from(["int32", "int64"]),
       in_dt=st.sampled_from(["int32", "int64"]), w=workers, cr=chunks)
def test_integer_cumsum_is_exact_and_wraps_like_numpy(values, near, out_dt, in_dt, w, cr,
                                                       inline):
    x = np.array(values, dtype=np.int64)
    if near:  # sums well past 2^31
        x = np.clip(np.abs(x) + (I32_MAX - 1000), None, I32_MAX)
    x = x.astype(in_dt)
    want = np.empty(len(x), out_dt)
    np.cumsum(x, out=want)
    got = run(inline[w], scans.cumsum, np.zeros(len(x), out_dt), x, chunk_rows=cr)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.dtype(out_dt)


@pytest.mark.parametrize("base", [2**53, 2**62, -2**63 + 5])
def test_int64_cumsum_exact_near_2_53_and_wrapping_past_2_63(base, inline):
    x = np.full(1000, base, np.int64)
    x[1::2] = 1
    got = run(inline[3], scans.cumsum, np.zeros(1000, np.int64), x, chunk_rows=7)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, np.cumsum(x))


@settings(max_examples=25)
@given(values=floats_with_specials, dt=st.sampled_from(["float64", "float32"]), w=workers,
       cr=chunks)
def test_float_cumsum_matches_np_cumsum_to_rounding(values, dt, w, cr, inline):
    x = np.array(values, dtype=dt)
    got = run(inline[w], scans.cumsum, np.zeros(len(x), dt), x, chunk_rows=cr)
    _oracle_map("cumsum", (np.zeros(len(x), dt), x), got)
    if dt == "float32" and len(x):
        with np.errstate(invalid="ignore"):
            same(got, np.cumsum(x), 0, 1e-3 * max(1.0, np.nan_to_num(
                np.cumsum(np.abs(x.astype(np.float64))), posinf=0.0).max()))


def test_cumsum_large_int32_on_a_process_pool():
    x = np.full(300_001, 2**20, np.int32)  # total 3e11: past int32 and past float32's 2^24
    for out_dt in ("int64", "int32"):
        want = np.empty(len(x), out_dt)
        np.cumsum(x, out=want)
        got = run(procpool(3), scans.cumsum, np.zeros(len(x), out_dt), x)
        np.testing.assert_array_equal(got, want)


# -- 2. minmax ----------------------------------------------------------------------------------
@settings(max_examples=30)
@given(values=st.lists(st.one_of(finite, specials), min_size=1, max_size=300), w=workers,
       cr=chunks, dt=st.sampled_from(["float64", "float32"]))
def test_minmax_propagates_nan_from_any_chunk_like_np_min_max(values, w, cr, dt, inline):
    x = np.array(values, dtype=dt)
    got = run(inline[w], reductions.minmax, x, chunk_rows=cr)
    _oracle_reduce("minmax", (x,), got)


def test_minmax_nan_late_in_a_large_array_and_ints_on_a_process_pool():
    x = np.random.default_rng(1).random(250_000)
    x[-3] = np.nan
    lo, hi = run(procpool(2), reductions.minmax, x)
    assert math.isnan(lo) and math.isnan(hi)
    xi = np.random.default_rng(1).integers(-2**31, 2**31, 250_000).astype(np.int32)
    assert run(procpool(2), reductions.minmax, xi) == (np.min(xi), np.max(xi))


# -- 3. histogram ------------------------------------------------------------------------------
@st.composite
def histogram_case(draw):
    dt = draw(st.sampled_from(["float64", "float32", "int32", "int64"]))
    bins = draw(st.integers(1, 40))
    if dt.startswith("int"):
        lo = draw(st.integers(-20, 20))
        hi = lo + draw(st.integers(0, 40))
        vals = draw(st.lists(st.integers(lo - 3, hi + 3), max_size=300))
        return np.array(vals, dtype=dt), bins, lo, hi
    lo = draw(st.floats(-1e3, 1e3, allow_nan=False))
    hi = lo + draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0, 7.0, 1e3]))
    edges = np.linspace(lo if lo != hi else lo - 0.5, hi if lo != hi else hi + 0.5, bins + 1,
                        dtype=dt)
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    pool_vals = st.one_of(st.sampled_from(list(near) + [lo, hi, np.nan, np.inf, -np.inf]),
                          st.floats(lo - 1, hi + 1, allow_nan=False))
    vals = draw(st.lists(pool_vals, max_size=300))
    return np.array(vals, dtype=dt), bins, lo, hi


@settings(max_examples=40)
@given(case=histogram_case(), w=workers, cr=chunks)
def test_histogram_counts_identical_to_np_histogram(case, w, cr, inline):
    x, bins, lo, hi = case
    got = run(inline[w], reductions.histogram, x, bins, lo, hi, chunk_rows=cr)
    np.testing.assert_array_equal(got, np.histogram(x, bins=bins, range=(lo, hi))[0])


def test_histogram_large_float32_on_a_process_pool():
    x = np.random.default_rng(2).uniform(-0.1, 1.1, 300_000).astype(np.float32)
    x[:301] = np.linspace(0.0, 1.0, 301, dtype=np.float32)  # on the edges of 300 bins
    got = run(procpool(3), reductions.histogram, x, 300, 0.0, 1.0)
    np.testing.assert_array_equal(got, np.histogram(x, bins=300, range=(0.0, 1.0))[0])


# -- 4. mean_var ---------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0.0, 1e9, 1e12, -1e12])
def test_mean_var_precise_at_huge_offsets_and_bitwise_for_any_worker_count(offset, inline):
    x = offset + np.random.default_rng(3).random(200_003)
    results = [run(inline[w], reductions.mean_var, x) for w in (1, 2, 3)]
    results += [run(inline[2], reductions.mean_var, x, chunk_rows=997),
                run(procpool(3), reductions.mean_var, x)]
    for r in results[1:4] + results[4:]:
        if r is not results[3]:
            assert r == results[0]  # bitwise, any worker count, process pool included
    n, mean, var = results[0]
    exact = np.var(x - x[0])  # the shift is exact here; np.var(x) itself drifts at 1e12
    assert n == x.size and abs(mean - np.mean(x)) <= 1e-15 * max(abs(offset), 1)
    assert abs(var - exact) <= 1e-12 * exact
    if abs(offset) <= 1e9:
        assert abs(var - np.var(x)) <= 1e-12 * np.var(x)
    assert abs(results[3][2] - exact) <= 1e-12 * exact  # a different chunking, same accuracy


@settings(max_examples=30)
@given(values=st.lists(st.one_of(st.floats(-1e3, 1e3), specials), max_size=300),
       offset=st.sampled_from([0.0, 1e9, 1e12]), w=workers, cr=chunks)
def test_mean_var_matches_np_mean_np_var(values, offset, w, cr, inline):
    x = np.array(values, dtype=np.float64) + offset
    got = run(inline[w], reductions.mean_var, x, chunk_rows=cr)
    if x.size == 0:
        assert got[0] == 0 and math.isnan(got[1]) and math.isnan(got[2])
        return
    with np.errstate(invalid="ignore"):
        want_mean, want_var = np.mean(x), np.var(x - x[0]) if np.isfinite(x).all() else np.var(x)
    assert got[0] == x.size
    same(got[1], want_mean, 1e-15, 1e-12)
    if np.isfinite(x).all():
        same(got[2], want_var, 1e-10, 1e-12)
    else:
        assert math.isnan(got[2])


def test_mean_var_special_values_match_numpy(inline):
    for vals in ([1.0, np.inf, 3.0], [np.inf, -np.inf], [np.nan, 1.0], [-np.inf, 2.0, -np.inf],
                 [5.0]):
        x = np.array(vals)
        got = run(inline[3], reductions.mean_var, x, chunk_rows=1)
        with np.errstate(invalid="ignore"):
            same(got, (x.size, np.mean(x), np.var(x)))
    assert run(inline[1], reductions.mean_var, np.zeros(0))[0] == 0


# -- 5. sums, dot, max_abs_diff -------------------------------------------------------------------
@settings(max_examples=25)
@given(values=st.lists(st.integers(-2**31, I32_MAX), max_size=300),
       dt=st.sampled_from(["int32", "int64"]), w=workers, cr=chunks)
def test_integer_sums_are_exact_int64_like_np_sum(values, dt, w, cr, inline):
    x = np.array(values, dtype=dt)
    y = x[::-1].copy()
    assert run(inline[w], reductions.total, x, chunk_rows=cr) == np.sum(x)
    assert run(inline[w], reductions.dot, x, y, chunk_rows=cr) == np.dot(x.astype(np.int64),
                                                                        y.astype(np.int64))
    got = run(inline[w], reductions.sum_squares, x, chunk_rows=cr)
    assert isinstance(got, np.int64) and got == np.sum(x.astype(np.int64) ** 2)


def test_int64_sums_wrap_like_numpy_and_are_exact_past_2_53(inline):
    x = np.array([2**53, 1, 1, 1] * 100, np.int64)
    assert run(inline[3], reductions.total, x, chunk_rows=7) == np.sum(x)
    big = np.full(64, 2**62, np.int64)
    assert run(inline[3], reductions.total, big, chunk_rows=3) == np.sum(big)
    assert run(inline[2], reductions.sum_squares, big, chunk_rows=3) == np.dot(big, big)


@settings(max_examples=25)
@given(values=floats_with_specials, dt=st.sampled_from(["float64", "float32"]), w=workers,
       cr=chunks)
def test_float_sums_and_max_abs_diff_match_numpy(values, dt, w, cr, inline):
    x = np.array(values, dtype=dt)
    y = np.roll(x, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        for name, args in (("total", (x,)), ("dot", (x, y)), ("sum_squares", (x,)),
                           ("max_abs_diff", (x, y))):
            got = run(inline[w], ENTRIES[name].kernel, *args, chunk_rows=cr)
            _oracle_reduce(name, args, got)
        if dt == "float32" and np.isfinite(x).all() and x.size:  # vs np.sum's float32 result
            same(run(inline[w], reductions.total, x), np.sum(x), 0,
                 1e-6 * np.sum(np.abs(x.astype(np.float64))))


def test_sums_on_large_arrays_on_a_process_pool():
    rng = np.random.default_rng(4)
    xi = rng.integers(-2**31, 2**31, 400_000).astype(np.int32)
    assert run(procpool(2), reductions.total, xi) == np.sum(xi)
    xf = rng.random(400_000)
    same(run(procpool(2), reductions.total, xf), np.sum(xf), 1e-13)
    xf[123_456] = np.nan
    assert math.isnan(run(procpool(2), reductions.max_abs_diff, xf, np.zeros_like(xf)))


# -- 6. elementwise, stencils, compute ------------------------------------------------------------
@settings(max_examples=20)
@given(values=floats_with_specials, s=st.one_of(finite, specials),
       dt=st.sampled_from(["float64", "float32"]), w=workers, cr=chunks)
def test_elementwise_match_numpy_with_specials(values, s, dt, w, cr, inline):
    b = np.array(values, dtype=dt)
    c = np.roll(b, 1)
    with np.errstate(all="ignore"):
        got = run(inline[w], elementwise.triad, np.zeros_like(b), b, c, s, chunk_rows=cr)
        np.testing.assert_array_equal(got, b + s * c)  # float32 stays float32 (weak s)
        y = np.linspace(-1, 1, b.size).astype(dt)
        got = run(inline[w], elementwise.axpy, y, b, s, chunk_rows=cr)
        want = y.copy()
        want += s * b
        np.testing.assert_array_equal(got, want)
        x = np.clip(np.nan_to_num(b, nan=0.5), 0, 1)
        got = run(inline[w], elementwise.logistic_map, np.zeros_like(x), x, 3.7, 30,
                  chunk_rows=cr)
        _oracle_map("logistic_map", (np.zeros_like(x), x, 3.7, 30), got)


def test_integer_triad_wraps_like_numpy(inline):
    b = np.full(50, I32_MAX, np.int32)
    c = np.arange(50, dtype=np.int32)
    got = run(inline[3], elementwise.triad, np.zeros_like(b), b, c, 3, chunk_rows=4)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, b + 3 * c)


@settings(max_examples=20)
@given(rows=st.integers(1, 40), cols=st.integers(0, 9), w=workers,
       boundary=st.sampled_from(["none", "reflect", "periodic", "nearest", -1.5]),
       dt=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 99),
       special=st.booleans())
def test_stencils_match_scipy_ndimage_modes(rows, cols, w, boundary, dt, seed, special, inline):
    rng = np.random.default_rng(seed)
    u = rng.random((rows, cols)).astype(dt)
    if special and u.size:
        u.flat[rng.integers(u.size)] = rng.choice([np.nan, np.inf])
    pool = inline[w]
    with np.errstate(invalid="ignore"):
        if cols:
            check_entry(pool, "blur3x3", (np.zeros_like(u), u), chunk_rows=2, boundary=boundary)
        if cols >= 2:
            check_entry(pool, "jacobi2d", (np.zeros_like(u), u), chunk_rows=3,
                        boundary=boundary)
        v = u[:, 0].copy() if cols else rng.random(rows).astype(dt)
        check_entry(pool, "heat1d", (np.zeros_like(v), v, np.dtype(dt).type(0.2)),
                    chunk_rows=2, boundary=boundary)


@settings(max_examples=15)
@given(n=st.integers(0, 20), k=st.integers(0, 6), p=st.integers(1, 5), w=workers,
       dt=st.sampled_from(["float64", "float32"]), special=st.booleans(),
       seed=st.integers(0, 99))
def test_matmul_matches_a_at_b(n, k, p, w, dt, special, seed, inline):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, k)).astype(dt)
    b = rng.standard_normal((k, p)).astype(dt)
    if special and a.size:
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
    with np.errstate(invalid="ignore"):
        check_entry(inline[w], "matmul", (np.zeros((n, p), dt), a, b), chunk_rows=3)


@settings(max_examples=10)
@given(rows=st.integers(1, 30), cols=st.integers(1, 20), max_iter=st.integers(0, 40),
       w=workers)
def test_mandelbrot_matches_numpy_complex_arithmetic(rows, cols, max_iter, w, inline):
    check_entry(inline[w], "mandelbrot",
                (np.zeros((rows, cols), np.int32), -2.0, 1.0, -1.2, 1.2, max_iter),
                chunk_rows=4)


@settings(max_examples=8)
@given(rows=st.integers(1, 40), seed=st.integers(0, 2**31), w=workers)
def test_monte_carlo_pi_matches_randomstate_streams(rows, seed, w, inline):
    got = inline[w].reduce(compute.monte_carlo_pi, 30, seed, rows=rows)
    _oracle_reduce("monte_carlo_pi", (30, seed), got, {"rows": rows})


# -- 7. invalid parameters: InputError in the caller, before any work ------------------------------
def _x(n=10, dt=np.float64):
    return np.arange(n, dtype=dt)


INVALID = [
    ("histogram bins=0", reductions.histogram, lambda: (_x(), 0, 0.0, 1.0)),
    ("histogram bins<0", reductions.histogram, lambda: (_x(), -3, 0.0, 1.0)),
    ("histogram bins float", reductions.histogram, lambda: (_x(), 2.5, 0.0, 1.0)),
    ("histogram lo>hi", reductions.histogram, lambda: (_x(), 4, 1.0, 0.0)),
    ("histogram lo nan", reductions.histogram, lambda: (_x(), 4, np.nan, 1.0)),
    ("histogram hi inf", reductions.histogram, lambda: (_x(), 4, 0.0, np.inf)),
    ("histogram too many bins", reductions.histogram,
     lambda: (_x(dt=np.float32), 1000, 1.0, 1.0 + 1e-6)),
    # (2-D x and 2-D total were refused here before issue 13; N-D input is now reduced over
    # all elements: tests/test_kernels_nd.py)
    ("minmax empty", reductions.minmax, lambda: (np.zeros(0),)),
    ("dot lengths", reductions.dot, lambda: (_x(10), sc.whole(_x(9)))),
    ("max_abs_diff shapes", reductions.max_abs_diff, lambda: (np.zeros((4, 2)), np.zeros((4, 3)))),
    ("cumsum float into int out", scans.cumsum, lambda: (np.zeros(10, np.int64), _x())),
    ("cumsum 2-D", scans.cumsum, lambda: (np.zeros((5, 2)), np.zeros((5, 2)))),
    ("axpy float into int y", elementwise.axpy,
     lambda: (np.zeros(10, np.int32), _x(dt=np.int32), 2.5)),
    ("triad s not a number", elementwise.triad, lambda: (_x(), _x(), _x(), "2")),
    ("logistic n_iter<0", elementwise.logistic_map, lambda: (_x(), _x(), 3.7, -1)),
    ("logistic n_iter float", elementwise.logistic_map, lambda: (_x(), _x(), 3.7, 2.0)),
    ("heat1d 2-D", stencils.heat1d, lambda: (np.zeros((5, 5)), np.zeros((5, 5)), 0.1)),
    ("jacobi2d shapes", stencils.jacobi2d, lambda: (np.zeros((5, 5)), np.zeros((5, 4)))),
    ("blur3x3 1-D", stencils.blur3x3, lambda: (np.zeros(5), np.zeros(5))),
    ("matmul inner dims", compute.matmul,
     lambda: (np.zeros((4, 3)), np.zeros((4, 5)), sc.whole(np.zeros((6, 3))))),
    ("matmul c shape", compute.matmul,
     lambda: (np.zeros((4, 2)), np.zeros((4, 5)), sc.whole(np.zeros((5, 3))))),
    ("mandelbrot max_iter<0", compute.mandelbrot,
     lambda: (np.zeros((4, 4), np.int32), -2.0, 1.0, -1.0, 1.0, -5)),
    ("mandelbrot out float", compute.mandelbrot,
     lambda: (np.zeros((4, 4)), -2.0, 1.0, -1.0, 1.0, 5)),
    ("mandelbrot nan bound", compute.mandelbrot,
     lambda: (np.zeros((4, 4), np.int32), np.nan, 1.0, -1.0, 1.0, 5)),
]


@pytest.mark.parametrize("label,kern,make", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_parameters_raise_input_error_before_work(label, kern, make, inline):
    for pool in (inline[2], procpool(2)):
        args = make()
        shared = []
        for a in args:
            inner = getattr(a, "array", None) if not isinstance(a, np.ndarray) else None
            if isinstance(a, np.ndarray):
                shared.append(pool.array(a))
            elif isinstance(inner, np.ndarray):
                shared.append(sc.whole(pool.array(inner)))
            else:
                shared.append(a)
        before = [np.array(a) for a in shared if isinstance(a, sc.SharedArray)]
        try:
            with pytest.raises(InputError):
                if kern.kind == "reduce":
                    pool.reduce(kern, *shared)
                else:
                    pool.map(kern, *shared)
            after = [np.array(a) for a in shared if isinstance(a, sc.SharedArray)]
            for b, a in zip(before, after):  # nothing was written
                np.testing.assert_array_equal(a, b)
        finally:
            for a in shared:
                a = getattr(a, "array", a)
                if isinstance(a, sc.SharedArray):
                    a.free()
        if kern.name == "histogram":  # NumPy refuses it too
            x, bins, lo, hi = args
            with pytest.raises((ValueError, TypeError)):
                np.histogram(x, bins=bins, range=(lo, hi))
        # the pool still works afterwards
        assert run(pool, reductions.total, np.arange(5.0)) == 10.0
    with pytest.raises(InputError):  # and a direct call refuses it too
        kern(*make())


def test_monte_carlo_pi_refuses_bad_seed_and_samples(inline):
    for args in ((-1, 3), (10, -1), (10, 2**32), (2.5, 3)):
        with pytest.raises(InputError):
            inline[1].reduce(compute.monte_carlo_pi, *args, rows=4)
    assert inline[1].reduce(compute.monte_carlo_pi, 10, 3, rows=4) > 0
