"""sc.snapshot: rows of an array the same call writes, as they were when the call (pool.map)
or the stage (a step program) started. Floyd-Warshall as one program against NumPy and
scipy, bitwise, under every start method and 1-3 workers; a kernel writing the snapshotted
row sees the old values; snapshots in later stages, of slices, across swaps; the refusals;
a raising kernel does not hang the barrier."""
from __future__ import annotations

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from snapkernels import add_row, add_row_fail_at, add_rows, fw_relax, half_and_max, plus_row

try:
    from scipy.sparse.csgraph import floyd_warshall as scipy_fw
except ImportError:  # pragma: no cover - scipy is a test dependency
    scipy_fw = None

W = 300  # columns: rows of 2400 bytes, one or two per chunk, so every worker has rows


def graph(n: int, dtype: str) -> np.ndarray:
    """A directed graph's distances: positive weights, no edge: inf (float) or 10**6 (int)."""
    rng = np.random.default_rng(n)
    d = rng.integers(1, 50, (n, n)).astype(dtype)
    if dtype == "float64":
        d = d + rng.random((n, n))
    d[rng.random((n, n)) < 0.7] = np.inf if dtype == "float64" else 10**6
    np.fill_diagonal(d, 0)
    return d


def np_floyd(d: np.ndarray) -> np.ndarray:
    d = d.copy()
    for k in range(d.shape[0]):
        d = np.minimum(d, d[:, k, None] + d[None, k, :])
    return d


def floyd_program(d):
    return sc.program(sc.stage(fw_relax, d, sc.snapshot(d, sc.STEP), sc.STEP))


@pytest.mark.parametrize("n_workers", [1, 2, 3])
@pytest.mark.parametrize("n, dtype", [(101, "int32"), (75, "float64")])
def test_floyd_warshall_as_one_program_is_bitwise_numpy_and_scipy(start_method, n_workers,
                                                                     n, dtype):
    g = graph(n, dtype)
    want = np_floyd(g)
    pool = shared_pool(n_workers, start_method)
    d = pool.array(g)
    try:
        roles = pool.iterate(floyd_program(d), steps=n)
        assert roles[d] is d
        got = d.numpy().copy()
    finally:
        d.free()
    assert got.dtype == g.dtype and np.array_equal(got, want)
    assert not np.isnan(got).any()
    if scipy_fw is not None:
        assert np.array_equal(got.astype(np.float64), scipy_fw(g.astype(np.float64)))


def test_inline_floyd_and_map_per_k_give_the_same_bits():
    g = graph(41, "float64")
    want = np_floyd(g)
    with sc.Pool(3, backend="inline") as pool:
        d = pool.array(g)
        pool.iterate(floyd_program(d), steps=41)
        assert np.array_equal(d.numpy(), want)
        d[:] = g
        for k in range(41):
            pool.map(fw_relax, d, sc.snapshot(d, k), k)
        assert np.array_equal(d.numpy(), want)


def start(rows: int = 23) -> np.ndarray:
    return np.arange(rows * W, dtype=np.float64).reshape(rows, W) % 17 + 1.0


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_a_map_writing_the_snapshotted_row_sees_its_old_values(start_method, n_workers):
    a0 = start()
    want = a0.copy()
    for k in (0, 11, 22, -1):
        row = want[k].copy()  # NumPy: copy first, then write every row, row k included
        want += row
    rows = a0[3:17:4].copy()
    want2 = a0.copy()
    for m in range(rows.shape[0]):
        want2 += rows[m]
    pool = shared_pool(n_workers, start_method)
    a = pool.array(a0)
    try:
        for k in (0, 11, 22, -1):
            assert pool.map(add_row, a, sc.snapshot(a, k)) is a
        assert np.array_equal(a.numpy(), want)
        a[:] = a0
        pool.map(add_rows, a, sc.snapshot(a, slice(3, 17, 4)))  # a slice of rows
        assert np.array_equal(a.numpy(), want2)
        step = pool.bind(add_row, a, sc.snapshot(a, 5))  # bound: a fresh copy per call
        a[:] = a0
        step(), step()
        w3 = a0 + a0[5]
        assert np.array_equal(a.numpy(), w3 + w3[5])
    finally:
        a.free()


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_snapshots_in_later_stages_slices_and_swaps(start_method, n_workers):
    """Stage 2 snapshots what stage 1 wrote (copied by the rows' owners); stage 1 snapshots
    what stage 2 did not write (copied by one worker); a slice; a snapshot across swap=."""
    steps, a0 = 9, start()
    b0 = start()[::-1].copy()
    a, b = a0.copy(), b0.copy()
    for t in range(steps):  # the oracle: NumPy, copying first
        a += a[t].copy()
        b += a[t].copy()
        s = a[2:20:6].copy()
        for m in range(s.shape[0]):
            b += s[m]
    c0 = start()
    c, c2 = c0.copy(), np.zeros_like(c0)
    for t in range(steps):
        c2[:] = c + c[t]
        c, c2 = c2, c
    pool = shared_pool(n_workers, start_method)
    arrays = [pool.array(x) for x in (a0, b0, c0)] + [pool.zeros(c0.shape)]
    sa, sb, sc_, sc2 = arrays
    try:
        prog = sc.program(sc.stage(add_row, sa, sc.snapshot(sa, sc.STEP)),
                          sc.stage(add_row, sb, sc.snapshot(sa, sc.STEP)),
                          sc.stage(add_rows, sb, sc.snapshot(sa, slice(2, 20, 6))))
        pool.iterate(prog, steps=steps)
        assert np.array_equal(sa.numpy(), a) and np.array_equal(sb.numpy(), b)
        prog = sc.program(sc.stage(plus_row, sc2, sc_, sc.snapshot(sc_, sc.STEP)),
                          swap=[(sc_, sc2)])
        roles = pool.iterate(prog, steps=steps)
        assert np.array_equal(roles[sc_].numpy(), c) and np.array_equal(roles[sc2].numpy(), c2)
    finally:
        for x in arrays:
            x.free()


@pytest.mark.parametrize("n_workers", [2, 3])
def test_a_snapshot_after_a_checked_stage(n_workers):
    """The stage before a snapshot is a residual-checked last stage (its copies are made
    before that stage's barrier too), at every step (check_every=1)."""
    a0 = start()
    pool = shared_pool(n_workers, START_METHODS[0])
    sa, sb = pool.array(a0), pool.zeros(a0.shape)
    try:
        prog = sc.program(sc.stage(add_row, sa, sc.snapshot(sa, sc.STEP)),
                          sc.stage(half_and_max, sb, sa))
        got = pool.iterate(prog, steps=10, check_every=1, info=True)
        assert got.sweeps == 10 and got.residual == pytest.approx(np.max(np.asarray(sb)))
        a, b = a0.copy(), np.zeros_like(a0)
        for t in range(got.sweeps):
            a += a[t].copy()
            b[:] = a / 2
        assert np.array_equal(sa.numpy(), a) and np.array_equal(sb.numpy(), b)
    finally:
        sa.free(), sb.free()


def test_a_raising_kernel_in_a_snapshot_program_does_not_hang():
    pool = shared_pool(2, START_METHODS[0])
    a = pool.array(start())
    try:
        prog = sc.program(sc.stage(add_row_fail_at, a, sc.snapshot(a, sc.STEP), sc.STEP, 2))
        with pytest.raises(sc.KernelError, match=r"stage 1 \(add_row_fail_at\) of step 2"):
            pool.iterate(prog, steps=5, timeout=60)
        a[:] = start()
        pool.iterate(floyd_program(a), steps=4)  # the pool still works
        assert np.array_equal(a.numpy(), np_floyd_steps(start(), 4))
    finally:
        a.free()


def np_floyd_steps(d: np.ndarray, steps: int) -> np.ndarray:
    for k in range(steps):
        d = np.minimum(d, d[:, k, None] + d[None, k, :])
    return d


def test_bad_snapshots_are_refused_with_advice():
    with sc.Pool(2, backend="inline") as pool:
        a, other = pool.array(start()), pool.array(start())
        with pytest.raises(sc.InputError, match="row 23 is outside the array's 23 rows"):
            sc.snapshot(a, 23)
        with pytest.raises(sc.InputError, match="reaches outside"):
            sc.snapshot(a, slice(0, 40))
        with pytest.raises(sc.InputError, match="index must be a row"):
            sc.snapshot(a, 1.5)
        with pytest.raises(sc.InputError, match="plain NumPy array, which never changes"):
            sc.snapshot(start(), 0)
        with pytest.raises(sc.InputError, match="sc.STEP is a step program's step index"):
            pool.map(add_row, a, sc.snapshot(a, sc.STEP))
        with pytest.raises(sc.InputError, match="pass steps <= 23"):
            pool.iterate(sc.program(sc.stage(add_row, a, sc.snapshot(a, sc.STEP))), steps=24)
        with pytest.raises(sc.InputError, match="no stage of the program takes"):
            pool.iterate(sc.program(sc.stage(add_row, a, sc.snapshot(other, 0))), steps=2)
        with pytest.raises(sc.InputError, match="shares memory with another array"):
            pool.iterate(sc.program(sc.stage(add_row, a[:10], sc.snapshot(a, 0)),
                                    sc.stage(add_row, a, sc.snapshot(a, 0))), steps=2)
        with pytest.raises(sc.InputError, match="inner iterate"):
            pool.iterate(sc.program(sc.stage(plus_row, a, other, sc.snapshot(a, 0), sweeps=2)),
                         steps=2)
        with pytest.raises(sc.InputError, match="cannot pass to a kernel"):
            add_row(a.numpy().copy(), sc.snapshot(a, 0))  # a direct call takes none
        assert np.array_equal(a.numpy(), start())  # nothing ran


def test_the_dask_backend_refuses_snapshots():
    pytest.importorskip("dask.distributed")
    with sc.Pool(backend="dask", n_workers=2) as pool, sc.Pool(1, backend="inline") as local:
        a = pool.array(start(5))
        with pytest.raises(sc.InputError, match="the Dask backend has no snapshots"):
            sc.snapshot(a, 0)
        here = local.array(start(5))
        with pytest.raises(sc.InputError, match="Snapshot, which this pool cannot pass"):
            pool.map(add_row, a, sc.snapshot(here, 0))
