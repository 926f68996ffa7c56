"""The repeated-call cache against outside oracles (issue 23): a hypothesis state machine
interleaves cached, repeated and bound calls with everything a user can change between them
(in-place reshapes, dtype views, offsets and strides of views of one block, frees and new
blocks of the same size, scalars of other types, signs and NaN payloads, small plain arrays
mutated, reshaped and retyped in place, replaced files) and compares every result with the
same call on the pool with the cache off (``progress=`` takes the planned path), the inline
backend and NumPy. Which key component each rule guards is listed in the docstrings (each
was checked by dropping it from _cache.py / SharedArray._ident).

Mutation check (tests/cache_mutations.py breaks one part in the installed copy; the state
machine fails on each, in the rule named): the SharedArray key's shape, dtype, offset,
strides, block or file inode dropped (call_reduce, x_sweep), the shape setter not re-keying
(x_sweep), NaNs keyed by float.hex (call_reduce), a scalar's type dropped (scalar_sweep), a
plain array's shape+strides, dtype or bytes dropped from its values (call_bound,
bind_change_call), a bound call's reshape check or values check dropped (bind_change_call,
call_bound). Not caught, by design: writability (for shared memory always true; for a file
the block's ref already says read-only) and per-block invalidation dropped (keys name unique
blocks, so a stale entry is never matched: test_doorbell checks the invalidation itself).

Kernel redefinitions are two kernel objects here (affine, weighted_sum: the kernel object is
part of the key); the by-value redefinition rule comes with the kernel's content token."""
from __future__ import annotations

import gc
import os
import struct

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import sharedcompute as sc
from cachekernels import affine, affine_numpy, returns_when_negative, weighted_sum
from conftest import shared_pool
from sharedcompute.errors import ArrayInUseError, InputError, KernelError

N = 2400
SHAPES = [(40, 60), (60, 40), (48, 50)]
W_SHAPES = [(8,), (2, 4), (4, 2)]


def nan(payload: int = 0, negative: bool = False) -> float:
    bits = (negative << 63) | 0x7FF8000000000000 | payload
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


SCALARS = [1.5, 0.0, -0.0, nan(), nan(negative=True), nan(12345), nan(12345, True),
           2**40, 2.0**40, np.float64(2.0**40), 3, 3.0, -1.25]
X_KINDS = ["xa", "xb", "int64 view", "offset 0", "offset 1", "strided", "half rows", "file"]


def _off(done: int, total: int) -> None:
    """progress= callback: a call with one is planned and sent, never cached."""


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = shared_pool(2, "forkserver")
        self.inline = sc.Pool(2, backend="inline")
        self.rng = np.random.default_rng(7)
        self.arrays: list = []  # everything to free at teardown
        self.files: list = []  # replaced files stay open (their old blocks stay live)
        self.xa = self._new()
        self.xb = self._new()
        self.base = self.pool.array(self.rng.standard_normal(2 * N + 8))
        self.out = self.pool.zeros(N)
        self.arrays += [self.base, self.out]
        self.shape = SHAPES[0]
        self.x_kind = "xa"
        self.s: object = 1.5
        self.w = np.arange(1.0, 9.0)  # one object, changed in place only
        self.bound: list = []
        self.path = os.path.join(self.tmp, "x.npy")
        self._write_file()
        self._reshape_all()

    tmp = ""  # set by the test (tmp_path)

    def _new(self):
        a = self.pool.array(self.rng.standard_normal(N) * 10)
        self.arrays.append(a)
        return a

    def _write_file(self) -> None:
        np.save(self.path + ".tmp.npy", self.rng.standard_normal(N))
        os.replace(self.path + ".tmp.npy", self.path)  # a new inode under the same path
        self.fx = self.pool.open(self.path, "r")
        self.files.append(self.fx)

    def _reshape_all(self) -> None:
        for a in (self.out, self.xa, self.xb):
            a.shape = self.shape

    def x(self):
        """The x argument of kind self.x_kind, made afresh (views of one block differ only
        in dtype, offset or strides)."""
        r, c = self.shape
        k = self.x_kind
        if k == "xa":
            return self.xa
        if k == "xb":
            return self.xb
        if k == "int64 view":
            return self.xa.view(np.int64)
        if k == "offset 0":
            return self.base[:N].reshape(self.shape)
        if k == "offset 1":
            return self.base[1:1 + N].reshape(self.shape)
        if k == "strided":  # offset 0's shape, other strides
            return self.base[:2 * N].reshape(2 * r, c)[::2]
        if k == "half rows":  # offset 0's strides, another shape (map refuses it)
            return self.base[:N].reshape(self.shape)[:r // 2]
        return self.fx.reshape(self.shape)

    # -- what changes between calls ------------------------------------------------------------
    @rule(i=st.integers(0, len(SHAPES) - 1))
    def reshape_in_place(self, i):
        """Key: shape and strides (a.shape = ... keeps the object; issue 23 #2)."""
        self.shape = SHAPES[i]
        self._reshape_all()

    @rule(kind=st.sampled_from(X_KINDS))
    def pick_x(self, kind):
        """Key: block (xa/xb), dtype (int64 view), offset (offset 0/1), strides (strided),
        shape (half rows), the file's inode (file)."""
        self.x_kind = kind

    @rule(s=st.sampled_from(SCALARS))
    def set_scalar(self, s):
        """Key: a scalar's type (2**40 vs 2.0**40: an int cube wraps) and bits (-0.0,
        NaN sign and payload; issue 23 #6)."""
        self.s = s

    @rule(k=st.integers(0, 7), v=st.sampled_from([0.5, -2.0, 1e300, -0.0]))
    def mutate_w(self, k, v):
        """Values: a small plain array's bytes."""
        self.w.flat[k] = v if self.w.dtype == np.float64 else int(v) % 1000

    @rule(i=st.integers(0, len(W_SHAPES) - 1))
    def reshape_w(self, i):
        """Key and values: a small plain array's shape (w.shape = ...; issue 23 #5)."""
        self.w.shape = W_SHAPES[i]

    @rule()
    def retype_w(self):
        """Key and values: a small plain array's dtype (w.dtype = ..., same bytes)."""
        self.w.dtype = np.int64 if self.w.dtype == np.float64 else np.float64

    @rule(which=st.sampled_from(["xa", "xb"]))
    def free_and_allocate(self, which):
        """A freed block and a new one of the same size: per-block invalidation."""
        try:
            getattr(self, which).free()
        except ArrayInUseError:  # a bound call holds a view of it: refused, as it should
            return
        a = self._new()
        a.shape = self.shape
        setattr(self, which, a)

    @rule(reduce=st.booleans())
    def replace_file(self, reduce):
        """A replaced file reopened: same path, a new inode (the old mapping stays open),
        called before and after."""
        self.x_kind = "file"
        call = self.call_reduce if reduce else lambda: self.call_map(False)
        call()
        self._write_file()
        call()

    # -- calls ---------------------------------------------------------------------------------
    def _compare(self, op, kernel, args, got):
        """got: the cached call's outcome (("ok", value) or ("err", type)); the oracles: the
        same call with the cache off, inline, and NumPy."""
        call = self.pool.map if op == "map" else self.pool.reduce
        try:
            want = ("ok", _copy(call(kernel, *args, progress=_off)))
        except Exception as exc:  # noqa: BLE001 - compared below
            want = ("err", type(exc))
        assert got[0] == want[0], (got, want)
        if got[0] == "err":
            assert got[1] is want[1], (got, want)
            return
        inline = (self.inline.map if op == "map" else self.inline.reduce)(kernel, *args)
        assert _bits(np.asarray(got[1])).tobytes() == _bits(np.asarray(want[1])).tobytes()
        assert _bits(np.asarray(inline)).tobytes() == _bits(np.asarray(want[1])).tobytes()
        if op == "map":
            np.testing.assert_array_equal(got[1], affine_numpy(args[1], args[2], args[3]))

    def _cached(self, op, kernel, args):
        call = self.pool.map if op == "map" else self.pool.reduce
        try:
            return ("ok", _copy(call(kernel, *args)))
        except Exception as exc:  # noqa: BLE001 - compared with the oracles
            return ("err", type(exc))

    @rule(twice=st.booleans())
    def call_map(self, twice):
        args = (self.out, self.x(), self.s, self.w)
        for _ in range(1 + twice):  # the second one is rung when the first was cached
            self._compare("map", affine, args, self._cached("map", affine, args))

    @rule(ss=st.lists(st.sampled_from(SCALARS), min_size=2, max_size=5))
    def scalar_sweep(self, ss):
        """Calls that differ in their scalar only: sent as new values to the cached call."""
        for s in ss:
            self.s = s
            args = (self.out, self.x(), s, self.w)
            self._compare("map", affine, args, self._cached("map", affine, args))

    @rule(kinds=st.permutations(X_KINDS), reduce=st.booleans())
    def x_sweep(self, kinds, reduce):
        """Calls that differ in x only: views of one block that differ in one key part."""
        for k in kinds:
            self.x_kind = k
            if reduce:
                self.call_reduce()
            else:
                self.call_map(False)

    @rule()
    def call_reduce(self):
        args = (self.x(), self.s, self.w)
        for _ in range(2):
            self._compare("reduce", weighted_sum, args,
                          self._cached("reduce", weighted_sum, args))

    @rule(reduce=st.booleans())
    def bind(self, reduce):
        kernel, args = ((weighted_sum, (self.x(), self.s, self.w)) if reduce else
                        (affine, (self.out, self.x(), self.s, self.w)))
        try:
            b = self.pool.bind(kernel, *args)
        except Exception:  # noqa: BLE001 - a call planning refuses: checked by call_map
            return
        self.bound = (self.bound + [(b, kernel, args)])[-4:]

    @precondition(lambda self: self.bound)
    @rule(i=st.integers(0, 3))
    def call_bound(self, i):
        """A bound call after whatever changed since it was bound (issue 23 #5)."""
        if not self.bound:  # bind() refused the call
            return
        b, kernel, args = self.bound[i % len(self.bound)]
        op = "reduce" if kernel is weighted_sum else "map"
        for _ in range(2):
            try:
                got = ("ok", _copy(b()))
            except Exception as exc:  # noqa: BLE001
                got = ("err", type(exc))
            self._compare(op, kernel, args, got)

    @rule(reduce=st.booleans(), change=st.sampled_from(
        ["reshape w", "retype w", "mutate w", "reshape arrays", "none"]),
        i=st.integers(0, len(SHAPES) - 1))
    def bind_change_call(self, reduce, change, i):
        """A bound call, called, then one in-place change, then called again (issue 23
        #2 and #5: the bound call's fast path must see each)."""
        self.bind(reduce)
        self.call_bound(len(self.bound) - 1)
        if change == "reshape w":
            self.reshape_w(i)
        elif change == "retype w":
            self.retype_w()
        elif change == "mutate w":
            self.mutate_w(i, -2.0)
        elif change == "reshape arrays":
            self.reshape_in_place(i)
        self.call_bound(len(self.bound) - 1)

    def teardown(self) -> None:
        self.bound = []
        gc.collect()  # views held by a failed example's traceback
        for a in self.arrays + self.files:
            if not a.freed:
                a.free()
        self.inline.close()


def _copy(x):
    return np.array(x, copy=True) if isinstance(x, (np.ndarray, sc.SharedArray)) else x


@pytest.mark.timeout(300)
def test_cached_and_bound_calls_match_the_uncached_call_inline_and_numpy(tmp_path):
    CacheMachine.tmp = str(tmp_path)
    run = CacheMachine.TestCase
    run.settings = settings(max_examples=int(os.environ.get("CACHE_STATE_EXAMPLES", 100)),
                            stateful_step_count=30, deadline=None, derandomize=True,
                            suppress_health_check=list(HealthCheck),
                            phases=[Phase.generate] if os.environ.get("CACHE_STATE_SHRINK") == "0"
                            else list(Phase))  # 0: mutation runs, which only need to fail
    run().runTest()


# -- one regression test per issue 23 item, each a few calls --------------------------------
def test_in_place_reshape_between_repeated_and_bound_calls():
    """Issue 23 #2: a reduce after a.shape = (60, 40) gave the (40, 60) answer."""
    pool = shared_pool(2, "forkserver")
    x = pool.array(np.arange(N, dtype=np.float64))
    w = np.arange(1.0, 9.0)
    try:
        x.shape = (40, 60)
        b = pool.bind(weighted_sum, x, 1.0, w)
        for _ in range(2):
            pool.reduce(weighted_sum, x, 1.0, w)
            b()
        x.shape = (60, 40)
        want = pool.reduce(weighted_sum, x, 1.0, w, progress=_off)
        assert pool.reduce(weighted_sum, x, 1.0, w) == want
        assert b() == want
    finally:
        x.free()


def test_a_numpy_view_of_the_written_block_is_refused_on_every_backend():
    """Issue 23 #3: the process pool pickled each worker's copy of np.asarray(out) at a
    different time; now refused as inline is (fails with the old in_process-only check)."""
    pool = shared_pool(2, "forkserver")
    out = pool.array(np.ones((40, 60)))
    inline = sc.Pool(2, backend="inline")
    try:
        for p in (pool, inline):
            with pytest.raises(InputError, match="shares memory"):
                p.map(affine, out, sc.whole(np.asarray(out)), 2.0, np.ones(8))
            with pytest.raises(InputError, match="shares memory"):
                p.map(affine, out, np.asarray(out)[1:], 2.0, np.ones(8))
    finally:
        inline.close()
        out.free()


def test_bound_call_sees_a_small_plain_array_reshaped_or_retyped_in_place():
    """Issue 23 #5: same bytes, other shape or dtype (fails when values ignore them)."""
    pool = shared_pool(2, "forkserver")
    out, x = pool.zeros((40, 60)), pool.array(np.ones((40, 60)))
    w = np.arange(1.0, 9.0)
    try:
        b = pool.bind(affine, out, x, 1.0, w)
        for change in (lambda: setattr(w, "shape", (2, 4)), lambda: setattr(w, "dtype", np.int64),
                       lambda: setattr(w, "shape", (8,))):
            b()
            change()
            np.testing.assert_array_equal(b(), affine_numpy(x, 1.0, w))
    finally:
        out.free()
        x.free()


def test_nan_sign_and_payload_reach_a_cached_call():
    """Issue 23 #6: float.hex() is 'nan' for every NaN, so -nan after nan ran with nan."""
    pool = shared_pool(2, "forkserver")
    out, x = pool.zeros((40, 60)), pool.array(np.ones((40, 60)))
    w = np.ones(8)
    try:
        for s in (nan(), nan(negative=True), nan(99), nan(99, True), nan()):
            got = pool.map(affine, out, x, s, w)
            assert np.all(np.signbit(got) == np.signbit(s)), s
            assert _bits(got[:1, :1]).tobytes() == struct.pack("<d", s), s
    finally:
        out.free()
        x.free()


def test_a_plain_python_map_kernel_that_returns_is_refused_on_a_cached_call():
    """Issue 23 #12: the worker's prepared run dropped the returned value."""
    pool = shared_pool(2, "forkserver")
    out, x = pool.zeros(N), pool.array(np.ones(N))
    try:
        with pytest.raises(KernelError, match="returned a value"):
            pool.map(returns_when_negative, out, x, -1.0, progress=_off)
        pool.map(returns_when_negative, out, x, 1.0)
        pool.map(returns_when_negative, out, x, 2.0)  # cached, new value
        with pytest.raises(KernelError, match="returned a value"):
            pool.map(returns_when_negative, out, x, -1.0)
    finally:
        out.free()
        x.free()
