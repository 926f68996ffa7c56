"""numba options on kernels (issue 26): fastmath=, error_model=, parallel=, against NumPy
and against the same kernel called in this process, under every start method.

The oracles: NumPy (sequential sums by np.add.accumulate, np.isnan, a / b under
errstate, the 5-point stencil on whole arrays) and the kernel's own direct call, which
compiles in this process with the same options, so a worker that compiled without them
gives other bits. parallel=True kernels never run in this process (numba's threads would
launch here, which conftest forbids: later fork pools are refused); their direct call is
checked in a subprocess.

Mutation check: with ``kernel_by_value`` dropping fastmath when a worker rebuilds a kernel
sent by value, test_fastmath_by_value_reaches_the_workers fails under every start method;
with the options left out of ``Kernel.content_parts``, test_kernels_differing_only_by_
fastmath_are_different_kernels fails (the token) and so does the by-value pair test (a
worker reuses the kernel it built for the other option)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import optionkernels as ok
import sharedcompute as sc
from conftest import TESTS_DIR, shared_pool
from sharedcompute.errors import InputError, KernelError


def _rows(seed: int = 3, n: int = 48, m: int = 1001) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, m))


def _sequential(x: np.ndarray) -> np.ndarray:
    return np.add.accumulate(x, axis=1)[:, -1]


def _pool_map(pool, kernel, shape, *inputs, dtype=np.float64) -> np.ndarray:
    out = pool.zeros(shape, dtype)
    shared = [pool.array(a) for a in inputs]
    try:
        pool.map(kernel, out, *shared)
        return np.array(out)
    finally:
        for a in [out, *shared]:
            a.free()


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("options, words", [
    (dict(fastmath="yes"), "fastmath='yes' must be False, True or a set of flags"),
    (dict(fastmath={"nnan", "quick"}), "fastmath flags ['quick'] are not numba's"),
    (dict(error_model="c"), "error_model='c' must be 'python'"),
    (dict(parallel=2), "parallel=2 must be True or False"),
    (dict(parallel=True, jit=False), "['parallel'] are numba options; jit=False"),
    (dict(fastmath=True, jit=False), "drop them or drop jit=False"),
])
def test_wrong_options_raise_input_error_with_the_fix(options, words):
    with pytest.raises(InputError) as err:
        sc.kernel(ok._row_sums, **options)
    assert words in str(err.value)


def test_a_numba_function_keeps_its_own_options():
    plain = numba.njit(ok._row_sums)
    with pytest.raises(InputError, match="numba-compiled already"):
        sc.kernel(plain, fastmath=True)
    fast = numba.njit(nogil=True, fastmath=True)(ok._row_sums)
    assert sc.kernel(fast, fastmath=True).fastmath is True  # the same options: accepted


def test_defaults_are_the_kernel_without_options():
    k = sc.kernel(ok._row_sums, fastmath=False, error_model="python", parallel=False)
    assert k.numba_options == {} and k.fastmath is False and k.error_model == "python"
    assert k.content_token() == sc.kernel(ok._row_sums).content_token()
    assert sc.kernel(ok._row_sums, fastmath={"nsz", "reassoc"}).fastmath == ("nsz", "reassoc")
    assert "fastmath=True" in repr(ok.row_sums_fast)


# -- identity -------------------------------------------------------------------------------
def test_kernels_differing_only_by_fastmath_are_different_kernels():
    plain, fast = sc.kernel(ok._row_sums), sc.kernel(ok._row_sums, fastmath=True)
    flags = sc.kernel(ok._row_sums, fastmath={"reassoc"})
    tokens = {k.content_token() for k in (plain, fast, flags)}
    assert len(tokens) == 3
    assert sc.kernel(ok._row_sums, fastmath=True).content_token() == fast.content_token()
    numpy_model = sc.kernel(ok._row_sums, error_model="numpy")
    assert numpy_model.content_token() not in tokens


def test_a_call_with_one_option_never_rings_the_others_cached_call():
    """The cached call of the plain kernel (rung twice) is not the fastmath kernel's: its
    call gives fastmath's bits, and each kernel keeps its own entry (by value: the worker
    builds each kernel by its token)."""
    pool = shared_pool(2, "forkserver")
    x = _rows()
    plain, fast = sc.kernel(ok._row_sums), sc.kernel(ok._row_sums, fastmath=True)
    want_fast = np.zeros(len(x))
    fast(want_fast, x)
    xs, out = pool.array(x), pool.zeros(len(x))
    try:
        for _ in range(2):
            pool.map(plain, out, xs)
            assert np.array_equal(np.asarray(out), _sequential(x))
        pool.map(fast, out, xs)
        assert np.array_equal(np.asarray(out), want_fast)
        assert not np.array_equal(want_fast, _sequential(x))
        pool.map(plain, out, xs)
        assert np.array_equal(np.asarray(out), _sequential(x))
        kernels = [key[1] for key in pool._backend.cache.entries]
        assert plain in kernels and fast in kernels
    finally:
        xs.free()
        out.free()


# -- fastmath reaches the workers ------------------------------------------------------------
def test_fastmath_by_reference_gives_the_in_process_bits(start_method):
    """A loop sum that fastmath reassociates (vectorised partial sums): the pool's bits are
    the direct call's (same options), and differ from the plain loop's, which equals
    NumPy's sequential sum bitwise."""
    pool = shared_pool(2, start_method)
    x = _rows()
    want = np.zeros(len(x))
    ok.row_sums_fast(want, x)
    got = _pool_map(pool, ok.row_sums_fast, len(x), x)
    assert np.array_equal(got, want)
    plain = _pool_map(pool, ok.row_sums, len(x), x)
    assert np.array_equal(plain, _sequential(x))
    assert not np.array_equal(got, plain)  # fastmath did change the bits
    np.testing.assert_allclose(got, plain, rtol=1e-12, atol=1e-12)


def test_nnan_folds_nan_checks_in_the_workers(start_method):
    pool = shared_pool(2, start_method)
    x = np.where(np.arange(64) % 3 == 0, np.nan, np.linspace(0, 1, 64))
    got = _pool_map(pool, ok.nan_flags_fast, len(x), x)
    want = np.zeros(len(x))
    ok.nan_flags_fast(want, x)
    assert np.array_equal(got, want) and not got.any()  # x != x folded to False
    plain = _pool_map(pool, sc.kernel(ok._nan_flags), len(x), x)
    assert np.array_equal(plain, np.isnan(x).astype(float))


def test_fastmath_by_value_reaches_the_workers(start_method):
    """Kernels a test builds travel by value: the module's function (importable, numba's
    disk cache) and a function of this test (not importable in the workers: compiled
    uncached). The worker must compile both with fastmath; a pair differing only by
    fastmath gives each its own bits."""
    pool = shared_pool(2, start_method)
    x = _rows(5)

    def local_sums(out, x):
        for i in range(x.shape[0]):
            acc = 0.0
            for j in range(x.shape[1]):
                acc += x[i, j]
            out[i] = acc

    for func in (ok._row_sums, local_sums):
        plain, fast = sc.kernel(func), sc.kernel(func, fastmath=True)
        want = np.zeros(len(x))
        fast(want, x)
        assert not np.array_equal(want, _sequential(x))
        assert np.array_equal(_pool_map(pool, fast, len(x), x), want), func.__name__
        assert np.array_equal(_pool_map(pool, plain, len(x), x), _sequential(x))
        assert np.array_equal(_pool_map(pool, fast, len(x), x), want), func.__name__


def test_warmup_compiles_with_the_options(start_method):
    pool = shared_pool(2, start_method)
    x = _rows(9)
    pool.warmup([(ok.row_sums_fast, pool.zeros(len(x)), pool.array(x))])
    want = np.zeros(len(x))
    ok.row_sums_fast(want, x)
    assert np.array_equal(_pool_map(pool, ok.row_sums_fast, len(x), x), want)


# -- error_model -----------------------------------------------------------------------------
def test_error_model_on_division_by_zero(start_method):
    pool = shared_pool(2, start_method)
    a = np.array([1.0, 0.0, -1.0, 2.0, np.inf, 3.0] * 4)
    b = np.array([0.0, 0.0, 0.0, 4.0, 0.0, -0.0] * 4)
    with np.errstate(all="ignore"):
        want = a / b
    got = _pool_map(pool, ok.ratio_numpy, len(a), a, b)
    assert np.array_equal(got.view(np.uint64) & ~np.uint64(0x7FFFFFFFFFFFF),
                          want.view(np.uint64) & ~np.uint64(0x7FFFFFFFFFFFF))  # NaN payloads
    assert np.array_equal(np.isnan(got), np.isnan(want))
    with pytest.raises(KernelError, match="ZeroDivisionError"):
        _pool_map(pool, ok.ratio, len(a), a, b)
    ok_b = np.where(b == 0, 1.0, b)
    assert np.array_equal(_pool_map(pool, ok.ratio, len(a), a, ok_b), a / ok_b)


# -- parallel: fusion, one numba thread per worker ---------------------------------------------
def test_parallel_stencil_equals_numpy_bitwise(start_method):
    pool = shared_pool(2, start_method)
    u = np.random.default_rng(11).standard_normal((61, 47))
    want = np.zeros_like(u)
    ok.stencil_numpy(want, u)
    us = pool.array(u)
    try:
        for kernel in (ok.stencil_fused, ok.stencil):
            out = pool.zeros(u.shape)
            try:
                pool.map(kernel, out, us)
                assert np.array_equal(np.asarray(out), want), kernel.name
            finally:
                out.free()
    finally:
        us.free()


def test_parallel_kernels_run_on_one_numba_thread_per_worker(start_method):
    pool = shared_pool(2, start_method)
    before = [pool.submit(ok.task_count).result() for _ in range(4)]
    report = _pool_map(pool, ok.thread_report, (8, 2))
    assert (report[:, 0] == 1).all()  # numba.get_num_threads() in the workers
    assert report[:, 1].max() <= max(before)  # no extra OS thread launched
    assert pool.reduce(ok.prange_sum, pool.array(np.ones(1000))) == 1000.0


PARALLEL_DIRECT = """
import sys
sys.path.insert(0, {tests!r})
import numba, numpy as np
import sharedcompute as sc
import optionkernels as ok
if __name__ == "__main__":
    u = np.random.default_rng(2).standard_normal((40, 30))
    want, got, fused = np.zeros_like(u), np.zeros_like(u), np.zeros_like(u)
    ok.stencil_numpy(want, u)
    before = numba.get_num_threads()
    ok.stencil_fused(fused, u)
    with sc.Pool(2, start_method="forkserver") as pool:
        out = pool.zeros(u.shape)
        pool.map(ok.stencil_fused, out, pool.array(u))
        got[:] = out
        verified = sc.verify(pool, ok.stencil_fused, pool.zeros(u.shape), pool.array(u),
                             rtol=0, atol=0).ok
        x = np.random.default_rng(4).standard_normal(5000)
        pooled = pool.reduce(ok.prange_sum, pool.array(x))
    with sc.Pool(2, backend="inline") as inline:  # the same bits as the workers', in process
        inlined = inline.reduce(ok.prange_sum, inline.array(x))
    print("RESULT", np.array_equal(fused, want), np.array_equal(got, want),
          numba.get_num_threads() == before, ok.prange_sum(x, workers=2) == ok.prange_sum(
          x, workers=2), verified, inlined == pooled, flush=True)
"""


def test_parallel_direct_call_in_a_subprocess(tmp_path):
    """The direct call compiles in this process (numba's threads launch), runs on one numba
    thread and restores the count: run in a child, which then starts a forkserver pool.
    verify runs the kernel in process too (its per-chunk splitting): bitwise NumPy."""
    script = tmp_path / "direct.py"
    script.write_text(textwrap.dedent(PARALLEL_DIRECT.format(tests=TESTS_DIR)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT True True True True True True" in proc.stdout, proc.stdout + proc.stderr


# -- verify says what fastmath changes -------------------------------------------------------
def test_verify_names_fastmath_and_the_tolerance_to_pass():
    pool = shared_pool(2, "forkserver")
    x = pool.array(_rows(21, 40, 700))
    out = pool.zeros(40)
    try:
        assert sc.verify(pool, ok.row_sums, out, x, rtol=0, atol=0).ok  # bitwise
        report = sc.verify(pool, ok.row_sums_fast, out, x, rtol=0, atol=0)
        assert not report.ok
        text = str(report)
        assert "compiled with fastmath=True, the likely reason" in text, text
        rtol = float(text.split("it passes with rtol=")[1].split(",")[0])
        assert 0 < rtol < 1e-12
        assert sc.verify(pool, ok.row_sums_fast, out, x, rtol=rtol, atol=0).ok
        assert sc.verify(pool, ok.row_sums_fast, out, x).ok  # the default n-term tolerance
        with pytest.raises(sc.VerificationError, match="fastmath"):
            report.raise_if_failed()
        report_plain = sc.verify(pool, ok.row_sums, out, x, rtol=0, atol=0)
        assert "fastmath" not in str(report_plain)
    finally:
        x.free()
        out.free()


def test_verify_passes_a_fastmath_kernel_that_is_bitwise():
    pool = shared_pool(2, "forkserver")
    x = pool.array(np.linspace(-3, 3, 100))
    out = pool.zeros(100)
    try:
        report = sc.verify(pool, ok.scale_fast, out, x, rtol=0, atol=0)
        assert report.ok and "fastmath" not in str(report), str(report)
    finally:
        x.free()
        out.free()


def test_verify_says_when_no_tolerance_passes():
    """Infinities where the reference has none (fastmath's ninf, or any kernel): the
    suggestion is not a tolerance."""
    from sharedcompute.verify import VerificationReport, compare
    c = compare("out", np.array([1.0, np.inf]), np.array([1.0, 2.0]), 0.0, 0.0)
    assert not c.ok and c.passes_with is None
    note = VerificationReport("k", 2, [c], fastmath=True).fastmath_note()
    assert "no tolerance passes" in note
    c = compare("out", np.array([1.0 + 1e-15, 1e-300]), np.array([1.0, 0.0]), 0.0, 0.0)
    assert c.passes_with is not None
    r, a = c.passes_with
    assert compare("out", np.array([1.0 + 1e-15, 1e-300]), np.array([1.0, 0.0]), r, a).ok
