"""gRPC handlers of FederationService and BlobService over a Coordinator.

Handlers are built from the RPC table in pollen.services, so no generated gRPC code is
needed. Each handler converts the request with pollen.wire, calls the coordinator and maps
a PollenError to its gRPC status plus the "pollen-error-bin" trailer the spec requires.
Blob chunks bypass upb on both sides: uploads are parsed and downloads serialized by the
zero-copy helpers of pollen.wire.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from pollen import wire
from pollen._generated.pollen.v1 import blob_service_pb2, federation_service_pb2
from pollen.errors import (
    InternalError,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    SessionUnknown,
    Unavailable,
)
from pollen.messages import TaskResult
from pollen.services import BLOB, ERROR_TRAILER, FEDERATION, Method
from reference_server.coordinator import Coordinator, Peer

log = logging.getLogger("pollen.server")

_LEAVE_REASONS = {
    0: "UNSPECIFIED",
    1: "CLIENT_STOPPING",
    2: "SHUTDOWN_INSTRUCTION",
    3: "RECONNECT_INSTRUCTION",
    4: "FATAL_ERROR",
}


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: PollenError) -> None:
    proto = wire.error_to_proto(error)
    await context.abort(
        grpc.StatusCode(_status(error.grpc_status)),
        proto.message,  # the same text as Error.message (PLN-TRN-010)
        trailing_metadata=((ERROR_TRAILER, proto.SerializeToString()),),
    )


def _status(code: int) -> tuple[int, str]:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.value
    return grpc.StatusCode.INTERNAL.value


def _parser(method: Method) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        message = method.request()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise InvalidArgument(f"malformed {method.request.__name__}: {exc}") from None
        return message

    return parse


def _known_session(coordinator: Coordinator, session_id: str) -> None:
    if session_id not in coordinator.sessions:
        raise SessionUnknown("unknown or expired session; handshake again", field="session_id")


def _upload_parser(coordinator: Coordinator) -> Callable[[bytes], wire.UploadChunk]:
    """The chunk parser, which checks the blob's digest: the session goes first (PLN-BLB-016)."""

    def parse(raw: bytes) -> wire.UploadChunk:
        try:
            return wire.upload_chunk_from_bytes(raw)
        except PollenError:
            _known_session(coordinator, _parser(BLOB["UploadBlob"])(raw).session_id)
            raise

    return parse


def peer(context: grpc.aio.ServicerContext[Any, Any]) -> Peer | None:
    """The caller's client certificate and its subject alternative names, if it sent one."""
    auth = context.auth_context()
    certificate = b"".join(auth.get("x509_pem_cert", ()))
    if not certificate:
        return None
    names = frozenset(
        name.decode(errors="replace") for name in auth.get("x509_subject_alternative_name", ())
    )
    return Peer(certificate=certificate, names=names)


#: How soon a client refused by a stopping server should try again (another replica, or
#: this one after its restart).
DRAIN_RETRY_AFTER_MS = 1000


def _refuse_while_draining(coordinator: Coordinator) -> None:
    if coordinator.draining:
        raise Unavailable("the server is stopping", retry_after_ms=DRAIN_RETRY_AFTER_MS)


def _check_caller(
    coordinator: Coordinator, session_id: str, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    # The certificate is only read where node ids are bound to certificates.
    if session_id and coordinator.config.server.bind_node_ids:
        coordinator.check_caller(session_id, peer(context))


def _guarded(
    handler: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
    parse: Callable[[bytes], Any],
    max_bytes: int | None,
    coordinator: Coordinator,
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    # Requests arrive as bytes and are parsed here, so a malformed one gets a typed
    # INVALID_ARGUMENT instead of the bare INTERNAL a failing deserializer would cause.
    async def call(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            _refuse_while_draining(coordinator)
            if max_bytes is not None and len(raw) > max_bytes:
                raise LimitExceeded(
                    f"message of {len(raw)} bytes exceeds max_message_bytes {max_bytes}"
                )
            request = parse(raw)
            _check_caller(coordinator, getattr(request, "session_id", ""), context)
            return await handler(request, context)
        except PollenError as exc:
            await _abort(context, exc)
        except Exception as exc:  # a bug must not look like a protocol answer
            log.exception("internal error in %s", getattr(handler, "__name__", handler))
            await _abort(context, InternalError(f"internal error: {type(exc).__name__}"))
        raise AssertionError("unreachable: abort raises")

    return call


class FederationHandlers:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def Handshake(self, request: Message, context: Any) -> Message:  # noqa: N802 - RPC name
        response = await self.coordinator.handshake(
            wire.handshake_request_from_proto(request),  # type: ignore[arg-type]
            peer=peer(context),
        )
        return wire.handshake_response_to_proto(response)

    async def PollTask(self, request: Any, context: Any) -> Message:  # noqa: N802
        task = await self.coordinator.poll(request.session_id, request.wait_ms)
        response = FEDERATION["PollTask"].response()
        if task is not None:
            response.task.CopyFrom(wire.task_to_proto(task))  # type: ignore[attr-defined]
        return response

    async def SubmitResult(self, request: Any, context: Any) -> Message:  # noqa: N802
        _known_session(self.coordinator, request.session_id)  # before the result (PLN-SES-004)
        result: TaskResult = wire.result_from_proto(request.result, limits=self.coordinator.limits)
        duplicate = await self.coordinator.submit(request.session_id, result)
        return federation_service_pb2.SubmitResultResponse(duplicate=duplicate)

    async def Heartbeat(self, request: Any, context: Any) -> Message:  # noqa: N802
        active = self.coordinator.heartbeat(request.session_id, request.task_id)
        return federation_service_pb2.HeartbeatResponse(task_active=active)

    async def Leave(self, request: Any, context: Any) -> Message:  # noqa: N802
        reason = _LEAVE_REASONS.get(request.reason, "UNSPECIFIED")
        await self.coordinator.leave(request.session_id, reason)
        return FEDERATION["Leave"].response()


class BlobHandlers:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def DownloadBlob(  # noqa: N802
        self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        try:
            _refuse_while_draining(self.coordinator)
            request = _parser(BLOB["DownloadBlob"])(raw)
            _check_caller(self.coordinator, request.session_id, context)
            chunks = self.coordinator.download(request.session_id, request.sha256, request.offset)
            for chunk in chunks:
                yield chunk
        except PollenError as exc:
            await _abort(context, exc)

    async def UploadBlob(self, request: wire.UploadChunk, context: Any) -> Message:  # noqa: N802
        committed, complete = await self.coordinator.upload(
            request.session_id, request.blob, request.offset, request.data
        )
        return blob_service_pb2.UploadBlobResponse(committed_size=committed, complete=complete)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _framed(message: bytes) -> bytes:
    return message  # the coordinator serves DownloadBlobResponse messages serialized


def generic_handlers(coordinator: Coordinator) -> list[grpc.GenericRpcHandler]:
    """The two services' handlers, ready for grpc.aio.Server.add_generic_rpc_handlers."""
    federation = FederationHandlers(coordinator)
    blobs = BlobHandlers(coordinator)

    def unary(method: Method, handler: Any, parse: Any = None) -> grpc.RpcMethodHandler[Any, Any]:
        # The declared limit holds once a session exists; a Handshake may be as large as
        # the default limit (PLN-TRN-019), which the gRPC stack enforces.
        limit = None if method.name == "Handshake" else coordinator.limits.max_message_bytes
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler, parse or _parser(method), limit, coordinator),
            response_serializer=_serialize,
        )

    federation_handlers = {
        name: unary(method, getattr(federation, name)) for name, method in FEDERATION.items()
    }
    blob_handlers = {
        "UploadBlob": unary(BLOB["UploadBlob"], blobs.UploadBlob, _upload_parser(coordinator)),
        "DownloadBlob": grpc.unary_stream_rpc_method_handler(
            blobs.DownloadBlob, response_serializer=_framed
        ),
    }
    return [
        grpc.method_handlers_generic_handler(FEDERATION["Handshake"].service, federation_handlers),
        grpc.method_handlers_generic_handler(BLOB["UploadBlob"].service, blob_handlers),
    ]
