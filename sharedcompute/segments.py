"""Shared-memory segments (Blocks): named, created, attached, checked and unlinked.

A block is created owner-only (mode 0600, O_EXCL) under an unguessable name with the package
prefix, its pages are reserved with ``posix_fallocate`` (a full /dev/shm is an exception at
creation, never a SIGBUS later), and it is unlinked exactly once, by the process that made it.
Other processes attach with ``shm_open`` + ``mmap`` directly instead of the stdlib
``SharedMemory`` class, so an attaching process never registers the name with a resource
tracker (gh-82300: on Python <= 3.12 the tracker unlinks live blocks when an attacher exits).

No block keeps a file descriptor (issue 17: two per array ran a 256-fd process out at array
124): the fd is closed right after libc's ``mmap`` (the stdlib's ``mmap.mmap`` keeps a dup of
it), and the integrity check stats the name instead (device, inode, size). A mapping lives as
long as the last NumPy array over it, so it is never unmapped under a live view.

Attached blocks are cached per process: strongly for workers (``view_from_handle``; the
parent names freed blocks, ``forget_attached``), weakly for SharedArray handles a consumer
unpickled, so a block is unmapped there when its last SharedArray is closed or collected.

The tamper watch: one inotify descriptor per process tells which shared blocks another
process may have truncated, unlinked or replaced, so a repeated call need not stat every
array. ``Block.check_intact`` stats a block's name once, with a watch added *before*
the stat, and remembers how many events the watch had then. Later checks compare that count
with the events read since (one ``read`` per call, or none: a bound call polls the
descriptor together with the workers' sentinels), and stat again only when they differ.
Truncation is IN_MODIFY, unlink and rename-over are IN_ATTRIB (the link count), a move is
IN_MOVE_SELF; a lost event (queue overflow) starts a new ``key``, so every block is stat-ed
again. Linux only: elsewhere ``watcher()`` is None and every check stats, as before.
Releases (free, close, the pool's close) and events read bump ``releases``, which bound
calls compare: an event another call drained is still seen by them. Reads in the parent
(``SharedArray.numpy``, so every ``np.asarray``, ufunc and index) ask ``unchanged``: a poll(0)
while nothing happened, a stat after an event, so a truncated block raises, not SIGBUS.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import gc
import itertools
import mmap
import os
import select
import struct
import sys
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ._system import SHM_DIR, format_bytes, make_block_name, shm_space
from .errors import (ArrayFreedError, ArrayInUseError, SharedBlockCorruptedError,
                     SharedBlockNotFoundError, SharedBlockSecurityError, SharedMemoryError,
                     SharedMemoryFullError)

try:
    import _posixshmem  # the C module behind multiprocessing.shared_memory on POSIX
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

# Name -> Block this process created (weak: a block nobody references is unlinked).
_owned: "weakref.WeakValueDictionary[str, Block]" = weakref.WeakValueDictionary()
# (name, writable) -> Block this process attached: pinned (workers) until the owner says it
# was freed; held by handles (consumers) only while a SharedArray of it lives.
_attached: dict[tuple[str, bool], "Block"] = {}
_handles: weakref.WeakValueDictionary[tuple[str, bool], Block] = weakref.WeakValueDictionary()
_release_hooks: list[Callable[[str], None]] = []
_lock = threading.Lock()


# -- the tamper watch ----------------------------------------------------------------------
# inotify(7) masks
_EVENTS = 0x2 | 0x4 | 0x400 | 0x800  # IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
_OVERFLOW = 0x4000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
_keys = itertools.count(1)

releases = 0  # bumped by every block release and SharedArray.close in this process


def released() -> None:
    """Count a release: bound calls holding an older count re-check their arrays."""
    global releases
    releases += 1


class Watcher:
    """The process's inotify descriptor and the event count of every watch."""

    def __init__(self, libc: Any, fd: int):
        self.libc, self.fd = libc, fd
        self.key = next(_keys)  # a new key: no earlier verification counts
        self.counts: dict[int, int] = {}
        self.poll = select.poll()  # "nothing queued" is one poll(0), no read and no raise
        self.poll.register(fd, select.POLLIN)

    def add(self, path: str) -> int | None:
        """Watch ``path`` (the same wd again if it is watched); None if it cannot be."""
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), _EVENTS)
        return None if wd < 0 else wd

    def drain(self) -> None:
        """Count the events queued since the last drain (one read when there are none)."""
        counts = self.counts
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            released()  # bound calls poll the queue, which is now empty: they check again
            off = 0
            while off + _HEADER.size <= len(buf):
                wd, mask, _, n = _HEADER.unpack_from(buf, off)
                off += _HEADER.size + n
                if mask & _OVERFLOW:
                    self.key = next(_keys)  # events were lost: verify every block again
                counts[wd] = counts.get(wd, 0) + 1


_watcher: Watcher | None = None
_tried = False


def unchanged(seen: tuple | None) -> bool:
    """True if the watch in ``seen`` (a Block's ``watched``) had no event since that stat:
    a poll(0) when nothing is queued. SharedArray reads ask this (about 0.5 us, a stat is
    2): False means stat the block again."""
    w = _watcher
    if w is None or seen is None:
        return False
    if w.poll.poll(0):
        w.drain()  # events, for this block or others; an overflow starts a new key
    return seen[0] == w.key and w.counts.get(seen[1], 0) == seen[2]


def watcher() -> Watcher | None:
    """This process's Watcher, made at the first check or SharedArray read (a worker makes
    one only if a task reads a SharedArray; kernels' views are not checked)."""
    global _watcher, _tried
    if _tried:
        return _watcher
    _tried = True
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd >= 0:
        _watcher = Watcher(libc, fd)
    return _watcher


def _after_fork_in_child() -> None:  # the parent's queue is not ours to drain
    global _watcher, _tried
    if _watcher is not None:
        try:
            os.close(_watcher.fd)
        except OSError:
            pass
    _watcher, _tried = None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- mappings that keep no file descriptor ---------------------------------------------------
_MS_SYNC = 4 if sys.platform.startswith("linux") else 0x10  # Linux; macOS and the BSDs


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.msync.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


_MAP_FAILED = ctypes.c_void_p(-1).value


class Mapping:
    """``nbytes`` of an open file mapped ``MAP_SHARED`` with libc's mmap; the caller closes the
    fd at once (``mmap.mmap`` would keep a dup of it open until closed).

    NumPy arrays over it (``np.asarray(m)``) keep it alive as their base, and it is unmapped
    when it is collected, so no view can outlive its pages.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> with tempfile.TemporaryFile() as f:
    ...     _ = f.write(bytes(8))
    ...     f.flush()
    ...     m = Mapping(f.fileno(), 8, writable=True)
    >>> a = np.asarray(m)          # the file is closed: the mapping needs no fd
    >>> a[:] = 7
    >>> int(a.sum()), a.base is m
    (56, True)
    """

    __slots__ = ("addr", "nbytes", "readonly")

    def __init__(self, fd: int, nbytes: int, writable: bool):
        libc = _libc()
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        addr = libc.mmap(None, nbytes, prot, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.addr, self.nbytes, self.readonly = addr, nbytes, not writable

    @property
    def __array_interface__(self) -> dict:
        return {"shape": (self.nbytes,), "typestr": "|u1", "version": 3,
                "data": (self.addr, self.readonly)}

    def flush(self) -> None:
        """msync(MS_SYNC): written pages are on disk (file mappings) when this returns."""
        if self.addr and _libc().msync(self.addr, self.nbytes, _MS_SYNC) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"msync: {os.strerror(err)}")

    def __del__(self) -> None:
        addr, self.addr = self.addr, 0
        if addr:
            try:
                _libc().munmap(addr, self.nbytes)
            except (AttributeError, TypeError):  # pragma: no cover - interpreter shutdown
                return


def fd_limit_error(what: str, exc: OSError) -> SharedMemoryError:
    """The SharedMemoryError for an EMFILE/ENFILE ``exc``, naming the limit and the fix."""
    if exc.errno == errno.ENFILE:
        return SharedMemoryError(
            f"cannot {what}: the system's table of open files is full ({exc.strerror}); close "
            "files or processes, or raise the system limit (Linux: sysctl fs.file-max)")
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover
        soft = hard = -1
    inf = getattr(sys.modules.get("resource"), "RLIM_INFINITY", -1)
    cap = "unlimited" if hard == inf else str(hard)
    want = max(4096, 2 * soft) if hard == inf else min(hard, max(4096, 2 * soft))
    return SharedMemoryError(
        f"cannot {what}: this process has no file descriptor left ({exc.strerror}; its limit, "
        f"RLIMIT_NOFILE, is {soft}, hard limit {cap}). sharedcompute keeps no descriptor per "
        "array, so something else holds them: close files you no longer need, or raise the "
        f"limit with `ulimit -n {want}` in the shell that starts Python (or "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({want}, hard)) in the program)")


@contextlib.contextmanager
def fd_errors(what: str) -> Iterator[None]:
    """Turn running out of file descriptors into SharedMemoryError (see fd_limit_error)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE) and not isinstance(exc, SharedMemoryError):
            raise fd_limit_error(what, exc) from exc
        raise


def _map(fd: int, nbytes: int, writable: bool, name: str) -> Mapping:
    try:
        return Mapping(fd, nbytes, writable)
    except OSError as exc:
        raise SharedMemoryError(
            f"cannot map {format_bytes(nbytes)} of {name!r}: {exc.strerror}"
            + (" (too many mappings: vm.max_map_count, or the address-space limit "
               "RLIMIT_AS); free arrays you no longer need" if exc.errno == errno.ENOMEM
               else "")) from exc


class Block:
    """One mapped shared-memory segment; it keeps no fd (check_intact stats the name)."""

    is_file = False  # files.FileBlock: a regular file mapped MAP_SHARED
    calls = 0  # pool calls running on this block now (local.hold): free() refuses then
    watched: tuple | None = None  # (watcher key, wd, event count) when last stat-ed intact

    def __init__(self, name: str, nbytes: int, mm: Mapping, writable: bool,
                 owner_pid: int | None, ident: tuple = ()):
        self.name, self.nbytes, self.mm, self.writable = name, nbytes, mm, writable
        self.owner_pid, self.ident = owner_pid, ident  # ident: (st_dev, st_ino) when mapped
        self.root: np.ndarray | None = np.asarray(mm)  # every view's base; keeps mm alive
        self.freed = False
        # the SharedArray views of this block (shared.py), so free() can refuse while others live
        self.arrays: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
        if owner_pid is not None:
            self._finalizer = weakref.finalize(self, _unlink_owned, name, owner_pid)

    @property
    def created_here(self) -> bool:
        """True in the process that created (and alone may unlink) this block."""
        return self.owner_pid == os.getpid()

    # -- creation and attachment ---------------------------------------------------------
    @classmethod
    def create(cls, nbytes: int, padding: int = 0) -> "Block":
        """A new owner-only block of ``padding + nbytes`` bytes (errors speak of ``nbytes``,
        what the caller asked for)."""
        if _posixshmem is None:  # pragma: no cover
            raise SharedMemoryError("sharedcompute needs POSIX shared memory (Linux or macOS)")
        space = shm_space()
        if space is not None and nbytes + padding > space.free:
            raise SharedMemoryFullError(_full_message(nbytes, space.free, space.path, padding))
        for _ in range(16):
            name = make_block_name()
            try:
                with fd_errors(f"create a shared array of {format_bytes(nbytes)}"):
                    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                                              mode=0o600)
                break
            except FileExistsError:  # 64 random bits: only a squatter gets here
                continue
        else:
            raise SharedMemoryError("could not find a free shared-memory name after 16 tries")
        try:
            os.fchmod(fd, 0o600)  # independent of the umask
            _reserve(fd, nbytes, padding, space.free if space else None)
            nbytes += padding
            st = os.fstat(fd)
            mm = _map(fd, nbytes, True, name)
        except BaseException:
            _posixshmem.shm_unlink("/" + name)
            raise
        finally:
            os.close(fd)  # the mapping needs no fd; check_intact stats the name
        _tracker_register(name)
        block = cls(name, nbytes, mm, True, os.getpid(), (st.st_dev, st.st_ino))
        _owned[name] = block
        return block

    @classmethod
    def attach(cls, name: str, nbytes: int, writable: bool = True, pin: bool = True) -> "Block":
        """Attach by name (cached per process); verify owner, mode and size first.

        ``pin``: keep it mapped until forget_attached (workers); else only while something
        references the Block (a consumer's SharedArrays), so dropping them unmaps it."""
        key = (name, writable)
        with _lock:
            owned = _owned.get(name)
            if owned is not None and not owned.freed:
                return owned
            cached = _attached.get(key) or _handles.get(key)
            if cached is not None:
                if pin:
                    _attached[key] = cached
                return cached
            flags = os.O_RDWR if writable else os.O_RDONLY
            try:
                with fd_errors(f"attach shared array {name!r}"):
                    fd = _posixshmem.shm_open("/" + name, flags, mode=0)
            except FileNotFoundError:
                raise SharedBlockNotFoundError(
                    f"shared-memory block {name!r} does not exist: it was freed, its pool closed, "
                    "or another process removed it") from None
            try:
                st = os.fstat(fd)
                if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                    raise SharedBlockSecurityError(
                        f"refusing to attach block {name!r}: owned by uid {st.st_uid} with mode "
                        f"{st.st_mode & 0o777:o}, expected uid {os.geteuid()} and mode 600 "
                        "(another user may have pre-created the name)")
                if st.st_size < nbytes:
                    raise SharedBlockCorruptedError(
                        f"block {name!r} holds {st.st_size} bytes but the array needs {nbytes}: "
                        "another process truncated it")
                mm = _map(fd, nbytes, writable, name)
            finally:
                os.close(fd)
            block = cls(name, nbytes, mm, writable, None, (st.st_dev, st.st_ino))
            (_attached if pin else _handles)[key] = block
            return block

    # -- use -------------------------------------------------------------------------------
    def check_intact(self, drained: bool = False) -> None:
        """Raise if freed, truncated or unlinked by another process (owner side, before
        dispatch). A stat only when the block's inotify watch saw events since the last one
        (the tamper watch above); ``drained``: the caller read the queue for this call already."""
        if self.freed:
            raise ArrayFreedError(f"shared array in block {self.name!r} was freed; "
                                  "create a new one (pool.array / pool.empty)")
        if not self.ident:
            return
        w = watcher()
        wd = None
        if w is not None:
            if not drained:
                w.drain()
            seen = self.watched
            if seen is not None and seen[0] == w.key and w.counts.get(seen[1], 0) == seen[2]:
                return
            # watch before the stat: a change after the stat is an event for the next check
            wd = w.add(os.path.join(SHM_DIR, self.name))
            key, before = w.key, w.counts.get(wd, 0)
        self._stat_check()
        if wd is not None:
            self.watched = (key, wd, before)

    def check_readable(self) -> None:
        """Before a view is handed out (SharedArray.numpy): raise instead of letting a read of
        a block another process truncated SIGBUS. A poll(0) while the watch saw nothing."""
        if unchanged(self.watched) or not self.ident:
            return
        with contextlib.suppress(SharedBlockNotFoundError):
            self.check_intact()  # unlinked: the name no longer leads to our pages, which stay

    def _stat_check(self) -> None:
        st = _stat_name(self.name)
        if st is None or (st.st_dev, st.st_ino) != self.ident:
            again = "" if st is None else " (another block now has its name)"
            raise SharedBlockNotFoundError(
                f"block {self.name!r} was removed from {SHM_DIR} by another process{again}; "
                "workers can no longer attach it")
        if st.st_size < self.nbytes:
            raise SharedBlockCorruptedError(
                f"block {self.name!r} was truncated by another process to {st.st_size} of its "
                f"{self.nbytes} bytes (reading on would crash with SIGBUS); its data is lost: "
                "free() the array and make it again")

    def live_views(self) -> int:
        """NumPy arrays still viewing this block (each view's base is ``root``)."""
        return 0 if self.root is None else sys.getrefcount(self.root) - 2

    def release(self, strict: bool) -> None:
        """Unlink (owner only) and unmap. strict: refuse while views exist; else unmap later."""
        if self.freed:
            return
        if strict and getattr(self, "calls", 0):
            raise ArrayInUseError(
                f"cannot free shared array {self.name!r}: a pool call that uses it is running; "
                "free it after the call returns")
        if strict and self.live_views():
            gc.collect()  # views held only by reference cycles (e.g. a caught exception's frames)
        if strict and self.live_views():
            raise ArrayInUseError(
                f"cannot free shared array {self.name!r}: {self.live_views()} NumPy view(s) of it "
                "are still alive (from np.asarray, .numpy() or ufunc outputs); delete them first, "
                "or copy what you need with np.array(a)")
        self.freed = True
        released()
        self.root = self.mm = None  # unmapped now, or when the last NumPy view goes
        if self.owner_pid is not None:
            self._finalizer.detach()
            _unlink_owned(self.name, self.owner_pid, by_release=True)
        else:
            _drop_cached(self)
        for hook in list(_release_hooks):
            hook(self.name)


def _drop_cached(block: Block) -> None:
    key = (block.name, block.writable)
    for cache in (_attached, _handles):
        if cache.get(key) is block:
            cache.pop(key, None)


def _stat_name(name: str) -> os.stat_result | None:
    """stat of a block by name, None if there is none; Linux: the file in /dev/shm."""
    if sys.platform.startswith("linux"):
        try:
            return os.stat(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            return None
    try:  # macOS: shm objects have no path; a descriptor for the moment of the fstat
        with fd_errors(f"check shared array {name!r}"):
            fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0)
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _unlink_owned(name: str, owner_pid: int, by_release: bool = False) -> None:
    if os.getpid() != owner_pid:  # a forked child inherited the finalizer: not ours to unlink
        return
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass
    _tracker_unregister(name)
    if not by_release:  # dropped (garbage-collected), not freed: tell the pools too, so their
        for hook in list(_release_hooks):  # workers unmap it (issue 17: they kept every
            hook(name)                     # dropped block mapped until the pool closed)


_tracked: set[str] = set()  # the names this process registered with the resource tracker


def _tracker_register(name: str) -> None:
    # The parent registers what it creates, so that if it is SIGKILLed the tracker (kept alive
    # until the last worker exits) unlinks the block. Workers never register or unregister.
    from multiprocessing import resource_tracker
    resource_tracker.register("/" + name, "shared_memory")
    _tracked.add(name)


def _tracker_unregister(name: str) -> None:
    # Only a name this process registered, once: the tracker answers an UNREGISTER of a name
    # it does not hold with a KeyError traceback on stderr (tracker noise, issue 27).
    if name in _tracked:
        _tracked.discard(name)
        from multiprocessing import resource_tracker
        resource_tracker.unregister("/" + name, "shared_memory")


def _reserve(fd: int, nbytes: int, padding: int, free: int | None) -> None:
    # tmpfs ftruncate reserves nothing: the first write past the free space is a SIGBUS.
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, padding + nbytes)
        except OSError as exc:
            raise SharedMemoryFullError(_full_message(nbytes, free, SHM_DIR, padding, exc)) \
                from exc
    else:  # macOS: no fallocate; ftruncate is all there is
        os.ftruncate(fd, padding + nbytes)


def _full_message(nbytes: int, free: int | None, path: str, padding: int = 0,
                  exc: OSError | None = None) -> str:
    have = "unknown" if free is None else format_bytes(free)
    why = f" ({exc.strerror})" if exc is not None else ""
    extra = f" (+{format_bytes(padding)} of alignment offset)" if padding else ""
    return (f"cannot reserve {format_bytes(nbytes)}{extra} of shared memory: {path} has {have} "
            f"free{why}. "
            "Free other shared arrays, use smaller arrays, or give the machine more shared memory "
            "(Docker: --shm-size=8g; Kubernetes: an emptyDir with medium: Memory)")


def unlink_owned() -> None:
    """Free now every block this process created, as its exit would (their finalizers run
    at exit), for a process about to leave with ``os._exit``: a worker stopping while it
    imports the main module, whose top level made arrays before its unguarded ``Pool()``.
    Left to the resource tracker, they would stay in /dev/shm until the parent exits and
    then be reported as leaked (issue 27: the noise under the missing guard's message)."""
    for block in list(_owned.values()):
        if block.created_here and not block.freed:
            block.release(strict=False)


def on_block_release(hook: Callable[[str], None]) -> None:
    """Call ``hook(name)`` whenever a block is freed in this process (pools detach workers)."""
    _release_hooks.append(hook)


def forget_attached(names: Iterable[str]) -> None:
    """Unmap attached (not owned) blocks by name; used by workers when the owner freed them."""
    for name in names:
        for writable in (True, False):
            for cache in (_attached, _handles):
                block = cache.pop((name, writable), None)
                if block is not None:  # unmapped now, or when the last NumPy view goes
                    block.root = block.mm = None
