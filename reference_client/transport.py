"""The gRPC side of the client: channel, stubs from pollen.services, typed call errors.

There is no generated gRPC code: the stubs are built from the RPC table of
`pollen.services`. Blob chunks go through the zero-copy framing of `pollen.wire.chunks`.
Every call has a deadline (PLN-TRN-014), and a failed call becomes a `CallError` carrying
the typed error of its `pollen-error-bin` trailer, or only its status when there is none
(PLN-TRN-012, PLN-TRN-013). Calls in flight are cancelled as soon as the stop event is
set, so that a client stops at once even in the middle of a long poll.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from pollen._generated.pollen.v1 import blob_service_pb2, error_pb2
from pollen.errors import InternalError, PollenError, StatusCode
from pollen.services import BLOB, ERROR_TRAILER, FEDERATION
from pollen.wire import (
    DownloadChunk,
    UploadChunk,
    download_chunk_from_bytes,
    error_from_proto,
    upload_chunk_to_bytes,
)
from reference_client.backoff import RetryPolicy
from reference_client.config import ClientOptions
from reference_client.errors import CallError, Stopped

#: The default max_message_bytes of the spec (chapter 13).
DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024
#: gRPC takes message sizes as a C int.
_GRPC_SIZE_MAX = (1 << 31) - 1


@dataclass(frozen=True, kw_only=True)
class Security:
    """Transport security: TLS with trust roots (and a client certificate for mutual TLS),
    or plaintext only when explicitly asked for (PLN-SEC-001)."""

    insecure: bool = False
    #: PEM trust roots; None uses the system's.
    root_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None

    def __post_init__(self) -> None:
        if self.insecure and (self.root_cert or self.client_cert or self.client_key):
            raise ValueError("certificates were given together with insecure plaintext")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    @classmethod
    def from_files(
        cls,
        *,
        insecure: bool = False,
        root_cert: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
    ) -> Security:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(
            insecure=insecure,
            root_cert=read(root_cert),
            client_cert=read(client_cert),
            client_key=read(client_key),
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials, or None for plaintext. TLS never falls back (PLN-SEC-002)."""
        if self.insecure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_cert,
            private_key=self.client_key,
            certificate_chain=self.client_cert,
        )


def channel_options(
    *, send_limit: int, receive_limit: int, options: ClientOptions, policy: RetryPolicy
) -> list[tuple[str, Any]]:
    """gRPC channel arguments: message sizes, keepalive, reconnect backoff, no own retries."""
    return [
        ("grpc.max_send_message_length", min(send_limit, _GRPC_SIZE_MAX)),
        ("grpc.max_receive_message_length", min(receive_limit, _GRPC_SIZE_MAX)),
        ("grpc.keepalive_time_ms", options.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", options.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        # The client retries by the protocol's rules; gRPC's own retries would hide them.
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", int(policy.initial_delay_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(policy.initial_delay_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(policy.max_delay_s * 1000)),
        ("grpc.primary_user_agent", options.agent_string),
    ]


def parse_error_trailer(metadata: Sequence[Any] | None) -> PollenError | None:
    """The typed error of a `pollen-error-bin` trailer; None when absent or unparseable."""
    for entry in metadata or ():
        key, value = entry[0], entry[1]
        if key != ERROR_TRAILER or not isinstance(value, bytes):
            continue
        msg = error_pb2.Error()
        try:
            msg.ParseFromString(value)
        except DecodeError:
            return None
        if msg.code == 0:
            # PLN-ERR-002: UNSPECIFIED reads as INTERNAL.
            return InternalError(msg.message, retry_after_ms=msg.retry_after_ms, field=msg.field)
        return error_from_proto(msg)
    return None


def to_call_error(method: str, exc: grpc.RpcError) -> CallError:
    """A CallError from a failed gRPC call."""
    code = exc.code()
    status = StatusCode(code.value[0]) if code is not None else StatusCode.UNKNOWN
    try:
        trailer = exc.trailing_metadata()
    except Exception:  # a local failure may carry no call state at all
        trailer = None
    return CallError(method, status, exc.details() or "", parse_error_trailer(trailer))


class StopWatcher:
    """Cancels the registered calls in flight when the stop event is set."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._calls: set[Any] = set()
        self._thread = threading.Thread(target=self._watch, name="pollen-stop", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._closed.is_set():
            if self._stop.wait(0.1):
                with self._lock:
                    calls = list(self._calls)
                for call in calls:
                    call.cancel()
                return

    def register(self, call: Any) -> None:
        """Track `call`; raises Stopped (and cancels it) when stopping has begun."""
        with self._lock:
            self._calls.add(call)
        # Checked after adding: either this sees the stop, or the watcher sees the call.
        if self._stop.is_set():
            self.unregister(call)
            call.cancel()
            raise Stopped

    def unregister(self, call: Any) -> None:
        with self._lock:
            self._calls.discard(call)

    def close(self) -> None:
        self._closed.set()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class Transport:
    """One gRPC channel to the server and the protocol's calls over it (PLN-TRN-004)."""

    def __init__(
        self,
        target: str,
        security: Security,
        *,
        stop: threading.Event,
        options: ClientOptions,
        policy: RetryPolicy,
    ) -> None:
        self.target = target
        self.security = security
        self.options = options
        self.policy = policy
        self._stop = stop
        self._watcher = StopWatcher(stop)
        self._channel: grpc.Channel | None = None
        self._send_limit = 0
        self._unary: dict[str, grpc.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._download: grpc.UnaryStreamMultiCallable[Any, DownloadChunk] | None = None

    # --- channel ---------------------------------------------------------------------

    def connect(self, *, send_limit: int) -> None:
        """Open a new channel (closing any previous one) whose messages go up to
        `send_limit` bytes out and the client's declared limit in."""
        self.disconnect()
        opts = channel_options(
            send_limit=send_limit,
            # At least the default before a session exists (PLN-TRN-018, PLN-TRN-019).
            receive_limit=max(self.options.limits.max_message_bytes, DEFAULT_MESSAGE_BYTES),
            options=self.options,
            policy=self.policy,
        )
        credentials = self.security.credentials()
        if credentials is None:
            channel = grpc.insecure_channel(self.target, options=opts)
        else:
            channel = grpc.secure_channel(self.target, credentials, options=opts)
        self._channel = channel
        self._send_limit = send_limit
        self._unary = {
            name: channel.unary_unary(
                method.path,
                request_serializer=_serialize,
                response_deserializer=method.response.FromString,
            )
            for name, method in FEDERATION.items()
        }
        upload = BLOB["UploadBlob"]
        self._unary["UploadBlob"] = channel.unary_unary(
            upload.path,
            request_serializer=upload_chunk_to_bytes,
            response_deserializer=upload.response.FromString,
        )
        self._download = channel.unary_stream(
            BLOB["DownloadBlob"].path,
            request_serializer=_serialize,
            response_deserializer=download_chunk_from_bytes,
        )

    @property
    def connected(self) -> bool:
        return self._channel is not None

    def fit_send_limit(self, send_limit: int) -> None:
        """Reopen the channel when the server's message limit differs from its setting."""
        if self._channel is None or send_limit != self._send_limit:
            self.connect(send_limit=send_limit)

    def disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._unary = {}
        self._download = None

    def close(self) -> None:
        self.disconnect()
        self._watcher.close()

    # --- calls -------------------------------------------------------------------------

    def call(self, method: str, request: Any, *, timeout: float, cancellable: bool = True) -> Any:
        """A unary call with a deadline; raises CallError, or Stopped when stopping."""
        stub = self._unary.get(method)
        if stub is None:
            raise CallError(method, StatusCode.UNAVAILABLE, "not connected", None)
        future = stub.future(request, timeout=timeout)
        if cancellable:
            self._watcher.register(future)
        try:
            return future.result()
        except grpc.FutureCancelledError:
            raise Stopped from None
        except grpc.RpcError as exc:
            if cancellable and self._stop.is_set():
                raise Stopped from None
            raise to_call_error(method, exc) from None
        finally:
            if cancellable:
                self._watcher.unregister(future)

    def upload(self, chunk: UploadChunk, *, timeout: float) -> blob_service_pb2.UploadBlobResponse:
        response: blob_service_pb2.UploadBlobResponse = self.call(
            "UploadBlob", chunk, timeout=timeout
        )
        return response

    def download(
        self, session_id: str, sha256: bytes, offset: int, *, timeout: float
    ) -> Iterator[DownloadChunk]:
        """The chunks of a blob from `offset`; raises CallError when the stream fails."""
        if self._download is None:
            raise CallError("DownloadBlob", StatusCode.UNAVAILABLE, "not connected", None)
        request = blob_service_pb2.DownloadBlobRequest(
            session_id=session_id, sha256=sha256, offset=offset
        )
        stream = self._download(request, timeout=timeout)
        self._watcher.register(stream)
        try:
            yield from stream
        except grpc.RpcError as exc:
            if self._stop.is_set():
                raise Stopped from None
            raise to_call_error("DownloadBlob", exc) from None
        finally:
            self._watcher.unregister(stream)
            stream.cancel()
