"""sharedcompute: numba kernels in place over shared-memory NumPy arrays, on every core.

Examples
--------
>>> import numpy as np, sharedcompute as sc
>>> from sharedcompute.kernels.reductions import total
>>> with sc.Pool(n_workers=2) as pool:
...     x = pool.array(np.arange(1000.0))
...     float(pool.reduce(total, x))
499500.0
"""
import logging

from .errors import (ArrayFreedError, ArrayInUseError, BlockBusyError, BrokenPoolError,
                     FileAccessError, FileChangedError, InputError, ReadOnlyArrayError, KernelError, KernelNotSendableError, KernelTimeoutError, NodeLostError,
                     PoolClosedError, PoolError, SharedBlockCorruptedError,
                     SharedBlockNotFoundError, SharedBlockSecurityError, SharedComputeError,
                     SharedMemoryError, SharedMemoryFullError, UnsupportedDtypeError,
                     VerificationError, WorkerCrashedError)
from .plan import whole
from .kernel import Kernel, kernel
from .pool import Pool, default_start_method
from .dask_nodes import DaskNodes, NodeArray
from ._start import prestart
from .iterate_result import IterateResult
from ._iterate.program import STEP, program, stage
from ._iterate.snapshot import snapshot
from .shared import SharedArray
from ._system import usable_cores
from .verify import VerificationReport, verify

logging.getLogger("sharedcompute").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "Pool", "DaskNodes", "NodeArray", "SharedArray", "kernel", "Kernel", "verify", "VerificationReport", "whole",
    "usable_cores", "default_start_method", "prestart", "IterateResult", "program", "stage",
    "STEP", "snapshot",
    "SharedComputeError", "InputError", "UnsupportedDtypeError", "KernelNotSendableError",
    "SharedMemoryError", "SharedMemoryFullError", "SharedBlockNotFoundError",
    "SharedBlockCorruptedError", "SharedBlockSecurityError", "ArrayFreedError",
    "ArrayInUseError", "KernelError", "PoolError", "PoolClosedError", "BlockBusyError",
    "BrokenPoolError", "WorkerCrashedError", "KernelTimeoutError", "NodeLostError", "VerificationError",
    "FileChangedError", "FileAccessError", "ReadOnlyArrayError",
]
