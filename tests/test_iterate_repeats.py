"""A repeated iterate call (the same kernel, arrays and options) is kept by the workers, an
entry of the pool's one call cache (_cache.py), and rung through the doorbell: every result
must be bitwise the one the planned call gives. The oracle is the same call with a
``progress=`` callback, which is planned and sent every time, on copies of the same inputs;
a spy on the executor's ring proves the repeats took the fast path."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute.kernels.reductions import max_abs_diff
from sharedcompute.kernels.stencils import heat1d, jacobi2d, jacobi2d_residual

SHM = "/dev/shm"


def _off(done: int, total: int) -> None:
    """progress= callback: a call with one is planned and sent, never kept."""


@pytest.fixture
def pool():
    from conftest import shared_pool
    return shared_pool(2, "forkserver")


@pytest.fixture(params=["polled", "asleep"])
def waits(request, monkeypatch):
    """How the caller waits for a rung call: polling first (a short call), or asleep at
    once (a call that took longer than LONG_S: every repeat here, with LONG_S < 0)."""
    if request.param == "asleep":
        from sharedcompute._iterate import plan
        monkeypatch.setattr(plan, "LONG_S", -1.0)
    return request.param


def count_rings(pool, monkeypatch) -> list:
    """[how many calls ``pool`` rang through the doorbell (the fast path)] from now on."""
    ex = pool._backend.executor
    count = [0]
    ring = ex.ring

    def counted(*a, **k):
        count[0] += 1
        return ring(*a, **k)
    monkeypatch.setattr(ex, "ring", counted)
    return count


@pytest.fixture
def rings(pool, monkeypatch):
    """How many calls were rung through the doorbell (the fast path) since the test began."""
    return count_rings(pool, monkeypatch)


def _fill_alike(rng, mine: list, twin: list) -> None:
    """The same fresh random values in each array of ``mine`` and its twin in ``twin``."""
    for a, b in zip(mine, twin):
        data = rng.random(a.shape)
        np.asarray(a)[:] = data
        np.asarray(b)[:] = data


def _truncate(a) -> None:
    """Shrink ``a``'s segment to one page behind the pool's back."""
    fd = os.open(os.path.join(SHM, a.name), os.O_RDWR)
    os.ftruncate(fd, 4096)
    os.close(fd)


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and \
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _check(pool, kernel, pair, twin, extra=(), **opts):
    """One call on ``pair`` (maybe rung) against the planned call on ``twin`` (same data)."""
    got = pool.iterate(kernel, *pair, *extra, info=True, **opts)
    want = pool.iterate(kernel, *twin, *extra, info=True, progress=_off, **opts)
    assert got.sweeps == want.sweeps
    assert (got.residual is None) == (want.residual is None)
    if got.residual is not None:
        assert np.float64(got.residual).tobytes() == np.float64(want.residual).tobytes()
    assert _same(pair[0], twin[0]) and _same(pair[1], twin[1])
    # the caller's own array objects, the one holding the last sweep as the planned call's
    assert got.array is pair[0 if want.array is twin[0] else 1]
    return got


CASES = {
    "none": (jacobi2d, dict(steps=7)),
    "fixed": (jacobi2d, dict(steps=8, boundary="fixed")),
    "reflect": (jacobi2d, dict(steps=5, boundary="reflect")),
    "periodic": (jacobi2d, dict(steps=5, boundary="periodic")),
    "constant": (jacobi2d, dict(steps=6, boundary=0.5)),
    "blocks": (jacobi2d, dict(steps=9, block_sweeps=3)),
    "fused tol": (jacobi2d_residual, dict(steps=400, tol=2e-3, check_every=3)),
    "fused tol, blocks": (jacobi2d_residual, dict(steps=400, tol=2e-3, check_every=1,
                                                  block_sweeps=5)),
    "residual tol": (jacobi2d, dict(steps=400, tol=2e-3, check_every=4,
                                    residual=max_abs_diff)),
    "chunk_rows": (jacobi2d, dict(steps=4, chunk_rows=5)),
    "no steps": (jacobi2d, dict(steps=0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_repeat_is_rung_and_bitwise_the_planned_call(pool, rings, waits, case):
    """Each round writes new data into both arrays (edges included, which differ between
    the two), so a repeat that kept anything of the last call's data, or skipped the
    fixed edge rows' copy, differs from the planned call."""
    kernel, opts = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    shape = (48, 40)
    pair = [pool.zeros(shape), pool.zeros(shape)]
    twin = [pool.zeros(shape), pool.zeros(shape)]
    try:
        for _ in range(3):
            for k in range(2):
                data = rng.random(shape)
                np.asarray(pair[k])[:] = data
                np.asarray(twin[k])[:] = data
            _check(pool, kernel, pair, twin, **opts)
        assert rings[0] == (2 if opts["steps"] else 0)  # the first call planned, then rung
    finally:
        for a in pair + twin:
            a.free()


def test_other_steps_scalars_and_options_are_other_calls(pool, rings):
    """Every option and scalar is in the key: a call that differs in one is planned (and
    kept) on its own, never rung with another's."""
    rng = np.random.default_rng(3)
    u0 = rng.random(200)
    pair, twin = [pool.zeros(200), pool.zeros(200)], [pool.zeros(200), pool.zeros(200)]
    calls = [dict(steps=4), dict(steps=5), dict(steps=4, boundary="fixed"),
             dict(steps=4, boundary=0.0), dict(steps=4, boundary=-0.0)]
    alphas = [0.25, np.float32(0.25), -0.0]  # 15 calls: all kept (_cache.MEMO_SIZE)
    try:
        for rnd in range(2):
            for opts in calls:
                for alpha in alphas:
                    for a in pair + twin:
                        np.asarray(a)[:] = u0
                    _check(pool, heat1d, pair, twin, (alpha,), **opts)
        assert rings[0] == len(calls) * len(alphas)  # the second round: all rung
    finally:
        for a in pair + twin:
            a.free()


MUL = """
@sc.kernel(depth=1, boundary="fixed")
def mul(out, u, c):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = u[i + 1, j] * c
"""


def test_a_scalar_is_keyed_by_its_bits(pool, rings):
    """0.0 == -0.0 (and they hash alike), yet 0.0 * -0.0 is -0.0: the key holds a
    scalar's bits, so the repeat with the other zero is planned, not rung."""
    mul = _cell(MUL)["mul"]
    pair, twin = [pool.zeros((16, 4)), pool.zeros((16, 4))], [pool.zeros((16, 4)),
                                                              pool.zeros((16, 4))]
    try:
        for c in (0.0, -0.0, 0.0, -0.0, np.float32(0.0), np.float32(-0.0)):
            for a in pair + twin:
                np.asarray(a)[:] = 0.0
            got = _check(pool, mul, pair, twin, (c,), steps=1)
            assert np.signbit(np.asarray(got.array)[5, 0]) == np.signbit(c)
        assert rings[0] == 2
    finally:
        for a in pair + twin:
            a.free()


def _grow_slots(pool) -> None:
    """A fused solve with more chunks than the kept residual slots hold: the scratch block
    is replaced by a bigger one (and the old one freed)."""
    kept = pool._backend.scratch.array
    rows = (kept.shape[0] if kept is not None else 0) // 2 + 8  # chunk_rows=1: a chunk each
    big = [pool.zeros((rows, 4)) for _ in range(2)]
    pool.iterate(jacobi2d_residual, *big, chunk_rows=1, steps=2, tol=0.0)
    assert pool._backend.scratch.array is not kept
    for a in big:
        a.free()


def _cell(src: str, **glob):
    """A kernel defined as a notebook cell defines it (sent by value), and its namespace."""
    ns = {"__name__": "__main__", "sc": sc, **glob}
    exec(compile(textwrap.dedent(src), "<cell>", "exec"), ns)
    return ns


SCALE = """
@sc.kernel(depth=1, boundary="fixed")
def scale(out, u):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = u[i + 1, j] * C + u[i, j]
"""


def test_an_edited_kernel_is_planned_again(pool, rings):
    """A rebound global, code replaced in place (%autoreload 2) and a kernel redefined
    under the same name: each repeat runs what the kernel is now."""
    ns = _cell(SCALE, C=1.0)
    u0 = np.random.default_rng(5).random((30, 8))
    pair, twin = [pool.zeros((30, 8)), pool.zeros((30, 8))], [pool.zeros((30, 8)),
                                                              pool.zeros((30, 8))]

    def run(kernel):
        for a in pair + twin:
            np.asarray(a)[:] = u0
        return np.array(_check(pool, kernel, pair, twin, steps=3).array)
    try:
        first = run(ns["scale"])
        assert _same(run(ns["scale"]), first) and rings[0] == 1
        ns["C"] = 2.0  # a rebound global
        rebound = run(ns["scale"])
        assert not _same(rebound, first)
        assert _same(run(ns["scale"]), rebound) and rings[0] == 2
        edited = _cell(SCALE.replace("* C +", "* C -"), C=2.0)["scale"]
        ns["scale"].py_func.__code__ = edited.py_func.__code__  # replaced in place
        replaced = run(ns["scale"])
        assert not _same(replaced, rebound)
        assert _same(run(ns["scale"]), replaced) and rings[0] == 3
        again = _cell(SCALE, C=3.0)  # the same name, defined anew: another kernel
        fresh = run(again["scale"])
        assert not _same(fresh, replaced) and rings[0] == 3
    finally:
        for a in pair + twin:
            a.free()


def test_a_freed_array_is_refused_and_a_new_one_planned(pool, rings):
    rng = np.random.default_rng(11)
    o, u = pool.array(rng.random((20, 20))), pool.array(rng.random((20, 20)))
    for _ in range(2):
        pool.iterate(jacobi2d, o, u, steps=3)
    assert rings[0] == 1
    cache = pool._backend.cache
    assert any(u.name in e.names for e in cache.entries.values())
    name = u.name
    u.free()
    assert not any(name in e.names for e in cache.entries.values())  # dropped at release
    assert name not in cache.by_block
    with pytest.raises(sc.ArrayFreedError):
        pool.iterate(jacobi2d, o, u, steps=3)
    u2 = pool.array(rng.random((20, 20)))
    twin = [pool.array(np.asarray(o)), pool.array(np.asarray(u2))]
    try:
        _check(pool, jacobi2d, [o, u2], twin, steps=3)
        assert rings[0] == 1
    finally:
        for a in (o, u2, *twin):
            a.free()


@pytest.mark.skipif(not os.path.isdir(SHM), reason="needs /dev/shm")
def test_a_truncated_block_is_refused_before_any_worker_runs(pool, rings):
    """boundary="fixed": no edge rows are copied in the caller, so only the repeat's own
    check of its blocks stands between a truncated block and a worker's SIGBUS."""
    o, u = pool.zeros((64, 64)), pool.array(np.ones((64, 64)))
    for _ in range(2):
        pool.iterate(jacobi2d, o, u, steps=2, boundary="fixed")
    pids, restarts = pool.pids, pool.restarts
    _truncate(u)  # as another process could
    for _ in range(2):
        with pytest.raises(sc.SharedBlockCorruptedError, match=u.name):
            pool.iterate(jacobi2d, o, u, steps=2, boundary="fixed")
    assert pool.pids == pids and pool.restarts == restarts  # no worker touched the pages
    assert rings[0] == 1
    o.free(), u.free()


def test_a_repeat_after_the_residual_slots_grew_is_planned_again(pool, rings):
    """The residual slots live in one scratch block per pool, replaced by a bigger one when
    a call needs more: a kept call whose slots moved is planned again, never rung with
    the freed block's handle."""
    rng = np.random.default_rng(2)
    small = [pool.zeros((40, 16)) for _ in range(4)]
    opts = dict(steps=60, tol=1e-9, check_every=1)
    try:
        for rnd in range(3):
            _fill_alike(rng, small[:2], small[2:])
            _check(pool, jacobi2d_residual, small[:2], small[2:], **opts)
            if rnd == 1:
                _grow_slots(pool)
        assert rings[0] == 1  # the second call rung; the third planned (the slots moved)
    finally:
        for a in small:
            a.free()


def test_another_tol_or_check_every_is_another_call(pool, rings):
    """The same fused solve with another tol (or check_every) stops at another sweep."""
    rng = np.random.default_rng(9)
    pair, twin = [pool.zeros((40, 40)) for _ in range(2)], [pool.zeros((40, 40)) for _ in range(2)]
    seen = set()
    try:
        for _ in range(2):
            for tol, every in ((1e-2, 1), (1e-3, 1), (1e-3, 7)):
                _fill_alike(rng, pair, twin)
                got = _check(pool, jacobi2d_residual, pair, twin, steps=1000, tol=tol,
                             check_every=every)
                seen.add(got.sweeps)
        assert len(seen) >= 3 and rings[0] == 3
    finally:
        for a in pair + twin:
            a.free()


def test_a_repeat_on_restarted_workers_is_planned_again(monkeypatch):
    """New workers (one died) hold no kept call: the repeat is planned and sent again."""
    import signal
    import time
    with sc.Pool(2) as own:
        ex = own._backend.executor
        count = count_rings(own, monkeypatch)
        rng = np.random.default_rng(4)
        pair = [own.zeros((30, 30)) for _ in range(2)]
        twin = [own.zeros((30, 30)) for _ in range(2)]
        for rnd in range(3):
            if rnd == 2:
                os.kill(own.pids[1], signal.SIGKILL)
                deadline = time.monotonic() + 10
                while ex.alive and time.monotonic() < deadline:
                    time.sleep(0.01)
            _fill_alike(rng, pair, twin)
            _check(own, jacobi2d, pair, twin, steps=5)
        assert count[0] == 1 and own.restarts == 1
        for a in pair + twin:
            a.free()


# -- step programs: a program is built anew for every call, as the Python loop writes it ---
STEPPED = """
@sc.kernel(writes=("y",))
def add_step(y, x, t):
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = y[i, j] * 0.5 + x[i, j] + t
"""

PROGRAMS = {
    "stencil, STEP, swap": (lambda k, a: sc.program(
        sc.stage(jacobi2d, a[0], a[1]), sc.stage(k, a[2], a[0], sc.STEP),
        swap=[(a[0], a[1])]), dict(steps=5)),
    "inner iterate": (lambda k, a: sc.program(
        sc.stage(jacobi2d, a[0], a[1], sweeps=3), sc.stage(k, a[2], a[1], 1.5)),
        dict(steps=4)),
    "the other array twice": (lambda k, a: sc.program(
        sc.stage(k, a[2], a[3], 0.25), sc.stage(k, a[3], a[2], sc.STEP)), dict(steps=3)),
    "fused tol": (lambda k, a: sc.program(
        sc.stage(k, a[2], a[3], 0.0), sc.stage(jacobi2d_residual, a[0], a[1]),
        swap=[(a[0], a[1])]), dict(steps=300, tol=1e-3, check_every=2)),
}


@pytest.mark.parametrize("case", sorted(PROGRAMS))
def test_a_repeated_program_is_rung_and_bitwise_the_planned_call(pool, rings, waits, case):
    add = _cell(STEPPED)["add_step"]
    build, opts = PROGRAMS[case]
    rng = np.random.default_rng(sorted(PROGRAMS).index(case))
    shape = (36, 20)
    mine, twin = [pool.zeros(shape) for _ in range(4)], [pool.zeros(shape) for _ in range(4)]
    try:
        for _ in range(3):
            _fill_alike(rng, mine, twin)
            got = pool.iterate(build(add, mine), info=True, **opts)
            want = pool.iterate(build(add, twin), info=True, progress=_off, **opts)
            assert (got.sweeps, got.residual) == (want.sweeps, want.residual)
            for a, b in zip(mine, twin):
                assert _same(a, b)
            ids, tids = [id(a) for a in mine], [id(a) for a in twin]
            held = [(ids.index(id(a)), ids.index(id(h))) for a, h in got.array.items()]
            assert held == [(tids.index(id(a)), tids.index(id(h)))
                            for a, h in want.array.items()]
        assert rings[0] == 2
    finally:
        for a in mine + twin:
            a.free()


def test_a_program_naming_other_objects_is_another_call(pool, rings):
    """Arrays are a program's names by object: the same memory under two objects is two
    names, the same object twice is one. A program passing another object of a swapped
    array's memory is refused by the planned call (a view would keep reading the old
    memory), so it must never be rung as the program passing the array itself."""
    add = _cell(STEPPED)["add_step"]
    x, y, z = pool.array(np.ones((16, 8))), pool.zeros((16, 8)), pool.zeros((16, 8))
    try:
        for _ in range(2):
            pool.iterate(sc.program(sc.stage(add, y, x, 1.0), sc.stage(add, z, y, 1.0),
                                    swap=[(y, x)]), steps=2)
        assert rings[0] == 1
        y2 = y[:]  # another object of y's memory and layout: the same identity
        assert y2.identity == y.identity
        with pytest.raises(sc.InputError, match="shares memory"):
            pool.iterate(sc.program(sc.stage(add, y, x, 1.0), sc.stage(add, z, y2, 1.0),
                                    swap=[(y, x)]), steps=2)
        assert rings[0] == 1
        del y2
    finally:
        x.free(), y.free(), z.free()


def test_program_variants_are_other_calls(pool, rings):
    """Programs differing in one thing (a swap, sc.STEP or a constant, a stage's sweeps,
    boundary or order, steps, tol): each is planned and kept on its own."""
    add = _cell(STEPPED)["add_step"]
    variants = [
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1]), sc.stage(add, a[2], a[0], 0)),
         dict(steps=3)),
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1]), sc.stage(add, a[2], a[0], 0),
                              swap=[(a[0], a[1])]), dict(steps=3)),
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1]),
                              sc.stage(add, a[2], a[0], sc.STEP)), dict(steps=3)),
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1]), sc.stage(add, a[2], a[0], 0)),
         dict(steps=4)),
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1], boundary="reflect"),
                              sc.stage(add, a[2], a[0], 0)), dict(steps=3)),
        (lambda a: sc.program(sc.stage(add, a[2], a[0], 0), sc.stage(jacobi2d, a[0], a[1])),
         dict(steps=3)),
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1], sweeps=2)), dict(steps=3)),
        (lambda a: sc.program(sc.stage(jacobi2d, a[0], a[1], sweeps=3)), dict(steps=3)),
        (lambda a: sc.program(sc.stage(jacobi2d_residual, a[0], a[1]), swap=[(a[0], a[1])]),
         dict(steps=200, tol=1e-2, check_every=1)),
        (lambda a: sc.program(sc.stage(jacobi2d_residual, a[0], a[1]), swap=[(a[0], a[1])]),
         dict(steps=200, tol=1e-3, check_every=1)),
        (lambda a: sc.program(sc.stage(jacobi2d_residual, a[0], a[1]), swap=[(a[0], a[1])]),
         dict(steps=200, tol=1e-3, check_every=5)),
    ]
    rng = np.random.default_rng(21)
    shape = (30, 12)
    mine, twin = [pool.zeros(shape) for _ in range(3)], [pool.zeros(shape) for _ in range(3)]
    ids, tids = [id(a) for a in mine], [id(a) for a in twin]
    try:
        for _ in range(2):
            for build, opts in variants:
                _fill_alike(rng, mine, twin)
                got = pool.iterate(build(mine), info=True, **opts)
                want = pool.iterate(build(twin), info=True, progress=_off, **opts)
                assert (got.sweeps, got.residual) == (want.sweeps, want.residual)
                assert all(_same(a, b) for a, b in zip(mine, twin))
                assert [(ids.index(id(a)), ids.index(id(h))) for a, h in got.array.items()] \
                    == [(tids.index(id(a)), tids.index(id(h))) for a, h in want.array.items()]
        assert rings[0] == len(variants)
    finally:
        for a in mine + twin:
            a.free()


def test_a_program_sees_an_edit_of_any_stage_kernel(pool, rings):
    """Every stage's kernel is watched, not only the first one's."""
    ns = _cell(SCALE, C=1.0)
    add = _cell(STEPPED)["add_step"]
    rng = np.random.default_rng(8)
    mine, twin = [pool.zeros((30, 8)) for _ in range(3)], [pool.zeros((30, 8)) for _ in range(3)]
    try:
        for c in (1.0, 1.0, 2.0, 2.0):
            ns["C"] = c  # the second stage's global
            data = [rng.random((30, 8)) for _ in range(3)]
            for a, b, d in zip(mine, twin, data):
                np.asarray(a)[:] = d
                np.asarray(b)[:] = d
            got = pool.iterate(sc.program(sc.stage(add, mine[2], mine[1], 0.5),
                                          sc.stage(ns["scale"], mine[0], mine[2])), steps=2)
            pool.iterate(sc.program(sc.stage(add, twin[2], twin[1], 0.5),
                                    sc.stage(ns["scale"], twin[0], twin[2])), steps=2,
                         progress=_off)
            assert all(_same(a, b) for a, b in zip(mine, twin)) and got[mine[0]] is mine[0]
        assert rings[0] == 2
    finally:
        for a in mine + twin:
            a.free()


def test_a_program_after_its_slots_grew_is_planned_again(pool, rings):
    rng = np.random.default_rng(12)
    mine, twin = [pool.zeros((40, 16)) for _ in range(2)], [pool.zeros((40, 16)) for _ in range(2)]
    ids, tids = [id(a) for a in mine], [id(a) for a in twin]
    try:
        for rnd in range(3):
            _fill_alike(rng, mine, twin)
            got = pool.iterate(sc.program(sc.stage(jacobi2d_residual, *mine), swap=[mine]),
                               steps=80, tol=1e-9, check_every=1, info=True)
            want = pool.iterate(sc.program(sc.stage(jacobi2d_residual, *twin), swap=[twin]),
                                steps=80, tol=1e-9, check_every=1, info=True, progress=_off)
            assert (got.sweeps, got.residual) == (want.sweeps, want.residual)
            assert all(_same(a, b) for a, b in zip(mine, twin))
            assert ids.index(id(got.array[mine[0]])) == tids.index(id(want.array[twin[0]]))
            if rnd == 1:
                _grow_slots(pool)
        assert rings[0] == 1
    finally:
        for a in mine + twin:
            a.free()


@pytest.mark.skipif(not os.path.isdir(SHM), reason="needs /dev/shm")
def test_a_program_on_a_truncated_block_is_refused_before_any_worker_runs(pool, rings):
    add = _cell(STEPPED)["add_step"]
    x, y = pool.array(np.ones((64, 64))), pool.zeros((64, 64))
    for _ in range(2):
        pool.iterate(sc.program(sc.stage(add, y, x, 1.0)), steps=2)
    pids, restarts = pool.pids, pool.restarts
    _truncate(x)  # as another process could
    for _ in range(2):
        with pytest.raises(sc.SharedBlockCorruptedError, match=x.name):
            pool.iterate(sc.program(sc.stage(add, y, x, 1.0)), steps=2)
    assert pool.pids == pids and pool.restarts == restarts  # no worker touched the pages
    assert rings[0] == 1
    x.free(), y.free()


FAILING = """
@sc.kernel(depth=1, boundary="fixed")
def fails_on_negative(out, u):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            if u[i + 1, j] < 0.0:
                raise ValueError("a negative value")
            out[i, j] = 0.5 * (u[i, j] + u[i + 2, j])
"""


def test_a_kept_call_after_another_failed_half_way(pool, rings):
    """A rung iterate that fails in one worker aborts the others' barrier; another kept
    call rung next starts its own barrier epoch (the workers begin it for a rung call as
    for a sent one), so it runs, bitwise the planned call."""
    fails = _cell(FAILING)["fails_on_negative"]
    a_pair = [pool.array(np.ones((64, 8))), pool.array(np.ones((64, 8)))]
    b_pair, twin = [pool.zeros((64, 8)) for _ in range(2)], [pool.zeros((64, 8)) for _ in range(2)]
    try:
        for _ in range(2):
            pool.iterate(fails, *a_pair, steps=4)
            for a, b in zip(b_pair, twin):
                np.asarray(a)[:] = 1.0
                np.asarray(b)[:] = 1.0
            _check(pool, fails, b_pair, twin, steps=4)
        assert rings[0] == 2
        np.asarray(a_pair[0])[60, 3] = np.asarray(a_pair[1])[60, 3] = -1.0  # the 2nd worker's
        with pytest.raises(sc.SharedComputeError, match="negative"):
            pool.iterate(fails, *a_pair, steps=4)
        assert rings[0] == 3
        for a, b in zip(b_pair, twin):
            np.asarray(a)[:] = 2.0
            np.asarray(b)[:] = 2.0
        _check(pool, fails, b_pair, twin, steps=4)
        assert rings[0] == 4
    finally:
        for a in a_pair + b_pair + twin:
            a.free()


RESIDUAL = """
@sc.kernel(combine=np.maximum, finalize=np.float64)
def scaled_diff(x, y):
    xf = x.ravel()
    yf = y.ravel()
    m = 0.0
    for i in range(xf.shape[0]):
        d = abs(xf[i] - yf[i]) * S
        if d > m:
            m = d
    return m
"""


def test_an_edited_residual_kernel_is_planned_again(pool, rings):
    """The residual= kernel's content is watched as the sweep kernel's is: a rebound global
    of it stops the solve at another sweep."""
    ns = _cell(RESIDUAL, np=np, S=1.0)
    rng = np.random.default_rng(14)
    pair, twin = [pool.zeros((40, 24)) for _ in range(2)], [pool.zeros((40, 24)) for _ in range(2)]
    sweeps = []
    try:
        for s in (1.0, 1.0, 5.0, 5.0):
            ns["S"] = s
            _fill_alike(rng, pair, twin)
            got = _check(pool, jacobi2d, pair, twin, steps=3000, tol=1e-2, check_every=1,
                         residual=ns["scaled_diff"])
            sweeps.append(got.sweeps)
        assert sweeps[2] > sweeps[1] and rings[0] == 2
    finally:
        for a in pair + twin:
            a.free()


def test_a_wavefront_program_is_rung_and_bitwise_the_planned_call(pool, rings, waits):
    """A wavefront stage's counters share the scratch row with the residual slots: a repeat
    zeroes both, as the planned call does, so its pipeline and its residual start afresh."""
    from wavekernels import sor
    rng = np.random.default_rng(15)
    shape = (40, 30)
    mine, twin = [pool.zeros(shape) for _ in range(2)], [pool.zeros(shape) for _ in range(2)]

    def prog(a):
        return sc.program(sc.stage(sor, a[1], 1.5, order="wavefront"),
                          sc.stage(jacobi2d_residual, a[0], a[1]), swap=[(a[0], a[1])])
    try:
        for _ in range(3):
            _fill_alike(rng, mine, twin)
            got = pool.iterate(prog(mine), steps=60, tol=1e-4, check_every=2, info=True)
            want = pool.iterate(prog(twin), steps=60, tol=1e-4, check_every=2, info=True,
                                progress=_off)
            assert (got.sweeps, got.residual) == (want.sweeps, want.residual)
            assert all(_same(a, b) for a, b in zip(mine, twin))
            assert (got.array[mine[0]] is mine[0]) == (want.array[twin[0]] is twin[0])
        assert rings[0] == 2
    finally:
        for a in mine + twin:
            a.free()


def test_a_program_with_a_snapshot_is_never_kept(pool, rings):
    """A snapshot's rows are copied into slots by each call (as a map's snapshot is copied
    by the parent): such a program is planned every time, never rung, never kept."""
    from snapkernels import fw_relax
    rng = np.random.default_rng(16)
    cache = pool._backend.cache
    for _ in range(3):
        g = rng.integers(1, 50, (30, 30)).astype(np.float64)
        np.fill_diagonal(g, 0)
        d = pool.array(g)
        try:
            pool.iterate(sc.program(sc.stage(fw_relax, d, sc.snapshot(d, sc.STEP), sc.STEP)),
                         steps=30)
            want = g.copy()
            for k in range(30):
                want = np.minimum(want, want[:, k, None] + want[None, k, :])
            assert np.array_equal(np.asarray(d), want)
            assert not any(d.name in e.names for e in cache.entries.values())
        finally:
            d.free()
    assert rings[0] == 0


def test_a_kept_iterate_evicted_by_other_calls_is_planned_again(pool, rings):
    """Iterates and maps share the one cache and its size: an iterate pushed out by newer
    calls is planned again (and kept again), bitwise the planned call."""
    from sharedcompute.kernels.elementwise import axpy
    rng = np.random.default_rng(17)
    pair, twin = [pool.zeros((30, 30)) for _ in range(2)], [pool.zeros((30, 30)) for _ in range(2)]
    y, x = pool.zeros(64), pool.array(np.ones(64))
    cache = pool._backend.cache

    def one():
        _fill_alike(rng, pair, twin)
        _check(pool, jacobi2d, pair, twin, steps=3, boundary="reflect")
    try:
        one(), one()
        assert rings[0] == 1
        for k in range(1, cache.size + 1):  # as many other calls as the cache holds
            pool.map(axpy, y, x, 1.0, chunk_rows=k)
        assert not any(pair[0].name in e.names for e in cache.entries.values())
        one()
        assert rings[0] == 1  # planned: evicted
        one()
        assert rings[0] == 2
    finally:
        for a in pair + twin + [y, x]:
            a.free()


@pytest.mark.parametrize("method", __import__("conftest").START_METHODS)
def test_repeats_under_every_start_method(method, monkeypatch):
    """The kept iterate and the kept program, rung by workers of every start method."""
    from sharedcompute.kernels.elementwise import axpy
    pool = __import__("conftest").shared_pool(2, method)
    count = count_rings(pool, monkeypatch)
    rng = np.random.default_rng(18)
    pair, twin = [pool.zeros((36, 20)) for _ in range(2)], [pool.zeros((36, 20)) for _ in range(2)]
    y, ty, x = pool.zeros(50), pool.zeros(50), pool.array(np.arange(50.0))
    try:
        for _ in range(3):
            _fill_alike(rng, pair, twin)
            _check(pool, jacobi2d_residual, pair, twin, steps=300, tol=1e-3, check_every=2)
            got = pool.iterate(sc.program(sc.stage(axpy, y, x, sc.STEP),
                                          sc.stage(jacobi2d, *pair), swap=[pair]), steps=3)
            want = pool.iterate(sc.program(sc.stage(axpy, ty, x, sc.STEP),
                                           sc.stage(jacobi2d, *twin), swap=[twin]),
                                steps=3, progress=_off)
            assert _same(y, ty) and all(_same(a, b) for a, b in zip(pair, twin))
            assert (got[pair[0]] is pair[1]) == (want[twin[0]] is twin[1])
        assert count[0] == 4
    finally:
        for a in pair + twin + [y, ty, x]:
            a.free()


def test_a_kept_program_with_an_option_it_refuses_is_refused(pool, rings):
    """Every option is in a program's key, those it refuses too: the kept program's repeat
    with one of them is planned, and refused as the first call would be."""
    add = _cell(STEPPED)["add_step"]
    x, y = pool.array(np.ones((16, 8))), pool.zeros((16, 8))
    try:
        for _ in range(2):
            pool.iterate(sc.program(sc.stage(add, y, x, 1.0)), steps=2)
        assert rings[0] == 1
        for opts in (dict(residual=max_abs_diff), dict(boundary="fixed"), dict(depth=1),
                     dict(block_sweeps=2), dict(chunk_rows=4)):
            with pytest.raises(sc.InputError):
                pool.iterate(sc.program(sc.stage(add, y, x, 1.0)), steps=2, **opts)
        assert rings[0] == 1
    finally:
        x.free(), y.free()


def test_a_repeat_zeroes_its_scratch_row_before_any_worker_runs(pool, monkeypatch):
    """The residual slots and a wavefront's counters start at zero in a planned call; a
    rung one finds what the last call left there, so it zeroes them too, before the ring.
    (A wavefront that read stale counters would only race; this asks for the zeros.)"""
    from wavekernels import sor
    rng = np.random.default_rng(19)
    pair = [pool.array(rng.random((40, 30))) for _ in range(2)]
    calls = [
        lambda **k: pool.iterate(jacobi2d_residual, *pair, steps=6, tol=0.0, check_every=1,
                                 **k),
        lambda **k: pool.iterate(sc.program(sc.stage(sor, pair[1], 1.5, order="wavefront"),
                                            sc.stage(jacobi2d_residual, *pair),
                                            swap=[pair]), steps=4, tol=0.0, check_every=1,
                                 **k),
    ]
    ex, scratch = pool._backend.executor, pool._backend.scratch
    ring = ex.ring
    seen = []

    def spy(*a, **k):
        seen.append(bool(np.asarray(scratch.array).any()))
        return ring(*a, **k)
    try:
        for call in calls:
            call()  # planned, kept
            np.asarray(scratch.array)[:] = 0.0  # beyond this call's row too
            call(progress=_off)  # planned again: the workers leave partials in the row
            assert np.asarray(scratch.array).any()
            monkeypatch.setattr(ex, "ring", spy)
            call()  # rung
            monkeypatch.setattr(ex, "ring", ring)
        assert seen == [False, False]
    finally:
        for a in pair:
            a.free()
