from pollen._generated.pollen.v1 import version_pb2 as _version_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_VERSION_UNSUPPORTED: _ClassVar[ErrorCode]
    ERROR_CODE_CAPABILITY_MISMATCH: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_ARGUMENT: _ClassVar[ErrorCode]
    ERROR_CODE_SESSION_UNKNOWN: _ClassVar[ErrorCode]
    ERROR_CODE_TASK_UNKNOWN: _ClassVar[ErrorCode]
    ERROR_CODE_TASK_NOT_ASSIGNED: _ClassVar[ErrorCode]
    ERROR_CODE_TASK_EXPIRED: _ClassVar[ErrorCode]
    ERROR_CODE_STALE_ROUND: _ClassVar[ErrorCode]
    ERROR_CODE_RESULT_MISMATCH: _ClassVar[ErrorCode]
    ERROR_CODE_UPDATE_REJECTED: _ClassVar[ErrorCode]
    ERROR_CODE_DTYPE_UNSUPPORTED: _ClassVar[ErrorCode]
    ERROR_CODE_CODEC_UNSUPPORTED: _ClassVar[ErrorCode]
    ERROR_CODE_CODEC_DATA_INVALID: _ClassVar[ErrorCode]
    ERROR_CODE_TENSOR_SIZE_MISMATCH: _ClassVar[ErrorCode]
    ERROR_CODE_SHAPE_INVALID: _ClassVar[ErrorCode]
    ERROR_CODE_TENSOR_VALUE_INVALID: _ClassVar[ErrorCode]
    ERROR_CODE_LIMIT_EXCEEDED: _ClassVar[ErrorCode]
    ERROR_CODE_BLOB_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_BLOB_DIGEST_MISMATCH: _ClassVar[ErrorCode]
    ERROR_CODE_BLOB_INCOMPLETE: _ClassVar[ErrorCode]
    ERROR_CODE_UNSUPPORTED_INSTRUCTION: _ClassVar[ErrorCode]
    ERROR_CODE_APP_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_UNAUTHENTICATED: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_VERSION_UNSUPPORTED: ErrorCode
ERROR_CODE_CAPABILITY_MISMATCH: ErrorCode
ERROR_CODE_INVALID_ARGUMENT: ErrorCode
ERROR_CODE_SESSION_UNKNOWN: ErrorCode
ERROR_CODE_TASK_UNKNOWN: ErrorCode
ERROR_CODE_TASK_NOT_ASSIGNED: ErrorCode
ERROR_CODE_TASK_EXPIRED: ErrorCode
ERROR_CODE_STALE_ROUND: ErrorCode
ERROR_CODE_RESULT_MISMATCH: ErrorCode
ERROR_CODE_UPDATE_REJECTED: ErrorCode
ERROR_CODE_DTYPE_UNSUPPORTED: ErrorCode
ERROR_CODE_CODEC_UNSUPPORTED: ErrorCode
ERROR_CODE_CODEC_DATA_INVALID: ErrorCode
ERROR_CODE_TENSOR_SIZE_MISMATCH: ErrorCode
ERROR_CODE_SHAPE_INVALID: ErrorCode
ERROR_CODE_TENSOR_VALUE_INVALID: ErrorCode
ERROR_CODE_LIMIT_EXCEEDED: ErrorCode
ERROR_CODE_BLOB_NOT_FOUND: ErrorCode
ERROR_CODE_BLOB_DIGEST_MISMATCH: ErrorCode
ERROR_CODE_BLOB_INCOMPLETE: ErrorCode
ERROR_CODE_UNSUPPORTED_INSTRUCTION: ErrorCode
ERROR_CODE_APP_ERROR: ErrorCode
ERROR_CODE_UNAVAILABLE: ErrorCode
ERROR_CODE_UNAUTHENTICATED: ErrorCode

class Error(_message.Message):
    __slots__ = ("code", "message", "retryable", "retry_after_ms", "supported_versions", "supported_codecs", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_CODECS_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    retryable: bool
    retry_after_ms: int
    supported_versions: _containers.RepeatedCompositeFieldContainer[_version_pb2.ProtocolVersion]
    supported_codecs: _containers.RepeatedScalarFieldContainer[str]
    field: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ..., supported_versions: _Optional[_Iterable[_Union[_version_pb2.ProtocolVersion, _Mapping]]] = ..., supported_codecs: _Optional[_Iterable[str]] = ..., field: _Optional[str] = ...) -> None: ...
