"""Blob chunk messages, serialized and parsed without copying the chunk data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from pollen._generated.pollen.v1 import blob_service_pb2
from pollen.blob import BlobRef, BytesLike
from pollen.errors import InvalidArgument
from pollen.wire._framing import frame_bytes_field, parse_message, split_field

_DOWNLOAD_DATA = 2
_UPLOAD_DATA = 5
_M = TypeVar("_M", bound=Message)


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
    return frame_bytes_field(header, _DOWNLOAD_DATA, data)


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
    return frame_bytes_field(header, _UPLOAD_DATA, chunk.data)


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
        split = split_field(data, number)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed {what} message: {exc}") from None
    if split is None:
        return parse_message(msg, data, what, ""), None
    rest, payload = split
    return parse_message(msg, rest, what, ""), payload
