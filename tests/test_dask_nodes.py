"""Node-local pools on a Dask cluster (sc.DaskNodes): a LocalCluster of worker processes
stands for the nodes, each holding a small local pool. Maps and reductions equal the local
pool's bitwise; the data stays on the nodes between calls; what is not built yet is refused
with InputError; closing frees every node's blocks; a lost node raises NodeLostError."""
import os
import signal
import time

import numpy as np
import pytest

import sharedcompute as sc
from conftest import START_METHODS, shared_pool
from sharedcompute.dask_nodes import local_cluster
from sharedcompute.kernels import elementwise, reductions, scans, stencils
from sharedcompute.kernels.registry import ENTRIES, share_args
from sharedcompute.partition import chunk_grid, chunk_rows, combine_all, layout_of
from sharedcompute.shared import creator_pid, list_segments
from iteratekernels import leapfrog
from testkernels import raise_on_negative

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    client, cl = local_cluster(2)  # 2 single-threaded, non-daemonic worker processes
    yield client
    client.close()
    cl.close()


@pytest.fixture(scope="module")
def nodes(cluster):
    pool = sc.Pool(backend=sc.DaskNodes(cluster, per_node=2))
    yield pool
    pool.close()


def _local():
    return shared_pool(2, START_METHODS[-1])


def _flat(value):
    parts = value if isinstance(value, tuple) else (value,)
    return np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in parts])


def _mixed(n, seed=21, dtype=np.float64):
    """Values of mixed magnitudes and signs: a sum whose last bits depend on its order."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 17, n)).astype(dtype)


def _reduce_both(nodes, kernel, *arrays):
    local = _local()
    on_local = [local.array(a) for a in arrays]
    want = local.reduce(kernel, *on_local)
    for a in on_local:
        a.free()
    got = nodes.reduce(kernel, *[nodes.array(a) for a in arrays])
    return got, want


def test_the_pool_is_one_local_pool_per_worker(nodes, cluster):
    assert len(cluster.scheduler_info()["workers"]) == 2
    assert nodes.n_workers == 4 and len(nodes.pids) == 2 + 4  # 2 Dask workers, 2 x 2 procs


@pytest.mark.parametrize("n", [100_003, 17, 1, 0])
def test_total_of_mixed_magnitudes_is_the_local_pools_bitwise(nodes, n):
    x = _mixed(n)
    got, want = _reduce_both(nodes, reductions.total, x)
    assert _flat(got).tobytes() == _flat(want).tobytes(), (got, want)


def test_the_order_matters_for_these_values():
    # The check above can fail: summing the chunk partials left to right (not along the
    # fixed tree) gives other bits for these values.
    x = _mixed(100_003)
    rows = chunk_rows(x.shape[0], 8)
    leaves = [x[s:e].sum() for s, e in chunk_grid(x.shape[0], rows)]
    left_to_right = 0.0
    for v in leaves:
        left_to_right += v
    assert left_to_right != combine_all(leaves, np.add)


@pytest.mark.parametrize("special", ["nan", "inf", "float32", "int64"])
def test_special_values_and_dtypes_reduce_as_locally(nodes, special):
    x = _mixed(50_001)
    if special == "nan":
        x[12_345] = np.nan
    elif special == "inf":
        x[40_000] = np.inf
    elif special == "float32":
        x = x.astype(np.float32)
    else:
        x = np.random.default_rng(3).integers(-2**40, 2**40, 50_001)
    got, want = _reduce_both(nodes, reductions.total, x)
    assert _flat(got).tobytes() == _flat(want).tobytes(), (got, want)


def test_dot_and_mean_var_reduce_as_locally(nodes):
    x, y = _mixed(70_001, 1), _mixed(70_001, 2)
    got, want = _reduce_both(nodes, reductions.dot, x, y)
    assert _flat(got).tobytes() == _flat(want).tobytes()
    got, want = _reduce_both(nodes, reductions.mean_var, x)
    assert _flat(got).tobytes() == _flat(want).tobytes()


def test_triad_and_axpy_write_in_place_on_the_nodes(nodes):
    b, c = _mixed(90_001, 4), _mixed(90_001, 5)
    local = _local()
    la, lb, lc = local.zeros(90_001), local.array(b), local.array(c)
    na, nb, nc = nodes.zeros(90_001), nodes.array(b), nodes.array(c)
    assert nodes.map(elementwise.triad, na, nb, nc, 2.5) is na  # the handle, no data back
    local.map(elementwise.triad, la, lb, lc, 2.5)
    np.testing.assert_array_equal(np.asarray(na), np.asarray(la))
    for _ in range(2):  # each call sees the one before it: the rows stayed on the nodes
        nodes.map(elementwise.axpy, na, nc, 0.3)
        local.map(elementwise.axpy, la, lc, 0.3)
    assert np.asarray(na).tobytes() == np.asarray(la).tobytes()
    assert nodes.reduce(reductions.total, na) == local.reduce(reductions.total, la)
    for a in (la, lb, lc):
        a.free()


def test_every_library_kernel_runs_as_locally_or_is_refused(nodes):
    refused, ran = [], []
    for name, entry in sorted(ENTRIES.items()):
        args, kwargs = entry.make(np.random.default_rng(11), 5003, entry.dtypes[0])
        local = _local()
        on_local = share_args(local, args)
        on_nodes = share_args(nodes, args)
        call = "reduce" if entry.kernel.kind == "reduce" else "map"
        try:
            got = getattr(nodes, call)(entry.kernel, *on_nodes, **kwargs)
        except sc.InputError as exc:
            assert "backend=client" in str(exc) or "node" in str(exc), str(exc)
            refused.append(name)
        else:
            want = getattr(local, call)(entry.kernel, *on_local, **kwargs)
            if call == "map":
                got, want = np.asarray(got), np.asarray(want)
            assert _flat(got).tobytes() == _flat(want).tobytes(), name
            ran.append(name)
            got = want = None  # views of the local blocks, freed below
        for a in on_local:
            if isinstance(a, sc.SharedArray):
                a.free()
        for a in on_nodes:
            if isinstance(a, sc.NodeArray):
                a.free()
    assert {"triad", "axpy", "total", "dot", "mean_var", "histogram"} <= set(ran), ran
    assert {"blur3x3", "heat1d", "jacobi2d", "jacobi2d_residual"} <= set(ran), ran  # halos
    assert "cumsum" in ran, ran  # scans
    # not built yet: position=, a node array passed whole
    assert set(refused) == {"mandelbrot", "monte_carlo_pi", "matmul"}, refused


@pytest.mark.parametrize("boundary", ["none", "fixed", "reflect", "mirror", "periodic",
                                      "nearest", 1.5])
def test_stencils_and_iterate_equal_the_local_pool_bitwise(nodes, boundary):
    u0 = np.random.default_rng(13).random((97, 31))
    local = _local()
    a, b = nodes.array(u0), nodes.array(u0)
    c, d = local.array(u0), local.array(u0)
    assert nodes.map(stencils.jacobi2d, b, a, boundary=boundary) is b
    local.map(stencils.jacobi2d, d, c, boundary=boundary)
    assert np.asarray(b).tobytes() == np.asarray(d).tobytes()
    got = nodes.iterate(stencils.jacobi2d, b, a, steps=11, boundary=boundary)
    want = local.iterate(stencils.jacobi2d, d, c, steps=11, boundary=boundary)
    assert got is b and want is d
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    assert np.asarray(a).tobytes() == np.asarray(c).tobytes()
    want = None
    c.free()
    d.free()


def test_three_nodes_more_nodes_than_rows_and_a_kernel_error():
    client, cl = local_cluster(3)
    try:
        with sc.Pool(backend=sc.DaskNodes(client, per_node=1)) as pool:
            for n in (2, 1, 0, 33_333):
                x = _mixed(n, 9)
                got, want = _reduce_both(pool, reductions.total, x)
                assert _flat(got).tobytes() == _flat(want).tobytes(), n
                a = pool.array(x)
                pool.map(elementwise.axpy, a, pool.array(x), 2.0)
                np.testing.assert_array_equal(np.asarray(a), x + 2.0 * x)
            # nodes of 0 or 1 rows: halos from two nodes away; depth 2 next to the edges;
            # 'none'/'fixed' run blocks of sweeps (16 // depth) with wider halos
            for rows, depth, steps in ((2, 1, 3), (3, 1, 3), (5, 1, 3), (40, 1, 3),
                                       (40, 2, 9), (9, 2, 5), (200, 1, 19)):
                u0 = np.random.default_rng(rows).random((rows, 512))  # a row a chunk
                for boundary in ("none", "fixed", "periodic", "reflect", -2.0):
                    a, b = pool.array(u0), pool.array(u0)
                    pool.iterate(stencils.jacobi2d, b, a, steps=steps, boundary=boundary,
                                 depth=depth)
                    local = _local()
                    c, d = local.array(u0), local.array(u0)
                    local.iterate(stencils.jacobi2d, d, c, steps=steps, boundary=boundary,
                                  depth=depth)
                    what = (rows, depth, boundary)
                    assert np.asarray(b).tobytes() == np.asarray(d).tobytes(), what
                    assert np.asarray(a).tobytes() == np.asarray(c).tobytes(), what
                    c.free()
                    d.free()
            bad = pool.array(np.r_[np.ones(1000), -1.0])
            with pytest.raises(sc.KernelError, match="raise_on_negative raised ValueError"):
                pool.reduce(raise_on_negative, bad)
    finally:
        client.close()
        cl.close()


def _scan_both(pool, x, out_dtype=None):
    """cumsum of ``x`` on the node pool and on a local pool of 2 (copies), and how the
    node pool spread the rows."""
    out_dtype = x.dtype if out_dtype is None else out_dtype
    local = _local()
    lx, lo = local.array(x), local.zeros(x.shape[0], out_dtype)
    local.map(scans.cumsum, lo, lx)
    want = np.array(lo)
    lx.free()
    lo.free()
    nx, no = pool.array(x), pool.zeros(x.shape[0], out_dtype)
    assert pool.map(scans.cumsum, no, nx) is no
    got = np.asarray(no)
    nx.free()
    no.free()
    return got, want, no.chunks, no.split


def _scan_cases(n_nodes):
    """(label, x, out dtype): values whose prefix sums' last bits depend on the order of the
    additions (mixed magnitudes), float32, int64 past 2**63 (wraps), int32, NaN and inf,
    and lengths that leave nodes with 0 rows, 1 row and many chunks."""
    big = np.random.default_rng(7).integers(2**60, 2**62, 60_001)
    special = _mixed(50_001, 6)
    special[[11_111, 30_000, 45_000]] = (np.nan, np.inf, -np.inf)
    ones = 512 * n_nodes - 511  # chunks of 512 float64 rows: the last node holds 1 row
    return [(f"float64 n={n}", _mixed(n, 30 + n), None)
            for n in (0, 1, 2, 513, ones, 100_003)] + [
        ("float32", _mixed(50_001, 4, np.float32), None),
        ("float32 into float64", _mixed(50_001, 4, np.float32), np.float64),  # one grid
        ("int64 wrapping", big, None),
        ("int32 wrapping", big.astype(np.int32), None),
        ("nan and inf", special, None)]


def _check_scans(pool, n_nodes):
    held, rows = set(), set()  # chunks and rows held by each node, over all cases
    for label, x, out_dtype in _scan_cases(n_nodes):
        got, want, chunks, split = _scan_both(pool, x, out_dtype)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), label
        if x.dtype.kind == "i":  # exact, and wrapping as NumPy's
            assert got.tobytes() == np.cumsum(x, dtype=x.dtype).tobytes(), label
        held |= {b - a for a, b in chunks}
        rows |= {e - s for s, e in split}
    assert {0, 1} <= rows and max(held) >= 6, (rows, held)  # nodes of 0 rows, 1 row, many chunks


def test_scans_equal_the_local_pool_bitwise_on_two_nodes(nodes):
    _check_scans(nodes, 2)
    x = nodes.array(_mixed(100_003))
    out = nodes.zeros(100_003)
    with pytest.raises(sc.InputError, match="schedule='static' only"):
        nodes.map(scans.cumsum, out, x, schedule="dynamic")
    with pytest.raises(sc.InputError, match="does not fit the arrays' grid"):
        nodes.map(scans.cumsum, out, x, chunk_rows=1000)
    # float32 into float64: refused where the two grids differ (512 and 1024 rows a chunk)
    with pytest.raises(sc.InputError, match="spread over the nodes differently"):
        nodes.map(scans.cumsum, nodes.zeros(1000), nodes.array(np.ones(1000, np.float32)))


def test_the_scan_offsets_order_matters_for_these_values():
    # The checks above can fail: offsets combined per node first (each node's total, then
    # each chunk's offset within its node) give other bits for these values.
    x = _mixed(100_003, 30 + 100_003)
    rpc, chunks, _ = layout_of(x.shape[0], 8, 2)
    totals = [np.add.accumulate(x[s:e])[-1] for s, e in chunk_grid(x.shape[0], rpc)]
    per_chunk = np.cumsum([0.0] + totals[:-1])
    node_totals = [sum(totals[a:b]) for a, b in chunks]
    per_node = [0.0, node_totals[0]]
    by_node = [per_node[k] + o for k, (a, b) in enumerate(chunks)
               for o in np.cumsum([0.0] + totals[a:b - 1])]
    assert per_chunk.tobytes() != np.array(by_node).tobytes()


def test_scans_equal_the_local_pool_bitwise_on_three_nodes():
    client, cl = local_cluster(3)
    try:
        with sc.Pool(backend=sc.DaskNodes(client, per_node=1)) as pool:
            _check_scans(pool, 3)
    finally:
        client.close()
        cl.close()


def test_what_is_not_built_yet_is_refused_with_the_way_to_do_it(nodes):
    u = nodes.array(np.random.default_rng(1).random((64, 16)))
    v = nodes.zeros((64, 16))
    with pytest.raises(sc.InputError, match="halo deeper than 16 rows .* backend=client"):
        nodes.map(stencils.jacobi2d, v, u, depth=17)
    with pytest.raises(sc.InputError, match="returns its residual from the sweep"):
        nodes.iterate(stencils.jacobi2d_residual, v, u, steps=2, tol=1e-3)
    with pytest.raises(sc.InputError, match="step programs .* on a node pool, call pool.map"):
        nodes.iterate(sc.program(sc.stage(stencils.jacobi2d, v, u)), steps=2)
    with pytest.raises(sc.InputError, match="tasks"):
        nodes.submit(print, 1)
    x32, x64 = nodes.array(np.ones(500_000, np.float32)), nodes.array(np.ones(500_000))
    with pytest.raises(sc.InputError, match="spread over the nodes differently"):
        nodes.map(elementwise.axpy, x64, x32, 1.0)
    with pytest.raises(sc.InputError, match="per_node"):
        sc.Pool(2, backend=sc.DaskNodes(None))


def _segments_of(pids):
    return sorted(n for n in list_segments() if creator_pid(n) in pids)


def test_close_frees_every_nodes_blocks(cluster):
    pids = set(cluster.run(os.getpid).values())
    before = set(_segments_of(pids))
    pool = sc.Pool(backend=sc.DaskNodes(cluster, per_node=1))
    a = pool.array(np.arange(100_000.0))
    pool.map(elementwise.axpy, a, pool.zeros(100_000), 1.0)
    assert len(set(_segments_of(pids)) - before) >= 4  # two arrays' rows on two nodes
    pool.close()
    assert set(_segments_of(pids)) - before == set()
    with pytest.raises(sc.PoolClosedError):
        pool.reduce(reductions.total, a)


def test_a_killed_node_raises_node_lost_error_and_the_others_are_freed():
    client, cl = local_cluster(2)
    try:
        pool = sc.Pool(backend=sc.DaskNodes(client, per_node=1))
        a = pool.array(np.arange(10_000.0))
        by_addr = client.run(os.getpid)
        victim = sorted(by_addr)[1]
        others = {p for addr, p in by_addr.items() if addr != victim}
        os.kill(by_addr[victim], signal.SIGKILL)
        with pytest.raises(sc.NodeLostError, match=victim.replace(".", r"\.")) as info:
            pool.reduce(reductions.total, a)
        assert info.value.node == victim
        with pytest.raises(sc.NodeLostError):  # every later call: the rows are gone
            pool.map(elementwise.axpy, a, a, 1.0)
        assert _segments_of(others)
        pool.close()  # the surviving node's pool closes and frees its blocks
        assert _segments_of(others) == []
        t0 = time.monotonic()
        end = t0 + 15  # the killed worker's blocks: its nanny's reaper unlinks them
        while _segments_of({by_addr[victim]}) and time.monotonic() < end:
            time.sleep(0.2)
        print("killed node blocks gone after", time.monotonic() - t0)
        assert _segments_of({by_addr[victim]}) == []
    finally:
        client.close()
        cl.close()


def test_a_pool_outliving_its_client_is_reaped_on_the_nodes(cluster):
    import distributed
    pids = set(cluster.run(os.getpid).values())
    before = set(_segments_of(pids))
    other = distributed.Client(cluster.scheduler.address)
    pool = sc.Pool(backend=sc.DaskNodes(other, per_node=1))
    pool_pids = set(pool.pids) - pids
    pool.array(np.arange(50_000.0))
    assert set(_segments_of(pids)) - before
    other.close()  # the client goes away without closing the pool
    end = time.monotonic() + 20
    while (set(_segments_of(pids)) - before) and time.monotonic() < end:
        time.sleep(0.2)
    assert set(_segments_of(pids)) - before == set()  # the nodes' blocks were unlinked
    while any(_alive(p) for p in pool_pids) and time.monotonic() < end:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pool_pids)  # and their pools' processes stopped
    pool.close()  # nothing left to do, no error


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_pool_on_the_cluster_leaves_the_first_ones_nodes_alone(nodes, cluster):
    # Registering the worker plugin again would tear the running one down, and with it
    # every node pool on the worker: the second pool must find it there and leave it.
    x = nodes.array(np.arange(30_000.0))
    with sc.Pool(backend=sc.DaskNodes(cluster, per_node=1)) as second:
        y = second.array(np.arange(30_000.0))
        assert second.reduce(reductions.total, y) == nodes.reduce(reductions.total, x)
    assert nodes.reduce(reductions.total, x) == np.arange(30_000.0).sum()


def test_dask_arrays_in_and_out_stay_on_the_workers(nodes, cluster):
    import dask.array as da
    x = np.random.default_rng(5).random((30_011, 3))
    dx = cluster.persist(da.from_array(x, chunks=(7_000, 3)))
    a = nodes.array(dx)  # each node computes its own rows
    assert a.shape == x.shape and np.asarray(a).tobytes() == x.tobytes()
    back = a.to_dask()
    assert type(back).__module__.startswith("dask.array")
    assert np.asarray(cluster.compute(back).result()).tobytes() == x.tobytes()
    with pytest.raises(sc.InputError, match="known count"):
        nodes.array(dx[dx[:, 0] > 0.5])


def test_open_has_each_node_read_its_own_rows_of_a_npy_file(nodes, tmp_path):
    x = _mixed(40_009, 8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    a = nodes.open(path)
    assert np.asarray(a).tobytes() == x.tobytes()
    got, want = _reduce_both(nodes, reductions.total, x)
    assert nodes.reduce(reductions.total, a) == got
    with pytest.raises(sc.InputError, match="mode='r'"):
        nodes.open(path, mode="r+")


def test_node_halos_names_the_node_each_halo_row_comes_from():
    from sharedcompute.partition import node_halos
    split = ((0, 4), (4, 4), (4, 5), (5, 9))  # an empty node, a node of one row
    layout, wants = node_halos(split, 9, 2, "periodic")
    assert layout[0] == (2, 2, [3, 3, 2, 3])  # rows 7, 8 | 4 (node 2), 5 (node 3)
    assert layout[2] == (2, 2, [0, 0, 3, 3])
    assert wants[3] == {0: [2, 3, 0], 2: [0, 1]} and 1 not in layout
    layout, wants = node_halos(split, 9, 2, "none")
    assert layout[0][:2] == (0, 2) and layout[3][:2] == (2, 0)


@pytest.mark.parametrize("check_every", [1, 3])
def test_iterate_with_a_residual_stops_where_the_local_pool_does(nodes, check_every):
    u0 = np.zeros((61, 23))
    u0[0] = 1.0
    local = _local()
    a, b = nodes.array(u0), nodes.array(u0)
    c, d = local.array(u0), local.array(u0)
    kw = dict(steps=200, residual=reductions.max_abs_diff, tol=2e-3, check_every=check_every,
              info=True)
    got = nodes.iterate(stencils.jacobi2d, b, a, **kw)
    want = local.iterate(stencils.jacobi2d, d, c, **kw)
    assert 0 < got.sweeps == want.sweeps < 200 and got.residual == want.residual
    assert np.asarray(got.array).tobytes() == np.asarray(want.array).tobytes()
    want = None
    c.free()
    d.free()


def test_iterate_reports_the_block_of_sweeps_the_nodes_ran(nodes):
    """IterateResult.block_sweeps is the most sweeps a node ran between two halo
    exchanges: 16 // depth (GHOST) under 'none'/'fixed' (it said 1), at most block_sweeps=k
    and the sweeps between checks, 1 with a padded boundary; the values stay the local
    pool's (out starts unlike u: under 'fixed' each keeps its own edge rows)."""
    u0, o0 = np.random.default_rng(5).random((2, 97, 31))
    local = _local()
    for kw, k in ((dict(), 16), (dict(depth=2), 8), (dict(boundary="fixed"), 16),
                  (dict(boundary="fixed", block_sweeps=3), 3),
                  (dict(block_sweeps=3), 3), (dict(block_sweeps=1), 1),
                  (dict(boundary="periodic"), 1),
                  (dict(residual=reductions.max_abs_diff, tol=0.0, check_every=5), 5)):
        a, b = nodes.array(u0), nodes.array(o0)
        c, d = local.array(u0), local.array(o0)
        got = nodes.iterate(stencils.jacobi2d, b, a, steps=21, info=True, **kw)
        want = local.iterate(stencils.jacobi2d, d, c, steps=21, info=True, **kw)
        assert (got.sweeps, got.block_sweeps) == (want.sweeps, k), kw
        assert np.asarray(got.array).tobytes() == np.asarray(want.array).tobytes(), kw
        want = None
        c.free()
        d.free()
    # a kernel reading its out (the sweep before last): plain sweeps on each node, 16 of
    # them between two exchanges
    a, b = nodes.array(u0), nodes.array(o0)
    c, d = local.array(u0), local.array(o0)
    got = nodes.iterate(leapfrog, b, a, 0.1, steps=37, info=True)
    want = local.iterate(leapfrog, d, c, 0.1, steps=37, info=True)
    assert (got.sweeps, got.block_sweeps, want.block_sweeps) == (37, 16, 1)
    assert np.asarray(got.array).tobytes() == np.asarray(want.array).tobytes()
    assert np.asarray(a).tobytes() == np.asarray(c).tobytes()
    want = None
    c.free()
    d.free()
    a, b = nodes.array(u0), nodes.array(o0)  # no sweep: the edge rows are copied all the same
    c, d = local.array(u0), local.array(o0)
    assert nodes.iterate(stencils.jacobi2d, b, a, steps=0, info=True)[1:] == (0, None, 1)
    local.iterate(stencils.jacobi2d, d, c, steps=0)
    assert np.asarray(b).tobytes() == np.asarray(d).tobytes()
    c.free()
    d.free()


def test_a_restarted_node_worker_leaves_the_callers_environment_alone():
    """A LocalCluster's nannies run in this process and apply pre-spawn-environ with
    os.environ.update at every worker (re)start (distributed/nanny.py): a node worker
    restarted after a kill leaked NUMBA_NUM_THREADS=1 and friends into the caller, and a
    later numba.set_num_threads(2) there raised (CI, test_time_steps_bench)."""
    from sharedcompute._system import THREAD_ENV
    before = {k: os.environ.get(k) for k in THREAD_ENV}
    client, cl = local_cluster(2)
    try:
        old = client.run(os.getpid)
        os.kill(old[sorted(old)[0]], signal.SIGKILL)
        end = time.monotonic() + 60  # the nanny starts a new worker process
        while time.monotonic() < end:
            time.sleep(0.3)
            try:
                now = client.run(os.getpid)
            except Exception:  # the dead worker is not yet dropped by the scheduler
                continue
            if len(now) == 2 and set(now.values()) != set(old.values()):
                break
        else:
            pytest.fail("the killed worker was not restarted within 60 s")
        assert {k: os.environ.get(k) for k in THREAD_ENV} == before
        # and the new worker still runs one thread per pool
        got = client.run(lambda: os.environ.get("NUMBA_NUM_THREADS"))
        assert set(got.values()) == {"1"}, got
    finally:
        client.close()
        cl.close()


def test_arrays_in_another_byte_order_arrive_native_and_bad_dtypes_are_refused(nodes):
    """shared.native_array, shared by both Dask backends: a big-endian array is sent in
    this machine's order (same values, NumPy's oracle), a non-contiguous one contiguous,
    an object array refused by type."""
    x = np.arange(1001.0).astype(">f8")[::-1]  # big-endian and a negative stride
    a = nodes.array(x)
    got = np.asarray(a)
    assert got.dtype == np.dtype("float64") and got.dtype.isnative
    np.testing.assert_array_equal(got, x)
    assert float(nodes.reduce(reductions.total, a)) == float(np.sum(np.arange(1001.0)))
    with pytest.raises(sc.UnsupportedDtypeError):
        nodes.array(np.array([object()] * 3))
    a.free()
