"""Kernels for test_trust.py (importable by name in spawn/forkserver workers)."""
import numpy as np

import sharedcompute as sc


@sc.kernel
def copy_rows(out, x):
    """out = x, row by row (not declared elementwise: any overlap is refused)."""
    for i in range(out.shape[0]):
        out[i] = x[i]


@sc.kernel(elementwise=True)
def double_inplace_ok(out, x):
    """out = 2 x; declared elementwise, so out may be x itself."""
    for i in range(out.shape[0]):
        out[i] = 2.0 * x[i]


@sc.kernel(whole=("b",))
def row_times_whole(out, a, b):
    """out[i, j] = sum_k a[i, k] b[k, j] (b whole): a matmul that aliasing can break."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            acc = 0.0
            for k in range(a.shape[1]):
                acc += a[i, k] * b[k, j]
            out[i, j] = acc


@sc.kernel
def lookup(out, idx, table):
    """out[i] = table[idx[i]]: ``table`` must reach every partition whole."""
    for i in range(out.shape[0]):
        out[i] = table[idx[i]]


@sc.kernel
def poly(out, x, coeffs):
    """out = c0 + c1 x + c2 x^2 + ... with a small plain coefficient array."""
    for i in range(out.shape[0]):
        acc = 0.0
        for k in range(coeffs.shape[0] - 1, -1, -1):
            acc = acc * x[i] + coeffs[k]
        out[i] = acc


@sc.kernel
def scale_into_input(out, x):
    """Writes x, which it does not declare in writes=: must fail everywhere."""
    for i in range(x.shape[0]):
        x[i] = 2.0 * x[i]
        out[i] = x[i]


@sc.kernel(writes=("out", "x"))
def scale_into_input_declared(out, x):
    """The same kernel following the error's advice: writes=('out', 'x')."""
    for i in range(x.shape[0]):
        x[i] = 2.0 * x[i]
        out[i] = x[i]


@sc.kernel(depth=1, boundary="reflect")
def overreach_at_edges(out, u):
    """A stencil that reads 3 rows past its halo, but only in a call of one row: the padded
    calls of the array's edge rows."""
    for i in range(out.shape[0]):
        out[i] = u[i + 1] + (u[i + 4] if out.shape[0] == 1 else 0.0)


@sc.kernel
def forward_diff_no_depth(out, x):
    """out[i] = x[i+1] - x[i] without declaring depth=: reads past its rows."""
    for i in range(out.shape[0]):
        out[i] = x[i + 1] - x[i]


@sc.kernel(depth=1, boundary="nearest")
def forward_diff(out, x):
    """The same, with the halo declared: x carries one extra row on each side."""
    for i in range(out.shape[0]):
        out[i] = x[i + 2] - x[i + 1]


@sc.kernel(combine=np.add)
def plain_sum(x):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
    return acc


@sc.kernel
def count_positive_map(out, x):
    """Returns a count from a map kernel: map would drop it, so it is an error."""
    n = 0
    for i in range(x.shape[0]):
        out[i] = x[i]
        if x[i] > 0:
            n += 1
    return n


@sc.kernel(combine=np.add)
def count_positive(x):
    """The advice followed: a reduction whose partials are combined."""
    n = 0
    for i in range(x.shape[0]):
        if x[i] > 0:
            n += 1
    return n


@sc.kernel(depth=1, boundary=0.0)
def smooth_into_input(out, u):
    """A 3-point stencil that also writes its input u, undeclared: refused on every piece,
    the padded copies at the array's edges included."""
    for i in range(out.shape[0]):
        out[i] = u[i] + u[i + 1] + u[i + 2]
        u[i + 1] = 0.0


@sc.kernel(depth=1, boundary=0.0)
def smooth(out, u):
    """smooth_into_input as the refusal advises: the new values into out only."""
    for i in range(out.shape[0]):
        out[i] = u[i] + u[i + 1] + u[i + 2]
