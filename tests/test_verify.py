"""verify: tolerances scaled to the computation (no false alarms on correct kernels, real
bugs still caught) and more than one splitting (partition-edge bugs show on small arrays
and on one worker too)."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sharedcompute as sc
import verifybugs as vb
from conftest import START_METHODS, shared_pool, wait_no_segments
from sharedcompute.kernels import compute, elementwise, reductions, scans, stencils
from sharedcompute.kernels.registry import ENTRIES, share_args
from sharedcompute.shared import list_segments

NAMES = sorted(ENTRIES)
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def inline_pools():
    pools = {n: sc.Pool(n, backend="inline") for n in (1, 2)}
    yield pools
    for p in pools.values():
        p.close()


@pytest.fixture(scope="module")
def real_pool():
    pool = sc.Pool(2)
    yield pool
    pool.close()


def _run(pool, kernel, *args, **kwargs):
    """verify on SharedArray copies of the NumPy inputs (freed afterwards)."""
    shared = [pool.array(a) if isinstance(a, np.ndarray) else a for a in args]
    try:
        return sc.verify(pool, kernel, *shared, **kwargs)
    finally:
        for a in shared:
            if isinstance(a, sc.SharedArray):
                a.free()


def _registry(pool, entry, n, dtype, seed=0):
    args, kwargs = entry.make(np.random.default_rng(seed), n, dtype)
    shared = share_args(pool, args)
    try:
        return sc.verify(pool, entry.kernel, *shared, **kwargs)
    finally:
        for a in shared:
            if isinstance(a, sc.SharedArray):
                a.free()


# -- the matmul false alarm --------------------------------------------------------------------
def test_issue_matmul_7x300_at_300x5_is_not_a_mismatch(inline_pools, real_pool):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 300)), rng.standard_normal((300, 5))
    for pool in (inline_pools[1], inline_pools[2], real_pool):
        report = _run(pool, compute.matmul, np.zeros((7, 5)), a, b)
        assert report.ok, report
        c = report.comparisons[0]
        assert c.scale == "sum|terms|" and c.n_terms == 5 + 300 + 1500
        assert c.rtol == pytest.approx((c.n_terms + 4) * EPS64)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(7, 300, 5), (1, 1000, 3), (33, 64, 17), (3, 2000, 1),
                                   (128, 5, 7), (2, 1, 2)])
def test_matmul_verifies_for_shapes_seeds_and_dtypes(inline_pools, shape, dtype):
    m, k, p = shape
    for seed in range(4):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, p)).astype(dtype)
        for pool in inline_pools.values():
            report = _run(pool, compute.matmul, np.zeros((m, p), dtype), a, b)
            assert report.ok, f"seed {seed}: {report}"


# -- every library kernel still verifies -------------------------------------------------------
@pytest.mark.parametrize("n_workers", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_every_library_kernel_verifies_inline(inline_pools, name, n_workers):
    entry = ENTRIES[name]
    pool = inline_pools[n_workers]
    for n in sorted({max(entry.min_rows, 1), 2, 3, 2 * n_workers + 1, 64, 1000, 12_347}):
        for dtype in entry.dtypes:
            report = _registry(pool, entry, n, dtype, seed=n)
            assert report.ok, f"n={n} {dtype}: {report}"
            expected = {"pool", "fine"} | ({"per-chunk"} if entry.kernel.kind == "map" else set())
            assert {c.splitting for c in report.comparisons} == expected


@pytest.mark.parametrize("name", NAMES)
def test_every_library_kernel_verifies_on_a_real_pool(real_pool, name):
    entry = ENTRIES[name]
    for n in sorted({max(entry.min_rows, 1), 3, 4099}):
        for dtype in entry.dtypes:
            report = _registry(real_pool, entry, n, dtype, seed=7)
            assert report.ok, f"n={n} {dtype}: {report}"


@pytest.mark.parametrize("boundary", ["none", "reflect", "periodic", "nearest", 0.5])
def test_stencils_verify_under_every_boundary(inline_pools, real_pool, boundary):
    rng = np.random.default_rng(2)
    for pool in (inline_pools[1], inline_pools[2], real_pool):
        for rows in (1, 2, 3, 10, 257):
            img = rng.random((rows, 6))
            for k in (stencils.blur3x3, stencils.jacobi2d):
                report = _run(pool, k, np.zeros((rows, 6)), img, boundary=boundary)
                assert report.ok, f"{k.name} rows={rows}: {report}"
            u = rng.standard_normal(rows)
            report = _run(pool, stencils.heat1d, np.zeros(rows), u, 0.25, boundary=boundary)
            assert report.ok, f"heat1d rows={rows}: {report}"


def test_a_correct_halo_kernel_verifies_where_its_no_halo_twin_fails(inline_pools):
    x = np.random.default_rng(3).standard_normal(9)
    for pool in inline_pools.values():
        assert _run(pool, vb.diff_with_halo, np.zeros(9), x).ok
        assert not _run(pool, vb.diff_no_halo, np.zeros(9), x).ok


def test_whole_plain_and_rows_arguments_verify(inline_pools, real_pool):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((40, 30)), rng.standard_normal((30, 6))
    for pool in (inline_pools[1], real_pool):
        c, sa, sb = pool.zeros((40, 6)), pool.array(a), pool.array(b)
        assert sc.verify(pool, compute.matmul, c, sa, sc.whole(sb)).ok   # sc.whole per call
        assert sc.verify(pool, compute.matmul, c, sa, b).ok              # a plain array: whole
        for x in (c, sa, sb):
            x.free()
        report = sc.verify(pool, compute.monte_carlo_pi, 50, 9, rows=37)
        assert report.ok and set(report.splittings) == {"pool", "fine"}


# -- the report --------------------------------------------------------------------------------
def test_report_shows_each_splitting_and_ok_needs_all(inline_pools):
    pool = inline_pools[1]
    x = np.random.default_rng(5).standard_normal(5)
    good = _run(pool, elementwise.triad, np.zeros(5), x, x, 2.0)
    assert good.ok and list(good.splittings) == ["pool", "fine", "per-chunk"]
    text = str(good)
    for word in ("splitting pool", "splitting fine", "splitting per-chunk", "5 chunks of 1 row"):
        assert word in text
    bad = _run(pool, vb.diff_no_halo, np.zeros(5), x)
    assert all(c.ok for c in bad.by_splitting("pool"))     # one chunk, one worker: looks right
    assert not bad.ok and "MISMATCH" in str(bad) and "FAILED" in str(bad)
    assert {c.splitting for c in bad.failed()} == {"per-chunk"}
    assert "worst at index (1,)" in bad.failed()[0].detail
    with pytest.raises(AssertionError):
        bad.raise_if_failed()
    red = _run(pool, reductions.total, x)
    assert list(red.splittings) == ["pool", "fine"] and len(red.comparisons) == 2


def test_callers_arrays_are_not_modified_and_copies_are_freed(real_pool, inline_pools):
    rng = np.random.default_rng(6)
    y0, x0 = rng.standard_normal(1000), rng.standard_normal(1000)
    for pool in (real_pool, inline_pools[2]):
        before = set(list_segments())
        y, x = pool.array(y0), pool.array(x0)
        plain = rng.standard_normal((5, 7))
        plain0 = plain.copy()
        out, a = pool.zeros((1000, 7)), pool.array(rng.standard_normal((1000, 5)))
        out0, a0 = np.array(out), np.array(a)
        assert sc.verify(pool, elementwise.axpy, y, x, 3.0).ok
        assert sc.verify(pool, compute.matmul, out, a, plain).ok
        assert sc.verify(pool, reductions.dot, x, y).ok
        np.testing.assert_array_equal(np.asarray(y), y0)
        np.testing.assert_array_equal(np.asarray(x), x0)
        np.testing.assert_array_equal(np.asarray(out), out0)
        np.testing.assert_array_equal(np.asarray(a), a0)
        np.testing.assert_array_equal(plain, plain0)
        for s in (y, x, out, a):
            s.free()
        assert wait_no_segments(before, deadline_s=0.0, creator=os.getpid()) == []  # ours


# -- bugs are caught ---------------------------------------------------------------------------
def _bug_inputs(name, rng, n):
    x = rng.standard_normal(n)
    return {
        "diff_no_halo": (vb.diff_no_halo, np.zeros(n), x),
        "smooth_clamped": (vb.smooth_clamped, np.zeros(n), x),
        "periodic_wraps_own_rows": (vb.periodic_wraps_own_rows, np.zeros(n), x),
        "index_ignores_start": (vb.index_ignores_start, np.zeros(n)),
        "sum_drops_last": (vb.sum_drops_last, x),
        "sum_biased": (vb.sum_biased, x),
        "sum_skips_later_starts": (vb.sum_skips_later_starts, x),
        "cumsum_restarts": (vb.cumsum_restarts, np.zeros(n), x),
        "int_sum_off_by_one": (vb.int_sum_off_by_one, rng.integers(-1000, 1000, n)),
        "matmul_skips_last_term": (vb.matmul_skips_last_term, np.zeros((n, 5)),
                                   rng.standard_normal((n, 40)), rng.standard_normal((40, 5))),
    }[name]


BUGS = ["diff_no_halo", "smooth_clamped", "periodic_wraps_own_rows", "index_ignores_start",
        "sum_drops_last", "sum_biased", "sum_skips_later_starts", "cumsum_restarts",
        "int_sum_off_by_one", "matmul_skips_last_term"]
# wrong only where a partition starts or ends: right while the array is one partition
EDGE_BUGS = {"diff_no_halo", "smooth_clamped", "periodic_wraps_own_rows",
             "index_ignores_start", "sum_skips_later_starts", "cumsum_restarts"}


@pytest.mark.parametrize("n_workers", [1, 2])
@pytest.mark.parametrize("bug", BUGS)
def test_bugs_are_caught_on_small_and_larger_arrays_and_one_worker(inline_pools, bug,
                                                                   n_workers):
    pool = inline_pools[n_workers]
    for n in (3, 64, 5000):
        for seed in range(2):
            kernel, *args = _bug_inputs(bug, np.random.default_rng(seed), n)
            report = _run(pool, kernel, *args)
            assert not report.ok, f"n={n} seed={seed}: {report}"
            if bug in EDGE_BUGS and n_workers == 1 and kernel.kind == "map":
                # one worker calls a map kernel once over all rows: its split sees no edge,
                # and only verify's finer splittings catch the bug (since the grid has at
                # least 16 chunks, a reduction's or scan's own chunks do catch it)
                assert all(c.ok for c in report.by_splitting("pool")), report


@pytest.mark.parametrize("bug", BUGS)
def test_bugs_are_caught_on_real_pools(real_pool, bug):
    for pool in (real_pool, shared_pool(1, START_METHODS[-1])):
        for n in (5, 3000):
            kernel, *args = _bug_inputs(bug, np.random.default_rng(n), n)
            report = _run(pool, kernel, *args)
            assert not report.ok, f"{pool.n_workers} workers n={n}: {report}"


@pytest.mark.parametrize("n", [10, 1000, 100_000])
def test_a_relative_error_of_1e6_in_a_sum_is_caught(inline_pools, n):
    rng = np.random.default_rng(n)
    for dtype in ("float64", "float32"):  # float32 inputs: the sum is accumulated in float64
        x = rng.standard_normal(n).astype(dtype)
        assert not _run(inline_pools[2], vb.sum_biased, x).ok
        assert _run(inline_pools[2], reductions.total, x).ok


def test_integers_are_compared_exactly(inline_pools):
    x = np.random.default_rng(8).integers(-10**6, 10**6, 777)
    assert _run(inline_pools[2], vb.int_sum, x).ok
    report = _run(inline_pools[2], vb.int_sum_off_by_one, x)
    assert not report.ok and all(c.rtol == 0 and c.atol == 0 for c in report.comparisons)
    assert vb.int_sum.tolerance(np.int64, 10**9) == (0.0, 0.0)
    assert compute.mandelbrot.tolerance(np.int32, 5) == (0.0, 0.0)


# -- no false alarms ---------------------------------------------------------------------------
def test_cancellation_heavy_sums_near_zero_pass(inline_pools):
    rng = np.random.default_rng(9)
    for n in (2, 10, 1001, 50_000):
        for dtype in ("float64", "float32"):
            half = rng.standard_normal(n // 2) * 10.0 ** rng.integers(-4, 9, n // 2)
            x = np.concatenate([half, -half, rng.standard_normal(n % 2)]).astype(dtype)
            rng.shuffle(x)
            y = rng.standard_normal(x.size).astype(dtype)
            for k, args in ((reductions.total, (x,)), (reductions.dot, (x, y)),
                            (scans.cumsum, (np.zeros(x.size, dtype), x)),
                            (reductions.mean_var, (x,))):
                report = _run(inline_pools[2], k, *args)
                assert report.ok, f"{k.name} n={n} {dtype}: {report}"


def test_large_normal_sums_pass_on_a_real_pool(real_pool):
    rng = np.random.default_rng(10)
    for dtype in ("float64", "float32"):
        x = rng.standard_normal(1_000_003).astype(dtype)
        y = rng.standard_normal(1_000_003).astype(dtype)
        for k, args in ((reductions.total, (x,)), (reductions.dot, (x, y)),
                        (reductions.sum_squares, (x,)), (reductions.mean_var, (x,)),
                        (scans.cumsum, (np.zeros(x.size, dtype), x))):
            report = _run(real_pool, k, *args)
            assert report.ok, f"{k.name} {dtype}: {report}"


@settings(max_examples=40)
@given(values=st.lists(st.floats(-1e250, 1e250, allow_nan=False, allow_infinity=False,
                                 width=64), max_size=2000),
       n_workers=st.sampled_from([1, 2]))
def test_property_a_correct_sum_never_fails_verify_float64(inline_pools, values, n_workers):
    x = np.array(values, dtype=np.float64)
    report = _run(inline_pools[n_workers], reductions.total, x)
    assert report.ok, report


@settings(max_examples=30)
@given(values=st.lists(st.floats(-2.0**100, 2.0**100, allow_nan=False, allow_infinity=False,
                                 width=32), min_size=1, max_size=2000),
       n_workers=st.sampled_from([1, 2]))
def test_property_correct_float32_sums_and_scans_never_fail(inline_pools, values, n_workers):
    x = np.array(values, dtype=np.float32)
    pool = inline_pools[n_workers]
    for k, args in ((reductions.total, (x,)), (vb.sum_in_float32, (x,)),
                    (scans.cumsum, (np.zeros(x.size, np.float32), x))):
        report = _run(pool, k, *args)
        assert report.ok, f"{k.name}: {report}"


# -- the tolerance rule and declarations -------------------------------------------------------
def test_tolerance_rule(inline_pools):
    k = vb.plain_sum
    tiny = float(np.finfo(np.float64).tiny)
    assert k.tolerance(np.float64, 10) == (14 * EPS64, 14 * EPS64 * tiny)
    eps32 = float(np.finfo(np.float32).eps)
    assert k.tolerance(np.float32, 1)[0] == pytest.approx(5 * eps32)
    # without n_terms (callers that cannot size the work: benchmarks): the fixed defaults
    assert compute.matmul.tolerance(np.float64) == (4 * EPS64, 0.0)
    assert reductions.total.tolerance(np.float64) == (np.sqrt(EPS64), np.sqrt(EPS64))
    seen = []

    def rtol(dtype, n, x):
        seen.append((dtype, n, x.shape, x.flags.writeable))
        return 1e-3
    k.rtol = rtol
    try:
        assert k.tolerance(np.float64, 7, (np.ones(3),))[0] == 1e-3
        report = _run(inline_pools[1], k, np.ones(4))
        assert report.ok and all(c.rtol == 1e-3 for c in report.comparisons)
        k.rtol = 0.5
        assert k.tolerance(np.int32, 7)[0] == 0.5   # a declared number applies to integers too
    finally:
        k.rtol = None
    assert seen[0] == (np.dtype(np.float64), 7, (3,), True)
    assert seen[1] == (np.dtype(np.float64), 4, (4,), False)   # verify: read-only copies


def test_a_declared_callable_tolerance_is_used(inline_pools):
    x = np.random.default_rng(11).standard_normal(20_000).astype(np.float32)
    undeclared = _run(inline_pools[2], vb.sum_in_float32_undeclared, x)
    assert not undeclared.ok   # float32 accumulation judged at float64's eps: declare it
    declared = _run(inline_pools[2], vb.sum_in_float32, x)
    assert declared.ok, declared
    n = declared.comparisons[0].n_terms
    assert declared.comparisons[0].rtol == pytest.approx((n + 4) * np.finfo(np.float32).eps)


def test_verify_rtol_atol_override_the_kernel(inline_pools):
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((7, 300)), rng.standard_normal((300, 5))
    pool = inline_pools[2]
    report = _run(pool, compute.matmul, np.zeros((7, 5)), a, b,
                  rtol=lambda dtype, n, c, a, b: (a.shape[1] + 4) * np.finfo(dtype).eps)
    assert report.ok and report.comparisons[0].rtol == pytest.approx(304 * EPS64)
    exact = _run(pool, compute.matmul, np.zeros((7, 5)), a, b, rtol=0.0, atol=0.0)
    assert all(c.rtol == 0 and c.atol == 0 for c in exact.comparisons)


def test_compare_handles_nan_inf_and_shapes():
    from sharedcompute.verify import compare as cmp
    assert cmp("x", [1.0, np.nan, np.inf], [1.0, np.nan, np.inf], 0.0, 0.0).ok
    assert not cmp("x", [1.0, np.nan], [1.0, 2.0], 1.0, 1.0).ok
    assert not cmp("x", [1.0, 5.0], [1.0, np.inf], 1.0, 1.0).ok   # infinity: exactly
    assert not cmp("x", [1.0], [1.0, 2.0], 1.0, 1.0).ok
    near_zero = cmp("s", [1e-13], [3e-13], 1e-15, 0.0, scale=[1e3])  # judged by sum|terms|
    assert near_zero.ok and near_zero.scale == "sum|terms|" and near_zero.max_rel > 0.5
    assert not cmp("s", [1e-13], [3e-13], 1e-15, 0.0).ok
    assert cmp("s", [1.0], [1.0], 0.0, 0.0, scale=[np.inf]).ok       # a non-finite scale: ignored
    assert not cmp("s", [1.1], [1.0], 1e-3, 0.0, scale=[np.inf]).ok
