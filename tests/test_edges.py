"""Issue 26, items 1, 3 and 4: boundary="fixed" (each swapped array keeps its own edges),
position="edges" (whether a call's rows hold the first or last row written) and halo=
(read arguments with rows of their own: pre-padded and staggered fields). The oracle is a
NumPy loop written here with each kernel's operations in the same order, compared bit for
bit, under every start method, on the values that break things: 1- and 2-row arrays, more
workers than rows, float32, NaN in the edges, halos at the array's ends."""
from __future__ import annotations

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute.errors import InputError

from conftest import START_METHODS, shared_pool
from edgekernels import (count_edges, heat_fixed, heat_source, jacobi_2d, jacobi_2d_change,
                         mark_edges, mark_edges_flat, squared_steps, staggered)

ROWS = [1, 2, 3, 5, 41]


def sweeps_numpy(step, o0, u0, steps):
    """(array holding the last sweep, the other): ``step(new, cur)`` writes new's interior
    in place; what it leaves unwritten stays that array's own, as in polybench."""
    prev, cur = o0.copy(), u0.copy()
    for _ in range(steps):
        new = prev.copy()
        step(new, cur)
        prev, cur = cur, new
    return cur, prev


@np.errstate(all="ignore")
def jacobi_np(new, cur):
    """polybench jacobi_2d's update, as edgekernels.jacobi_2d adds (float64 times, then
    stored in the dtype: numba's 0.2 is a float64)."""
    if new.shape[0] < 3 or new.shape[1] < 3:
        return
    s = (((cur[1:-1, 1:-1] + cur[1:-1, :-2]) + cur[1:-1, 2:]) + cur[2:, 1:-1]) + cur[:-2, 1:-1]
    new[1:-1, 1:-1] = (0.2 * s.astype(np.float64)).astype(new.dtype)


@np.errstate(all="ignore")
def heat_np(new, cur):
    if new.shape[0] < 3:
        return
    s = (cur[:-2] + cur[2:]) + (2.0 * cur[1:-1].astype(np.float64))
    new[1:-1] = (0.25 * s).astype(new.dtype)


def grids(n, m=6, dtype=np.float64, seed=0):
    """Two grids with different edges (rows and columns), NaN and inf among them."""
    rng = np.random.default_rng(seed + n)
    a = rng.random((n, m)).astype(dtype)
    b = (rng.random((n, m)) + 7.0).astype(dtype)
    a[0, :] = np.nan
    b[-1, :] = -np.inf
    if m > 1:
        a[:, -1] = 3.0
        b[:, 0] = -0.0
    return a, b


def run_iterate(pool, kernel, out0, u0, *params, **kw):
    out, u = pool.array(out0), pool.array(u0)
    r = pool.iterate(kernel, out, u, *params, info=True, **kw)
    other = u if r.array is out else out
    return r, r.array.numpy().copy(), other.numpy().copy()


def same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), np.argwhere(
        got.view(np.uint8) != want.view(np.uint8))[:5]


# -- 1. boundary="fixed" -------------------------------------------------------------------
@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("n", ROWS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jacobi_2d_with_different_edges_equals_numpy(method, n, dtype):
    pool = shared_pool(3, method)  # more workers than rows for n < 3
    u0, o0 = grids(n, dtype=dtype)
    for steps in (0, 1, 2, 7):
        r, got, other = run_iterate(pool, jacobi_2d, o0, u0, steps=steps)
        want, want_other = sweeps_numpy(jacobi_np, o0, u0, steps)
        same(got, want)
        same(other, want_other)


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("n", ROWS)
def test_one_dimensional_fixed_edges(method, n):
    pool = shared_pool(3, method)
    rng = np.random.default_rng(n)
    u0, o0 = rng.random(n), rng.random(n) + 2.0
    u0[0], o0[-1] = np.nan, np.inf
    r, got, other = run_iterate(pool, heat_fixed, o0, u0, steps=5)
    want, want_other = sweeps_numpy(heat_np, o0, u0, 5)
    same(got, want)
    same(other, want_other)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 9])
@pytest.mark.parametrize("steps", [1, 4, 5, 12, 31])
def test_fixed_with_temporal_blocking_is_plain_sweeps(k, steps):
    """Blocks of sweeps: each level's buffer starts from the array plain sweeps overwrite
    (edge rows and columns are that array's own), blocks are odd so both arrays hold what
    plain sweeps put in them."""
    u0, o0 = grids(64, m=9)
    with sc.Pool(2, backend="inline") as pool:
        r, got, other = run_iterate(pool, jacobi_2d, o0, u0, steps=steps, block_sweeps=k)
    want, want_other = sweeps_numpy(jacobi_np, o0, u0, steps)
    same(got, want)
    same(other, want_other)
    assert r.sweeps == steps and r.block_sweeps % 2 == 1


@pytest.mark.parametrize("method", START_METHODS)
def test_fixed_blocks_on_worker_processes(method):
    pool = shared_pool(3, method)
    u0, o0 = grids(97, m=5, dtype=np.float32)
    r, got, other = run_iterate(pool, jacobi_2d, o0, u0, steps=13, block_sweeps=3)
    want, want_other = sweeps_numpy(jacobi_np, o0, u0, 13)
    assert r.block_sweeps == 3
    same(got, want)
    same(other, want_other)


def test_fixed_residual_checked_in_blocks_stops_where_plain_stops():
    """An idempotent fused residual checked inside blocks: the same sweep count, residual
    and arrays as plain sweeps, under 'fixed'."""
    u0, _ = grids(60, m=8)
    u0[0] = 1.0  # finite edges, the same in both (a solve with different ones oscillates)
    o0 = u0.copy()
    o0[1:-1, 1:-1] = 5.0  # out's interior: the sweep before, never read
    with sc.Pool(2, backend="inline") as pool:
        got = {k: run_iterate(pool, jacobi_2d_change, o0, u0, steps=400, tol=1e-3,
                              check_every=1, block_sweeps=k) for k in (1, 3)}
    (r1, a1, b1), (r3, a3, b3) = got[1], got[3]
    assert r1.sweeps == r3.sweeps < 400 and r1.residual == r3.residual
    same(a3, a1)
    same(b3, b1)
    want, _ = sweeps_numpy(jacobi_np, o0, u0, r1.sweeps)
    same(a1, want)


@pytest.mark.parametrize("check_every", [1, 2, 4, 7])
def test_fixed_with_a_residual_checked_between_odd_blocks(check_every):
    """A residual kernel (a second pass) is checked at block boundaries: the same sweeps,
    residual and arrays as plain sweeps."""
    from sharedcompute.kernels.reductions import max_abs_diff
    u0, _ = grids(50, m=7)
    u0[0] = 1.0
    o0 = u0.copy()
    o0[0, 1:-1] = 4.0  # out's own top edge: the two arrays never agree, nothing converges
    got = []
    with sc.Pool(2, backend="inline") as pool:
        for k in (1, 5):
            got.append(run_iterate(pool, jacobi_2d, o0, u0, steps=23, residual=max_abs_diff,
                                   tol=1e-300, check_every=check_every, block_sweeps=k))
    (r1, a1, b1), (r5, a5, b5) = got
    assert r1.sweeps == r5.sweeps == 23 and r1.residual == r5.residual
    same(a5, a1)
    same(b5, b1)
    same(a1, sweeps_numpy(jacobi_np, o0, u0, 23)[0])


def test_odd_schedules_keep_checks_plain_and_every_block_odd():
    from sharedcompute._iterate.plan import schedule
    for steps in range(0, 40):
        for k in (3, 5, 7):
            for every in (1, 2, 3, 10):
                for checks in (False, True):
                    blocks = schedule(steps, k, every, checks)
                    if not blocks:
                        continue
                    assert sum(blocks) == steps and all(b % 2 and b <= k for b in blocks)
                    if checks:  # every check sweep is a plain one
                        ends = np.cumsum(blocks)
                        for c in range(every, steps + 1, every):
                            i = int(np.searchsorted(ends, c))
                            assert ends[i] == c and blocks[i] == 1


def test_none_still_copies_u_edges_into_out():
    """'none' keeps its meaning (no silent change for existing users): u's edge rows are
    copied into out first; 'fixed' leaves out's own."""
    u0, o0 = grids(8)
    with sc.Pool(2, backend="inline") as pool:
        _, got_none, _ = run_iterate(pool, jacobi_2d, o0, u0, steps=1, boundary="none")
        _, got_fixed, _ = run_iterate(pool, jacobi_2d, o0, u0, steps=1)
    same(got_none[0], u0[0])
    same(got_fixed[0], o0[0])


def test_fixed_map_is_none_map():
    """In a map nothing is copied either way: 'fixed' writes what 'none' writes."""
    u0, o0 = grids(9)
    a, b = o0.copy(), o0.copy()
    jacobi_2d(a, u0, boundary="none")
    jacobi_2d(b, u0, boundary="fixed")
    same(a, b)


def test_fixed_on_dask_equals_numpy():
    pytest.importorskip("distributed")
    u0, o0 = grids(23)
    with sc.Pool(backend="dask", n_workers=2) as pool:
        r, got, other = run_iterate(pool, jacobi_2d, o0, u0, steps=6)
        want, want_other = sweeps_numpy(jacobi_np, o0, u0, 6)
        same(got, want)
        same(other, want_other)
        x = np.arange(9.0) ** 2
        for boundary in ("fixed", "reflect"):
            got = pool.map(mark_edges, pool.zeros(9), pool.array(x), boundary=boundary)
            same(np.asarray(got), _mark_np(x, 1, boundary))
        assert pool.reduce(squared_steps, pool.array(np.arange(7) ** 2)) == int(
            (np.diff(np.arange(7) ** 2) ** 2).sum())
        inp, flx = np.arange(24.0).reshape(8, 3) ** 1.5, np.arange(15.0).reshape(5, 3) ** 2
        got = pool.map(staggered, pool.zeros((4, 3)), pool.array(inp), pool.array(flx), 0.3)
        same(np.asarray(got), staggered_np(inp, flx, 0.3))


def test_bad_boundary_names_fixed():
    with pytest.raises(InputError, match="fixed"):
        jacobi_2d(np.zeros((3, 3)), np.zeros((3, 3)), boundary="fixd")


# -- 3. position="edges" -------------------------------------------------------------------
def _mark_np(u, d, boundary):
    """What mark_edges writes: u's rows, +1 on the first row written, +2 on the last."""
    n = u.shape[0]
    out = np.zeros_like(u)
    lo, hi = (d, n - d) if boundary in ("none", "fixed") else (0, n)
    if hi <= lo:
        return out
    out[lo:hi] = u[lo:hi]
    out[lo] += 1.0
    out[hi - 1] += 2.0
    return out


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("boundary", ["fixed", "none", "reflect", "periodic", 0.5])
def test_edges_flags_mark_the_first_and_last_rows_written(method, boundary):
    pool = shared_pool(3, method)
    for n in (1, 2, 3, 4, 40):
        u0 = np.arange(n, dtype=np.float64) * 10.0
        out = pool.zeros(n)
        pool.map(mark_edges, out, pool.array(u0), boundary=boundary)
        same(out.numpy(), _mark_np(u0, 1, boundary))


@pytest.mark.parametrize("workers", [1, 2, 5, 64])
def test_edges_flags_without_halo_and_in_reductions(workers):
    for n in (0, 1, 2, 3, 1000):
        u0 = np.arange(n, dtype=np.float32)
        out = np.zeros_like(u0)
        mark_edges_flat(out, u0, workers=workers)
        same(out, _mark_np(u0, 0, "none"))
        assert count_edges(u0, workers=workers) == (11 if n else 0)


def test_edges_flags_in_iterate_blocks():
    """The flags follow a block's levels too: each level's call rows come with their own."""
    u0 = np.arange(50.0) % 7
    with sc.Pool(2, backend="inline") as pool:
        plain = pool.iterate(mark_edges, pool.zeros(50), pool.array(u0), steps=6,
                             block_sweeps=1).numpy().copy()
        blocked = pool.iterate(mark_edges, pool.zeros(50), pool.array(u0), steps=6,
                               block_sweeps=3, boundary="reflect").numpy().copy()
        plain_r = pool.iterate(mark_edges, pool.zeros(50), pool.array(u0), steps=6,
                               block_sweeps=1, boundary="reflect").numpy().copy()
    same(blocked, plain_r)
    want = u0.copy()
    for _ in range(6):
        want = _mark_np(want, 1, "reflect")
    same(blocked, want)
    assert plain[0] == 0.0  # 'none': the edge row is u's, never marked


def test_position_refuses_other_values():
    with pytest.raises(InputError, match="edges"):
        sc.kernel(position="first")(lambda out, pos: None)


# -- 4. halo= ------------------------------------------------------------------------------
@np.errstate(all="ignore")
def staggered_np(inp, flx, c):
    n = flx.shape[0] - 1
    t = (flx[1:] - flx[:-1]) + (inp[:n] + inp[4:n + 4])
    return (inp[2:n + 2].astype(np.float64) - c * t.astype(np.float64)).astype(inp.dtype)


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_staggered_and_padded_fields_equal_numpy(method, dtype):
    pool = shared_pool(3, method)
    for n in (0, 1, 2, 3, 50, 300):
        rng = np.random.default_rng(n)
        inp = rng.random((n + 4, 3)).astype(dtype)
        flx = rng.random((n + 1, 3)).astype(dtype)
        inp[0], inp[-1], flx[-1] = np.nan, np.inf, -7.0  # the ends are read too
        out = pool.zeros((n, 3), dtype=dtype)
        pool.map(staggered, out, pool.array(inp), pool.array(flx), 0.3)
        same(out.numpy(), staggered_np(inp, flx, 0.3))
        direct = np.zeros((n, 3), dtype)
        staggered(direct, inp, flx, 0.3, workers=7)
        same(direct, staggered_np(inp, flx, 0.3))


@np.errstate(all="ignore")
def heat_source_np(f):
    def step(new, cur):
        if new.shape[0] < 3:
            return
        s = 0.25 * ((cur[:-2] + cur[2:]) + 2.0 * cur[1:-1])
        new[1:-1] = s + 0.125 * (f[1:-3] + f[3:-1])
    return step


@pytest.mark.parametrize("k", [1, 3, 5])
def test_halo_argument_in_iterate_and_blocks(k):
    n = 80
    rng = np.random.default_rng(3)
    u0, o0, f = rng.random(n), rng.random(n) + 1.0, rng.random(n + 2)
    with sc.Pool(2, backend="inline") as pool:
        r, got, other = run_iterate(pool, heat_source, o0, u0, pool.array(f), steps=9,
                                    block_sweeps=k)
    want, want_other = sweeps_numpy(heat_source_np(f), o0, u0, 9)
    same(got, want)
    same(other, want_other)


@pytest.mark.parametrize("method", START_METHODS)
def test_halo_argument_in_iterate_on_workers(method):
    pool = shared_pool(3, method)
    n = 61
    rng = np.random.default_rng(4)
    u0, o0, f = rng.random(n), rng.random(n) + 1.0, rng.random(n + 2)
    r, got, other = run_iterate(pool, heat_source, o0, u0, pool.array(f), steps=11)
    want, _ = sweeps_numpy(heat_source_np(f), o0, u0, 11)
    same(got, want)


@pytest.mark.parametrize("method", START_METHODS)
def test_halo_in_a_reduction(method):
    pool = shared_pool(3, method)
    for n in (1, 2, 5, 5000):
        x = (np.arange(n + 1, dtype=np.int64) * 7919) % 1013
        want = int((np.diff(x) ** 2).sum())
        assert pool.reduce(squared_steps, pool.array(x)) == want
        assert squared_steps(x, workers=3) == want


def test_halo_refusals_say_how_to_fix():
    n = 10
    with sc.Pool(2, backend="inline") as pool:
        out = pool.zeros((n, 3))
        inp, flx = pool.zeros((n + 4, 3)), pool.zeros((n + 1, 3))
        with pytest.raises(InputError, match=r"before \+ n \+\s+after"):
            pool.map(staggered, out, pool.zeros((n + 3, 3)), flx, 1.0)
        with pytest.raises(InputError, match="pool.array"):
            pool.map(staggered, out, np.zeros((n + 4, 3)), flx, 1.0)
        with pytest.raises(InputError, match="sc.whole"):
            pool.map(staggered, out, sc.whole(inp), flx, 1.0)
        pool.map(staggered, out, pool.array(np.zeros((n + 4, 3))), flx, 1.0)  # the advice
        with pytest.raises(InputError, match="halo"):  # halo rows longer than the array
            pool.map(staggered, pool.zeros((0, 3)), pool.zeros((2, 3)), pool.zeros((0, 3)), 1.0)
    for bad in ({"nope": (1, 1)}, {"x": (1,)}, {"x": (-1, 0)}, {"x": (True, 0)}, [("x", 1)]):
        with pytest.raises(InputError, match="halo"):
            sc.kernel(halo=bad)(lambda out, x: None)
    with pytest.raises(InputError, match="halo"):
        sc.kernel(halo={"out": (1, 1)})(lambda out, x: None)


def test_verify_passes_halo_arguments_to_the_reference_as_they_are():
    n = 500
    rng = np.random.default_rng(9)
    with sc.Pool(2, backend="inline") as pool:
        report = sc.verify(pool, staggered, pool.zeros((n, 3)), pool.array(rng.random((n + 4, 3))),
                           pool.array(rng.random((n + 1, 3))), 0.25)
    assert report.ok, report


def test_the_guides_jacobi_2d_example_runs(tmp_path):
    """docs/guide/kernels.md's polybench port, run as the script it is."""
    import re
    import subprocess
    import sys
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    page = (root / "docs" / "guide" / "kernels.md").read_text()
    block = re.findall(r"```python\n(.*?)```", page[page.index("## Edges: fixed"):], re.S)[0]
    script = tmp_path / "jacobi_2d_port.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("boundary", ["none", "reflect", 0.5])
@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("steps", [4, 5, 12])
def test_blocks_leave_unwritten_elements_as_plain_sweeps_do(boundary, k, steps):
    """A kernel that never writes its rows' edge columns, under every boundary: temporal
    blocks must leave there what plain sweeps leave (each array's own values), in both
    arrays, not a scratch buffer's garbage (a wrong answer found in session 8)."""
    from edgekernels import interior_only
    u0, o0 = grids(64, m=9)
    u0, o0 = np.nan_to_num(u0, nan=1.5, neginf=-2.0), np.nan_to_num(o0, nan=1.5, neginf=-2.0)
    with sc.Pool(2, backend="inline") as pool:
        plain = run_iterate(pool, interior_only, o0, u0, steps=steps, block_sweeps=1,
                            boundary=boundary)
        blocked = run_iterate(pool, interior_only, o0, u0, steps=steps, block_sweeps=k,
                              boundary=boundary)
    assert blocked[0].block_sweeps > 1  # the blocked path ran
    same(blocked[1], plain[1])
    same(blocked[2], plain[2])
