"""File-backed blocks: a ``.npy`` file's bytes mapped ``MAP_SHARED`` in every process, by path.

The sibling of segments.py's shared-memory blocks. A ``FileBlock`` maps a regular file from
its first byte (the array starts at the ``.npy`` header's end, an offset inside the block),
so every process that maps it sees the same page-cache pages: no copy, no ``/dev/shm``, and
what kernels write is in the file (the kernel writes dirty pages back even if every process
is killed; ``flush()`` and closing msync them). The handle a worker receives names the file
by ``("file", realpath, st_dev, st_ino, read_only)``; a worker maps the path only if it still
is that inode and is long enough, so a replaced or truncated file is an error, never another
file's data or a SIGBUS. Before every call the parent re-checks its own descriptor (fstat)
and the path (stat): truncation, deletion and replacement are refused before any worker runs.
That descriptor is the one fd a file keeps, in the process that opened it (the mapping keeps
none: segments.Mapping); workers and consumers that map a file by its handle keep none.

mtime is not part of the identity on purpose: our own kernels' writes through the mapping
change it. A file modified in place by another program (same inode, same size) cannot be
told apart from one modified by our kernels; that is what MAP_SHARED means.
"""
from __future__ import annotations

import math
import mmap
import os
import re
import stat
import sys
import weakref
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from .errors import (ArrayFreedError, ArrayInUseError, FileAccessError, FileChangedError,
                     InputError, UnsupportedDtypeError)
from .segments import (Block, Mapping, _attached, _drop_cached, _handles, _lock,
                       _release_hooks, fd_errors)

# ref -> FileBlock this process opened (the parent: pool.open, memmap arguments)
_opened: "weakref.WeakValueDictionary[tuple, FileBlock]" = weakref.WeakValueDictionary()


class FileBlock(Block):
    """One mapping of a regular file, from byte 0 to ``nbytes``; read-only unless writable."""

    is_file = True

    def __init__(self, path: str, ident: tuple, nbytes: int, mm: Mapping, writable: bool,
                 fd: int = -1, opener: bool = False):
        # not Block.__init__: a file is never unlinked, only unmapped and its fd closed
        self.path, self.ident = path, ident
        self.name = "file:" + path  # write claims, forget messages, error texts
        self.nbytes, self.mm, self.writable, self.fd = nbytes, mm, writable, fd
        self.owner_pid, self.opener = None, opener
        self.root = np.asarray(mm)  # read-only for a read-only mapping
        self.freed = False
        self.arrays = weakref.WeakValueDictionary()
        self.ref = ("file", path, ident[0], ident[1], not writable)
        self._finalizer = weakref.finalize(self, _close, fd, self.name if opener else None)

    @property
    def created_here(self) -> bool:
        """True in the process that opened the file (pool.open): free() closes it there."""
        return self.opener

    # -- opening and attaching -------------------------------------------------------------
    @classmethod
    def map_path(cls, path: str, nbytes: int, writable: bool, expect: tuple | None = None,
                 keep_fd: bool = True) -> "FileBlock":
        """Map ``path``'s first ``nbytes`` bytes; ``expect``: the (st_dev, st_ino) it must be.
        ``keep_fd``: keep one descriptor open, for check_size's fstat (the opener only)."""
        with fd_errors(f"open {path}"):
            fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if expect is not None and ident != tuple(expect):
                raise FileChangedError(
                    f"{path} was replaced since it was opened (it is now another file, inode "
                    f"{st.st_ino}, not {expect[1]}); open the new file with pool.open(path)")
            if st.st_size < nbytes:
                raise FileChangedError(_truncated(path, st.st_size, nbytes))
            mm = Mapping(fd, nbytes, writable)
        except BaseException:
            os.close(fd)
            raise
        if not keep_fd:
            os.close(fd)
            fd = -1
        return cls(path, ident, nbytes, mm, writable, fd, opener=keep_fd)

    @classmethod
    def attach(cls, ref: tuple, nbytes: int, writable: bool = True,
               pin: bool = True) -> "FileBlock":
        """What a worker does with a handle: map the file by path once (cached), checked;
        ``pin`` as Block.attach (False: a consumer's SharedArray, mapped while it lives)."""
        _, path, dev, ino, read_only = ref
        writable = writable and not read_only
        with _lock:
            own = _opened.get(ref)
            if own is not None and not own.freed and own.nbytes >= nbytes:
                return own
            key = ("file:" + path, writable)
            cached = _attached.get(key) or _handles.get(key)
            if cached is not None:
                if cached.ident == (dev, ino) and cached.nbytes >= nbytes:
                    if pin:
                        _attached[key] = cached
                    return cached
                _drop_cached(cached)  # an older file at this path: drop its mapping
                cached.root = cached.mm = None
                cached._finalizer()
            block = cls.map_path(path, nbytes, writable, expect=(dev, ino), keep_fd=False)
            (_attached if pin else _handles)[key] = block
            return block

    # -- use -------------------------------------------------------------------------------
    def check_size(self) -> None:
        """Raise instead of letting a read past a truncated file's end SIGBUS this process."""
        if self.freed:
            raise ArrayFreedError(f"file-backed array {self.path} was closed (by free() or by "
                                  "closing its pool); open it again with pool.open(path)")
        if self.fd >= 0:
            size = os.fstat(self.fd).st_size
        else:  # a consumer's mapping keeps no fd: the path, while it names our file
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) != self.ident:
                return  # replaced: our inode is no longer reachable by its name
            size = st.st_size
        if size < self.nbytes:
            raise FileChangedError(_truncated(self.path, size, self.nbytes))

    def check_intact(self) -> None:
        """Before every call (parent): not closed, truncated, deleted or replaced."""
        self.check_size()
        if self.fd < 0:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise FileChangedError(f"{self.path} was deleted while open; workers map it by "
                                   "path and can no longer find it. Copy what you need with "
                                   "np.array(a), or write it again with np.save") from None
        if (st.st_dev, st.st_ino) != self.ident:
            raise FileChangedError(f"{self.path} was replaced by another file while open; "
                                   "open the new file with pool.open(path)")

    def flush(self) -> None:
        """msync: what kernels wrote is on disk when this returns."""
        if self.writable and not self.freed:
            self.mm.flush()

    def live_views(self) -> int:
        return 0 if self.root is None else sys.getrefcount(self.root) - 2

    def release(self, strict: bool) -> None:
        """msync, unmap and close the file (never deleted). strict: refuse while views live."""
        if self.freed:
            return
        if strict and self.calls:  # as Block.release: a running pool call holds this block
            raise ArrayInUseError(f"cannot close file-backed array {self.path}: a pool call "
                                  "that uses it is running; free it after the call returns")
        if strict and self.live_views():
            import gc
            gc.collect()
        if strict and self.live_views():
            raise ArrayInUseError(
                f"cannot close file-backed array {self.path}: {self.live_views()} NumPy "
                "view(s) of it are still alive; delete them first")
        try:
            self.flush()
        except (OSError, ValueError):
            pass
        self.freed = True
        self.root = self.mm = None  # unmapped now, or with the last NumPy view
        _opened.pop(self.ref, None)
        _drop_cached(self)
        self._finalizer()  # closes the fd; tells pools


def _close(fd: int, name: str | None) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    if name is not None:  # the parent's block: pools tell their workers to unmap it
        for hook in list(_release_hooks):
            hook(name)


def _truncated(path: str, size: int, nbytes: int) -> str:
    return (f"{path} was truncated to {size} bytes while open, but its array needs {nbytes}: "
            "another program shortened it (reading on would crash with SIGBUS); write the "
            "file again and open it anew with pool.open(path)")


def attach_ref(ref: Any, nbytes: int, writable: bool, pin: bool = True) -> Block:
    """The block a handle names: a shared-memory block by name, or a file by its ref
    (``pin``: see Block.attach)."""
    if isinstance(ref, tuple):
        return FileBlock.attach(ref, nbytes, writable, pin)
    return Block.attach(ref, nbytes, writable, pin)


# -- opening .npy files ----------------------------------------------------------------------
MODES = ("r", "r+", "w+")


def check_regular(path: Any, mode: str) -> str:
    """The real path of ``path`` if it is a regular file we may open with ``mode``."""
    path = os.path.realpath(os.fspath(path))
    _check_regular(path, mode)
    return path


def _check_regular(path: str, mode: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no such file: {path}; create a new .npy with pool.open(path, mode='w+', "
            "shape=..., dtype=...)") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)"
                if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file")
        raise InputError(f"{path} is {kind}; pool.open maps regular .npy files only (stream "
                         "a pipe into memory with pool.array(np.load(f)) instead)")
    _check_permission(path, st, write=mode != "r")
    return st


def _check_permission(path: str, st: os.stat_result, write: bool) -> None:
    """The permission bits the file's owner gave, for us: checked from the mode bits even
    when we are root (root may bypass them; a pool should not write a 0444 file)."""
    if st.st_uid == os.geteuid():
        bits, who = (st.st_mode >> 6) & 7, "its owner (you)"
    elif st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        bits, who = (st.st_mode >> 3) & 7, f"its group (gid {st.st_gid})"
    else:
        bits, who = st.st_mode & 7, "other users"
    need = 6 if write else 4
    if bits & need != need:
        what = "read and write" if write else "read"
        fix = ("open it read-only with mode='r'" if write and bits & 4 else
               f"ask the owner to allow it (chmod {'u' if 'owner' in who else 'o'}+"
               f"{'rw' if write else 'r'} {path})")
        if st.st_uid == os.geteuid():
            fix = f"chmod u+{'w' if write else 'r'} {path}" + (
                ", or open it read-only with mode='r'" if write and bits & 4 else "")
        raise FileAccessError(f"{path} (owner uid {st.st_uid}, mode {st.st_mode & 0o777:o}) "
                              f"does not let {who} {what} it; {fix}")


def read_header(path: str, f: Any) -> tuple[tuple, np.dtype, int, bool]:
    """(shape, dtype, data offset, fortran_order) of an open .npy file."""
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:  # 3.0 (utf-8 field names): only NumPy's private reader takes it
            impl = getattr(npformat, "_read_array_header", None)
            if impl is None:
                from numpy.lib import _format_impl
                impl = _format_impl._read_array_header
            shape, fortran, dtype = impl(f, version)
    except ValueError as exc:
        f.seek(0)  # numpy says "EOF: ..." when the file ends early; is it the start of a .npy?
        if str(exc).startswith("EOF") and npformat.MAGIC_PREFIX.startswith(f.read(6)):
            raise InputError(f"{path} is truncated: it ends inside its .npy header, after "
                             f"{os.fstat(f.fileno()).st_size} bytes ({exc}); an interrupted "
                             "write? write it again") from None
        raise InputError(f"{path} is not a .npy file ({exc}); for raw binary data pass "
                         "np.memmap(path, dtype=..., mode='r', shape=...) to map/reduce "
                         "directly") from None
    return tuple(shape), np.dtype(dtype), f.tell(), bool(fortran)


def check_file_dtype(path: str, dt: np.dtype, fortran: bool, shape: tuple, check: Any) -> None:
    if dt.hasobject:
        raise UnsupportedDtypeError(
            f"{path} holds dtype {dt} (pickled Python objects), which cannot be mapped or "
            "shared; save a numeric copy: np.save(new_path, np.load(path, allow_pickle=True)"
            ".astype(np.float64))")
    if fortran and len([s for s in shape if s != 1]) > 1:
        raise InputError(
            f"{path} is stored in Fortran order (shape {shape}); the pool splits C-ordered rows. "
            "Either pass its transpose, which is C-ordered, as a memmap: "
            "pool.map(k, np.load(path, mmap_mode='r').T) (no copy; rows are the last axis), "
            "or rewrite it C-ordered: np.save(path2, np.ascontiguousarray(np.load(path)))")
    if dt.kind in "biufc" and not dt.isnative:
        raise UnsupportedDtypeError(
            f"{path} holds {dt.str} data, not this machine's byte order; pool.load(path) "
            "reads it into shared memory and converts it, or rewrite the file with "
            f"np.save(path2, np.load(path).astype('{dt.newbyteorder('=').str}'))")
    check(dt)


def check_npy_size(path: str, size: int, offset: int, shape: tuple, dt: np.dtype) -> int:
    """The bytes the header promises (header and data); InputError if ``size`` is fewer."""
    nbytes = offset + math.prod(shape) * dt.itemsize
    if size < nbytes:
        raise InputError(f"{path} holds {size} bytes but its header describes {nbytes} "
                         f"(shape {shape}, {dt}): the file is truncated (an interrupted "
                         "write?); write it again")
    return nbytes


def open_npy(path: str, mode: str, shape: Any, dtype: Any, check: Any) -> tuple:
    """(FileBlock, shape, dtype, data offset) of ``path`` opened with ``mode``."""
    if mode not in MODES:
        raise InputError(f"mode={mode!r}: use 'r' (read-only), 'r+' (read and write in place) "
                         "or 'w+' (create or overwrite, with shape= and dtype=)")
    path = os.path.realpath(os.fspath(path))
    if mode == "w+":
        return _create(path, shape, dtype, check)
    if shape is not None or dtype is not None:
        raise InputError(f"shape= and dtype= are for mode='w+' (a new file); mode={mode!r} "
                         "reads them from the file's header")
    _check_regular(path, mode)
    with fd_errors(f"open {path}"), open(path, "rb") as f:
        shape, dt, offset, fortran = read_header(path, f)
    check_file_dtype(path, dt, fortran, shape, check)
    nbytes = check_npy_size(path, os.stat(path).st_size, offset, shape, dt)
    block = FileBlock.map_path(path, nbytes, writable=mode == "r+")
    _opened[block.ref] = block
    return block, shape, dt, offset


def _create(path: str, shape: Any, dtype: Any, check: Any) -> tuple:
    """A new .npy written beside ``path`` and renamed over it (as open_memmap's 'w+', but a
    reader of an older file at the path keeps its data, and a crash leaves no half file);
    the data's blocks are reserved, so a full disk is an error now, not a SIGBUS later."""
    if shape is None:
        raise InputError("mode='w+' creates a new file: give shape= (and dtype=, default "
                         "float64)")
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    dt = check(np.float64 if dtype is None else dtype)
    parent = os.path.dirname(path)
    if os.path.exists(path):  # replacing a file takes the write access its owner gave
        _check_regular(path, "w+")
    header = {"descr": npformat.dtype_to_descr(dt), "fortran_order": False, "shape": shape}
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            try:
                npformat.write_array_header_1_0(f, header)
            except ValueError:
                npformat.write_array_header_2_0(f, header)
            offset = f.tell()
        try:
            os.posix_fallocate(fd, offset, max(nbytes, 1))
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: no fallocate; ftruncate below
                raise OSError(exc.errno, f"cannot reserve {nbytes} bytes for {path} "
                              f"({exc.strerror}): free disk space or choose another "
                              "directory; nothing was written") from exc
        os.ftruncate(fd, offset + nbytes)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)
    block = FileBlock.map_path(path, offset + nbytes, writable=True)
    _opened[block.ref] = block
    return block, shape, dt, offset


# -- np.memmap arguments ------------------------------------------------------------------------
def memmap_block(m: np.memmap) -> tuple[FileBlock, int] | None:
    """(FileBlock of m's file, m's data offset in it), or None if m maps no file any more
    (a memmap-typed ufunc result). Refuses copy-on-write memmaps and replaced files."""
    mm = getattr(m, "_mmap", None)
    path = getattr(m, "filename", None)
    if mm is None or path is None:
        return None
    path = os.path.realpath(os.fspath(path))
    if m.mode == "c":
        raise InputError(f"np.memmap of {path} has mode 'c' (copy-on-write): its changes are "
                         "private to this process and workers would read the file instead; "
                         "pass pool.array(x) (one copy), or open it with mode='r' or 'r+'")
    base = np.frombuffer(mm, dtype=np.uint8)
    start = m.offset - m.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap mapped from
    pos = start + (m.__array_interface__["data"][0] - base.__array_interface__["data"][0])
    writable = m.mode in ("r+", "w+") and m.flags.writeable
    st = os.stat(path)
    ino = _mapped_inode(base.__array_interface__["data"][0])
    if ino is not None and ino != st.st_ino:
        raise FileChangedError(f"{path} was replaced since np.memmap/np.load mapped it; the "
                               "memmap still shows the old file, workers would read the new "
                               "one. Map it again: np.load(path, mmap_mode=...)")
    extent = pos + _extent(m)
    block = FileBlock.map_path(path, max(extent, 1), writable)
    return block, pos


def _extent(m: np.ndarray) -> int:
    """Bytes from the first element's address to one past the last (non-negative strides)."""
    if m.size == 0:
        return 0
    if any(s < 0 for s in m.strides):
        raise InputError("a memmap view with negative strides (x[::-1]) cannot be passed by "
                         "file; pass the forward view and reverse inside the kernel")
    return sum((n - 1) * s for n, s in zip(m.shape, m.strides)) + m.itemsize


_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)")


def _mapped_inode(addr: int) -> int | None:
    """The inode behind the mapping at ``addr`` (Linux /proc/self/maps), else None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                m = _MAPS_LINE.match(line)
                if m and int(m.group(1), 16) <= addr < int(m.group(2), 16):
                    return int(m.group(3)) or None
    except OSError:
        return None
    return None
