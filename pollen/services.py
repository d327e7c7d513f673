"""The RPCs of the protocol as data, read from the generated service descriptors.

Both gRPC drivers (server and client) build their handlers and stubs from this table, so
neither needs generated gRPC code and the core still never imports grpc.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import message_factory
from google.protobuf.message import Message

from pollen._generated.pollen.v1 import blob_service_pb2, federation_service_pb2

#: Binary trailing-metadata key that carries a serialized pollen.v1.Error on failed RPCs.
ERROR_TRAILER = "pollen-error-bin"


@dataclass(frozen=True, kw_only=True)
class Method:
    """One RPC: its service, name, message classes and streaming shape."""

    service: str
    name: str
    request: type[Message]
    response: type[Message]
    server_streaming: bool

    @property
    def path(self) -> str:
        """The gRPC method path, for example "/pollen.v1.FederationService/Handshake"."""
        return f"/{self.service}/{self.name}"


def _methods(service_name: str, module: object) -> dict[str, Method]:
    descriptor = module.DESCRIPTOR.services_by_name[service_name]  # type: ignore[attr-defined]
    return {
        m.name: Method(
            service=descriptor.full_name,
            name=m.name,
            request=message_factory.GetMessageClass(m.input_type),
            response=message_factory.GetMessageClass(m.output_type),
            server_streaming=m.server_streaming,
        )
        for m in descriptor.methods
    }


FEDERATION = _methods("FederationService", federation_service_pb2)
BLOB = _methods("BlobService", blob_service_pb2)
SERVICES = {
    "pollen.v1.FederationService": FEDERATION,
    "pollen.v1.BlobService": BLOB,
}
