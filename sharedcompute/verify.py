"""verify(): run a kernel on the pool (under more than one splitting) and its plain-NumPy
reference on copies, and compare with a tolerance scaled to the computation."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import InputError, VerificationError
from .kernel import Kernel
from .partition import TARGET_CHUNKS, chunk_grid, chunk_rows, pad_whole, valid_rows
from .plan import Whole
from .pool import Pool
from .shared import SharedArray

#: The fine splitting cuts the rows into about this many chunks (at least one row each), so
#: even a 3-row array gets three partitions; odd, so its edges rarely meet the pool's.
FINE_CHUNKS = 7


@dataclass
class Comparison:
    """One output compared with the reference under one splitting.

    ``worst`` is the largest ``|got - want|`` as a fraction of what its element was allowed
    (<= 1 passes); ``n_terms`` the estimate the default tolerance was sized by; ``scale``
    what ``rtol`` multiplied: ``|want|`` or ``sum|terms|`` (the reference on |inputs|).
    ``passes_with``, for a failed comparison, is the smallest ``(rtol, atol)`` that would
    pass it (rtol at this atol; atol for elements whose scale is 0), None when no tolerance
    can (NaNs or infinities in different places).
    """

    label: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool
    detail: str = ""
    splitting: str = "pool"
    worst: float = 0.0
    n_terms: int | None = None
    scale: str = "|want|"
    passes_with: tuple[float, float] | None = None


@dataclass
class VerificationReport:
    """Pool result versus reference: per splitting and output, the max abs/rel error and the
    tolerance used. ``ok`` needs every comparison (every splitting) to pass."""

    kernel: str
    n_workers: int
    comparisons: list[Comparison] = field(default_factory=list)
    splittings: dict[str, str] = field(default_factory=dict)
    fastmath: Any = False  # the kernel's fastmath=: a failure then says so (fastmath_note)

    @property
    def ok(self) -> bool:
        return bool(self.comparisons) and all(c.ok for c in self.comparisons)

    def failed(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    def by_splitting(self, name: str) -> list[Comparison]:
        return [c for c in self.comparisons if c.splitting == name]

    def raise_if_failed(self) -> "VerificationReport":
        if not self.ok:
            raise VerificationError(str(self))
        return self

    def __str__(self) -> str:
        head = (f"verify {self.kernel} on {self.n_workers} workers: "
                f"{'OK' if self.ok else 'MISMATCH'}")
        lines = [head] + [f"  splitting {name:<9} {how}" for name, how in self.splittings.items()]
        width = max([len(c.label) for c in self.comparisons] + [6])
        for c in self.comparisons:
            n = f" n={c.n_terms}" if c.n_terms is not None else ""
            lines.append(
                f"  {c.label:<{width}} {c.splitting:<9} max abs {c.max_abs:.3g}  max rel "
                f"{c.max_rel:.3g}  tolerance rtol={c.rtol:.3g}*{c.scale} atol={c.atol:.3g}{n}"
                f"  err/tol {c.worst:.3g}  {'ok' if c.ok else 'FAILED'}"
                f"{'  ' + c.detail if c.detail else ''}")
        if not self.ok and self.fastmath:
            lines.append(self.fastmath_note())
        return "\n".join(lines)

    def fastmath_note(self) -> str:
        """Why a kernel compiled with fastmath likely fails, and the tolerance that passes.

        fastmath lets LLVM reassociate, contract and vectorise float arithmetic, so a loop
        sum adds in another order than the reference; its nnan/ninf flags assume no NaN or
        inf (``x != x`` is folded to False), which no tolerance covers."""
        needs = [c.passes_with for c in self.failed()]
        head = (f"  note: kernel {self.kernel} is compiled with fastmath={self.fastmath!r}, "
                "the likely reason: numba may reorder, contract and vectorise its float "
                "arithmetic, so its bits differ from the reference's")
        if any(n is None for n in needs):
            return (head + "; NaNs or infinities differ, which no tolerance passes: "
                    "fastmath's 'nnan'/'ninf' assume there are none (use a set of flags "
                    "without them, e.g. fastmath={'reassoc', 'contract', 'nsz', 'arcp'})")
        r = _round_up(max(n[0] for n in needs if n is not None))
        a = _round_up(max(n[1] for n in needs if n is not None))
        return (head + f"; it passes with rtol={r:g}, atol={a:g} (sc.verify(..., rtol={r:g}, "
                f"atol={a:g}) or @sc.kernel(..., rtol={r:g}, atol={a:g}))")

    __repr__ = __str__


def _round_up(x: float) -> float:
    """``x`` rounded up to two significant digits (a tolerance to suggest)."""
    if not x > 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return float(f"{math.ceil(x * (1 + 1e-9) / step) * step:.2g}")


def compare(label: str, got: Any, want: Any, rtol: float, atol: float, scale: Any = None, *,
            splitting: str = "pool", n_terms: int | None = None) -> Comparison:
    """Elementwise ``|got - want| <= atol + rtol * s`` with ``s = max(|want|, |scale|)``
    (``scale`` ignored where it is not finite); NaNs must be in the same places and an
    infinite reference value must be matched exactly."""
    got, want = np.asarray(got), np.asarray(want)
    scale_arr = None if scale is None else np.asarray(scale)
    if scale_arr is not None and scale_arr.shape != want.shape:
        scale_arr = None
    basis = "|want|" if scale_arr is None else "sum|terms|"

    def result(max_abs: float, max_rel: float, ok: bool, detail: str = "",
               worst: float = 0.0, passes_with: tuple | None = None) -> Comparison:
        return Comparison(label, max_abs, max_rel, float(rtol), float(atol), ok, detail,
                          splitting, worst, n_terms, basis, passes_with)

    if got.shape != want.shape:
        return result(np.inf, np.inf, False, f"shape {got.shape} != reference {want.shape}",
                      np.inf)
    if got.size == 0:
        return result(0.0, 0.0, True)
    ctype = np.complex128 if np.iscomplexobj(got) or np.iscomplexobj(want) else np.float64
    g, w = got.astype(ctype), want.astype(ctype)
    with np.errstate(all="ignore"):
        nan_g, nan_w = np.isnan(g), np.isnan(w)
        err = np.where(g == w, 0.0, np.abs(g - w))          # equal infinities agree
        err = np.where(nan_g & nan_w, 0.0, err)              # so do NaNs in the same place
        err = np.where(nan_g ^ nan_w, np.inf, err)
        s = np.abs(w)
        if scale_arr is not None:
            m = np.abs(scale_arr.astype(ctype))
            s = np.where(np.isfinite(m) & (m > s), m, s)
        s = np.where(np.isfinite(s), s, 0.0)
        allowed = np.where(np.isfinite(w), atol + rtol * s, 0.0)  # an infinity: exactly
        aw = np.abs(w)
        rel = np.where(aw > 0, err / np.where(aw > 0, aw, 1), np.where(err > 0, np.inf, 0.0))
        ratio = np.where(allowed > 0, err / np.where(allowed > 0, allowed, 1),
                         np.where(err > 0, np.inf, 0.0))
    ok = bool(np.all(err <= allowed))
    detail = "" if np.array_equal(nan_g, nan_w) else "NaNs in different places"
    if not ok:
        flat = int(np.argmax(ratio))
        idx = np.unravel_index(flat, got.shape)
        where = tuple(int(i) for i in idx)
        gv, wv = g.ravel()[flat], w.ravel()[flat]
        if ctype is np.complex128:
            gs, ws = f"{complex(gv)}", f"{complex(wv)}"
        else:
            gs, ws = f"{float(gv):.17g}", f"{float(wv):.17g}"
        detail = (detail + f" worst at index {where}: got {gs}, reference {ws}").strip()
        return result(float(err.max()), float(rel.max()), ok, detail, float(ratio.max()),
                      _passes_with(err, allowed, s, float(atol)))
    return result(float(err.max()), float(rel.max()), ok, detail, float(ratio.max()))


def _passes_with(err: np.ndarray, allowed: np.ndarray, s: np.ndarray,
                 atol: float) -> tuple[float, float] | None:
    """The smallest (rtol, atol) under which every element passes ``compare``; None when
    an element is off by an infinity or NaN (no finite tolerance passes it)."""
    bad = err > allowed
    if not np.all(np.isfinite(err[bad])):  # NaNs apart, or an infinity not matched
        return None
    scaled, flat = bad & (s > 0), bad & (s == 0)
    need_r = float(np.max((err[scaled] - atol) / s[scaled])) if scaled.any() else 0.0
    need_a = float(np.max(err[flat])) if flat.any() else atol
    return max(need_r, 0.0), max(need_a, atol)


def run_reference(kernel: Kernel, args: list[Any], boundary: Any = None) -> Any:
    """Call the kernel's reference on whole NumPy arrays, with the same halo contract as
    the kernel: outputs' written rows and inputs padded by the boundary. Mutates outputs."""
    if kernel.reference is None:
        raise InputError(f"kernel {kernel.name} has no reference= to verify against")
    boundary = kernel.boundary if boundary is None else boundary
    if not kernel.depth:
        return kernel.reference(*args)
    parts = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim >= 1
             and i not in kernel.whole and i not in kernel.halo]  # halo=: as they are
    n = args[parts[0]].shape[0]
    lo, hi = valid_rows(n, kernel.depth, boundary)
    call = list(args)
    for i in parts:
        if i in kernel.writes:
            call[i] = args[i][lo:hi]
        else:
            call[i] = pad_whole(args[i], kernel.depth, boundary)
    return kernel.reference(*call)


# -- the pieces of verify -----------------------------------------------------------------------
@dataclass
class _Arg:
    """One argument as verify sees it: its pristine copy and how the pool receives it."""

    value: Any          # np.ndarray copy of an array argument, else the value itself
    kind: str           # "shared" (SharedArray / cluster array), "ndarray" (plain) or "value"
    wrapper: Any        # sc.whole's marker class when passed as sc.whole(...), else None
    parted: bool        # split on axis 0 by the pool


def _classify(kernel: Kernel, args: Sequence[Any], array_types: tuple) -> list[_Arg]:
    """``array_types``: the pool's own arrays (SharedArray, or a cluster's), as it says."""
    out = []
    for i, a in enumerate(args):
        wrapper = Whole if isinstance(a, Whole) else None
        inner = a.array if wrapper is not None else a
        # a file-mapped np.memmap is split like a SharedArray on a local pool (issue 13)
        mapped = (isinstance(inner, np.memmap) and getattr(inner, "_mmap", None) is not None
                  and SharedArray in tuple(array_types))
        if mapped or isinstance(inner, (SharedArray,) + tuple(array_types)):
            copy = np.array(np.asarray(inner))
            out.append(_Arg(copy, "shared", wrapper,
                            wrapper is None and i not in kernel.whole and copy.ndim >= 1))
        elif isinstance(inner, np.ndarray):
            out.append(_Arg(np.array(inner), "ndarray", wrapper, False))
        else:
            out.append(_Arg(inner, "value", wrapper, False))
    return out


def _grid(specs: list[_Arg], rows: int | None) -> tuple[int, int, int]:
    """(rows, the pool's own rows per chunk, the fine splitting's rows per chunk)."""
    parted = [s.value for s in specs if s.parted]
    if parted:
        n = parted[0].shape[0]
        row_nbytes = max(math.prod(a.shape[1:]) * a.dtype.itemsize for a in parted)
        own = chunk_rows(n, row_nbytes)
    else:
        n = int(rows or 0)
        own = max(1, -(-n // TARGET_CHUNKS))
    fine = max(1, min(-(-n // FINE_CHUNKS), own - 1))
    return n, own, fine


def _n_terms(kernel: Kernel, specs: list[_Arg], rows: int | None) -> int:
    """How many input elements one output element can depend on (an upper estimate).

    Map kernels: per partitioned array its row size (times 2*depth+1 halo rows for read
    arrays), plus every whole or plain array's size. Reductions and scans: the size of
    every array (or ``rows=`` when there is none). Scalars count for nothing."""
    n = 0
    arrays = [(i, s) for i, s in enumerate(specs) if isinstance(s.value, np.ndarray)]
    if kernel.kind == "map":
        for i, s in arrays:
            if s.parted:
                per_row = math.prod(s.value.shape[1:])
                n += per_row * (1 if i in kernel.writes else 2 * kernel.depth + 1)
            else:
                n += s.value.size
    else:
        n = sum(s.value.size for _, s in arrays) or int(rows or 0)
    return max(1, int(n))


def _call_reference(kernel: Kernel, args: list[Any], rows: int | None, boundary: Any) -> list:
    """The reference's values: the written arrays (map, scan) or the result's parts."""
    if kernel.kind == "reduce":
        if kernel.reference is None:
            raise InputError(f"kernel {kernel.name} has no reference= to verify against")
        want = kernel.reference(*args) if rows is None else kernel.reference(*args, rows=rows)
        return list(want) if isinstance(want, tuple) else [want]
    run_reference(kernel, args, boundary)
    return [args[i] for i in kernel.writes]


def _absolute(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "c":
            return np.abs(v).astype(v.dtype)
        if v.dtype.kind in "fi":
            return np.abs(v)
        return np.array(v)
    if isinstance(v, (float, np.floating)):
        return type(v)(abs(v))
    if isinstance(v, (complex, np.complexfloating)):
        return abs(v)
    return v


def _magnitude(kernel: Kernel, specs: list[_Arg], rows: int | None, boundary: Any) -> list | None:
    """The reference run on |inputs| (floats, complex, signed-integer arrays; integer
    scalars such as counts stay as they are): for sums, dot products and any computation
    whose signs come from its inputs this is sum|terms| behind each value. None when the
    reference cannot run on them (then the tolerance scales with |want| alone)."""
    args = [_absolute(s.value) for s in specs]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return _call_reference(kernel, args, rows, boundary)
    except Exception:
        return None


def _has_magnitude_inputs(specs: list[_Arg]) -> bool:
    for s in specs:
        v = s.value
        if isinstance(v, np.ndarray) and v.dtype.kind in "fci":
            return True
        if isinstance(v, (float, complex, np.floating, np.complexfloating)):
            return True
    return False


def _free(arrays: list[Any]) -> None:
    for m in arrays:
        if isinstance(m, SharedArray):
            if m.block is not None:
                m.block.release(strict=False)
        else:
            m.free()


def _run_pool(pool: Any, kernel: Kernel, specs: list[_Arg], rows: int | None, boundary: Any,
              chunk: int | None) -> list:
    """Run on the pool with fresh copies (``chunk``: forced rows per chunk); the outputs'
    values (copied out) or the result's parts. Every shared copy is freed."""
    made: list[Any] = []
    args: list[Any] = []
    try:
        for s in specs:
            if s.kind == "shared":
                a = pool.array(s.value)
                made.append(a)
            elif s.kind == "ndarray":
                a = np.array(s.value)
            else:
                a = s.value
            args.append(s.wrapper(a) if s.wrapper is not None else a)
        extra = {} if chunk is None else {"chunk_rows": chunk}
        if kernel.kind == "reduce":
            got = pool.reduce(kernel, *args, rows=rows, **extra)
            return list(got) if isinstance(got, tuple) else [got]
        pool.map(kernel, *args, rows=rows, boundary=boundary, **extra)
        return [np.array(np.asarray(args[i])) for i in kernel.writes]
    finally:
        del args
        _free(made)


def _run_per_chunk(kernel: Kernel, specs: list[_Arg], rows: int | None, boundary: Any,
                   chunk: int, n_chunks: int) -> list:
    """A map kernel in this process with ``chunk``-row chunks, every chunk its own partition:
    an inline pool with one worker per chunk (the engine's own planning and halos). A map
    calls its kernel once per worker's range, so on one worker the pool alone never shows
    a partition edge."""
    inner = Pool(max(1, n_chunks), backend="inline")
    try:
        return _run_pool(inner, kernel, specs, rows, boundary, chunk)
    finally:
        inner.close()


def verify(pool: Any, kernel: Kernel, *args: Any, rows: int | None = None, boundary: Any = None,
           rtol: Any = None, atol: Any = None) -> VerificationReport:
    """Run ``kernel`` on ``pool`` and its reference on copies of the inputs; compare.

    The caller's arrays are not modified; every shared copy verify makes is freed. Returns a
    report whose ``ok`` says whether every output (or every part of the reduction's value)
    is within tolerance under every splitting; ``str(report)`` shows the errors.

    Splittings. A kernel that is wrong only where a partition starts or ends (a loop that
    assumes its rows are the whole array, a stencil reading neighbours without ``depth=``,
    a reduction that mishandles its first row) is right whenever the array is one partition,
    which small arrays and one-worker pools always are. So the pool's result is checked

    - ``pool``: under the pool's own chunk grid and worker ranges;
    - ``fine``: on the pool with ``k``-row chunks (``chunk_rows=``), about seven chunks of at
      least one row, so a 3-row array is three chunks; reductions and scans call the kernel
      once per chunk, on any number of workers;
    - ``per-chunk`` (map kernels): the same ``k``-row chunks, each its own partition, run in
      this process on an inline pool with one worker per chunk (the engine's own planning
      and halo code), because a map calls its kernel once per worker's range and one
      worker would otherwise see no edge at all.

    So verify costs about three runs of a map kernel (two of a reduction) and two of its
    reference, on copies.

    The reference runs once, on whole arrays (for stencils: inputs padded by ``depth``
    rows on axis 0 as the boundary says, outputs the written rows; see ``run_reference``).

    Tolerance. Each element passes when ``|got - want| <= atol + rtol * scale``:

    - ``scale`` is the larger of ``|want|`` and ``|ref(|inputs|)|``: the reference run once
      more on the absolute values of the float, complex and signed-integer inputs (integer
      scalars such as counts are left alone). For a sum, a dot product, a matmul, a
      prefix sum or a stencil's weighted sum that is sum|terms| behind each value, the
      quantity rounding errors scale with, so a sum that cancels to nearly 0 is judged
      against the size of its terms, not of its result. It never lowers the scale below
      ``|want|``, and is ignored where it is not finite or the reference cannot take it.
    - by default (``Kernel.tolerance``), integer and bool outputs are exact; float and
      complex outputs get ``rtol = (n + 4) * eps`` of the output's dtype (and an atol of
      ``(n + 4) * eps * tiny`` for underflow), ``n`` being how many input elements one
      output element can depend on: a map's row sizes (times ``2 * depth + 1`` for halos)
      plus whole arrays' sizes (300 + 1500 for a 7x300 @ 300x5 matmul), a reduction's or
      scan's input sizes. A sum or dot product of n terms in any order is within
      ``(n - 1) * eps/2 * sum|terms|`` of the exact value, so two correct implementations
      (the pool's chunk order and NumPy's pairwise or BLAS order) differ by at most about
      ``n * eps * sum|terms|``; the 4 covers elementwise roundings. This is the worst
      case, so ordinary inputs never come close (typical errors are sqrt(n) or log(n)
      times smaller), yet a dropped, repeated or shifted term, a wrong partial or a
      relative bias of 1e-6 in a float64 sum of up to ~10^9 terms is far outside it.
    - a kernel declares ``rtol=``/``atol=`` (a number, or a callable
      ``f(dtype, n, *args)`` when its error depends on the problem: an iteration count,
      precision lower than its output dtype); ``rtol``/``atol`` given here override both.

    Examples
    --------
    >>> import numpy as np, sharedcompute as sc
    >>> from sharedcompute.kernels.elementwise import triad
    >>> with sc.Pool(n_workers=2) as pool:
    ...     b = pool.array(np.arange(10.0)); c = pool.array(np.ones(10)); a = pool.zeros(10)
    ...     report = sc.verify(pool, triad, a, b, c, 3.0)
    ...     report.ok, sorted(report.splittings)
    (True, ['fine', 'per-chunk', 'pool'])
    """
    if not isinstance(kernel, Kernel):
        raise InputError(f"{kernel!r} is not a sharedcompute kernel")
    if kernel.reference is None:
        raise InputError(f"kernel {kernel.name} has no reference= to verify against")
    specs = _classify(kernel, args, pool.array_types)
    n_rows, own, fine = _grid(specs, rows)
    n_terms = _n_terms(kernel, specs, rows)
    workers = pool.n_workers
    report = VerificationReport(kernel.name, workers, fastmath=kernel.fastmath)

    def chunks(k: int) -> str:
        c, k = len(chunk_grid(n_rows, k)), max(1, min(k, n_rows))
        return f"{c} chunk{'s' if c != 1 else ''} of {k} row{'s' if k != 1 else ''}"
    report.splittings["pool"] = f"the pool's own: {chunks(own)} over {workers} worker(s)"
    report.splittings["fine"] = f"on the pool: {chunks(fine)} over {workers} worker(s)"
    if kernel.kind == "map":
        report.splittings["per-chunk"] = f"in this process: {chunks(fine)}, each a partition"

    results = {"pool": _run_pool(pool, kernel, specs, rows, boundary, None),
               "fine": _run_pool(pool, kernel, specs, rows, boundary, fine)}
    if kernel.kind == "map":
        results["per-chunk"] = _run_per_chunk(kernel, specs, rows, boundary, fine,
                                              len(chunk_grid(n_rows, fine)))

    ref_args = [np.array(s.value) if isinstance(s.value, np.ndarray) else s.value for s in specs]
    want = _call_reference(kernel, ref_args, rows, boundary)
    del ref_args
    inexact = [np.asarray(w).dtype.kind in "fc" for w in want]
    mag = None
    if any(inexact) and _has_magnitude_inputs(specs):
        mag = _magnitude(kernel, specs, rows, boundary)
        if mag is not None and len(mag) != len(want):
            mag = None
    if kernel.kind == "reduce":
        labels = [f"result[{k}]" if len(want) > 1 else "result" for k in range(len(want))]
    else:
        labels = [kernel.params[i] for i in kernel.writes]
    frozen = []
    for s in specs:
        v = s.value
        if isinstance(v, np.ndarray):
            v = v.view()
            v.flags.writeable = False
        frozen.append(v)
    tolerances = []
    for w in want:
        dtype = np.asarray(w).dtype
        r, t = kernel.tolerance(dtype, n_terms, frozen)
        if rtol is not None:
            r = float(rtol(dtype, n_terms, *frozen) if callable(rtol) else rtol)
        if atol is not None:
            t = float(atol(dtype, n_terms, *frozen) if callable(atol) else atol)
        tolerances.append((r, t))
    for name, got in results.items():
        for k, (label, w) in enumerate(zip(labels, want)):
            if k >= len(got):
                break
            r, t = tolerances[k]
            report.comparisons.append(compare(label, got[k], w, r, t,
                                              None if mag is None or not inexact[k] else mag[k],
                                              splitting=name, n_terms=n_terms))
        if len(got) != len(want):
            report.comparisons.append(Comparison(
                "result", np.inf, np.inf, 0.0, 0.0, False,
                f"{len(got)} parts, reference has {len(want)}", name, np.inf))
    return report
