"""Issue 23 for iterate: stencils that read ``out`` (the sweep before last) are never handed
a blocked sweep's other rows; no argument may share memory with either swapped array; a
tol with nothing to check it is refused. The oracle is a NumPy loop written here, compared
bit for bit (NaN, +-inf, -0.0, float32, tiny grids, every boundary, depths 1-3)."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sharedcompute as sc
from sharedcompute._iterate.plan import reads_argument, schedule
from sharedcompute.kernels.reductions import max_abs_diff
from sharedcompute.kernels.stencils import jacobi2d, jacobi2d_residual

from conftest import START_METHODS, shared_pool
from iteratekernels import MIXES, leapfrog, leapfrog_change  # noqa: E402 - workers import them

MODES = {"reflect": dict(mode="symmetric"), "mirror": dict(mode="reflect"),
         "nearest": dict(mode="edge"), "periodic": dict(mode="wrap"),
         0.5: dict(mode="constant", constant_values=0.5)}
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e300, -1e-310]


@np.errstate(all="ignore")
def sweeps_numpy(reads, o0, u0, f, steps, d, boundary, c=0.1):
    """(last sweep, the sweep before) of iterate(MIXES[reads] or leapfrog if reads is None,
    out, u, f / c): the kernels' own expressions on float64 copies (they compute in float64
    whatever the dtype), stored in the arrays' dtype; out holds the sweep before last."""
    n, dt = u0.shape[0], u0.dtype
    lo, hi = (d, n - d) if boundary == "none" else (0, n)
    prev, cur = o0.copy(), u0.copy()
    if boundary == "none":  # iterate holds the unwritten edge rows fixed in both arrays
        prev[:max(lo, 0)], prev[max(hi, lo):] = cur[:max(lo, 0)], cur[max(hi, lo):]

    def padded(a):
        return a if boundary == "none" or not n else np.pad(a, d, **MODES[boundary])
    off = 0 if boundary == "none" else d
    fp = padded(f).astype(np.float64)
    for _ in range(steps):
        new = prev.copy()
        if hi > lo:
            up, o = padded(cur).astype(np.float64), prev[lo:hi].astype(np.float64)

            def U(k):
                return up[off + lo + k:off + hi + k]
            if reads is None:
                v = (2.0 * U(0) - o) + c * ((U(-d) - 2.0 * U(0)) + U(d))
            else:
                v = np.full(hi - lo, 0.01)
                v = v + 0.3 * o if "o" in reads else v
                v = v + ((0.2 * U(-d) + 0.2 * U(0)) + 0.2 * U(d)) if "u" in reads else v
                v = v + 0.1 * fp[off + lo - d:off + hi - d] if "f" in reads else v
            new[lo:hi] = v.astype(dt)
        prev, cur = cur, new
    return cur, prev


def same_bits(a, b):
    """Equal bit for bit, but that any NaN equals any NaN (a payload is no result)."""
    a, b = np.asarray(a), np.asarray(b)
    both = np.isnan(a) & np.isnan(b)
    ia, ib = (x.view(np.uint32 if x.dtype == np.float32 else np.uint64) for x in (a, b))
    return a.shape == b.shape and bool(np.all((ia == ib) | both))


def grid(rng, n, dtype, specials):
    g = rng.standard_normal(n)
    for _ in range(specials if n else 0):
        g[rng.integers(n)] = SPECIAL[rng.integers(len(SPECIAL))]
    with np.errstate(over="ignore"):
        return g.astype(dtype)


def run(pool, kernel, o0, u0, third, **kw):
    """iterate on copies in shared memory: (result, last array, other array, right object)."""
    out, u = pool.array(o0), pool.array(u0)
    t = pool.array(third) if isinstance(third, np.ndarray) else third
    try:
        r = pool.iterate(kernel, out, u, t, info=True, **kw)
        other = out if r.array is u else u
        return r, np.array(r.array), np.array(other), r.array is (out if r.sweeps % 2 else u)
    finally:
        for a in (out, u, t):
            if isinstance(a, sc.SharedArray):
                a.free()


# -- 1. kernels that read out ------------------------------------------------------------------
@settings(max_examples=70, deadline=None, suppress_health_check=list(HealthCheck))
@given(reads=st.sampled_from([None] + sorted(MIXES)), n=st.integers(0, 30),
       d=st.integers(1, 3), boundary=st.sampled_from(["none", "periodic", "reflect", "mirror",
                                                       "nearest", 0.5]),
       dtype=st.sampled_from(["float64", "float32"]), steps=st.integers(0, 9),
       k=st.integers(2, 5), tile=st.integers(1, 7), workers=st.integers(1, 3),
       block=st.sampled_from([None, 1, 3]), specials=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_hypothesis_stencils_reading_any_arguments_equal_the_numpy_loop(
        reads, n, d, boundary, dtype, steps, k, tile, workers, block, specials, seed):
    """Blocks of k sweeps in tiles of 1-7 rows (forced: tiny grids fit any cache) for the
    kernels that never read out; a kernel that may read it runs plain, and a given k > 1 is
    refused (then the default runs it). Both arrays bitwise the NumPy loop's."""
    rng = np.random.default_rng(seed)
    o0, u0, f = (grid(rng, n, dtype, specials) for _ in range(3))
    kernel = leapfrog if reads is None else MIXES[reads]
    third = 0.1 if reads is None else f
    reads_out = reads is None or "o" in reads
    pool = shared_pool(workers, START_METHODS[-1])
    kw = dict(steps=steps, depth=d, boundary=boundary, block_sweeps=block)
    with mock.patch("sharedcompute._iterate.plan.choose_block",
                    lambda n_rows, row, dd, w, given: (k, tile) if n_rows > 2 * dd + 1
                    else (1, 0)):
        if reads_out and block == 3:
            with pytest.raises(sc.InputError, match="block_sweeps=3 cannot be honoured"):
                run(pool, kernel, o0, u0, third, **kw)
            kw["block_sweeps"] = None  # what the error says to do
        r, got, other, same = run(pool, kernel, o0, u0, third, **kw)
    want, before = sweeps_numpy(reads, o0, u0, f, steps, d, boundary)
    assert same_bits(got, want) and same_bits(other, before) and same
    blocked = (boundary != "periodic" and n > 2 * d + 1 and kw["block_sweeps"] != 1
               and max(schedule(steps, k, 10, False), default=1) > 1)  # steps=2: 1 + 1
    assert (r.block_sweeps > 1) == (blocked and not reads_out)


@pytest.mark.parametrize("start_method", [START_METHODS[0], "inline"])
def test_leapfrog_by_default_on_a_grid_larger_than_the_cache_is_the_numpy_loop(start_method):
    """The issue's case: block_sweeps=None chose k = 2 on grids larger than the last-level
    cache (here a cache made small) and handed the leapfrog step scratch rows as out."""
    rng = np.random.default_rng(7)
    o0, u0 = rng.random(3000), rng.random(3000)
    pool = (sc.Pool(2, backend="inline") if start_method == "inline"
            else shared_pool(2, start_method))
    try:
        with mock.patch("sharedcompute._iterate.plan.cache_bytes", lambda: (4 << 10, 32 << 10)):
            r, got, other, same = run(pool, leapfrog, o0, u0, 0.1, steps=12)
            r2, got2, _, _ = run(pool, MIXES["u"], o0, u0, u0, steps=12)  # blocks still
            r3, got3, _, _ = run(pool, leapfrog_change, o0, u0, 0.1, steps=12, tol=0.0,
                                 check_every=1)  # fused, idempotent, reads out: plain too
        want, before = sweeps_numpy(None, o0, u0, u0, 12, 1, "none")
        assert same_bits(got, want) and same_bits(other, before) and same
        assert r.block_sweeps == 1 and r2.block_sweeps > 1
        assert same_bits(got3, want) and r3.block_sweeps == 1 and r3.sweeps == 12
        assert same_bits(got2, sweeps_numpy("u", o0, u0, u0, 12, 1, "none")[0])
    finally:
        if start_method == "inline":
            pool.close()


def _aug(out, u):
    out[0] += 1.0


def _nested(out, u):
    out[0][0] = u[0][0]


def _alias(out, u):
    o = out
    o[0] = 1.0


def _passed(out, u):
    np.copyto(out, u[1:-1])


def _iterated(out, u):
    for x in out:
        u[0] = x


def _returned(out, u):
    out[0] = 1.0
    return out


def _view(out, u):
    out.T[0] = 1.0


def _index(out, u):
    out[int(out[0])] = 1.0


def _store_of_itself(out, u):
    out[0] = out


def _closure(out, u):
    def get():
        return out[0]
    out[0] = 1.0


def _try(out, u):  # numba cannot translate try/except here: counts as a read
    try:
        out[0] = 1.0
    except Exception:
        pass


def _sizes_only(out, u):
    n = len(out) + out.shape[0] + out.ndim + out.size + out.dtype.itemsize
    for i in range(out.shape[0]):
        out[i] = u[i + 1] + n


def _stores(out, u):
    out[:] = u[1:-1]
    out[0], out[-1] = u[0], u[-1]
    out[0, ...] = 2.0


def _rebound(out, u):
    out = u  # out is rebound here, not read
    out[0] = 1.0


@pytest.mark.parametrize("func", [_aug, _nested, _alias, _passed, _iterated, _returned, _view,
                                  _index, _store_of_itself, _closure, _try])
def test_anything_not_proved_a_store_counts_as_reading_out(func):
    assert reads_argument(func, "out")


@pytest.mark.parametrize("func", [_sizes_only, _stores, _rebound])
def test_stores_and_sizes_are_not_reads(func):
    assert not reads_argument(func, "out")


def _named(new, old):
    new[0] = 2.0 * old[1] - new[0]


class _Unhashable:
    __eq__ = object.__eq__
    __hash__ = None  # type: ignore[assignment]

    def __call__(self, out, u):
        out[0] = 1.0


def test_the_argument_is_found_by_its_name_and_odd_callables_count_as_reading():
    assert reads_argument(_named, "new") and reads_argument(_named, "old")
    assert reads_argument(_stores, "u")
    assert reads_argument(_stores, "nowhere")  # no such argument: assume the worst
    assert reads_argument(_Unhashable(), "out")


def test_the_library_kernels_and_jit_false_kernels_are_judged_alike():
    assert not reads_argument(jacobi2d.py_func, "out")
    assert not reads_argument(jacobi2d_residual.py_func, "out")  # so it still blocks
    assert reads_argument(leapfrog.py_func, "out")
    plain = sc.kernel(depth=1, boundary="none", jit=False)(leapfrog.py_func)
    u0 = np.random.default_rng(2).random(40)
    with sc.Pool(1, backend="inline") as pool:
        with pytest.raises(sc.InputError, match="Leave block_sweeps out"):
            run(pool, plain, u0, u0, 0.1, steps=4, block_sweeps=2)
        _, got, _, _ = run(pool, plain, u0, u0, 0.1, steps=4)
    assert same_bits(got, sweeps_numpy(None, u0, u0, u0, 4, 1, "none")[0])


# -- 4. an argument sharing memory with u or out -----------------------------------------------
@pytest.mark.parametrize("backend", [START_METHODS[0], "inline"])
def test_every_alias_of_a_swapped_array_is_refused_and_a_copy_runs(backend):
    pool = sc.Pool(2, backend="inline") if backend == "inline" else shared_pool(2, backend)
    g = np.random.default_rng(3).random(30)
    u, out = pool.array(g), pool.array(g[::-1].copy())
    try:
        forms = [lambda: sc.whole(u), lambda: u, lambda: u.numpy()[:20],  # u's, plain
                 lambda: sc.whole(u.numpy()), lambda: u.numpy()[::3], lambda: out,
                 lambda: sc.whole(out), lambda: out.numpy()[5:9]]
        for form in forms:
            with pytest.raises(sc.InputError, match="shares (its )?memory"):
                pool.iterate(MIXES["uf"], out, u, form(), steps=3)
            assert same_bits(np.array(u), g)  # refused before any sweep
        copy = pool.array(np.array(u))  # what the error says to do
        try:
            got = np.array(pool.iterate(MIXES["uf"], out, u, copy, steps=3))
        finally:
            copy.free()
        assert same_bits(got, sweeps_numpy("uf", g[::-1].copy(), g, g, 3, 1, "none")[0])
    finally:
        u.free(), out.free()
        if backend == "inline":
            pool.close()



def test_a_file_mapped_twice_is_one_memory(tmp_path):
    """u opened from a file and the same file as an np.memmap: two mappings, one memory."""
    path = tmp_path / "u.npy"
    g = np.random.default_rng(8).random(24)
    np.save(path, g)
    pool = shared_pool(2, START_METHODS[0])
    u, out = pool.open(path, mode="r+"), pool.empty(24)
    try:
        for view in (np.load(path, mmap_mode="r"), sc.whole(np.load(path, mmap_mode="r")[3:11])):
            with pytest.raises(sc.InputError, match="shares its memory"):
                pool.iterate(MIXES["uf"], out, u, view, steps=2)
            del view
        assert same_bits(np.load(path), g)
    finally:
        u.free(), out.free()

# -- 13. tol with nothing to check it --------------------------------------------------------
@pytest.mark.parametrize("backend", [START_METHODS[-1], "inline"])
def test_tol_without_a_residual_is_refused_and_the_advice_works(backend):
    pool = sc.Pool(2, backend="inline") if backend == "inline" else shared_pool(2, backend)
    g = np.zeros((12, 6))
    g[0] = 1.0
    u, out = pool.array(g), pool.empty_like(g)
    try:
        for tol in (1e-3, 0.0):
            with pytest.raises(sc.InputError, match="Pass residual=.*combine="):
                pool.iterate(jacobi2d, out, u, steps=500, tol=tol)
        with pytest.raises(sc.InputError, match="real number"):
            pool.iterate(jacobi2d, out, u, steps=5, tol=float("nan"), residual=max_abs_diff)
        np.asarray(u)[:] = g
        a = pool.iterate(jacobi2d, out, u, steps=500, tol=1e-3, residual=max_abs_diff,
                         check_every=1, info=True)
        np.asarray(u)[:] = g
        b = pool.iterate(jacobi2d_residual, out, u, steps=500, tol=1e-3, check_every=1,
                         info=True)
        assert a.sweeps == b.sweeps < 500 and a.residual == b.residual <= 1e-3
    finally:
        u.free(), out.free()
        if backend == "inline":
            pool.close()


def test_dask_refuses_the_same():
    pytest.importorskip("distributed")
    pool = sc.Pool(2, backend="dask")
    try:
        g = np.random.default_rng(4).random(20)
        u, out = pool.array(g), pool.array(g)
        with pytest.raises(sc.InputError, match="Pass residual="):
            pool.iterate(leapfrog, out, u, 0.1, steps=5, tol=1e-3)
        with pytest.raises(sc.InputError, match="shares its memory"):
            pool.iterate(MIXES["uf"], out, u, sc.whole(u), steps=2)
        with pytest.raises(sc.InputError, match="Leave block_sweeps out"):
            pool.iterate(leapfrog, out, u, 0.1, steps=2, block_sweeps=2)
        got = np.asarray(pool.iterate(leapfrog, out, u, 0.1, steps=5))
        assert same_bits(got, sweeps_numpy(None, g, g, g, 5, 1, "none")[0])
    finally:
        pool.close()



def test_jacobi2d_residual_keeps_its_bits_without_reading_out():
    """It now keeps the copied edge columns in a local of out's dtype instead of reading
    them back from out: their change is still what out holds minus u (a float32 out of a
    float64 u reports the rounding; an inf is a NaN change)."""
    u = np.random.default_rng(5).random((6, 2))  # two columns: edges only
    edges = u[1:-1]
    for dtype, want in ((np.float32, np.max(np.abs(edges.astype(np.float32) - edges))),
                        (np.float64, 0.0)):
        out = np.zeros((4, 2), dtype)
        assert jacobi2d_residual.dispatcher(out, u) == want > -1
        assert same_bits(out, edges.astype(dtype))
    u[3, 1] = np.inf
    assert np.isnan(jacobi2d_residual.dispatcher(np.zeros((4, 2)), u))
