import dataclasses
import math

import numpy as np
import pytest

from pollen import wire
from pollen._generated.pollen.v1 import task_pb2
from pollen.blob import BlobRef
from pollen.errors import AppError, InvalidArgument, LimitExceeded
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
    QueryInstruction,
    QueryReply,
    ReconnectInstruction,
    ShutdownInstruction,
    Task,
    TaskResult,
    UnknownInstruction,
)
from pollen.tensors import decode_tensor, encode_tensor

LIMITS = Limits()
WEIGHTS = encode_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
BLOB = dataclasses.replace(
    encode_tensor(np.zeros(4, dtype=np.float64)),
    payload=b"",
    blob=BlobRef(sha256=bytes(32), size=32),
)
INSTRUCTIONS = [
    FitInstruction(parameters=(WEIGHTS, BLOB), config={"lr": 0.1, "epochs": 2, "tag": b"\x00"}),
    EvaluateInstruction(parameters=(WEIGHTS,), config={"split": "test"}),
    QueryInstruction(config={"what": "histogram"}, inputs=(WEIGHTS,)),
    GetParametersInstruction(config={}),
    GetPropertiesInstruction(config={"verbose": True}),
    ReconnectInstruction(delay_ms=1500),
    ShutdownInstruction(reason="done"),
]


def _through_bytes(task: Task) -> Task:
    data = wire.task_to_proto(task).SerializeToString()
    return wire.task_from_proto(task_pb2.Task.FromString(data), limits=LIMITS)


@pytest.mark.parametrize("instruction", INSTRUCTIONS, ids=lambda i: type(i).__name__)
def test_tasks_round_trip(instruction: object) -> None:
    task = Task(task_id="t-1", run_id="run", round=3, deadline_ms=60_000, instruction=instruction)  # type: ignore[arg-type]
    back = _through_bytes(task)
    assert (back.task_id, back.run_id, back.round, back.deadline_ms) == ("t-1", "run", 3, 60_000)
    assert type(back.instruction) is type(instruction)
    # EncodedTensor compares payload bytes, so this checks every tensor and blob reference.
    assert back == task
    if isinstance(back.instruction, FitInstruction):
        weights = back.instruction.parameters[0]
        np.testing.assert_array_equal(decode_tensor(weights), decode_tensor(WEIGHTS))


def test_empty_parameterless_instructions_are_still_recognised() -> None:
    # An instruction with all-default fields must still select its oneof member.
    back = _through_bytes(Task(task_id="t", instruction=GetParametersInstruction()))
    assert isinstance(back.instruction, GetParametersInstruction)
    back = _through_bytes(Task(task_id="t", instruction=ReconnectInstruction()))
    assert isinstance(back.instruction, ReconnectInstruction)


def test_unknown_instruction_is_decoded_not_refused() -> None:
    future = task_pb2.Task(task_id="t").SerializeToString() + b"\xfa\x01\x02\x08\x01"  # field 31
    task = wire.task_from_proto(task_pb2.Task.FromString(future), limits=LIMITS)
    assert isinstance(task.instruction, UnknownInstruction)
    with pytest.raises(InvalidArgument):
        wire.task_to_proto(task)


def test_config_entry_limit_applies_to_received_tasks() -> None:
    task = Task(task_id="t", instruction=FitInstruction(parameters=(), config={"a": 1, "b": 2}))
    msg = wire.task_to_proto(task)
    with pytest.raises(LimitExceeded) as info:
        wire.task_from_proto(msg, limits=Limits(max_map_entries=1))
    assert info.value.field == "fit.config"


REPLIES = [
    FitReply(parameters=(WEIGHTS,), num_examples=10, metrics={"loss": 0.5}),
    EvaluateReply(loss=-0.0, num_examples=3, metrics={"acc": 0.9}),
    QueryReply(metrics={"count": 7}, tensors=(WEIGHTS,), num_examples=0),
    GetParametersReply(parameters=(WEIGHTS, BLOB)),
    GetPropertiesReply(properties={"device": "cpu"}),
    FailureReply(error=AppError("boom", field="fit")),
]


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_results_round_trip(reply: object) -> None:
    result = TaskResult(task_id="t-9", reply=reply)  # type: ignore[arg-type]
    data = wire.result_to_proto(result).SerializeToString()
    back = wire.result_from_proto(task_pb2.TaskResult.FromString(data), limits=LIMITS)
    assert back.task_id == "t-9"
    assert type(back.reply) is type(reply)
    if isinstance(reply, FailureReply):
        assert isinstance(back.reply, FailureReply)
        assert isinstance(back.reply.error, AppError)
        assert (back.reply.error.message, back.reply.error.field) == ("boom", "fit")
    elif isinstance(reply, EvaluateReply):
        assert isinstance(back.reply, EvaluateReply)
        assert math.copysign(1, back.reply.loss) == -1
        assert back.reply.metrics == reply.metrics
    else:
        assert back.reply == reply


def test_result_without_outcome_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="no outcome"):
        wire.result_from_proto(task_pb2.TaskResult(task_id="t"), limits=LIMITS)
