"""Scans: a prefix operation in two phases (chunk totals, then each chunk with its offset).

The offsets are accumulated sequentially over a fixed chunk grid, so results are bitwise
the same for any number of workers (not bitwise np.cumsum for floats: the order differs).
"""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel


def _chunk_total(x):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
    return acc


def cumsum_reference(out, x):
    np.cumsum(x, axis=0, out=out)


@kernel(reference=cumsum_reference, totals=_chunk_total, identity=0.0)
def cumsum(out, x, offset):
    """Inclusive prefix sum of a 1-D array into ``out`` (the engine supplies ``offset``).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.scans import cumsum
    >>> out = np.zeros(4); _ = cumsum(out, np.arange(1.0, 5.0)); out
    array([ 1.,  3.,  6., 10.])
    """
    acc = offset
    for i in range(x.shape[0]):
        acc += x[i]
        out[i] = acc
