"""Library reductions on N-D input (issue 13): over all elements, as NumPy without axis=,
bitwise the same for any worker count, and C-contiguous only (with the fix in the error)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute.kernels import reductions as R

SHAPES = st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple)
DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.int32])


def _data(shape, dt, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dt).kind == "f":
        return (rng.standard_normal(shape) * 10).astype(dt)
    return rng.integers(-1000, 1000, shape).astype(dt)


def _all(pool, x, y):
    a, b = pool.array(x), pool.array(y)
    try:
        return [pool.reduce(R.total, a), pool.reduce(R.dot, a, b), pool.reduce(R.sum_squares, a),
                pool.reduce(R.minmax, a), pool.reduce(R.mean_var, a),
                pool.reduce(R.histogram, a, 16, -20.0, 20.0), pool.reduce(R.max_abs_diff, a, b)]
    finally:
        a.free()
        b.free()


def _bits(v):
    parts = v if isinstance(v, tuple) else (v,)
    return [np.asarray(p).tobytes() for p in parts]


@given(shape=SHAPES, dt=DTYPES, seed=st.integers(0, 2**16))
def test_nd_reductions_match_numpy_over_all_elements(shape, dt, seed):
    x, y = _data(shape, dt, seed), _data(shape, dt, seed + 1)
    pool = sc.Pool(2, backend="inline")
    try:
        tot, dot, ssq, mm, mv, hist, mad = _all(pool, x, y)
    finally:
        pool.close()
    acc = np.int64 if np.dtype(dt).kind == "i" else np.float64
    xa, ya = x.astype(acc), y.astype(acc)
    rtol = 1e-12 if acc is np.float64 else 0
    np.testing.assert_allclose(tot, np.sum(xa), rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(dot, np.sum(xa * ya), rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(ssq, np.sum(xa * xa), rtol=rtol, atol=1e-9)
    assert mm == (np.min(x), np.max(x)) and mm[0].dtype == x.dtype
    assert mv[0] == x.size
    np.testing.assert_allclose(mv[1:], (np.mean(x, dtype=np.float64), np.var(x, dtype=np.float64)),
                               rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(hist, np.histogram(x, 16, (-20.0, 20.0))[0])
    assert mad == np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
    # a direct call gives the same bits as the pool
    assert _bits(R.total(x)) == _bits(tot) and _bits(R.mean_var(x)) == _bits(mv)


@pytest.mark.parametrize("method", START_METHODS)
def test_nd_reductions_bitwise_equal_for_any_worker_count(method):
    x = _data((301, 13, 5), np.float32, 3)  # 301 rows: chunks end mid-volume
    y = _data((301, 13, 5), np.float32, 4)
    want = [_bits(v) for v in _all(shared_pool(1, method), x, y)]
    for n in (2, 3):
        assert [_bits(v) for v in _all(shared_pool(n, method), x, y)] == want
    # and N-D input equals the same data flattened (the same elements in the same order)
    flat = [_bits(v) for v in _all(shared_pool(2, method), x.reshape(-1, 65), y.reshape(-1, 65))]
    assert flat[3:4] == want[3:4] and flat[5:] == want[5:]  # order-free: minmax, hist, mad


def test_nd_reductions_refuse_non_contiguous_input_and_the_fix_works():
    pool = shared_pool(2, START_METHODS[-1])
    a = pool.array(_data((40, 6), np.float64, 0))
    strided = a[:, ::2]  # a SharedArray view, not C-contiguous
    for k in (R.total, R.minmax, R.mean_var):
        with pytest.raises(sc.InputError, match="not C-contiguous.*ascontiguousarray"):
            pool.reduce(k, strided)
    with pytest.raises(sc.InputError, match="not C-contiguous"):
        R.histogram(np.asarray(a).T, 4, 0.0, 1.0)
    fixed = pool.array(np.ascontiguousarray(strided))  # the message's fix
    assert pool.reduce(R.total, fixed) == pytest.approx(np.asarray(strided).sum())
    # 1-D strided input is still accepted, as before
    assert pool.reduce(R.total, a[:, 0]) == pytest.approx(np.asarray(a)[:, 0].sum())
    del strided
    a.free()
    fixed.free()
