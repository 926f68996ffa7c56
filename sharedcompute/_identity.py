"""What identifies code sent to the workers (its content, never its name alone) and how it
travels there.

A function's *token* hashes what decides what it computes: its bytecode and constants, its
defaults and closure, the values of the globals it reads (numba freezes those into the
compiled code) and, recursively, the functions it calls. Line numbers and file names are
left out, so re-running an unchanged notebook cell gives the same token.

How code travels (loky sends ``__main__`` functions with cloudpickle the same way, loky#147):

- **by reference, checked by content**: a function reachable as ``module.qualname`` (not in
  ``__main__``) travels as (module, qualname, token). A worker whose module is stale (a
  forkserver that preloaded it before an edit, a module reloaded in the caller) sees the
  token differ, re-imports the module once (``importlib.reload``) and checks again; a
  worker that still disagrees raises instead of running other code.
- **by value**: ``__main__`` (notebook cells, ``python -c``, scripts), functions defined
  inside functions and lambdas travel as cloudpickle bytes. A kernel's bytes are made once
  per Kernel object (its content is fixed at its first call, as numba fixes the globals it
  compiles with) and its workers build it once per token, so it compiles once per worker
  per content. The cell's source travels too, so numba's on-disk cache serves cell-defined
  kernels in the workers as in the notebook (numba's IPythonCacheLocator reads it).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import linecache
import pickle
import struct
import sys
import types
import weakref
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from .errors import KernelNotSendableError

_TOKENS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
_SIMPLE = (type(None), bool, int, float, complex, str, bytes, np.generic, np.ndarray, tuple)


# -- content tokens -------------------------------------------------------------------------
def token(obj: Any) -> str:
    """The content token of a function (or any value), 32 hex digits, the same in every
    process for the same content. A function's is kept with the code and globals it was
    made from, and made again when they change (%autoreload 2 rebinds them in place)."""
    plain = type(obj) is types.FunctionType
    if plain:
        kept = _TOKENS.get(obj)
        if kept is not None and kept[0] is obj.__code__ and unchanged(kept[1]):
            return kept[2]
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj, set())
    out = h.hexdigest()
    if plain:
        _TOKENS[obj] = (obj.__code__, global_reads(obj), out)
    return out


def _code_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names += _code_names(c)
    return names


def _feed(h: Any, obj: Any, seen: set) -> None:
    """Write a description of ``obj`` into the hash ``h``: exact bits for numbers and
    arrays, content for code, type names where content cannot be known."""
    t = type(obj)
    h.update(t.__qualname__.encode() + b"\0")
    if obj is None or t is bool or t is int or t is str:
        h.update(repr(obj).encode())
    elif t is float:
        h.update(struct.pack("<d", obj))  # NaN payloads and -0.0 included
    elif t is complex:
        h.update(struct.pack("<dd", obj.real, obj.imag))
    elif t is bytes:
        h.update(obj)
    elif isinstance(obj, (np.generic, np.ndarray)):
        a = np.asarray(obj)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).tobytes() if a.dtype.kind != "O"
                 else repr(a).encode())
    elif t in (tuple, list):
        h.update(str(len(obj)).encode())
        for x in obj:
            _feed(h, x, seen)
    elif t in (frozenset, set):  # iteration order varies with the hash seed: sort
        parts = sorted(token(x) for x in obj)
        h.update(",".join(parts).encode())
    elif t is dict:
        for k in sorted(obj, key=repr):
            _feed(h, k, seen)
            _feed(h, obj[k], seen)
    elif t is types.CodeType:
        _feed_code(h, obj, seen)
    elif t is types.FunctionType:
        _feed_function(h, obj, seen)
    elif t is types.ModuleType:
        h.update(obj.__name__.encode())
    elif t is functools.partial:
        _feed(h, (obj.func, obj.args, obj.keywords), seen)
    elif hasattr(obj, "content_parts"):  # a Kernel (its own name may be among its globals)
        if id(obj) in seen:
            h.update(b"<again>")
            return
        seen.add(id(obj))
        _feed(h, obj.content_parts(), seen)
    elif hasattr(obj, "py_func") and hasattr(obj, "targetoptions"):  # a numba dispatcher
        _feed(h, obj.py_func, seen)
        _feed(h, {k: repr(v) for k, v in obj.targetoptions.items()}, seen)
    elif isinstance(obj, (type, np.ufunc, types.BuiltinFunctionType)):
        h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}"
                 .encode())
    # anything else: its type name only (reprs may hold addresses, which differ per process)


def _feed_code(h: Any, code: types.CodeType, seen: set) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_name, code.co_names, code.co_varnames, code.co_freevars,
                   code.co_cellvars, code.co_argcount, code.co_posonlyargcount,
                   code.co_kwonlyargcount, code.co_flags)).encode())
    _feed(h, code.co_consts, seen)


def _feed_function(h: Any, fn: types.FunctionType, seen: set) -> None:
    if id(fn) in seen:  # recursion between functions
        h.update(b"<again>" + fn.__qualname__.encode())
        return
    seen.add(id(fn))
    code = fn.__code__
    _feed_code(h, code, seen)
    _feed(h, (fn.__defaults__, fn.__kwdefaults__), seen)
    for cell in fn.__closure__ or ():
        try:
            _feed(h, cell.cell_contents, seen)
        except ValueError:  # an empty cell
            h.update(b"<empty>")
    # the globals it reads, and attributes of modules it reads (cfg.C): numba freezes both.
    # The very list the per-call check compares (global_reads), so the two cannot disagree
    glob = fn.__globals__
    for namespace, name, value in global_reads(fn):
        if namespace is glob:
            h.update(name.encode() + b"=")
        elif isinstance(value, _SIMPLE):  # a module's constant (its functions: by name,
            h.update(b"." + name.encode() + b"=")  # with the module fed just before)
        else:
            continue
        _feed(h, value, seen)


_GONE = object()


def global_reads(fn: Any) -> list[tuple[dict, str, Any]]:
    """(namespace, name, value) of each global ``fn`` reads (and of each attribute it reads
    of a module it reads), to tell cheaply, per call, whether any was rebound since: IPython
    9's %autoreload 2 re-runs only the changed lines of a module (``C = 4.0``), keeping
    every function and kernel object as it was. A global array changed in place is not
    seen (numba froze it at its first compile anyway)."""
    fn = getattr(fn, "py_func", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    names, glob, out = sorted(set(_code_names(code))), fn.__globals__, []
    for name in names:
        if name in glob:
            value = glob[name]
            out.append((glob, name, value))
            if type(value) is types.ModuleType:
                attrs = vars(value)  # vars: never a module's __getattr__ (warnings, imports)
                out += [(attrs, a, attrs[a]) for a in names if a in attrs]
    return out


def watch_list(fn: Any, module: Any) -> list[tuple[dict, str, Any]]:
    """global_reads(fn), and the ``__spec__`` of ``module`` (``fn``'s: importlib.reload sets
    a new one): every (namespace, name, value) whose identity decides what ``fn`` computes,
    besides its ``__code__``. ``unchanged`` compares them; a call cache keeps them."""
    out = global_reads(fn)
    if module is not None:
        attrs = vars(module)
        out.append((attrs, "__spec__", attrs.get("__spec__")))
    return out


def unchanged(reads: list[tuple[dict, str, Any]]) -> bool:
    for namespace, name, value in reads:
        if namespace.get(name, _GONE) is not value:
            return False
    return True


# -- how functions travel --------------------------------------------------------------------
def lookup(module: str, qualname: str) -> Any:
    """``module.qualname``, imported (``__main__`` as it is in this process)."""
    mod = sys.modules.get(module)  # imported already, as almost always: no import machinery
    if mod is None:
        mod = sys.modules[module] if module == "__main__" else importlib.import_module(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def by_reference(obj: Any, module: str | None, qualname: str) -> bool:
    """Whether workers can find ``obj`` as module.qualname: not in ``__main__`` (notebook
    cells, scripts: sent by value), not defined in a function, and really found there."""
    if not module or module == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
        return False
    try:
        return lookup(module, qualname) is obj
    except Exception:
        return False


_RESOLVED: dict[tuple, Any] = {}  # (module, qualname, token) -> object, in a worker


def resolve(module: str, qualname: str, want: str, content: Callable[[Any], str],
            what: str) -> Any:
    """In a worker: module.qualname with the content token ``want``; a stale module is
    imported again once. ``content(obj)`` gives an object's token."""
    key = (module, qualname, want)
    found = _RESOLVED.get(key)
    if found is not None:
        return found
    obj = lookup(module, qualname)
    if content(obj) != want:  # an older module: the forkserver's preload, or a reload
        importlib.reload(sys.modules[module])
        obj = lookup(module, qualname)
        if content(obj) != want:
            raise KernelNotSendableError(
                f"{what} {module}.{qualname} in the worker processes differs from the "
                "caller's: its module file changed since the caller imported it, or the "
                f"caller changed the module at run time. Reload it in the caller "
                f"(importlib.reload({module}); %autoreload 2 does so) and call again")
    if len(_RESOLVED) > 4096:
        _RESOLVED.clear()
    _RESOLVED[key] = obj
    return obj


def resolve_function(module: str, qualname: str, want: str) -> Any:
    """Unpickling a task function sent by reference (FunctionPickler)."""
    return resolve(module, qualname, want, token, "function")


def dumps_by_value(obj: Any, what: str) -> bytes:
    """cloudpickle's bytes of ``obj``, or KernelNotSendableError saying what failed."""
    import cloudpickle
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise KernelNotSendableError(
            f"{what} could not be sent to the worker processes by value ({type(exc).__name__}: "
            f"{exc}); something it reads (a global, a default, a closure variable) cannot be "
            "pickled. Define the code in a module (a .py file) and import it: it then travels "
            "by name, and each worker has that module's own objects") from exc


def origin(fn: Any) -> tuple[str, list[str] | None] | None:
    """(file name, lines) of where a function was defined; lines only when they exist
    nowhere but in linecache (a notebook cell, an IPython prompt). Sent along by value,
    since cloudpickle 3.1 names every code object ``<dynamic-code>``, so that numba can
    cache the worker's compiles (its locators need the file, or for a cell its source)."""
    code = getattr(getattr(fn, "py_func", fn), "__code__", None)
    if code is None:
        return None
    name = code.co_filename
    entry = linecache.cache.get(name)
    lines = list(entry[2]) if entry is not None and len(entry) == 4 and entry[1] is None \
        else None  # an mtime of None: no file behind it
    return name, lines


def restore_origin(fn: Any, where: tuple[str, list[str] | None] | None) -> None:
    """In a worker: give a function sent by value its file name (and a cell its source)."""
    fn = getattr(fn, "py_func", fn)
    if where is None or not hasattr(fn, "__code__"):
        return
    name, lines = where
    if lines is not None:
        linecache.cache.setdefault(name, (sum(map(len, lines)), None, lines, name))
    if fn.__code__.co_filename != name:
        fn.__code__ = fn.__code__.replace(co_filename=name)


def importable(fn: Any) -> bool:
    """Whether this process could import ``fn``'s module (``__main__`` always)."""
    module = getattr(getattr(fn, "py_func", fn), "__module__", None)
    if not module or module == "__main__" or module in sys.modules:
        return bool(module)
    try:
        import importlib.util
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class FunctionPickler(pickle.Pickler):
    """pickle, with plain functions by reference and content token, or by value (cloudpickle)
    where workers could not find them by name (futures.py: the payloads of tasks)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not types.FunctionType or obj is resolve_function:
            return NotImplemented  # (resolve_function: the reduction's own callable)
        kept = _BY_NAME.get(obj)  # submit is hot: a module function's reduction, while its
        if kept is not None and kept[0] is obj.__code__ and unchanged(kept[1]) \
                and kept[2].get(obj.__name__) is obj:  # code, globals and name still hold
            return kept[3]
        module, qualname = obj.__module__, obj.__qualname__
        if by_reference(obj, module, qualname):
            reduction = resolve_function, (module, qualname, token(obj))
            if qualname == obj.__name__:  # a module-level name: checked in its namespace
                _BY_NAME[obj] = (obj.__code__, global_reads(obj), vars(sys.modules[module]),
                                 reduction)
            return reduction
        return pickle.loads, (dumps_by_value(obj, f"function {qualname}"),)


_BY_NAME: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


class LRU(OrderedDict):
    """Kernels built from bytes in a worker, by token (compiled once per content)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
