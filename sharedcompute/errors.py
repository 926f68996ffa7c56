"""The package's exception types: one base class, each also a builtin users already catch.

Messages say what was given, what was expected and how to fix it; they never repr an array.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
import types
from concurrent.futures.process import BrokenProcessPool
from typing import Any


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


class FileChangedError(SharedBlockCorruptedError):
    """A file-backed array's file was truncated, replaced or deleted while it was open."""


class FileAccessError(SharedComputeError, PermissionError):
    """A file's permission bits do not allow the access asked for (checked even for root)."""


class ReadOnlyArrayError(InputError):
    """A write to an array opened read-only (``pool.open(path, mode="r")``, a mode-'r' memmap)."""


class ArrayFreedError(SharedComputeError, ValueError):
    """A SharedArray was used after it was freed (or after its pool closed)."""


class ArrayInUseError(SharedComputeError, RuntimeError):
    """A SharedArray cannot be freed because NumPy views of it are still alive."""


class KernelError(SharedComputeError, RuntimeError):
    """A kernel raised inside a worker; ``__cause__`` carries the worker's traceback.

    Attributes: ``kernel`` (name), ``rows`` ((start, stop) of the failing partition),
    ``worker`` (pid), ``remote_type`` (name of the original exception type).
    """

    def __init__(self, message: str, kernel: str = "", rows: tuple = (), worker: int | None = 0,
                 remote_type: str = ""):
        super().__init__(message)
        self.kernel, self.rows, self.worker, self.remote_type = kernel, rows, worker, remote_type
        self.echo = self.lost_task = False  # see remote_error_info

    def __reduce__(self):
        return (type(self), (str(self), self.kernel, self.rows, self.worker, self.remote_type))


class RemoteTraceback(Exception):
    """Holds the text of a worker's traceback; set as ``__cause__`` of a KernelError."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0]) if self.args else ""


class TaskLostError(SharedComputeError, LookupError):
    """Internal: a worker was rung for a cached task it does not hold (never re-run)."""


# -- the one wire format of a remote exception: kernels, tasks, imap chunks, Dask tasks ------
def remote_error_info(exc: BaseException, rows: tuple, pid: int | None,
                      prefix: str = "", keep: bool = False) -> dict:
    """A plain, always-picklable description of ``exc`` (some exceptions cannot be pickled).

    ``echo``: a barrier broken because another worker failed first (report the first);
    ``lost``: the worker did not hold the cached task it was rung for; ``pickled``
    (``keep``: a user task's): the exception itself, where it pickles and unpickles, so
    the caller can catch its own type (task_error).
    """
    try:
        text = str(exc)
    except Exception:  # pragma: no cover
        text = "<exception text unavailable>"
    where = getattr(exc, "sc_where", None)  # a program's stage and step (_iterate/stages.py)
    if where:
        text += f" (in {where})"
    info = dict(type=type(exc).__name__, message=prefix + text, rows=tuple(rows), pid=pid,
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                echo=isinstance(exc, threading.BrokenBarrierError),
                lost=isinstance(exc, TaskLostError))
    if keep:
        try:
            info["pickled"] = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
            pickle.loads(info["pickled"])  # some exceptions pickle but cannot be rebuilt
        except Exception:
            info.pop("pickled", None)
    return info


def task_error(name: str, info: dict) -> BaseException:
    """The caller's exception for a user task (or an imap item) that raised: its own, with
    the worker's traceback as its cause (as ProcessPoolExecutor does), when it could be
    pickled, else a KernelError naming its type and message."""
    pickled = info.get("pickled")
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
            exc.__cause__ = RemoteTraceback(info["traceback"])
            return exc
        except Exception:
            pass
    err = KernelError(f"task {name} raised {info['type']}: {info['message']} (worker "
                      f"{info['pid']})", kernel=name, rows=(0, 0), worker=info["pid"],
                      remote_type=info["type"])
    err.__cause__ = RemoteTraceback(info["traceback"])
    return err


def kernel_error(what: str, info: dict) -> KernelError:
    """The KernelError the caller sees for a remote_error_info() (pid None: in process)."""
    s, e = info["rows"]
    where = "in process" if info["pid"] is None else f"worker {info['pid']}"
    err = KernelError(f"kernel {what} raised {info['type']}: {info['message']} (rows [{s}, {e}), "
                      f"{where})", kernel=what, rows=(s, e), worker=info["pid"],
                      remote_type=info["type"])
    err.echo, err.lost_task = info.get("echo", False), info.get("lost", False)
    err.__cause__ = RemoteTraceback(info["traceback"])
    return short_traceback(err) if info.get("startup") else err


# -- start-up failures: short tracebacks --------------------------------------------------
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def first_error(errors: list[KernelError]) -> KernelError:
    """In iterate, a failing worker aborts the barrier and the others then report a broken
    barrier: the original failure, not its echo."""
    primary = [e for e in errors if not e.echo]
    return (primary or errors)[0]


def short_traceback(exc: BaseException) -> BaseException:
    """Mark ``exc``, a failure to start workers or to import a kernel's module in them, as
    one whose traceback, printed uncaught, leaves sharedcompute's own frames out: what the
    user needs is the message (what failed, and the fix) and their own lines that led to
    it, not eight frames of the engine (issue 27: 25 lines at most). Sets
    ``exc.startup_failure``; installs, once, a ``sys.excepthook`` that does the leaving out
    and hands on to the hook it found (code that catches the error sees every frame)."""
    exc.startup_failure = True  # type: ignore[attr-defined]
    if not getattr(sys.excepthook, "short_startup_failures", False):
        previous = sys.excepthook

        def hook(kind: Any, value: BaseException, tb: Any) -> None:
            if getattr(value, "startup_failure", False):  # printed from value's own tb
                tb = _outside_package(tb)
                value.with_traceback(tb)
            previous(kind, value, tb)
        hook.short_startup_failures = True  # type: ignore[attr-defined]
        sys.excepthook = hook
    return exc


def _outside_package(tb: Any) -> Any:
    """The traceback ``tb`` without the frames of sharedcompute's own files."""
    frames = []
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(PACKAGE_DIR + os.sep):
            frames.append(tb)
        tb = tb.tb_next
    out = None
    for t in reversed(frames):
        out = types.TracebackType(out, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return out


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


class NodeLostError(BrokenPoolError):
    """A node-local Dask pool (sc.DaskNodes) lost a node: the Dask worker holding some rows
    of every array left the cluster. Those rows are gone, so the pool refuses every later
    call; close it (the other nodes' pools are freed) and start again.

    Attribute: ``node``, the lost Dask worker's address.
    """

    def __init__(self, message: str, node: str = ""):
        super().__init__(message)
        self.node = node

    def __reduce__(self):
        return type(self), (self.args[0] if self.args else "", self.node)


# -- what the parent says when a worker dies or overruns (the executors' one vocabulary) ----
UNGUARDED_MAIN_EXIT = 86  # a worker's exit code: the main module starts a pool on import
MAIN_IMPORT_EXIT = 87  # importing the main module raised in a worker (_preload's servers)
CANNOT_START = (UNGUARDED_MAIN_EXIT, MAIN_IMPORT_EXIT)  # restarting the workers cannot help


def signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def worker_crashed(pid: int, code: int | None, what: str, rows: tuple, start_method: str,
                   task: str | None = None, closed: bool = False) -> SharedComputeError:
    """Worker ``pid`` died (exit code ``code``) while running kernel ``what`` on ``rows``
    or, ``task`` given, the user task of that name; ``closed``: Pool.close killed it."""
    if closed:
        return PoolClosedError("the pool was closed while tasks ran" if task is not None
                               else f"the pool was closed by another thread while kernel "
                               f"{what} ran; the rows it was writing are undefined")
    sig = signal_name(code)
    if code == UNGUARDED_MAIN_EXIT:  # a task's worker too: no worker can start here
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
        return short_traceback(WorkerCrashedError(
            f"worker {pid} could not start: {main} creates a sc.Pool when it is imported, "
            f"and with start_method={start_method!r} every worker imports the main module. "
            "Put the script's work under `if __name__ == \"__main__\":` (or "
            "start_method='fork' on Linux); restarting the workers cannot help",
            pid=pid, exitcode=code, signal_name=sig, rows=(0, 0)))
    if code == MAIN_IMPORT_EXIT:
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main module"
        return short_traceback(WorkerCrashedError(
            f"worker {pid} could not start: importing {main} raised there, not in this "
            "process (worker 0 printed which module, where and why, above); restarting the "
            "workers cannot help",
            pid=pid, exitcode=code, signal_name=sig, rows=(0, 0)))
    if task is not None:
        return WorkerCrashedError(
            f"worker {pid} died of {sig} while running task {task}; the pool restarts its "
            "workers and goes on with the other tasks", pid=pid, exitcode=code,
            signal_name=sig, rows=(0, 0))
    hint = (" (SIGKILL usually means the kernel ran out of memory and the OS killed it)"
            if sig == "SIGKILL" else "")
    return WorkerCrashedError(
        f"worker {pid} died of {sig}{hint} while running kernel {what} on rows [{rows[0]}, "
        f"{rows[1]}); those rows of the arrays it writes are undefined. The pool starts new "
        "workers on its next call.", pid=pid, exitcode=code, signal_name=sig, rows=rows)


def timed_out(stuck: list[tuple[int, tuple]], what: str, timeout: float | None,
              task: str | None = None) -> KernelTimeoutError:
    """Workers ``[(pid, rows)]`` past the deadline of kernel ``what`` or of user ``task``."""
    if task is not None:
        return KernelTimeoutError(
            f"task {task} did not finish within timeout={timeout} s; its worker "
            f"{stuck[0][0]} was killed (the pool restarts its workers once the others are "
            "done)")
    desc = ", ".join(f"worker {pid} rows [{rows[0]}, {rows[1]})" for pid, rows in stuck)
    return KernelTimeoutError(
        f"kernel {what} did not finish within timeout={timeout} s ({desc}); the stuck "
        "workers were killed and are replaced on the next call; rows they were writing "
        "are undefined")


class VerificationError(SharedComputeError, AssertionError):
    """A pool result differs from the kernel's reference beyond its tolerance."""
