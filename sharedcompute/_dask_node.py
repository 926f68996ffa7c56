"""The node side of sc.DaskNodes (dask_nodes.py): what runs inside each Dask worker process.

Per parent pool (its id), a node state: a local pool (LocalBackend, ``per_node``
processes) and that worker's rows of every array as the pool's SharedArrays, made at the
first message and kept in this process's registry until the parent's "close", the worker's
shutdown (a WorkerPlugin's teardown) or the worker's death (a NannyPlugin in its nanny
unlinks the dead process's blocks; its pool's processes exit with it, _worker.py).
Every message is one ``node_run(pool id, per_node, op, *args)`` task.

Dask worker processes are daemonic by default and a daemonic process may not start
children (multiprocessing asserts it): start the workers with the documented setting
``distributed.worker.daemon: False`` (dask/distributed issues #2142 and #2718; the nanny
reads it when it starts each worker process, distributed/nanny.py). A node whose worker is
daemonic refuses at ``sc.Pool(...)`` with InputError saying so.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
from typing import Any

import numpy as np

from ._start import _process_backend
from ._system import THREAD_ENV, nanny_config
from .errors import InputError
from .kernel import Kernel
from .partition import split_even, tree_finish
from .plan import make_plan
from .segments import SHM_DIR
from .shared import SharedArray, creator_pid, list_segments

GHOST = 16  # spare rows on each side of a node's rows: the deepest halo a node pool runs;
# a block of GHOST // depth sweeps per halo exchange (16, not 8: half the exchanges, and a
# local iterate of 16 sweeps runs blocks of 5, 5, 5 and 1 where 8 ran 5, 1, 1 and 1)
DAEMON_HINT = ("start the Dask workers with distributed.worker.daemon: False: "
               "dask.config.set({'distributed.worker.daemon': False}) around LocalCluster(...), "
               "or DASK_DISTRIBUTED__WORKER__DAEMON=False in the environment of `dask worker`")


def local_cluster(nodes: int) -> tuple[Any, Any]:
    """(client, cluster): ``nodes`` non-daemonic single-threaded worker processes. The nanny
    applies pre-spawn-environ to this process's os.environ too: given back afterwards (as
    DaskBackend does)."""
    import dask
    import distributed
    kept = {k: os.environ.get(k) for k in (*THREAD_ENV, "PYTHONHASHSEED")}
    try:
        with dask.config.set({"distributed.worker.daemon": False, **nanny_config()}):
            cluster = distributed.LocalCluster(n_workers=nodes, threads_per_worker=1,
                                               processes=True, dashboard_address=":0",
                                               silence_logs=40)
    finally:
        for key, value in kept.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    client = distributed.Client(cluster)
    client.wait_for_workers(nodes, timeout=120)
    return client, cluster


class _Node:
    """One parent pool's state on one Dask worker: its local pool and its arrays' rows,
    each in a block of GHOST spare rows on either side for the halos of stencils."""

    def __init__(self, per_node: int):
        if mp.current_process().daemon:
            raise InputError(f"this Dask worker's process is daemonic and cannot start a "
                             f"node pool's processes; {DAEMON_HINT}")
        self.backend = _process_backend(per_node, None)
        self.backend.start()
        self.arrays: dict[str, SharedArray] = {}  # whole blocks, ghost rows included
        self.rows: dict[str, int] = {}  # this node's rows of each
        self.views: dict[tuple, SharedArray] = {}  # kept: repeated calls hit the call cache
        self.lock = threading.Lock()  # a worker with several threads runs one call at a time
        self.lease: Any = None  # the parent client's key on this worker (_op_start)

    def new(self, aid: str, shape: tuple, dtype: Any) -> SharedArray:
        self.arrays[aid] = SharedArray.zeros((shape[0] + 2 * GHOST,) + tuple(shape[1:]), dtype)
        self.rows[aid] = shape[0]
        return self.view(aid)

    def view(self, aid: str, before: int = 0, after: int = 0) -> SharedArray:
        """This node's rows of an array, with ``before`` and ``after`` ghost rows."""
        key = (aid, before, after)
        v = self.views.get(key)
        if v is None:
            v = self.views[key] = self.arrays[aid][GHOST - before:GHOST + self.rows[aid] + after]
        return v

    def free(self, aid: str) -> None:
        for key in [k for k in self.views if k[0] == aid]:
            del self.views[key]
        a = self.arrays.pop(aid, None)
        self.rows.pop(aid, None)
        if a is not None and a.block is not None:
            a.block.release(strict=False)  # views a failed call's traceback holds too

    def close(self) -> None:
        for aid in list(self.arrays):
            self.free(aid)
        self.backend.close()


_NODES: dict[str, _Node] = {}  # parent pool id -> its node state in this worker process
_NODES_LOCK = threading.Lock()


def node_run(bid: str, per_node: int, op: str, *args: Any) -> Any:
    """The one entry point of every message: the node's state (made at the first), one op."""
    if op == "close":
        with _NODES_LOCK:
            node = _NODES.pop(bid, None)
        if node is not None:
            with node.lock:
                node.close()
        return None
    with _NODES_LOCK:
        node = _NODES.get(bid)
        if node is None:
            node = _NODES[bid] = _Node(per_node)
    with node.lock:
        return _OPS[op](node, *args)


def close_all_nodes() -> None:
    """Close every node pool of this process (the worker plugin's teardown)."""
    with _NODES_LOCK:
        nodes = list(_NODES.values())
        _NODES.clear()
    for node in nodes:
        with node.lock:
            node.close()


def _op_start(node: _Node, lease: Any) -> list[int]:
    """The pool's lease: a key the parent's client holds on this worker; when the client
    goes away without closing the pool, the scheduler forgets the key and the worker plugin
    closes this node's pool (reap_orphans)."""
    node.lease = lease
    return [os.getpid(), *node.backend.pids]


def reap_orphans(data: Any) -> list[str]:
    """Close the node pools whose lease key is gone from this worker's ``data`` (their
    client disconnected without closing them); returns their ids."""
    with _NODES_LOCK:
        gone = [bid for bid, node in _NODES.items()
                if node.lease is not None and node.lease not in data]
        nodes = [_NODES.pop(bid) for bid in gone]
    for node in nodes:
        with node.lock:
            node.close()
    return gone


def _op_put(node: _Node, aid: str, rows: np.ndarray) -> None:
    node.new(aid, rows.shape, rows.dtype).numpy()[...] = rows


def _op_zeros(node: _Node, aid: str, shape: tuple, dtype: np.dtype) -> None:
    node.new(aid, shape, dtype)


def _op_open(node: _Node, aid: str, path: str, start: int, stop: int) -> None:
    rows = np.load(path, mmap_mode="r")[start:stop]
    node.new(aid, rows.shape, rows.dtype).numpy()[...] = rows


def _op_get(node: _Node, aid: str) -> np.ndarray:
    return np.array(node.view(aid).numpy())


def _op_free(node: _Node, aid: str) -> None:
    node.free(aid)


def _local_args(node: _Node, desc: list, start: int | None = None, stop: int | None = None
                ) -> tuple:
    return tuple(node.view(v) if kind == "part" and start is None else
                 node.view(v)[start:stop] if kind == "part" else v for kind, v in desc)


def _op_map(node: _Node, kernel: Kernel, desc: list, boundscheck: bool, timeout: Any) -> None:
    node.backend.map(kernel, _local_args(node, desc), None, None, timeout, False, None,
                     boundscheck, None, None)


def _op_edges(node: _Node, aids: list, wants: dict) -> dict:
    """Rows other nodes need as halos: {node k: {array id: its rows ``wants[k]`` (a copy)}}."""
    return {k: {aid: node.view(aid).numpy()[rows] for aid in aids} for k, rows in wants.items()}


def _op_halo_map(node: _Node, kernel: Kernel, desc: list, steps: int, reads: list,
                 depth: int, me: int, before: int, after: int, owners: list, constant: Any,
                 boundscheck: bool, timeout: Any, block_sweeps: int | None, edges: dict,
                 next_reads: list | None = None, next_wants: dict | None = None,
                 previous: Any = None) -> dict | None:
    """``steps`` sweeps of a stencil on this node's rows, the first one's arguments ``desc``:
    the halo rows of each read array (``owners``: the node whose edges each comes from, in
    order, -1 for the constant boundary) go into the ghost rows next to its own rows; then
    the rows with their ``before`` and ``after`` ghost rows are swept as one array under
    boundary 'none' (one sweep: a map) or 'fixed' (a block: one local iterate, its own
    blocks and tiles, the plain sweeps' bits; 'fixed' copies no edge rows, as a run of
    maps under 'none'). A sweep leaves at most ``depth`` rows more from each end wrong, so
    after B <= GHOST // depth sweeps this node's rows are those of B plain sweeps; the
    ghost rows are scratch. Returns the edge rows of ``next_reads`` other nodes need for
    the next block, if any."""
    for aid in reads:
        full, m = node.arrays[aid].numpy(), node.rows[aid]
        taken = dict.fromkeys(edges, 0)
        for pos, j in enumerate(owners):
            row = GHOST - before + pos if pos < before else GHOST + m + pos - before
            if j < 0:
                full[row] = constant
            else:
                full[row] = edges[j][me][aid][taken[j]]
                taken[j] += 1
    args = tuple(node.view(v, before, after) if kind == "part" else v for kind, v in desc)
    if steps == 1:
        node.backend.map(kernel, args, None, "none", timeout, False, None, boundscheck, depth,
                         None)
    else:
        node.backend.iterate(kernel, args, steps=steps, residual=None, tol=None,
                             check_every=1, boundary="fixed", timeout=timeout,
                             boundscheck=boundscheck, depth=depth, block_sweeps=block_sweeps)
    # the next block's halo rows for the other nodes (``previous``: this node's task before,
    # passed only so that Dask runs this one after it)
    return None if next_reads is None else _op_edges(node, next_reads, next_wants or {})


def _op_copy_rows(node: _Node, src: str, dst: str, ranges: list) -> None:
    """dst[s:e] = src[s:e] for each local range (iterate's fixed edge rows)."""
    a, b = node.view(src).numpy(), node.view(dst).numpy()
    for s, e in ranges:
        b[s:e] = a[s:e]


def _op_reduce(node: _Node, kernel: Kernel, desc: list, pieces: list, rpc: int,
               boundscheck: bool, timeout: Any) -> list:
    """The values of the global tree's nodes ``pieces`` [(lo, hi, first row, end row)],
    each the local pool's tree over that node's chunks (its own rows, rpc rows a chunk)."""
    backend = node.backend
    ex = backend.executor
    ex.check_sendable(kernel)
    backend.ensure_workers()
    tasks, owner, sizes = [], [], []
    for p, (_, _, s, e) in enumerate(pieces):
        plan = make_plan(kernel, _local_args(node, desc, s, e), rows=None, boundary=None,
                         in_process=ex.in_process, boundscheck=boundscheck)
        plan.rows_per_chunk = rpc  # the global grid: chunks lo..hi-1 of the whole array
        sizes.append(len(plan.chunks))
        for r in split_even(sizes[-1], ex.n_workers):
            if r[1] > r[0]:
                tasks.append(plan.task("reduce", r))
                owner.append(p)
    found: list[dict] = [{} for _ in pieces]
    w = ex.n_workers  # Executor.run hands task i to worker i: at most one task a worker
    for at in range(0, len(tasks), w):
        results = ex.run(tasks[at:at + w], what=kernel.name, timeout=timeout, progress=None)
        for p, result in zip(owner[at:at + w], results):
            found[p].update(result)
    return [((lo, hi), tree_finish(n, f, kernel.combine))
            for (lo, hi, _, _), n, f in zip(pieces, sizes, found)]


def _scan_plan(node: _Node, kernel: Kernel, desc: list, rpc: int, n_chunks: int,
               boundscheck: bool) -> Any:
    """The local pool's plan of a scan over this node's rows on the global grid (rpc rows a
    chunk: this node's rows start on a chunk, so its chunks are the global chunks a..b-1
    that it holds, ``n_chunks`` = b - a of them, checked)."""
    backend = node.backend
    backend.executor.check_sendable(kernel)
    backend.ensure_workers()
    plan = make_plan(kernel, _local_args(node, desc), rows=None, boundary=None,
                     in_process=backend.executor.in_process, boundscheck=boundscheck)
    plan.rows_per_chunk = rpc
    if len(plan.chunks) != n_chunks:  # never: layout_of gives whole chunks to each node
        raise RuntimeError(f"kernel {kernel.name}: this node's {plan.n_rows} rows make "
                           f"{len(plan.chunks)} chunks of {rpc} rows, not its {n_chunks}")
    return plan


def _op_scan_totals(node: _Node, kernel: Kernel, desc: list, rpc: int, n_chunks: int,
                    boundscheck: bool, timeout: Any) -> list:
    """A scan's first phase on this node's chunks (the local pool's scan_totals): their
    totals, in chunk order; the parent combines every node's into the offsets."""
    plan = _scan_plan(node, kernel, desc, rpc, n_chunks, boundscheck)
    return node.backend.scan_totals(plan, timeout, node.backend.cache.take_drop())


def _op_scan_apply(node: _Node, kernel: Kernel, desc: list, rpc: int, offsets: list,
                   boundscheck: bool, timeout: Any) -> None:
    """A scan's second phase: this node's chunks, each from its offset (``offsets``: one
    per chunk of this node, from the parent's scan_offsets over every node's totals)."""
    plan = _scan_plan(node, kernel, desc, rpc, len(offsets), boundscheck)
    node.backend.scan_apply(plan, offsets, timeout)


_OPS = {"start": _op_start, "put": _op_put, "zeros": _op_zeros, "open": _op_open,
        "get": _op_get, "free": _op_free, "map": _op_map, "reduce": _op_reduce,
        "edges": _op_edges, "halo_map": _op_halo_map, "copy_rows": _op_copy_rows,
        "scan_totals": _op_scan_totals, "scan_apply": _op_scan_apply}


PLUGIN = "sharedcompute-node-pools"


def has_plugin(dask_worker: Any) -> bool:
    """Whether this worker runs NodePools already (client.run): registering it again would
    tear the running one down, closing every pool's nodes on it."""
    return PLUGIN in dask_worker.plugins


def nodes_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class NodePools(WorkerPlugin):
        """Closes this worker's node pools (and frees their blocks) when it shuts down, and
        every second those whose client went away without closing them (a thread: the
        plugin's setup may run off the worker's event loop, and a pool's stop must not hold
        that loop up)."""
        name = PLUGIN

        def setup(self, worker: Any) -> None:
            self.stop = threading.Event()

            def watch() -> None:
                while not self.stop.wait(1.0):
                    try:
                        reap_orphans(worker.data)
                    except Exception:  # a key changing under us: look again next second
                        pass
            threading.Thread(target=watch, name="sharedcompute-node-reaper",
                             daemon=True).start()

        def teardown(self, worker: Any) -> None:
            self.stop.set()
            close_all_nodes()
    return NodePools()


def free_blocks_of(pid: int) -> list[str] | None:
    """Unlink the blocks a dead process created (our tag and its pid in the name); for a
    killed Dask worker, whose resource tracker is its nanny's and lives on (the nanny
    spawned it, handing down its tracker), so nothing else would free them. None: the
    process is still there."""
    try:
        os.kill(pid, 0)
        return None  # alive (or a zombie not yet waited for): its blocks are its own
    except ProcessLookupError:
        pass
    except PermissionError:
        return None
    gone = []
    for name in list_segments():
        if creator_pid(name) == pid:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                gone.append(name)
            except OSError:
                pass
    return gone


def reaper_plugin() -> Any:
    from distributed.diagnostics.plugin import NannyPlugin
    from tornado.ioloop import PeriodicCallback

    class NodeReaper(NannyPlugin):
        """In each nanny: every second, the blocks of a worker process that died (SIGKILL,
        out of memory) are unlinked; its node pool's processes exit with it (_worker.py)."""
        name = "sharedcompute-node-reaper"

        def setup(self, nanny: Any) -> None:
            seen: set[int] = set()

            def check() -> None:
                pid = getattr(nanny.process, "pid", None) if nanny.process else None
                if pid:
                    seen.add(pid)
                for old in [p for p in seen if p != pid]:
                    if free_blocks_of(old) is not None:  # dead (not a zombie yet): done
                        seen.discard(old)
            check()  # the worker's pid now: one killed before the first tick is known too
            self.callback = PeriodicCallback(check, 1000)
            self.callback.start()

        def teardown(self, nanny: Any) -> None:
            self.callback.stop()
    return NodeReaper()
