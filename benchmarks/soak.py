"""Soak test: many map calls on a 2-worker pool with random injected faults.

Not part of the test suite. Each call either runs cleanly (its result is checked) or suffers
one fault in a random partition, as in the fault catalogue:

    row 1  sigkill  a worker SIGKILLs itself mid-kernel  -> WorkerCrashedError, pool restarts
    row 3  raise    the kernel raises ValueError         -> KernelError, same workers
    row 6  sigint   Ctrl-C in this process mid-call      -> KeyboardInterrupt within ~1 s
    row 8  hang     the kernel never returns (timeout=)  -> KernelTimeoutError, pool restarts

Every call has a timeout, so a call that does not come back in time is counted as a hang
instead of blocking the run. The closing line reports calls, faults injected, errors of the
right type, hangs, leaked segments and orphan processes (the last three must be 0).

Two memory soaks (issue 17, items 1 and 2) run with ``--mode lifecycle`` / ``consumer``:

    lifecycle  --rounds rounds of creating two arrays, a pool.map on them, and dropping them
               with del (no free()); worker RSS (and its shared-memory part), the blocks each
               worker maps and /dev/shm use after the warm-up and at the end: they stay flat
    consumer   a long-lived consumer process unpickles each round's handles, sums them and
               drops or closes them; the creator then frees them. The consumer's RSS and
               mapped blocks at the start and end: flat (it kept every block before)

    PYTHONPATH=tests python benchmarks/soak.py [--mode faults|lifecycle|consumer|all]
        [--calls 1000] [--rounds 1000] [--seed 0] [--start-method M]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # faultkernels

import sharedcompute as sc  # noqa: E402
from sharedcompute.shared import creator_pid, list_segments  # noqa: E402

import faultkernels as fk  # noqa: E402

N = 4 * 8192              # four 64 KiB chunks: each worker gets two
CALL_TIMEOUT = 30.0       # a call that takes longer than this counts as a hang
HANG_TIMEOUT = 0.5        # timeout= for calls whose kernel hangs on purpose
SIGINT_LATENCY = 1.0      # Ctrl-C must surface within this many seconds
FAULTS = {                # name: (probability per call, expected exception type)
    "sigkill": (0.03, sc.WorkerCrashedError),
    "raise": (0.04, sc.KernelError),
    "sigint": (0.015, KeyboardInterrupt),
    "hang": (0.015, sc.KernelTimeoutError),
}
ACTION = {"sigkill": fk.SIGKILL, "raise": fk.RAISE, "sigint": fk.HANG, "hang": fk.HANG}


def pid_alive(pid: int) -> bool:
    try:
        import psutil
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    except ImportError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def own_segments() -> list[str]:
    return [n for n in list_segments() if creator_pid(n) == os.getpid()]


MIB = 1 << 20
LIFE_ROWS = 1 << 18        # 2 MiB of float64 per array: a leak of 1,000 rounds is 4 GiB
WARMUP = 10                # rounds before the "start" figures (compiles, first mappings)


def proc_memory(pid: int | str) -> tuple[float, float]:
    """(RSS, its shared-memory part RssShmem) of a process, in MiB (Linux /proc)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssShmem"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("RssShmem", 0.0)


def shm_used_mib() -> float:
    """Bytes in use on /dev/shm (all users: other programs' use shows up too)."""
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize / MIB


def lifecycle_soak(rounds: int, start_method: str | None) -> bool:
    """Create, use and drop (del, no free()) two arrays per round; report flatness."""
    import gc
    t0 = time.monotonic()
    pool = sc.Pool(n_workers=2, start_method=start_method)
    ones = np.ones(LIFE_ROWS)
    start = None
    try:
        for r in range(rounds):
            a, b = pool.zeros(LIFE_ROWS), pool.array(ones)
            pool.map(fk.fault_map, a, b, fk.NONE, -1, 0.0)
            ok = float(a[LIFE_ROWS - 1]) == 3.0
            del a, b
            gc.collect()
            if not ok:
                print(f"lifecycle: round {r} computed a wrong result")
                return False
            if r + 1 == WARMUP:
                start = snapshot(pool)
        pool.map(fk.fault_fill, pool.zeros(8), 1.0, fk.NONE, -1, 0.0)  # delivers the last forgets
        end = snapshot(pool)
        seen = list(pool.pids)
    finally:
        pool.close()
    leaked = own_segments()
    print(f"lifecycle: rounds={rounds} arrays={2 * rounds} ({LIFE_ROWS * 8 / MIB:.0f} MiB each, "
          f"dropped with del, no free()) start_method={pool.start_method} restarts={pool.restarts}")
    for label, snap in (("after warm-up", start), ("at the end", end)):
        print(f"  {label:>13}: worker RSS MiB {snap['rss']} (of it shared memory {snap['shm']}), "
              f"blocks mapped per worker {snap['mapped']}, /dev/shm used {snap['used']:.0f} MiB")
    grew = [e - s for s, e in zip(start["rss"], end["rss"])]
    print(f"  worker RSS growth MiB {grew}, leaked_segments={len(leaked)}, "
          f"elapsed={time.monotonic() - t0:.0f}s", flush=True)
    return (not leaked and max(grew) < 64 and max(end["mapped"]) <= 4
            and set(seen) == set(start["pids"]))


def snapshot(pool: sc.Pool) -> dict:
    mem = [proc_memory(p) for p in pool.pids]
    return {"pids": list(pool.pids), "rss": [round(m[0]) for m in mem],
            "shm": [round(m[1]) for m in mem], "used": shm_used_mib(),
            "mapped": [len(fk.mapped_blocks(p)) for p in pool.pids]}


def consumer_soak(rounds: int, start_method: str | None, how: str = "drop") -> bool:
    """A long-lived consumer unpickles each round's two handles, sums them and lets them go
    (``how``: drop or close); the creator then frees them. Report the consumer's memory."""
    import multiprocessing as mp
    t0 = time.monotonic()
    ctx = mp.get_context(start_method or sc.pool.default_start_method())
    here, there = ctx.Pipe()
    proc = ctx.Process(target=fk.consumer, args=(there, how), daemon=True)
    proc.start()
    there.close()
    start = end = None
    wrong = 0
    most = 0
    try:
        for r in range(rounds):
            for k in range(2):
                a = sc.SharedArray.from_array(np.full(LIFE_ROWS, float(k + 1)))
                here.send(a)
                total, mapped, _ = here.recv()
                wrong += total != LIFE_ROWS * (k + 1.0)
                most = max(most, len(mapped))
                a.free()  # the creator frees what the consumer had attached
            if r + 1 == WARMUP:
                start = proc_memory(proc.pid) + (len(fk.mapped_blocks(proc.pid)), shm_used_mib())
        end = proc_memory(proc.pid) + (len(fk.mapped_blocks(proc.pid)), shm_used_mib())
        here.send(None)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
        here.close()
    leaked = own_segments()
    print(f"consumer ({how}): rounds={rounds} handles={2 * rounds} "
          f"({LIFE_ROWS * 8 / MIB:.0f} MiB each, freed by the creator after use) "
          f"start_method={ctx.get_start_method()}")
    for label, m in (("after warm-up", start), ("at the end", end)):
        print(f"  {label:>13}: consumer RSS {m[0]:.0f} MiB (of it shared memory {m[1]:.0f}), "
              f"blocks mapped {m[2]}, /dev/shm used {m[3]:.0f} MiB")
    print(f"  most blocks mapped after a handle was let go: {most}, wrong_sums={wrong}, "
          f"leaked_segments={len(leaked)}, exit={proc.exitcode}, "
          f"elapsed={time.monotonic() - t0:.0f}s", flush=True)
    return (not wrong and not leaked and most == 0 and end[2] == 0
            and end[0] - start[0] < 64 and proc.exitcode == 0)


def main() -> int:
    # Started as a background job, SIGINT would be ignored and the injected Ctrl-C lost.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["faults", "lifecycle", "consumer", "all"],
                    default="faults")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start-method", default=None)
    args = ap.parse_args()
    ok = True
    if args.mode in ("lifecycle", "all"):
        ok &= lifecycle_soak(args.rounds, args.start_method)
    if args.mode in ("consumer", "all"):
        ok &= consumer_soak(args.rounds, args.start_method, "drop")
        ok &= consumer_soak(args.rounds, args.start_method, "close")
    if args.mode in ("faults", "all"):
        ok &= fault_soak(args) == 0
    return 0 if ok else 1


def fault_soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)

    markers = fk.marker_dir(os.getpid())
    shutil.rmtree(markers, ignore_errors=True)
    os.makedirs(markers)

    injected: Counter = Counter()
    right: Counter = Counter()
    wrong: list[str] = []
    hangs = wrong_results = slow_sigint = 0
    seen_pids: set[int] = set()
    max_sigint = 0.0
    t_start = time.monotonic()

    pool = sc.Pool(n_workers=2, start_method=args.start_method)
    x = pool.array(np.arange(N, dtype=np.float64))
    out = pool.zeros(N)
    expect = 2.0 * np.arange(N, dtype=np.float64) + 1.0
    try:
        for call in range(args.calls):
            seen_pids.update(pool.pids)
            if call and call % 100 == 0:        # exercise the block lifecycle as well
                x.free(); out.free()
                x = pool.array(np.arange(N, dtype=np.float64))
                out = pool.zeros(N)
            r, fault = rng.random(), None
            for name, (p, _) in FAULTS.items():
                if r < p:
                    fault = name
                    break
                r -= p
            victim = rng.randrange(N) if fault else -1
            action = ACTION[fault] if fault else fk.NONE
            timeout = HANG_TIMEOUT if fault == "hang" else CALL_TIMEOUT
            for f in os.listdir(markers):
                os.unlink(os.path.join(markers, f))
            sent: list[float] = []
            stop = threading.Event()
            if fault == "sigint":
                def interrupt() -> None:
                    # Ctrl-C once the worker is inside the (hanging) kernel
                    while not stop.is_set() and not os.listdir(markers):
                        time.sleep(0.01)
                    if not stop.is_set():
                        sent.append(time.monotonic())
                        os.kill(os.getpid(), signal.SIGINT)
                timer = threading.Thread(target=interrupt, daemon=True)
                timer.start()
            if fault:
                injected[fault] += 1
            t0 = time.monotonic()
            err: BaseException | None = None
            try:
                try:
                    pool.map(fk.fault_map, out, x, action, victim, 0.0, timeout=timeout)
                finally:
                    stop.set()
                    if fault == "sigint":
                        timer.join()
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt included
                err = exc
            caught = time.monotonic()
            elapsed = caught - t0
            if isinstance(err, sc.KernelTimeoutError) and fault != "hang":
                hangs += 1
                wrong.append(f"call {call}: {fault or 'clean'} timed out after {elapsed:.1f} s")
                continue
            if fault is None:
                if err is not None:
                    wrong.append(f"call {call}: clean call raised {type(err).__name__}: {err}")
                elif not np.array_equal(np.asarray(out), expect):
                    wrong_results += 1
                continue
            expected = FAULTS[fault][1]
            if type(err) is expected:
                right[fault] += 1
            else:
                wrong.append(f"call {call}: {fault} gave {type(err).__name__}: {err}")
            if fault == "sigint" and sent:
                lat = caught - sent[0]
                max_sigint = max(max_sigint, lat)
                slow_sigint += lat > SIGINT_LATENCY
            if fault == "hang" and elapsed > HANG_TIMEOUT + 5.0:
                hangs += 1
    finally:
        seen_pids.update(pool.pids)
        pool.close()
        shutil.rmtree(markers, ignore_errors=True)
    del x, out

    deadline = time.monotonic() + 10.0
    while True:
        leaked = own_segments()
        orphans = [p for p in seen_pids if pid_alive(p)]
        if (not leaked and not orphans) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    for line in wrong[:20]:
        print("  " + line)
    n_inj = sum(injected.values())
    n_right = sum(right.values())
    detail = " ".join(f"{k}={right[k]}/{injected[k]}" for k in FAULTS)
    print(f"soak: calls={args.calls} faults_injected={n_inj} errors_right_type={n_right}/{n_inj} "
          f"({detail}) wrong={len(wrong)} wrong_results={wrong_results} hangs={hangs} "
          f"leaked_segments={len(leaked)} orphan_processes={len(orphans)} "
          f"restarts={pool.restarts} max_sigint_latency={max_sigint:.2f}s "
          f"slow_sigint={slow_sigint} start_method={pool.start_method} "
          f"elapsed={time.monotonic() - t_start:.0f}s", flush=True)
    ok = (not wrong and not wrong_results and not hangs and not leaked and not orphans
          and n_right == n_inj)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
