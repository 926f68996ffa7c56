"""Task functions and plain-function (jit=False) kernels for the tests; a real module so that
spawn and forkserver workers can import them by name."""
import os
import signal
import time

import numba
import numpy as np
from scipy import ndimage

import sharedcompute as sc


# -- task functions ----------------------------------------------------------------------------
def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def fill_row(out, i, value):
    """A task that writes its own row of a shared output."""
    out[i] = value
    return i


def row_sum(x, i):
    return float(np.asarray(x)[i].sum())


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


def fail_at_50(x):
    return fail_on(x, 50)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable cannot be pickled")


def unpicklable_result(x):
    return Unpicklable()


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def touch_slowly(x, seconds):
    time.sleep(seconds)
    return float(np.asarray(x)[:1].sum())


def die_if(x, bad):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def worker_pid(_=None):
    return os.getpid()


# -- plain-function kernels ----------------------------------------------------------------------
WEIGHTS = np.arange(1.0, 28.0).reshape(3, 3, 3) / 378.0
SCIPY_MODES = {"reflect": "reflect", "mirror": "mirror", "periodic": "wrap",
               "nearest": "nearest", 0.0: "constant", 2.5: "constant"}


def _scipy_mode(boundary):
    return SCIPY_MODES.get(boundary, "constant")


@sc.kernel(jit=False, depth=1, boundary="reflect")
def convolve3d(out, vol, boundary):
    """scipy.ndimage.convolve over a block with one halo row on each side of axis 0: the
    interior rows are exactly those of the whole-array call."""
    cval = boundary if not isinstance(boundary, str) else 0.0
    full = ndimage.convolve(vol, WEIGHTS, mode=_scipy_mode(boundary), cval=cval)
    out[:] = full[1:full.shape[0] - 1]


@sc.kernel(jit=False, depth=2, boundary="reflect")
def box_filter(out, vol, size):
    """scipy's uniform_filter (running sums along each axis) on a halo'd block."""
    d = (vol.shape[0] - out.shape[0]) // 2
    full = ndimage.uniform_filter(vol, size, mode="reflect")
    out[:] = full[d:full.shape[0] - d]


@sc.kernel(jit=False, depth=0, boundary="none")
def rolling_mean(out, x, width):
    """A centred rolling mean whose halo depth is given per call (depth=width // 2)."""
    k = np.ones(width) / width
    for j in range(out.shape[0]):
        out[j] = np.dot(x[j:j + width], k)


def _moments_combine(p, q):
    return (p[0] + q[0], p[1] + q[1], min(p[2], q[2]), max(p[3], q[3]))


@sc.kernel(jit=False, combine=_moments_combine)
def numpy_moments(x):
    """A NumPy reduction with tuple partials: (count, sum, min, max)."""
    if x.size == 0:
        return (0, 0.0, np.inf, -np.inf)
    return (x.size, float(np.sum(x, dtype=np.float64)), float(np.min(x)), float(np.max(x)))


def rescale_rows_reference(out, img):
    lo = img.min(axis=1, keepdims=True)
    span = np.ptp(img, axis=1, keepdims=True)
    out[...] = (img - lo) / np.where(span == 0, 1, span)


@sc.kernel(jit=False, reference=rescale_rows_reference)
def rescale_rows(out, img):
    """A scikit-image-style call per block of rows: exposure.rescale_intensity per row."""
    from skimage import exposure  # test-only: the tests skip where it is not installed
    for j in range(img.shape[0]):
        out[j] = exposure.rescale_intensity(img[j], out_range=(0.0, 1.0))


@sc.kernel(jit=False)
def plain_writes_undeclared(out, x):
    x[:] = 1.0  # x is not in writes=: a read-only view


@sc.kernel(jit=False, writes=("out", "x"))
def plain_writes_declared(out, x):
    x[:] = 2.0
    out[:] = x


@sc.kernel(jit=False)
def plain_raises(out, x):
    raise ZeroDivisionError("plain kernel failed on purpose")


@sc.kernel(jit=False)
def plain_sleep(out, x, seconds):
    time.sleep(seconds)
    out[:] = x


# -- dynamic schedule --------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _escape(c_re, c_im, max_iter):
    z_re = z_im = 0.0
    for k in range(max_iter):
        z_re, z_im = z_re * z_re - z_im * z_im + c_re, 2.0 * z_re * z_im + c_im
        if z_re * z_re + z_im * z_im > 4.0:
            return k
    return max_iter


@sc.kernel(position=True)
def uneven_rows(out, max_iter, pos):
    """Mandelbrot rows: their cost differs tenfold and more across the frame."""
    start, stop, total = pos
    width = out.shape[1]
    for i in range(out.shape[0]):
        im = -1.2 + 2.4 * (start + i) / max(total, 1)
        for j in range(width):
            out[i, j] = _escape(-2.0 + 2.6 * j / width, im, max_iter)


def _sum_combine(a, b):
    return a + b


@sc.kernel(combine=_sum_combine)
def float_sum(x):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
    return acc


@sc.kernel(combine=_sum_combine, schedule="dynamic")
def float_sum_dynamic(x):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i]
    return acc


@sc.kernel
def slow_rows(out, x, seconds):
    for i in range(out.shape[0]):
        out[i] = x[i]
    if seconds > 0:
        with numba.objmode():
            time.sleep(seconds)


def sum_nested(obj, seconds=0.0):
    """The sum of every array inside lists, tuples and dicts (after ``seconds`` of sleep)."""
    time.sleep(seconds)
    if isinstance(obj, dict):
        return sum(sum_nested(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(sum_nested(v) for v in obj)
    return float(np.asarray(obj).sum())


import threading  # noqa: E402

_LOCK = threading.Lock()  # each worker has its own: this module travels by name


def locked_square(x):
    """Reads a module-level lock: fine by name, unpicklable by value."""
    with _LOCK:
        return x * x


@sc.kernel(jit=False, position=True)
def count_runs(out, pos):
    """Each row: column 0 counts the kernel calls that ran it, column 1 the first row of
    the last call (a dynamic map's piece): a piece run twice, or lost, shows."""
    out[:, 0] += 1
    out[:, 1] = pos[0]


@sc.kernel(writes=("y",))
def add_scaled(y, x, a):
    """y += a * x: a row run twice, or with a stale a, shows in the result."""
    for i in range(y.shape[0]):
        y[i] += a * x[i]


@sc.kernel(halo={"x": (1, 2)})
def halo_rows(out, x):
    """Column 0: how many rows of x the call got beyond its own (halo= says 3); column 1:
    x's row lined up with out's (x[i + 1]). A piece sliced without its halo shows."""
    for i in range(out.shape[0]):
        out[i, 0] = x.shape[0] - out.shape[0]
        out[i, 1] = x[i + 1]
