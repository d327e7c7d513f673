"""The protobuf codec layer: conversions between wire messages and the core's types.

This package is the only part of the core that touches generated protobuf classes;
everything else works with frozen dataclasses, numpy arrays and plain Python values. Large
payloads are handled without copies (see `pollen.wire._framing`).
"""

from pollen.wire.chunks import (
    DownloadChunk,
    UploadChunk,
    download_chunk_from_bytes,
    download_chunk_to_bytes,
    upload_chunk_from_bytes,
    upload_chunk_to_bytes,
)
from pollen.wire.errors import (
    error_from_bytes,
    error_from_proto,
    error_to_proto,
    versions_from_proto,
    versions_to_proto,
)
from pollen.wire.handshake import (
    capabilities_from_proto,
    capabilities_to_proto,
    handshake_request_from_proto,
    handshake_request_to_proto,
    handshake_response_from_proto,
    handshake_response_to_proto,
)
from pollen.wire.tasks import result_from_proto, result_to_proto, task_from_proto, task_to_proto
from pollen.wire.tensors import (
    blob_ref_from_proto,
    blob_ref_to_proto,
    decode_tensor_message,
    tensor_from_bytes,
    tensor_from_proto,
    tensor_to_bytes,
    tensor_to_proto,
)
from pollen.wire.values import (
    config_from_proto,
    config_to_proto,
    value_from_proto,
    value_from_proto_bytes,
    value_to_proto,
)

__all__ = [
    "DownloadChunk",
    "UploadChunk",
    "blob_ref_from_proto",
    "blob_ref_to_proto",
    "capabilities_from_proto",
    "capabilities_to_proto",
    "config_from_proto",
    "config_to_proto",
    "decode_tensor_message",
    "download_chunk_from_bytes",
    "download_chunk_to_bytes",
    "error_from_bytes",
    "error_from_proto",
    "error_to_proto",
    "handshake_request_from_proto",
    "handshake_request_to_proto",
    "handshake_response_from_proto",
    "handshake_response_to_proto",
    "result_from_proto",
    "result_to_proto",
    "task_from_proto",
    "task_to_proto",
    "tensor_from_bytes",
    "tensor_from_proto",
    "tensor_to_bytes",
    "tensor_to_proto",
    "upload_chunk_from_bytes",
    "upload_chunk_to_bytes",
    "value_from_proto",
    "value_from_proto_bytes",
    "value_to_proto",
    "versions_from_proto",
    "versions_to_proto",
]
