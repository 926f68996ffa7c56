"""Doorbell: microsecond signalling between the parent and its workers through shared memory.

A pipe round trip costs ~70 us here (the OS puts the reader to sleep and wakes it); two
processes polling a word in shared memory see each other's writes in ~2 us. So a call the
workers have seen before (same kernel and arrays: its task is cached in each worker under a
memo id) is started by writing (memo id, sequence number) into each worker's line of a small
shared block, with new scalar values (or small plain arrays) pickled into the line when they
changed (``VALUES``), and its result comes back the same way:

    parent                              worker i (after a task: polls its line for SPIN_S,
    line[MEMO], line[RING] = id, seq      then sleeps in recv() on its pipe)
    fence; if line[W_ASLEEP]: send wake  ──▶ runs the cached task
    polls line[DONE] for SPIN_S  ◀──────── writes result bytes, stats, line[DONE] = seq
    then sleeps in wait() on pipes        fence; if line[P_ASLEEP]: send ("done", seq)
    and sentinels (a crash is noticed)

Polling yields the core (sched_yield) on every turn and lasts at most SPIN_S, so an idle pool
burns nothing and two workers plus the parent share two cores. Sleeping is safe from lost
wake-ups by Dekker's rule: each side writes its own "asleep" flag, issues a full fence, then
re-reads the other side's word; the fence is a CPython lock acquire (a locked instruction on
x86). Without such ordering guarantees (not x86), or without ``sched_yield`` (not POSIX),
the doorbell is off and every call uses the pipes. Errors and results over RESULT_BYTES
still travel through the pipe. After a pause the workers sleep, and waking one takes about
a millisecond on a VM: a call that may be rung wakes them first (``wake_sleepers``), so
they wake while the parent checks the call, and a worker woken so polls WOKEN_SPIN_S for
the ring.

The loops stay in Python: compiled with numba (atomic loads, ``mfence``, ``sched_yield``
declared by name), a bare two-worker round trip took 8.3 us against 8.7 us for these
memoryview loops, measured side by side; the rest is the scheduler sharing two cores among
three processes, and not worth numba's start-up in every parent.

The stats words of a line are the worker's running totals over its rung calls (read by
``Lines.totals`` for Pool.insights), so a call costs the parent no bookkeeping.
"""
from __future__ import annotations

import os
import pickle
import platform
import threading
import time
from typing import Any

HEADER_WORDS = 16                       # 128 bytes: two cache lines per worker
# The layout of a worker's line header, declared once: each field is one 8-byte word (int64,
# or float64 for the running totals). Two fields once shared word 8 (the barrier's abort
# epoch wrote over worker 0's compile seconds); _check_layout refuses that at import.
LINE_LAYOUT = (
    ("RING", 0),        # the sequence number of the last rung call
    ("MEMO", 1),        # the memo id it runs
    ("W_ASLEEP", 2),    # the worker sleeps in recv()
    ("DONE", 3),        # the sequence number of the last call answered
    ("P_ASLEEP", 4),    # the parent sleeps in wait()
    ("RESULT_LEN", 5),  # bytes of the result in the result area
    ("PIPE_SENT", 6),   # pipe messages the parent sent
    ("ARRIVED", 7),     # SpinBarrier: arrivals
    ("ABORTED", 8),     # SpinBarrier: the epoch aborted (line 0)
    ("COMPILE_S", 9),   # running totals (float64) of rung calls
    ("COMPUTE_S", 10),
    ("BUSY_S", 11),
    ("VALUES", 12),     # bytes of new argument values in the result area (0: none)
    ("RUNG", 13),       # how many rung calls the worker answered through its line
)


def _check_layout(layout: tuple, words: int) -> None:
    taken: dict[int, str] = {}
    for name, word in layout:
        if not 0 <= word < words or word in taken:
            raise AssertionError(f"doorbell line layout: {name} at word {word} overlaps "
                                 f"{taken.get(word, 'the end of the header')}")
        taken[word] = name


_check_layout(LINE_LAYOUT, HEADER_WORDS)
(RING, MEMO, W_ASLEEP, DONE, P_ASLEEP, RESULT_LEN, PIPE_SENT, ARRIVED, ABORTED, COMPILE_S,
 COMPUTE_S, BUSY_S, VALUES, RUNG) = (word for _, word in LINE_LAYOUT)
RESULT_BYTES = 4096                     # reduce partials fit; bigger results use the pipe
LINE_BYTES = HEADER_WORDS * 8 + RESULT_BYTES
MAX_SPIN_US = 100_000  # polling longer than 0.1 s before sleeping only burns idle cores


def _spin_us(text: str | None, default: float = 500.0) -> float:
    """SHAREDCOMPUTE_SPIN_US, checked: a bad value warns and falls back, never breaks import."""
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= MAX_SPIN_US:  # also NaN
        import warnings
        warnings.warn(f"sharedcompute: SHAREDCOMPUTE_SPIN_US={text!r} is not a number of "
                      f"microseconds in [0, {MAX_SPIN_US}]; using {default:g}", RuntimeWarning,
                      stacklevel=2)
        return default
    return value


SPIN_S = _spin_us(os.environ.get("SHAREDCOMPUTE_SPIN_US")) / 1e6
WOKEN_SPIN_S = 0.01  # a worker woken ahead of a call polls this long for the ring: the
# parent's checks of a call after a pause take 1-3 ms on the 2-vCPU VM (warm: 50 us)

# x86 keeps stores in order and a locked instruction orders stores before later loads.
ENABLED = (platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") and SPIN_S > 0
           and os.name == "posix")

_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory barrier: acquiring an uncontended CPython lock is an atomic
    compare-and-swap (sem_trywait before 3.13, PyMutex after), a locked instruction on x86."""
    _fence_lock.acquire()
    _fence_lock.release()


def pack_values(pairs: list) -> bytes:
    """The wire format of a rung call's new values (Lines.set_values, Lines.values)."""
    return pickle.dumps(pairs, pickle.HIGHEST_PROTOCOL)


class Lines:
    """The worker lines of one pool, over a block every process maps (a multiprocessing
    RawArray: its file is unlinked at once, so nothing can leak from /dev/shm)."""

    def __init__(self, raw: Any, n_workers: int):
        self.raw = raw
        self.n_workers = n_workers
        buf = memoryview(raw).cast("B")
        self.words = buf.cast("q")
        self.floats = buf.cast("d")
        self.bytes = buf
        self.stride = LINE_BYTES // 8
        # each line's PIPE_SENT word, which the parent bumps after every pipe send so that a
        # polling worker knows a message waits without a system call (ProcessExecutor.send)
        self.pipe_sent = self.words[PIPE_SENT::self.stride]

    @classmethod
    def create(cls, ctx: Any, n_workers: int) -> "Lines":
        return cls(ctx.RawArray("b", LINE_BYTES * n_workers), n_workers)

    def word(self, i: int, field: int) -> int:
        return self.words[i * self.stride + field]

    def set_word(self, i: int, field: int, value: int) -> None:
        self.words[i * self.stride + field] = value

    def totals(self, i: int) -> tuple:
        """Worker i's running totals over its rung calls: compile, compute and busy seconds,
        and how many calls."""
        base = i * self.stride
        f = self.floats
        return f[base + COMPILE_S], f[base + COMPUTE_S], f[base + BUSY_S], self.words[base + RUNG]

    def result(self, i: int) -> bytes:
        start = i * LINE_BYTES + HEADER_WORDS * 8
        return bytes(self.bytes[start:start + self.word(i, RESULT_LEN)])

    def set_values(self, active: list[int], data: bytes) -> bool:  # data: pack_values
        """Before ringing: the pickled (index, value) pairs a rung call runs with (empty:
        the values it had). Every ring sets it, so none is left over for another call."""
        if len(data) > RESULT_BYTES:
            return False
        for i in active:
            if data:
                start = i * LINE_BYTES + HEADER_WORDS * 8
                self.bytes[start:start + len(data)] = data
            self.set_word(i, VALUES, len(data))
        return True

    def values(self, i: int) -> list:
        """A rung call's new argument values, [(argument index, value)] (read them before
        the result overwrites them)."""
        n = self.word(i, VALUES)
        start = i * LINE_BYTES + HEADER_WORDS * 8
        return pickle.loads(self.bytes[start:start + n])

    def release(self) -> None:
        for view in (self.pipe_sent, self.words, self.floats, self.bytes):
            view.release()


# -- polling -----------------------------------------------------------------------------------
ANSWERED, ASLEEP, SPUN_OUT = 0, 1, 2  # what ring() saw


def _poll(ready: Any, budget_s: float) -> bool:
    """Call ``ready()`` until it is true, yielding the core between calls, for at most
    ``budget_s`` (the clock is read from the second turn on: most waits end before)."""
    if ready():
        return True
    yield_core, clock = os.sched_yield, time.perf_counter
    deadline = clock() + budget_s
    while True:
        yield_core()
        if ready():
            return True
        if clock() >= deadline:
            return False


def _done_at(words: Any, at: list[int], seq: int, budget_s: float) -> bool:
    """Poll the words at indices ``at`` until all hold ``seq``, for at most budget_s."""
    def all_done() -> bool:
        for k in at:
            if words[k] != seq:
                return False
        return True
    return _poll(all_done, budget_s)


class SpinBarrier:
    """The barrier between ``iterate`` sweeps, in the same lines: each worker raises its own
    arrival count and polls everyone else's (no semaphore, no parent); after SPIN_S it
    sleeps in growing steps of at most 1 ms. Counts start at ``seq << 32`` for each call, so
    a call that failed half-way leaves nothing behind for the next one."""

    def __init__(self, lines: Lines, index: int):
        self.lines, self.index = lines, index
        self.epoch = self.count = 0

    def begin(self, seq: int) -> None:
        self.epoch = seq
        self.count = seq << 32

    def _aborted(self) -> bool:
        return self.lines.word(0, ABORTED) == self.epoch

    def wait(self) -> None:
        lines = self.lines
        words, stride, n = lines.words, lines.stride, lines.n_workers
        self.count += 1
        target, epoch = self.count, self.epoch
        lines.set_word(self.index, ARRIVED, target)

        def passed() -> bool:
            for j in range(n):
                if words[j * stride + ARRIVED] < target:
                    return words[ABORTED] == epoch
            return True

        if not _poll(passed, SPIN_S):
            nap = 20e-6
            while not passed():
                time.sleep(nap)
                nap = min(nap * 2, 1e-3)
        if self._aborted():
            raise threading.BrokenBarrierError

    def abort(self) -> None:
        self.lines.set_word(0, ABORTED, self.epoch)

    def reset(self) -> None:
        """Nothing to do: each call's epoch starts the counts afresh."""


class SemaphoreBarrier:
    """The fallback where the doorbell is off: a multiprocessing.Barrier behind the same
    begin/wait/abort/reset interface (an aborted one stays broken until reset)."""

    def __init__(self, ctx: Any, n_workers: int):
        self._barrier = ctx.Barrier(n_workers)

    def begin(self, seq: int) -> None:
        """Nothing to do: the parent resets the barrier before each iterate call."""

    def wait(self) -> None:
        self._barrier.wait()

    def abort(self) -> None:
        self._barrier.abort()

    def reset(self) -> None:
        self._barrier.reset()


def make_barrier(ctx: Any, lines: "Lines | None", n_workers: int) -> "SemaphoreBarrier | None":
    """What the parent hands its workers for iterate's sweeps: nothing when they meet in the
    lines (SpinBarrier), else a semaphore barrier (~14 ms to create, so only then)."""
    return SemaphoreBarrier(ctx, n_workers) if lines is None else None


# -- the parent's half of the protocol -----------------------------------------------------
def ring(lines: Lines, active: list[int], memo: int, seq: int, clear_values: bool = True,
         spin: bool = True) -> int:
    """Start call ``seq`` of the cached task ``memo`` on the ``active`` workers and poll for
    their answers: ANSWERED (all, within SPIN_S), SPUN_OUT, or ASLEEP (a worker went to
    sleep before it saw the ring: the caller wakes every worker whose W_ASLEEP is set;
    Dekker: flag, fence, re-read). ``clear_values``: the call runs with the values it had
    (else set_values wrote new ones). ``spin=False``: no polling (SPUN_OUT at once), for a
    call that takes far longer than SPIN_S: polling would only take cores from workers."""
    words, stride = lines.words, lines.stride
    for i in active:
        base = i * stride
        if clear_values:
            words[base + VALUES] = 0
        words[base + MEMO] = memo
        words[base + RING] = seq
    fence()  # a worker writes W_ASLEEP before re-reading RING
    for i in active:
        if words[i * stride + W_ASLEEP]:
            return ASLEEP
    return ANSWERED if spin and _done_at(words, [i * stride + DONE for i in active], seq,
                                         SPIN_S) else SPUN_OUT


def await_answers(lines: Lines, pending: set, seq: int, sleep: Any, spin: bool = True) -> None:
    """Poll the pending workers' DONE words for SPIN_S (unless ``spin`` is False: ring()
    did), then sleep: ``sleep()`` waits on the pipes and sentinels and removes workers that
    answered (or failed) through a pipe."""
    def all_done() -> bool:
        for i in list(pending):
            if lines.word(i, DONE) == seq:
                pending.discard(i)
        return not pending

    if (spin and _poll(all_done, SPIN_S)) or all_done():
        return
    asleep = list(pending)
    for i in asleep:
        lines.set_word(i, P_ASLEEP, 1)
    fence()  # a worker writes DONE before re-reading P_ASLEEP
    try:
        while not all_done():
            sleep()
    finally:
        for i in asleep:
            lines.set_word(i, P_ASLEEP, 0)


def wake_sleepers(executor: Any) -> None:
    """Send ("wake",) to each worker asleep on its pipe, at the start of a call that may be
    rung: after a pause every worker sleeps, and waking one takes about a millisecond (an
    idle CPU of the VM); woken now, it wakes while the parent checks the call instead of
    after the ring, and polls WOKEN_SPIN_S for it. A worker still asleep at the ring is
    woken then, as before (the second wake is read and dropped). A dead worker's pipe is
    left to the call, which says the worker crashed."""
    lines = executor.lines
    for i in range(lines.n_workers):
        if lines.word(i, W_ASLEEP):
            try:
                executor.send(i, ("wake",))
            except OSError:
                return


# -- the worker's half ---------------------------------------------------------------------
class WorkerBell:
    """Worker i's view of its line: wait for a rung call or a pipe message, answer a call."""

    def __init__(self, lines: Lines, index: int):
        self.lines, self.index = lines, index
        self.pipe_seen = self.last_ring = 0
        words, stride = lines.words, lines.stride
        self.base = base = index * stride
        ring_at, pipe_at = base + RING, base + PIPE_SENT

        def called() -> bool:  # polled in a tight loop: locals only, no method calls
            # PIPE_SENT is counted after the send, so it can lag behind what we received: ">"
            return words[ring_at] != self.last_ring or words[pipe_at] > self.pipe_seen
        self._called = called

    def wait(self, budget_s: float = 0.0) -> str:
        """"ring" (a cached call was rung: see memo()) or "pipe" (read the pipe, which may
        block: the parent counts every send, and wakes a worker flagged asleep). Polls for
        ``budget_s`` (woken ahead of a call: WOKEN_SPIN_S), else SPIN_S, before sleeping."""
        lines, i = self.lines, self.index
        while True:
            ring_seq = lines.word(i, RING)
            if ring_seq != self.last_ring:
                self.last_ring = ring_seq
                return "ring"
            if not _poll(self._called, max(budget_s, SPIN_S)):
                lines.set_word(i, W_ASLEEP, 1)
                fence()  # the parent reads W_ASLEEP after writing RING
                if self._called():
                    lines.set_word(i, W_ASLEEP, 0)
                    continue
                return "pipe"
            if lines.word(i, PIPE_SENT) > self.pipe_seen:
                return "pipe"

    def got_pipe_message(self) -> None:
        self.pipe_seen += 1
        self.lines.set_word(self.index, W_ASLEEP, 0)

    def memo(self) -> int:
        return self.lines.words[self.base + MEMO]

    def has_values(self) -> bool:
        """Whether the rung call carries new argument values (Lines.values)."""
        return self.lines.words[self.base + VALUES] != 0

    def answer(self, seq: int, data: bytes, stats: Any, t0: float, conn: Any) -> bool:
        """Answer call ``seq`` through the line, adding its seconds (a _evaluate.Stats, since
        perf_counter ``t0``) to the line's totals; False when ``data`` does not fit (send it
        through the pipe). A parent that went to sleep gets ("done", seq) through ``conn``."""
        n = len(data)
        if n > RESULT_BYTES:
            return False
        lines, base = self.lines, self.base
        if n:
            start = base * 8 + HEADER_WORDS * 8
            lines.bytes[start:start + n] = data
        words, floats = lines.words, lines.floats
        words[base + RESULT_LEN] = n
        if stats.compile_s:
            floats[base + COMPILE_S] += stats.compile_s
        floats[base + COMPUTE_S] += stats.compute_s
        floats[base + BUSY_S] += time.perf_counter() - t0
        words[base + RUNG] += 1
        words[base + DONE] = seq
        fence()  # the parent writes P_ASLEEP before re-reading DONE
        if words[base + P_ASLEEP]:
            conn.send(("done", seq))
        return True
