"""Truncated inputs (issue 23, items 8 and 10): a /dev/shm block another process shortens
raises SharedBlockCorruptedError on every read in this process instead of killing it with
SIGBUS; a truncated .npy given to load raises InputError and leaves no segment behind."""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sharedcompute as sc
from sharedcompute import shared
from sharedcompute.shared import SHM_DIR, SharedArray, creator_pid, list_segments

# Runs in a child (a SIGBUS would kill pytest): gets an array (its own, or a handle from the
# test), reads it once, says "ready", waits until the test truncated the block, then tries
# every way of reading it and prints what each did as JSON.
READER = textwrap.dedent(r"""
    import json, pickle, sys
    import numpy as np
    from sharedcompute import SharedBlockCorruptedError
    from sharedcompute.shared import SHM_DIR, SharedArray
    import os
    role = sys.argv[1]
    if role == "creator":
        a = SharedArray.from_array(np.arange(1 << 17, dtype=np.float64))  # 1 MiB: an offset
    else:
        a = pickle.loads(bytes.fromhex(sys.stdin.readline()))
    before = float(np.asarray(a).sum())  # a first read: the watch says "unchanged" after it
    print(json.dumps([a.name, a.block.nbytes, before]), flush=True)
    sys.stdin.readline()  # the test truncates the block now
    first = ["a.block.check_intact()"]  # what a pool call does first: it reads the event
    reads = first + [
        "np.asarray(a).sum()", "a.numpy()[-1]", "a[...][-1]", "np.array(a)", "a[-1]",
        "a[-4:].sum()", "a + 1", "np.add(a, 1, out=np.empty(a.shape))", "np.sum(a)",
        "a.sum()", "a.max()", "a.tolist()", "list(a)", "a.copy()", "a.tobytes()",
        "a.reshape(2, -1)[1, -1]", "pickle.loads(pickle.dumps(a))[-1]", "a == a",
        "a.__setitem__(slice(None), 1.0)", "a.__array__()", "a.__array__(np.float32)"]
    got = {}
    for expr in reads:
        try:
            eval(expr)
            got[expr] = "no error"
        except SharedBlockCorruptedError as exc:
            got[expr] = "typed" if "truncated" in str(exc) else str(exc)
        except Exception as exc:
            got[expr] = f"{type(exc).__name__}: {exc}"
    got["repr"] = repr(a)
    if role == "creator":
        a.free()
        got["left"] = os.path.exists(os.path.join(SHM_DIR, a.name))
    else:
        a.close()
    print(json.dumps(got), flush=True)
""")


@pytest.mark.parametrize("role", ["creator", "consumer", "file"])
@pytest.mark.parametrize("keep", [0, 0.5])
def test_reading_a_truncated_block_raises_typed_error_not_sigbus(tmp_path, role, keep):
    """The block's creator, or a process that unpickled its handle (of a block, or of a
    .npy opened with pool.open: "file"), reads it after another process (this test)
    truncated it: every read raises SharedBlockCorruptedError (FileChangedError for the
    file); the child is not killed by a signal, and /dev/shm is clean after free()."""
    own = None
    if role == "consumer":
        own = SharedArray.from_array(np.arange(1 << 17, dtype=np.float64))
    elif role == "file":
        np.save(tmp_path / "x.npy", np.arange(1 << 17, dtype=np.float64))
        own = SharedArray.open(tmp_path / "x.npy", "r+")
    child = subprocess.Popen([sys.executable, "-c", READER, "creator" if own is None else
                              "consumer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        if own is not None:
            child.stdin.write(pickle.dumps(own).hex() + "\n")
            child.stdin.flush()
        name, nbytes, before = json.loads(child.stdout.readline())
        assert before == float(np.arange(1 << 17, dtype=np.float64).sum())
        path = own.filename if role == "file" else os.path.join(SHM_DIR, name)
        os.truncate(path, int(nbytes * keep))  # another process
        out, err = child.communicate("go\n", timeout=60)
        if own is not None:  # the creator here (a view it made is never read: no SIGBUS)
            with pytest.raises(sc.SharedBlockCorruptedError):
                np.asarray(own)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if own is not None:
            own.free()
    assert child.returncode == 0, (
        f"the reader died of {signal.Signals(-child.returncode).name}" if child.returncode < 0
        else err)
    got = json.loads(out)
    assert got.pop("repr").startswith("SharedArray(shape=(131072,)")  # repr reads no data
    if role == "creator":
        assert got.pop("left") is False
    assert name not in list_segments()  # free() removed it (the creator's, or own here)
    assert {k: v for k, v in got.items() if v != "typed"} == {}


def test_truncation_seen_by_the_next_read_and_every_read_after():
    """The tamper watch's fast path (a poll(0)): the first read after the truncation sees the
    queued event; later reads, after it was read from the queue (and a pool-side check in
    between), still stat and raise; an intact block's reads still work."""
    a = SharedArray.from_array(np.arange(1000.0))
    b = SharedArray.from_array(np.arange(10.0))
    try:
        assert float(np.asarray(a).sum()) == 499500.0 and float(b.sum()) == 45.0
        os.truncate(os.path.join(SHM_DIR, a.name), 0)
        with pytest.raises(sc.SharedBlockCorruptedError, match="truncated .* to 0 of"):
            np.asarray(a)
        with pytest.raises(sc.SharedBlockCorruptedError):
            a.block.check_intact()
        for read in (np.asarray, SharedArray.numpy, np.array, SharedArray.numpy):
            with pytest.raises(sc.SharedBlockCorruptedError):
                read(a)
        assert float(b.sum()) == 45.0  # another block's event does not spoil this one
    finally:
        a.free()
        b.free()
    assert a.name not in list_segments() and b.name not in list_segments()


def test_a_block_unlinked_by_another_process_stays_readable_here():
    """Unlinking removes the name, not the pages this process maps: reads go on (the pool
    refuses it: workers cannot attach it), and a new file under the name is not ours."""
    a = SharedArray.from_array(np.arange(10.0))
    path = os.path.join(SHM_DIR, a.name)
    try:
        os.unlink(path)
        assert float(np.asarray(a).sum()) == 45.0
        with open(path, "wb"):  # a squatter's empty file under the old name
            pass
        assert float(a.sum()) == 45.0 and a[-1] == 9.0
        with pytest.raises(sc.SharedBlockNotFoundError):
            a.block.check_intact()
    finally:
        a.free()
    assert not os.path.exists(path)


# -- pool.load of a truncated .npy ------------------------------------------------------------
def _ours():
    """This process's segments (other programs on the machine make theirs meanwhile)."""
    return {n for n in list_segments() if creator_pid(n) == os.getpid()}


def _npy(tmp_path, x):
    p = str(tmp_path / "x.npy")
    np.save(p, x)
    return p


def _cuts(p):
    size = os.path.getsize(p)
    head = size - 8000
    # in the magic, the header length, the header dict; at the data's start, inside it, 1 short
    return [0, 3, 9, 60, head - 1, head, head + 5, head + 4000, size - 1]


@pytest.mark.parametrize("at", range(9))
def test_load_of_truncated_npy_raises_input_error_and_leaves_no_segment(tmp_path, at):
    x = np.arange(1000.0)
    p = _npy(tmp_path, x)
    cut = _cuts(p)[at]
    os.truncate(p, cut)
    with pytest.raises(Exception):  # the oracle: NumPy refuses the file too
        np.load(p)
    before = _ours()
    with sc.Pool(1, backend="inline") as pool:
        with pytest.raises(sc.InputError) as info:
            pool.load(p)
        # (the test's own directory name says "truncated": match what follows the path)
        what = ("is truncated: it ends inside its .npy header" if cut < 128 else
                f"holds {cut} bytes but its header describes 8128 .*: the file is truncated")
        assert re.match(re.escape(p) + " " + what, str(info.value)), str(info.value)
        assert _ours() == before  # gone while the exception is alive
        assert pool.load(_npy(tmp_path, x)).sum() == x.sum()  # the pool is fine


def test_load_promising_more_than_shared_memory_holds_is_refused_before_allocating(tmp_path):
    """A header for 8 TiB with no data: InputError (truncated), not SharedMemoryFullError."""
    p = str(tmp_path / "huge.npy")
    with open(p, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)})
    with pytest.raises((ValueError, MemoryError)):  # NumPy: no room, or a short read
        np.load(p)
    with pytest.raises(sc.InputError, match="holds .* bytes but its header describes"):
        SharedArray.load(p)


@pytest.mark.parametrize("keep", [0, 4000])
def test_load_of_a_file_truncated_while_it_is_read(tmp_path, monkeypatch, keep):
    """The file passes the size check, then another program shortens it before the read:
    InputError, and the new segment is out of /dev/shm at once, traceback and all."""
    x = np.arange(1000.0)
    p = _npy(tmp_path, x)
    real = shared.check_npy_size

    def then_truncate(path, size, *rest):
        nbytes = real(path, size, *rest)
        os.truncate(path, 128 + keep)  # header (128 bytes) + keep bytes of data
        return nbytes

    monkeypatch.setattr(shared, "check_npy_size", then_truncate)
    before = _ours()
    with pytest.raises(sc.InputError, match=f"holds {128 + keep} bytes") as info:
        SharedArray.load(p)
    assert info.value.__traceback__ is not None  # frames alive, yet no segment
    assert _ours() == before
