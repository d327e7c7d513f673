from pollen import wire
from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.dtypes import Dtype
from pollen.handshake import Capabilities
from pollen.limits import Limits
from pollen.messages import HandshakeRequest, HandshakeResponse
from pollen.version import ProtocolVersion


def test_handshake_request_round_trip() -> None:
    request = HandshakeRequest(
        versions=(ProtocolVersion(1, 3), ProtocolVersion(2, 0)),
        node_id="node-7",
        capabilities=Capabilities(
            codecs=("zstd", "raw"),
            dtypes=frozenset({Dtype.FLOAT32, Dtype.BOOL}),
            limits=Limits(max_message_bytes=1 << 24),
            features=frozenset({"query"}),
        ),
        agent="pollen-python/0.1.0",
    )
    data = wire.handshake_request_to_proto(request).SerializeToString()
    msg = federation_service_pb2.HandshakeRequest.FromString(data)
    assert wire.handshake_request_from_proto(msg) == request


def test_zero_limits_mean_defaults_and_unknown_dtypes_are_dropped() -> None:
    msg = federation_service_pb2.HandshakeRequest()
    future_dtype: object = 99
    msg.capabilities.dtypes.extend([12, future_dtype])  # type: ignore[list-item]  # FLOAT32 and a dtype from the future
    msg.capabilities.codecs.extend(["raw", "raw"])
    caps = wire.handshake_request_from_proto(msg).capabilities
    assert caps.limits == Limits()
    assert caps.dtypes == {Dtype.FLOAT32}
    assert caps.codecs == ("raw",)


def test_handshake_response_round_trip() -> None:
    response = HandshakeResponse(
        version=ProtocolVersion(1, 0),
        session_id="s-123",
        capabilities=Capabilities(),
        heartbeat_interval_ms=10_000,
        max_poll_wait_ms=30_000,
        session_timeout_ms=60_000,
        chunk_size_bytes=4 << 20,
        agent="pollen-server/0.1.0",
    )
    data = wire.handshake_response_to_proto(response).SerializeToString()
    msg = federation_service_pb2.HandshakeResponse.FromString(data)
    assert wire.handshake_response_from_proto(msg) == response
