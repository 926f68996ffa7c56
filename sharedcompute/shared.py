"""SharedArray: an N-d NumPy array whose data lives in one shared-memory block (segments.py),
and pickles as a small handle, never as data."""
from __future__ import annotations

import gc
import itertools
import math
import operator
import os
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from .errors import (ArrayFreedError, ArrayInUseError, InputError, ReadOnlyArrayError,
                     UnsupportedDtypeError)
from ._views import ArrayViews
from .files import (attach_ref, check_file_dtype, check_npy_size, check_regular,
                    memmap_block, open_npy, read_header)
from ._system import creator_pid, list_segments, make_block_name  # noqa: F401
from .segments import (SHM_DIR, Block, _owned, forget_attached,  # noqa: F401
                       on_block_release, released)

if TYPE_CHECKING:
    from numpy.typing import NDArray


def check_dtype(dtype: Any) -> np.dtype:
    """Return ``dtype`` as a native-order numeric/bool dtype, or raise UnsupportedDtypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise UnsupportedDtypeError(f"{dtype!r} is not a NumPy dtype") from exc
    if dt.kind not in "biufc" or dt.fields is not None or dt.hasobject:
        raise UnsupportedDtypeError(
            f"dtype {dt} is not supported: shared arrays hold fixed-size numeric or bool data "
            "(object, string, structured and datetime dtypes cannot be shared); convert with "
            ".astype(np.float64) or similar first")
    if (dt.kind == "f" and dt.itemsize not in (4, 8)) or (dt.kind == "c" and
                                                          dt.itemsize not in (8, 16)):
        wider = {"f": "float32" if dt.itemsize < 4 else "float64",
                 "c": "complex64" if dt.itemsize < 8 else "complex128"}[dt.kind]
        raise UnsupportedDtypeError(
            f"dtype {dt} is not supported: numba compiles kernels for float32/float64 and "
            f"complex64/complex128 only, not {dt.name} (numba has no {dt.name} type); "
            f"convert with .astype(np.{wider}) first")
    if not dt.isnative:
        raise UnsupportedDtypeError(
            f"dtype {dt.str} is not in this machine's byte order; use "
            f"{dt.newbyteorder('=').str} (SharedArray.from_array converts automatically)")
    return dt


def native_array(x: Any) -> np.ndarray:
    """``x`` as a C-contiguous NumPy array of a supported dtype in this machine's byte
    order, copied only where it is not one already: what a backend sends of a plain array
    (a big-endian float64 becomes native float64; an object array raises)."""
    src = np.asarray(x)
    if src.dtype.kind in "biufc" and not src.dtype.isnative:
        src = src.astype(src.dtype.newbyteorder("="))
    check_dtype(src.dtype)
    return np.ascontiguousarray(src)


def _as_shared(obj: Any) -> Any:
    """Replace SharedArrays (also inside lists/tuples) by NumPy views."""
    if isinstance(obj, SharedArray):
        return obj.numpy()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_shared(o) for o in obj)
    return obj


class ArrayShape:
    """ndim, size and nbytes from ``shape`` and ``dtype`` (shared by the array handles)."""

    __slots__ = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # Python ints: no int64 overflow

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class SharedArray(NDArrayOperatorsMixin, ArrayShape, ArrayViews):
    """An N-d NumPy array in shared memory that pickles as a small handle, never as data.

    Works where a NumPy array works: ``np.asarray(a)`` is a zero-copy view, basic slicing
    gives SharedArray views of the same block, ufuncs and NumPy functions accept it (their
    results are ordinary arrays). Passing it to a ``Pool`` sends only its handle.

    Examples
    --------
    >>> import numpy as np, pickle
    >>> a = SharedArray.from_array(np.arange(6.0).reshape(2, 3))
    >>> np.shares_memory(np.asarray(a), a)
    True
    >>> len(pickle.dumps(a)) < 400
    True
    >>> float(a[1].sum())
    12.0
    >>> a.free()
    """

    __slots__ = ("_block", "_shape", "_dtype", "_offset", "_strides", "_closed", "_ident",
                 "__weakref__")
    __array_priority__ = 20

    def __init__(self, block: Block | None, shape: tuple, dtype: np.dtype, offset: int = 0,
                 strides: tuple | None = None):
        self._block = block
        self._closed: str | None = None  # the block's name once close() dropped it
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self._offset = offset
        self._strides = strides if strides is not None else _c_strides(self._shape, self._dtype)
        self._ident = _ident(block, self._shape, self._dtype, offset, self._strides)
        if block is not None:
            block.arrays[id(self)] = self

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def empty(cls, shape: int | tuple, dtype: Any = np.float64) -> "SharedArray":
        """A new uninitialised (in practice zero-filled) shared array."""
        shape = _norm_shape(shape)
        dt = check_dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes > MAX_BYTES:
            raise InputError(f"shape {shape} of {dt} needs {nbytes:,} bytes, more than any "
                             "machine can map; check the shape")
        if not nbytes:
            return cls(None, shape, dt)
        colour = _next_colour(nbytes)
        return cls(Block.create(nbytes, padding=colour), shape, dt, offset=colour)

    @classmethod
    def zeros(cls, shape: int | tuple, dtype: Any = np.float64) -> "SharedArray":
        """A new zero-filled shared array (fresh blocks are zeroed by the kernel)."""
        return cls.empty(shape, dtype)

    @classmethod
    def from_array(cls, array: Any) -> "SharedArray":
        """Copy ``array`` (any layout, any byte order) into a new C-ordered shared array."""
        if isinstance(array, np.ma.MaskedArray):
            raise InputError("a masked array cannot be shared: its mask would be lost; share "
                             "x.filled(value), or np.ma.getdata(x) and np.ma.getmaskarray(x) "
                             "as two arrays")
        src = np.asarray(array)
        if src.dtype.kind in "biufc" and not src.dtype.isnative:
            src = src.astype(src.dtype.newbyteorder("="))
        out = cls.empty(src.shape, src.dtype)
        if out.size:
            np.copyto(out.numpy(), src)
        return out

    @classmethod
    def open(cls, path: Any, mode: str = "r", shape: Any = None,
             dtype: Any = None) -> "SharedArray":
        """Map a ``.npy`` file in place (MAP_SHARED, no copy, no /dev/shm): mode "r"
        (read-only everywhere), "r+" (kernels write the file) or "w+" (a new file of
        ``shape`` and ``dtype``, as numpy.lib.format.open_memmap)."""
        block, shape, dt, offset = open_npy(path, mode, shape, dtype, check_dtype)
        return cls(block, shape, dt, offset)

    @classmethod
    def load(cls, path: Any) -> "SharedArray":
        """Read a ``.npy`` file straight into a new shared block (``readinto``: one pass over
        the file, no temporary copy); a non-native byte order is converted in place."""
        path = check_regular(path, "r")
        with open(path, "rb", buffering=0) as f:
            shape, dt, offset, fortran = read_header(path, f)
            native = dt.newbyteorder("=") if dt.kind in "biufc" else dt
            check_file_dtype(path, native, fortran, shape, check_dtype)
            check_npy_size(path, os.fstat(f.fileno()).st_size, offset, shape, dt)
            out = cls.empty(shape, native)
            try:
                got = 0
                # released on the way out, even by an exception: no traceback keeps the
                # pages mapped (the release below unlinks the name even so)
                with memoryview(out.numpy().reshape(-1).view(np.uint8)) as buf:
                    while got < len(buf) and (n := f.readinto(buf[got:])):
                        got += n
                if got < out.nbytes:  # shortened while we read
                    check_npy_size(path, offset + got, offset, shape, dt)
                if not dt.isnative:
                    out.numpy().byteswap(inplace=True)
            except BaseException:
                if out.block is not None:
                    out.block.release(strict=False)  # out of /dev/shm now, not at the next gc
                raise
        return out

    @classmethod
    def from_memmap(cls, m: np.memmap) -> "SharedArray | None":
        """The same file mapped by path (what workers can map): a view of m's bytes, not a
        copy; None when m maps no file (a memmap-typed ufunc result)."""
        found = memmap_block(m)
        if found is None:
            return None
        block, pos = found
        return cls(block, m.shape, check_dtype(m.dtype), pos, m.strides)

    # -- views ---------------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A zero-copy NumPy view. While it lives, ``free()`` refuses to unmap the block.

        Every read goes through here (``np.asarray``, indexing, ufuncs, methods): a block
        another process truncated raises SharedBlockCorruptedError instead of a SIGBUS. A view
        taken before the truncation cannot be checked: keep views no longer than you need."""
        block = self._block
        if block is None:
            if self._closed is not None:
                raise self._closed_error()
            return np.empty(self.shape, self.dtype)
        # truncated by another process: raise here, never SIGBUS on the view's first read
        if block.is_file:
            block.check_size()  # an fstat; also says a closed file was closed
        elif block.root is not None:
            block.check_readable()  # a poll(0) while the tamper watch saw nothing
        root = block.root
        if root is None:
            raise ArrayFreedError(
                f"shared array {block.name!r} was freed (by free() or by closing its pool); "
                "copy results out with np.array(a) before freeing")
        return np.ndarray(self.shape, self.dtype, buffer=root, offset=self._offset,
                          strides=self._strides)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        view = self.numpy()
        if copy:
            return np.array(view, dtype=dtype, copy=True)
        return view if dtype is None else view.astype(dtype, copy=False)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.readonly:
            raise ReadOnlyArrayError(f"{self!r} is read-only (opened with mode='r'); open the "
                                     "file with pool.open(path, mode='r+') to write it")
        self.numpy()[key] = _as_shared(value)

    def _wrap_view(self, view: NDArray[Any]) -> SharedArray:
        if self._block is None:  # a zero-size array (no block): its views have none either
            return SharedArray(None, view.shape, view.dtype)
        root = self._block.root
        offset = view.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        return SharedArray(self._block, view.shape, view.dtype, offset, view.strides)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if out is not None:
            kwargs["out"] = tuple(_as_shared(o) for o in out)
        result = getattr(ufunc, method)(*_as_shared(inputs), **kwargs)
        if out is not None and len(out) == 1:
            return out[0]
        return result

    def __array_function__(self, func, types, args, kwargs):
        return func(*_as_shared(args), **{k: _as_shared(v) for k, v in kwargs.items()})

    def __getattr__(self, name: str) -> Any:
        # Methods and attributes of ndarray (sum, reshape, T, flags, ...) act on the view.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.numpy(), name)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d shared array")
        return self.shape[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.numpy())

    def __repr__(self) -> str:
        name = self.name if self.name is not None else "<no block: empty>"
        state = " closed" if self._closed else " freed" if self.freed else ""
        return f"SharedArray(shape={self.shape}, dtype={self.dtype}, block={name!r}{state})"

    # -- properties ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @shape.setter
    def shape(self, value: Any) -> None:
        # As ndarray.shape = ...: an in-place reshape where no copy is needed, else an error
        # (assigning the tuple alone would keep the old strides and read the wrong elements).
        view = self.numpy().view()
        try:
            view.shape = value
        except (AttributeError, ValueError) as exc:
            raise InputError(f"cannot reshape shared array of shape {self._shape} to {value!r} "
                             f"in place: {exc}; use a.reshape(...) for a new view") from exc
        self._shape, self._strides = tuple(view.shape), tuple(view.strides)
        self._ident = _ident(self._block, self._shape, self._dtype, self._offset, self._strides)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @dtype.setter
    def dtype(self, value: Any) -> None:
        raise InputError(f"a shared array's dtype cannot be reassigned (it is {self._dtype}); "
                         "use np.asarray(a).view(dtype) for a reinterpreting view, or "
                         "pool.array(np.asarray(a).astype(dtype)) for a converted copy")

    @property
    def strides(self) -> tuple[int, ...]:
        return self._strides

    @property
    def offset(self) -> int:
        """Bytes from the start of the block to this array's first element."""
        return self._offset

    @property
    def name(self) -> str | None:
        """The shared-memory block's name (None for a zero-size array, which has no block)."""
        return self._closed if self._block is None else self._block.name

    @property
    def freed(self) -> bool:
        """True once this array can no longer be used: freed, its pool closed, or close()d."""
        return self._closed is not None or (self._block is not None and self._block.freed)

    # read-only, and a slot read (no Python frame): a repeated call reads it per array
    identity = property(operator.attrgetter("_ident"), doc="""The memory and layout this
        array names (the call cache's key, _cache.py): its block, the block's size, shape,
        dtype, offset, strides and writability. The very tuple while none of them changes;
        ``a.shape = ...`` makes a new one.""")

    @property
    def block(self) -> Block | None:
        if self._closed is not None:
            raise self._closed_error()
        return self._block

    @property
    def readonly(self) -> bool:
        """True for arrays mapped read-only (a file opened with mode='r')."""
        return self._block is not None and not self._block.writable

    @property
    def filename(self) -> str | None:
        """The file behind a file-backed array (as np.memmap.filename); None in /dev/shm."""
        return self._block.path if self._block is not None and self._block.is_file else None

    def flush(self) -> None:
        """Write what kernels wrote to a file-backed array to disk (msync); a no-op for
        shared-memory arrays, as np.memmap.flush."""
        if self._block is not None and self._block.is_file:
            self._block.check_size()
            self._block.flush()

    def handle(self) -> tuple:
        """(name, block bytes, shape, dtype, offset, strides): all a process needs to attach."""
        block = self._block
        if block is None:
            if self._closed is not None:
                raise self._closed_error()
            return (None, 0, self.shape, self.dtype.str, 0, self._strides)
        if block.freed:
            self.numpy()  # raises ArrayFreedError
        return (block.ref if block.is_file else block.name, block.nbytes, self.shape, self.dtype.str, self._offset, self._strides)

    def __reduce__(self):
        return (_rebuild, (self.handle(),))

    # -- lifetime ------------------------------------------------------------------------------
    def free(self) -> None:
        """Unlink and unmap the block now (a file-backed array: msync, unmap and close the
        file, which stays). Raises ArrayInUseError while other views are alive.

        Freeing twice is a no-op; any other use of a freed array raises ArrayFreedError.
        """
        block = self._block
        if block is None or block.freed:
            return
        others = [a for a in block.arrays.values() if a is not self]
        if others:
            gc.collect()  # views held only by reference cycles (e.g. a caught exception's frames)
            others = [a for a in block.arrays.values() if a is not self]
        if others:
            raise ArrayInUseError(
                f"cannot free shared array {block.name!r}: {len(others)} other SharedArray view(s) "
                "of the same block are alive (from slicing); delete them first")
        block.release(strict=True)

    def close(self) -> None:
        """Release this process's hold on the array, without destroying it for others.

        The process that received the array (an unpickled handle) unmaps its block once no
        SharedArray of it is left open here; the block stays for the creator and every other
        process. In the creator, closing the last SharedArray of a block frees it, as
        dropping it would (only the creator can unlink it). NumPy views still alive keep
        their pages mapped until they go; this array itself raises ArrayFreedError from now
        on. Closing twice is a no-op. Garbage collection of a process's last SharedArray of a
        block does the same as close(); ``with a:`` closes a received array and frees one
        this process created.

        Examples
        --------
        >>> import pickle
        >>> a = SharedArray.from_array(np.arange(4.0))
        >>> b = pickle.loads(pickle.dumps(a))   # another process would attach by name
        >>> b.close()                           # here both are one block; a keeps it
        >>> b.freed, a.freed, float(a.sum())
        (True, False, 6.0)
        >>> a.close()                           # the creator's last one: freed, as by del
        >>> a.freed
        True
        """
        block = self._block
        if block is None:
            return
        others = [a for a in block.arrays.values() if a is not self]
        if not others and not block.freed and block.calls:
            raise ArrayInUseError(
                f"cannot close shared array {block.name!r}: a pool call that uses it is "
                "running; close it after the call returns")
        self._closed, self._block = block.name, None
        released()  # bound calls holding this array check it again
        block.arrays.pop(id(self), None)
        if not others:
            block.release(strict=False)  # unlinks only in its creator; views keep their pages

    def _closed_error(self) -> ArrayFreedError:
        return ArrayFreedError(f"shared array {self._closed!r} was closed in this process "
                               "(close(), or the end of a with block); unpickle its handle "
                               "again to use it")

    def __enter__(self) -> "SharedArray":
        return self

    def __exit__(self, *exc: Any) -> None:
        block = self._block
        if block is not None and block.created_here:
            self.free()
        else:
            self.close()


_colours = itertools.count()
COLOUR_MIN_BYTES = 1 << 20
COLOUR_STEP = 4096 + 64


def _next_colour(nbytes: int) -> int:
    """Where a big array's data starts in its block: 0, 4160, 8320, ... bytes, cycling over 16.

    Arrays of equal power-of-two sizes are otherwise mapped at addresses that agree in all
    their low bits, so a[i], b[i] and c[i] of a triad collide in the caches and prefetchers:
    measured 11.6 GB/s instead of 17.3 for one numba thread over three 256 MiB blocks
    (STREAM's OFFSET knob exists for the same reason). At most 61 KiB per block of >= 1 MiB.
    """
    if nbytes < COLOUR_MIN_BYTES:
        return 0
    return next(_colours) % 16 * COLOUR_STEP


def _ident(block: Block | None, shape: tuple, dtype: np.dtype, offset: int,
           strides: tuple) -> tuple:
    """The memory and layout an array names (the call cache's key, _cache.py): its block (a
    file's path, device and inode), the block's size, shape, dtype, offset, strides and
    writability. Kept in a slot, so a repeated call reads one attribute per array."""
    if block is None:
        return (None, 0, shape, dtype.str, 0, strides, True)
    return (block.ref if block.is_file else block.name, block.nbytes, shape, dtype.str, offset,
            strides, bool(block.writable))


def _c_strides(shape: tuple, dtype: np.dtype) -> tuple:
    strides, step = [], dtype.itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


MAX_BYTES = 1 << 62  # beyond what a 64-bit mapping (and NumPy's intp) can hold
MAX_DIM = 1 << 48  # a dimension past this is a bug even for an empty array (it is split)


def _norm_shape(shape: int | tuple) -> tuple:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (int(shape),)
    try:
        shape = tuple(shape)
    except TypeError:
        raise InputError(f"shape {shape!r} must be a non-negative integer or a tuple of "
                         "them") from None
    if any(isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0
           for s in shape):
        raise InputError(f"shape {shape!r} must be non-negative integers (got a "
                         f"{', '.join(sorted({type(s).__name__ for s in shape}))})")
    if any(s > MAX_DIM for s in shape):
        raise InputError(f"shape {shape!r} has a dimension over 2**48; check the shape")
    return tuple(int(s) for s in shape)


class KeptBlock:
    """A flat array kept between calls and grown when too small: a SharedArray for worker
    processes, NumPy in-process. Freeing a block per call would make every pool of this
    process drop its cached calls at its next call (a released block's name goes to the
    workers), so the owner (a backend) frees it at close. Used by iterate's residual slots
    (_iterate/plan.Scratch) and the snapshot slots (_iterate/snapshot.Store)."""

    def __init__(self, in_process: bool):
        self.in_process = in_process
        self.array: Any = None

    def grown(self, size: int, dtype: Any, least: int) -> Any:
        """The kept array, replaced by a zeroed one of max(size, least) if under size."""
        if self.array is None or self.array.shape[0] < size:
            self.free()
            n = max(size, least)
            self.array = np.zeros(n, dtype) if self.in_process else SharedArray.zeros(n, dtype)
        return self.array

    @property
    def name(self) -> str | None:
        """The block's name while one is kept (a pool's own, as its workers are)."""
        return self.array.name if isinstance(self.array, SharedArray) else None

    def free(self) -> None:
        """Free the block (at close, or before growing it)."""
        array, self.array = self.array, None
        if isinstance(array, SharedArray):
            array.free()


def view_from_handle(handle: tuple, writable: bool = True) -> np.ndarray:
    """A NumPy view of the array a handle describes (attaching its block if needed)."""
    name, nbytes, shape, dtype, offset, strides = handle
    if name is None:
        return np.empty(shape, dtype)
    block = attach_ref(name, nbytes, writable)
    view = np.ndarray(shape, np.dtype(dtype), buffer=block.root, offset=offset, strides=strides)
    if not writable and view.flags.writeable:
        view.flags.writeable = False
    return view


def _rebuild(handle: tuple) -> SharedArray:
    name, nbytes, shape, dtype, offset, strides = handle
    if name is None:
        return SharedArray(None, shape, np.dtype(dtype), 0, strides)
    # not pinned: the block stays mapped here only while a SharedArray of it lives
    block = attach_ref(name, nbytes, True, pin=False)
    return SharedArray(block, shape, np.dtype(dtype), offset, strides)
