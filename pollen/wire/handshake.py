"""Handshake messages and capabilities <-> their protobuf forms."""

from __future__ import annotations

from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.dtypes import Dtype
from pollen.errors import InvalidArgument
from pollen.handshake import Capabilities
from pollen.limits import WIRE_FIELDS, Limits
from pollen.messages import (
    HandshakeRequest,
    HandshakeResponse,
)
from pollen.version import ProtocolVersion
from pollen.wire.errors import versions_from_proto, versions_to_proto
from pollen.wire.tensors import wire_dtype


def capabilities_to_proto(caps: Capabilities) -> federation_service_pb2.Capabilities:
    return federation_service_pb2.Capabilities(
        codecs=list(caps.codecs),
        dtypes=[wire_dtype(d) for d in sorted(caps.dtypes, key=lambda d: d.value)],
        limits=federation_service_pb2.Limits(**caps.limits.to_wire()),
        features=sorted(caps.features),
    )


def capabilities_from_proto(msg: federation_service_pb2.Capabilities) -> Capabilities:
    """Capabilities as received: unknown dtype numbers are dropped (a newer peer's)."""
    known = {d.value for d in Dtype}
    wire_limits = {name: getattr(msg.limits, name) for name in WIRE_FIELDS}
    try:
        limits = Limits().merged(wire_limits)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad limits: {exc}", field="capabilities.limits") from None
    return Capabilities(
        codecs=tuple(dict.fromkeys(msg.codecs)),
        dtypes=frozenset(Dtype(d) for d in msg.dtypes if d in known),
        limits=limits,
        features=frozenset(msg.features),
    )


def handshake_request_to_proto(req: HandshakeRequest) -> federation_service_pb2.HandshakeRequest:
    return federation_service_pb2.HandshakeRequest(
        versions=versions_to_proto(req.versions),
        node_id=req.node_id,
        capabilities=capabilities_to_proto(req.capabilities),
        agent=req.agent,
    )


def handshake_request_from_proto(
    msg: federation_service_pb2.HandshakeRequest,
) -> HandshakeRequest:
    return HandshakeRequest(
        versions=tuple(versions_from_proto(msg.versions)),
        node_id=msg.node_id,
        capabilities=capabilities_from_proto(msg.capabilities),
        agent=msg.agent,
    )


def handshake_response_to_proto(
    res: HandshakeResponse,
) -> federation_service_pb2.HandshakeResponse:
    return federation_service_pb2.HandshakeResponse(
        version=versions_to_proto([res.version])[0],
        session_id=res.session_id,
        capabilities=capabilities_to_proto(res.capabilities),
        heartbeat_interval_ms=res.heartbeat_interval_ms,
        max_poll_wait_ms=res.max_poll_wait_ms,
        session_timeout_ms=res.session_timeout_ms,
        chunk_size_bytes=res.chunk_size_bytes,
        agent=res.agent,
    )


def handshake_response_from_proto(
    msg: federation_service_pb2.HandshakeResponse,
) -> HandshakeResponse:
    return HandshakeResponse(
        version=ProtocolVersion(msg.version.major, msg.version.minor),
        session_id=msg.session_id,
        capabilities=capabilities_from_proto(msg.capabilities),
        heartbeat_interval_ms=msg.heartbeat_interval_ms,
        max_poll_wait_ms=msg.max_poll_wait_ms,
        session_timeout_ms=msg.session_timeout_ms,
        chunk_size_bytes=msg.chunk_size_bytes,
        agent=msg.agent,
    )
