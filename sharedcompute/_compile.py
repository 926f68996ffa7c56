"""How a kernel's functions are compiled: ``numba.njit(nogil=True)`` plus the kernel's numba
options (fastmath, error_model, parallel), validated; numba's on-disk cache, keyed by those
options too; and the one numba thread a parallel=True kernel runs its parallel code on.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from typing import Any, Callable

from .errors import InputError

try:
    import fcntl
except ImportError:  # Windows: saves unlocked, as numba's own
    fcntl = None  # type: ignore[assignment]

_cache_warned = False


def jit_function(func: Callable, options: dict | None = None) -> Callable:
    """numba.njit(nogil=True, **options), cached on disk unless SHAREDCOMPUTE_NUMBA_CACHE=0.

    A cache directory that cannot be written gives one warning and uncached compiles
    (numba raises 'no locator available' at decoration time otherwise; numba#4908).
    """
    global _cache_warned
    import numba
    from numba.core.registry import CPUDispatcher

    if isinstance(func, CPUDispatcher):
        return func
    options = options or {}
    use_cache = os.environ.get("SHAREDCOMPUTE_NUMBA_CACHE", "1") != "0"
    if use_cache:
        try:
            disp = numba.njit(nogil=True, cache=True, **options)(func)
            # numba#6845: numba's cache key leaves the options out (the same function with
            # and without fastmath= would load each other's code); numba#10128: workers
            # saving at once can leave another signature's code under an entry
            disp._cache = _kernel_cache(disp.py_func, options)
            return disp
        except RuntimeError as exc:  # no writable cache location
            interactive = not os.path.exists(func.__code__.co_filename)  # notebook, -c, stdin
            if not _cache_warned and not interactive:
                warnings.warn(f"sharedcompute: numba cache unavailable ({exc}); compiling "
                              "without a cache", RuntimeWarning, stacklevel=3)
                _cache_warned = True
    return numba.njit(nogil=True, **options)(func)


class WrongEntry(Exception):
    """A numba cache entry holds code compiled for other argument types (KernelCache)."""


#: the signature a KernelCache.load_overload asks for, while numba loads the entry
_wanted_sig: contextvars.ContextVar = contextvars.ContextVar("sharedcompute_wanted_sig")


@functools.lru_cache(maxsize=None)
def _kernel_cache_class() -> type:
    from numba.core import types
    from numba.core.caching import CompileResultCacheImpl, FunctionCache

    def conflict(want: Any, got: Any) -> bool:
        """Two argument types whose compiled code cannot stand in for each other."""
        if isinstance(want, types.Array) and isinstance(got, types.Array):
            return (want.dtype, want.ndim, want.layout, want.mutable) != (
                got.dtype, got.ndim, got.layout, got.mutable)
        return isinstance(want, types.Number) and isinstance(got, types.Number) and want != got

    def check(got: Any) -> None:
        """Raise WrongEntry if code for argument types ``got`` cannot serve the load."""
        want = _wanted_sig.get(None)
        if want is None:
            return
        got = tuple(got)
        if len(got) != len(want) or any(conflict(w, g) for w, g in zip(want, got)):
            raise WrongEntry(f"cached code for {got}, asked for {tuple(want)}")

    class CheckedImpl(CompileResultCacheImpl):
        """numba's rebuild of a cache entry, refused (WrongEntry) before it links the
        entry's code into this process when the entry's stored signature conflicts with
        the one asked for; after it only where the entry is laid out unlike numba's."""

        def rebuild(self, target_context: Any, payload: Any) -> Any:
            stored = stored_argtypes(payload)
            if stored is not None:
                check(stored)
            data = super().rebuild(target_context, payload)
            if stored is None:
                check(data.signature.args)
            return data

    class KernelCache(FunctionCache):
        """numba's on-disk cache of one kernel function, safe for a pool of processes.

        - Entries are keyed by the kernel's numba ``options`` too (numba#6845).
        - Saves are serialised by an flock in the cache directory: two workers saving
          their first signatures at once both read an index without the other's entry and
          picked the same data file, so one signature's entry then held the other's code
          (numba#10128, #4807; seen here: a read-only view ran the writable build, 5x
          slower, and with two dtypes that is another dtype's code on the data).
        - An entry whose code was compiled for other argument types is refused (numba
          then compiles, and saves it right) and the function's index started afresh, so
          a cache damaged before this lock, or by a process without it, heals. The check
          reads the signature stored in the entry's data file before numba rebuilds it
          (CheckedImpl), so the wrong code is never linked into this process.
        """
        _impl_class = CheckedImpl
        options = ""

        def _index_key(self, sig: Any, codegen: Any) -> tuple:
            return super()._index_key(sig, codegen) + (self.options,)

        @contextlib.contextmanager
        def _locked(self):
            try:
                if fcntl is None:
                    raise OSError("no flock")
                fd = os.open(os.path.join(self.cache_path, "sharedcompute-numba.lock"),
                             os.O_RDWR | os.O_CREAT, 0o644)  # one per cache directory
            except OSError:  # no flock, or no room for a lock file: numba's own behaviour
                yield
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

        def save_overload(self, sig: Any, data: Any) -> None:
            with self._locked():
                super().save_overload(sig, data)

        def load_overload(self, sig: Any, target_context: Any) -> Any:
            token = _wanted_sig.set(tuple(sig))
            try:
                return super().load_overload(sig, target_context)
            except WrongEntry:
                with self._locked():
                    self.flush()  # an empty index: every signature compiles and saves anew
                return None
            finally:
                _wanted_sig.reset(token)
    return KernelCache


def stored_argtypes(payload: Any) -> tuple | None:
    """The argument types a numba cache entry's code was compiled for, read from its data
    file's tuple (numba's ``CompileResult._reduce``: libdata, fndesc, environment,
    signature, ...) before it is rebuilt. None when the tuple is laid out otherwise
    (another numba version): CheckedImpl checks the rebuilt result instead."""
    from numba.core.typing.templates import Signature

    if isinstance(payload, tuple) and len(payload) >= 4 and isinstance(payload[3], Signature):
        return tuple(payload[3].args)
    return None


def _kernel_cache(py_func: Callable, options: dict) -> Any:
    """numba's cache of ``py_func`` for a kernel: keyed by ``options``, saves locked,
    entries checked against the signature asked for (KernelCache)."""
    cache = _kernel_cache_class()(py_func)
    cache.options = repr(sorted((k, sorted(v) if isinstance(v, set) else v)
                                for k, v in options.items()))
    return cache


def rejit_function(func: Callable, options: dict | None = None) -> Callable:
    """A new dispatcher of ``func``'s current code, with its own numba options if it has."""
    py_func = getattr(func, "py_func", func)
    own = getattr(func, "targetoptions", None)
    if own is None:
        return jit_function(py_func, options)
    import numba
    return numba.njit(**own)(py_func)


#: fastmath= flags numba passes to LLVM (numba's FastMathOptions; "fast" sets them all).
FASTMATH_FLAGS = frozenset({"fast", "nnan", "ninf", "nsz", "arcp", "contract", "afn",
                            "reassoc"})
ERROR_MODELS = ("python", "numpy")


def numba_options(name: str, jit: bool, fastmath: Any = False, error_model: Any = "python",
                  parallel: Any = False) -> dict:
    """The numba.njit options a kernel adds to ``nogil=True``, validated; only those that
    differ from numba's defaults, so a kernel without them compiles (and hashes) as before.

    >>> numba_options("k", True, fastmath={"nnan", "contract"}, error_model="numpy")
    {'fastmath': ('contract', 'nnan'), 'error_model': 'numpy'}
    """
    out: dict = {}
    if isinstance(fastmath, (set, frozenset, list, tuple)):
        unknown = sorted(str(f) for f in fastmath if f not in FASTMATH_FLAGS)
        if unknown:
            raise InputError(f"kernel {name}: fastmath flags {unknown} are not numba's; use "
                             f"True or a set of {sorted(FASTMATH_FLAGS)}")
        if fastmath:
            out["fastmath"] = tuple(sorted(fastmath))  # sorted: a set's order varies
    elif fastmath is True:
        out["fastmath"] = True
    elif fastmath is not False:
        raise InputError(f"kernel {name}: fastmath={fastmath!r} must be False, True or a set "
                         f"of flags from {sorted(FASTMATH_FLAGS)}, e.g. {{'nnan', 'contract'}}")
    if error_model not in ERROR_MODELS:
        raise InputError(f"kernel {name}: error_model={error_model!r} must be 'python' "
                         "(ZeroDivisionError, the default) or 'numpy' (inf/nan, as NumPy)")
    if error_model == "numpy":
        out["error_model"] = "numpy"
    if parallel is True:
        out["parallel"] = True
    elif parallel is not False:
        raise InputError(f"kernel {name}: parallel={parallel!r} must be True or False")
    if out and not jit:
        raise InputError(f"kernel {name}: {sorted(out)} are numba options; jit=False runs the "
                         "function as plain Python, so drop them or drop jit=False")
    return out


def njit_kwargs(options: dict) -> dict:
    """``numba_options``' dict as numba.njit takes it (fastmath flags as a set)."""
    return {k: set(v) if k == "fastmath" and v is not True else v for k, v in options.items()}


def check_dispatcher(name: str, func: Callable | None, options: dict) -> None:
    """A function numba-compiled already keeps its own options: refuse others."""
    own = getattr(func, "targetoptions", None)
    if own is None or not options:
        return
    mine = njit_kwargs(options)
    if any(own.get(k) != v for k, v in mine.items()):
        raise InputError(f"kernel {name}: the function is numba-compiled already with "
                         f"{dict(own)}; pass the plain function to @sc.kernel(...{mine}) or "
                         "set the options on your numba.njit")


@contextlib.contextmanager
def one_numba_thread(parallel: bool) -> Any:
    """A parallel=True kernel called in this process runs its parallel code on one numba
    thread, as each worker does, so the direct call gives the pool's bits (a prange
    reduction's grouping depends on the thread count). numba's count is per thread."""
    if not parallel:
        yield
        return
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)
