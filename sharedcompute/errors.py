"""The package's exception types: one base class, each also a builtin users already catch.

Messages say what was given, what was expected and how to fix it; they never repr an array.
"""
from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool


class SharedComputeError(Exception):
    """Base class of every error raised by sharedcompute."""


class InputError(SharedComputeError, ValueError):
    """Bad arguments: shapes, dtypes, parameters; raised before any work starts."""


class UnsupportedDtypeError(InputError, TypeError):
    """An object, structured or otherwise non-numeric dtype was given."""


class KernelNotSendableError(InputError, TypeError):
    """A kernel cannot be found by worker processes (lambda, local function, interactive __main__)."""


class SharedMemoryError(SharedComputeError, OSError):
    """A shared-memory block could not be created, attached or used."""


class SharedMemoryFullError(SharedMemoryError, MemoryError):
    """The shared-memory file system has less free space than the array needs."""


class SharedBlockNotFoundError(SharedMemoryError, FileNotFoundError):
    """A block's name no longer exists (freed, or removed by another process)."""


class SharedBlockCorruptedError(SharedMemoryError):
    """A block is smaller than its handle says (truncated by another process)."""


class SharedBlockSecurityError(SharedMemoryError, PermissionError):
    """A block is owned by another user or readable by others: refusing to attach."""


class ArrayFreedError(SharedComputeError, ValueError):
    """A SharedArray was used after it was freed (or after its pool closed)."""


class ArrayInUseError(SharedComputeError, RuntimeError):
    """A SharedArray cannot be freed because NumPy views of it are still alive."""


class KernelError(SharedComputeError, RuntimeError):
    """A kernel raised inside a worker; ``__cause__`` carries the worker's traceback.

    Attributes: ``kernel`` (name), ``rows`` ((start, stop) of the failing partition),
    ``worker`` (pid), ``remote_type`` (name of the original exception type).
    """

    def __init__(self, message: str, kernel: str = "", rows: tuple = (), worker: int = 0,
                 remote_type: str = ""):
        super().__init__(message)
        self.kernel, self.rows, self.worker, self.remote_type = kernel, rows, worker, remote_type

    def __reduce__(self):
        return (type(self), (str(self), self.kernel, self.rows, self.worker, self.remote_type))


class RemoteTraceback(Exception):
    """Holds the text of a worker's traceback; set as ``__cause__`` of a KernelError."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0]) if self.args else ""


class PoolError(SharedComputeError, RuntimeError):
    """The pool cannot run the call."""


class PoolClosedError(PoolError):
    """The pool was used after ``close()``."""


class BlockBusyError(PoolError):
    """Another call is already writing the same array."""


class BrokenPoolError(PoolError, BrokenProcessPool):
    """The pool lost its workers; it restarts them on the next call. Output rows are undefined."""


class WorkerCrashedError(BrokenPoolError):
    """A worker process died (signal or exit) while holding rows; those rows are undefined.

    Attributes: ``pid``, ``exitcode`` (negative: signal number), ``signal_name``, ``rows``.
    """

    def __init__(self, message: str, pid: int = 0, exitcode: int | None = None,
                 signal_name: str = "", rows: tuple = ()):
        super().__init__(message)
        self.pid, self.exitcode, self.signal_name, self.rows = pid, exitcode, signal_name, rows


class KernelTimeoutError(BrokenPoolError, TimeoutError):
    """A call ran past its ``timeout=``; the stuck workers were killed and are replaced."""


class VerificationError(SharedComputeError, AssertionError):
    """A pool result differs from the kernel's reference beyond its tolerance."""
