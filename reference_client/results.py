"""Results on their way to the server: which tensors travel inline and which as blobs.

A result must fit the server's `max_message_bytes`; tensor payloads that would make the
SubmitResult message larger go as blobs, uploaded before the result is submitted
(PLN-BLB-003, PLN-TSK-024). The largest payloads move first, so that as few blobs as
possible are made.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.blob import BlobRef, blob_refs
from pollen.dispatch import METHOD_FOR, reply_tensors, with_reply_tensors
from pollen.handshake import CHUNK_OVERHEAD_BYTES
from pollen.messages import FailureReply, Reply, Task, TaskResult
from pollen.wire import result_to_proto

_DIGEST_PLACEHOLDER = bytes(32)


@dataclass(kw_only=True)
class PendingResult:
    """A task's reply until the server acknowledges it (PLN-TSK-014)."""

    task: Task
    reply: Reply
    #: Seconds from receiving the task to having its reply.
    duration_s: float
    #: Blob references of the reply's tensors that travel as blobs, by position.
    blobs: dict[int, BlobRef] | None = None
    #: Times the result was submitted again after BLOB_NOT_FOUND or BLOB_INCOMPLETE.
    blob_resubmits: int = 0
    created_at: float = field(default_factory=time.monotonic)

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def instruction(self) -> str:
        return METHOD_FOR.get(type(self.task.instruction), "unknown")

    @property
    def outcome(self) -> str:
        """The reply's kind: ok, or the failure's code."""
        if isinstance(self.reply, FailureReply):
            return self.reply.error.code.name
        return "ok"

    def replace_reply(self, reply: Reply) -> None:
        self.reply = reply
        self.blobs = None


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _field_size(length: int) -> int:
    """Bytes of a length-delimited field with a one-byte tag."""
    return 1 + _varint_size(length) + length


def plan_blobs(reply: Reply, *, task_id: str, session_id: str, max_message_bytes: int) -> set[int]:
    """Positions of the reply's tensors to send as blobs so that the request fits."""
    _, tensors = reply_tensors(reply)
    if not tensors:
        return set()
    placeholders = [
        dataclasses.replace(
            t, payload=b"", blob=BlobRef(sha256=_DIGEST_PLACEHOLDER, size=len(t.payload))
        )
        for t in tensors
    ]
    as_blobs = _request(session_id, task_id, with_reply_tensors(reply, placeholders)).ByteSize()
    growth = {}
    for i, tensor in enumerate(tensors):
        size = len(tensor.payload)
        ref_size = _field_size(32) + (1 + _varint_size(size) if size else 0)
        growth[i] = _field_size(size) - _field_size(ref_size)
    # Nested length prefixes grow with their contents; the chunk overhead covers them.
    budget = max_message_bytes - CHUNK_OVERHEAD_BYTES
    total = as_blobs + sum(growth.values())
    moved: set[int] = set()
    for i in sorted(growth, key=lambda i: len(tensors[i].payload), reverse=True):
        if total <= budget:
            break
        moved.add(i)
        total -= growth[i]
    return moved


def assign_blobs(pending: PendingResult, positions: set[int]) -> dict[int, BlobRef]:
    """Digest the payloads at `positions` (in parallel) and remember their references."""
    _, tensors = reply_tensors(pending.reply)
    order = sorted(positions)
    refs = blob_refs([tensors[i].payload for i in order])
    pending.blobs = dict(zip(order, refs, strict=True))
    return pending.blobs


def submit_request(
    pending: PendingResult, session_id: str
) -> federation_service_pb2.SubmitResultRequest:
    """The SubmitResult request, with blob references in place of moved payloads."""
    reply = pending.reply
    if pending.blobs:
        _, tensors = reply_tensors(reply)
        reply = with_reply_tensors(
            reply,
            [
                dataclasses.replace(t, payload=b"", blob=pending.blobs[i])
                if i in pending.blobs
                else t
                for i, t in enumerate(tensors)
            ],
        )
    return _request(session_id, pending.task_id, reply)


def _request(
    session_id: str, task_id: str, reply: Reply
) -> federation_service_pb2.SubmitResultRequest:
    return federation_service_pb2.SubmitResultRequest(
        session_id=session_id, result=result_to_proto(TaskResult(task_id=task_id, reply=reply))
    )
