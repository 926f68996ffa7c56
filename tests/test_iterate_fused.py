"""Issue 15, iterate: stencils that also return their residual (combine= with depth=), and
temporal blocking (block_sweeps). Everything is compared with plain NumPy loops written
here, bitwise: the arrays, the sweep count and the residual."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sharedcompute as sc
from sharedcompute._iterate.plan import schedule
from sharedcompute.kernels.reductions import max_abs_diff
from sharedcompute.kernels.stencils import heat1d, jacobi2d, jacobi2d_residual

from conftest import START_METHODS, shared_pool


# -- NumPy loops (not the kernels' references) ------------------------------------------------
def jacobi_numpy(u, steps, tol=None, every=1):
    """(grid, sweeps run, last residual checked): 5-point average on the interior, edges
    fixed, max |new - old| as the residual, stopping when <= tol at every ``every``."""
    u, res, done = u.copy(), None, 0
    q = u.dtype.type(0.25)
    for _ in range(steps):
        new = u.copy()
        if u.shape[0] > 2 and u.shape[1] > 2:
            new[1:-1, 1:-1] = q * (((u[:-2, 1:-1] + u[2:, 1:-1]) + u[1:-1, :-2]) + u[1:-1, 2:])
        change = float(np.max(np.abs(new - u), initial=0.0))
        u, done = new, done + 1
        if tol is not None and done % every == 0:
            res = change
            if res <= tol:
                break
    return u, done, res


def smooth2_numpy(u, f, steps):
    """smooth2 (below) as a NumPy loop: depth 2, a source term, the row's global index."""
    u, n = u.copy(), u.shape[0]
    rows = np.arange(n, dtype=np.float64)
    for _ in range(steps):
        new = u.copy()
        if n > 4:
            new[2:-2] = (0.2 * ((((u[:-4] + u[1:-3]) + u[2:-2]) + u[3:-1]) + u[4:])
                         + 0.01 * f[2:-2] + 1e-3 * rows[2:-2] / n)
        u = new
    return u


from iteratekernels import smooth2, tuple_partial  # noqa: E402 - workers import them


def _run(pool, g, kernel=jacobi2d_residual, **kw):
    u, out = pool.array(g), pool.empty_like(g)
    try:
        r = pool.iterate(kernel, out, u, info=True, **kw)
        other = out if r.array is u else u
        return r, np.array(r.array), np.array(other), r.array is (out if r.sweeps % 2 else u)
    finally:
        u.free(), out.free()


# -- the kernel --------------------------------------------------------------------------------
def test_a_stencil_may_declare_combine_and_map_returns_the_written_array():
    assert jacobi2d_residual.fused and jacobi2d_residual.kind == "map"
    assert jacobi2d_residual.writes == (0,) and not jacobi2d.fused
    g = np.random.default_rng(1).random((40, 9))
    want = np.zeros_like(g)
    jacobi2d(want, g)
    pool = shared_pool(2, START_METHODS[-1])
    u, out = pool.array(g), pool.zeros_like(g)
    assert pool.map(jacobi2d_residual, out, u) is out  # the partial is dropped by map
    np.testing.assert_array_equal(np.asarray(out)[1:-1], want[1:-1])
    direct = np.zeros_like(g)
    assert jacobi2d_residual(direct, g) is direct
    np.testing.assert_array_equal(direct[1:-1], want[1:-1])
    u.free(), out.free()
    with sc.Pool(2, backend="inline") as inline:
        report = sc.verify(inline, jacobi2d_residual, inline.zeros_like(g), inline.array(g))
    assert report.ok, report


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_laplace_with_the_fused_residual_is_bitwise_the_numpy_loop(start_method, workers):
    g = np.zeros((150, 31))
    g[0] = 1.0
    g[:, -1] = 0.5
    want, sweeps, res = jacobi_numpy(g, 400, 1e-3, 1)
    assert sweeps < 400  # it converged, so the stop sweep is tested
    r, got, _, same_array = _run(shared_pool(workers, start_method), g, steps=400, tol=1e-3,
                                 check_every=1)
    assert same_array and (r.sweeps, r.residual) == (sweeps, res)
    np.testing.assert_array_equal(got, want)
    with sc.Pool(workers, backend="inline") as pool:
        r2, got2, _, _ = _run(pool, g, steps=400, tol=1e-3, check_every=1)
    assert (r2.sweeps, r2.residual) == (sweeps, res)
    np.testing.assert_array_equal(got2, want)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(0, 40), m=st.integers(0, 6), dtype=st.sampled_from(["float64", "float32"]),
       workers=st.integers(1, 3), steps=st.integers(0, 14), every=st.integers(1, 6),
       quantile=st.floats(0, 1), block=st.sampled_from([None, 1, 2, 3, 5]),
       fused=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_fused_and_blocked_equal_the_numpy_loop(n, m, dtype, workers, steps, every,
                                                          quantile, block, fused, seed):
    g = np.random.default_rng(seed).random((n, m)).astype(dtype)
    _, _, last = jacobi_numpy(g, steps, -1.0, 1)  # the residuals a run would see
    tol = quantile * (last or 0.0)
    want, sweeps, res = jacobi_numpy(g, steps, tol, every)
    prev, _, _ = jacobi_numpy(g, max(sweeps - 1, 0), None)
    kw = dict(steps=steps, tol=tol, check_every=every, block_sweeps=block)
    if fused:
        args = (jacobi2d_residual,)
    else:
        args, kw["residual"] = (jacobi2d,), max_abs_diff
    pool = shared_pool(workers, START_METHODS[-1])
    r, got, other, same_array = _run(pool, g, *args, **kw)
    np.testing.assert_array_equal(got, want)
    assert (r.sweeps, r.residual) == (sweeps, res if sweeps >= every else None)
    assert same_array
    if sweeps:
        np.testing.assert_array_equal(other, prev)  # the other array: the sweep before


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(0, 50), m=st.integers(0, 5), workers=st.integers(1, 3),
       steps=st.integers(0, 12), k=st.integers(2, 6), tile=st.integers(1, 9),
       every=st.integers(1, 13), fused=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_small_tiles_split_every_partition(n, m, workers, steps, k, tile, every,
                                                      fused, seed):
    """Tiles of 1-9 rows (the chosen ones hold a whole small partition): tile edges inside
    a worker's rows, next to the fixed edge rows, and next to other workers' rows."""
    g = np.random.default_rng(seed).random((n, m))
    want, sweeps, res = jacobi_numpy(g, steps, 0.0, every)
    pool = shared_pool(workers, START_METHODS[-1])
    kw = dict(steps=steps, tol=0.0, check_every=every)
    if not fused:
        kw["residual"] = max_abs_diff
    with mock.patch("sharedcompute._iterate.plan.choose_block", lambda *a: (k, tile)):
        r, got, _, same_array = _run(pool, g, jacobi2d_residual if fused else jacobi2d, **kw)
    np.testing.assert_array_equal(got, want)
    assert (r.sweeps, r.residual) == (sweeps, res) and same_array


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(0, 60), workers=st.integers(1, 3), steps=st.integers(0, 12),
       block=st.sampled_from([None, 2, 3, 4, 9]), seed=st.integers(0, 2**16))
def test_hypothesis_blocking_depth2_with_source_term_and_position(n, workers, steps, block, seed):
    rng = np.random.default_rng(seed)
    g, f = rng.random(n), rng.random(n)
    pool = shared_pool(workers, START_METHODS[0])
    u, out, fs = pool.array(g), pool.empty(n), pool.array(f)
    r = pool.iterate(smooth2, out, u, fs, steps=steps, block_sweeps=block, info=True)
    np.testing.assert_array_equal(np.asarray(r.array), smooth2_numpy(g, f, steps))
    assert r.array is (out if steps % 2 else u)
    u.free(), out.free(), fs.free()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_blocking_is_used_and_bitwise_on_a_big_grid_heat1d_too(start_method):
    g = np.random.default_rng(3).random((600, 50))
    pool = shared_pool(3, start_method)
    plain = _run(pool, g, jacobi2d, steps=21, block_sweeps=1)
    small_cache = (16 << 10, 256 << 10)  # (L2, last level): the 2 x 240 KB arrays miss it
    for block in (None, 4, 8):
        with mock.patch("sharedcompute._iterate.plan.cache_bytes", lambda: small_cache):
            r, got, other, same = _run(pool, g, jacobi2d, steps=21, block_sweeps=block)
        assert r.block_sweeps > 1 and same
        np.testing.assert_array_equal(got, plain[1])
        np.testing.assert_array_equal(other, plain[2])
    h = np.random.default_rng(4).random(5000)
    want = h.copy()
    for _ in range(9):
        new = want.copy()
        new[1:-1] = want[1:-1] + 0.25 * ((want[:-2] - 2.0 * want[1:-1]) + want[2:])
        want = new
    u, out = pool.array(h), pool.empty(5000)
    r = pool.iterate(heat1d, out, u, 0.25, steps=9, block_sweeps=4, info=True)
    assert r.block_sweeps == 3  # blocks are odd: a given even k runs as k - 1
    np.testing.assert_array_equal(np.asarray(r.array), want)
    u.free(), out.free()


PADS = {"reflect": dict(mode="symmetric"), "mirror": dict(mode="reflect"),
        "nearest": dict(mode="edge"), 0.5: dict(mode="constant", constant_values=0.5)}


def jacobi_padded_numpy(u, steps, boundary):
    """jacobi2d with padded rows (np.pad's names for the boundary), columns 0, m-1 kept."""
    u = u.copy()
    q = u.dtype.type(0.25)
    if u.size == 0:  # np.pad cannot pad an empty axis but with constants: nothing to do
        return u
    for _ in range(steps):
        p = np.pad(u, ((1, 1), (0, 0)), **PADS[boundary])
        new = u.copy()
        if u.shape[1] > 2:
            new[:, 1:-1] = q * (((p[:-2, 1:-1] + p[2:, 1:-1]) + p[1:-1, :-2]) + p[1:-1, 2:])
        u = new
    return u


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(0, 40), m=st.integers(0, 5), workers=st.integers(1, 3),
       steps=st.integers(0, 10), k=st.integers(2, 5), tile=st.integers(1, 7),
       boundary=st.sampled_from(sorted(PADS, key=str)), seed=st.integers(0, 2**16))
def test_hypothesis_padded_boundaries_are_blocked_bitwise(n, m, workers, steps, k, tile,
                                                          boundary, seed):
    g = np.random.default_rng(seed).random((n, m))
    pool = shared_pool(workers, START_METHODS[-1])
    with mock.patch("sharedcompute._iterate.plan.choose_block",
                    lambda n_rows, row, d, w, given: (k, tile) if n_rows > 2 * d + 1 else (1, 0)):
        r, got, other, same = _run(pool, g, jacobi2d, steps=steps, boundary=boundary)
    np.testing.assert_array_equal(got, jacobi_padded_numpy(g, steps, boundary))
    if steps:
        np.testing.assert_array_equal(other, jacobi_padded_numpy(g, steps - 1, boundary))
    assert same and (r.block_sweeps == 1 or n > 3)


@pytest.mark.parametrize("boundary", ["periodic", "reflect", "nearest", "mirror", 0.5])
def test_padded_boundaries_block_and_periodic_runs_plain(boundary):
    g = np.random.default_rng(5).random((300, 8))
    f = np.random.default_rng(6).random(300)
    pool = shared_pool(2, START_METHODS[-1])
    r, got, _, _ = _run(pool, g, jacobi2d, steps=10, block_sweeps=3, boundary=boundary)
    assert r.block_sweeps == (1 if boundary == "periodic" else 3)
    a, b = pool.array(g), pool.empty_like(g)
    for _ in range(10):
        pool.map(jacobi2d, b, a, boundary=boundary)
        a, b = b, a
    np.testing.assert_array_equal(got, np.asarray(a))
    a.free(), b.free()
    u, out, fs = pool.array(f), pool.empty(300), pool.array(f)  # a padded source term too
    r = pool.iterate(smooth2, out, u, fs, steps=7, block_sweeps=3, boundary=boundary,
                     info=True)
    a, b = pool.array(f), pool.empty(300)
    for _ in range(7):
        pool.map(smooth2, b, a, fs, boundary=boundary)
        a, b = b, a
    np.testing.assert_array_equal(np.asarray(r.array), np.asarray(a))
    assert r.block_sweeps == (1 if boundary == "periodic" else 3)
    for x in (u, out, fs, a, b):
        x.free()


def test_schedule_keeps_checks_plain_and_the_parity():
    for steps in range(0, 30):
        for k in (1, 3, 5, 9):  # odd: plan_iterate makes it so (odd_block)
            for every in (1, 2, 7, 10):
                for checks in (False, True):
                    blocks = schedule(steps, k, every, checks)
                    if not blocks:
                        continue
                    assert sum(blocks) == steps and max(blocks) <= k
                    assert all(b % 2 for b in blocks)  # each array keeps plain's sweeps
                    ends, done, swaps = set(), 0, 0
                    for b in blocks:
                        done, swaps = done + b, swaps + 1
                        ends.add(done)
                        if done % every == 0 and checks or done == steps:
                            assert b == 1 and swaps % 2 == done % 2
                    if checks:
                        assert set(range(every, steps + 1, every)) <= ends


def test_iterate_without_info_still_returns_the_array():
    g = np.random.default_rng(6).random((30, 5))
    with sc.Pool(2, backend="inline") as pool:
        u, out = pool.array(g), pool.empty_like(g)
        assert pool.iterate(jacobi2d_residual, out, u, steps=3) is out
        r = pool.iterate(jacobi2d, out, u, steps=0, info=True)
        assert (r.array, r.sweeps, r.residual) == (u, 0, None)


def test_errors_say_what_to_do():
    g = np.zeros((10, 4))
    with sc.Pool(2, backend="inline") as pool:
        u, out = pool.array(g), pool.empty_like(g)
        with pytest.raises(sc.InputError, match="drop residual="):
            pool.iterate(jacobi2d_residual, out, u, steps=2, residual=max_abs_diff)
        for bad in (0, -1, True, 1.5, "2"):
            with pytest.raises(sc.InputError, match="block_sweeps"):
                pool.iterate(jacobi2d, out, u, steps=2, block_sweeps=bad)
        with pytest.raises(sc.KernelError, match="InputError.*one real number per partition"):
            pool.iterate(tuple_partial, out, u, steps=2, check_every=1)
    with pytest.raises(sc.InputError, match="depth= and combine="):
        max_abs_diff(g, g, depth=1)


def test_dask_refuses_the_fused_kernel_and_reports_info():
    pytest.importorskip("distributed")
    pool = sc.Pool(2, backend="dask")
    try:
        g = np.zeros((20, 5))
        g[0] = 1.0
        u, out = pool.array(g), pool.array(g)
        with pytest.raises(sc.InputError, match="Dask backend"):
            pool.iterate(jacobi2d_residual, out, u, steps=2)
        r = pool.iterate(jacobi2d, out, u, steps=10, residual=max_abs_diff, tol=0.0,
                         check_every=5, block_sweeps=4, info=True)
        want, sweeps, res = jacobi_numpy(g, 10, 0.0, 5)
        assert (r.sweeps, r.residual) == (sweeps, res)
        np.testing.assert_array_equal(np.asarray(r.array), want)
    finally:
        pool.close()


@pytest.mark.parametrize("workers", [1, 3])
def test_a_nan_change_is_the_residual_and_never_converges(workers):
    g = np.zeros((60, 7))
    g[31, 3] = np.nan
    r, got, _, _ = _run(shared_pool(workers, START_METHODS[-1]), g, steps=6, tol=1e9,
                        check_every=2)
    assert r.sweeps == 6 and np.isnan(r.residual)
    np.testing.assert_array_equal(got, jacobi_numpy(g, 6)[0])  # NaNs in the same places


def test_choose_block_caps_k_and_the_tile():
    from sharedcompute._iterate.plan import cache_bytes, choose_block
    assert choose_block(8192, 8192 * 8, 1, 2, None)[0] == 4
    assert choose_block(8192, 8192 * 8, 1, 2, 1000) == (64, 512)  # capped at 64
    assert choose_block(600, 8, 1, 3, 4) == (4, 200)  # a tile: at most a worker's rows
    assert choose_block(600, 8, 1, 3, None) == (1, 0)  # both arrays fit the cache: plain
    l2, llc = cache_bytes()
    rows = llc // (2 * 8192)  # 1,024 float64 per row: both arrays just fit the cache
    assert choose_block(rows, 8192, 1, 2, None) == (1, 0)
    assert choose_block(rows, 8192, 1, 2, 4)[0] == 4  # a given k still blocks
    assert choose_block(rows + 100, 8192, 1, 2, None)[0] == 4
    assert choose_block(10, 8, 1, 2, 1000)[0] == 5  # halos stay within the array
    assert choose_block(5, 8, 2, 3, None) == (1, 0)  # n <= 2 * depth + 1: plain
    assert choose_block(100, 8, 0, 2, 4) == (1, 0)  # no halo, nothing to block


# -- the residual checked inside blocks (an idempotent combine) --------------------------------
def test_schedule_in_blocks_is_odd_blocks_then_one_plain_sweep():
    from sharedcompute._iterate.plan import odd_block
    for steps in range(0, 40):
        for k in (3, 5, 9):
            blocks = schedule(steps, k, 1, True, in_blocks=True)
            if steps <= 1:
                assert blocks == ()
                continue
            assert sum(blocks) == steps and max(blocks) <= k and blocks[-1] == 1
            assert all(b % 2 == 1 for b in blocks)  # each block ends on plain's parity
    assert odd_block(4, True, 1000, 1) == 5 and odd_block(4, False, 1000, 1) == 3
    assert odd_block(4, True, 9, 1) == 3  # halos of 5 sweeps would not fit 9 rows
    assert odd_block(5, False, 1000, 1) == 5 and odd_block(1, True, 1000, 1) == 1


def test_the_idempotent_flag_is_found_declared_or_refused():
    assert jacobi2d_residual.idempotent  # declared: its combine is a NaN-wins max
    assert not tuple_partial.idempotent  # the builtin max: with a NaN, order decides
    from iteratekernels import jacobi_total_change
    assert not jacobi_total_change.idempotent
    assert sc.kernel(lambda out, u: 0.0, depth=1, combine=np.maximum).idempotent
    assert sc.kernel(lambda out, u: 0.0, depth=1, combine=np.fmin).idempotent
    with pytest.raises(sc.InputError, match="idempotent=True describes combine="):
        sc.kernel(lambda out, u: None, depth=1, idempotent=True)


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("workers", [2, 3])
def test_converging_at_any_sweep_of_a_block_is_bitwise_plain(start_method, workers):
    """tol set to the residual of each sweep in turn: the run stops at that sweep, inside a
    block or at its end, with both arrays, the count and the residual of plain sweeps.
    Rows of 600 make 21 chunks: every worker has rows, and the edge chunks none to write."""
    g = np.random.default_rng(8).random((41, 600))
    residuals = [jacobi_numpy(g, s, -1.0)[2] for s in range(1, 15)]
    pool = shared_pool(workers, start_method)
    for stop in range(1, 15):
        tol = residuals[stop - 1]
        want, sweeps, res = jacobi_numpy(g, 14, tol)
        prev = jacobi_numpy(g, sweeps - 1, None)[0]
        with mock.patch("sharedcompute._iterate.plan.choose_block", lambda *a: (5, 3)):
            r, got, other, same_array = _run(pool, g, steps=14, tol=tol, check_every=1)
        assert r.block_sweeps == 5  # checked at every sweep, yet in blocks of 5
        assert (r.sweeps, r.residual) == (sweeps, res) and same_array
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(other, prev)


def test_a_combine_that_is_not_idempotent_keeps_its_check_sweeps_plain():
    from iteratekernels import jacobi_total_change
    g = np.random.default_rng(9).random((300, 20))
    pool = shared_pool(2, START_METHODS[-1])
    r, got, _, _ = _run(pool, g, jacobi_total_change, steps=12, tol=0.0, check_every=1)
    assert r.block_sweeps == 1 and r.sweeps == 12
    np.testing.assert_array_equal(got, jacobi_numpy(g, 12)[0])
    new, old = jacobi_numpy(g, 12)[0], jacobi_numpy(g, 11)[0]
    assert r.residual == pytest.approx(float(np.abs(new - old).sum()), rel=1e-12)
    with mock.patch("sharedcompute._iterate.plan.cache_bytes", lambda: (16 << 10, 64 << 10)):
        r5, got5, _, _ = _run(pool, g, jacobi_total_change, steps=12, tol=0.0, check_every=6)
    assert r5.block_sweeps > 1 and r5.residual == r.residual  # blocks between the checks
    np.testing.assert_array_equal(got5, got)


def test_the_residual_of_float32_and_a_nan_inside_blocks():
    g = np.random.default_rng(10).random((64, 600)).astype(np.float32)
    want, sweeps, res = jacobi_numpy(g, 11, 0.0)
    pool = shared_pool(2, START_METHODS[0])
    r, got, _, _ = _run(pool, g, steps=11, tol=0.0, check_every=1, block_sweeps=3)
    assert r.block_sweeps == 3 and (r.sweeps, r.residual) == (sweeps, res)
    np.testing.assert_array_equal(got, want)
    g64 = np.zeros((64, 600))
    g64[40, 4] = np.nan
    r, got, _, _ = _run(pool, g64, steps=7, tol=1e9, check_every=1, block_sweeps=3)
    assert r.sweeps == 7 and np.isnan(r.residual) and r.block_sweeps == 3
    np.testing.assert_array_equal(got, jacobi_numpy(g64, 7)[0])


def test_an_error_inside_a_block_names_its_rows_and_the_residual_bits_are_plain():
    from iteratekernels import jacobi_raising_at
    g = np.random.default_rng(11).random((40, 600))
    pool = shared_pool(2, START_METHODS[0])
    for block in (1, 3):
        u, out = pool.array(g), pool.empty_like(g)
        try:
            with pytest.raises(sc.KernelError) as info:
                pool.iterate(jacobi_raising_at, out, u, 25, steps=6, check_every=1,
                             block_sweeps=block)
        finally:
            u.free(), out.free()
        lo, hi = info.value.rows
        assert lo <= 25 < hi and "raised at the victim row" in str(info.value)
    # np.maximum(0.0, -0.0) is -0.0: how partials are grouped would show in the sign
    assert _reported_bits(np.maximum(0.0, -0.0)) == _reported_bits(0.0)


def _reported_bits(v):
    from sharedcompute._iterate.sweep import _reported
    return np.float64(_reported(v)).tobytes()


@pytest.mark.parametrize("m", [1, 2, 3, 7])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_inf_in_a_copied_edge_column_is_a_nan_residual(m, bad):
    """The copied first and last columns count as NumPy counts them (|inf - inf| is NaN),
    so a grid of 1 or 2 columns, which has no interior, still never looks converged."""
    g = np.random.default_rng(12).random((6, m))
    g[3, m - 1] = bad
    got_out, want_out = g.copy(), g.copy()
    with np.errstate(invalid="ignore"):
        got = jacobi2d_residual.dispatcher(got_out[1:-1], g)  # the compiled kernel itself
        want = jacobi2d_residual.reference(want_out[1:-1], g)
    assert np.isnan(got) and np.isnan(want)
    np.testing.assert_array_equal(got_out, want_out)
    r, _, _, _ = _run(shared_pool(2, START_METHODS[-1]), g, steps=3, tol=1e9, check_every=1)
    assert r.sweeps == 3 and np.isnan(r.residual)
