"""A direct kernel call reproduces the partitioning of a pool of ``workers`` (issue 23 item
14), so a kernel whose result depends on its partition shows in one process what the pool
computes."""
from __future__ import annotations

import numpy as np
import pytest

import sharedcompute as sc
from conftest import shared_pool
from testkernels import local_index

N = 100_003


@pytest.mark.parametrize("workers", [1, 2])
def test_direct_call_equals_the_pool_of_as_many_workers(start_method, workers):
    pool = shared_pool(workers, start_method)
    o = pool.zeros(N)
    got = np.asarray(pool.map(local_index, o)).copy()
    here = np.zeros(N)
    local_index(here, workers=workers)
    assert np.array_equal(here, got)
    # the partition shows: restarts of the index where a worker's share begins
    assert np.count_nonzero(got == 0) == workers
    del o


def test_default_is_the_default_pool_size_and_workers_is_checked():
    here, ref = np.zeros(N), np.zeros(N)
    local_index(here)
    local_index(ref, workers=sc.usable_cores().n)
    assert np.array_equal(here, ref)
    three = np.zeros(N)
    local_index(three, workers=3)
    assert np.count_nonzero(three == 0) == 3
    with sc.Pool(3, backend="inline") as pool:  # the inline backend splits the same way
        o = pool.zeros(N)
        assert np.array_equal(np.asarray(pool.map(local_index, o)), three)
        del o
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(sc.InputError, match="workers="):
            local_index(np.zeros(4), workers=bad)


def test_kernel_bind_is_a_deprecated_name_of_ordered_args():
    from sharedcompute.kernels.elementwise import triad
    args = triad.ordered_args((1,), {"c": 3, "b": 2, "s": 4.0})
    assert args == (1, 2, 3, 4.0)
    with pytest.warns(DeprecationWarning, match="ordered_args"):
        assert triad.bind((1,), {"c": 3, "b": 2, "s": 4.0}) == args
