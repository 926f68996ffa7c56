"""Limits checked up front (issue 17, item 7 and 5): bad arguments are InputErrors before any
work, and never cost the workers."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import sharedcompute as sc
import trustkernels as tk
from conftest import START_METHODS, shared_pool
from sharedcompute.kernels.reductions import total

METHOD = START_METHODS[-1]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 1e300, "soon", True])
def test_bad_timeouts_are_refused_before_work(timeout):
    pool = shared_pool(2, METHOD)
    x = pool.array(np.arange(100.0))
    pids = pool.pids
    for call in (lambda: pool.reduce(total, x, timeout=timeout),
                 lambda: pool.map(tk.copy_rows, pool.zeros(100), x, timeout=timeout)):
        with pytest.raises(sc.InputError, match="must be a positive, finite number of seconds"):
            call()
    assert pool.pids == pids  # refused before any work: the workers were not touched
    assert float(pool.reduce(total, x, timeout=30)) == 4950.0  # a valid timeout works
    x.free()


def test_memoryview_argument_is_refused_and_frombuffer_works():
    pool = shared_pool(2, METHOD)
    raw = np.arange(8.0).tobytes()
    with pytest.raises(sc.InputError, match=r"np\.frombuffer"):
        pool.reduce(tk.plain_sum, sc.whole(memoryview(raw)), rows=1)
    x = pool.array(np.frombuffer(raw, dtype=np.float64))
    assert float(pool.reduce(tk.plain_sum, x)) == 28.0
    x.free()


@pytest.mark.parametrize("shape", [3.5, (2, 3.0), (True, 2), "ab", (-1,), (2**49, 0)])
def test_bad_shapes_are_input_errors(shape):
    with pytest.raises(sc.InputError, match="shape"):
        sc.SharedArray.empty(shape)


@pytest.mark.parametrize("shape", [(2**32, 2**32), (2**62, 3), (2**40, 2**30)])
def test_shape_products_do_not_overflow(shape):
    words = "more than any machine can map|a dimension over 2\\*\\*48"
    with pytest.raises(sc.InputError, match=words):
        sc.SharedArray.empty(shape)
    with sc.Pool(1, backend="inline") as pool:
        with pytest.raises(sc.InputError, match=words):
            pool.zeros(shape)


def test_an_empty_array_with_many_rows_is_split_in_few_chunks():
    from sharedcompute.plan import make_plan
    with sc.Pool(2, backend="inline") as pool:
        a = pool.zeros((2**40, 0))  # NumPy allows it; it must not be split into 2**24 chunks
        assert a.size == 0 and a.shape == (2**40, 0)
        plan = make_plan(tk.copy_rows, (a, pool.zeros((2**40, 0))), rows=None, boundary=None,
                         in_process=True)
        assert plan.n_rows == 2**40 and len(plan.chunks) <= 256


def test_n_workers_is_capped_and_fd_limits_are_checked():
    cores = sc.usable_cores().n
    with pytest.raises(sc.InputError, match="more than 8 per usable core"):
        sc.Pool(8 * cores + 1)
    code = ("import resource, sharedcompute as sc\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
            "try:\n    sc.Pool(12)\nexcept sc.InputError as e:\n    print('REFUSED', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd="/tmp")
    assert "REFUSED" in r.stdout and "ulimit -n" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("value", ["abc", "1e12", "-5", "nan"])
def test_bad_spin_environment_warns_and_falls_back(value):
    code = ("import warnings, sharedcompute.doorbell as d\n"
            "print('SPIN', d.SPIN_S)\n")
    env = dict(os.environ, SHAREDCOMPUTE_SPIN_US=value)
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                       text=True, timeout=120, cwd="/tmp", env=env)
    assert r.returncode == 0, r.stderr
    assert "SPIN 0.0005" in r.stdout and "SHAREDCOMPUTE_SPIN_US" in r.stderr


def test_verify_without_a_reference_is_an_input_error():
    with sc.Pool(1, backend="inline") as pool:
        x = pool.array(np.arange(3.0))
        with pytest.raises(sc.InputError, match="no reference="):
            sc.verify(pool, tk.plain_sum, x)


@pytest.mark.parametrize("repeated", [False, True])
def test_free_during_a_running_call_is_refused(repeated):
    """issue 17 item 8: free() of an array that a running call uses raises ArrayInUseError
    (it returned a freed array before); after the call, free() works."""
    import threading
    import time
    from sharedcompute.kernels.elementwise import logistic_map
    pool = shared_pool(2, METHOD)
    x, out = pool.array(np.full(4000, 0.3)), pool.zeros(4000)
    steps = 2_000_000 if not repeated else 400_000
    if repeated:  # the same call twice: the third goes through the doorbell
        pool.map(logistic_map, out, x, 3.7, steps)
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("out", pool.map(logistic_map, out, x,
                                                                        3.7, steps)))
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), "the call finished too early to test (make it longer)"
    for a in (x, out):
        with pytest.raises(sc.ArrayInUseError, match="a pool call that uses it is running"):
            a.free()
    t.join(120)
    assert done["out"] is out and not out.freed
    x.free(), out.free()
    assert x.freed and out.freed


@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver") if m in START_METHODS])
def test_a_kernel_module_failing_to_import_in_workers_says_why(tmp_path, method):
    """issue 17 item 10: a worker that cannot import the kernel's module answers with the
    exception (here: the module starts a pool at import, which a daemonic worker cannot),
    instead of dying with a bare 'exit code 1'; the workers stay."""
    # it imports only in the parent: not in a worker, nor in the forkserver's preload (which
    # tolerates the failure and leaves the import to the workers); imported once the pool
    # runs, so that a server forked from the parent (issue 27) does not have it either
    (tmp_path / "badmod.py").write_text(
        "import os\nimport sharedcompute as sc\nPOOL = sc.Pool(1, backend='inline')\n"
        "if os.getpid() != int(os.environ['BADMOD_PARENT']):\n"
        "    raise RuntimeError('badmod cannot be imported in a worker')\n"
        "@sc.kernel\ndef fill(out):\n    for i in range(out.shape[0]):\n        out[i] = 1.0\n")
    (tmp_path / "run.py").write_text(
        "import os, sys, numpy as np, sharedcompute as sc\n"
        "if __name__ == '__main__':\n"
        "    os.environ['BADMOD_PARENT'] = str(os.getpid())\n"
        f"    with sc.Pool(2, start_method={method!r}) as pool:\n"
        "        import badmod\n"
        "        out = pool.zeros(10)\n"
        "        try:\n            pool.map(badmod.fill, out)\n"
        "        except sc.KernelError as e:\n            print('ERROR', e)\n"
        "        print('RESTARTS', pool.restarts)\n")
    r = subprocess.run([sys.executable, "run.py"], capture_output=True, text=True, timeout=180,
                       cwd=str(tmp_path))
    assert "badmod cannot be imported in a worker" in r.stdout, r.stdout + r.stderr
    assert "could not import module 'badmod'" in r.stdout and "RESTARTS 0" in r.stdout


def test_dropped_arrays_are_unmapped_in_the_workers():
    """issue 17 item 1: an array dropped with del (no free()) is unlinked and the workers are
    told at the next call, so they do not keep every dropped block mapped until close()."""
    import gc
    pool = sc.Pool(2, start_method=METHOD)
    try:
        def mapped_blocks(pid):
            with open(f"/proc/{pid}/maps") as f:
                return {ln.split("/dev/shm/")[1].split()[0] for ln in f if "/dev/shm/sc" in ln}
        keep = pool.zeros(1000)
        for _ in range(12):
            a, b = pool.zeros(600_000), pool.array(np.ones(600_000))  # 4.8 MB each
            pool.map(tk.copy_rows, a, b)
            del a, b
            gc.collect()
        pool.map(tk.copy_rows, keep, pool.array(np.ones(1000)))  # carries the forget message
        for pid in pool.pids:
            assert len(mapped_blocks(pid)) <= 4, mapped_blocks(pid)
    finally:
        pool.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_a_forked_child_leaves_its_parents_pool_alone(tmp_path, method):
    """issue 17 item 3: after os.fork(), the child's use of the parent's pool is refused with
    a clear error, its ordinary exit stops none of the parent's workers, and sc.Pool() works
    in the child."""
    script = tmp_path / "fork.py"
    script.write_text(f"""
import os, sys, numpy as np, sharedcompute as sc
from sharedcompute.kernels.reductions import total
if __name__ == "__main__":
    pool = sc.Pool(2, start_method={method!r})
    x = pool.array(np.arange(100.0))
    assert float(pool.reduce(total, x)) == 4950.0
    pids = pool.pids
    pid = os.fork()
    if pid == 0:
        try:
            pool.reduce(total, x)
        except sc.PoolError as e:
            print("CHILD REFUSED", "create a new sc.Pool() here" in str(e), flush=True)
        with sc.Pool(2) as own:
            print("CHILD OWN", float(own.reduce(total, own.array(np.arange(10.0)))), flush=True)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    print("CHILD EXIT", os.waitstatus_to_exitcode(status), flush=True)
    print("PARENT", float(pool.reduce(total, x)), pool.pids == pids, pool.restarts, flush=True)
    pool.close()
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=180, cwd=str(tmp_path))
    out = r.stdout
    assert "CHILD REFUSED True" in out and "CHILD OWN 45.0" in out, out + r.stderr
    assert "CHILD EXIT 0" in out and "PARENT 4950.0 True 0" in out, out + r.stderr
    assert "can only join a child process" not in r.stderr, r.stderr


def test_close_from_another_thread_interrupts_a_running_call():
    """issue 17 item 9: close() from another thread no longer waits for ever behind a call
    with no timeout: the call's workers are killed, it raises PoolClosedError, /dev/shm is
    left clean."""
    import threading
    import time
    from sharedcompute.kernels.elementwise import logistic_map
    pool = sc.Pool(2, start_method=METHOD)
    x, out = pool.array(np.full(4000, 0.3)), pool.zeros(4000)
    pool.map(logistic_map, out, x, 3.7, 10)  # compiled
    box = {}

    def call():
        try:
            pool.map(logistic_map, out, x, 3.7, 50_000_000)  # minutes of work, no timeout
        except BaseException as exc:  # noqa: BLE001
            box["err"] = exc
    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    pool.close()
    t.join(30)
    assert not t.is_alive() and time.monotonic() - t0 < 30
    assert isinstance(box.get("err"), sc.PoolClosedError), repr(box.get("err"))
    assert "closed by another thread" in str(box["err"])
    assert pool.closed and x.freed and out.freed
