"""Step programs (sc.program, pool.iterate(program, steps=N)) against their oracle, the
same Python loop of pool.map / pool.iterate calls, bitwise, under every start method and
1-3 workers; the step index, swaps, inner iterates; errors naming the stage and step
without hanging the barrier; the refusals and their advice."""
from __future__ import annotations

import re

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS
from programkernels import (advance, e_update, fail_at, h_update, relax, scale, slow_first_row,
                            source, sum_all)

NX, NY, STEPS = 23, 300, 7  # rows of 2400 bytes: one row per chunk, every worker has rows


def fdtd_data(pool):
    i = np.arange(NX, dtype=np.float64)[:, None]
    j = np.arange(NY, dtype=np.float64)[None, :]
    return (pool.array(i * (j + 1) / NX), pool.array(i * (j + 2) / NY),
            pool.array(i * (j + 3) / NX), np.arange(STEPS, dtype=np.float64) + 0.5)


def np_fdtd(ex, ey, hz, fict):
    for t in range(STEPS):
        ey[0, :] = fict[t]
        ey[1:, :] -= 0.5 * (hz[1:, :] - hz[:-1, :])
        ex[:, 1:] -= 0.5 * (hz[:, 1:] - hz[:, :-1])
        hz[:-1, :-1] -= 0.7 * (ex[:-1, 1:] - ex[:-1, :-1] + ey[1:, :-1] - ey[:-1, :-1])


def fdtd_program(ex, ey, hz, fict):
    return sc.program(sc.stage(e_update, ey, ex, hz, fict, sc.STEP),
                      sc.stage(h_update, hz, ex, ey))


def coupled_data(pool, rows=NX):
    rng = np.random.default_rng(3)
    v, p = rng.random((rows, NY)), rng.random((rows, NY))
    return {"v": pool.array(v), "vn": pool.zeros((rows, NY)), "p": pool.array(p),
            "pn": pool.zeros((rows, NY)), "b": pool.zeros((rows, NY))}


def coupled_loop(pool, d, nit):
    """The oracle: a Python loop of pool.map and pool.iterate calls."""
    v, vn, p, pn, b = d["v"], d["vn"], d["p"], d["pn"], d["b"]
    for t in range(STEPS):
        pool.map(source, b, v, t)
        last = pool.iterate(relax, pn, p, b, steps=nit)
        if last is pn:
            p, pn = pn, p
        pool.map(advance, vn, v, p)
        v, vn = vn, v
    return {"v": v, "p": p, "b": b}


def coupled_program(d, nit):
    v, vn, p, pn, b = d["v"], d["vn"], d["p"], d["pn"], d["b"]
    return sc.program(sc.stage(source, b, v, sc.STEP),
                      sc.stage(relax, pn, p, b, sweeps=nit),
                      sc.stage(advance, vn, v, p), swap=[(vn, v)])


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_fdtd_program_equals_numpy_and_the_map_loop(method, workers):
    with sc.Pool(workers, start_method=method) as pool:
        ex, ey, hz, fict = fdtd_data(pool)
        want = [a.numpy().copy() for a in (ex, ey, hz)]
        np_fdtd(*want, fict)
        loop = [pool.array(a.numpy()) for a in (ex, ey, hz)]
        for t in range(STEPS):
            pool.map(e_update, loop[1], loop[0], loop[2], fict, t)
            pool.map(h_update, loop[2], loop[0], loop[1])
        now = pool.iterate(fdtd_program(ex, ey, hz, fict), steps=STEPS)
        assert all(now[a] is a for a in (ex, ey, hz))  # nothing swapped
        for got, w, lp in zip((ex, ey, hz), want, loop):
            assert got.numpy().tobytes() == w.tobytes()
            assert got.numpy().tobytes() == lp.numpy().tobytes()


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("nit", [2, 3])
def test_inner_iterate_and_swaps_equal_the_loop(method, workers, nit):
    with sc.Pool(workers, start_method=method) as pool:
        d, e = coupled_data(pool), coupled_data(pool)
        want = coupled_loop(pool, d, nit)
        now = pool.iterate(coupled_program(e, nit), steps=STEPS)
        for name in ("v", "p", "b"):
            got = now[e[name]]
            assert got.numpy().tobytes() == want[name].numpy().tobytes(), name
            # the holder is the same one of the pair as the loop's
            assert (got is e[name]) == (want[name] is d[name])


@pytest.mark.parametrize("method", START_METHODS)
def test_a_stage_reads_what_every_worker_wrote_in_the_stage_before(method):
    """The barrier between stages: the first row's worker is slow, and every worker then
    reads all of y (whole); without the barrier the others read the previous step's y."""
    with sc.Pool(3, start_method=method) as pool:
        y, out = pool.zeros(10_000), pool.zeros(10_000)  # 16 chunks: every worker has rows
        pool.iterate(sc.program(sc.stage(slow_first_row, y, sc.STEP, 0),
                                sc.stage(sum_all, out, y)), steps=1)  # compiled in workers
        pool.iterate(sc.program(sc.stage(slow_first_row, y, sc.STEP, 30_000_000),
                                sc.stage(sum_all, out, y)), steps=3)
        assert (out.numpy() == 30_000.0).all()  # step 2: y == 3 everywhere


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("workers", [2, 3])
def test_halo_arguments_and_fixed_edges_in_stages_equal_the_loop(method, workers):
    """halo= (arrays with rows of their own) in a map stage, boundary='fixed' with halo= in
    an inner iterate of 3 sweeps, 1-D arrays of 3000 rows (6 chunks) and wide 2-D ones."""
    from edgekernels import heat_source, staggered
    rng = np.random.default_rng(5)
    n, m = 40, NY
    inp, flx = rng.random((n + 4, m)), rng.random((n + 1, m))
    a0, b0, f0 = rng.random(3000), rng.random(3000), rng.random(3002)
    with sc.Pool(workers, start_method=method) as pool:
        runs = []
        for use_program in (False, True):
            out, i_, fl = pool.zeros((n, m)), pool.array(inp), pool.array(flx)
            a, b, f = pool.array(a0), pool.array(b0), pool.array(f0)
            if use_program:
                roles = pool.iterate(sc.program(sc.stage(staggered, out, i_, fl, 0.1),
                                                sc.stage(heat_source, a, b, f, sweeps=3)),
                                     steps=4)
                last = roles[b]
            else:
                for _ in range(4):
                    pool.map(staggered, out, i_, fl, 0.1)
                    last = pool.iterate(heat_source, a, b, f, steps=3)
                    a, b = (b, a) if last is a else (a, b)
            runs.append((out.numpy().tobytes(), last.numpy().tobytes(),
                         (a if last is b else b).numpy().tobytes()))
        assert runs[0] == runs[1]


def test_inline_and_process_pools_agree_and_zero_steps_run_nothing():
    results = []
    for backend in ("inline", "processes"):
        with sc.Pool(2, backend=backend) as pool:
            d = coupled_data(pool, rows=5)  # fewer rows than chunks per worker
            before = {k: a.numpy().copy() for k, a in d.items()}
            now = pool.iterate(coupled_program(d, 3), steps=0)
            assert all(now[a] is a for a in d.values())
            assert all((d[k].numpy() == before[k]).all() for k in d)
            now = pool.iterate(coupled_program(d, 3), steps=STEPS)
            results.append([now[d[k]].numpy().tobytes() for k in ("v", "p", "b")])
    assert results[0] == results[1]


@pytest.mark.parametrize("method", START_METHODS)
def test_a_kernel_error_names_the_stage_and_step_and_the_pool_goes_on(method):
    with sc.Pool(3, start_method=method) as pool:
        out, x, y = pool.zeros(30), pool.array(np.arange(30.0)), pool.zeros(30)
        prog = sc.program(sc.stage(scale, y, x), sc.stage(fail_at, out, sc.STEP, 3))
        with pytest.raises(sc.KernelError) as info:
            pool.iterate(prog, steps=6, timeout=60)
        err = info.value
        assert err.remote_type == "ZeroDivisionError"
        assert "stage 2 (fail_at) of step 3" in str(err)
        assert "Broken" not in err.remote_type  # the first failure, not a barrier's echo
        # the barrier was reset: the same pool runs the next program to the end
        now = pool.iterate(sc.program(sc.stage(fail_at, out, sc.STEP, -1)), steps=4)
        assert (now[out].numpy() == 3.0).all()


def test_inline_kernel_error_names_the_stage_and_step():
    with sc.Pool(2, backend="inline") as pool:
        out = pool.zeros(8)
        with pytest.raises(sc.KernelError, match=r"stage 1 \(fail_at\) of step 2"):
            pool.iterate(sc.program(sc.stage(fail_at, out, sc.STEP, 2)), steps=5)


def test_refusals_say_how_to_fix_them():
    with sc.Pool(2, backend="inline") as pool:
        d = coupled_data(pool, rows=6)
        prog = coupled_program(d, 2)
        for kw, words in ((dict(tol=1e-3), "needs a residual"),
                          (dict(boundary="reflect"), "sc.stage(kernel, *args, boundary="),
                          (dict(block_sweeps=3), "drop block_sweeps="),
                          (dict(chunk_rows=2), "leave it out")):
            with pytest.raises(sc.InputError, match=re.escape(words)):
                pool.iterate(prog, steps=2, **kw)
        with pytest.raises(sc.InputError, match="takes no arrays"):
            pool.iterate(prog, d["v"], d["vn"], steps=2)
        other = pool.zeros((6, NY))
        with pytest.raises(sc.InputError, match="not a shared array any stage"):
            sc_prog = sc.program(sc.stage(source, d["b"], d["v"], sc.STEP),
                                 swap=[(d["v"], other)])
            pool.iterate(sc_prog, steps=1)
        view = d["v"][1:]
        with pytest.raises(sc.InputError, match="shares memory"):
            pool.iterate(sc.program(sc.stage(source, d["b"], d["v"], sc.STEP),
                                    sc.stage(scale, d["pn"][1:, 0], view[:, 0]),
                                    swap=[(d["v"], d["b"])]), steps=1)
        column, short = d["pn"][:, 0], other[:3, 0]
        with pytest.raises(sc.InputError, match="same shape"):
            pool.iterate(sc.program(sc.stage(scale, column, d["v"][:, 0]),
                                    sc.stage(scale, short, d["b"][:3, 0]),
                                    swap=[(column, short)]), steps=1)
        from sharedcompute.kernels.reductions import total
        with pytest.raises(sc.InputError, match="stage 1: .*total is a reduce; a program's"):
            pool.iterate(sc.program(sc.stage(total, d["v"])), steps=1)
        with pytest.raises(sc.InputError, match="takes a kernel first"):
            sc.stage(np.sum, d["v"])
        with pytest.raises(sc.InputError, match="non-negative"):
            sc.stage(relax, d["pn"], d["p"], d["b"], sweeps=-1)
        # the advice works: one array object everywhere, and the program runs
        v = d["v"]
        pool.iterate(sc.program(sc.stage(source, d["b"], v, sc.STEP),
                                sc.stage(scale, d["pn"][1:, 0], pool.array(v.numpy()[1:, 0])),
                                swap=[(v, d["b"])]), steps=1)


def test_dask_refuses_programs_with_advice():
    pytest.importorskip("distributed")
    with sc.Pool(backend="dask", n_workers=1) as pool:
        x = pool.array(np.arange(4.0))
        y = pool.zeros(4)
        with pytest.raises(sc.InputError, match="local pools"):
            pool.iterate(sc.program(sc.stage(scale, y, x)), steps=1)


def test_the_guides_fdtd_example_runs(tmp_path):
    """docs/guide/timesteps.md's step program, run as the script it is (it asserts the
    result is bitwise NumPy's loop)."""
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    page = (root / "docs" / "guide" / "timesteps.md").read_text()
    start = page.index("## One call for the whole run")
    block = re.findall(r"```python\n(.*?)```", page[start:], re.S)[0]
    script = tmp_path / "fdtd_program.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("action", ["SIGKILL", "HANG", "SLOW_EXC"])
def test_a_worker_killed_hung_or_slow_to_fail_inside_a_program_never_hangs_the_pool(action):
    """A stage's worker killed (SIGKILL), stuck (timeout=), or raising slowly (the others
    reach the barrier first): the usual error, promptly, and the pool runs the next
    program right."""
    import time

    import faultkernels as fk
    code = getattr(fk, action)
    expected = {"SIGKILL": sc.WorkerCrashedError, "HANG": sc.KernelTimeoutError,
                "SLOW_EXC": sc.KernelError}[action]
    with sc.Pool(3, start_method="fork") as pool:
        x, y, out = pool.array(np.arange(30_000.0)), pool.zeros(30_000), pool.zeros(30_000)
        victim = 15_000  # the middle worker's rows
        prog = sc.program(sc.stage(scale, y, x), sc.stage(fk.fault_map, out, y, code, victim, 0.0))
        t0 = time.monotonic()
        with pytest.raises(expected) as info:
            pool.iterate(prog, steps=3, timeout=3.0 if action == "HANG" else None)
        assert time.monotonic() - t0 < 15.0
        if action == "SLOW_EXC":  # the first failure, not the barrier's echo
            assert "stage 2 (fault_map) of step 0" in str(info.value)
            assert "Broken" not in info.value.remote_type
        ok = sc.program(sc.stage(scale, y, x), sc.stage(fk.fault_map, out, y, fk.NONE, -1, 0.0))
        pool.iterate(ok, steps=2)
        assert out.numpy().tobytes() == (2.0 * (2.0 * np.arange(30_000.0)) + 1.0).tobytes()


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_fused_last_stage_stops_the_program_as_iterate_stops(method, workers):
    """A one-stage program of jacobi2d_residual with swap= is pool.iterate of it: the same
    steps, residual (bitwise, for any worker count) and arrays."""
    from sharedcompute.kernels.stencils import jacobi2d_residual
    g = np.zeros((48, NY))
    g[0] = 1.0
    with sc.Pool(workers, start_method=method) as pool:
        runs = []
        for use_program in (False, True):
            u, out = pool.array(g), pool.array(g)
            if use_program:
                r = pool.iterate(sc.program(sc.stage(jacobi2d_residual, out, u),
                                            swap=[(out, u)]),
                                 steps=500, tol=2e-3, check_every=3, info=True)
                last = r.array[u]
            else:
                r = pool.iterate(jacobi2d_residual, out, u, steps=500, tol=2e-3,
                                 check_every=3, info=True, block_sweeps=1)
                last = r.array
            runs.append((r.sweeps, r.residual, last.numpy().tobytes(),
                         (out if last is u else u).numpy().tobytes()))
        assert runs[0] == runs[1]
        assert runs[0][0] < 500 and runs[0][0] % 3 == 0 and runs[0][1] <= 2e-3


def test_a_residual_after_other_stages_equals_numpy_and_tol_needs_a_fused_last_stage():
    """source then a fused stencil: the step count, residual (a max: exact whatever the
    grouping) and arrays are NumPy's; tol= without a fused last stage is refused."""
    from sharedcompute.kernels.stencils import jacobi2d_residual
    rng = np.random.default_rng(2)
    v0, u0 = rng.random((30, NY)), rng.random((30, NY))
    with sc.Pool(2) as pool:
        v, u, out = pool.array(v0), pool.array(u0), pool.array(u0)
        prog = sc.program(sc.stage(source, v, u, sc.STEP), sc.stage(jacobi2d_residual, out, u),
                          swap=[(out, u)])
        r = pool.iterate(prog, steps=400, tol=1e-4, check_every=2, info=True)
        a, b, vv = u0.copy(), u0.copy(), v0.copy()  # NumPy: the same steps
        for t in range(400):
            vv[:] = 0.5 * a + 0.01 * t
            b[1:-1, 1:-1] = 0.25 * (((a[:-2, 1:-1] + a[2:, 1:-1]) + a[1:-1, :-2]) + a[1:-1, 2:])
            change = np.max(np.abs(b[1:-1] - a[1:-1]))
            a, b = b, a
            if (t + 1) % 2 == 0 and change <= 1e-4:
                break
        assert r.sweeps == t + 1 and r.residual == change
        assert r.array[u].numpy().tobytes() == a.tobytes()  # jacobi2d's order: bitwise
        assert v.numpy().tobytes() == vv.tobytes()
        with pytest.raises(sc.InputError, match="last stage's kernel .*must return its partial"):
            pool.iterate(sc.program(sc.stage(source, v, u, sc.STEP)), steps=2, tol=1e-3)
        with pytest.raises(sc.InputError, match="combine= on the last stage"):
            pool.iterate(prog, steps=2, residual=jacobi2d_residual)


def test_an_undeclared_write_in_a_stage_is_explained_for_that_stage_and_progress_counts():
    from programkernels import writes_its_input
    with sc.Pool(2, start_method="fork") as pool:
        x, y, out = pool.array(np.arange(3000.0)), pool.zeros(3000), pool.zeros(3000)
        with pytest.raises(sc.KernelError) as info:
            pool.iterate(sc.program(sc.stage(scale, y, x), sc.stage(writes_its_input, out, y)),
                         steps=2)
        text = str(info.value)
        assert "kernel writes_its_input writes one of ['x']" in text, text
        assert "stage 2 (writes_its_input) of step 0" in text
        seen: list = []  # progress=callback(done, total)
        pool.iterate(sc.program(sc.stage(scale, y, x), sc.stage(scale, out, y)), steps=3,
                     progress=lambda done, total: seen.append((done, total)))
        assert seen and seen[-1][0] == seen[-1][1] > 0  # every chunk of every stage and step
