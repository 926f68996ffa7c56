"""Arrays on disk (issue 13): .npy files and memmaps mapped in place in every worker, their
refusals, a crash, a larger-than-/dev/shm run, and N-D views that stay shared."""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

import sharedcompute as sc
from conftest import START_METHODS, TESTS_DIR, shared_pool
from sharedcompute.kernels import reductions as R
from sharedcompute.kernels.elementwise import axpy
from sharedcompute.kernels.stencils import heat1d

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _save(path, x):
    np.save(path, x)
    return str(path)


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _maps(path, pid="self"):
    with open(f"/proc/{pid}/maps") as f:
        return sum(str(path) in line for line in f)


def _env():
    env = dict(os.environ)
    # the tests folder only: the checkout itself lacks sharedcompute.kernels (make test runs
    # against the installed package, which has it)
    # (and no empty entry: that would put the current folder, the checkout, on the path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [TESTS_DIR, env.get("PYTHONPATH", "")] if p)
    return env


# -- open r / r+ / w+, in every start method ------------------------------------------------------
@pytest.mark.parametrize("method", START_METHODS)
def test_open_read_write_create_in_place(method, tmp_path):
    pool = shared_pool(2, method)
    x = np.random.default_rng(1).standard_normal((64, 9, 7)).astype(np.float32)
    p = _save(tmp_path / "x.npy", x)
    a = pool.open(p)                                   # "r": the file itself, no copy
    assert a.readonly and a.filename == os.path.realpath(p) and not a.name.startswith("sc")
    assert np.shares_memory(np.asarray(a), a) and not np.asarray(a).flags.writeable
    got = [pool.reduce(k, a, *extra) for k, extra in
           [(R.total, ()), (R.minmax, ()), (R.mean_var, ()), (R.histogram, (32, -4.0, 4.0))]]
    ram = pool.load(p)                                 # the same data in /dev/shm
    assert ram.filename is None and np.array_equal(np.asarray(ram), x)
    want = [pool.reduce(k, ram, *extra) for k, extra in
            [(R.total, ()), (R.minmax, ()), (R.mean_var, ()), (R.histogram, (32, -4.0, 4.0))]]
    for g, w in zip(got, want):                        # bitwise what the shared-memory copy gives
        assert [np.asarray(v).tobytes() for v in (g if isinstance(g, tuple) else (g,))] == \
               [np.asarray(v).tobytes() for v in (w if isinstance(w, tuple) else (w,))]
    np.testing.assert_array_equal(got[3], np.histogram(x, 32, (-4.0, 4.0))[0])
    assert sc.verify(pool, R.total, a).ok
    # "r+": kernels write the file; flush() msyncs
    b = pool.open(p, mode="r+")
    ones = pool.array(np.ones(x.size, np.float32))
    pool.map(axpy, b.reshape(-1), ones, 2.0)           # an N-D file through a 1-D kernel
    pool.map(axpy, b.reshape(-1), ones, 2.0)           # again: the doorbell's cached call
    b.flush()
    twice = (x + np.float32(2)) + np.float32(2)
    np.testing.assert_array_equal(np.load(p), twice)
    assert np.asarray(a)[0, 0, 0] == twice[0, 0, 0]    # the same pages, seen through "r"
    # "w+": a new .npy, as open_memmap, then iterate writes both files
    u = pool.open(tmp_path / "u.npy", mode="w+", shape=(5000,), dtype=np.float64)
    out = pool.open(tmp_path / "out.npy", mode="w+", shape=(5000,), dtype=np.float64)
    u[2500] = 1.0
    last = pool.iterate(heat1d, out, u, 0.25, steps=7)
    u2, o2 = pool.array(np.eye(1, 5000, 2500)[0]), pool.zeros(5000)
    want = pool.iterate(heat1d, o2, u2, 0.25, steps=7)
    np.testing.assert_array_equal(np.asarray(last), np.asarray(want))
    name, want = ("out.npy" if last is out else "u.npy"), np.array(want)
    for arr in (a, b, ram, ones, u, out, u2, o2):
        arr.free()
    np.testing.assert_array_equal(np.load(tmp_path / name), want)
    del last


@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
       dt=st.sampled_from(["<f8", "<f4", "<i8", "<i4", ">f8", "|u1", "|b1", "<c16"]),
       version=st.sampled_from([(1, 0), (2, 0), (3, 0)]))
def test_any_npy_round_trips_through_open_load_and_w_plus(tmp_path_factory, shape, dt, version):
    d = tmp_path_factory.mktemp("rt")
    x = (np.arange(int(np.prod(shape)), dtype=np.float64) * 3 % 7).astype(dt).reshape(shape)
    p = str(d / "x.npy")
    with open(p, "wb") as f:                             # every header version NumPy writes
        np.lib.format.write_array(f, x, version=version)
    with sc.SharedArray.load(p) as b:
        assert b.dtype.isnative and np.array_equal(np.asarray(b), x)
    if np.dtype(dt).isnative or np.dtype(dt).itemsize == 1:
        a = sc.SharedArray.open(p)
        assert a.shape == x.shape and a.dtype == x.dtype and np.array_equal(np.asarray(a), x)
        w = sc.SharedArray.open(d / "w.npy", "w+", shape=x.shape, dtype=x.dtype)
        np.asarray(w)[...] = x
        w.free()
        y = np.load(d / "w.npy")
        assert y.dtype == x.dtype and np.array_equal(y, x)
        a.free()
    else:
        with pytest.raises(sc.UnsupportedDtypeError, match="pool.load"):
            sc.SharedArray.open(p)


def test_handle_is_small_and_np_save_does_not_copy(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    p = _save(tmp_path / "big.npy", np.arange(1 << 20, dtype=np.float64))   # 8 MiB
    a = pool.open(p)
    assert len(pickle.dumps(a)) < 400
    again = pickle.loads(pickle.dumps(a))              # in this process: the same mapping
    assert np.shares_memory(np.asarray(again), np.asarray(a))
    del again
    tracemalloc.start()
    with open(tmp_path / "saved.npy", "wb") as f:
        np.save(f, a)                                  # through __array__: a view, no copy
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, f"np.save of an 8 MiB array allocated {peak} bytes"
    assert np.array_equal(np.load(tmp_path / "saved.npy"), np.asarray(a))
    b = pool.load(p)                                   # readinto: no temporary copy either
    tracemalloc.start()
    pool.load(p).free()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, f"pool.load of an 8 MiB file allocated {peak} bytes"
    assert np.array_equal(np.asarray(b), np.asarray(a))
    b.free()
    a.free()


# -- read-only -------------------------------------------------------------------------------------
def test_read_only_refused_everywhere_and_r_plus_fixes_it(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    p = _save(tmp_path / "x.npy", np.zeros(1000))
    a = pool.open(p, "r")
    ones = pool.array(np.ones(1000))
    with pytest.raises(sc.ReadOnlyArrayError, match="mode='r\\+'"):
        pool.map(axpy, a, ones, 1.0)
    with pytest.raises(sc.ReadOnlyArrayError):
        a[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(a)[0] = 1.0
    with pytest.raises(sc.ReadOnlyArrayError):          # iterate writes u on every other sweep
        pool.iterate(heat1d, ones, a, 0.1, steps=2)
    m = np.load(p, mmap_mode="r")
    with pytest.raises(sc.ReadOnlyArrayError):
        pool.map(axpy, m, ones, 1.0)
    assert not np.load(p).any()
    b = pool.open(p, "r+")                              # the message's fix
    pool.map(axpy, b, ones, 1.0)
    pool.map(axpy, np.load(p, mmap_mode="r+"), ones, 1.0)   # and the memmap's
    b.free()
    assert np.all(np.load(p) == 2.0)
    a.free()
    ones.free()


# -- np.memmap / np.load(mmap_mode=...) arguments ------------------------------------------------
@pytest.mark.parametrize("method", START_METHODS)
def test_memmap_arguments_are_mapped_by_file(method, tmp_path):
    pool = shared_pool(2, method)
    x = np.random.default_rng(2).standard_normal((300, 11))
    p = _save(tmp_path / "x.npy", x)
    want = R.total(x)
    assert pool.reduce(R.total, np.load(p, mmap_mode="r")) == want       # was: an error
    assert pool.reduce(R.total, np.load(p, mmap_mode="r")[50:250]) == R.total(x[50:250])
    raw = tmp_path / "raw.bin"                           # a raw np.memmap at an odd offset
    with open(raw, "wb") as f:
        f.write(b"\0" * 12)
        f.write(x.tobytes())
    m = np.memmap(raw, dtype=np.float64, mode="r+", offset=12, shape=x.shape)
    assert pool.reduce(R.mean_var, m) == R.mean_var(x)
    flat = m.reshape(-1)
    ones = pool.array(np.ones(x.size))
    pool.map(axpy, flat, ones, 1.0)                      # writes reach the file
    m.flush()
    np.testing.assert_array_equal(np.fromfile(raw, np.float64, offset=12).reshape(x.shape), x + 1)
    out = pool.zeros(x.size)                             # verify splits memmaps like the pool
    assert sc.verify(pool, heat1d, out, np.load(p, mmap_mode="r").reshape(-1), 0.1).ok
    assert sc.verify(pool, axpy, flat, ones, 0.5).ok     # on copies: the file is unchanged
    np.testing.assert_array_equal(np.fromfile(raw, np.float64, offset=12).reshape(x.shape), x + 1)
    out.free()
    with pytest.raises(sc.InputError, match="copy-on-write.*pool.array"):
        pool.reduce(R.total, np.load(p, mmap_mode="c"))
    c = np.load(p, mmap_mode="c")
    shared = pool.array(c)                               # the fix: one copy
    assert pool.reduce(R.total, shared) == want
    shared.free()
    ones.free()
    del m, flat, c
    # a memmap whose file was replaced afterwards is refused (Linux: /proc/self/maps)
    old = np.load(p, mmap_mode="r")
    os.replace(_save(tmp_path / "y.npy", x * 2), p)
    with pytest.raises(sc.FileChangedError, match="replaced.*np.load"):
        pool.reduce(R.total, old)
    assert pool.reduce(R.total, np.load(p, mmap_mode="r")) == R.total(x * 2)   # the fix


def test_one_file_mapped_twice_still_counts_as_aliasing(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    p = _save(tmp_path / "x.npy", np.arange(1000.0))
    a = pool.open(p, "r+")
    with pytest.raises(sc.InputError, match="shares memory"):  # two mappings, the same bytes
        pool.map(axpy, a[1:], np.load(p, mmap_mode="r")[:-1], 1.0)
    other = pool.array(np.load(p)[:-1])                  # the message's fix: a separate array
    pool.map(axpy, a[1:], other, 1.0)
    assert np.load(p)[5] == 5.0 + 4.0
    a.free()
    other.free()


# -- refusals ------------------------------------------------------------------------------------------
def test_refusals_name_the_problem_and_the_fix(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    f = np.asfortranarray(np.arange(60.0).reshape(6, 10))
    pf = _save(tmp_path / "f.npy", f)
    with pytest.raises(sc.InputError, match="Fortran order.*mmap_mode='r'\\)\\.T"):
        pool.open(pf)
    with pytest.raises(sc.InputError, match="Fortran"):
        pool.load(pf)
    t = np.load(pf, mmap_mode="r").T                     # fix 1: the C-ordered transpose
    assert t.flags.c_contiguous
    assert pool.reduce(R.total, t) == R.total(np.ascontiguousarray(f.T))
    del t
    np.save(tmp_path / "c.npy", np.ascontiguousarray(np.load(pf)))   # fix 2: rewrite C-ordered
    c = pool.open(tmp_path / "c.npy")
    assert pool.reduce(R.total, c) == R.total(np.ascontiguousarray(f))
    c.free()
    po = tmp_path / "o.npy"
    np.save(po, np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(sc.UnsupportedDtypeError, match="object.*astype"):
        pool.open(po)
    with pytest.raises(sc.UnsupportedDtypeError, match="object"):
        pool.load(po)
    with pytest.raises(sc.InputError, match="is a directory"):
        pool.open(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(sc.InputError, match="FIFO"):
        pool.open(fifo)                                  # never blocks opening the pipe
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(8.0).tobytes())
    with pytest.raises(sc.InputError, match="not a .npy file.*np.memmap"):
        pool.open(raw)
    assert pool.reduce(R.total, np.memmap(raw, np.float64, "r")) == 28.0   # the fix
    with pytest.raises(FileNotFoundError, match="mode='w\\+'"):
        pool.open(tmp_path / "missing.npy")
    with pytest.raises(sc.InputError, match="mode="):
        pool.open(pf, mode="a")
    with pytest.raises(sc.InputError, match="shape="):
        pool.open(tmp_path / "new.npy", mode="w+")
    pb = _save(tmp_path / "be.npy", np.arange(5.0).astype(">f8"))
    with pytest.raises(sc.UnsupportedDtypeError, match="byte order.*pool.load"):
        pool.open(pb)
    b = pool.load(pb)                                    # the fix: converted into RAM
    assert b.dtype.isnative and np.array_equal(np.asarray(b), np.arange(5.0))
    b.free()


def test_permissions_are_the_ones_the_owner_gave(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    p = _save(tmp_path / "x.npy", np.arange(10.0))
    os.chmod(p, 0o444)
    with pytest.raises(sc.FileAccessError, match="chmod u\\+w.*mode='r'"):
        pool.open(p, "r+")                               # refused even for root
    a = pool.open(p, "r")                                # fix 1: read-only
    assert pool.reduce(R.total, a) == 45.0
    a.free()
    with pytest.raises(sc.FileAccessError, match="chmod u\\+w"):
        pool.open(p, "w+", shape=(3,))                   # nor replaced by a new file
    assert np.load(p).shape == (10,)
    os.chmod(p, 0o644)                                   # fix 2: chmod u+w
    pool.open(p, "r+").free()
    if not IS_ROOT:
        return
    os.chown(p, 54321, 54321)                            # another user's file
    os.chmod(p, 0o600)
    with pytest.raises(sc.FileAccessError, match="uid 54321.*other users"):
        pool.open(p, "r")
    os.chmod(p, 0o644)                                   # the owner let others read
    a = pool.open(p, "r")
    assert pool.reduce(R.total, a) == 45.0
    a.free()
    with pytest.raises(sc.FileAccessError, match="other users read and write"):
        pool.open(p, "r+")


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("tamper", ["truncate", "replace", "delete"])
def test_file_truncated_replaced_or_deleted_while_open(method, tamper, tmp_path):
    pool = shared_pool(2, method)
    x = np.arange(1 << 16, dtype=np.float64)
    p = _save(tmp_path / "x.npy", x)
    a = pool.open(p, "r+")
    assert pool.reduce(R.total, a) == R.total(x)        # workers have it mapped (and cached)
    restarts = pool.restarts
    if tamper == "truncate":
        os.truncate(p, 4096)
        match = "truncated to 4096 bytes"
    elif tamper == "replace":
        os.replace(_save(tmp_path / "y.npy", x * 3), p)
        match = "replaced"
    else:
        os.unlink(p)
        match = "deleted"
    with pytest.raises(sc.FileChangedError, match=match):
        pool.reduce(R.total, a)                          # the doorbell path checks too
    with pytest.raises(sc.FileChangedError):
        pool.map(axpy, a, pool.array(x), 1.0)
    if tamper == "truncate":
        with pytest.raises(sc.FileChangedError):         # not a SIGBUS in this process
            np.asarray(a)
        with pytest.raises(sc.FileChangedError):
            a.flush()
    assert pool.restarts == restarts                     # refused before any worker ran
    a.free()
    if tamper == "truncate":
        with pytest.raises(sc.InputError, match="truncated.*write it again"):
            pool.open(p)
        _save(p, x)                                      # the fix: write it again ...
    if tamper != "delete":                               # ... and open the file anew
        b = pool.open(p)
        assert pool.reduce(R.total, b) == R.total(np.load(p))
        b.free()


def test_empty_and_zero_d_files(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    e = pool.open(_save(tmp_path / "e.npy", np.zeros((0, 3))))
    assert e.shape == (0, 3) and np.asarray(e).size == 0
    assert pool.reduce(R.total, e) == 0.0
    z = pool.open(_save(tmp_path / "z.npy", np.float64(7.5)))
    assert z.shape == () and float(np.asarray(z)) == 7.5
    e.free()
    z.free()


# -- no leaked descriptors or mappings ----------------------------------------------------------------
def test_no_file_descriptors_or_mappings_leak(tmp_path):
    pool = shared_pool(2, START_METHODS[-1])
    p = _save(tmp_path / "x.npy", np.arange(5000.0))
    pool.reduce(R.total, pool.array(np.ones(3)))         # warm
    fds = _fds()
    for mode in ("r", "r+", "r", "r+"):
        a = pool.open(p, mode)
        view = np.asarray(a)
        pool.reduce(R.total, a)
        pool.reduce(R.total, a.reshape(50, 100))
        pool.reduce(R.total, np.load(p, mmap_mode="r"))
        del view
        a.free()
    import gc
    gc.collect()
    assert _fds() == fds and _maps(p) == 0
    pool.reduce(R.total, pool.array(np.ones(3)))         # the next call tells workers to unmap
    for pid in pool.pids:
        assert _maps(p, pid) == 0, f"worker {pid} still maps {p}"
        assert not any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == os.path.realpath(p)
                       for fd in os.listdir(f"/proc/{pid}/fd"))


# -- N-D views stay shared ----------------------------------------------------------------------------
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple))
def test_contiguous_views_stay_shared_others_are_plain(shape):
    a = sc.SharedArray.from_array(np.arange(np.prod(shape), dtype=np.float64).reshape(shape))
    def check_views():
        for v in (a.reshape(-1), a.ravel(), a.reshape(shape[::-1]), a.squeeze(),
                  a.reshape(-1).reshape(shape), a.view()):
            assert isinstance(v, sc.SharedArray), v
            assert v.name == a.name and np.shares_memory(np.asarray(v), np.asarray(a))
            h = pickle.loads(pickle.dumps(v))
            assert h.shape == v.shape and np.array_equal(np.asarray(h), np.asarray(v))
    try:
        check_views()
        assert type(a.flatten()) is np.ndarray           # a copy, as in NumPy
        if a.ndim > 1 and min(shape) > 1:
            assert type(a.T) is np.ndarray               # not contiguous: plain views
            assert type(a[:, ::2].reshape(-1)) is np.ndarray   # NumPy copies here
    finally:
        a.free()


def test_nd_views_run_in_the_pool():
    pool = shared_pool(2, START_METHODS[-1])
    vol = pool.array(np.random.default_rng(0).standard_normal((32, 16, 16)))
    flat = vol.reshape(-1)
    y = pool.zeros(flat.shape[0])
    pool.map(axpy, y, flat, 2.0)                         # a 3-D array through a 1-D kernel
    np.testing.assert_array_equal(np.asarray(y), 2.0 * np.asarray(vol).ravel())
    assert pool.reduce(R.total, vol) == pool.reduce(R.total, flat)
    del flat
    vol.free()
    y.free()


# -- survives a crash; larger than /dev/shm --------------------------------------------------------
CRASH = """
import sys, numpy as np, sharedcompute as sc
from sharedcompute.kernels.elementwise import axpy
if __name__ == "__main__":
    with sc.Pool(2, start_method=sys.argv[2]) as pool:
        a = pool.open(sys.argv[1], "r+")
        ones = pool.array(np.ones(a.shape[0]))
        for _ in range(3):
            pool.map(axpy, a, ones, 1.0)
        print("done", flush=True)
        sys.stdin.read()                                 # wait to be killed
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_completed_writes_survive_sigkill_of_the_parent(method, tmp_path):
    p = _save(tmp_path / "x.npy", np.zeros(300_000))
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    proc = subprocess.Popen([sys.executable, str(script), p, method], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == "done"
        os.kill(proc.pid, signal.SIGKILL)                # no flush, no close, no atexit
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert np.all(np.load(p) == 3.0)


BIG = """
import json, os, sys, numpy as np, sharedcompute as sc
from sharedcompute.kernels.reductions import total, mean_var
from sharedcompute.kernels.elementwise import axpy
if __name__ == "__main__":
    path = sys.argv[1]
    out = {"shm_free": os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize}
    with sc.Pool(2) as pool:
        try:
            pool.load(path)
        except sc.SharedMemoryFullError as exc:
            out["load"] = "full"
        a = pool.open(path, "r")
        out["nbytes"] = a.nbytes
        out["total"] = float(pool.reduce(total, a))
        try:                                             # a file too big for its disk
            pool.open("/dev/shm/too_big.npy", "w+", shape=a.shape, dtype=a.dtype)
        except OSError as exc:
            out["full"] = [exc.errno, os.path.exists("/dev/shm/too_big.npy"),  # the pool's
                           [f for f in os.listdir("/dev/shm") if not f.startswith("sem.")]]
        w = pool.open(path + ".out.npy", "w+", shape=a.shape, dtype=a.dtype)
        pool.map(axpy, w, a, 2.0)
        out["mv"] = [float(v) for v in pool.reduce(mean_var, w)]
    out["after"] = os.listdir("/dev/shm")                # closed: its semaphores gone too
    print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_larger_than_dev_shm_on_a_private_1m_tmpfs(tmp_path):
    if not IS_ROOT or shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
            capture_output=True).returncode:
        pytest.skip("needs root and unshare -m for a private /dev/shm")
    n = 1 << 20                                          # 8 MiB of float64: 8x /dev/shm
    p = _save(tmp_path / "x.npy", np.arange(n, dtype=np.float64))
    script = tmp_path / "big.py"
    script.write_text(BIG)
    cmd = ["unshare", "-m", "sh", "-c",
           'mount -t tmpfs -o size=1m,mode=1777 tmpfs /dev/shm && exec "$0" "$1" "$2"',
           sys.executable, str(script), p]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["shm_free"] <= 1 << 20 < res["nbytes"] and res["load"] == "full"
    assert res["total"] == float(n * (n - 1) // 2)
    assert res["full"] == [28, False, []]                # ENOSPC at creation, nothing left
    assert res["after"] == []
    w = np.load(p + ".out.npy")
    np.testing.assert_array_equal(w, 2.0 * np.arange(n))
    assert res["mv"][0] == n and res["mv"][1] == pytest.approx(n - 1.0)
