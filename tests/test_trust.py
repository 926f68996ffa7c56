"""No silent wrong answers (issue 11): misuse is an error whose advice works when followed,
and the inline backend and direct kernel calls behave like the process pool."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

import sharedcompute as sc
import trustkernels as tk
from conftest import START_METHODS, shared_pool
from sharedcompute.kernels.reductions import mean_var, total
from sharedcompute.kernels.stencils import heat1d

METHOD = START_METHODS[-1]


@pytest.fixture(params=["inline", "processes"])
def pool(request):
    if request.param == "inline":
        with sc.Pool(2, backend="inline") as p:
            yield p
    else:
        yield shared_pool(2, METHOD)


# -- item 5: iterate with boundary 'none' on arrays with no interior row -----------------------
def _heat1d_numpy(u: np.ndarray, alpha: float, steps: int) -> np.ndarray:
    u = u.copy()
    for _ in range(steps):
        new = u.copy()
        new[1:-1] = u[1:-1] + alpha * ((u[:-2] - 2.0 * u[1:-1]) + u[2:])
        u = new
    return u


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 7])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_iterate_none_boundary_short_arrays(pool, n, steps):
    start = np.arange(1.0, n + 1)
    u, out = pool.array(start), pool.array(np.full(n, -7.0))
    got = np.array(pool.iterate(heat1d, out, u, 0.25, steps=steps))
    np.testing.assert_array_equal(got, _heat1d_numpy(start, 0.25, steps))
    u.free(), out.free()


# -- item 6: rows= with plain arrays; the advice to share them ---------------------------------
def test_plain_array_reduction_advice_works(pool):
    x = np.arange(1000.0)
    for k in (total, mean_var):
        with pytest.raises(sc.InputError, match=r"pool\.array\(x\)"):
            pool.reduce(k, x)
        with pytest.raises(sc.InputError, match=r"same 1000 rows as rows=1000.*pool\.array\(x\)"):
            pool.reduce(k, x, rows=1000)
    shared = pool.array(x)  # the advice, followed
    assert float(pool.reduce(total, shared)) == float(np.sum(x))
    n, mean, var = pool.reduce(mean_var, shared)
    assert (n, mean) == (1000, np.mean(x)) and var == pytest.approx(np.var(x), rel=1e-14)
    assert float(pool.reduce(total, shared, rows=1000)) == float(np.sum(x))
    with pytest.raises(sc.InputError, match="rows=999 disagrees"):
        pool.reduce(total, shared, rows=999)
    shared.free()


def test_map_with_only_plain_arrays_is_refused_not_a_no_op(pool):
    out = pool.zeros(5)
    with pytest.raises(sc.InputError, match="plain NumPy array"):
        pool.map(tk.copy_rows, np.zeros(5), np.ones(5))
    out.free()


# -- item 7: sc.whole of a plain array -----------------------------------------------------------
def test_whole_plain_array_works_and_lookalike_advice_works(pool):
    rng = np.random.default_rng(0)
    table = rng.normal(size=300)
    idx = pool.array(rng.integers(0, 300, size=300))
    out = pool.zeros(300)
    with pytest.raises(sc.InputError, match=r"same 300 rows.*sc\.whole\(x\)"):
        pool.map(tk.lookup, out, idx, table)
    pool.map(tk.lookup, out, idx, sc.whole(table))  # the advice, followed
    np.testing.assert_array_equal(np.asarray(out), table[np.asarray(idx)])
    small = table[:7]  # fewer rows than the split arrays: sent whole without asking
    pool.map(tk.lookup, out, pool.array(np.asarray(idx) % 7), small)
    np.testing.assert_array_equal(np.asarray(out), small[np.asarray(idx) % 7])
    idx.free(), out.free()


# -- item 8: the same rules and errors inline, in the pool and in direct calls -----------------
def test_small_plain_array_argument_everywhere(pool):
    x = np.linspace(-1, 1, 1001)
    coeffs = np.array([0.5, -2.0, 3.0])
    want = np.polynomial.polynomial.polyval(x, coeffs)
    sx, out = pool.array(x), pool.zeros(1001)
    np.testing.assert_allclose(np.asarray(pool.map(tk.poly, out, sx, coeffs)), want, rtol=1e-14)
    direct = np.zeros(1001)
    tk.poly(direct, x, coeffs)
    np.testing.assert_array_equal(direct, np.asarray(out))
    sx.free(), out.free()


def test_undeclared_write_fails_alike_and_its_advice_works(pool):
    x0 = np.arange(1.0, 51.0)
    x, out = pool.array(x0), pool.zeros(50)
    with pytest.raises(sc.KernelError, match=r"writes one of \['x'\].*writes=\('out', 'x'\)"):
        pool.map(tk.scale_into_input, out, x)
    np.testing.assert_array_equal(np.asarray(x), x0)  # nothing written
    plain_x, plain_out = x0.copy(), np.zeros(50)
    with pytest.raises(sc.KernelError, match=r"writes=\('out', 'x'\)"):
        tk.scale_into_input(plain_out, plain_x)
    np.testing.assert_array_equal(plain_x, x0)
    pool.map(tk.scale_into_input_declared, out, x)  # the advice, followed
    np.testing.assert_array_equal(np.asarray(x), 2 * x0)
    np.testing.assert_array_equal(np.asarray(out), 2 * x0)
    x.free(), out.free()


@pytest.mark.parametrize("n", [1, 2, 3, 40])
def test_an_undeclared_write_by_a_stencil_is_refused_on_its_edge_copies_too(pool, n):
    """A stencil's rows at the array's edges get padded copies of their halo: those copies
    are read-only as the in-place views are, so an undeclared write to the input is refused
    whatever the size; on 1 or 2 rows, where every call gets a copy, it was dropped into
    the copy without a word. Iterate and direct calls take the same path."""
    u0 = np.arange(1.0, n + 1.0)
    u, out = pool.array(u0), pool.zeros(n)
    with pytest.raises(sc.KernelError, match=r"(?s)writes one of \['u'\].*writes=\('out', 'u'\).*"
                       r"A stencil \(depth=1\) gets no halo rows of an array it writes.*an "
                       r"output and swap the two \(pool.iterate\)"):
        pool.map(tk.smooth_into_input, out, u)
    with pytest.raises(sc.KernelError, match=r"writes one of \['u'\]"):
        pool.iterate(tk.smooth_into_input, out, u, steps=2)
    with pytest.raises(sc.KernelError, match=r"writes one of \['u'\]"):
        tk.smooth_into_input(np.zeros(n), u0.copy(), workers=3)
    pool.map(tk.smooth, out, u)  # the advice, followed: NumPy's sums, u untouched
    padded = np.concatenate([[0.0], u0, [0.0]])
    np.testing.assert_array_equal(np.asarray(out), padded[:-2] + padded[1:-1] + padded[2:])
    np.testing.assert_array_equal(np.asarray(u), u0)
    u.free(), out.free()


# -- item 9: bounds checks ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["inline", "processes"])
def test_boundscheck_catches_a_missing_depth(backend):
    x0 = np.arange(3000.0) ** 2
    with sc.Pool(2, backend=backend, start_method=None if backend == "inline" else METHOD,
                 boundscheck=True) as p:
        x, out = p.array(x0), p.zeros(3000)
        with pytest.raises(sc.KernelError,
                           match=r"(?s)forward_diff_no_depth.*outside the rows.*depth=1"):
            p.map(tk.forward_diff_no_depth, out, x, chunk_rows=500)
        p.map(tk.forward_diff, out, x, chunk_rows=500)  # the advice, followed
        want = np.diff(x0, append=x0[-1])
        np.testing.assert_array_equal(np.asarray(out), want)
        x.free(), out.free()


def test_boundscheck_names_the_rows_of_a_padded_edge_call_in_sweeps():
    """iterate's sweeps reuse their sliced calls (_evaluate.RowCalls): an out-of-bounds
    read in a padded edge call still names that call's rows (the row loop once reported
    a slice of the array in their place)."""
    with sc.Pool(2, start_method=METHOD, boundscheck=True) as p:
        u, out = p.array(np.arange(1000.0)), p.zeros(1000)
        with pytest.raises(sc.KernelError,
                           match=r"(?s)overreach_at_edges.*rows \[(0, 1|999, 1000)\) of 1000"):
            p.iterate(tk.overreach_at_edges, out, u, steps=3)
        u.free(), out.free()


def test_boundscheck_in_direct_calls_and_from_the_environment(tmp_path):
    with pytest.raises(sc.KernelError, match="outside the rows"):
        tk.forward_diff_no_depth(np.zeros(10), np.arange(10.0), boundscheck=True)
    script = tmp_path / "bc.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np, sharedcompute as sc, trustkernels as tk
        try:
            tk.forward_diff_no_depth(np.zeros(10), np.arange(10.0))
        except sc.KernelError as e:
            print("CAUGHT", "outside the rows" in str(e))
        else:
            print("MISSED")
    """))
    env = dict(os.environ, SHAREDCOMPUTE_BOUNDSCHECK="1")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=str(tmp_path))
    assert r.stdout.strip() == "CAUGHT True", r.stdout + r.stderr


# -- item 11: a script without the __main__ guard ------------------------------------------------
@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver") if m in START_METHODS])
def test_missing_main_guard_is_named_and_the_guard_fixes_it(tmp_path, method):
    body = textwrap.dedent(f"""
        import numpy as np, sharedcompute as sc
        from sharedcompute.kernels.reductions import total
        def main():
            with sc.Pool(2, start_method={method!r}) as pool:
                try:
                    print("RESULT", float(pool.reduce(total, pool.array(np.arange(10.0)))))
                except sc.WorkerCrashedError as e:
                    print("ERROR", e)
    """)
    (tmp_path / "unguarded.py").write_text(body + "main()\n")
    (tmp_path / "guarded.py").write_text(body + 'if __name__ == "__main__":\n    main()\n')
    r = subprocess.run([sys.executable, "unguarded.py"], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert 'under `if __name__ == "__main__":`' in r.stdout, r.stdout + r.stderr
    assert "cannot help" in r.stdout
    r = subprocess.run([sys.executable, "guarded.py"], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert "RESULT 45.0" in r.stdout, r.stdout + r.stderr


# -- item 12: dtypes numba cannot compile ---------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "longdouble", "clongdouble"])
def test_dtypes_numba_lacks_are_refused_up_front(pool, dtype):
    x = np.ones(8, dtype=dtype)
    with pytest.raises(sc.UnsupportedDtypeError, match="numba"):
        pool.array(x)
    with pytest.raises(sc.UnsupportedDtypeError, match="numba"):
        pool.empty(8, dtype)
    with pytest.raises(sc.UnsupportedDtypeError, match="numba"):
        pool.reduce(tk.plain_sum, sc.whole(x), rows=1)
    wider = "float32" if dtype == "float16" else "complex128" if "c" in dtype else "float64"
    assert f"astype(np.{wider})" in str(pytest.raises(sc.UnsupportedDtypeError,
                                                       pool.array, x).value)
    if wider != "complex128":
        shared = pool.array(x.astype(wider))  # the advice, followed
        assert float(pool.reduce(tk.plain_sum, shared)) == 8.0
        shared.free()


# -- item 14: overlapping written and read arguments --------------------------------------------
def test_overlapping_arguments_are_refused(pool):
    a = pool.array(np.arange(1000.0))
    with pytest.raises(sc.InputError, match="writes 'out', which shares memory with 'x'"):
        pool.map(tk.copy_rows, a[1:], a[:-1])
    c = pool.zeros((300, 300))
    m = pool.array(np.eye(300))
    with pytest.raises(sc.InputError, match="writes 'out', which shares memory with 'b'"):
        pool.map(tk.row_times_whole, c, m, c)  # matmul(c, a, c)
    with pytest.raises(sc.InputError, match="shares memory"):
        pool.map(tk.copy_rows, a, sc.whole(a))  # written, and read whole
    with pytest.raises(sc.InputError, match="elementwise=True"):
        pool.map(tk.copy_rows, a, a)
    pool.map(tk.double_inplace_ok, a, a)  # declared elementwise: the same rows are safe
    np.testing.assert_array_equal(np.asarray(a), 2 * np.arange(1000.0))
    out = pool.empty_like(a)  # the advice, followed
    pool.map(tk.copy_rows, out[1:], a[:-1])
    np.testing.assert_array_equal(np.asarray(out)[1:], 2 * np.arange(999.0))
    for arr in (a, c, m, out):
        arr.free()


@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60), st.integers(1, 3))
def test_slices_of_one_block_overlap_iff_refused(s1, s2, length, step):
    pool = shared_pool(2, METHOD)
    base = np.arange(200.0)
    a = pool.array(base)
    out_view, in_view = a[s1:s1 + length * step:step], a[s2 + 100:s2 + 100 + length:1]
    n = min(len(out_view), len(in_view))
    out_view, in_view = out_view[:n], in_view[:n]
    overlap = np.shares_memory(np.asarray(out_view), np.asarray(in_view))
    try:
        pool.map(tk.copy_rows, out_view, in_view)
        assert not overlap
        np.testing.assert_array_equal(np.asarray(out_view), base[s2 + 100:s2 + 100 + n])
    except sc.InputError:
        assert overlap
    del out_view, in_view
    a.free()


# -- item 15: arrays of another backend -----------------------------------------------------------
@pytest.mark.timeout(180)
def test_arrays_of_another_backend_are_refused_and_the_advice_works():
    local = shared_pool(2, METHOD)
    x0 = np.arange(300_001.0)
    with sc.Pool(backend="dask", n_workers=2) as dask_pool:
        here = local.array(x0)
        with pytest.raises(sc.InputError, match=r"cluster.*pool\.array\(x\)"):
            dask_pool.reduce(total, here)
        on_cluster = dask_pool.array(here)  # the advice, followed
        assert float(dask_pool.reduce(total, on_cluster)) == float(np.sum(x0))
        with pytest.raises(sc.InputError, match=r"pool\.array\(np\.asarray\(x\)\)"):
            local.reduce(total, on_cluster)
        back = local.array(np.asarray(on_cluster))
        assert float(local.reduce(total, back)) == float(np.sum(x0))
        here.free(), back.free()


# -- item 16: masked arrays and shape assignment --------------------------------------------------
def test_masked_arrays_are_refused_and_filled_works(pool):
    m = np.ma.masked_array(np.arange(1.0, 5.0), mask=[False, True, False, True])
    with pytest.raises(sc.InputError, match="mask would be lost"):
        pool.array(m)
    with pytest.raises(sc.InputError, match="mask would be lost"):
        pool.reduce(total, sc.whole(m), rows=1)
    with pytest.raises(sc.InputError, match="mask would be lost"):
        total(m)
    shared = pool.array(m.filled(0))  # the advice, followed
    assert float(pool.reduce(total, shared)) == float(m.sum()) == 4.0
    shared.free()


def test_shape_assignment_is_an_in_place_reshape_or_an_error():
    a = sc.SharedArray.from_array(np.arange(16.0))
    a.shape = (2, 8)
    np.testing.assert_array_equal(np.asarray(a), np.arange(16.0).reshape(2, 8))
    assert a[1, 0] == 8.0
    v = a[:, ::3]
    with pytest.raises(sc.InputError, match="in place"):
        v.shape = (6,)
    np.testing.assert_array_equal(np.asarray(v), np.arange(16.0).reshape(2, 8)[:, ::3])
    with pytest.raises(sc.InputError, match="dtype cannot be reassigned"):
        a.dtype = np.int64
    del v
    a.free()


# -- every suggestion in an error message works when followed -----------------------------------
def test_map_kernel_returning_a_value_names_combine_and_the_advice_works(pool):
    x0 = np.linspace(-1, 1, 2001)
    x, out = pool.array(x0), pool.zeros(2001)
    with pytest.raises(sc.KernelError, match=r"returned a value.*combine=.*pool\.reduce"):
        pool.map(tk.count_positive_map, out, x)
    assert int(pool.reduce(tk.count_positive, x)) == int(np.sum(x0 > 0))
    x.free(), out.free()


def test_wrong_call_for_the_kernel_kind_advice_works(pool):
    x = pool.array(np.arange(10.0))
    with pytest.raises(sc.InputError, match="is a reduction; call pool.reduce"):
        pool.map(total, x)
    assert float(pool.reduce(total, x)) == 45.0
    out = pool.zeros(10)
    with pytest.raises(sc.InputError, match=r"not a reduction \(declare combine=\); call pool.map"):
        pool.reduce(tk.copy_rows, out, x)
    pool.map(tk.copy_rows, out, x)
    np.testing.assert_array_equal(np.asarray(out), np.arange(10.0))
    x.free(), out.free()


def test_plain_output_and_mismatched_rows_advice_works(pool):
    x = pool.array(np.arange(10.0))
    with pytest.raises(sc.InputError, match=r"a plain NumPy array; create outputs in shared "
                                            r"memory \(pool\.empty / pool\.array\)"):
        pool.map(tk.copy_rows, np.zeros(10), x)
    out = pool.empty(10)
    pool.map(tk.copy_rows, out, x)
    np.testing.assert_array_equal(np.asarray(out), np.arange(10.0))
    idx = pool.array(np.arange(10) % 4)
    table = pool.array(np.arange(4.0) * 10)
    with pytest.raises(sc.InputError, match=r"mismatched leading dimensions.*sc\.whole\(x\)"):
        pool.map(tk.lookup, out, idx, table)
    pool.map(tk.lookup, out, idx, sc.whole(table))
    np.testing.assert_array_equal(np.asarray(out), (np.arange(10) % 4) * 10.0)
    for a in (x, out, idx, table):
        a.free()
