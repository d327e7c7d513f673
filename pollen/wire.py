"""The protobuf codec layer: conversions between wire messages and the core's types.

This is the only module of the core that touches generated protobuf classes; everything
else works with frozen dataclasses, numpy arrays and plain Python values.

Tensor payloads get special care. The upb runtime copies a `bytes` field both when it
parses and every time the field is read, which costs more than the rest of a model's
decoding put together. So a serialized Tensor is split by hand at the wire level: the
payload field is sliced out of the received buffer as a zero-copy view, and only the small
remainder is parsed with upb. Serializing does the converse and appends the payload to a
header that upb wrote, which the protobuf encoding allows (fields may come in any order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
from google.protobuf.message import DecodeError, Message

from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    error_pb2,
    tensor_pb2,
    value_pb2,
    version_pb2,
)
from pollen.blob import BlobRef, BytesLike
from pollen.dtypes import Dtype
from pollen.errors import (
    ErrorCode,
    InternalError,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    Retry,
    make_error,
)
from pollen.limits import Limits
from pollen.tensors import EncodedTensor, decode_tensor
from pollen.values import ConfigValue, check_key, check_value
from pollen.version import ProtocolVersion

# Field numbers the hand splitter needs (see tensor.proto and blob_service.proto).
_TENSOR_INLINE_DATA = 4
_TENSOR_BLOB = 5
_DOWNLOAD_DATA = 2
_UPLOAD_DATA = 5

_M = TypeVar("_M", bound=Message)


# --- values ---------------------------------------------------------------------------


def value_to_proto(value: ConfigValue, out: value_pb2.Value | None = None) -> value_pb2.Value:
    """Encode one typed value."""
    msg = out if out is not None else value_pb2.Value()
    checked = check_value(value)
    if isinstance(checked, bool):
        msg.bool_value = checked
    elif isinstance(checked, int):
        msg.int_value = checked
    elif isinstance(checked, float):
        msg.double_value = checked
    elif isinstance(checked, str):
        msg.string_value = checked
    else:
        msg.bytes_value = checked
    return msg


def value_from_proto(msg: value_pb2.Value, *, field: str = "value") -> ConfigValue:
    """Decode one typed value; a Value with no member set is invalid."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("a Value must have exactly one member set", field=field)
    value: ConfigValue = getattr(msg, kind)
    return value


def value_from_proto_bytes(data: bytes, *, field: str = "value") -> ConfigValue:
    """Parse and decode a serialized pollen.v1.Value (used by the golden vectors)."""
    msg = value_pb2.Value()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed Value message: {exc}", field=field) from None
    return value_from_proto(msg, field=field)


def config_to_proto(
    config: Mapping[str, object] | None, out: MutableMapping[str, value_pb2.Value]
) -> None:
    """Fill a protobuf map<string, Value> from a mapping."""
    for key, value in (config or {}).items():
        value_to_proto(check_value(value, field=f"[{key!r}]"), out[check_key(key)])


def config_from_proto(
    entries: Mapping[str, value_pb2.Value], *, max_entries: int, field: str = "config"
) -> dict[str, ConfigValue]:
    """Decode a protobuf map<string, Value>, enforcing the entry limit and key rules."""
    if len(entries) > max_entries:
        raise LimitExceeded(
            f"{len(entries)} entries exceed the limit of {max_entries}", field=field
        )
    return {
        check_key(key, field=f"{field}.key"): value_from_proto(value, field=f"{field}[{key!r}]")
        for key, value in entries.items()
    }


# --- versions and errors ---------------------------------------------------------------


def versions_to_proto(versions: Iterable[ProtocolVersion]) -> list[version_pb2.ProtocolVersion]:
    return [version_pb2.ProtocolVersion(major=v.major, minor=v.minor) for v in versions]


def versions_from_proto(
    versions: Iterable[version_pb2.ProtocolVersion],
) -> list[ProtocolVersion]:
    return [ProtocolVersion(v.major, v.minor) for v in versions]


def error_to_proto(error: PollenError) -> error_pb2.Error:
    """Encode a typed error for the "pollen-error-bin" trailer or a task failure."""
    return error_pb2.Error(
        code=cast(error_pb2.ErrorCode, error.code.value),
        message=error.message,
        retryable=error.retryable,
        retry_after_ms=error.retry_after_ms,
        supported_versions=versions_to_proto(error.supported_versions),
        supported_codecs=list(error.supported_codecs),
        field=error.field,
    )


def error_from_proto(msg: error_pb2.Error) -> PollenError:
    """Decode a received error into its typed exception.

    A code this implementation does not know (a newer minor version added it) becomes an
    InternalError that keeps the number in its message and follows the sender's
    `retryable` flag, as the spec asks for unknown codes.
    """
    kwargs: dict[str, object] = {
        "field": msg.field,
        "retry_after_ms": msg.retry_after_ms,
        "supported_versions": versions_from_proto(msg.supported_versions),
        "supported_codecs": list(msg.supported_codecs),
    }
    try:
        code = ErrorCode(msg.code)
    except ValueError:
        retry = Retry.YES if msg.retryable else Retry.NO
        return InternalError(
            f"unknown error code {msg.code}: {msg.message}",
            retry=retry,
            **kwargs,  # type: ignore[arg-type]
        )
    return make_error(code, msg.message, **kwargs)


def error_from_bytes(data: bytes) -> PollenError:
    """Decode a serialized pollen.v1.Error (the "pollen-error-bin" trailer value)."""
    msg = error_pb2.Error()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        return InternalError(f"undecodable pollen-error-bin trailer: {exc}")
    return error_from_proto(msg)


# --- blobs -----------------------------------------------------------------------------


def blob_ref_to_proto(ref: BlobRef) -> tensor_pb2.BlobRef:
    return tensor_pb2.BlobRef(sha256=ref.sha256, size=ref.size)


def blob_ref_from_proto(msg: tensor_pb2.BlobRef) -> BlobRef:
    """The reference as received; `BlobRef.check` validates it when its turn comes."""
    return BlobRef(sha256=msg.sha256, size=msg.size)


# --- tensors ---------------------------------------------------------------------------


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _scan_top_level(data: memoryview) -> list[tuple[int, int, int, int]] | None:
    """Top-level fields of a serialized message as (number, wire type, start, end).

    `start:end` spans the whole field (tag included). Returns None for inputs the fast path
    does not handle (groups), which the caller then parses with upb alone; raises
    DecodeError for inputs that are not valid protobuf.
    """
    fields = []
    pos = 0
    size = len(data)
    while pos < size:
        start = pos
        tag, pos = _read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        elif wire_type == 5:
            pos += 4
        elif wire_type in (3, 4):
            return None
        else:
            raise DecodeError(f"invalid wire type {wire_type}")
        if pos > size:
            raise DecodeError("truncated field")
        fields.append((number, wire_type, start, pos))
    return fields


def _split_field(
    data: bytes, number: int, *, cleared_by: int | None = None
) -> tuple[bytes, memoryview | None] | None:
    """Cut a length-delimited field out of a serialized message without copying it.

    Returns the message's other fields (small, for upb to parse) and a view of the last
    occurrence of field `number` (protobuf's "last one wins"), or None for the view when the
    field is absent or a later occurrence of oneof sibling `cleared_by` replaced it. Returns
    None altogether for inputs the fast path leaves to upb (groups).
    """
    view = memoryview(data)
    fields = _scan_top_level(view)
    if fields is None:
        return None
    payload: memoryview | None = None
    rest = bytearray()
    for field_number, wire_type, start, end in fields:
        if field_number == number and wire_type == 2:
            # The value follows the tag and the length prefix.
            payload = view[_read_varint(view, _read_varint(view, start)[1])[1] : end]
        else:
            if field_number == cleared_by:
                payload = None
            rest += view[start:end]
    return bytes(rest), payload


def _frame_bytes_field(header: bytes, number: int, payload: BytesLike) -> bytes:
    """Append a length-delimited field to a serialized message, copying the payload once."""
    body = memoryview(payload).cast("B")
    tag = _encode_varint(number << 3 | 2)
    return b"".join((header, tag, _encode_varint(body.nbytes), body))


def _parse(msg: _M, data: bytes, what: str, field: str) -> _M:
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed {what} message: {exc}", field=field) from None
    return msg


def _wire_dtype(dtype: Dtype) -> tensor_pb2.Dtype:
    return cast(tensor_pb2.Dtype, dtype.value)


def tensor_to_proto(tensor: EncodedTensor) -> tensor_pb2.Tensor:
    """Build a Tensor message, by blob reference when `tensor.blob` is set.

    An inline payload is copied into the message, which is right for small tensors; large
    ones go by blob reference or through `tensor_to_bytes`.
    """
    msg = tensor_pb2.Tensor(
        dtype=_wire_dtype(tensor.dtype), shape=tensor.shape, codec=tensor.codec, name=tensor.name
    )
    if tensor.blob is not None:
        msg.blob.CopyFrom(blob_ref_to_proto(tensor.blob))
    else:
        msg.inline_data = bytes(tensor.payload)
    return msg


def tensor_to_bytes(tensor: EncodedTensor) -> bytes:
    """Serialize a Tensor with an inline payload, copying the payload exactly once."""
    header = tensor_pb2.Tensor(
        dtype=_wire_dtype(tensor.dtype), shape=tensor.shape, codec=tensor.codec, name=tensor.name
    ).SerializeToString()
    return _frame_bytes_field(header, _TENSOR_INLINE_DATA, tensor.payload)


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
        split = _split_field(data, _TENSOR_INLINE_DATA, cleared_by=_TENSOR_BLOB)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed Tensor message: {exc}", field=field) from None
    if split is None:
        return tensor_from_proto(_parse(tensor_pb2.Tensor(), data, "Tensor", field), field=field)
    rest, payload = split
    msg = _parse(tensor_pb2.Tensor(), rest, "Tensor", field)
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


# --- blob chunks -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DownloadChunk:
    """One DownloadBlobResponse: a chunk of a blob and where it goes."""

    offset: int
    data: memoryview
    total_size: int


@dataclass(frozen=True, kw_only=True)
class UploadChunk:
    """One UploadBlobRequest: a chunk (or, with empty data, a status query)."""

    session_id: str
    blob: BlobRef
    offset: int
    data: memoryview


def download_chunk_to_bytes(*, offset: int, data: BytesLike, total_size: int) -> bytes:
    """Serialize a DownloadBlobResponse, copying the chunk once."""
    header = blob_service_pb2.DownloadBlobResponse(
        offset=offset, total_size=total_size
    ).SerializeToString()
    return _frame_bytes_field(header, _DOWNLOAD_DATA, data)


def download_chunk_from_bytes(data: bytes) -> DownloadChunk:
    """Parse a serialized DownloadBlobResponse; the chunk is a view of `data`."""
    msg, payload = _parse_split(blob_service_pb2.DownloadBlobResponse(), data, _DOWNLOAD_DATA)
    return DownloadChunk(
        offset=msg.offset,
        data=payload if payload is not None else memoryview(msg.data),
        total_size=msg.total_size,
    )


def upload_chunk_to_bytes(chunk: UploadChunk) -> bytes:
    """Serialize an UploadBlobRequest, copying the chunk once."""
    header = blob_service_pb2.UploadBlobRequest(
        session_id=chunk.session_id,
        sha256=chunk.blob.sha256,
        total_size=chunk.blob.size,
        offset=chunk.offset,
    ).SerializeToString()
    return _frame_bytes_field(header, _UPLOAD_DATA, chunk.data)


def upload_chunk_from_bytes(data: bytes) -> UploadChunk:
    """Parse a serialized UploadBlobRequest; the chunk is a view of `data`."""
    msg, payload = _parse_split(blob_service_pb2.UploadBlobRequest(), data, _UPLOAD_DATA)
    blob = BlobRef(sha256=msg.sha256, size=msg.total_size).check()
    return UploadChunk(
        session_id=msg.session_id,
        blob=blob,
        offset=msg.offset,
        data=payload if payload is not None else memoryview(msg.data),
    )


def _parse_split(msg: _M, data: bytes, number: int) -> tuple[_M, memoryview | None]:
    what = type(msg).__name__
    try:
        split = _split_field(data, number)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed {what} message: {exc}") from None
    if split is None:
        return _parse(msg, data, what, ""), None
    rest, payload = split
    return _parse(msg, rest, what, ""), payload
