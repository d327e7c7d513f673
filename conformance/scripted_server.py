"""The scripted server of client mode: a FederationService and BlobService that play a case.

The server does what the case's script tells it and records everything it sees, with the
time, as the case's wire transcript. It answers by itself whatever the script leaves open
(empty polls, heartbeats, leaves, blob chunks), so a script only names the moves that
matter. Protobuf messages stay inside this module and the runner beside it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    error_pb2,
    federation_service_pb2,
    task_pb2,
)
from pollen.errors import ERROR_TABLE, ErrorCode
from pollen.services import BLOB, ERROR_TRAILER, FEDERATION

Handler = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]

#: Codecs the harness decodes in results and agrees to; the lossy ones never apply to a
#: result unless a run asks for them (PLN-HS-019), so there is nothing to gain from them.
HARNESS_CODECS = ("raw", "zstd")
HARNESS_FEATURES = ("query",)
#: The calls of which a client may have only one in flight at a time (PLN-GEN-005).
EXCLUSIVE_RPCS = frozenset({"Handshake", "PollTask", "SubmitResult", "Leave"})


@dataclass(frozen=True, kw_only=True)
class Call:
    """One call as the server saw it arrive."""

    rpc: str
    t: float
    #: Seconds left before the call's deadline, None without one.
    left: float | None
    #: PollTask's wait_ms (0 for the others).
    wait_ms: int
    #: The client's end of the connection (gRPC's peer string), one per HTTP/2 connection.
    peer: str


@dataclass(frozen=True, kw_only=True)
class Event:
    """One thing seen or done on the wire, at `t` seconds since the case started."""

    t: float
    direction: str  # "c>s" (a request), "s>c" (an answer), "--" (connection, process)
    rpc: str
    summary: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t_ms": round(self.t * 1000, 1),
            "dir": self.direction,
            "rpc": self.rpc,
            "summary": self.summary,
        }


@dataclass(kw_only=True)
class Fault:
    """Fail the next `times` calls of `rpc` with `status` and, when `code` is set, a trailer."""

    rpc: str
    times: int
    status: grpc.StatusCode
    code: ErrorCode | int | None = None
    retry_after_ms: int = 0
    retryable: bool | None = None
    #: Error.message; empty for the code's meaning (PLN-ERR-005 cases make it mislead).
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Offer:
    """A task to hand out: its id (empty when the bytes hold none) and serialized Task."""

    task_id: str
    data: bytes
    summary: str


@dataclass(kw_only=True)
class Blob:
    data: bytes
    #: Break each download stream that starts below this offset after its first chunk,
    #: this many times, to exercise resumption (PLN-BLB-013).
    break_downloads: int = 0
    #: Serve this many downloads with one byte flipped, so the digest check fails.
    corrupt_downloads: int = 0
    #: Serve this many downloads with total_size one byte above the blob's size
    #: (PLN-BLB-012); the bytes themselves are right.
    wrong_total_downloads: int = 0
    #: Serve this many downloads with a one-byte gap after the first chunk: the next
    #: response's offset skips a byte, and the bytes are those at the announced offsets
    #: (PLN-BLB-012).
    gap_downloads: int = 0


def status_named(name: str) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise ValueError(f"unknown gRPC status {name!r}") from None


def error_trailer(
    code: ErrorCode | int,
    *,
    message: str = "",
    retry_after_ms: int = 0,
    retryable: bool | None = None,
    supported_versions: tuple[tuple[int, int], ...] = (),
) -> bytes:
    """A serialized Error; `code` may be a number outside the table (0, or a future code),
    whose `retryable` is then what the case says (false when it says nothing)."""
    if isinstance(code, ErrorCode):
        spec = ERROR_TABLE[code]
        number, meaning = code.value, spec.meaning
        default_retry = spec.retry.name == "YES"
    else:
        number, meaning, default_retry = code, "a code outside this version's table", False
    error = error_pb2.Error(
        code=number,  # type: ignore[arg-type]
        message=message or meaning,
        retryable=default_retry if retryable is None else retryable,
        retry_after_ms=retry_after_ms,
    )
    for major, minor in supported_versions:
        error.supported_versions.add(major=major, minor=minor)
    return error.SerializeToString()


class ScriptedServer:
    """The harness's server for one case; `start` binds 127.0.0.1 on a free port."""

    def __init__(
        self,
        *,
        handshake: Mapping[str, Any],
        credentials: grpc.ServerCredentials | None,
        clock: Callable[[], float],
    ) -> None:
        self.policy = dict(handshake)
        self.credentials = credentials
        self.clock = clock
        self.port = 0
        self.events: list[Event] = []
        self.changed = asyncio.Condition()
        self.sessions: set[str] = set()
        self.session_count = 0
        self.offered: federation_service_pb2.HandshakeRequest | None = None
        self.negotiated: federation_service_pb2.HandshakeResponse | None = None
        self.queue: collections.deque[Offer] = collections.deque()
        self.open_tasks: set[str] = set()
        self.results: dict[str, list[tuple[float, task_pb2.TaskResult]]] = {}
        self.faults: list[Fault] = []
        self.blobs: dict[bytes, Blob] = {}
        self.uploads: dict[bytes, bytearray] = {}
        self.upload_breaks = 0
        self.upload_corruptions = 0
        #: Every call as it arrived: its deadline, wait and connection.
        self.calls: list[Call] = []
        #: Exclusive calls being handled now, and every overlap seen (PLN-GEN-005).
        self.in_flight: list[tuple[str, grpc.aio.ServicerContext[Any, Any]]] = []
        self.overlaps: list[str] = []
        self._server: grpc.aio.Server | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers([self._handlers()])
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, self.credentials)
        if port == 0:
            raise OSError(f"cannot bind {address}")
        await server.start()
        self.port = port
        self._server = server
        return port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        self.in_flight.clear()

    async def note(self, direction: str, rpc: str, summary: str, **data: Any) -> Event:
        event = Event(t=self.clock(), direction=direction, rpc=rpc, summary=summary, data=data)
        async with self.changed:
            self.events.append(event)
            self.changed.notify_all()
        return event

    async def wait_event(
        self, predicate: Callable[[Event], bool], *, start: int, timeout: float
    ) -> tuple[int, Event] | None:
        """The first event from index `start` on that satisfies `predicate`, or None."""
        deadline = time.monotonic() + timeout
        async with self.changed:
            while True:
                for i in range(start, len(self.events)):
                    if predicate(self.events[i]):
                        return i, self.events[i]
                start = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=left)
                except TimeoutError:
                    return None

    # --- handlers --------------------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        unary = {
            "Handshake": self._handshake,
            "PollTask": self._poll,
            "SubmitResult": self._submit,
            "Heartbeat": self._heartbeat,
            "Leave": self._leave,
        }
        federation: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(self._guard(name, handler))
            for name, handler in unary.items()
        }
        assert set(federation) == set(FEDERATION)
        blob: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "DownloadBlob": grpc.unary_stream_rpc_method_handler(self._download),
            "UploadBlob": grpc.unary_unary_rpc_method_handler(
                self._guard("UploadBlob", self._upload)
            ),
        }
        assert set(blob) == set(BLOB)
        return _Services(
            {
                **{f"/pollen.v1.FederationService/{k}": v for k, v in federation.items()},
                **{f"/pollen.v1.BlobService/{k}": v for k, v in blob.items()},
            }
        )

    def _guard(self, rpc: str, handler: Handler) -> Handler:
        async def call(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            self.calls.append(
                Call(
                    rpc=rpc,
                    t=self.clock(),
                    left=context.time_remaining(),
                    wait_ms=_wait_ms(rpc, raw),
                    peer=context.peer(),
                )
            )
            if rpc not in EXCLUSIVE_RPCS:
                return await self._handle(rpc, handler, raw, context)
            busy = [r for r, c in self.in_flight if not c.cancelled() and not c.done()]
            if busy:
                self.overlaps.append(f"{rpc} at {self.clock():.3f} s while {busy[0]} in flight")
            token = (rpc, context)
            self.in_flight.append(token)
            try:
                return await self._handle(rpc, handler, raw, context)
            finally:
                if token in self.in_flight:
                    self.in_flight.remove(token)

        return call

    async def _handle(
        self, rpc: str, handler: Handler, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        fault = self._take_fault(rpc)
        if fault is not None:
            task_id = ""
            if rpc == "SubmitResult":
                task_id = federation_service_pb2.SubmitResultRequest.FromString(raw).result.task_id
            await self.note("c>s", rpc, f"{rpc} {task_id} (failed by script)", task_id=task_id)
            await self._fail(context, rpc, fault)
        return await handler(raw, context)

    def _take_fault(self, rpc: str) -> Fault | None:
        for fault in self.faults:
            if fault.rpc == rpc and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    async def _fail(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, fault: Fault
    ) -> None:
        metadata: tuple[tuple[str, bytes], ...] = ()
        if fault.code is not None:
            trailer = error_trailer(
                fault.code,
                message=fault.message,
                retry_after_ms=fault.retry_after_ms,
                retryable=fault.retryable,
            )
            metadata = ((ERROR_TRAILER, trailer),)
        if fault.code is None:
            what = "no trailer"
        else:
            what = fault.code.name if isinstance(fault.code, ErrorCode) else f"code {fault.code}"
        await self.note("s>c", rpc, f"status {fault.status.name} ({what})")
        await context.abort(fault.status, f"scripted failure: {what}", trailing_metadata=metadata)

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, code: ErrorCode, **kw: Any
    ) -> None:
        status = ERROR_TABLE[code].grpc_status
        grpc_status = next(s for s in grpc.StatusCode if s.value[0] == int(status or 13))
        await self.note("s>c", rpc, f"status {grpc_status.name} ({code.name})")
        await context.abort(
            grpc_status, code.name, trailing_metadata=((ERROR_TRAILER, error_trailer(code, **kw)),)
        )

    async def _check_session(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, session_id: str
    ) -> None:
        if session_id not in self.sessions:
            await self._abort(context, rpc, ErrorCode.SESSION_UNKNOWN)

    async def _handshake(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = federation_service_pb2.HandshakeRequest.FromString(raw)
        versions = ", ".join(f"{v.major}.{v.minor}" for v in request.versions)
        await self.note(
            "c>s",
            "Handshake",
            f"versions [{versions}] node_id {request.node_id!r} codecs "
            f"{list(request.capabilities.codecs)} features {list(request.capabilities.features)}",
            request=request,
        )
        self.offered = request
        reject = self.policy.get("reject")
        if reject:
            supported = tuple(tuple(v) for v in reject.get("supported_versions", ()))
            await self._abort(
                context,
                "Handshake",
                ErrorCode[reject["code"]],
                supported_versions=supported,
            )
        self.session_count += 1
        session_id = (
            f"conformance-session-{self.session_count}-{hashlib.sha256(raw).hexdigest()[:16]}"
        )
        self.sessions.add(session_id)
        offered = request.capabilities
        codecs = [c for c in offered.codecs if c in self.policy.get("codecs", HARNESS_CODECS)]
        if "raw" not in codecs:
            codecs.insert(0, "raw")
        version = self.policy.get("version", [1, 0])
        limits = self.policy.get("limits", {})
        response = federation_service_pb2.HandshakeResponse(
            version={"major": version[0], "minor": version[1]},
            session_id=session_id,
            capabilities=federation_service_pb2.Capabilities(
                codecs=codecs,
                dtypes=list(offered.dtypes),
                limits=federation_service_pb2.Limits(**limits),
                features=[f for f in offered.features if f in HARNESS_FEATURES]
                + [str(f) for f in self.policy.get("extra_features", ())],
            ),
            heartbeat_interval_ms=int(self.policy.get("heartbeat_interval_ms", 2000)),
            max_poll_wait_ms=int(self.policy.get("max_poll_wait_ms", 2000)),
            session_timeout_ms=int(self.policy.get("session_timeout_ms", 20000)),
            chunk_size_bytes=int(self.policy.get("chunk_size_bytes", 1 << 20)),
            agent="pollen-conformance-harness",
        )
        self.negotiated = response
        data = response.SerializeToString()
        if self.policy.get("unknown_fields"):
            # Field 99 (varint 1) and field 100 (bytes "abc"), numbers no version uses.
            data += b"\x98\x06\x01\xa2\x06\x03abc"
        pad = int(self.policy.get("pad_bytes", 0))
        if pad:
            # An unknown bytes field 101 that brings the response to exactly `pad` bytes
            # more than it had (tag 2 bytes, length 4 bytes): for size limits (PLN-TRN-019).
            body = pad - 6
            if body < 0x200000:
                raise ValueError("pad_bytes must be at least 2 MiB")
            length = bytes([(body >> s) & 0x7F | (0x80 if s < 21 else 0) for s in (0, 7, 14, 21)])
            data += b"\xaa\x06" + length + b"\0" * body
        await self.note(
            "s>c",
            "Handshake",
            f"session {self.session_count}, version {version[0]}.{version[1]}, codecs {codecs}",
        )
        return data

    async def _poll(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = federation_service_pb2.PollTaskRequest.FromString(raw)
        await self.note("c>s", "PollTask", f"wait_ms {request.wait_ms}", request=request)
        await self._check_session(context, "PollTask", request.session_id)
        cap = self.negotiated.max_poll_wait_ms if self.negotiated else 2000
        deadline = time.monotonic() + min(request.wait_ms, cap) / 1000
        async with self.changed:
            while not self.queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=left)
                except TimeoutError:
                    break
            item = self.queue.popleft() if self.queue else None
        if item is None:
            await self.note("s>c", "PollTask", "no task")
            return b""
        if item.task_id:
            self.open_tasks.add(item.task_id)
        await self.note("s>c", "PollTask", item.summary, task_id=item.task_id)
        return _poll_response_bytes(item.data)

    async def _submit(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = federation_service_pb2.SubmitResultRequest.FromString(raw)
        result = request.result
        await self.note(
            "c>s",
            "SubmitResult",
            f"task {result.task_id}: {result_summary(result)}",
            request=request,
            task_id=result.task_id,
            raw=raw,
        )
        await self._check_session(context, "SubmitResult", request.session_id)
        seen = self.results.setdefault(result.task_id, [])
        seen.append((self.clock(), result))
        self.open_tasks.discard(result.task_id)
        duplicate = len(seen) > 1
        await self.note("s>c", "SubmitResult", "duplicate" if duplicate else "accepted")
        return federation_service_pb2.SubmitResultResponse(duplicate=duplicate).SerializeToString()

    async def _heartbeat(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = federation_service_pb2.HeartbeatRequest.FromString(raw)
        await self.note("c>s", "Heartbeat", f"task {request.task_id}", request=request)
        await self._check_session(context, "Heartbeat", request.session_id)
        active = request.task_id in self.open_tasks
        return federation_service_pb2.HeartbeatResponse(task_active=active).SerializeToString()

    async def _leave(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = federation_service_pb2.LeaveRequest.FromString(raw)
        reason = federation_service_pb2.LeaveReason.Name(request.reason)
        await self.note("c>s", "Leave", reason, reason=reason, session_id=request.session_id)
        self.sessions.discard(request.session_id)
        return b""

    async def _download(
        self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:  # an async generator of serialized responses
        request = blob_service_pb2.DownloadBlobRequest.FromString(raw)
        await self.note("c>s", "DownloadBlob", f"offset {request.offset}", offset=request.offset)
        await self._check_session(context, "DownloadBlob", request.session_id)
        blob = self.blobs.get(request.sha256)
        if blob is None:
            await self._abort(context, "DownloadBlob", ErrorCode.BLOB_NOT_FOUND)
            return
        chunk = self.negotiated.chunk_size_bytes if self.negotiated else 1 << 20
        offset = request.offset
        sent = 0
        content = blob.data
        if blob.corrupt_downloads > 0 and content:
            blob.corrupt_downloads -= 1
            content = bytes([content[0] ^ 0xFF]) + content[1:]
            await self.note("s>c", "DownloadBlob", "serving corrupted bytes (script)")
        total = len(blob.data)
        gap = False
        if blob.wrong_total_downloads > 0:
            blob.wrong_total_downloads -= 1
            total += 1
            await self.note("s>c", "DownloadBlob", "serving a wrong total_size (script)")
        elif blob.gap_downloads > 0 and offset + chunk + 1 < len(blob.data):
            blob.gap_downloads -= 1
            gap = True
            await self.note("s>c", "DownloadBlob", "serving a stream with a gap (script)")
        while offset < len(blob.data) or sent == 0:
            data = content[offset : offset + chunk]
            yield blob_service_pb2.DownloadBlobResponse(
                offset=offset, data=data, total_size=total
            ).SerializeToString()
            offset += len(data) + (1 if gap and sent == 0 else 0)
            sent += 1
            if blob.break_downloads > 0 and offset < len(blob.data):
                blob.break_downloads -= 1
                await self.note("s>c", "DownloadBlob", f"stream broken at {offset} (script)")
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted stream break")
        await self.note("s>c", "DownloadBlob", f"complete at {offset}")

    async def _upload(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = blob_service_pb2.UploadBlobRequest.FromString(raw)
        await self.note(
            "c>s",
            "UploadBlob",
            f"offset {request.offset} data {len(request.data)} B of {request.total_size}",
            offset=request.offset,
            size=len(request.data),
        )
        await self._check_session(context, "UploadBlob", request.session_id)
        if request.sha256 in self.blobs:
            size = len(self.blobs[request.sha256].data)
            return blob_service_pb2.UploadBlobResponse(
                committed_size=size, complete=True
            ).SerializeToString()
        held = self.uploads.setdefault(request.sha256, bytearray())
        if request.offset == len(held) and request.data:
            data = request.data
            if self.upload_corruptions > 0:
                # As if the bytes were damaged on the way: the final digest check fails.
                self.upload_corruptions -= 1
                data = bytes([data[0] ^ 0xFF]) + data[1:]
                await self.note("s>c", "UploadBlob", "chunk damaged on arrival (script)")
            held.extend(data)
            if self.upload_breaks > 0 and len(held) < request.total_size:
                # The chunk is kept but its answer is lost: the client must ask where to go on.
                self.upload_breaks -= 1
                await self.note("s>c", "UploadBlob", f"answer lost at {len(held)} (script)")
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted upload break")
        complete = False
        if len(held) >= request.total_size:
            if hashlib.sha256(held).digest() == request.sha256:
                self.blobs[request.sha256] = Blob(data=bytes(held))
                complete = True
            else:
                held.clear()
                await self._abort(context, "UploadBlob", ErrorCode.BLOB_DIGEST_MISMATCH)
        return blob_service_pb2.UploadBlobResponse(
            committed_size=len(held), complete=complete
        ).SerializeToString()

    # --- what the script calls -------------------------------------------------------------

    async def offer(self, item: Offer) -> None:
        async with self.changed:
            self.queue.append(item)
            self.changed.notify_all()

    def forget_sessions(self) -> None:
        self.sessions.clear()


def _wait_ms(rpc: str, raw: bytes) -> int:
    if rpc != "PollTask":
        return 0
    return federation_service_pb2.PollTaskRequest.FromString(raw).wait_ms


class _Services(grpc.GenericRpcHandler):
    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._handlers = dict(handlers)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)


def _poll_response_bytes(task: bytes) -> bytes:
    # PollTaskResponse.task is field 1 (length-delimited); built by hand so that the task
    # bytes reach the client exactly as the case wrote them.
    length = len(task)
    prefix = bytearray([0x0A])
    while True:
        byte = length & 0x7F
        length >>= 7
        prefix.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes(prefix) + task


def task_summary(task: task_pb2.Task) -> str:
    kind = task.WhichOneof("instruction") or "none"
    body = getattr(task, kind) if kind != "none" else None
    parts = [kind]
    if body is not None and hasattr(body, "parameters"):
        parts.append(f"{len(body.parameters)} tensors")
    if body is not None and hasattr(body, "config"):
        parts.append(f"config {sorted(body.config)}")
    if task.deadline_ms:
        parts.append(f"deadline {task.deadline_ms} ms")
    return ", ".join(parts)


def result_summary(result: task_pb2.TaskResult) -> str:
    outcome = result.WhichOneof("outcome") or "none"
    if outcome == "failure":
        code = error_pb2.ErrorCode.Name(result.failure.code)
        return f"failure {code}: {result.failure.message[:120]}"
    body = getattr(result, outcome) if outcome != "none" else None
    parts = [outcome]
    for name in ("parameters", "tensors"):
        if body is not None and hasattr(body, name):
            tensors = getattr(body, name)
            blobs = sum(1 for t in tensors if t.WhichOneof("payload") == "blob")
            parts.append(f"{len(tensors)} tensors" + (f" ({blobs} as blobs)" if blobs else ""))
    if body is not None and hasattr(body, "num_examples"):
        parts.append(f"num_examples {body.num_examples}")
    if body is not None and hasattr(body, "loss"):
        parts.append(f"loss {body.loss!r}")
    return ", ".join(parts)
