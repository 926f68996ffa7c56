"""``chunk_rows=`` (issue 27): the public chunk size of map, reduce and iterate, checked
before any work, and what it changes: maps and sweeps are bitwise the same for every size;
a reduction's combine tree follows the grid (exact combines agree for every size, float sums
for every worker count at one size); a repeated call is cached per size."""
import numpy as np
import pytest

import progkernels as pk
import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute import doorbell
from sharedcompute.kernels.reductions import max_abs_diff, minmax, total
from sharedcompute.kernels.stencils import heat1d, jacobi2d, jacobi2d_residual

BAD = [(0, "must be a whole number of rows per chunk, at least 1"),
       (-3, "must be a whole number of rows per chunk"),
       (2.5, "chunk_rows=2.5 must be a whole number"),
       (4.0, "chunk_rows=4.0 must be a whole number"),
       ("8", "chunk_rows='8' must be a whole number"),
       (True, "chunk_rows=True must be a whole number"),
       (101, r"chunk_rows=101 is more than the 100 rows this call splits; use 1 to 100 "
             r"\(the default here is \d+\)")]


@pytest.mark.parametrize("value, message", BAD)
def test_a_wrong_chunk_rows_is_refused_before_any_work(value, message):
    pool = shared_pool(2, START_METHODS[-1])
    x, out, w = pool.array(np.arange(100.0)), pool.zeros(100), pool.zeros(100)
    pids = pool.pids
    try:
        with pytest.raises(sc.InputError, match=message):
            pool.map(pk.counted_affine, out, x, "", chunk_rows=value)
        with pytest.raises(sc.InputError, match=message):
            pool.reduce(total, x, chunk_rows=value)
        with pytest.raises(sc.InputError, match=message):
            pool.iterate(heat1d, w, x, 0.25, steps=2, chunk_rows=value)
        assert pool.pids == pids  # the workers were never asked
        assert not np.asarray(out).any() and not np.asarray(w).any()
    finally:
        x.free(), out.free(), w.free()


def test_chunk_rows_and_chunksize_are_not_mixed_up():
    """chunksize= (items per task of a plain function) on a kernel was silently ignored."""
    with sc.Pool(2, backend="inline") as pool:
        x, out = pool.array(np.arange(10.0)), pool.zeros(10)
        with pytest.raises(sc.InputError, match="use chunk_rows=4"):
            pool.map(pk.counted_affine, out, x, "", chunksize=4)
        with pytest.raises(sc.InputError, match="chunk_rows= sets a kernel's rows"):
            pool.map(abs, [1, -2], chunk_rows=1)
        assert pool.map(abs, [1, -2], chunksize=1) == [1, 2]
        pool.map(pk.counted_affine, out, x, "", chunk_rows=np.int64(10))  # the whole array
        np.testing.assert_array_equal(out.numpy(), 2.0 * np.arange(10.0) + 1.0)


def _bits(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a)).tobytes()


@pytest.mark.parametrize("backend", ["inline", "processes"])
def test_maps_and_sweeps_are_bitwise_the_same_for_every_chunk_size(backend):
    """Every row is computed from the same values whatever the grid: halo maps (numba and
    plain, depth 1 and 4, smaller chunks than the depth), the dynamic schedule, plain and
    blocked sweeps with an exact residual (max): the same bits, sweep count and residual."""
    pool = (sc.Pool(3, backend="inline") if backend == "inline"
            else shared_pool(2, START_METHODS[-1]))
    rng = np.random.default_rng(11)
    g0 = rng.standard_normal((90, 40))
    g, out, w = pool.array(g0), pool.zeros((90, 40)), pool.zeros((90, 40))
    try:
        def runs(chunk):
            got = []
            for call in (lambda: pool.map(jacobi2d, out, g, chunk_rows=chunk),
                         lambda: pool.map(pk.counted_smooth, out, g, "", chunk_rows=chunk),
                         lambda: pool.map(pk.counted_smooth, out, g, "", chunk_rows=chunk,
                                          schedule="dynamic")):
                np.asarray(out)[:] = 0.0
                call()
                got.append(_bits(out))
            for options in ({"block_sweeps": 1}, {}, {"residual": max_abs_diff}):
                np.asarray(w)[:] = 0.0
                u = pool.array(g0)
                kernel = jacobi2d_residual if "residual" not in options else jacobi2d
                r = pool.iterate(kernel, w, u, steps=9, tol=1e-12, check_every=2, info=True,
                                 chunk_rows=chunk, **options)
                got.append((_bits(u), _bits(w), r.sweeps, r.residual))
                u.free()
            return got
        want = runs(None)
        for chunk in (1, 2, 3, 4, 5, 7, 16, 45, 89, 90):
            assert runs(chunk) == want, chunk
    finally:
        g.free(), out.free(), w.free()
        if backend == "inline":
            pool.close()


def test_reductions_follow_the_grid_exactly_where_the_combine_is_exact():
    """An integer sum and a min/max are the same for every chunk size; a float sum is the
    same for every worker count at one chunk size (the fixed tree over its chunks), and
    within rounding of NumPy's for every size."""
    rng = np.random.default_rng(3)
    ints = rng.integers(-10**6, 10**6, 5000)
    floats = rng.standard_normal(5000)
    pools = [sc.Pool(1, backend="inline"), sc.Pool(3, backend="inline"),
             shared_pool(2, START_METHODS[-1])]
    made = []
    try:
        for chunk in (None, 1, 7, 64, 999, 5000):
            sums, extremes, fsums = set(), set(), set()
            for pool in pools:
                i, f = pool.array(ints), pool.array(floats)
                made += [i, f]
                sums.add(int(pool.reduce(total, i, chunk_rows=chunk)))
                extremes.add(tuple(pool.reduce(minmax, f, chunk_rows=chunk)))
                fsums.add(float(pool.reduce(total, f, chunk_rows=chunk)).hex())
            assert sums == {int(ints.sum())}, chunk
            assert extremes == {(floats.min(), floats.max())}, chunk
            assert len(fsums) == 1, (chunk, fsums)  # any worker count: one tree
            assert float.fromhex(fsums.pop()) == pytest.approx(floats.sum(), abs=1e-9)
    finally:
        for a in made:
            a.free()
        for pool in pools[:2]:
            pool.close()


@pytest.mark.skipif(not doorbell.ENABLED, reason="the call cache needs the doorbell")
def test_a_repeated_call_is_cached_per_chunk_size():
    """chunk_rows is part of the cache key: the same size rings the workers, another size is
    another call with its own combine tree (the uncached call's bits, progress= being the
    cache-off path)."""
    pool = shared_pool(2, START_METHODS[-1])
    x = pool.array(np.random.default_rng(8).standard_normal(30_000))
    ex, sent = pool._executor, []
    original = ex.run

    def run(*args, **kwargs):
        sent.append(kwargs.get("what"))
        return original(*args, **kwargs)
    try:
        want = {c: pool.reduce(total, x, chunk_rows=c, progress=lambda d, t: None)
                for c in (None, 3, 1000)}
        ex.run = run
        for _ in range(3):
            for c in (None, 3, 1000):
                assert _bits(pool.reduce(total, x, chunk_rows=c)) == _bits(want[c]), c
        assert sent == ["total"] * 3  # each size planned once, then rung
    finally:
        ex.run = original
        x.free()


def test_a_bound_call_keeps_its_chunk_rows():
    """pool.bind takes chunk_rows= as map and reduce do: checked at bind, kept by every
    call (the same bits as the plain call with that size), and part of its cache key."""
    pool = shared_pool(2, START_METHODS[-1])
    x = pool.array(np.random.default_rng(9).standard_normal(30_000))
    try:
        with pytest.raises(sc.InputError, match="chunk_rows=0 must be"):
            pool.bind(total, x, chunk_rows=0)
        with pytest.raises(sc.InputError, match="more than the 30000 rows"):
            pool.bind(total, x, chunk_rows=30_001)
        fine, default = pool.bind(total, x, chunk_rows=3), pool.bind(total, x)
        want = pool.reduce(total, x, chunk_rows=3, progress=lambda d, t: None)
        for _ in range(3):
            assert _bits(fine()) == _bits(want)
            assert _bits(default()) == _bits(pool.reduce(total, x))
    finally:
        x.free()
