"""A pool on every node of a Dask cluster: ``sc.Pool(backend=sc.DaskNodes(client))``.

Each Dask worker stands for a node. It holds a local pool (LocalBackend, ``per_node``
processes) and its contiguous rows of every array in that pool's SharedArrays, for as long
as the parent's pool lives; kernels run in place there, exactly as on a local pool. The
parent sends one Dask task per node per call (pinned to that worker), never one per chunk;
what crosses the network is the call itself, arrays in and out, and reductions' tree-node
values. Arrays are split at creation: the array's own chunk grid (partition.chunk_rows, the
local pool's), whole chunks per node (split_even), so every node's rows start on a chunk
boundary. A reduction's node computes the values of the fixed combine tree's maximal nodes
inside its chunks (a local pool's tree over a tree node's chunks is that node's subtree)
and the parent finishes the tree (partition.tree_finish): bitwise the local pool's value.
A scan is the local pool's two phases, two tasks per node holding chunks: each node's
local pool computes its chunks' totals (LocalBackend.scan_totals, on the global grid) and
sends them; the parent concatenates them in node order, which is chunk order, takes every
chunk's offset with the local pool's plan.scan_offsets, and sends each node its chunks'
offsets, from which its local pool scans them (LocalBackend.scan_apply): bitwise the local
pool's result.

Stencils (depth <= GHOST): each node keeps GHOST spare rows on either side of its rows;
a halo map first runs an "edges" task on every node holding rows another node needs
(partition.source_row, the local pool's padding rules), whose result is passed to that
node's map task as a Dask future, so the halo rows go from worker to worker and never
through the parent; the node's local pool then maps its rows with their ghost rows as one
array under boundary 'none'. iterate submits all the sweeps between two residual checks at
once: each node's task of a block of sweeps returns the edge rows its neighbours need for
the next (no round trip to the parent between blocks); under 'none'/'fixed' a block is
GHOST // depth sweeps with halos that deep, run as one iterate of the node's local pool
(its cache-tiled blocks), else one sweep.

Not yet here (refused with InputError naming what works instead, today's
``backend=client``): reductions with halos, sweeps returning their residual,
partial=True, kernels with ``position=``, a node array passed whole, arrays whose rows are
spread differently (different rows or bytes per row); a scan with ``schedule='dynamic'``
is refused as on a local pool.

The node side (what runs in each Dask worker) is _dask_node.py.
"""
from __future__ import annotations

import os
import time
import uuid
import weakref
from typing import Any

import numpy as np

from .dask_backend import ClusterCalls
from ._dask_node import (GHOST, has_plugin, local_cluster, node_run, nodes_plugin,
                         reaper_plugin)
from ._iterate.plan import fixed_edge_rows, plan_iterate, swap
from .progress import Insights
from .iterate_result import IterateResult
from ._node_array import DaskNodes, NodeArray
from .errors import ArrayFreedError, InputError, KernelTimeoutError, NodeLostError
from .kernel import Kernel
from .partition import UNPADDED, layout_of, node_halos, tree_finish, tree_nodes
from .plan import Plan, check_kind, make_plan, scan_offsets
from .shared import check_dtype, native_array

POLL_S = 0.5  # how often a waiting call checks that its nodes are still in the cluster
INSTEAD = "use backend=client (today's Dask backend) for it"


# -- the parent side -----------------------------------------------------------------------------
class NodesBackend(ClusterCalls):
    """Pool calls on a local pool per Dask worker; see the module docstring. Implements the
    Backend protocol (local.py), refusing with InputError what it does not run yet."""

    array_types = (NodeArray,)
    start_method = "dask-nodes"

    def __init__(self, spec: DaskNodes):
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise InputError("sc.DaskNodes needs dask and distributed: "
                             'pip install "sharedcompute[dask]"') from exc
        client, self.own = (spec.client, None) if spec.client is not None else \
            local_cluster(spec.nodes)
        self.client = client
        try:
            client.wait_for_workers(1 if self.own is None else spec.nodes, timeout=spec.wait_s)
        except Exception as exc:  # distributed's TimeoutError
            self.close_cluster()
            raise InputError(f"the Dask cluster has no workers after {spec.wait_s:g} s") from exc
        info = self.workers_now(info=True)
        self.nodes = sorted(info)  # node k holds the k-th row block of every array
        self.per_node = [spec.per_node or int(info[a].get("nthreads", 1)) for a in self.nodes]
        self.n_workers = sum(self.per_node)
        self.bid = uuid.uuid4().hex
        self.lost: str | None = None
        self.closed = False
        self.arrays: "weakref.WeakValueDictionary[str, NodeArray]" = weakref.WeakValueDictionary()
        self.pids: list[int] = []
        self.leases: list = []
        if not all(client.run(has_plugin).values()):  # never twice: see has_plugin
            client.register_plugin(nodes_plugin())
            try:
                client.register_plugin(reaper_plugin())
            except Exception:  # workers started without nannies: none to reap a killed one
                pass

    def workers_now(self, info: bool = False) -> Any:
        """The cluster's workers, asked of the scheduler now (client.scheduler_info() may
        answer with a background refresh's copy, which lists none)."""
        found = self.client.sync(self.client.scheduler.identity, n_workers=-1)["workers"]
        return found if info else set(found)

    # -- messages ------------------------------------------------------------------------------
    def _submit(self, k: int, op: str, *args: Any) -> tuple[int, Any]:
        """One task on node k (pinned to its worker): (k, its future)."""
        if self.lost is not None:
            raise NodeLostError(f"node {self.lost} was lost earlier: its rows of every array "
                                "are gone; close this pool and start a new one", self.lost)
        return k, self.client.submit(node_run, self.bid, self.per_node[k], op, *args,
                                     workers=[self.nodes[k]], allow_other_workers=False,
                                     pure=False, key=f"sc-node-{op}-{uuid.uuid4().hex}")

    def _send(self, calls: list[tuple[int, str, tuple]], what: str, timeout: Any = None) -> list:
        """One task per (node, op, args), pinned to that node's worker; their results."""
        return self._wait([self._submit(k, op, *args) for k, op, args in calls], what, timeout)

    def _wait(self, pairs: list[tuple[int, Any]], what: str, timeout: Any = None,
              fetch: bool = True) -> list:
        """Wait for the (node, future) pairs; raise the first failure; their results if
        ``fetch``. A node that leaves the cluster meanwhile raises NodeLostError naming it."""
        from distributed import wait
        futures = [f for _, f in pairs]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                wait(futures, timeout=POLL_S)
                break
            except Exception:  # distributed's TimeoutError: check the nodes, then wait on
                pass
            here = self.workers_now()
            gone = [self.nodes[k] for k, f in pairs if not f.done() and self.nodes[k] not in here]
            if gone or (deadline is not None and time.monotonic() > deadline):
                for f in futures:
                    f.cancel()
                if gone:
                    self.lost = gone[0]
                    raise NodeLostError(f"node {gone[0]} (a Dask worker) left the cluster "
                                        f"during {what}: its rows of every array are lost; "
                                        "close this pool (the other nodes' pools are freed) "
                                        "and start a new one", gone[0])
                raise KernelTimeoutError(f"{what} did not finish within timeout={timeout} s "
                                         "on the Dask nodes; its tasks were cancelled")
        for k, f in pairs:
            if f.status == "error":
                exc = f.exception()
                exc.add_note(f"(on node {self.nodes[k]})")
                raise exc
        return self.client.gather(futures) if fetch else []

    def start(self) -> None:
        """Start every node's pool now, so a daemonic worker refuses at sc.Pool(...)."""
        # a lease per node: a small value held there for this client, gone with the client
        self.leases = [self.client.scatter(self.bid, workers=[a], hash=False)
                       for a in self.nodes]
        found = self._send([(k, "start", (self.leases[k].key,)) for k in range(len(self.nodes))],
                           "start")
        self.pids = [p for pids in found for p in pids]

    # -- arrays ----------------------------------------------------------------------------------
    def _new(self, shape: tuple, dtype: np.dtype) -> NodeArray:
        if not shape:
            raise InputError("a node pool splits rows: a 0-d array has none (pass it as a "
                             "value)")
        row_nbytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        rpc, chunks, split = layout_of(shape[0], row_nbytes, len(self.nodes))
        arr = NodeArray(self, uuid.uuid4().hex, tuple(shape), dtype, rpc, chunks, split)
        self.arrays[arr.aid] = arr
        return arr

    def array(self, x: Any) -> NodeArray:
        """A node array of ``x``'s values: a NumPy array (each node's rows scattered to it)
        or a dask array (each node computes its own rows, from wherever their inputs are)."""
        if type(x).__module__.startswith("dask.array"):
            return self._from_dask(x)
        src = native_array(x)
        arr = self._new(src.shape, src.dtype)
        calls = []
        for k, (s, e) in enumerate(arr.split):
            rows = self.client.scatter(src[s:e], workers=[self.nodes[k]], hash=False)
            calls.append((k, "put", (arr.aid, rows)))
        self._send(calls, "array")
        return arr

    def _from_dask(self, x: Any) -> NodeArray:
        if not x.ndim or any(np.isnan(c) for c in x.shape):
            raise InputError(f"a dask array of shape {x.shape}: a node pool needs rows of "
                             "known count (x.compute_chunk_sizes() first)")
        if x.dtype.kind in "biufc" and not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        arr = self._new(tuple(int(v) for v in x.shape), check_dtype(x.dtype))
        self._send([(k, "put", (arr.aid, self.client.compute(x[s:e], workers=[self.nodes[k]])))
                    for k, (s, e) in enumerate(arr.split)], "array")
        return arr

    def to_dask(self, arr: NodeArray) -> Any:
        """A dask array of a copy of the rows now, held by the nodes' Dask workers (never
        through this process)."""
        import dask
        import dask.array as da
        blocks = [da.from_delayed(dask.delayed(self._submit(k, "get", arr.aid)[1]),
                                  shape=(e - s,) + arr.shape[1:], dtype=arr.dtype)
                  for k, (s, e) in enumerate(arr.split) if e > s]
        return da.concatenate(blocks, axis=0) if blocks else da.zeros(arr.shape, arr.dtype)

    def zeros(self, shape: Any, dtype: Any = np.float64) -> NodeArray:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        arr = self._new(shape, check_dtype(dtype))
        self._send([(k, "zeros", (arr.aid, (e - s,) + shape[1:], arr.dtype))
                    for k, (s, e) in enumerate(arr.split)], "zeros")
        return arr

    empty = zeros  # a node's rows are made zeroed

    def open(self, path: Any, mode: str = "r", shape: Any = None, dtype: Any = None) -> NodeArray:
        """A .npy file of which each node reads its own rows (into its local pool's memory;
        nothing passes through the parent). mode 'r' only: results are saved with
        np.save(path, np.asarray(result))."""
        if mode != "r" or shape is not None or dtype is not None:
            raise InputError(f"mode={mode!r}: a node pool reads .npy files (mode='r', shape "
                             "and dtype from the header); save results with "
                             "np.save(path, np.asarray(result))")
        path = os.path.abspath(os.fspath(path))
        m = np.load(path, mmap_mode="r")  # the header, here: each node must see the file
        arr = self._new(tuple(m.shape), check_dtype(m.dtype))
        self._send([(k, "open", (arr.aid, path, s, e)) for k, (s, e) in enumerate(arr.split)],
                   "open")
        return arr

    load = open  # a .npy file, read by the nodes

    def gather(self, arr: NodeArray) -> np.ndarray:
        parts = self._send([(k, "get", (arr.aid,)) for k in range(len(self.nodes))], "numpy")
        return np.concatenate(parts, axis=0) if parts else np.zeros(arr.shape, arr.dtype)

    def free_array(self, aid: str) -> None:
        self.arrays.pop(aid, None)
        if self.lost is None and not self.closed:
            self._send([(k, "free", (aid,)) for k in range(len(self.nodes))], "free")

    # -- calls -----------------------------------------------------------------------------------
    def _plan(self, kernel: Kernel, args: tuple, rows: Any, boundary: Any, chunk_rows: Any,
              depth: Any, op: str) -> tuple[Plan, list, NodeArray]:
        """The parent's plan (checks, grid) and each argument as the nodes see it."""
        plan = make_plan(kernel, args, rows=rows, boundary=boundary, in_process=True,
                         array_types=(NodeArray,), chunk_rows_override=chunk_rows,
                         shared_ok=False, depth=depth)
        return (plan, *self._describe(plan, op))

    def _describe(self, plan: Plan, op: str) -> tuple[list, NodeArray]:
        """Each argument as the nodes see it, and the first node array (its layout)."""
        kernel = plan.kernel
        if plan.depth > GHOST or kernel.position:
            what = f"a halo deeper than {GHOST} rows" if plan.depth > GHOST else "position="
            raise InputError(f"kernel {kernel.name}: {what} does not run on a node pool yet; "
                             f"{INSTEAD}")
        desc, parts = [], []
        for spec in plan.specs:
            if spec.kind == "part" and not spec.halo and isinstance(spec.value, NodeArray):
                if spec.value.freed:
                    raise ArrayFreedError(f"kernel {kernel.name}: an argument was freed")
                desc.append(("part", spec.value.aid))
                parts.append(spec.value)
            elif spec.kind in ("value", "whole") and not isinstance(spec.value, NodeArray):
                desc.append(("value", spec.value))
            else:
                raise InputError(f"kernel {kernel.name}: a node array passed whole or with "
                                 f"halo= does not run on a node pool yet; {INSTEAD}")
        if not parts or any(p.backend is not self for p in parts):
            raise InputError(f"kernel {kernel.name}: a node pool call needs this pool's node "
                             "arrays (pool.array, pool.zeros) to split")
        if len({p.layout for p in parts}) > 1:
            raise InputError(f"kernel {kernel.name}: its arrays' rows are spread over the nodes "
                             "differently (different rows or bytes per row); make them alike, "
                             f"or {INSTEAD}")
        if (op == "reduce" or kernel.kind == "scan") and \
                plan.rows_per_chunk != parts[0].rows_per_chunk:
            raise InputError(f"kernel {kernel.name}: chunk_rows={plan.rows_per_chunk} does not "
                             f"fit the arrays' grid of {parts[0].rows_per_chunk} rows a chunk, "
                             f"by which they are spread over the nodes; leave chunk_rows out, "
                             f"or {INSTEAD}")
        return desc, parts[0]

    def map(self, kernel: Kernel, args: tuple, rows: Any = None, boundary: Any = None,
            timeout: Any = None, progress: Any = None, chunk_rows: Any = None,
            boundscheck: bool = False, depth: Any = None, schedule: Any = None,
            partial: bool = False) -> Any:
        """One message per node holding rows: its local pool maps them in place."""
        check_kind(kernel, "partial" if partial else "map")
        if partial:
            raise InputError(f"kernel {kernel.name}: map(..., partial=True) does not run on a "
                             "node pool yet; call pool.map, then pool.reduce")
        if kernel.kind == "scan" and schedule == "dynamic":  # as the local pool refuses it
            raise InputError(f"kernel {kernel.name} is a scan, whose chunks depend on the ones "
                             "before them; it runs with schedule='static' only")
        plan, desc, first = self._plan(kernel, args, rows, boundary, chunk_rows, depth, "map")
        run = self._run_scan if kernel.kind == "scan" else self._run_map
        run(plan, desc, first, boundscheck, timeout)
        return plan.written()

    def _run_scan(self, plan: Plan, desc: list, first: NodeArray, boundscheck: bool,
                  timeout: Any) -> None:
        """Two tasks per node holding chunks, as the local pool's two phases: each node's
        per-chunk totals; here every chunk's offset from all of them in chunk order (the
        local pool's scan_offsets); then each node scans its chunks from their offsets."""
        kernel, rpc = plan.kernel, plan.rows_per_chunk
        held = [(k, a, b) for k, (a, b) in enumerate(first.chunks) if b > a]
        totals = [t for part in self._send([(k, "scan_totals", (
            kernel, desc, rpc, b - a, boundscheck, timeout)) for k, a, b in held],
            kernel.name, timeout) for t in part]
        offsets = scan_offsets(kernel, totals)
        self._send([(k, "scan_apply", (kernel, desc, rpc, offsets[a:b], boundscheck, timeout))
                    for k, a, b in held], kernel.name, timeout)

    def _run_map(self, plan: Plan, desc: list, first: NodeArray, boundscheck: bool,
                 timeout: Any) -> None:
        """A planned map: one task per node (a stencil: see _run_sweeps)."""
        if plan.depth:
            self._run_sweeps(plan, [(desc, self._reads(plan, desc))], first, boundscheck,
                             timeout)
            return
        self._send([(k, "map", (plan.kernel, desc, boundscheck, timeout))
                    for k, (s, e) in enumerate(first.split) if e > s], plan.kernel.name, timeout)

    @staticmethod
    def _reads(plan: Plan, desc: list) -> list:
        return [aid for (kind, aid), spec in zip(desc, plan.specs)
                if kind == "part" and not spec.writable]

    def _run_sweeps(self, plan: Plan, sweeps: list, first: NodeArray, boundscheck: bool,
                    timeout: Any, block_sweeps: int | None = None) -> int:
        """Halo maps in a row, ``sweeps`` [(desc, read array ids)], all submitted at once,
        in blocks of B (boundary 'none' or 'fixed': as many as the ghost rows hold, at most
        ``block_sweeps``; else 1): an "edges" task on every node holding rows another node
        needs for the first block, and each node's task of a block returns its edge rows for
        the next one; Dask hands them from worker to worker as each task's inputs (the
        parent never holds them, nor waits between blocks). A node only ever writes its own
        rows and ghost rows. Returns B."""
        kernel, d, bnd = plan.kernel, plan.depth, plan.boundary
        per = min(max(1, GHOST // d), len(sweeps), block_sweeps or GHOST) \
            if bnd in UNPADDED else 1
        if per > 1:  # a block reads the written array's ghost rows too (the array's fixed
            # edge rows among them, never written): fill both arrays' ghost rows
            sweeps = [(desc, [aid for kind, aid in desc if kind == "part"])
                      for desc, _ in sweeps]
        blocks = [sweeps[i:i + per] for i in range(0, len(sweeps), per)]
        layout, wants = node_halos(first.split, plan.n_rows, per * d, bnd)
        live = list(layout)
        constant = None if isinstance(bnd, str) else bnd
        edges = {j: self._submit(j, "edges", sweeps[0][1], w) for j, w in wants.items()}
        pairs = list(edges.values())
        last = {k: None for k in live}  # each node's previous task: its writes come first
        for t, block in enumerate(blocks):
            following = blocks[t + 1][0][1] if t + 1 < len(blocks) else None
            # the block's first sweep and its length: the node's iterate swaps as ours did
            done = {k: self._submit(k, "halo_map", kernel, block[0][0], len(block),
                                    block[0][1], d, k, before, after, owners, constant,
                                    boundscheck, timeout, block_sweeps,
                                    {j: edges[j][1] for j in set(owners) if j >= 0},
                                    following, wants.get(k, {}),
                                    None if last[k] is None else last[k][1])
                    for k, (before, after, owners) in layout.items()}
            pairs += done.values()
            last = edges = done
        self._wait(pairs, kernel.name, timeout, fetch=False)
        return per

    def reduce(self, kernel: Kernel, args: tuple, rows: Any = None, timeout: Any = None,
               progress: Any = None, chunk_rows: Any = None, boundscheck: bool = False,
               schedule: Any = None) -> Any:
        """Each node sends the values of the fixed tree's maximal nodes inside its chunks;
        the tree is finished here, as the local pool's (partition.tree_finish)."""
        check_kind(kernel, "reduce")
        plan, desc, first = self._plan(kernel, args, rows, None, chunk_rows, None, "reduce")
        if plan.depth:
            raise InputError(f"kernel {kernel.name}: a reduction with a halo (depth > 0) does "
                             f"not run on a node pool yet; {INSTEAD}")
        value = self._tree_value(plan, desc, first, boundscheck, timeout)
        return kernel.finalize(value) if kernel.finalize is not None else value

    def _tree_value(self, plan: Plan, desc: list, first: NodeArray, boundscheck: bool,
                    timeout: Any) -> Any:
        """A planned reduction's value before ``finalize``: the fixed tree's root."""
        kernel = plan.kernel
        grid, n_chunks, calls = plan.chunks, len(plan.chunks), []
        for k, (a, b) in enumerate(first.chunks):
            s0 = first.split[k][0]
            pieces = [(lo, hi, grid[lo][0] - s0, grid[hi - 1][1] - s0)
                      for lo, hi in tree_nodes(0, n_chunks, a, b)]
            if pieces:
                calls.append((k, "reduce", (kernel, desc, pieces, plan.rows_per_chunk,
                                            boundscheck, timeout)))
        nodes: dict = {}
        for found in self._send(calls, kernel.name, timeout):
            nodes.update(found)
        return tree_finish(n_chunks, nodes, kernel.combine)

    def iterate(self, kernel: Kernel, args: tuple, *, steps: int, residual: Kernel | None,
                tol: Any, check_every: int, boundary: Any = None, timeout: Any = None,
                progress: Any = False, boundscheck: bool = False, depth: Any = None,
                info: bool = False, block_sweeps: Any = None, chunk_rows: Any = None) -> Any:
        """Blocks of sweeps between halo exchanges (edges fetched node to node; each node's
        block is one local iterate), with the local pool's checks and plan
        (_iterate/plan.py); the sweeps between two residual checks are submitted at once
        (_run_sweeps). ``block_sweeps``: at most that many sweeps per exchange and per
        local block."""
        block_sweeps, tol = self.check_iterate(kernel, residual, tol, block_sweeps,
                                               "a node pool")
        plan = make_plan(kernel, args, rows=None, boundary=boundary, in_process=True,
                         array_types=(NodeArray,), chunk_rows_override=chunk_rows,
                         shared_ok=False, depth=depth)
        it = plan_iterate(plan, steps, residual, tol, check_every, block_sweeps,
                          self.n_workers, can_block=False)
        (out_i, in_i), specs = it.swap, plan.specs
        desc, first = self._describe(plan, "map")
        fixed = fixed_edge_rows(plan)  # never written: held fixed in both arrays
        calls = []
        for k, (s, e) in enumerate(first.split):
            local = [(max(a, s) - s, min(b, e) - s) for a, b in fixed if min(b, e) > max(a, s)]
            if local:
                calls.append((k, "copy_rows", (specs[in_i].value.aid, specs[out_i].value.aid,
                                               local)))
        self._send(calls, kernel.name, timeout)
        sweeps, pairs = [], []
        for _ in range(it.steps):
            desc = self._describe(plan, "map")[0]
            sweeps.append((desc, self._reads(plan, desc)))
            pairs.append((specs[out_i].value, specs[in_i].value))
            swap(specs, out_i, in_i)
        done, value, per = 0, None, 1  # per: the most sweeps run between two exchanges
        every = check_every if residual is not None else max(len(sweeps), 1)
        while done < len(sweeps):
            block = sweeps[done:done + every]
            if plan.depth:
                per = max(per, self._run_sweeps(plan, block, first, boundscheck, timeout,
                                                block_sweeps))
            else:  # no halo: plain maps, one call each
                for desc, _ in block:
                    self._run_map(plan, desc, first, boundscheck, timeout)
            done += len(block)
            if residual is not None and done % check_every == 0:
                value = self._residual(residual, pairs[done - 1], chunk_rows, boundscheck,
                                       timeout)
                if value <= tol:
                    break
        last = it.result(done, value, False)
        return IterateResult(last, done, value, per) if info else last

    def _residual(self, residual: Kernel, arrays: tuple, chunk_rows: Any, boundscheck: bool,
                  timeout: Any) -> float:
        """iterate's residual of (out, u), as _iterate/plan.residual_value: per-chunk
        partials as float64 along the fixed tree. The nodes combine raw partials, which is
        that only when they are float64 already: anything else is refused."""
        plan, desc, first = self._plan(residual, arrays, None, None, chunk_rows, None,
                                       "reduce")
        value = self._tree_value(plan, desc, first, boundscheck, timeout)
        if not isinstance(value, (float, np.float64)):
            raise InputError(f"residual {residual.name} gives {type(value).__name__} "
                             "partials; a node pool combines float64 ones only (bitwise "
                             f"the local pool's); {INSTEAD}")
        return float(value)

    def block_released(self, name: str) -> None:
        """Nothing to forget: the nodes never map this process's blocks."""

    def insights(self) -> Any:
        return Insights()

    def interrupt(self) -> None:
        """Pool.close from another thread: the running call is waited for."""

    def forget_after_fork(self) -> None:
        """A forked child holds no nodes of its own: nothing to let go of."""

    def close(self) -> None:
        """Close every node's pool and free its blocks (a lost node's worker is gone, and
        with it its blocks' owner: its plugin teardown or resource tracker frees them)."""
        if self.closed:
            return
        for arr in list(self.arrays.values()):
            arr.backend = None
        self.closed = True
        if self.client.status != "running":  # the client is gone: the lease reaps the nodes
            self.close_cluster()
            return
        here = self.workers_now()
        live = [k for k, a in enumerate(self.nodes) if a in here]
        lost, self.lost = self.lost, None
        try:
            self._send([(k, "close", ()) for k in live], "close", timeout=60)
        finally:
            self.lost = lost
            self.leases = []  # released: nothing left to reap
            self.close_cluster()

    def close_cluster(self) -> None:
        """Close the LocalCluster made for this pool (client=None), if any."""
        if self.own is not None:
            self.client.close()
            self.own.close()
            self.own = None


__all__ = ["DaskNodes", "NodeArray", "NodesBackend"]
