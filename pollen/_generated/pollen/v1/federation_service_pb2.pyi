from pollen._generated.pollen.v1 import task_pb2 as _task_pb2
from pollen._generated.pollen.v1 import tensor_pb2 as _tensor_pb2
from pollen._generated.pollen.v1 import version_pb2 as _version_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaveReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEAVE_REASON_UNSPECIFIED: _ClassVar[LeaveReason]
    LEAVE_REASON_CLIENT_STOPPING: _ClassVar[LeaveReason]
    LEAVE_REASON_SHUTDOWN_INSTRUCTION: _ClassVar[LeaveReason]
    LEAVE_REASON_RECONNECT_INSTRUCTION: _ClassVar[LeaveReason]
    LEAVE_REASON_FATAL_ERROR: _ClassVar[LeaveReason]
LEAVE_REASON_UNSPECIFIED: LeaveReason
LEAVE_REASON_CLIENT_STOPPING: LeaveReason
LEAVE_REASON_SHUTDOWN_INSTRUCTION: LeaveReason
LEAVE_REASON_RECONNECT_INSTRUCTION: LeaveReason
LEAVE_REASON_FATAL_ERROR: LeaveReason

class Capabilities(_message.Message):
    __slots__ = ("codecs", "dtypes", "limits", "features")
    CODECS_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    codecs: _containers.RepeatedScalarFieldContainer[str]
    dtypes: _containers.RepeatedScalarFieldContainer[_tensor_pb2.Dtype]
    limits: Limits
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, codecs: _Optional[_Iterable[str]] = ..., dtypes: _Optional[_Iterable[_Union[_tensor_pb2.Dtype, str]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_tensor_bytes", "max_tensors", "max_rank", "max_blob_bytes", "max_map_entries")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TENSOR_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TENSORS_FIELD_NUMBER: _ClassVar[int]
    MAX_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MAP_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_tensor_bytes: int
    max_tensors: int
    max_rank: int
    max_blob_bytes: int
    max_map_entries: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_tensor_bytes: _Optional[int] = ..., max_tensors: _Optional[int] = ..., max_rank: _Optional[int] = ..., max_blob_bytes: _Optional[int] = ..., max_map_entries: _Optional[int] = ...) -> None: ...

class HandshakeRequest(_message.Message):
    __slots__ = ("versions", "node_id", "capabilities", "agent")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_version_pb2.ProtocolVersion]
    node_id: str
    capabilities: Capabilities
    agent: str
    def __init__(self, versions: _Optional[_Iterable[_Union[_version_pb2.ProtocolVersion, _Mapping]]] = ..., node_id: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., agent: _Optional[str] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("version", "session_id", "capabilities", "heartbeat_interval_ms", "max_poll_wait_ms", "session_timeout_ms", "chunk_size_bytes", "agent")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_POLL_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    version: _version_pb2.ProtocolVersion
    session_id: str
    capabilities: Capabilities
    heartbeat_interval_ms: int
    max_poll_wait_ms: int
    session_timeout_ms: int
    chunk_size_bytes: int
    agent: str
    def __init__(self, version: _Optional[_Union[_version_pb2.ProtocolVersion, _Mapping]] = ..., session_id: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_poll_wait_ms: _Optional[int] = ..., session_timeout_ms: _Optional[int] = ..., chunk_size_bytes: _Optional[int] = ..., agent: _Optional[str] = ...) -> None: ...

class PollTaskRequest(_message.Message):
    __slots__ = ("session_id", "wait_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    wait_ms: int
    def __init__(self, session_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class PollTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class SubmitResultRequest(_message.Message):
    __slots__ = ("session_id", "result")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    result: _task_pb2.TaskResult
    def __init__(self, session_id: _Optional[str] = ..., result: _Optional[_Union[_task_pb2.TaskResult, _Mapping]] = ...) -> None: ...

class SubmitResultResponse(_message.Message):
    __slots__ = ("duplicate",)
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    def __init__(self, duplicate: _Optional[bool] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("session_id", "task_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: str
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("task_active",)
    TASK_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    task_active: bool
    def __init__(self, task_active: _Optional[bool] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("session_id", "reason", "message")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: LeaveReason
    message: str
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[_Union[LeaveReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
