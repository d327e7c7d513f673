"""Typed errors of the Pollen protocol.

Every error has a code from the spec's error table (spec/errors.yaml, loaded here from its
generated JSON copy). The table says which gRPC status the code travels with and whether
the request that caused it may be sent again, so an error object knows both.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import ClassVar

from pollen.version import ProtocolVersion


class ErrorCode(enum.Enum):
    """Error codes; values are the numbers of the wire enum pollen.v1.ErrorCode."""

    INTERNAL = 1
    VERSION_UNSUPPORTED = 2
    CAPABILITY_MISMATCH = 3
    INVALID_ARGUMENT = 4
    SESSION_UNKNOWN = 5
    TASK_UNKNOWN = 6
    TASK_NOT_ASSIGNED = 7
    TASK_EXPIRED = 8
    STALE_ROUND = 9
    RESULT_MISMATCH = 10
    UPDATE_REJECTED = 11
    DTYPE_UNSUPPORTED = 12
    CODEC_UNSUPPORTED = 13
    CODEC_DATA_INVALID = 14
    TENSOR_SIZE_MISMATCH = 15
    SHAPE_INVALID = 16
    TENSOR_VALUE_INVALID = 17
    LIMIT_EXCEEDED = 18
    BLOB_NOT_FOUND = 19
    BLOB_DIGEST_MISMATCH = 20
    BLOB_INCOMPLETE = 21
    UNSUPPORTED_INSTRUCTION = 22
    APP_ERROR = 23
    UNAVAILABLE = 24
    UNAUTHENTICATED = 25


class StatusCode(enum.IntEnum):
    """gRPC status codes, numbered as on the wire (grpc/doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class Retry(enum.Enum):
    """Whether the request that failed may be sent again."""

    YES = "yes"
    NO = "no"
    AFTER_HANDSHAKE = "after-handshake"


@dataclass(frozen=True, kw_only=True)
class ErrorSpec:
    """One row of the spec's error table."""

    code: ErrorCode
    grpc_status: StatusCode | None
    retry: Retry
    raised_by: str
    meaning: str


def _load_table() -> tuple[Mapping[ErrorCode, ErrorSpec], Mapping[StatusCode, Retry]]:
    text = resources.files("pollen._generated").joinpath("errors.json").read_text("utf-8")
    data = json.loads(text)
    rows = {
        ErrorCode[name]: ErrorSpec(
            code=ErrorCode[name],
            grpc_status=None if row["grpc_status"] is None else StatusCode[row["grpc_status"]],
            retry=Retry(row["retry"]),
            raised_by=row["raised_by"],
            meaning=row["meaning"],
        )
        for name, row in data["codes"].items()
    }
    bare = {StatusCode[name]: Retry(v) for name, v in data["grpc_status_without_error"].items()}
    return rows, bare


ERROR_TABLE, _BARE_STATUS_RETRY = _load_table()


def retry_for_status(status: StatusCode) -> Retry:
    """Retryability of a failed RPC that carried no typed error (spec error table)."""
    return _BARE_STATUS_RETRY.get(status, Retry.NO)


class PollenError(Exception):
    """Base of every typed protocol error. Subclasses fix the code."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    _by_code: ClassVar[dict[ErrorCode, type[PollenError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        PollenError._by_code.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str = "",
        *,
        field: str = "",
        retry_after_ms: int = 0,
        supported_versions: Iterable[ProtocolVersion] = (),
        supported_codecs: Iterable[str] = (),
        retry: Retry | None = None,
    ) -> None:
        super().__init__(message or ERROR_TABLE[self.code].meaning)
        self.message = message or ERROR_TABLE[self.code].meaning
        self.field = field
        self.retry_after_ms = retry_after_ms
        self.supported_versions = tuple(supported_versions)
        self.supported_codecs = tuple(supported_codecs)
        # Only for codes unknown to this implementation: the sender's own retry verdict.
        self._retry_override = retry

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_TABLE[self.code]

    @property
    def grpc_status(self) -> StatusCode:
        """The gRPC status of a failed RPC carrying this error (INTERNAL for client-only codes)."""
        return self.spec.grpc_status or StatusCode.INTERNAL

    @property
    def retry(self) -> Retry:
        return self._retry_override or self.spec.retry

    @property
    def retryable(self) -> bool:
        return self.retry is Retry.YES

    def __str__(self) -> str:
        where = f" (at {self.field})" if self.field else ""
        return f"{self.code.name}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r})"


def entry_path(field: str, key: str) -> str:
    """The Error.field path of a map entry: `fit.config["lr"]` (spec 12, Field paths)."""
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{field}["{quoted}"]'


def error_class(code: ErrorCode) -> type[PollenError]:
    """The exception class for a code."""
    return PollenError._by_code[code]


def make_error(code: ErrorCode, message: str = "", **kwargs: object) -> PollenError:
    """Build the typed exception for a code (for example from a received pollen.v1.Error)."""
    return error_class(code)(message, **kwargs)  # type: ignore[arg-type]


class InternalError(PollenError):
    code = ErrorCode.INTERNAL


class VersionUnsupported(PollenError):
    code = ErrorCode.VERSION_UNSUPPORTED


class CapabilityMismatch(PollenError):
    code = ErrorCode.CAPABILITY_MISMATCH


class InvalidArgument(PollenError):
    code = ErrorCode.INVALID_ARGUMENT


class SessionUnknown(PollenError):
    code = ErrorCode.SESSION_UNKNOWN


class TaskUnknown(PollenError):
    code = ErrorCode.TASK_UNKNOWN


class TaskNotAssigned(PollenError):
    code = ErrorCode.TASK_NOT_ASSIGNED


class TaskExpired(PollenError):
    code = ErrorCode.TASK_EXPIRED


class StaleRound(PollenError):
    code = ErrorCode.STALE_ROUND


class ResultMismatch(PollenError):
    code = ErrorCode.RESULT_MISMATCH


class UpdateRejected(PollenError):
    code = ErrorCode.UPDATE_REJECTED


class DtypeUnsupported(PollenError):
    code = ErrorCode.DTYPE_UNSUPPORTED


class CodecUnsupported(PollenError):
    code = ErrorCode.CODEC_UNSUPPORTED


class CodecDataInvalid(PollenError):
    code = ErrorCode.CODEC_DATA_INVALID


class TensorSizeMismatch(PollenError):
    code = ErrorCode.TENSOR_SIZE_MISMATCH


class ShapeInvalid(PollenError):
    code = ErrorCode.SHAPE_INVALID


class TensorValueInvalid(PollenError):
    code = ErrorCode.TENSOR_VALUE_INVALID


class LimitExceeded(PollenError):
    code = ErrorCode.LIMIT_EXCEEDED


class BlobNotFound(PollenError):
    code = ErrorCode.BLOB_NOT_FOUND


class BlobDigestMismatch(PollenError):
    code = ErrorCode.BLOB_DIGEST_MISMATCH


class BlobIncomplete(PollenError):
    code = ErrorCode.BLOB_INCOMPLETE


class UnsupportedInstruction(PollenError):
    code = ErrorCode.UNSUPPORTED_INSTRUCTION


class AppError(PollenError):
    code = ErrorCode.APP_ERROR


class Unavailable(PollenError):
    code = ErrorCode.UNAVAILABLE


class Unauthenticated(PollenError):
    code = ErrorCode.UNAUTHENTICATED
