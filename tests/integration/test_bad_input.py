"""Bad input over real gRPC: typed errors for the sender, an intact run for the others."""

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest

from pollen import services, wire
from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.errors import ErrorCode, PollenError
from pollen.handshake import Capabilities
from pollen.limits import Limits
from pollen.messages import FitInstruction, FitReply, HandshakeRequest, TaskResult
from pollen.tensors import encode_tensor
from pollen.version import ProtocolVersion
from tests.integration.harness import Processes, committed_rounds, wait_all


class RawClient:
    """Speaks the protocol by hand, so it can send what no real client would."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )

    def call(self, name: str, message: Any) -> Any:
        method = services.FEDERATION[name]
        stub: Any = self.channel.unary_unary(
            method.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=method.response.FromString,
        )
        return stub(message, timeout=30)

    def error(self, name: str, message: Any) -> tuple[grpc.StatusCode, PollenError | None]:
        with pytest.raises(grpc.RpcError) as info:
            self.call(name, message)
        rpc: Any = info.value
        trailer = dict(rpc.trailing_metadata() or ()).get(services.ERROR_TRAILER)
        typed = wire.error_from_bytes(trailer) if trailer else None
        return rpc.code(), typed

    def handshake(
        self, node: str, versions: tuple[ProtocolVersion, ...] = (ProtocolVersion(1, 0),)
    ) -> Any:
        request = HandshakeRequest(versions=versions, node_id=node, capabilities=Capabilities())
        return self.call("Handshake", wire.handshake_request_to_proto(request))

    def next_fit(self, session_id: str) -> Any:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = self.call(
                "PollTask",
                federation_service_pb2.PollTaskRequest(session_id=session_id, wait_ms=5000),
            )
            if response.HasField("task"):
                return response.task
        raise AssertionError("no task")

    def submit(self, session_id: str, task_id: str, arrays: list[np.ndarray]) -> Any:
        reply = FitReply(parameters=tuple(encode_tensor(a) for a in arrays), num_examples=10)
        result = wire.result_to_proto(TaskResult(task_id=task_id, reply=reply))
        return federation_service_pb2.SubmitResultRequest(session_id=session_id, result=result)


def test_bad_inputs_get_typed_errors_and_the_run_goes_on(procs: Processes) -> None:
    initial = procs.tmp / "initial.npz"
    np.savez(initial, np.zeros(3, np.float32), np.zeros(1, np.float32))
    server = procs.server(
        {
            "server": {"max_message_bytes": 1024 * 1024, "chunk_size_bytes": 512 * 1024},
            "run": {
                "rounds": 3,
                "min_available_clients": 3,
                "start_timeout_s": 60,
                "initial_model": str(initial),
            },
            "fit": {"min_clients": 3, "min_results": 2, "timeout_s": 60},
        }
    )
    raw = RawClient(server.address)

    future = HandshakeRequest(
        versions=(ProtocolVersion(2, 0),), node_id="future", capabilities=Capabilities()
    )
    code, typed = raw.error("Handshake", wire.handshake_request_to_proto(future))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert typed is not None
    assert typed.code is ErrorCode.VERSION_UNSUPPORTED
    assert typed.supported_versions == (ProtocolVersion(1, 0),)

    code, typed = raw.error("PollTask", federation_service_pb2.PollTaskRequest(session_id="nope"))
    assert (code, typed and typed.code) == (grpc.StatusCode.NOT_FOUND, ErrorCode.SESSION_UNKNOWN)

    good = [procs.client(server.address, f"node-{i}") for i in range(2)]
    session = raw.handshake("mallory").session_id
    outcomes: list[tuple[grpc.StatusCode, ErrorCode | None, str]] = []

    def misbehave() -> None:
        bad_updates: list[Callable[[list[np.ndarray]], list[np.ndarray]]] = [
            lambda w: [np.zeros(7, np.float32), w[1]],  # wrong shape
            lambda w: [np.full(3, np.nan, np.float32), w[1]],  # NaN
            lambda w: [np.zeros(400_000, np.float32), w[1]],  # over the message limit
        ]
        for make in bad_updates:
            task = raw.next_fit(session)
            instruction = wire.task_from_proto(task, limits=Limits())
            assert isinstance(instruction.instruction, FitInstruction)
            current = [np.zeros(3, np.float32), np.zeros(1, np.float32)]
            code, typed = raw.error(
                "SubmitResult", raw.submit(session, task.task_id, make(current))
            )
            outcomes.append((code, typed.code if typed else None, typed.field if typed else ""))
        # Leaving closes the last task at once (dropped) instead of at its deadline.
        raw.call(
            "Leave",
            federation_service_pb2.LeaveRequest(
                session_id=session, reason=federation_service_pb2.LEAVE_REASON_FATAL_ERROR
            ),
        )

    thread = threading.Thread(target=misbehave)
    thread.start()
    assert wait_all(good, timeout=120) == [0, 0]
    thread.join(timeout=60)
    assert server.proc.wait(timeout=60) == 0
    assert outcomes[0] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ErrorCode.UPDATE_REJECTED,
        "result.fit.parameters[0]",
    )
    assert outcomes[1] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ErrorCode.UPDATE_REJECTED,
        "result.fit.parameters[0]",
    )
    assert outcomes[2][:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorCode.LIMIT_EXCEEDED)
    rounds = committed_rounds(server.state_dir)
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert rounds[1].history["fit_attempt_1"]["failures"] == {"rejected": 1}
    assert rounds[2].history["fit_attempt_1"]["failures"] == {"rejected": 1}
    assert rounds[3].history["fit_attempt_1"]["failures"] == {"dropped": 1}
