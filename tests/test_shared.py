"""SharedArray: zero copy, handles, lifetime, names, permissions, bad input."""
import os
import pickle
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute import segments, shared
from sharedcompute._system import ShmSpace
from sharedcompute.shared import SharedArray, creator_pid, list_segments, make_block_name


def test_asarray_is_a_zero_copy_view_and_slices_are_shared():
    a = SharedArray.from_array(np.arange(12.0).reshape(3, 4))
    try:
        v = np.asarray(a)
        assert np.shares_memory(v, a)
        s = a[1:, ::2]
        assert isinstance(s, SharedArray) and s.name == a.name
        s[...] = -1
        assert v[1, 0] == -1 and v[2, 2] == -1 and v[0, 0] == 0
        assert isinstance(a + 1, np.ndarray) and not isinstance(a + 1, SharedArray)
        assert float(a.sum()) == float(np.asarray(a).sum())
        del v, s
    finally:
        a.free()


def test_pickle_sends_a_small_handle_not_the_data():
    a = SharedArray.zeros((1000, 1000))
    try:
        blob = pickle.dumps(a)
        assert len(blob) < 500 < a.nbytes
        b = pickle.loads(blob)  # in the owner: the same block
        b[3, 3] = 7.0
        assert a[3, 3] == 7.0
        view = a[10:20, 5]
        c = pickle.loads(pickle.dumps(view))
        assert c.shape == (10,) and c.strides == view.strides
        del b, c, view
    finally:
        a.free()


def test_names_are_prefixed_random_and_short_enough_for_macos():
    names = {make_block_name() for _ in range(100)}
    assert len(names) == 100
    for n in names:
        assert len(n) + 1 <= 31 and creator_pid(n) == os.getpid()
    assert creator_pid("psm_1234") is None and creator_pid("sc_notours") is None


def test_segment_is_owner_only_and_listed():
    a = SharedArray.zeros(10)
    try:
        st = os.stat(f"/dev/shm/{a.name}")
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert a.name in list_segments()
    finally:
        a.free()
    assert a.name not in list_segments()


def test_free_with_live_views_is_refused_then_works():
    a = SharedArray.zeros(100)
    v = np.asarray(a)
    with pytest.raises(sc.ArrayInUseError, match="1 NumPy view"):
        a.free()
    s = a[:10]
    del v
    with pytest.raises(sc.ArrayInUseError, match="other SharedArray view"):
        a.free()
    del s
    a.free()
    a.free()  # a second free is a no-op
    with pytest.raises(sc.ArrayFreedError, match="was freed"):
        a[0]
    with pytest.raises(sc.ArrayFreedError):
        np.asarray(a)
    with pytest.raises(sc.ArrayFreedError):
        pickle.dumps(a)


def test_dropping_the_last_reference_unlinks_the_block():
    a = SharedArray.zeros(10)
    name = a.name
    del a
    import gc
    gc.collect()
    assert name not in list_segments()


@pytest.mark.parametrize("dtype,match", [(object, "object"),
                                         ([("a", "f8"), ("b", "i4")], "structured|not supported"),
                                         ("U3", "not supported"), (">f8", "byte order")])
def test_unsupported_dtypes_are_clear_errors(dtype, match):
    with pytest.raises(sc.UnsupportedDtypeError, match=match) as info:
        SharedArray.empty(3, dtype)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("make", [
    lambda: np.arange(20.0)[::2],                                 # non-contiguous
    lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),     # Fortran order
    lambda: np.arange(6, dtype=">f8"),                            # big-endian
    lambda: np.frombuffer(np.arange(5.0).tobytes()),              # read-only
    lambda: np.zeros((3, 4), dtype=bool),
])
def test_from_array_copies_any_layout_into_a_c_ordered_native_block(make):
    src = make()
    a = SharedArray.from_array(src)
    try:
        view = np.asarray(a)
        assert view.flags.c_contiguous and view.dtype.isnative
        np.testing.assert_array_equal(view, src)
        del view
    finally:
        a.free()


def _ours(names):
    """Segments this process created (other processes on a shared machine make theirs)."""
    return sorted(n for n in names if creator_pid(n) == os.getpid())


def test_zero_size_arrays_create_no_segment():
    before = set(list_segments())
    a = SharedArray.zeros((0, 5))
    assert a.name is None and a.shape == (0, 5) and np.asarray(a).size == 0
    assert _ours(set(list_segments()) - before) == []
    b = pickle.loads(pickle.dumps(a))
    assert b.shape == (0, 5)


def test_allocation_larger_than_free_space_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(segments, "shm_space",
                        lambda: ShmSpace("/dev/shm", 64 << 20, 1 << 20))
    before = set(list_segments())
    with pytest.raises(sc.SharedMemoryFullError, match=r"cannot reserve 8\.0 MiB.*1\.0 MiB free"
                       r".*--shm-size") as info:
        SharedArray.empty(1 << 20)
    assert isinstance(info.value, OSError)
    assert _ours(set(list_segments()) - before) == []


def test_attach_refuses_a_block_readable_by_others():
    a = SharedArray.zeros(10)
    try:
        os.chmod(f"/dev/shm/{a.name}", 0o644)
        with pytest.raises(sc.SharedBlockSecurityError, match="mode 644"):
            _attach_foreign(a)
    finally:
        a.free()


def _attach_foreign(a):
    # Drop the owner's entry so this process attaches like a foreign one would.
    owned = shared._owned.pop(a.name)
    try:
        return shared.Block.attach(a.name, a.nbytes, writable=True)
    finally:
        shared._owned[a.name] = owned


def test_an_unrelated_process_attaching_and_exiting_leaves_the_block_alive():
    a = SharedArray.from_array(np.arange(10.0))
    try:
        code = textwrap.dedent(f"""
            import pickle, sys
            a = pickle.loads({pickle.dumps(a)!r})
            print(float(a.sum()))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd="/tmp")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "45.0"
        assert proc.stderr == ""  # no resource-tracker warning or traceback
        assert a.name in list_segments() and float(np.asarray(a).sum()) == 45.0
    finally:
        a.free()
    assert a.name not in list_segments()


def test_big_arrays_start_at_staggered_offsets_so_their_elements_do_not_alias():
    # Three equal power-of-two arrays (a triad's a, b, c) must not start at addresses that
    # agree in their low 16 bits; data stays 64-byte aligned and reads back exactly.
    arrays = [SharedArray.from_array(np.full(1 << 17, float(i))) for i in range(3)]
    try:
        starts = [np.asarray(a).ctypes.data for a in arrays]
        assert all(s % 64 == 0 for s in starts)
        assert len({s % (1 << 16) for s in starts}) == 3
        assert [float(np.asarray(a)[-1]) for a in arrays] == [0.0, 1.0, 2.0]
        assert all(pickle.loads(pickle.dumps(a)).numpy()[-1] == i for i, a in enumerate(arrays))
    finally:
        for a in arrays:
            a.free()
    small = SharedArray.empty(100)  # small arrays are not padded
    try:
        assert small.block.nbytes == small.nbytes
    finally:
        small.free()
