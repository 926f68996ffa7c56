"""The ``@kernel`` decorator: a numba-compiled loop (or, with ``jit=False``, any Python
function of NumPy views) plus how the engine may split it.

A Kernel records what the engine needs: which arguments it writes, which it needs whole,
its halo depth and boundary, whether it is a reduction (``combine``) or a scan (``totals``),
whether it wants its rows' global position, its plain-NumPy reference and tolerance.
A kernel reaches the workers by module and name, checked by content, or by value where
they could not import it (a notebook cell, ``__main__``, a function's local): _identity.py.
"""
from __future__ import annotations

import inspect
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Generic, Literal, Sequence, TypeVar, overload

import numpy as np

from . import _identity
from ._compile import (check_dispatcher, jit_function, njit_kwargs, numba_options,
                       one_numba_thread, rejit_function)
from .errors import InputError, KernelNotSendableError
from .partition import check_boundary, check_halo

if TYPE_CHECKING:
    from typing import TypedDict

    from typing_extensions import Unpack  # typing.Unpack is 3.11+; only mypy reads this

    from .shared import SharedArray

    class _Options(TypedDict, total=False):
        """The keywords of :func:`kernel` that do not change what a call returns."""
        reference: Callable[..., Any] | None
        whole: Sequence[str]
        boundary: Any
        position: bool | Literal["edges"]
        halo: dict[str, tuple[int, int]]
        totals: Callable[..., Any] | None
        identity: Any
        rtol: Any
        atol: Any
        check: Callable[..., Any] | None
        elementwise: bool
        jit: bool
        schedule: str
        idempotent: bool | None
        fastmath: bool | set[str] | frozenset[str]
        error_model: str
        parallel: bool

R_co = TypeVar("R_co", covariant=True)  # what pool.map or pool.reduce returns
_T = TypeVar("_T")  # a reduction's partial
_U = TypeVar("_U")  # its finalized value
_Func = Callable[..., Any]
# A literal halo depth: with combine= it makes a fused stencil, which map returns the
# written array of (a computed depth may be 0, a reduction: such kernels type as Any).
_Halo = Literal[1, 2, 3, 4, 5, 6, 7, 8]

REGISTRY: dict[str, "Kernel[Any]"] = {}
class Kernel(Generic[R_co]):
    """A numba kernel with its partitioning contract; create with :func:`kernel`.

    Calling it runs it in this process with exactly the partitioning, halos and combine
    order a pool of ``workers`` uses (default: as many as ``sc.Pool()`` starts), so
    ``kernel(*numpy_arrays, workers=n)`` is bitwise what ``pool.map`` gives on ``n``
    workers: a map kernel is called once per worker's share of the chunk grid, a reduction
    once per chunk (its result does not depend on the worker count).
    """

    def __init__(self, func: Callable, *, reference: Callable | None, combine: Callable | None,
                 finalize: Callable | None, writes: Sequence[str] | None, whole: Sequence[str],
                 depth: int, boundary: Any, position: bool | str, totals: Callable | None,
                 identity: Any, rtol: Any, atol: Any, check: Callable | None = None,
                 elementwise: bool = False, jit: bool = True, schedule: str = "static",
                 idempotent: bool | None = None, fastmath: Any = False,
                 error_model: str = "python", parallel: bool = False,
                 halo: dict | None = None):
        py_func = getattr(func, "py_func", func)
        self.py_func, self._code = py_func, py_func.__code__
        self._home = sys.modules.get(py_func.__module__)  # its module: reloaded if __spec__ changes
        self._spec = getattr(self._home, "__spec__", None)
        # what a worker needs to build it by value (reference, check, rtol, atol: caller only)
        self._options = dict(func=func, combine=combine, finalize=finalize, writes=writes,
                             whole=whole, depth=depth, boundary=boundary, position=position,
                             totals=totals, identity=identity, elementwise=elementwise,
                             jit=jit, schedule=schedule, idempotent=idempotent,
                             fastmath=fastmath, error_model=error_model, parallel=parallel,
                             halo=halo)
        self._token: str | None = None  # content_token(), fixed at first use
        self._reads: list = []  # the globals it read then, and its module's __spec__
        # (_identity.watch_list)
        self._by_value: tuple | None = None  # (source, cloudpickle bytes), made once
        self._sendable = False  # check_sendable passed (it runs per call)
        self._by_reference = False  # workers find it as module.qualname (check_sendable)
        self.name = py_func.__name__
        self.module = py_func.__module__
        self.qualname = py_func.__qualname__
        self.__doc__ = py_func.__doc__
        self.__name__, self.__qualname__, self.__module__ = self.name, self.qualname, self.module
        params = list(inspect.signature(py_func).parameters)
        self.n_extra = (1 if position else 0) + (1 if totals is not None else 0)
        self.params = params[: len(params) - self.n_extra] if self.n_extra else params
        if position not in (False, True, "edges"):
            raise InputError(f"kernel {self.name}: position={position!r} must be True (the "
                             "last parameter gets (start, stop, total)) or 'edges' (it gets "
                             "(first, last), two booleans)")
        if position and len(params) < 1:
            raise InputError(f"kernel {self.name}: position=True needs a last parameter for "
                             "(start, stop, total)")
        # A stencil (depth=) or a map with writes= that also declares combine= writes its
        # rows and returns their partial from the same pass (pool.iterate's residual).
        self.fused = combine is not None and totals is None and bool(depth or writes)
        self.kind = ("map" if self.fused else "reduce" if combine is not None
                     else "scan" if totals is not None else "map")
        if self.kind == "scan" and combine is None:
            self.combine = np.add
        if writes is None:
            writes = () if self.kind == "reduce" else tuple(self.params[:1])
        for label, names in (("writes", writes), ("whole", whole)):
            unknown = [n for n in names if n not in self.params]
            if unknown:
                raise InputError(f"kernel {self.name}: {label}={tuple(names)} names {unknown}, "
                                 f"which are not among its parameters {self.params}")
        if depth < 0 or int(depth) != depth:
            raise InputError(f"kernel {self.name}: depth={depth!r} must be a non-negative integer")
        if depth and self.kind != "map":
            raise InputError(f"kernel {self.name}: halos (depth=) apply to map kernels and to "
                             "stencils that also return a partial (combine=), not to scans")
        if elementwise and (depth or self.kind != "map"):
            raise InputError(f"kernel {self.name}: elementwise=True is for map kernels whose "
                             "output row i reads only row i of their inputs (no depth=)")
        self.elementwise = bool(elementwise)
        self.writes = tuple(self.params.index(n) for n in writes)
        self.whole = tuple(self.params.index(n) for n in whole)
        self.halo = check_halo(self.name, self.params, halo)  # {index: (before, after)}
        if set(self.halo) & set(self.writes + self.whole):
            raise InputError(f"kernel {self.name}: halo= is for read arguments split with "
                             "the output's rows; it names an argument in writes= or whole=")
        self.depth = int(depth)
        self.boundary = check_boundary(boundary)
        self.position = position
        self.reference = reference
        if combine is not None:
            self.combine = combine
        elif self.kind != "scan":
            self.combine = None
        self.finalize = finalize
        self.idempotent = _idempotent(self, combine, idempotent)
        self.identity = identity
        self.rtol, self.atol = rtol, atol
        self.check = check
        self.jit = bool(jit)
        self.schedule = check_schedule(schedule)
        # numba options beyond nogil=True (fastmath, error_model, parallel): part of the
        # content token, and of what a worker builds by value (_options)
        self.numba_options = numba_options(self.name, self.jit, fastmath, error_model, parallel)
        self.fastmath = self.numba_options.get("fastmath", False)
        self.error_model = self.numba_options.get("error_model", "python")
        self.parallel = bool(self.numba_options.get("parallel", False))
        for f in (func, totals):
            check_dispatcher(self.name, f, self.numba_options)
        # jit=False: the function runs as it is on each partition's views (NumPy, SciPy...)
        opts = njit_kwargs(self.numba_options)
        self.dispatcher = jit_function(func, opts) if self.jit else func
        self.totals = ((jit_function(totals, opts) if self.jit else totals) if totals is not None
                       else None)
        self._checked: tuple | None = None  # (dispatcher, totals) with bounds checks, on demand
        REGISTRY[f"{self.module}:{self.qualname}"] = self

    # -- running in this process -------------------------------------------------------------
    def __call__(self, *args: Any, rows: int | None = None, boundary: Any = None,
                 depth: int | None = None, boundscheck: bool | None = None,
                 workers: int | None = None, partial: bool = False, **kwargs: Any) -> Any:
        # partial=True: a fused kernel's (written, combined partial), as pool.map's.
        # The one upward import of the engine (as dask's Array.map_overlap imports overlap
        # lazily): running a kernel needs the executors, which import this module.
        from .local import run_inline
        self._refresh()
        with one_numba_thread(self.parallel):  # as in a worker (_system.limit_threads)
            return run_inline(self, self.ordered_args(args, kwargs), rows=rows, boundary=boundary,
                              depth=depth, boundscheck=boundscheck, workers=workers,
                              partial=partial)

    def ordered_args(self, args: Sequence[Any], kwargs: dict) -> tuple:
        """The call's arguments in parameter order: keyword arguments placed by name."""
        if not kwargs:
            return tuple(args)
        if len(args) > len(self.params):
            raise InputError(f"kernel {self.name} takes {len(self.params)} arguments "
                             f"{tuple(self.params)}, got {len(args)} positional ones")
        bound = list(args) + [_MISSING] * (len(self.params) - len(args))
        for name, value in kwargs.items():
            if name not in self.params:
                raise InputError(f"kernel {self.name} has no parameter {name!r}; its "
                                 f"parameters are {tuple(self.params)}")
            i = self.params.index(name)
            if bound[i] is not _MISSING:
                raise InputError(f"kernel {self.name} got {name!r} twice (by position and by "
                                 "name)")
            bound[i] = value
        missing = [self.params[i] for i, v in enumerate(bound) if v is _MISSING]
        if missing:
            raise InputError(f"kernel {self.name} is missing arguments {missing}")
        return tuple(bound)

    def bind(self, args: Sequence[Any], kwargs: dict) -> tuple:
        """Deprecated name of ``ordered_args`` ("bind" is Pool.bind's: a prepared call)."""
        warnings.warn("Kernel.bind is now Kernel.ordered_args", DeprecationWarning,
                      stacklevel=2)
        return self.ordered_args(args, kwargs)

    def compiled(self, boundscheck: bool = False) -> tuple[Any, Any]:
        """(kernel, totals) dispatchers; with ``boundscheck`` compiled with numba's index
        checks (uncached: a debugging build), so a read past the rows raises IndexError."""
        self._refresh()
        if not boundscheck or not self.jit:  # plain Python indexes its arrays checked
            return self.dispatcher, self.totals
        if self._checked is None:
            import numba
            checked = numba.njit(nogil=True, boundscheck=True,
                                 **njit_kwargs(self.numba_options))
            py_totals = getattr(self.totals, "py_func", None)
            self._checked = (checked(self.py_func),
                             checked(py_totals) if py_totals is not None else None)
        return self._checked

    def tolerance(self, dtype: np.dtype, n_terms: int | None = None,
                  args: Sequence[Any] = ()) -> tuple[float, float]:
        """(rtol, atol) for comparing one output of ``dtype`` with the reference.

        ``verify`` accepts ``|got - want| <= atol + rtol * scale`` elementwise, ``scale``
        being the larger of ``|want|`` and the reference run on ``|inputs|`` (sum|terms|
        for sums); ``n_terms`` is its estimate of how many input elements one output
        element can depend on, ``args`` the call's arguments (read-only copies).

        Defaults: integer and bool outputs are exact, (0, 0). Float and complex outputs,
        given ``n_terms``: ``rtol = (n_terms + 4) * eps`` and ``atol = (n_terms + 4) * eps
        * tiny`` (of ``dtype``; the atol covers underflow only). A sum or dot product of n
        terms, in any order, is within about ``n * eps/2 * sum|terms|`` of the exact value,
        so two correct implementations (chunked and pairwise, or a BLAS) differ by at most
        ``n * eps * sum|terms|``; the 4 covers elementwise roundings. Without ``n_terms``
        (callers that cannot size the computation, such as the benchmarks) the fixed
        defaults stay: ``4 * eps`` for maps, ``sqrt(eps)`` (rtol and atol) otherwise.

        A declared ``rtol=`` or ``atol=`` replaces its default: a number as it is; a callable
        is called as ``f(dtype, n_terms, *args)`` (``n_terms`` 1 when unknown), because the
        right tolerance often depends on the problem (an iteration count, an inner
        dimension, precision lower than the output's) and cannot be a constant.
        """
        dtype = np.dtype(dtype)
        if dtype.kind not in "fc":
            default = (0.0, 0.0)
        else:
            finfo = np.finfo(dtype)
            eps = float(finfo.eps)
            if n_terms is None:
                default = ((4 * eps, 0.0) if self.kind == "map"
                           else (float(np.sqrt(eps)), float(np.sqrt(eps))))
            else:
                k = max(int(n_terms), 1) + 4
                default = (k * eps, k * eps * float(finfo.tiny))

        def declared(value: Any, fallback: float) -> float:
            if value is None:
                return fallback
            if callable(value):
                return float(value(dtype, 1 if n_terms is None else int(n_terms), *args))
            return float(value)
        return declared(self.rtol, default[0]), declared(self.atol, default[1])

    # -- identity and sending to workers (_identity.py) ------------------------------------
    def content_token(self) -> str:
        """What this kernel computes, as 32 hex digits: its code, closure, defaults, the
        values of the globals it reads and its options (not its name alone). Made at first
        use, as numba fixes the globals a kernel compiles with, and made again when its
        module is reloaded or a global it read is rebound (``_refresh``)."""
        self._refresh()
        if self._token is None:
            self._reads = _identity.watch_list(self.py_func, self._home)
            self._token = _identity.token(self)
        return self._token

    def content_parts(self) -> tuple:
        o = self._options
        return (self.name, o["func"], o["combine"], o["finalize"], o["totals"], o["identity"],
                self.kind, self.writes, self.whole, self.depth, self.boundary, self.position,
                self.elementwise, self.jit, self.schedule, self.idempotent) + (
                    # only when given: a kernel without them keeps its token
                    (tuple(sorted(self.numba_options.items())),) if self.numba_options else ()) + (
                    (("halo", tuple(sorted(self.halo.items()))),) if self.halo else ())

    def content_watch(self) -> tuple:
        """(function, code, reads): what decides this kernel's content, as of its token, to
        compare by identity: the function's ``__code__`` is ``code`` and each (namespace,
        name, value) of ``reads`` (the globals it reads and its module's ``__spec__``:
        _identity.watch_list) still holds ``value``. The call cache (_cache.py) keeps it
        with a cached call, so a repeated call need not ask the kernel. Take it after
        check_sendable(), which makes the token."""
        return self.py_func, self._code, self._reads

    def _current(self) -> bool:
        # _identity.unchanged's rule, inlined as _cache.Entry.current does: it runs per call
        return (self.py_func.__code__ is self._code
                and getattr(self._home, "__spec__", None) is self._spec
                and all(ns.get(name, _GONE) is value for ns, name, value in self._reads))

    def _refresh(self) -> None:
        """Follow a reload of its module (importlib.reload sets a new ``__spec__``; IPython's
        %autoreload 2 then keeps this object, with the reloaded globals and ``__code__``):
        new dispatchers, token and payload, so no stale compile or cached call is used."""
        if self._current():
            return
        self._code, self._spec = self.py_func.__code__, getattr(self._home, "__spec__", None)
        func, totals = self._options["func"], self._options["totals"]
        opts = njit_kwargs(self.numba_options)
        self.dispatcher = rejit_function(func, opts) if self.jit else self.py_func
        if totals is not None:
            self.totals = rejit_function(totals, opts) if self.jit else totals
        self._token = self._by_value = self._checked = None
        self._sendable = False

    def check_sendable(self, start_method: str = "spawn") -> None:
        """Raise KernelNotSendableError if this kernel cannot reach the workers (by
        reference or by value); cheap once it passed (it runs per call)."""
        if self._sendable and self._current():
            return
        self.content_token()
        # decided while current: if module.qualname is later rebound to another object, a
        # worker's token check refuses it or reloads the module (_identity.resolve)
        self._by_reference = _identity.by_reference(self, self.module, self.qualname)
        if not self._by_reference:
            self._value()
        self._sendable = True

    def _value(self) -> tuple:
        if self._by_value is None:
            spec = dict(self._options)
            where = (_identity.origin(spec["func"]), _identity.origin(spec["totals"]))
            self._by_value = (where, _identity.dumps_by_value(spec, f"kernel {self.name}"))
        return self._by_value

    def __reduce__(self):
        self.check_sendable()  # current, with its token made
        token = self._token
        if self._by_reference:  # found by name
            return resolve_kernel, (self.module, self.qualname, token)
        return kernel_by_value, (token, *self._value())

    def __repr__(self) -> str:
        extra = f", depth={self.depth}, boundary={self.boundary!r}" if self.depth else ""
        extra += ", fused" if self.fused else ""
        extra += "" if self.jit else ", jit=False"
        extra += "" if self.schedule == "static" else f", schedule={self.schedule!r}"
        extra += "".join(f", {k}={v!r}" for k, v in self.numba_options.items())
        return f"<sharedcompute kernel {self.module}.{self.qualname} ({self.kind}{extra})>"


_MISSING = object()  # a parameter not yet given (Kernel.ordered_args)
_GONE = object()  # a global no longer there (Kernel._current)
SCHEDULES = ("static", "dynamic")


def check_schedule(schedule: Any) -> str:
    """'static' (each worker a fixed, contiguous share of the chunks) or 'dynamic' (idle
    workers take the next chunks as they finish); the result is the same either way."""
    if schedule not in SCHEDULES:
        raise InputError(f"schedule={schedule!r} must be one of {SCHEDULES}")
    return schedule


def resolve_kernel(module: str, qualname: str, token: str | None = None) -> Kernel:
    """Import a kernel by name (used when unpickling in workers); with ``token``, the one of
    that content (a stale module is imported again, _identity.resolve)."""
    obj = (_identity.lookup(module, qualname) if token is None else
           _identity.resolve(module, qualname, token, _content_of, "kernel"))
    if not isinstance(obj, Kernel):
        raise KernelNotSendableError(f"{module}.{qualname} is not a sharedcompute kernel")
    return obj


def _content_of(obj: Any) -> str:
    return obj.content_token() if isinstance(obj, Kernel) else ""


_BUILT = _identity.LRU(128)  # token -> kernel built from bytes here (a worker)


def kernel_by_value(token: str, where: tuple, payload: bytes) -> Kernel:
    """Unpickling a kernel sent by value: built (and compiled) once per content."""
    k = _BUILT.get(token)
    if k is not None:
        _BUILT.move_to_end(token)  # least recently used goes first
    else:
        import pickle
        spec = pickle.loads(payload)
        for name, origin in zip(("func", "totals"), where):  # for numba's on-disk cache
            _identity.restore_origin(spec[name], origin)
            if spec["jit"] and spec[name] is not None and not _identity.importable(spec[name]):
                # numba's cache rebuilds a compiled function's environment by importing its
                # module: one this worker cannot import (a test module's local kernel) compiles
                import numba
                opts = numba_options(name, True, spec["fastmath"], spec["error_model"],
                                     spec["parallel"])
                spec[name] = numba.njit(nogil=True, **njit_kwargs(opts))(spec[name])
        k = Kernel(**spec, reference=None, rtol=None, atol=None)
        k._token = token
        _BUILT.put(token, k)
    return k


# combine functions whose value does not depend on grouping, order or repeats. Not the
# builtins: max(nan, 1.0) is nan but max(1.0, nan) is 1.0, so with a NaN partial the
# grouping would decide the residual, and with it when iterate stops.
_IDEMPOTENT = (np.maximum, np.minimum, np.fmax, np.fmin)


def _idempotent(k: "Kernel", combine: Callable | None, declared: bool | None) -> bool:
    if declared is None:
        return any(combine is f for f in _IDEMPOTENT)
    if declared and combine is None:
        raise InputError(f"kernel {k.name}: idempotent=True describes combine=, which this "
                         "kernel does not declare")
    return bool(declared)


# What a kernel's type says (see "Types" in kernel's docstring): overloads for the bare
# @kernel and kernel(f, ...) forms, then the @kernel(...) forms, narrowest first.
@overload
def kernel(func: _Func, *, combine: None = None, finalize: None = None,
           writes: tuple[str] | None = None, depth: int = 0,
           **options: Unpack[_Options]) -> Kernel[SharedArray]: ...
@overload
def kernel(func: _Func, *, combine: _Func | None = None, finalize: _Func | None = None,
           writes: Sequence[str] | None = None, depth: int = 0,
           **options: Unpack[_Options]) -> Kernel[Any]: ...
@overload
def kernel(func: None = None, *, combine: None = None, finalize: None = None,
           writes: tuple[str] | None = None, depth: int = 0,
           **options: Unpack[_Options]) -> Callable[[_Func], Kernel[SharedArray]]: ...
@overload
def kernel(func: None = None, *, combine: None = None, finalize: None = None,
           writes: tuple[str, str, Unpack[tuple[str, ...]]], depth: int = 0,
           **options: Unpack[_Options]) -> Callable[[_Func], Kernel[tuple[SharedArray, ...]]]: ...
@overload
def kernel(func: None = None, *, combine: Callable[[_T, _T], _T], finalize: None = None,
           writes: None = None, depth: Literal[0] = 0,
           **options: Unpack[_Options]) -> Callable[[Callable[..., _T]], Kernel[_T]]: ...
@overload
def kernel(func: None = None, *, combine: Callable[[_T, _T], _T], finalize: Callable[[_T], _U],
           writes: None = None, depth: Literal[0] = 0,
           **options: Unpack[_Options]) -> Callable[[Callable[..., _T]], Kernel[_U]]: ...
@overload
def kernel(func: None = None, *, combine: _Func, finalize: _Func | None = None,
           writes: tuple[str], depth: int = 0,
           **options: Unpack[_Options]) -> Callable[[_Func], Kernel[SharedArray]]: ...
@overload
def kernel(func: None = None, *, combine: _Func, finalize: _Func | None = None,
           writes: None = None, depth: _Halo,
           **options: Unpack[_Options]) -> Callable[[_Func], Kernel[SharedArray]]: ...
@overload
def kernel(func: None = None, *, combine: _Func | None = None, finalize: _Func | None = None,
           writes: Sequence[str] | None = None, depth: int = 0,
           **options: Unpack[_Options]) -> Callable[[_Func], Kernel[Any]]: ...
def kernel(func: Callable | None = None, *, reference: Callable | None = None,
           combine: Callable | None = None, finalize: Callable | None = None,
           writes: Sequence[str] | None = None, whole: Sequence[str] = (), depth: int = 0,
           boundary: Any = "none", position: bool = False, totals: Callable | None = None,
           identity: Any = 0, rtol: Any = None, atol: Any = None,
           check: Callable | None = None, elementwise: bool = False, jit: bool = True,
           schedule: str = "static", idempotent: bool | None = None,
           fastmath: bool | set[str] | frozenset[str] = False, error_model: str = "python",
           parallel: bool = False, halo: dict | None = None) -> Any:
    """Declare a numba kernel that a Pool runs in place over partitions of shared arrays.

    Parameters
    ----------
    reference : plain-NumPy function with the same signature, run on whole arrays by ``verify``.
    combine : makes a reduction: the kernel returns its rows' partial, ``combine(p, q)`` merges
        two partials (scalars, tuples or small arrays), in a fixed pairwise order. With
        ``depth=`` (or ``writes=``) too, a stencil that writes its rows and returns their
        partial from the same pass: ``pool.iterate`` uses it as its residual (``map``
        writes the rows and returns the written array, dropping the partial; with
        ``partial=True`` it returns (written, combined partial)).
    finalize : applied once to the combined partial (e.g. (count, mean, M2) -> variance).
    writes : names of the arguments written in place (default: the first, for map kernels).
    whole : names of array arguments every partition receives whole (e.g. B of a matmul).
    depth, boundary : halo rows on axis 0 and how to fill them at the array's edges, in dask's
        words: 'none' (edge rows within ``depth`` are not written), 'fixed' (the same in a
        map; in ``pool.iterate`` each array keeps its own edge rows, where 'none' copies
        u's into out first), 'reflect', 'mirror', 'periodic',
        'nearest' or a constant. Read arguments then carry ``depth`` extra rows on each side.
    position : the kernel's last parameter receives ``(start, stop, total)``: its rows' place
        in the whole array (dask's ``block_info``); ``position="edges"``: ``(first, last)``,
        two booleans saying whether its rows begin at the first row the call writes and end
        at the last (rows 0 and n - 1; ``depth`` and n - 1 - ``depth`` under 'none' and
        'fixed'), to apply an edge rule without row arithmetic. With a padded boundary the
        rows within ``depth`` of each edge come in calls of their own (a padded copy of those
        rows), so a kernel may be called on as few as one row there, and ``first``/``last``
        is True in that call; under 'none' and 'fixed' it never gets rows it does not write.
    halo : ``{name: (before, after)}`` for read arguments with rows of their own around the
        output's (a field pre-padded by 2 rows: ``(2, 2)``; a staggered one with one row
        more: ``(0, 1)``): that argument has ``before + n + after`` rows, its row
        ``r + before`` lines up with output row r, and the call writing rows [s, e) gets
        its rows [s, e + before + after), straight from shared memory (never padded).
    totals : makes a scan: ``totals(*inputs)`` gives a chunk's total; the kernel's last
        parameter receives the combined totals of all earlier chunks (``identity`` for the first).
    rtol, atol : tolerance against the reference, numbers or ``f(dtype, n_terms, *args)``
        (default: exact for integers, ``(n_terms + 4) * eps`` times sum|terms| for floats;
        see :meth:`Kernel.tolerance` and :func:`sharedcompute.verify`).
    elementwise : output row i reads only row i of the partitioned inputs, so an input may
        be the very same array as the output (``y = f(y)`` in place); any other overlap of
        a written argument with another argument is refused.
    check : ``check(*args)`` runs in the calling process before any work, with the arguments
        as the caller passed them, and raises :class:`InputError` for invalid parameters
        (e.g. ``bins <= 0``), so they never reach numba or a worker.
    jit : False takes a plain Python function (NumPy, SciPy, scikit-image calls) with the
        same contract: it receives each partition's views (with halos) in the workers and
        writes its rows or returns its partial. NumPy and SciPy release the GIL in their
        loops, but one process per worker is what makes them run on every core.
    schedule : "static" (default: each worker a fixed contiguous share of the chunks) or
        "dynamic" (idle workers take the next chunks as they finish, for rows of unequal
        cost); also a per-call option. Results are bitwise the same under both.
    idempotent : ``combine`` gives the same value whatever the grouping and order of the
        partials, and counting a row twice changes nothing, as a maximum does (None: True
        for ``np.maximum``, ``np.minimum``, ``np.fmax`` and ``np.fmin``, False otherwise;
        not for the builtin ``max``/``min``, whose result with a NaN depends on the order).
        A fused stencil declaring it lets ``pool.iterate`` check its residual inside
        blocks of sweeps (temporal blocking with a check at every sweep); a wrong
        declaration gives wrong residuals, so leave it unset for sums. The sign of a zero
        maximum may still depend on the grouping (``np.maximum(-0.0, 0.0)``), which
        changes no comparison with ``tol``.
    fastmath : numba's ``fastmath``: True (all flags) or a set of LLVM flags: ``"reassoc"``
        (with ``"nsz"``) lets a loop sum vectorise in another order, ``"contract"`` fuses
        multiply-adds, ``"nnan"``/``"ninf"`` assume no NaN or inf (``x != x`` folds to
        False). It changes result bits: against a reference at exact tolerance ``verify``
        fails and names fastmath and the ``rtol`` that passes. Default False (IEEE
        arithmetic in source order). Example below.
    error_model : "python" (default): a division by zero raises ZeroDivisionError (a
        KernelError from a pool); "numpy": no check, ``1.0/0.0`` is inf and ``0.0/0.0`` nan
        as in NumPy (an integer division by zero gives 0). Example below.
    parallel : compile with numba's parallel pipeline, which fuses NumPy-style array
        expressions (``out[:] = 0.5 * (u[:-2] + u[2:])``) into one loop without temporary
        arrays, on ONE numba thread per worker (the workers are the parallelism; ``prange``
        loops run serially in each). Elementwise expressions give the same bits as
        without; a reduction inside (``np.sum``, a prange sum) may group differently. The
        direct call runs it on one numba thread too, which launches numba's threading
        layer in this process: ``start_method="fork"`` pools are refused after that
        (forkserver, the default, and spawn are not). Example below.

        The three are part of the kernel's identity: with ``fastmath=True`` it is another
        kernel (another cached call, another numba cache entry) than the same function
        without, and the workers compile it with the same options.

    Notes
    -----
    Types: a kernel's type parameter is what ``pool.map`` or ``pool.reduce`` returns, so a
    type checker follows results through. A map or scan kernel is ``Kernel[SharedArray]``,
    or ``Kernel[tuple[SharedArray, ...]]`` when ``writes=`` is a tuple of two or more names;
    so is a stencil that also declares ``combine=`` with one ``writes=`` name or a literal
    ``depth=`` of 1 to 8 (map returns its written array). A reduction is ``Kernel[T]`` for
    ``combine: Callable[[T, T], T]`` (the kernel function must return a ``T``), or
    ``Kernel[U]`` with ``finalize: Callable[[T], U]``. It is ``Kernel[Any]`` where the
    declaration cannot tell: a NumPy ufunc as ``combine`` (``np.add``; NumPy types a ufunc
    call as returning Any, since the result's type depends on the operands' dtypes: a typed
    ``finalize=`` gives the result its type), ``writes=`` as a list (its length is not in
    its type), or ``combine=`` with a computed ``depth=`` (0 would make it a reduction).

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> def scale_reference(y, x, s):
    ...     y[:] = s * x
    >>> @sc.kernel(reference=scale_reference)
    ... def scale(y, x, s):
    ...     for i in range(y.shape[0]):
    ...         y[i] = s * x[i]
    >>> y = np.zeros(4); _ = scale(y, np.arange(4.0), 2.0); y
    array([0., 2., 4., 6.])

    numba options: ``fastmath`` (here only "nnan": NaN checks fold away), ``error_model``
    and ``parallel`` (a fused NumPy-style stencil; called from a pool):

    >>> @sc.kernel(fastmath={"nnan"})
    ... def is_nan(out, x):
    ...     for i in range(x.shape[0]):
    ...         out[i] = x[i] != x[i]
    >>> out = np.zeros(2); _ = is_nan(out, np.array([np.nan, 1.0])); out
    array([0., 0.])
    >>> @sc.kernel(error_model="numpy")
    ... def ratio(out, a, b):
    ...     for i in range(out.shape[0]):
    ...         out[i] = a[i] / b[i]
    >>> out = np.zeros(2); _ = ratio(out, np.array([1.0, 0.0]), np.zeros(2)); out
    array([inf, nan])
    >>> @sc.kernel(depth=1, parallel=True)
    ... def smooth(out, u):
    ...     out[:] = 0.5 * (u[:-2] + u[2:])
    >>> smooth.parallel, smooth.numba_options
    (True, {'parallel': True})
    """
    def wrap(f: Callable[..., Any]) -> Kernel[Any]:
        return Kernel(f, reference=reference, combine=combine, finalize=finalize, writes=writes,
                      whole=whole, depth=depth, boundary=boundary, position=position,
                      totals=totals, identity=identity, rtol=rtol, atol=atol, check=check,
                      elementwise=elementwise, jit=jit, schedule=schedule,
                      idempotent=idempotent, fastmath=fastmath, error_model=error_model,
                      parallel=parallel, halo=halo)
    return wrap(func) if func is not None else wrap
