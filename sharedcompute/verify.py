"""verify(): run a kernel on the pool and its plain-NumPy reference on copies, and compare."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, VerificationError
from .execute import Whole
from .kernel import Kernel
from .partition import pad_whole, valid_rows
from .shared import SharedArray


@dataclass
class Comparison:
    """One output compared with the reference."""

    label: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool
    detail: str = ""


@dataclass
class VerificationReport:
    """Pool result versus reference: max abs/rel error per output and the tolerance used."""

    kernel: str
    n_workers: int
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.comparisons) and all(c.ok for c in self.comparisons)

    def raise_if_failed(self) -> "VerificationReport":
        if not self.ok:
            raise VerificationError(str(self))
        return self

    def __str__(self) -> str:
        head = f"verify {self.kernel} on {self.n_workers} workers: {'OK' if self.ok else 'MISMATCH'}"
        rows = [f"  {c.label:<10} max abs {c.max_abs:.3g}  max rel {c.max_rel:.3g}  "
                f"tolerance rtol={c.rtol:.3g} atol={c.atol:.3g}  {'ok' if c.ok else 'FAILED'}"
                f"{'  ' + c.detail if c.detail else ''}" for c in self.comparisons]
        return "\n".join([head] + rows)

    __repr__ = __str__


def compare(label: str, got: Any, want: Any, rtol: float, atol: float) -> Comparison:
    """Elementwise |got - want| <= atol + rtol * |want|, with NaNs required in the same places."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return Comparison(label, np.inf, np.inf, rtol, atol, False,
                          f"shape {got.shape} != reference {want.shape}")
    if got.size == 0:
        return Comparison(label, 0.0, 0.0, rtol, atol, True)
    g, w = got.astype(np.complex128 if np.iscomplexobj(got) or np.iscomplexobj(want)
                      else np.float64), want.astype(np.complex128 if np.iscomplexobj(want)
                                                    or np.iscomplexobj(got) else np.float64)
    nan_g, nan_w = np.isnan(g), np.isnan(w)
    same_nan = bool(np.array_equal(nan_g, nan_w))
    mask = ~(nan_g | nan_w)
    with np.errstate(all="ignore"):
        err = np.abs(g - w)[mask]
        scale = np.abs(w)[mask]
        inf_ok = np.all((g[mask] == w[mask]) | np.isfinite(w[mask]))
        rel = np.where(scale > 0, err / np.where(scale > 0, scale, 1), np.where(err > 0, np.inf, 0))
    err = np.where(np.isnan(err), 0, err)
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    ok = same_nan and bool(inf_ok) and bool(np.all(err <= atol + rtol * scale))
    detail = "" if same_nan else "NaNs in different places"
    if not ok and err.size:
        idx = np.unravel_index(int(np.argmax(err - (atol + rtol * scale))), got.shape) \
            if mask.all() else None
        if idx is not None:
            detail = (detail + f" first worst at index {tuple(int(i) for i in idx)}").strip()
    return Comparison(label, max_abs, max_rel, rtol, atol, ok, detail)


def run_reference(kernel: Kernel, args: list[Any], boundary: Any = None) -> Any:
    """Call the kernel's reference on whole NumPy arrays, with the same halo contract as
    the kernel: outputs' written rows and inputs padded by the boundary. Mutates outputs."""
    if kernel.reference is None:
        raise InputError(f"kernel {kernel.name} has no reference= to verify against")
    boundary = kernel.boundary if boundary is None else boundary
    if not kernel.depth:
        return kernel.reference(*args)
    parts = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim >= 1
             and i not in kernel.whole]
    n = args[parts[0]].shape[0]
    lo, hi = valid_rows(n, kernel.depth, boundary)
    call = list(args)
    for i in parts:
        if i in kernel.writes:
            call[i] = args[i][lo:hi]
        else:
            call[i] = pad_whole(args[i], kernel.depth, boundary)
    return kernel.reference(*call)


def _is_cluster_array(x: Any) -> bool:
    return type(x).__name__ == "DaskArray" and type(x).__module__ == "sharedcompute.dask_backend"


def verify(pool: Any, kernel: Kernel, *args: Any, rows: int | None = None, boundary: Any = None,
           rtol: float | None = None, atol: float | None = None) -> VerificationReport:
    """Run ``kernel`` on ``pool`` and its reference on copies of the inputs; compare.

    The caller's arrays are not modified. Returns a report whose ``ok`` says whether every
    output (or the reduction's value) is within tolerance; ``str(report)`` shows the errors.

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> from sharedcompute.kernels.elementwise import triad
    >>> with sc.Pool(n_workers=2) as pool:
    ...     b = pool.array(np.arange(10.0)); c = pool.array(np.ones(10)); a = pool.zeros(10)
    ...     sc.verify(pool, triad, a, b, c, 3.0).ok
    True
    """
    if not isinstance(kernel, Kernel):
        raise InputError(f"{kernel!r} is not a sharedcompute kernel")
    pool_args, ref_args, made = [], [], []
    for a in args:
        inner = a.array if isinstance(a, Whole) else a
        if isinstance(inner, SharedArray) or _is_cluster_array(inner):
            copy = pool.array(np.asarray(inner))
            made.append(copy)
            pool_args.append(Whole(copy) if isinstance(a, Whole) else copy)
            ref_args.append(np.array(inner))
        elif isinstance(inner, np.ndarray):
            pool_args.append(a)
            ref_args.append(np.array(inner))
        else:
            pool_args.append(a)
            ref_args.append(inner)
    report = VerificationReport(kernel.name, pool.n_workers)
    try:
        if kernel.kind == "reduce":
            got = pool.reduce(kernel, *pool_args, rows=rows)
            want = kernel.reference(*ref_args) if rows is None else kernel.reference(*ref_args,
                                                                                      rows=rows)
            got_parts = got if isinstance(got, tuple) else (got,)
            want_parts = want if isinstance(want, tuple) else (want,)
            for k, (g, w) in enumerate(zip(got_parts, want_parts)):
                r, t = kernel.tolerance(np.result_type(np.asarray(w).dtype))
                report.comparisons.append(compare(f"result[{k}]" if len(got_parts) > 1
                                                  else "result", g, w,
                                                  r if rtol is None else rtol,
                                                  t if atol is None else atol))
            if len(got_parts) != len(want_parts):
                report.comparisons.append(Comparison("result", np.inf, np.inf, 0, 0, False,
                                                     "different number of parts"))
        else:
            pool.map(kernel, *pool_args, rows=rows, boundary=boundary)
            run_reference(kernel, ref_args, boundary)
            for i in kernel.writes:
                g, w = pool_args[i], ref_args[i]
                r, t = kernel.tolerance(np.asarray(w).dtype)
                report.comparisons.append(compare(kernel.params[i], np.asarray(g), w,
                                                  r if rtol is None else rtol,
                                                  t if atol is None else atol))
                del g
    finally:
        del pool_args
        for m in made:
            if isinstance(m, SharedArray):
                if m.block is not None:
                    m.block.release(strict=False)
            else:
                m.free()
    return report
