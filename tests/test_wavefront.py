"""Wavefront stages (``sc.stage(kernel, u, ..., order="wavefront")``, _iterate/wavefront.py):
bitwise the serial sweep (the kernel called on the whole array in a plain loop; a
pure-Python and a NumPy reference on small cases) for 5-point SOR, PRK p2p, a depth-2
sweep and a sweep reading a second array, with 2 and 3 workers, odd sizes, few and many
blocks, float32 and float64, NaN and inf, under every start method; a failing worker
never hangs the others; the refusals say what to change."""
from __future__ import annotations

import time

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute._iterate.wavefront import LAG, default_blocks
from wavekernels import (change, nine_point, no_depth, p2p, padded, poisson_gs, sor,
                         sor_failing, two_outputs, wide, with_position)


def serial(kernel, arrays, params, steps):
    """The oracle: the kernel's compiled serial sweep on the whole array, in a loop."""
    f = kernel.compiled(False)[0]
    for _ in range(steps):
        f(*arrays, *params)
    return arrays[0]


def data(shape, dtype, seed=0, specials=False):
    u = np.random.default_rng(seed).random(shape).astype(dtype)
    if specials:
        u[shape[0] // 2, 3], u[1, shape[1] // 3] = np.nan, np.inf
        u[-2, -5] = -np.inf
    return u


def same_bits(a, b):
    """Bitwise equal, NaN payloads aside: NaN in the same places, every other value with
    the same bits (+0.0 and -0.0 apart). A NaN's sign bit may differ: numba compiles the
    whole (C-contiguous) array and a column block (strided) separately, and LLVM may
    commute an addition's operands, which decides which of two NaNs goes on."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = np.isnan(a)
    return bool((nan == np.isnan(b)).all()) and a[~nan].tobytes() == b[~nan].tobytes()


def run(pool, kernel, u0, params=(), steps=3, blocks=None, extra=()):
    u = pool.array(u0)
    shared = [pool.array(x) for x in extra]
    prog = sc.program(sc.stage(kernel, u, *shared, *params, order="wavefront", blocks=blocks))
    roles = pool.iterate(prog, steps=steps)
    assert roles[u] is u
    out = u.numpy().copy()
    del u, shared, roles
    return out


CASES = [  # kernel, shape, params, extra arrays
    (sor, (37, 53), (1.5,), ()),
    (sor, (64, 301), (1.0,), ()),
    (p2p, (41, 67), (), ()),
    (wide, (29, 45), (), ()),
    (poisson_gs, (33, 40), (0.01,), ((33, 40),)),
    (sor, (4, 30), (1.5,), ()),  # fewer rows than workers x depth: some workers idle
]


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("workers", [2, 3])
def test_bitwise_the_serial_sweep(method, workers):
    pool = shared_pool(workers, method)
    for k, (kernel, shape, params, extra) in enumerate(CASES):
        for dtype in (np.float64, np.float32):
            u0 = data(shape, dtype, k, specials=kernel is sor)
            if kernel is p2p:  # PRK's start: a[0, j] = j, a[i, 0] = i, zero inside
                u0[:] = 0
                u0[0, :], u0[:, 0] = np.arange(shape[1]), np.arange(shape[0])
            ex = [data(s, dtype, 9) for s in extra]
            want = serial(kernel, [u0.copy()] + [e.copy() for e in ex], params, 3)
            most = (shape[1] - 2 * kernel.depth) // kernel.depth
            for blocks in (None, 1, 2, 7, most):
                got = run(pool, kernel, u0, params, 3, blocks, ex)
                assert same_bits(got, want), (kernel.name, dtype, blocks)


def test_the_serial_kernel_is_the_textbook_sweep():
    """The outside oracles: plain Python loops (SOR) and NumPy's anti-diagonals (p2p)."""
    u0 = data((9, 12), np.float64, 4)
    want = u0.copy()
    for _ in range(2):
        sor.py_func(want, 1.3)  # pure Python: no numba
    with sc.Pool(3, backend="inline") as pool:
        assert same_bits(run(pool, sor, u0, (1.3,), 2, 3), want)
    with sc.Pool(3, start_method="fork") as pool:
        assert same_bits(run(pool, sor, u0, (1.3,), 2, 4), want)
        a0 = np.zeros((11, 14))
        a0[0, :], a0[:, 0] = np.arange(14.0), np.arange(11.0) * 0.5
        ref = a0.copy()
        n, m = ref.shape
        for _ in range(2):
            for d in range(2, n + m - 3):  # interior points with i + j = d, diagonal by diagonal
                i = np.arange(max(1, d - m + 2), min(n - 2, d - 1) + 1)
                j = d - i
                ref[i, j] = ref[i - 1, j] + ref[i, j - 1] - ref[i - 1, j - 1]
        assert same_bits(run(pool, p2p, a0, (), 2, 5), ref)


def test_inline_gives_the_same_bits_and_stages_mix():
    """The inline pool runs the blocks in order; a wavefront stage between plain stages,
    with a residual checked after it (the scratch block holds slots and counters)."""
    u0 = data((40, 70), np.float64, 5)
    want = serial(sor, [u0.copy()], (1.2,), 4)
    with sc.Pool(2, backend="inline") as pool:
        assert same_bits(run(pool, sor, u0, (1.2,), 4, 6), want)
    ref_u, ref_old = u0.copy(), np.zeros_like(u0)
    for t in range(1, 41):
        serial(sor, [ref_u], (1.2,), 1)
        last = np.abs(ref_u - ref_old).max()
        ref_old[:] = ref_u
        if t % 2 == 0 and last <= 5e-3:
            break
    for backend in ("inline", "processes"):
        with sc.Pool(2, backend=backend, start_method="fork") as pool:
            u, old = pool.array(u0), pool.zeros(u0.shape)
            prog = sc.program(sc.stage(sor, u, 1.2, order="wavefront"), sc.stage(change, old, u))
            res = pool.iterate(prog, steps=40, tol=5e-3, check_every=2, info=True)
            assert res.sweeps == t and res.residual == last
            assert same_bits(u, ref_u) and same_bits(old, ref_old)
            del u, old, res


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_failing_worker_never_hangs_the_others(where):
    """The worker that raises may be the one the others wait for (first) or a waiting
    one (last): a clear error, promptly, and the pool sweeps right afterwards."""
    u0 = data((90, 80), np.float64, 6)
    u0[5 if where == "first" else 85, 40] = -7.0
    with sc.Pool(3, start_method="fork") as pool:
        u = pool.array(u0)
        t0 = time.monotonic()
        with pytest.raises(sc.KernelError) as info:
            pool.iterate(sc.program(sc.stage(sor_failing, u, 1.5, order="wavefront")), steps=3)
        assert time.monotonic() - t0 < 20
        assert info.value.remote_type == "ValueError"
        assert "poisoned" in str(info.value) and "stage 1 (sor_failing) of step 0" in str(info.value)
        del u
        good = data((90, 80), np.float64, 7)
        assert same_bits(run(pool, sor, good, (1.5,), 2, 5), serial(sor, [good.copy()], (1.5,), 2))


def test_refusals_say_what_to_change():
    with sc.Pool(2, backend="inline") as pool:
        u, v = pool.zeros((10, 12)), pool.zeros((10, 12))

        def refused(stage_fn, words):
            with pytest.raises(sc.InputError, match=words):
                pool.iterate(sc.program(stage_fn()), steps=1)

        refused(lambda: sc.stage(sor, pool.zeros(30), 1.0, order="wavefront"), "sweeps a 2-D array")
        refused(lambda: sc.stage(sor, pool.zeros((4, 5, 6)), 1.0, order="wavefront"), "2-D array")
        refused(lambda: sc.stage(two_outputs, u, v, order="wavefront"), "sweeps ONE array")
        refused(lambda: sc.stage(change, v, u, order="wavefront"), "no combine=")
        refused(lambda: sc.stage(no_depth, u, order="wavefront"), "depth=1")
        refused(lambda: sc.stage(with_position, u, order="wavefront"), "no position=")
        refused(lambda: sc.stage(padded, u, order="wavefront"), "boundary='none'")
        refused(lambda: sc.stage(sor, u, 1.0, order="wavefront", blocks=11), "at most 10")
        refused(lambda: sc.stage(poisson_gs, u, pool.zeros((10, 13)), 1.0, order="wavefront"),
                "sc.whole")
        with pytest.raises(sc.InputError, match="'rows'.*'wavefront'"):
            sc.stage(sor, u, 1.0, order="diagonal")
        with pytest.raises(sc.InputError, match="positive integer"):
            sc.stage(sor, u, 1.0, order="wavefront", blocks=0)
        with pytest.raises(sc.InputError, match="positive integer"):
            sc.stage(sor, u, 1.0, order="wavefront", blocks=True)
        with pytest.raises(sc.InputError, match="add order='wavefront'"):
            sc.stage(sor, u, 1.0, blocks=4)
        with pytest.raises(sc.InputError, match="drop sweeps="):
            sc.stage(sor, u, 1.0, order="wavefront", sweeps=3)
        # a read array that shares memory with the swept one: make_plan's aliasing check
        with pytest.raises(sc.InputError):
            pool.iterate(sc.program(sc.stage(poisson_gs, u, u, 1.0, order="wavefront")), steps=1)
        del u, v


def test_corner_reads_are_not_serial_but_the_same_every_run():
    """A 9-point sweep reads the upper right (new in the serial sweep) and the lower left
    (old): column blocks cannot give those, so the result is not the serial one; the lag
    of 2 blocks keeps it free of races, the same bits on every run."""
    u0 = data((60, 90), np.float64, 8)
    pool = shared_pool(3, "fork")
    runs = [run(pool, nine_point, u0, (), 2, 9) for _ in range(3)]
    assert all(same_bits(r, runs[0]) for r in runs)
    assert not same_bits(runs[0], serial(nine_point, [u0.copy()], (), 2))


def test_default_blocks():
    """About 8 columns a block; wider for few rows a worker; enough for the pipeline."""
    assert default_blocks(499, 998, 1, 2) == 110  # 9 columns: 499 x 9 >= 4096
    assert default_blocks(4000, 4000, 1, 2) == 500
    assert default_blocks(20, 998, 1, 2) == 4 * LAG * 2  # 205-column blocks: too few
    assert default_blocks(499, 10, 1, 2) == 10  # at most one block per column
    assert default_blocks(499, 10, 3, 2) == 3  # at least depth columns a block


@pytest.mark.parametrize("workers", [2, 3])
def test_a_snapshot_after_a_wavefront_stage_holds_the_swept_rows(workers):
    """A wavefront stage writes each worker's even share of the rows, not its chunks of
    the map grid: the snapshot a following stage reads is copied by the rows' real
    writer (the map grid's owner copied rows another worker was still sweeping)."""
    from snapkernels import add_row
    u0 = data((61, 40), np.float64, seed=3)
    steps = 50
    u, want = u0.copy(), np.zeros((61, 40))
    for t in range(steps):  # every step's snapshot row adds into every row of the sum
        serial(sor, [u], [1.5], 1)
        want += u[t]
    pool = shared_pool(workers, START_METHODS[0]) if workers == 2 else sc.Pool(workers)
    try:
        su, so = pool.array(u0), pool.zeros((61, 40))
        pool.iterate(sc.program(sc.stage(sor, su, 1.5, order="wavefront"),
                                sc.stage(add_row, so, sc.snapshot(su, sc.STEP))),
                     steps=steps)
        assert same_bits(su.numpy(), u)
        assert same_bits(so.numpy(), want)
        for a in (su, so):
            a.free()
    finally:
        if workers != 2:
            pool.close()
