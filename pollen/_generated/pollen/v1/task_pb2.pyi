from pollen._generated.pollen.v1 import error_pb2 as _error_pb2
from pollen._generated.pollen.v1 import tensor_pb2 as _tensor_pb2
from pollen._generated.pollen.v1 import value_pb2 as _value_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("task_id", "run_id", "round", "deadline_ms", "fit", "evaluate", "query", "get_parameters", "get_properties", "reconnect", "shutdown")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    GET_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    GET_PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    run_id: str
    round: int
    deadline_ms: int
    fit: FitInstruction
    evaluate: EvaluateInstruction
    query: QueryInstruction
    get_parameters: GetParametersInstruction
    get_properties: GetPropertiesInstruction
    reconnect: ReconnectInstruction
    shutdown: ShutdownInstruction
    def __init__(self, task_id: _Optional[str] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., fit: _Optional[_Union[FitInstruction, _Mapping]] = ..., evaluate: _Optional[_Union[EvaluateInstruction, _Mapping]] = ..., query: _Optional[_Union[QueryInstruction, _Mapping]] = ..., get_parameters: _Optional[_Union[GetParametersInstruction, _Mapping]] = ..., get_properties: _Optional[_Union[GetPropertiesInstruction, _Mapping]] = ..., reconnect: _Optional[_Union[ReconnectInstruction, _Mapping]] = ..., shutdown: _Optional[_Union[ShutdownInstruction, _Mapping]] = ...) -> None: ...

class FitInstruction(_message.Message):
    __slots__ = ("parameters", "config")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    config: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, parameters: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., config: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...

class EvaluateInstruction(_message.Message):
    __slots__ = ("parameters", "config")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    config: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, parameters: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., config: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...

class QueryInstruction(_message.Message):
    __slots__ = ("config", "inputs")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    config: _containers.MessageMap[str, _value_pb2.Value]
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    def __init__(self, config: _Optional[_Mapping[str, _value_pb2.Value]] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class GetParametersInstruction(_message.Message):
    __slots__ = ("config",)
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, config: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...

class GetPropertiesInstruction(_message.Message):
    __slots__ = ("config",)
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, config: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...

class ReconnectInstruction(_message.Message):
    __slots__ = ("delay_ms",)
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    delay_ms: int
    def __init__(self, delay_ms: _Optional[int] = ...) -> None: ...

class ShutdownInstruction(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "fit", "evaluate", "query", "get_parameters", "get_properties", "failure")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    GET_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    GET_PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    fit: FitResult
    evaluate: EvaluateResult
    query: QueryResult
    get_parameters: GetParametersResult
    get_properties: GetPropertiesResult
    failure: _error_pb2.Error
    def __init__(self, task_id: _Optional[str] = ..., fit: _Optional[_Union[FitResult, _Mapping]] = ..., evaluate: _Optional[_Union[EvaluateResult, _Mapping]] = ..., query: _Optional[_Union[QueryResult, _Mapping]] = ..., get_parameters: _Optional[_Union[GetParametersResult, _Mapping]] = ..., get_properties: _Optional[_Union[GetPropertiesResult, _Mapping]] = ..., failure: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class FitResult(_message.Message):
    __slots__ = ("parameters", "num_examples", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    num_examples: int
    metrics: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, parameters: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...

class EvaluateResult(_message.Message):
    __slots__ = ("loss", "num_examples", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    LOSS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    loss: float
    num_examples: int
    metrics: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, loss: _Optional[float] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("metrics", "tensors", "num_examples")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.MessageMap[str, _value_pb2.Value]
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    num_examples: int
    def __init__(self, metrics: _Optional[_Mapping[str, _value_pb2.Value]] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., num_examples: _Optional[int] = ...) -> None: ...

class GetParametersResult(_message.Message):
    __slots__ = ("parameters",)
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    def __init__(self, parameters: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class GetPropertiesResult(_message.Message):
    __slots__ = ("properties",)
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _value_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    properties: _containers.MessageMap[str, _value_pb2.Value]
    def __init__(self, properties: _Optional[_Mapping[str, _value_pb2.Value]] = ...) -> None: ...
