"""``pool.iterate``, one family: sweeps of a stencil with the loop inside the workers.

- ``plan.py``: what the parent decides, for every backend: the checks before any work, the
  schedule of blocks (temporal blocking) and plain sweeps, the tile size, what the call
  returns (``sc.IterateResult``, from iterate_result.py); the local backend's run (fixed
  edges, residual slots, one task per worker) and what the repeat of a call its workers
  keep needs (``Repeat``; the call itself is an entry of _cache.CallCache).
- ``sweep.py``: what a worker runs: the sweeps, blocks and residual checks between barriers.
- ``program.py`` and ``stages.py``: step programs (``sc.program``), several kernels per
  step: the parent's plan and the worker's loop.

An iterate goes pool -> backend -> _iterate.plan -> _executors -> _worker -> _iterate.sweep.
"""
# A worker meets this package when it unpickles a task's Sweeps (plan.py): importing
# sweep.py and stages.py here puts their runners into _evaluate.RUNNERS before that task runs, in every process.
from . import stages, sweep  # noqa: F401
