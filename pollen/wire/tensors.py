"""Tensors and blob references <-> pollen.v1.Tensor and pollen.v1.BlobRef."""

from __future__ import annotations

import dataclasses
from typing import cast

import numpy as np
from google.protobuf.message import DecodeError

from pollen._generated.pollen.v1 import tensor_pb2
from pollen.blob import BlobRef
from pollen.dtypes import Dtype
from pollen.errors import (
    InvalidArgument,
    PollenError,
)
from pollen.limits import Limits
from pollen.tensors import EncodedTensor, decode_tensor
from pollen.wire._framing import frame_bytes_field, parse_message, split_field

# Field numbers the hand splitter needs (see tensor.proto and blob_service.proto).
_TENSOR_INLINE_DATA = 4
_TENSOR_BLOB = 5
_DOWNLOAD_DATA = 2
_UPLOAD_DATA = 5


def blob_ref_to_proto(ref: BlobRef) -> tensor_pb2.BlobRef:
    return tensor_pb2.BlobRef(sha256=ref.sha256, size=ref.size)


def blob_ref_from_proto(msg: tensor_pb2.BlobRef) -> BlobRef:
    """The reference as received; `BlobRef.check` validates it when its turn comes."""
    return BlobRef(sha256=msg.sha256, size=msg.size)


def wire_dtype(dtype: Dtype) -> tensor_pb2.Dtype:
    return cast(tensor_pb2.Dtype, dtype.value)


def tensor_to_proto(tensor: EncodedTensor) -> tensor_pb2.Tensor:
    """Build a Tensor message, by blob reference when `tensor.blob` is set.

    An inline payload is copied into the message, which is right for small tensors; large
    ones go by blob reference or through `tensor_to_bytes`.
    """
    msg = tensor_pb2.Tensor(
        dtype=wire_dtype(tensor.dtype), shape=tensor.shape, codec=tensor.codec, name=tensor.name
    )
    if tensor.blob is not None:
        msg.blob.CopyFrom(blob_ref_to_proto(tensor.blob))
    else:
        msg.inline_data = bytes(tensor.payload)
    return msg


def tensor_to_bytes(tensor: EncodedTensor) -> bytes:
    """Serialize a Tensor with an inline payload, copying the payload exactly once."""
    header = tensor_pb2.Tensor(
        dtype=wire_dtype(tensor.dtype), shape=tensor.shape, codec=tensor.codec, name=tensor.name
    ).SerializeToString()
    return frame_bytes_field(header, _TENSOR_INLINE_DATA, tensor.payload)


def tensor_from_proto(
    msg: tensor_pb2.Tensor, *, payload: memoryview | None = None, field: str = "tensor"
) -> EncodedTensor:
    """The tensor a message carries, unchecked beyond its dtype (decoding checks the rest).

    A blob payload comes back as `blob` with an empty payload. `payload` overrides the
    message's inline_data (the zero-copy path passes the view it sliced out).
    """
    try:
        dtype = Dtype.from_wire(msg.dtype)
    except PollenError as exc:
        exc.field = f"{field}.dtype"
        raise
    # Names are informative only, so an overlong one is not a reason to refuse a tensor.
    tensor = EncodedTensor(
        dtype=dtype,
        shape=tuple(msg.shape),
        codec=msg.codec or "raw",
        payload=payload if payload is not None else msg.inline_data,
        name=msg.name,
    )
    if msg.WhichOneof("payload") == "blob":
        return dataclasses.replace(tensor, payload=b"", blob=blob_ref_from_proto(msg.blob))
    return tensor


def tensor_from_bytes(data: bytes, *, field: str = "tensor") -> EncodedTensor:
    """Parse a serialized Tensor without copying its inline payload."""
    try:
        split = split_field(data, _TENSOR_INLINE_DATA, cleared_by=_TENSOR_BLOB)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed Tensor message: {exc}", field=field) from None
    if split is None:
        return tensor_from_proto(
            parse_message(tensor_pb2.Tensor(), data, "Tensor", field), field=field
        )
    rest, payload = split
    msg = parse_message(tensor_pb2.Tensor(), rest, "Tensor", field)
    if payload is not None:
        msg.inline_data = b""  # select the oneof member; the bytes stay in `payload`
    return tensor_from_proto(msg, payload=payload, field=field)


def decode_tensor_message(
    data: bytes,
    *,
    limits: Limits = Limits(),  # noqa: B008 - frozen dataclass, safe as a default
    codecs: frozenset[str] | None = None,
    dtypes: frozenset[Dtype] | None = None,
) -> np.ndarray:
    """Parse and decode a serialized Tensor with an inline payload into an array.

    The whole check order of the spec applies; a blob payload cannot be decoded here and
    is reported as INVALID_ARGUMENT (fetch the blob, then call `decode_tensor`).
    """
    return decode_tensor(tensor_from_bytes(data), limits=limits, codecs=codecs, dtypes=dtypes)
