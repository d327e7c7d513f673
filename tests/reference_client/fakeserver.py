"""A scripted Pollen server for the client's tests: real gRPC, scripted answers, a record.

Handlers are built from `pollen.services` (no generated gRPC code), like the real ones.
Each call is recorded with its request, the time it arrived and the deadline it carried.
Tests queue tasks, inject failures (typed errors with their trailer, or bare statuses),
break download streams, and wait (bounded) for the calls they expect.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    federation_service_pb2,
    task_pb2,
    version_pb2,
)
from pollen.blob import BlobAssembler, blob_ref
from pollen.client import Client
from pollen.errors import (
    BlobDigestMismatch,
    BlobNotFound,
    PollenError,
    SessionUnknown,
    StatusCode,
)
from pollen.limits import Limits
from pollen.messages import (
    FitInstruction,
    Instruction,
    ReconnectInstruction,
    ShutdownInstruction,
    Task,
    TaskResult,
)
from pollen.services import BLOB, ERROR_TRAILER, FEDERATION, Method
from pollen.tensors import EncodedTensor, decode_tensors, encode_tensor
from pollen.wire import error_to_proto, result_from_proto, task_to_proto
from reference_client import ReferenceClient
from reference_client.backoff import RetryPolicy

#: A retry policy shrunk for tests (it breaks PLN-RTY-007's floor on purpose).
FAST = RetryPolicy(
    initial_delay_s=0.05,
    multiplier=2.0,
    jitter=0.2,
    max_delay_s=0.4,
    attempts_per_call=6,
    tls_failure_attempts=2,
)

_GRPC_STATUS = {code.value[0]: code for code in grpc.StatusCode}
Failure = PollenError | StatusCode


@dataclass(frozen=True, kw_only=True)
class Call:
    """One RPC as the server saw it."""

    method: str
    request: Any
    at: float
    #: Seconds left before the client's deadline when the call arrived (None: no deadline).
    deadline_s: float | None


@dataclass
class _Injected:
    error: Failure
    times: int
    after: int


@dataclass
class Settings:
    """What the fake server's Handshake answers."""

    heartbeat_interval_ms: int = 1000
    max_poll_wait_ms: int = 200
    session_timeout_ms: int = 10_000
    chunk_size_bytes: int = 64 * 1024
    #: Chunk size the downloads really use (0: chunk_size_bytes), to break PLN-BLB-030.
    download_chunk_bytes: int = 0
    max_message_bytes: int = 4 * 1024 * 1024
    version: tuple[int, int] = (1, 0)
    codecs: tuple[str, ...] = ("raw", "zstd")
    features: frozenset[str] = frozenset({"query"})
    agent: str = "fake/0"


@dataclass
class FakeServer:
    settings: Settings = field(default_factory=Settings)
    credentials: grpc.ServerCredentials | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self.calls: list[Call] = []
        self.results: dict[str, TaskResult] = {}
        self.blobs: dict[bytes, bytes] = {}
        #: Digest -> chunks to send before breaking the stream once with UNAVAILABLE.
        self.break_downloads: dict[bytes, int] = {}
        #: What Heartbeat answers in task_active.
        self.task_active = True
        self.session_id = ""
        self._sessions = 0
        self._tasks: deque[task_pb2.Task] = deque()
        self._uploads: dict[bytes, BlobAssembler] = {}
        self._failures: dict[str, deque[_Injected]] = {}
        self._cond = threading.Condition()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.max_receive_message_length", self.settings.max_message_bytes)],
        )
        handlers = {
            "Handshake": self._handshake,
            "PollTask": self._poll,
            "SubmitResult": self._submit,
            "Heartbeat": self._heartbeat,
            "Leave": self._leave,
            "UploadBlob": self._upload,
            "DownloadBlob": self._download,
        }
        for table in (FEDERATION, BLOB):
            service = next(iter(table.values())).service
            self._server.add_generic_rpc_handlers(
                [
                    grpc.method_handlers_generic_handler(
                        service,
                        {name: _handler(m, handlers[name]) for name, m in table.items()},
                    )
                ]
            )
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, self.credentials)
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=None)

    # --- scripting -------------------------------------------------------------------

    def add_task(self, task: Task | task_pb2.Task) -> None:
        msg = task if isinstance(task, task_pb2.Task) else task_to_proto(task)
        with self._cond:
            self._tasks.append(msg)
            self._cond.notify_all()

    def fail(self, method: str, error: Failure, *, times: int = 1, after: int = 0) -> None:
        """Fail `times` calls of `method` with `error`, after letting `after` calls pass."""
        with self._cond:
            self._failures.setdefault(method, deque()).append(_Injected(error, times, after))

    def calls_of(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def wait_for(
        self, predicate: Callable[[list[Call]], bool], *, timeout: float = 10.0
    ) -> list[Call]:
        """The calls so far, once `predicate` holds of them (AssertionError after timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.calls):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [c.method for c in self.calls]
                    raise AssertionError(f"timed out; calls so far: {names}")
                self._cond.wait(left)
            return list(self.calls)

    def wait_calls(self, method: str, count: int = 1, *, timeout: float = 10.0) -> list[Call]:
        self.wait_for(
            lambda calls: sum(c.method == method for c in calls) >= count, timeout=timeout
        )
        return self.calls_of(method)

    def methods(self) -> list[str]:
        with self._cond:
            return [c.method for c in self.calls]

    # --- handlers ------------------------------------------------------------------------

    def _record(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        with self._cond:
            self.calls.append(
                Call(method=method, request=request, at=time.monotonic(), deadline_s=remaining)
            )
            self._cond.notify_all()
            queue = self._failures.get(method)
            injected: _Injected | None = queue[0] if queue else None
            if injected is not None:
                if injected.after > 0:
                    injected.after -= 1
                    injected = None
                else:
                    injected.times -= 1
                    if injected.times <= 0:
                        queue.popleft()  # type: ignore[union-attr]
        if injected is not None:
            abort(context, injected.error)

    def _check_session(self, session_id: str, context: grpc.ServicerContext) -> None:
        if not session_id or session_id != self.session_id:
            abort(context, SessionUnknown("no such session"))

    def _handshake(self, request: Any, context: grpc.ServicerContext) -> Message:
        self._record("Handshake", request, context)
        s = self.settings
        with self._cond:
            self._sessions += 1
            self.session_id = f"session-{self._sessions}"
        caps = request.capabilities
        return federation_service_pb2.HandshakeResponse(
            version=version_pb2.ProtocolVersion(major=s.version[0], minor=s.version[1]),
            session_id=self.session_id,
            capabilities=federation_service_pb2.Capabilities(
                codecs=[c for c in caps.codecs if c in s.codecs],
                dtypes=list(caps.dtypes),
                limits=federation_service_pb2.Limits(max_message_bytes=s.max_message_bytes),
                features=[f for f in caps.features if f in s.features],
            ),
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_wait_ms=s.max_poll_wait_ms,
            session_timeout_ms=s.session_timeout_ms,
            chunk_size_bytes=s.chunk_size_bytes,
            agent=s.agent,
        )

    def _poll(self, request: Any, context: grpc.ServicerContext) -> Message:
        self._record("PollTask", request, context)
        self._check_session(request.session_id, context)
        wait_s = min(request.wait_ms, self.settings.max_poll_wait_ms) / 1000
        deadline = time.monotonic() + wait_s
        with self._cond:
            while not self._tasks:
                left = deadline - time.monotonic()
                if left <= 0 or not context.is_active():
                    return federation_service_pb2.PollTaskResponse()
                self._cond.wait(min(left, 0.05))
            return federation_service_pb2.PollTaskResponse(task=self._tasks.popleft())

    def _submit(self, request: Any, context: grpc.ServicerContext) -> Message:
        self._record("SubmitResult", request, context)
        self._check_session(request.session_id, context)
        result = result_from_proto(request.result, limits=Limits())
        for tensor in _result_tensors(result):
            if tensor.blob is not None and tensor.blob.sha256 not in self.blobs:
                abort(context, BlobNotFound("no such blob"))
        with self._cond:
            duplicate = result.task_id in self.results
            self.results.setdefault(result.task_id, result)
            self._cond.notify_all()
        return federation_service_pb2.SubmitResultResponse(duplicate=duplicate)

    def _heartbeat(self, request: Any, context: grpc.ServicerContext) -> Message:
        self._record("Heartbeat", request, context)
        self._check_session(request.session_id, context)
        return federation_service_pb2.HeartbeatResponse(task_active=self.task_active)

    def _leave(self, request: Any, context: grpc.ServicerContext) -> Message:
        self._record("Leave", request, context)
        with self._cond:
            if request.session_id == self.session_id:
                self.session_id = ""
        return federation_service_pb2.LeaveResponse()

    def _download(self, request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
        self._record("DownloadBlob", request, context)
        self._check_session(request.session_id, context)
        data = self.blobs.get(request.sha256)
        if data is None:
            abort(context, BlobNotFound("no such blob"))
        size = self.settings.download_chunk_bytes or self.settings.chunk_size_bytes
        budget = self.break_downloads.pop(request.sha256, None)
        for sent, start in enumerate(range(request.offset, len(data), size)):
            if budget is not None and sent >= budget:
                abort(context, StatusCode.UNAVAILABLE)
            yield blob_service_pb2.DownloadBlobResponse(
                offset=start, data=data[start : start + size], total_size=len(data)
            )

    def _upload(self, request: Any, context: grpc.ServicerContext) -> Message:
        self._record("UploadBlob", request, context)
        self._check_session(request.session_id, context)
        sha = request.sha256
        if sha in self.blobs:
            return blob_service_pb2.UploadBlobResponse(
                committed_size=len(self.blobs[sha]), complete=True
            )
        with self._cond:
            assembler = self._uploads.setdefault(
                sha, BlobAssembler(sha256=sha, total_size=request.total_size)
            )
            if request.data and request.offset == assembler.committed_size:
                assembler.feed(request.offset, request.data)
            if assembler.complete:
                del self._uploads[sha]
                try:
                    self.blobs[sha] = bytes(assembler.finish())
                except BlobDigestMismatch:
                    abort(context, BlobDigestMismatch("digest mismatch"))
                return blob_service_pb2.UploadBlobResponse(
                    committed_size=request.total_size, complete=True
                )
            return blob_service_pb2.UploadBlobResponse(committed_size=assembler.committed_size)


def _handler(method: Method, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler[Any, Any]:
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=method.request.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=method.request.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


def abort(context: grpc.ServicerContext, error: Failure) -> NoReturn:
    """End the call with a typed error (and its trailer) or a bare status."""
    if isinstance(error, PollenError):
        context.set_trailing_metadata(((ERROR_TRAILER, error_to_proto(error).SerializeToString()),))
        context.abort(_GRPC_STATUS[error.grpc_status.value], error.message)
    context.abort(_GRPC_STATUS[int(error)], "injected failure")


def _result_tensors(result: TaskResult) -> Sequence[EncodedTensor]:
    reply = result.reply
    return tuple(getattr(reply, "parameters", ())) + tuple(getattr(reply, "tensors", ()))


# --- task and result helpers -------------------------------------------------------------


def fit_task(
    task_id: str,
    arrays: Sequence[npt.NDArray[Any]],
    *,
    server: FakeServer | None = None,
    deadline_ms: int = 0,
    config: dict[str, Any] | None = None,
) -> Task:
    """A fit task; with `server`, the payloads travel as blobs the server holds."""
    tensors = []
    for array in arrays:
        tensor = encode_tensor(array)
        if server is not None:
            payload = bytes(tensor.payload)
            ref = blob_ref(payload)
            server.blobs[ref.sha256] = payload
            tensor = EncodedTensor(
                dtype=tensor.dtype, shape=tensor.shape, codec="raw", payload=b"", blob=ref
            )
        tensors.append(tensor)
    return task(
        task_id,
        FitInstruction(parameters=tuple(tensors), config=config or {}),
        deadline_ms=deadline_ms,
    )


def task(task_id: str, instruction: Instruction, *, deadline_ms: int = 0) -> Task:
    return Task(
        task_id=task_id, instruction=instruction, run_id="run-1", round=1, deadline_ms=deadline_ms
    )


def shutdown(task_id: str = "bye") -> Task:
    return task(task_id, ShutdownInstruction(reason="done"))


def reconnect(task_id: str, delay_ms: int) -> Task:
    return task(task_id, ReconnectInstruction(delay_ms=delay_ms))


def result_arrays(server: FakeServer, task_id: str) -> list[npt.NDArray[Any]]:
    """The decoded tensors of a submitted result, with blob payloads fetched."""
    import dataclasses

    tensors = [
        t
        if t.blob is None
        else dataclasses.replace(t, payload=server.blobs[t.blob.sha256], blob=None)
        for t in _result_tensors(server.results[task_id])
    ]
    return [np.asarray(a) for a in decode_tensors(tensors)]


class Running:
    """A reference client running `client` on a thread against a server."""

    def __init__(self, client: Client, address: str, **kwargs: Any) -> None:
        kwargs.setdefault("node_id", "node-1")
        kwargs.setdefault("retry", FAST)
        if not any(k in kwargs for k in ("root_cert", "client_cert")):
            kwargs.setdefault("insecure", True)
        self.stop = threading.Event()
        self.runner = ReferenceClient(client, server=address, stop=self.stop, **kwargs)
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, name="client-under-test", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.status = self.runner.run()

    def join(self, timeout: float = 10.0) -> int:
        """The exit status, once the client returned (AssertionError if it does not)."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the client is still running"
        assert self.status is not None
        return self.status
