"""What a node pool's users hold (dask_nodes.py): ``sc.DaskNodes``, the backend's
description, and ``NodeArray``, an array whose rows live on the nodes. No Dask import."""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ArrayFreedError, InputError
from .shared import ArrayShape


class DaskNodes:
    """What ``sc.Pool(backend=sc.DaskNodes(client))`` runs on: a local pool of ``per_node``
    processes (default: each Dask worker's nthreads) on every worker of ``client``'s
    cluster, holding that worker's rows of every array. ``client=None``: a new
    LocalCluster of ``nodes`` single-threaded worker processes (non-daemonic, numba and
    BLAS at one thread each), closed with the pool. ``wait_s``: how long to wait for at
    least one worker."""

    def __init__(self, client: Any = None, per_node: int | None = None, nodes: int = 2,
                 wait_s: float = 120.0):
        for name, v in (("per_node", per_node), ("nodes", nodes)):
            if v is not None and (isinstance(v, bool) or not isinstance(
                    v, (int, np.integer)) or v < 1):
                raise InputError(f"{name}={v!r} must be a positive integer")
        self.client, self.per_node, self.nodes, self.wait_s = client, per_node, nodes, wait_s

    def __repr__(self) -> str:
        return f"DaskNodes({self.client!r}, per_node={self.per_node})"


class NodeArray(ArrayShape):
    """An array spread over the nodes: rows ``split[k]`` live in node k's local pool.
    ``np.asarray`` gathers it (a copy); kernels write it in place on the nodes."""

    def __init__(self, backend: Any, aid: str, shape: tuple, dtype: np.dtype,
                 rows_per_chunk: int, chunks: tuple, split: tuple):
        self.backend: Any = backend
        self.aid, self.shape, self.dtype = aid, shape, dtype
        self.rows_per_chunk, self.chunks, self.split = rows_per_chunk, chunks, split

    @property
    def layout(self) -> tuple:
        """What two arrays must share to be used in one call: rows, grid and split."""
        return (self.shape[0], self.rows_per_chunk, self.split)

    @property
    def freed(self) -> bool:
        return self.backend is None

    def numpy(self) -> np.ndarray:
        """Gather to a new NumPy array (a copy: the rows live on the nodes)."""
        if self.backend is None:
            raise ArrayFreedError("this node array was freed")
        return self.backend.gather(self)

    def to_dask(self) -> Any:
        """A dask array of a copy of its rows now, held on the nodes' Dask workers."""
        if self.backend is None:
            raise ArrayFreedError("this node array was freed")
        return self.backend.to_dask(self)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.numpy()
        return out if dtype is None else out.astype(dtype, copy=False)

    def free(self) -> None:
        """Free its rows on every node (idempotent)."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.free_array(self.aid)

    def __repr__(self) -> str:
        return f"NodeArray(shape={self.shape}, dtype={self.dtype}, rows per node={self.split})"


__all__ = ["DaskNodes", "NodeArray"]
