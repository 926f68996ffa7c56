"""Pure row arithmetic: the fixed chunk grid, worker ranges, halo pieces and the combine tree.

Nothing here imports multiprocessing or shared memory. The chunk grid depends only on the
array (rows and bytes per row), never on the number of workers: that, plus a fixed pairwise
combine tree over chunks, is what makes reductions bitwise identical for any worker count.
"""
from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import InputError, SharedComputeError

MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024
TARGET_CHUNKS = 256
MIN_CHUNKS = 16  # the grid never depends on the worker count: 16 balance up to 16 workers
MIN_SPLIT_BYTES = 4096  # ...but no chunk under 4 KiB for that (1,000 float64: 2 chunks)
BOUNDARIES = ("none", "fixed", "reflect", "mirror", "periodic", "nearest")
UNPADDED = ("none", "fixed")  # edge rows within depth are read, never written


def chunk_rows(n_rows: int, row_nbytes: int) -> int:
    """Rows per chunk: about 1/256 of the array, clamped to 64 KiB..4 MiB (at least one row),
    yet at least MIN_CHUNKS chunks when there are that many rows, so that a small array
    under a compute-heavy kernel still keeps every worker busy (10,000 float64 rows were
    two chunks of 8,192 and 1,808 rows). Rows of zero bytes (an empty array with many
    rows): 256 chunks, never millions."""
    if row_nbytes <= 0:
        return max(1, -(-n_rows // TARGET_CHUNKS))
    total = n_rows * max(row_nbytes, 1)
    target = min(max(total // TARGET_CHUNKS, MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)
    split = max(n_rows // MIN_CHUNKS, MIN_SPLIT_BYTES // row_nbytes)  # chunks of >= 4 KiB:
    return max(1, min(target // row_nbytes, split))  # each leaf of a reduction is a call


def chunk_grid(n_rows: int, rows_per_chunk: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering [0, n_rows); an empty array has one empty chunk."""
    if n_rows == 0:
        return [(0, 0)]
    return [(s, min(s + rows_per_chunk, n_rows)) for s in range(0, n_rows, rows_per_chunk)]


def split_even(n_items: int, n_parts: int) -> list[tuple[int, int]]:
    """Split [0, n_items) into n_parts contiguous ranges whose sizes differ by at most one,
    the larger ones last: a chunk grid's short chunk is its last, so the worker holding it
    is the one to get a chunk more (1,000 rows in 167 chunks of 6, the last of 4: 2 workers
    got 504 and 496 rows, a 1.6% longer sweep for one of them each time; now 498 and 502)."""
    base, extra = divmod(n_items, n_parts)
    out, start = [], 0
    for k in range(n_parts):
        stop = start + base + (1 if k >= n_parts - extra else 0)
        out.append((start, stop))
        start = stop
    return out


# -- the fixed combine tree -----------------------------------------------------------------
def _mid(lo: int, hi: int) -> int:
    return (lo + hi) // 2


def tree_nodes(lo: int, hi: int, a: int, b: int) -> list[tuple[int, int]]:
    """Maximal nodes of the fixed binary tree over [lo, hi) that lie inside [a, b)."""
    if hi <= a or lo >= b or lo >= hi:
        return []
    if a <= lo and hi <= b:
        return [(lo, hi)]
    mid = _mid(lo, hi)
    return tree_nodes(lo, mid, a, b) + tree_nodes(mid, hi, a, b)


def tree_reduce(lo: int, hi: int, leaf: Callable[[int], object],
                combine: Callable[[object, object], object]) -> object:
    """Combine leaves lo..hi-1 along the fixed tree: the same order whoever evaluates it."""
    if hi - lo == 1:
        return leaf(lo)
    mid = _mid(lo, hi)
    return combine(tree_reduce(lo, mid, leaf, combine), tree_reduce(mid, hi, leaf, combine))


def combine_all(values: Sequence, combine: Callable[[object, object], object]) -> object:
    """Combine a list of chunk partials along the fixed tree (what any worker count gives)."""
    return tree_reduce(0, len(values), values.__getitem__, combine)


def tree_finish(n_chunks: int, nodes: dict, combine: Callable) -> object:
    """Combine node values computed by workers (keys (lo, hi)) into the root's value."""
    def value(lo: int, hi: int) -> object:
        if (lo, hi) in nodes:
            return nodes[(lo, hi)]
        mid = _mid(lo, hi)
        return combine(value(lo, mid), value(mid, hi))
    return value(0, n_chunks)


# -- halos ----------------------------------------------------------------------------------
def check_boundary(boundary: object) -> object:
    """Validate a boundary: 'none', 'fixed', 'reflect', 'mirror', 'periodic', 'nearest' or a
    number (constant). In scipy.ndimage's words: 'reflect', 'mirror', 'wrap', 'nearest', and
    'constant' with that ``cval``. 'none' and 'fixed' pad nothing: the rows within depth of
    each edge are never written; they differ only in pool.iterate, where 'none' first
    copies u's edge rows into out and 'fixed' leaves each array its own."""
    if isinstance(boundary, str):
        if boundary not in BOUNDARIES:
            raise InputError(f"boundary={boundary!r} is not one of {BOUNDARIES} or a number")
        return boundary
    if isinstance(boundary, (int, float, np.number)) and not isinstance(boundary, bool):
        return boundary
    raise InputError(f"boundary={boundary!r} must be one of {BOUNDARIES} or a number (constant)")


def valid_rows(n_rows: int, depth: int, boundary: object) -> tuple[int, int]:
    """Output rows a stencil writes: all of them, or with 'none'/'fixed' those with a full
    halo."""
    if depth == 0 or boundary not in UNPADDED:
        return 0, n_rows
    lo, hi = depth, n_rows - depth
    return (lo, hi) if hi > lo else (0, 0)


def source_row(i: int, n: int, boundary: object) -> int:
    """The row of [0, n) that padded row ``i`` (may be < 0 or >= n) reads; -1 for a constant."""
    if 0 <= i < n:
        return i
    if boundary == "periodic":
        return i % n
    if boundary == "nearest":
        return 0 if i < 0 else n - 1
    if boundary == "reflect":  # dask's 'reflect' mirrors including the edge (np.pad 'symmetric')
        period = 2 * n
        j = i % period
        return j if j < n else period - 1 - j
    if boundary == "mirror":  # about the edge row, not repeating it (np.pad 'reflect', scipy
        if n == 1:            # 'mirror')
            return 0
        period = 2 * n - 2
        j = i % period
        return j if j < n else period - j
    return -1


def halo_pieces(lo: int, hi: int, n: int, depth: int) -> list[tuple[int, int, bool]]:
    """Split output rows [lo, hi) into (start, stop, in_place) pieces.

    in_place pieces read rows [start - depth, stop + depth) straight from shared memory;
    the others (at most ``depth`` rows at each edge of the array) need a padded copy of
    ``stop - start + 2 * depth`` rows.
    """
    if hi <= lo:
        return []
    if depth == 0:
        return [(lo, hi, True)]
    cuts = sorted({lo, hi, min(max(depth, lo), hi), max(min(n - depth, hi), lo)})
    pieces = []
    for s, e in zip(cuts, cuts[1:]):
        if e > s:
            pieces.append((s, e, s - depth >= 0 and e + depth <= n))
    return pieces


def padded_rows(src: np.ndarray, start: int, stop: int, depth: int, boundary: object) -> np.ndarray:
    """Rows [start - depth, stop + depth) of ``src`` padded by ``boundary`` (a small copy)."""
    n = src.shape[0]
    idx = [source_row(i, n, boundary) for i in range(start - depth, stop + depth)]
    out = np.empty((len(idx),) + src.shape[1:], dtype=src.dtype)
    for k, j in enumerate(idx):
        out[k] = boundary if j < 0 else src[j]
    return out


def pad_whole(src: np.ndarray, depth: int, boundary: object) -> np.ndarray:
    """The whole array padded on axis 0, for single-process references (a copy)."""
    if depth == 0 or boundary in UNPADDED:
        return src
    return padded_rows(src, 0, src.shape[0], depth, boundary)


def position_value(mode: object, s: int, e: int, n: int, depth: int,
                   boundary: object) -> tuple:
    """What a kernel declared with ``position=`` receives for output rows [s, e) of n:
    True: ``(s, e, n)``; 'edges': ``(first, last)``, whether the rows begin at the first row
    the call writes and end at its last (rows 0 and n - 1, or depth and n - depth - 1 with
    'none'/'fixed'), so a kernel applies its own edge rule without row arithmetic."""
    if mode != "edges":
        return (s, e, n)
    lo, hi = valid_rows(n, depth, boundary)
    return (e > s and s == lo, e > s and e == hi)


def check_halo(name: str, params: list, halo: object) -> dict:
    """A kernel's ``halo=``: {parameter name: (before, after)} for read arguments that carry
    their own halo rows (pre-padded or staggered fields), as {index: (before, after)}."""
    if not halo:
        return {}
    if not isinstance(halo, dict):
        raise InputError(f"kernel {name}: halo={halo!r} must be a dict of parameter name -> "
                         "(rows before, rows after), e.g. halo={'in_field': (2, 2)}")
    out = {}
    for key, rows in halo.items():
        if key not in params:
            raise InputError(f"kernel {name}: halo= names {key!r}, which is not among its "
                             f"parameters {params}")
        ok = isinstance(rows, (tuple, list)) and len(rows) == 2 and all(
            isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 0
            for r in rows)
        if not ok:
            raise InputError(f"kernel {name}: halo[{key!r}]={rows!r} must be two non-negative "
                             "integers (rows before, rows after), e.g. (2, 2) for a field "
                             "padded by 2 rows on each side, (0, 1) for one more row after")
        out[params.index(key)] = (int(rows[0]), int(rows[1]))
    return out


# -- nodes of a Dask cluster (dask_nodes.py) ---------------------------------------------
def layout_of(n_rows: int, row_nbytes: int, n_nodes: int) -> tuple[int, tuple, tuple]:
    """(rows per chunk, each node's chunk range, each node's row range): the local pool's
    grid for this shape, whole chunks per node, so every node's rows start on a chunk."""
    rpc = chunk_rows(n_rows, row_nbytes)
    grid = chunk_grid(n_rows, rpc)
    chunks = tuple(split_even(len(grid), n_nodes))
    rows = tuple((grid[a][0], grid[b - 1][1]) if b > a else (n_rows, n_rows) for a, b in chunks)
    return rpc, chunks, rows


def node_halos(split: tuple, n: int, depth: int, boundary: object) -> tuple[dict, dict]:
    """Where each node's halo rows come from, nodes holding rows ``split[k]`` of n.
    Returns ({node k: (rows before, rows after, the node each halo row comes from, in order,
    -1 for a constant)}, {node j: {node k: j's own rows that k needs, in that order}}).
    'none'/'fixed' pad nothing at the array's edges: a node's halo stops at them."""
    live = [k for k, (s, e) in enumerate(split) if e > s]
    starts = [split[k][0] for k in live]
    wants: dict = {}
    layout = {}
    for k in live:
        s, e = split[k]
        before = min(depth, s) if boundary in UNPADDED else depth
        after = min(depth, n - e) if boundary in UNPADDED else depth
        owners = []
        for i in [*range(s - before, s), *range(e, e + after)]:
            src = source_row(i, n, boundary)
            j = -1 if src < 0 else live[bisect.bisect_right(starts, src) - 1]
            owners.append(j)
            if j >= 0:
                wants.setdefault(j, {}).setdefault(k, []).append(src - split[j][0])
        layout[k] = (before, after, owners)
    return layout, wants


DYNAMIC_CHUNKS = 64  # a dynamic map has at least 64 chunks per worker (map_rows): the last
# piece, one chunk, is what a worker may wait for at the end; on 2,000 uniform rows of
# ~45 ms, 16 a worker left the two finishing 0.75 ms apart (static: 0.15), 64 0.45 ms,
# and 64 with shares even in rows (map_rows) 0.04-0.11 ms
OWN_SHARE = 4  # a worker claims 1/4 of what is left of its own share at a time: on a frame
# whose top half held 90% of the work, 2 workers ran 1.73x static (bound 1.8x); 1/2 gave
# 1.61x (a first piece too big to share), 1/8 1.70x; uniform rows cost a piece each


def map_rows(n_rows: int, rows_per_chunk: int, n_workers: int, dynamic: bool) -> int:
    """Rows per chunk of a plain map, whose bits do not depend on its grid (a reduction's
    combine tree and a scan's offsets do, so they keep the default grid). Static: one chunk
    per worker, so no share is over ceil(rows / workers), the least any split can give (the
    default grid of 2,000 float64 rows is 4 chunks of 512: 2 workers got 1,024 and 976
    rows, 3 workers 1,024, 512 and 464, and 16 workers left 12 idle). Dynamic: at most
    1/(DYNAMIC_CHUNKS * workers) of the rows (on the default grid, sorted rows of growing
    cost left the last chunk 41% of the work, and no schedule can balance below a chunk),
    and of the sizes down to half that (64 at most), the largest one whose whole-chunk
    shares (the claims' start) are the most even in rows: 2,000 rows in chunks of 15 made
    shares of 1,005 and 995, and with equal speeds the workers finished 0.4 ms apart; in
    chunks of 10, 1,000 each and 0.04-0.11 ms (static: 0.06-0.2)."""
    if not dynamic:
        return max(1, -(-n_rows // n_workers))
    most = max(1, min(rows_per_chunk, n_rows // (DYNAMIC_CHUNKS * n_workers)))
    return min(range(most, max(most // 2, most - 64), -1),
               key=lambda r: _share_spread(n_rows, r, n_workers))


def _share_spread(n_rows: int, rows_per_chunk: int, n_workers: int) -> int:
    """Rows of the largest whole-chunk share (split_even) less rows of the smallest."""
    n_chunks = -(-n_rows // rows_per_chunk)
    rows = [min(b * rows_per_chunk, n_rows) - a * rows_per_chunk
            for a, b in split_even(n_chunks, n_workers)]
    return max(rows) - min(rows)


def share_bounds(n_chunks: int, n_workers: int) -> list[int]:
    """claim_piece's bounds at the start of a call: each worker's static share."""
    return [end for share in split_even(n_chunks, n_workers) for end in share]


def in_chunk_order(answers: Iterable[list], n_chunks: int, what: str) -> list:
    """A dynamic call's results in chunk order, from each worker's [(piece, result)];
    SharedComputeError unless the pieces cover [0, n_chunks) once: never a result with a
    chunk lost or run twice."""
    done = sorted((piece for answer in answers for piece in answer), key=lambda p: p[0])
    ends = [0] + [b for (_, b), _ in done]
    if [a for (a, _), _ in done] + [n_chunks] != ends:
        raise SharedComputeError(f"sharedcompute internal error: {what}: pieces lost")
    return [r for _, r in done]


def claim_piece(bounds: Any, me: int) -> tuple[int, int] | None:
    """schedule="dynamic", work stealing: the next chunks [start, stop) worker ``me`` runs;
    None when every chunk is claimed. ``bounds`` holds [front, back) per worker, the chunks
    of its share nobody has claimed yet (its static share at the start); the caller holds
    their lock. A worker takes the front 1/OWN_SHARE of what is left of its own share (at
    least one chunk); with its own share done, it steals the back half of the largest share
    left, the rows its owner would reach last. Equal rows so run as the static split does,
    each worker on its own share (one shared counter of guided pieces cost uniform rows 3%:
    the pieces interleave and the last one leaves a worker waiting), and skewed rows balance
    to a chunk. The pieces never change the chunk grid or a reduction's tree."""
    front, back = bounds[2 * me], bounds[2 * me + 1]
    if front < back:
        stop = front + max(1, (back - front) // OWN_SHARE)
        bounds[2 * me] = stop
        return front, stop
    left, victim = max((bounds[2 * w + 1] - bounds[2 * w], w) for w in range(len(bounds) // 2))
    if left <= 0:
        return None
    stop = bounds[2 * victim + 1]
    bounds[2 * victim + 1] = start = stop - max(1, left // 2)
    return start, stop
