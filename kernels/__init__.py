"""The built-in kernel library, installed as ``sharedcompute.kernels``.

Each family module holds kernels beside their plain-NumPy references; ``registry`` maps
every kernel to its reference, tolerance, input generator and benchmark workload.
"""
from . import compute, elementwise, reductions, scans, stencils  # noqa: F401
