"""Versions and typed errors <-> pollen.v1.ProtocolVersion and pollen.v1.Error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from google.protobuf.message import DecodeError

from pollen._generated.pollen.v1 import (
    error_pb2,
    version_pb2,
)
from pollen.errors import (
    ErrorCode,
    InternalError,
    PollenError,
    Retry,
    make_error,
)
from pollen.version import ProtocolVersion


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
