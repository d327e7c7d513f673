"""Tasks and task results <-> pollen.v1.Task and pollen.v1.TaskResult."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pollen._generated.pollen.v1 import (
    task_pb2,
    tensor_pb2,
)
from pollen.errors import InvalidArgument
from pollen.limits import Limits
from pollen.messages import (
    EvaluateInstruction,
    EvaluateReply,
    FailureReply,
    FitInstruction,
    FitReply,
    GetParametersInstruction,
    GetParametersReply,
    GetPropertiesInstruction,
    GetPropertiesReply,
    Instruction,
    QueryInstruction,
    QueryReply,
    ReconnectInstruction,
    Reply,
    ShutdownInstruction,
    Task,
    TaskResult,
    UnknownInstruction,
)
from pollen.tensors import EncodedTensor
from pollen.wire.errors import error_from_proto, error_to_proto
from pollen.wire.tensors import tensor_from_proto, tensor_to_proto
from pollen.wire.values import config_from_proto, config_to_proto


def _tensors_from(msgs: Iterable[tensor_pb2.Tensor], field: str) -> tuple[EncodedTensor, ...]:
    return tuple(tensor_from_proto(t, field=f"{field}[{i}]") for i, t in enumerate(msgs))


def _fill_tensors(out: Any, tensors: Iterable[EncodedTensor]) -> None:
    out.extend(tensor_to_proto(t) for t in tensors)


def task_to_proto(task: Task) -> task_pb2.Task:
    """Encode a task (unknown instructions cannot be sent, only received)."""
    msg = task_pb2.Task(
        task_id=task.task_id, run_id=task.run_id, round=task.round, deadline_ms=task.deadline_ms
    )
    ins = task.instruction
    if isinstance(ins, FitInstruction | EvaluateInstruction):
        part = msg.fit if isinstance(ins, FitInstruction) else msg.evaluate
        _fill_tensors(part.parameters, ins.parameters)
        config_to_proto(ins.config, part.config)
    elif isinstance(ins, QueryInstruction):
        _fill_tensors(msg.query.inputs, ins.inputs)
        config_to_proto(ins.config, msg.query.config)
    elif isinstance(ins, GetParametersInstruction):
        msg.get_parameters.SetInParent()
        config_to_proto(ins.config, msg.get_parameters.config)
    elif isinstance(ins, GetPropertiesInstruction):
        msg.get_properties.SetInParent()
        config_to_proto(ins.config, msg.get_properties.config)
    elif isinstance(ins, ReconnectInstruction):
        msg.reconnect.delay_ms = ins.delay_ms
        msg.reconnect.SetInParent()
    elif isinstance(ins, ShutdownInstruction):
        msg.shutdown.reason = ins.reason
        msg.shutdown.SetInParent()
    else:
        raise InvalidArgument("an unknown instruction cannot be sent", field="instruction")
    return msg


def task_from_proto(msg: task_pb2.Task, *, limits: Limits) -> Task:
    """Decode a task; an instruction member this version does not know is UnknownInstruction.

    Tensors are not decoded here (their payloads may be blobs still to fetch); maps are
    checked against `limits.max_map_entries`.
    """
    entries = limits.max_map_entries
    kind = msg.WhichOneof("instruction")
    instruction: Instruction
    if kind == "fit":
        instruction = FitInstruction(
            parameters=_tensors_from(msg.fit.parameters, "fit.parameters"),
            config=config_from_proto(msg.fit.config, max_entries=entries, field="fit.config"),
        )
    elif kind == "evaluate":
        instruction = EvaluateInstruction(
            parameters=_tensors_from(msg.evaluate.parameters, "evaluate.parameters"),
            config=config_from_proto(
                msg.evaluate.config, max_entries=entries, field="evaluate.config"
            ),
        )
    elif kind == "query":
        instruction = QueryInstruction(
            config=config_from_proto(msg.query.config, max_entries=entries, field="query.config"),
            inputs=_tensors_from(msg.query.inputs, "query.inputs"),
        )
    elif kind == "get_parameters":
        instruction = GetParametersInstruction(
            config=config_from_proto(
                msg.get_parameters.config, max_entries=entries, field="get_parameters.config"
            )
        )
    elif kind == "get_properties":
        instruction = GetPropertiesInstruction(
            config=config_from_proto(
                msg.get_properties.config, max_entries=entries, field="get_properties.config"
            )
        )
    elif kind == "reconnect":
        instruction = ReconnectInstruction(delay_ms=msg.reconnect.delay_ms)
    elif kind == "shutdown":
        instruction = ShutdownInstruction(reason=msg.shutdown.reason)
    else:
        instruction = UnknownInstruction()
    return Task(
        task_id=msg.task_id,
        instruction=instruction,
        run_id=msg.run_id,
        round=msg.round,
        deadline_ms=msg.deadline_ms,
    )


def result_to_proto(result: TaskResult) -> task_pb2.TaskResult:
    msg = task_pb2.TaskResult(task_id=result.task_id)
    reply = result.reply
    if isinstance(reply, FitReply):
        msg.fit.num_examples = reply.num_examples
        _fill_tensors(msg.fit.parameters, reply.parameters)
        config_to_proto(reply.metrics, msg.fit.metrics)
    elif isinstance(reply, EvaluateReply):
        msg.evaluate.loss = reply.loss
        msg.evaluate.num_examples = reply.num_examples
        config_to_proto(reply.metrics, msg.evaluate.metrics)
    elif isinstance(reply, QueryReply):
        msg.query.num_examples = reply.num_examples
        msg.query.SetInParent()
        _fill_tensors(msg.query.tensors, reply.tensors)
        config_to_proto(reply.metrics, msg.query.metrics)
    elif isinstance(reply, GetParametersReply):
        msg.get_parameters.SetInParent()
        _fill_tensors(msg.get_parameters.parameters, reply.parameters)
    elif isinstance(reply, GetPropertiesReply):
        msg.get_properties.SetInParent()
        config_to_proto(reply.properties, msg.get_properties.properties)
    else:
        msg.failure.CopyFrom(error_to_proto(reply.error))
    return msg


def result_from_proto(msg: task_pb2.TaskResult, *, limits: Limits) -> TaskResult:
    """Decode a result; a result with no (known) outcome is INVALID_ARGUMENT (PLN-TSK)."""
    entries = limits.max_map_entries
    kind = msg.WhichOneof("outcome")
    reply: Reply
    if kind == "fit":
        reply = FitReply(
            parameters=_tensors_from(msg.fit.parameters, "result.fit.parameters"),
            num_examples=msg.fit.num_examples,
            metrics=config_from_proto(
                msg.fit.metrics, max_entries=entries, field="result.fit.metrics"
            ),
        )
    elif kind == "evaluate":
        reply = EvaluateReply(
            loss=msg.evaluate.loss,
            num_examples=msg.evaluate.num_examples,
            metrics=config_from_proto(
                msg.evaluate.metrics, max_entries=entries, field="result.evaluate.metrics"
            ),
        )
    elif kind == "query":
        reply = QueryReply(
            metrics=config_from_proto(
                msg.query.metrics, max_entries=entries, field="result.query.metrics"
            ),
            tensors=_tensors_from(msg.query.tensors, "result.query.tensors"),
            num_examples=msg.query.num_examples,
        )
    elif kind == "get_parameters":
        reply = GetParametersReply(
            parameters=_tensors_from(
                msg.get_parameters.parameters, "result.get_parameters.parameters"
            )
        )
    elif kind == "get_properties":
        reply = GetPropertiesReply(
            properties=config_from_proto(
                msg.get_properties.properties,
                max_entries=entries,
                field="result.get_properties.properties",
            )
        )
    elif kind == "failure":
        reply = FailureReply(error=error_from_proto(msg.failure))
    else:
        raise InvalidArgument("the result has no outcome this server knows", field="result")
    return TaskResult(task_id=msg.task_id, reply=reply)
