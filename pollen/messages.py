"""The protocol's messages as frozen dataclasses, for drivers that must not touch protobuf.

Tensors appear as `EncodedTensor`s exactly as they travel (a payload, or a blob reference
to fetch); typed maps are plain dicts of wire-typed values. `pollen.wire` converts these
to and from the generated protobuf classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pollen.errors import PollenError
from pollen.handshake import Capabilities
from pollen.tensors import EncodedTensor
from pollen.values import ConfigValue
from pollen.version import ProtocolVersion

Tensors = tuple[EncodedTensor, ...]
Values = dict[str, ConfigValue]


# --- handshake ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HandshakeRequest:
    versions: tuple[ProtocolVersion, ...]
    node_id: str
    capabilities: Capabilities
    agent: str = ""


@dataclass(frozen=True, kw_only=True)
class HandshakeResponse:
    version: ProtocolVersion
    session_id: str
    capabilities: Capabilities
    heartbeat_interval_ms: int
    max_poll_wait_ms: int
    session_timeout_ms: int
    chunk_size_bytes: int
    agent: str = ""


# --- instructions --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FitInstruction:
    parameters: Tensors
    config: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EvaluateInstruction:
    parameters: Tensors
    config: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class QueryInstruction:
    config: Values = field(default_factory=dict)
    inputs: Tensors = ()


@dataclass(frozen=True, kw_only=True)
class GetParametersInstruction:
    config: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GetPropertiesInstruction:
    config: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ReconnectInstruction:
    delay_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class ShutdownInstruction:
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class UnknownInstruction:
    """A task whose instruction this implementation does not know (or that has none)."""


Instruction = (
    FitInstruction
    | EvaluateInstruction
    | QueryInstruction
    | GetParametersInstruction
    | GetPropertiesInstruction
    | ReconnectInstruction
    | ShutdownInstruction
    | UnknownInstruction
)
#: Instructions answered by a Leave rather than by a TaskResult.
CONTROL_INSTRUCTIONS = (ReconnectInstruction, ShutdownInstruction)


@dataclass(frozen=True, kw_only=True)
class Task:
    task_id: str
    instruction: Instruction
    run_id: str = ""
    round: int = 0
    deadline_ms: int = 0


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FitReply:
    parameters: Tensors
    num_examples: int
    metrics: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EvaluateReply:
    loss: float
    num_examples: int
    metrics: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class QueryReply:
    metrics: Values = field(default_factory=dict)
    tensors: Tensors = ()
    num_examples: int = 0


@dataclass(frozen=True, kw_only=True)
class GetParametersReply:
    parameters: Tensors


@dataclass(frozen=True, kw_only=True)
class GetPropertiesReply:
    properties: Values = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FailureReply:
    """The client could not carry out the task; `error` says why."""

    error: PollenError


Reply = (
    FitReply | EvaluateReply | QueryReply | GetParametersReply | GetPropertiesReply | FailureReply
)

#: Which reply answers which instruction.
REPLY_FOR: dict[type[Instruction], type[Reply]] = {
    FitInstruction: FitReply,
    EvaluateInstruction: EvaluateReply,
    QueryInstruction: QueryReply,
    GetParametersInstruction: GetParametersReply,
    GetPropertiesInstruction: GetPropertiesReply,
}


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    task_id: str
    reply: Reply
