"""What every codec shares: the Codec interface and canonical-bytes helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pollen.dtypes import Dtype
from pollen.errors import (
    CodecDataInvalid,
    InvalidArgument,
    LimitExceeded,
    TensorSizeMismatch,
)

#: A received payload: any contiguous byte buffer.
Payload = bytes | bytearray | memoryview

#: Unsigned integer dtypes by itemsize, used to handle elements as raw bits.
UNSIGNED: Mapping[int, np.dtype[Any]] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u2"),
    4: np.dtype("<u4"),
    8: np.dtype("<u8"),
}


class Codec(Protocol):
    """A tensor codec: turns canonical bytes into a payload and back."""

    @property
    def id(self) -> str:
        """The codec id carried in Tensor.codec (exact, lowercase)."""
        ...

    def applies_to(self, dtype: Dtype) -> bool:
        """Whether the codec is defined for tensors of `dtype` (check order step 3)."""
        ...

    def encode(self, array: npt.NDArray[Any], **params: object) -> bytes | memoryview:
        """The payload of `array`; codec parameters (such as topk's `k`) are keywords."""
        ...

    def decode(
        self, payload: Payload, dtype: Dtype, shape: tuple[int, ...], numel: int
    ) -> npt.NDArray[Any]:
        """The tensor of a payload (check order step 8).

        The caller has passed steps 1 to 6, so `dtype` applies and `numel` is the checked
        element count of `shape`. The result has dtype `dtype.numpy` and shape `shape`.
        """
        ...


def byte_view(payload: Payload) -> memoryview:
    """A flat unsigned-byte view of a payload, without copying it."""
    view = memoryview(payload)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def check_length(codec_id: str, actual: int, expected: int) -> None:
    """The payload-length check that opens step 8 of every codec."""
    if actual != expected:
        raise TensorSizeMismatch(
            f"{codec_id} payload is {actual} bytes, {expected} expected", field="payload"
        )


def reject_params(codec_id: str, params: Mapping[str, object]) -> None:
    """Refuse parameters a codec does not take, so a typo is not silently ignored."""
    if params:
        raise InvalidArgument(
            f"codec {codec_id!r} takes no parameter {sorted(params)}", field=next(iter(params))
        )


def source_dtype(codec: Codec, array: npt.NDArray[Any]) -> Dtype:
    """The wire dtype of an array to encode, which the codec must apply to."""
    dtype = Dtype.from_numpy(array.dtype)
    if not codec.applies_to(dtype):
        raise CodecDataInvalid(f"codec {codec.id!r} does not apply to {dtype.name}", field="codec")
    return dtype


def canonical(array: npt.NDArray[Any], dtype: Dtype) -> npt.NDArray[Any]:
    """The canonical bytes of `array` as a flat little-endian array of `dtype.numpy`.

    A view of `array` when it already is C-contiguous and little-endian; a copy otherwise
    (byte swapping is a plain byte copy, so NaN payloads survive it).
    """
    if array.dtype != dtype.numpy:
        array = array.astype(dtype.numpy)
    flat = np.ascontiguousarray(array).reshape(-1)
    if dtype is Dtype.BOOL:
        as_bytes = flat.view(np.uint8)
        # numpy reads any nonzero byte as True, but only 0x01 is a valid wire True.
        if np.any(as_bytes > 1):
            flat = as_bytes != 0
    return flat


def shaped(flat: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    """`flat` (a view of decoded data) reshaped to the tensor's shape.

    numpy refuses some shapes the protocol allows, such as an empty tensor whose other
    extents multiply past 2^63 or a rank above numpy's maximum; those are reported as this
    implementation's own limit rather than as a crash.
    """
    try:
        return flat.reshape(shape)
    except ValueError as exc:
        raise LimitExceeded(
            f"numpy cannot represent an array of shape {list(shape)}: {exc}", field="shape"
        ) from None
