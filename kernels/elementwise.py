"""Elementwise kernels: each row depends only on the same row of the inputs."""
from __future__ import annotations

import numpy as np

from sharedcompute import kernel


def triad_reference(a, b, c, s):
    a[...] = b + s * c


@kernel(reference=triad_reference)
def triad(a, b, c, s):
    """STREAM triad in place: ``a = b + s * c`` (1-D).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.elementwise import triad
    >>> a = np.zeros(3); _ = triad(a, np.ones(3), np.arange(3.0), 2.0); a
    array([1., 3., 5.])
    """
    for i in range(a.shape[0]):
        a[i] = b[i] + s * c[i]


def axpy_reference(y, x, alpha):
    y += alpha * x


@kernel(reference=axpy_reference)
def axpy(y, x, alpha):
    """``y += alpha * x`` in place (1-D).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.elementwise import axpy
    >>> y = np.ones(3); _ = axpy(y, np.arange(3.0), 10.0); y
    array([ 1., 11., 21.])
    """
    for i in range(y.shape[0]):
        y[i] += alpha * x[i]


def logistic_map_reference(y, x, r, n_iter):
    v = x.copy()
    for _ in range(n_iter):
        v = r * v * (1 - v)
    y[...] = v


@kernel(reference=logistic_map_reference)
def logistic_map(y, x, r, n_iter):
    """Compute-bound: iterate ``v = r * v * (1 - v)`` ``n_iter`` times from ``x`` (1-D).

    Examples
    --------
    >>> import numpy as np
    >>> from sharedcompute.kernels.elementwise import logistic_map
    >>> y = np.zeros(2); _ = logistic_map(y, np.array([0.25, 0.5]), 2.0, 1); y
    array([0.375, 0.5  ])
    """
    one = np.ones(1, dtype=x.dtype)[0]  # keep float32 math in float32, as NumPy does
    for i in range(y.shape[0]):
        v = x[i]
        for _ in range(n_iter):
            v = r * v * (one - v)
        y[i] = v
