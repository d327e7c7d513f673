"""The topk codec: only the k elements of largest magnitude travel.

Payload: k (uint64 LE), k strictly increasing flat indices (uint32 when numel <= 2^32,
else uint64), then the k kept elements as raw little-endian values. Every other element
decodes to +0.0.

Magnitudes are compared on the bits: clearing the sign bit of an IEEE value leaves an
unsigned integer that orders like |x| (with -0.0 as 0 and infinity above every finite
value), so selection needs no float arithmetic and values are copied bit for bit.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, SupportsIndex

import numpy as np
import numpy.typing as npt

from pollen.codecs._base import UNSIGNED, Payload, byte_view, canonical, shaped, source_dtype
from pollen.dtypes import FLOAT_DTYPES, Dtype
from pollen.errors import CodecDataInvalid, InvalidArgument, TensorSizeMismatch, TensorValueInvalid

_K_SIZE = 8
# Bits of +infinity; a magnitude (bits without the sign) above it is a NaN.
_INFINITY = {
    Dtype.FLOAT16: 0x7C00,
    Dtype.BFLOAT16: 0x7F80,
    Dtype.FLOAT32: 0x7F80_0000,
    Dtype.FLOAT64: 0x7FF0_0000_0000_0000,
}


def index_width(numel: int) -> int:
    """Bytes per stored index: 4 while every index fits in a uint32 (numel <= 2^32)."""
    return 4 if numel <= 1 << 32 else 8


def top_indices(magnitude: npt.NDArray[Any], k: int) -> npt.NDArray[np.intp]:
    """Ascending indices of the k largest values; ties go to the smaller index.

    Linear time: find the k-th largest value, keep everything above it, then as many of
    the elements equal to it as are still needed, in index order.
    """
    n = magnitude.size
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if k == n:
        return np.arange(n, dtype=np.intp)
    threshold = np.partition(magnitude, n - k)[n - k]
    keep = magnitude > threshold
    missing = k - int(np.count_nonzero(keep))
    keep[np.flatnonzero(magnitude == threshold)[:missing]] = True
    return np.flatnonzero(keep)


def _check_k(k: object, numel: int) -> int:
    if k is None:
        raise InvalidArgument("topk needs the parameter k", field="k")
    if isinstance(k, bool) or not isinstance(k, SupportsIndex):
        raise InvalidArgument(f"k must be an integer, got {k!r}", field="k")
    value = operator.index(k)
    if not 0 <= value <= numel:
        raise InvalidArgument(f"k must be in [0, {numel}], got {value}", field="k")
    return value


@dataclass(frozen=True)
class TopkCodec:
    """Top-k sparsification, for the four float dtypes."""

    id: str = "topk"

    def applies_to(self, dtype: Dtype) -> bool:
        """FLOAT16, BFLOAT16, FLOAT32 and FLOAT64."""
        return dtype in FLOAT_DTYPES

    def encode(self, array: npt.NDArray[Any], **params: object) -> memoryview:
        """Keep the k largest magnitudes (`k` keyword, 0 <= k <= numel).

        TENSOR_VALUE_INVALID when the tensor holds a NaN, even one that would not be kept.
        """
        k = params.pop("k", None)
        if params:
            raise InvalidArgument(f"topk takes only k, not {sorted(params)}", field="k")
        dtype = source_dtype(self, array)
        flat = canonical(array, dtype)
        count = _check_k(k, flat.size)
        bits = flat.view(UNSIGNED[dtype.itemsize])
        magnitude = bits & ((1 << (8 * dtype.itemsize - 1)) - 1)
        if np.any(magnitude > _INFINITY[dtype]):
            raise TensorValueInvalid("topk cannot encode a tensor holding NaN", field="values")
        indices = top_indices(magnitude, count)
        width = index_width(flat.size)
        header = np.array([count], dtype="<u8").view(np.uint8)
        stored = indices.astype(UNSIGNED[width]).view(np.uint8)
        values = bits[indices].view(np.uint8)
        return np.concatenate((header, stored, values)).data

    def decode(
        self, payload: Payload, dtype: Dtype, shape: tuple[int, ...], numel: int
    ) -> npt.NDArray[Any]:
        """The dense tensor; checks as PLN-COD-029 orders them, before allocating it."""
        view = byte_view(payload)
        if view.nbytes < _K_SIZE:
            raise TensorSizeMismatch(
                f"topk payload is {view.nbytes} bytes, shorter than k", field="payload"
            )
        k = int.from_bytes(view[:_K_SIZE], "little")
        if k > numel:
            raise CodecDataInvalid(f"topk k {k} exceeds numel {numel}", field="payload")
        width = index_width(numel)
        expected = _K_SIZE + k * (width + dtype.itemsize)
        if view.nbytes != expected:
            raise TensorSizeMismatch(
                f"topk payload is {view.nbytes} bytes, {expected} expected for k {k}",
                field="payload",
            )
        indices = np.frombuffer(view, dtype=UNSIGNED[width], count=k, offset=_K_SIZE)
        if k and (np.any(indices[1:] <= indices[:-1]) or int(indices[-1]) >= numel):
            raise CodecDataInvalid(
                "topk indices must increase strictly and stay below numel", field="payload"
            )
        unsigned = UNSIGNED[dtype.itemsize]
        values = np.frombuffer(view, dtype=unsigned, count=k, offset=_K_SIZE + k * width)
        # All-zero bits are +0.0 in every float format.
        dense = np.zeros(numel, dtype=unsigned)
        dense[indices] = values
        return shaped(dense.view(dtype.numpy), shape)


TOPK = TopkCodec()
