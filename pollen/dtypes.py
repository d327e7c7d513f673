"""Tensor element types: the wire's Dtype enum and its numpy counterparts.

Every dtype maps to one little-endian numpy dtype. bfloat16 has no numpy builtin, so it
uses `ml_dtypes.bfloat16`, whose memory layout is the wire's (the upper half of a binary32).
"""

from __future__ import annotations

import enum
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import DTypeLike

from pollen.errors import DtypeUnsupported


class Dtype(enum.Enum):
    """Element types; values are the numbers of the wire enum pollen.v1.Dtype."""

    BOOL = 1
    INT8 = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    UINT8 = 6
    UINT16 = 7
    UINT32 = 8
    UINT64 = 9
    FLOAT16 = 10
    BFLOAT16 = 11
    FLOAT32 = 12
    FLOAT64 = 13

    @property
    def numpy(self) -> np.dtype[Any]:
        """The numpy dtype of decoded arrays (little-endian)."""
        return _NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element in the canonical bytes."""
        return _NUMPY[self].itemsize

    @property
    def is_float(self) -> bool:
        """Whether this is one of the four floating-point dtypes."""
        return self in FLOAT_DTYPES

    @classmethod
    def from_wire(cls, number: int) -> Dtype:
        """The dtype with wire number `number`; UNSPECIFIED (0) and unknown numbers fail."""
        # bool is an int subclass, and Dtype(True) would quietly be BOOL.
        if isinstance(number, int) and not isinstance(number, bool):
            try:
                return cls(number)
            except ValueError:
                pass
        what = "DTYPE_UNSPECIFIED" if number == 0 else f"unknown dtype number {number!r}"
        raise DtypeUnsupported(f"{what} is not a tensor dtype", field="dtype")

    @classmethod
    def from_numpy(cls, dtype: DTypeLike) -> Dtype:
        """The wire dtype of a numpy dtype (or anything np.dtype accepts), any byte order.

        Raises DtypeUnsupported for dtypes the protocol cannot carry (complex, object,
        strings, extended precision, other ml_dtypes formats, structured dtypes).
        """
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise DtypeUnsupported(f"{dtype!r} is not a numpy dtype", field="dtype") from None
        found = _BY_KIND.get((dtype.kind, dtype.itemsize))
        if found is None and dtype == _BFLOAT16:
            found = cls.BFLOAT16
        if found is None or dtype.fields is not None or dtype.subdtype is not None:
            raise DtypeUnsupported(f"numpy dtype {dtype} has no wire dtype", field="dtype")
        return found


_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

_NUMPY: dict[Dtype, np.dtype[Any]] = {
    Dtype.BOOL: np.dtype(np.bool_),
    Dtype.INT8: np.dtype("<i1"),
    Dtype.INT16: np.dtype("<i2"),
    Dtype.INT32: np.dtype("<i4"),
    Dtype.INT64: np.dtype("<i8"),
    Dtype.UINT8: np.dtype("<u1"),
    Dtype.UINT16: np.dtype("<u2"),
    Dtype.UINT32: np.dtype("<u4"),
    Dtype.UINT64: np.dtype("<u8"),
    Dtype.FLOAT16: np.dtype("<f2"),
    Dtype.BFLOAT16: _BFLOAT16,
    Dtype.FLOAT32: np.dtype("<f4"),
    Dtype.FLOAT64: np.dtype("<f8"),
}

# (kind, itemsize) identifies every builtin dtype we carry independently of byte order;
# bfloat16 (kind "V", like every ml_dtypes type) is matched by equality instead.
_BY_KIND: dict[tuple[str, int], Dtype] = {
    (dt.kind, dt.itemsize): d for d, dt in _NUMPY.items() if d is not Dtype.BFLOAT16
}

#: The floating-point dtypes, which the lossy codecs apply to.
FLOAT_DTYPES = frozenset({Dtype.FLOAT16, Dtype.BFLOAT16, Dtype.FLOAT32, Dtype.FLOAT64})
