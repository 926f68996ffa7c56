"""SharedArray's indexing and reshaping, typed by what NumPy returns for them.

A view of the block stays a SharedArray (the workers map it from a handle and split its
rows); copies (advanced indexing, flatten, a reshape that must copy) are ndarrays and
scalars are NumPy scalars, as NumPy gives. Type checkers see the key's result: slices and
``...``/``None`` give SharedArray, boolean masks and lists of indices give ndarray, and
integer keys Any (a scalar or a view, depending on ndim, as in NumPy's own stubs).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from types import EllipsisType

    from numpy.typing import NDArray
    from typing_extensions import Self, TypeAlias, Unpack

    from .segments import Block

    _Basic: TypeAlias = "slice[Any, Any, Any] | EllipsisType | None"
    # Non-empty (a 0-d array's a[()] is a scalar): NumPy answers these with a view.
    ViewKey: TypeAlias = "_Basic | tuple[_Basic, Unpack[tuple[_Basic, ...]]]"
    # Advanced indexing always copies.
    CopyKey: TypeAlias = "NDArray[np.bool_] | list[int] | list[bool]"


class ArrayViews:
    """The view methods of SharedArray (a mixin: SharedArray holds the state; ``Self``
    stands for SharedArray, so this module imports nothing from shared.py)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _block: Block | None

        def numpy(self) -> NDArray[Any]: ...
        def _wrap_view(self, view: NDArray[Any]) -> Self: ...

    @overload
    def __getitem__(self, key: ViewKey) -> Self: ...
    @overload
    def __getitem__(self, key: CopyKey) -> NDArray[Any]: ...
    @overload
    def __getitem__(self, key: Any) -> Any: ...
    def __getitem__(self, key: Any) -> Any:
        src = self.numpy()
        view = src[key]
        # a zero-size array has no block: its views are views of src
        own = src if self._block is None else self._block.root
        if isinstance(view, np.ndarray) and view.base is own:
            return self._wrap_view(view)
        return view

    # Views that stay SharedArrays when NumPy returns a contiguous view of the block (the
    # workers can map it from a handle and split its rows); other results (transposes,
    # flatten's copy, non-contiguous reshapes that copy) are plain ndarrays, as NumPy gives.
    def reshape(self, *shape: Any, **kw: Any) -> Self | NDArray[Any]:
        return self._maybe_shared(self.numpy().reshape(*shape, **kw))

    def ravel(self, order: Any = "C") -> Self | NDArray[Any]:
        return self._maybe_shared(self.numpy().ravel(order))

    def squeeze(self, axis: Any = None) -> Self | NDArray[Any]:
        return self._maybe_shared(self.numpy().squeeze(axis))

    def view(self, *args: Any, **kw: Any) -> Any:
        out = self.numpy().view(*args, **kw)
        return self._maybe_shared(out) if type(out) is np.ndarray else out

    def _maybe_shared(self, view: Any) -> Any:
        if (isinstance(view, np.ndarray) and self._block is not None
                and view.base is self._block.root and view.flags.c_contiguous
                and view.dtype.kind in "biufc"):
            return self._wrap_view(view)
        return view
