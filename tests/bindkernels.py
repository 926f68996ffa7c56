"""Kernels of tests/test_bind.py: a module of their own, so that spawn and forkserver
workers can import them by name (under pytest's importlib mode a test module is not
importable by the workers)."""
import math

import numpy as np

import sharedcompute as sc
from sharedcompute.errors import InputError


@sc.kernel
def scale(out, x, s):
    for i in range(out.shape[0]):
        out[i] = x[i] * s


@sc.kernel
def add_first(out, x, w):  # w: passed whole (sc.whole or a small plain array)
    acc = 0.0
    for j in range(w.shape[0]):  # weighted: any stale or moved element shows
        acc += w[j] * (j + 1)
    for i in range(out.shape[0]):
        out[i] = x[i] + acc


def weighted(w) -> float:
    acc = 0.0
    for j, v in enumerate(np.asarray(w)):
        acc += float(v) * (j + 1)
    return acc


@sc.kernel
def sign_of(out, s):  # -0.0 and 0.0 compare equal but give different results here
    for i in range(out.shape[0]):
        out[i] = math.copysign(1.0, s)


@sc.kernel
def accumulate(y, x, a):  # y += a * x: a call run twice, or with a stale a, shows
    for i in range(y.shape[0]):
        y[i] += a * x[i]


@sc.kernel(combine=np.add)
def scaled_total(x, s):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * s
    return acc


def _nonnegative(out, x, s):
    if s < 0:
        raise InputError(f"s={s} must be >= 0")


@sc.kernel(check=_nonnegative)
def checked_scale(out, x, s):
    for i in range(out.shape[0]):
        out[i] = x[i] * s
