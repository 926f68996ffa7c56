"""Shared-memory segments (Blocks): named, created, attached, checked and unlinked.

A block is created owner-only (mode 0600, O_EXCL) under an unguessable name with the package
prefix, its pages are reserved with ``posix_fallocate`` (a full /dev/shm is an exception at
creation, never a SIGBUS later), and it is unlinked exactly once, by the process that made it.
Other processes attach with ``shm_open`` + ``mmap`` directly instead of the stdlib
``SharedMemory`` class, so an attaching process never registers the name with a resource
tracker (gh-82300: on Python <= 3.12 the tracker unlinks live blocks when an attacher exits).
"""
from __future__ import annotations

import functools
import gc
import hashlib
import mmap
import os
import secrets
import sys
import threading
import weakref
from typing import Any, Callable, Iterable

import numpy as np

from ._system import SHM_DIR, format_bytes, shm_space
from .errors import (ArrayFreedError, ArrayInUseError, SharedBlockCorruptedError,
                     SharedBlockNotFoundError, SharedBlockSecurityError, SharedMemoryError,
                     SharedMemoryFullError)

try:
    import _posixshmem  # the C module behind multiprocessing.shared_memory on POSIX
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

PREFIX = "sc"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

# Name -> Block this process created (weak: a block nobody references is unlinked).
_owned: "weakref.WeakValueDictionary[str, Block]" = weakref.WeakValueDictionary()
# (name, writable) -> Block this process attached; dropped when the owner says it was freed.
_attached: dict[tuple[str, bool], "Block"] = {}
_release_hooks: list[Callable[[str], None]] = []
_lock = threading.Lock()


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


def _tag(stem: str) -> str:
    """4 hex digits that only this package's names carry: a keyed hash of the rest, so a
    foreign file whose name merely fits the pattern is taken for ours once in 65,536."""
    return hashlib.blake2b(stem.encode(), digest_size=2, key=b"sharedcompute").hexdigest()


def make_block_name() -> str:
    """``sc<creator pid in base 36>_<48 random bits><tag>``: at most 25 characters (macOS
    allows 30); see _tag."""
    stem = f"{PREFIX}{_base36(os.getpid())}_{secrets.token_hex(6)}"
    return stem + _tag(stem)


def creator_pid(name: str) -> int | None:
    """The creating pid encoded in one of our block names, or None if the name is not ours
    (wrong pattern, wrong tag, or a pid no process can have)."""
    if not name.startswith(PREFIX) or "_" not in name:
        return None
    head, _, tail = name[len(PREFIX):].partition("_")
    if not head or len(tail) != 16 or any(c not in _DIGITS for c in head):
        return None
    if any(c not in "0123456789abcdef" for c in tail) or tail[12:] != _tag(name[:-4]):
        return None
    pid = int(head, 36)
    return pid if 0 < pid <= _pid_max() else None


@functools.lru_cache(maxsize=1)
def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4_194_304  # Linux's ceiling (PID_MAX_LIMIT); other systems are lower


class Block:
    """One mapped shared-memory segment. Owner blocks keep their fd to detect tampering."""

    is_file = False  # files.FileBlock: a regular file mapped MAP_SHARED
    calls = 0  # pool calls running on this block now (execute.hold): free() refuses then

    def __init__(self, name: str, nbytes: int, mm: mmap.mmap, writable: bool,
                 owner_pid: int | None, fd: int = -1):
        self.name, self.nbytes, self.mm, self.writable = name, nbytes, mm, writable
        self.owner_pid, self.fd = owner_pid, fd
        self.root: np.ndarray | None = np.frombuffer(mm, dtype=np.uint8, count=nbytes)
        self.freed = False
        # the SharedArray views of this block (shared.py), so free() can refuse while others live
        self.arrays: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
        if owner_pid is not None:
            self._finalizer = weakref.finalize(self, _unlink_owned, name, fd, owner_pid)

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
                fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
                break
            except FileExistsError:  # 64 random bits: only a squatter gets here
                continue
        else:
            raise SharedMemoryError("could not find a free shared-memory name after 16 tries")
        try:
            os.fchmod(fd, 0o600)  # independent of the umask
            _reserve(fd, nbytes, padding, space.free if space else None)
            nbytes += padding
            mm = mmap.mmap(fd, nbytes)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        _tracker_register(name)
        block = cls(name, nbytes, mm, True, os.getpid(), fd)
        _owned[name] = block
        return block

    @classmethod
    def attach(cls, name: str, nbytes: int, writable: bool = True) -> "Block":
        """Attach by name (cached per process); verify owner, mode and size first."""
        with _lock:
            owned = _owned.get(name)
            if owned is not None and not owned.freed:
                return owned
            cached = _attached.get((name, writable))
            if cached is not None:
                return cached
            flags = os.O_RDWR if writable else os.O_RDONLY
            try:
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
                mm = mmap.mmap(fd, nbytes, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
            finally:
                os.close(fd)
            block = cls(name, nbytes, mm, writable, None)
            _attached[(name, writable)] = block
            return block

    # -- use -------------------------------------------------------------------------------
    def check_intact(self) -> None:
        """Raise if freed, truncated or unlinked by another process (owner side, before dispatch)."""
        if self.freed:
            raise ArrayFreedError(f"shared array in block {self.name!r} was freed; "
                                  "create a new one (pool.array / pool.empty)")
        if self.fd < 0:
            return
        st = os.fstat(self.fd)  # one syscall: this runs before every call
        if st.st_size < self.nbytes:
            raise SharedBlockCorruptedError(
                f"block {self.name!r} was truncated by another process below its {self.nbytes} bytes")
        # unlinked (perhaps re-created under the same name); macOS reports 0 links for shm
        if st.st_nlink == 0 and sys.platform.startswith("linux"):
            raise SharedBlockNotFoundError(
                f"block {self.name!r} was removed from {SHM_DIR} by another process; "
                "workers can no longer attach it")

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
        self.root = None
        if self.owner_pid is not None:
            self._finalizer.detach()
            _unlink_owned(self.name, self.fd, self.owner_pid, by_release=True)
        else:
            _attached.pop((self.name, self.writable), None)
        try:
            self.mm.close()
        except BufferError:
            pass  # views still alive keep the mapping; it goes when the last one does
        for hook in list(_release_hooks):
            hook(self.name)


def _unlink_owned(name: str, fd: int, owner_pid: int, by_release: bool = False) -> None:
    if os.getpid() != owner_pid:  # a forked child inherited the finalizer: not ours to unlink
        return
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass
    _tracker_unregister(name)
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    if not by_release:  # dropped (garbage-collected), not freed: tell the pools too, so their
        for hook in list(_release_hooks):  # workers unmap it (issue 17: they kept every
            hook(name)                     # dropped block mapped until the pool closed)


def _tracker_register(name: str) -> None:
    # The parent registers what it creates, so that if it is SIGKILLed the tracker (kept alive
    # until the last worker exits) unlinks the block. Workers never register or unregister.
    from multiprocessing import resource_tracker
    resource_tracker.register("/" + name, "shared_memory")


def _tracker_unregister(name: str) -> None:
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


def on_block_release(hook: Callable[[str], None]) -> None:
    """Call ``hook(name)`` whenever a block is freed in this process (pools detach workers)."""
    _release_hooks.append(hook)


def forget_attached(names: Iterable[str]) -> None:
    """Unmap attached (not owned) blocks by name; used by workers when the owner freed them."""
    for name in names:
        for writable in (True, False):
            block = _attached.pop((name, writable), None)
            if block is not None:
                block.root = None
                try:
                    block.mm.close()
                except BufferError:
                    pass


def list_segments(directory: str = SHM_DIR) -> list[str]:
    """Names of this package's blocks currently in the shared-memory directory."""
    try:
        return sorted(n for n in os.listdir(directory) if creator_pid(n) is not None)
    except FileNotFoundError:
        return []
