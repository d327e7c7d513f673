"""The records the store keeps: runs, committed rounds and the tensors they reference.

Tensor payloads are never inside a record: a record names each payload by its BlobRef and
the bytes live in the blob store, written (and fsynced) before the record that names them
is committed. A record is therefore small whatever the model size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pollen.blob import BlobRef
from pollen.dtypes import Dtype
from pollen.tensors import EncodedTensor
from pollen.values import ConfigValue

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
STOPPED = "stopped"
#: Every status a run can have (spec chapter 7, "Ending a run").
RUN_STATUSES = frozenset({RUNNING, FINISHED, FAILED, STOPPED})


@dataclass(frozen=True, kw_only=True)
class TensorRecord:
    """A tensor whose encoded payload is a stored blob."""

    dtype: Dtype
    shape: tuple[int, ...]
    codec: str
    blob: BlobRef
    #: Informative only, like EncodedTensor.name; kept so a stored model keeps its names.
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    def to_encoded(self) -> EncodedTensor:
        """The tensor as it travels by reference: empty payload, `blob` set."""
        return EncodedTensor(
            dtype=self.dtype,
            shape=self.shape,
            codec=self.codec,
            payload=b"",
            name=self.name,
            blob=self.blob,
        )


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """Everything a committed round leaves behind (PLN-RND-016).

    Round 0 may be committed once, before round 1, to hold the model and strategy state a
    run starts from: when those came from a client or a random initializer, a resumed run
    must start from the same bits.
    """

    run_id: str
    round: int
    parameters: tuple[TensorRecord, ...]
    strategy_state: Mapping[str, TensorRecord] = field(default_factory=dict)
    metrics: Mapping[str, ConfigValue] = field(default_factory=dict)
    #: JSON-serializable details: participants, failures by outcome, durations... Stored as
    #: JSON, so it reads back as JSON gives it (tuples come back as lists).
    history: Mapping[str, object] = field(default_factory=dict)
    #: Wall-clock time of the commit (seconds since the epoch), for history only.
    committed_at: float

    def __post_init__(self) -> None:
        # A list would leave a frozen record mutable from outside.
        object.__setattr__(self, "parameters", tuple(self.parameters))

    def tensors(self) -> list[tuple[str, TensorRecord]]:
        """Every tensor of the round with a field path naming it, parameters first."""
        found = [(f"parameters[{i}]", t) for i, t in enumerate(self.parameters)]
        found += [(f"strategy_state[{k!r}]", t) for k, t in self.strategy_state.items()]
        return found


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A run: its identity, the configuration it runs under and how far it got."""

    run_id: str
    #: Digest of the run's configuration; a resume under another configuration is refused.
    config_digest: str
    created_at: float
    #: One of RUN_STATUSES.
    status: str
    #: Why the run ended (empty while it runs); required reading for a failed run.
    reason: str
    #: The last committed round; 0 before round 1 is committed.
    last_round: int
