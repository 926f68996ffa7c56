"""What ``pool.iterate(..., info=True)`` returns (public: ``sc.IterateResult``)."""
from __future__ import annotations

from typing import Any, NamedTuple


class IterateResult(NamedTuple):
    """What ``pool.iterate(..., info=True)`` returns: the array holding the last sweep, how
    many sweeps ran, the last residual checked (None if none was), the largest block."""

    array: Any
    sweeps: int
    residual: float | None
    block_sweeps: int


__all__ = ["IterateResult"]
