"""Kernels of tests/test_snapshots.py (sc.snapshot), in a module of their own so that spawn
and forkserver workers import them by name."""

import sharedcompute as sc


@sc.kernel(writes=("d",))
def fw_relax(d, dk, k):
    """Floyd-Warshall's step k on this worker's rows: dk is row k as the step began."""
    for i in range(d.shape[0]):
        x = d[i, k]
        for j in range(d.shape[1]):
            d[i, j] = min(d[i, j], x + dk[j])


@sc.kernel(writes=("a",))
def add_row(a, s):
    """a[i] += s for every row (the snapshotted row itself included)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] += s[j]


@sc.kernel(writes=("a",))
def add_rows(a, s):
    """a[i] += s[0], then s[1], ... (s: a snapshot of several rows)."""
    for i in range(a.shape[0]):
        for m in range(s.shape[0]):
            for j in range(a.shape[1]):
                a[i, j] += s[m, j]


@sc.kernel(writes=("out",))
def plus_row(out, a, s):
    """out[i] = a[i] + s."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i, j] + s[j]


@sc.kernel(writes=("a",))
def add_row_fail_at(a, s, t, bad):
    """add_row, raising at step ``bad`` in the worker holding row 0."""
    if t == bad and a.shape[0] > 0:
        raise ValueError("bad step")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] += s[j]


@sc.kernel(writes=("b",), combine=max)
def half_and_max(b, a):
    """b = a / 2; returns the largest b (a fused kernel: a program's residual)."""
    m = 0.0
    for i in range(b.shape[0]):
        for j in range(b.shape[1]):
            b[i, j] = a[i, j] / 2
            m = max(m, b[i, j])
    return m
