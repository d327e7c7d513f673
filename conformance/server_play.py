"""The scripted clients of server mode: raw calls judged as they return, and the
messages they send.

Every reply also passes the rules that hold for all of them (no trailer on success, trailer
size, no client-only codes). Protobuf messages stay in the server-mode modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from conformance.cases import Case
from conformance.client_runner import CaseFailed, Failure, TlsFiles
from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    error_pb2,
    federation_service_pb2,
    task_pb2,
    tensor_pb2,
)
from pollen.errors import ERROR_TABLE, ErrorCode
from pollen.services import ERROR_TRAILER

#: How long the server under test gets to listen, at start and after a restart.
START_TIMEOUT_S = 30.0
#: Slack on the timings judged from this side of the connection.
GRACE_S = 0.5
PB = federation_service_pb2
#: The node ids of the scripted clients; under mutual TLS each has a certificate naming it.
NODES = ("conformance-a", "conformance-b", "conformance-c")
#: The bytes a task id may hold (PLN-TSK-001).
PRINTABLE = set(range(0x21, 0x7F))


def initial_model() -> list[np.ndarray]:
    """Annex C.5's initial model, as the judge knows it."""
    return [np.arange(4, dtype=np.float32), np.arange(20000, dtype=np.float32)]


@dataclass(frozen=True, kw_only=True)
class Reply:
    """The outcome of one call: the response bytes, or the status and typed error."""

    data: bytes | None
    status: grpc.StatusCode
    error: error_pb2.Error | None
    elapsed: float
    #: Size of the pollen-error-bin trailer as sent (0: none), on failures and successes.
    trailer_bytes: int = 0
    #: The gRPC status message of a failed call.
    details: str = ""

    @property
    def code(self) -> str:
        if self.error is None:
            return "none"
        return error_pb2.ErrorCode.Name(self.error.code).removeprefix("ERROR_CODE_")


class Peer:
    """A scripted client: raw calls over one channel, each judged by the scenario.

    Every reply also goes to `seen`, which judges the rules that hold for all of them (no
    trailer on success, trailer size, no client-only codes)."""

    def __init__(
        self,
        address: str,
        seen: Callable[[str, Reply], None],
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.channel = open_channel(address, credentials)
        self.seen = seen

    async def call(self, path: str, request: bytes, *, timeout: float = 10.0) -> Reply:
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(path)
        started = time.monotonic()
        call = method(request, timeout=timeout)
        try:
            data = await call
            trailer = _trailer_bytes(await call.trailing_metadata())
        except grpc.aio.AioRpcError as exc:
            reply = _failed(exc, started)
        else:
            reply = Reply(
                data=data,
                status=grpc.StatusCode.OK,
                error=None,
                elapsed=time.monotonic() - started,
                trailer_bytes=trailer,
            )
        self.seen(path, reply)
        return reply

    async def stream(
        self, path: str, request: bytes, *, timeout: float = 10.0
    ) -> tuple[list[bytes], Reply]:
        method: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self.channel.unary_stream(path)
        started = time.monotonic()
        chunks: list[bytes] = []
        try:
            # A plain loop: a failure after some chunks must keep the ones that came.
            async for data in method(request, timeout=timeout):
                chunks.append(data)  # noqa: PERF401
        except grpc.aio.AioRpcError as exc:
            reply = _failed(exc, started)
        else:
            reply = Reply(
                data=b"", status=grpc.StatusCode.OK, error=None, elapsed=time.monotonic() - started
            )
        self.seen(path, reply)
        return chunks, reply

    async def close(self) -> None:
        await self.channel.close()


def _failed(exc: grpc.aio.AioRpcError, started: float) -> Reply:
    return Reply(
        data=None,
        status=exc.code(),
        error=_trailer(exc.trailing_metadata()),
        elapsed=time.monotonic() - started,
        trailer_bytes=_trailer_bytes(exc.trailing_metadata()),
        details=exc.details() or "",
    )


async def poll_once(
    peer: Peer, session: str, wait_ms: int, *, timeout: float = 15
) -> tuple[Reply, task_pb2.Task | None]:
    """One PollTask: its reply, and the task it carried (None for an empty answer or a failure)."""
    request = PB.PollTaskRequest(session_id=session, wait_ms=wait_ms).SerializeToString()
    reply = await peer.call(fed_rpc("PollTask"), request, timeout=timeout)
    if reply.data is None:
        return reply, None
    response = PB.PollTaskResponse.FromString(reply.data)
    return reply, response.task if response.HasField("task") else None


def open_channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)


def client_credentials(tls: TlsFiles | None, node: str) -> grpc.ChannelCredentials | None:
    """Trust in the harness CA, presenting the client certificate that names `node`."""
    if tls is None:
        return None
    cert, key = tls.clients[node]
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


def _trailer_bytes(metadata: Any) -> int:
    for key, value in metadata or ():
        if key == ERROR_TRAILER and isinstance(value, bytes):
            return max(1, len(value))
    return 0


def _trailer(metadata: Any) -> error_pb2.Error | None:
    for key, value in metadata or ():
        if key == ERROR_TRAILER and isinstance(value, bytes):
            with contextlib.suppress(Exception):
                return error_pb2.Error.FromString(value)
    return None


def fed_rpc(name: str) -> str:
    return f"/pollen.v1.FederationService/{name}"


def blob_rpc(name: str) -> str:
    return f"/pollen.v1.BlobService/{name}"


def hello_request(
    node: str,
    *,
    versions: Sequence[tuple[int, int]] = ((1, 0),),
    codecs: Sequence[str] = ("raw",),
    features: Sequence[str] = (),
) -> bytes:
    request = PB.HandshakeRequest(node_id=node, agent="pollen-conformance-harness")
    for major, minor in versions:
        request.versions.add(major=major, minor=minor)
    request.capabilities.codecs.extend(codecs)
    request.capabilities.dtypes.extend(
        [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT64, tensor_pb2.DTYPE_INT64]
    )
    request.capabilities.features.extend(features)
    return request.SerializeToString()


class Play:
    def __init__(self, case: Case, address: str, tls: TlsFiles | None = None) -> None:
        self.case = case
        self.address = address
        #: Set for the mutual-TLS cases: a peer presents the certificate of its node.
        self.tls = tls
        self.failures: list[Failure] = []
        self.peers: list[Peer] = []
        #: Kills the server and starts it again on the same state folder; False when the
        #: new process does not listen in time.
        self.restart: Callable[[], Awaitable[bool]] | None = None
        #: Sends SIGTERM to the server (an operator's stop), without waiting for it to exit.
        self.terminate: Callable[[], None] | None = None

    def peer(self, node: str = "conformance-a") -> Peer:
        """A new connection; under mutual TLS it presents the certificate naming `node`."""
        peer = Peer(self.address, self.seen, client_credentials(self.tls, node))
        self.peers.append(peer)
        return peer

    def seen(self, path: str, reply: Reply) -> None:
        """Rules every reply of every case follows (02-transport.md, The error trailer)."""
        rpc = path.rpartition("/")[2]
        self.check(
            reply.status != grpc.StatusCode.OK or not reply.trailer_bytes,
            rpc,
            "no pollen-error-bin trailer on a call that ends OK",
            f"a trailer of {reply.trailer_bytes} bytes",
            "PLN-TRN-009",
        )
        self.check(
            reply.code not in ("UNSUPPORTED_INSTRUCTION", "APP_ERROR"),
            rpc,
            "no client-only code in a server's trailer",
            reply.code,
            "PLN-TRN-009",
        )
        self.check(
            reply.trailer_bytes <= 4096,
            rpc,
            "a serialized Error of 4096 bytes at most",
            f"{reply.trailer_bytes} bytes",
            "PLN-TRN-011",
        )

    def check(self, ok: bool, step: str, expected: str, actual: str, requirement: str) -> bool:
        if not ok:
            self.failures.append(
                Failure(step=step, expected=expected, actual=actual, requirement=requirement)
            )
        return ok

    def expect_error(
        self,
        step: str,
        reply: Reply,
        code: ErrorCode,
        requirement: str,
        *,
        field: str = "",
        path: str = "",
    ) -> bool:
        spec = ERROR_TABLE[code]
        want_status = next(
            (s for s in grpc.StatusCode if s.value[0] == int(spec.grpc_status or 13)), None
        )
        if not self.check(
            reply.error is not None and reply.code == code.name,
            step,
            f"a {code.name} error trailer",
            f"status {reply.status.name}, trailer {reply.code}",
            requirement,
        ):
            return False
        assert reply.error is not None
        ok = self.check(
            reply.status == want_status,
            step,
            f"gRPC status {want_status.name if want_status else '?'} for {code.name}",
            reply.status.name,
            "PLN-TRN-008",
        )
        ok &= self.check(
            reply.error.retryable == (spec.retry.name == "YES"),
            step,
            f"Error.retryable {spec.retry.name == 'YES'}",
            str(reply.error.retryable),
            "PLN-ERR-003",
        )
        if field:
            ok &= self.check(
                reply.error.field == field,
                step,
                f"Error.field {field!r}",
                repr(reply.error.field),
                requirement,
            )
        if path:
            # Error.field is a SHOULD (PLN-ERR-009); when it is set it must name the part at
            # fault: the path itself or a part of it.
            got = reply.error.field
            ok &= self.check(
                got in ("", path) or got.startswith((path + ".", path + "[")),
                step,
                f"Error.field empty or naming {path!r}",
                repr(got),
                requirement,
            )
        return ok

    async def pair(self, step: str) -> tuple[tuple[Peer, PB.HandshakeResponse, task_pb2.Task], ...]:
        """Two nodes, a then b, each with its round 1 task (the run starts at the second)."""
        a, b = self.peer(), self.peer("conformance-b")
        ha = await self.handshake(a, "conformance-a", step)
        hb = await self.handshake(b, "conformance-b", step)
        ta, tb = await asyncio.gather(
            self.poll_task(a, ha.session_id, step), self.poll_task(b, hb.session_id, step)
        )
        return (a, ha, ta), (b, hb, tb)

    async def submit(self, peer: Peer, session: str, result: task_pb2.TaskResult) -> Reply:
        request = PB.SubmitResultRequest(session_id=session, result=result)
        return await peer.call(fed_rpc("SubmitResult"), request.SerializeToString())

    def accepted(
        self, reply: Reply, step: str, requirement: str, *, duplicate: bool = False
    ) -> bool:
        got = None
        if reply.data is not None:
            got = PB.SubmitResultResponse.FromString(reply.data).duplicate
        return self.check(
            got is duplicate,
            step,
            f"the result answered OK with duplicate {str(duplicate).lower()}",
            f"{reply.status.name} {reply.code}" if got is None else f"duplicate {got}",
            requirement,
        )

    async def model(self, peer: Peer, session: str, task: task_pb2.Task, step: str) -> list[Any]:
        """The parameters of a fit or evaluate instruction."""
        instruction = task.evaluate if task.HasField("evaluate") else task.fit
        return [await self.fetch(peer, session, t, step) for t in instruction.parameters]

    def kind(self, task: task_pb2.Task, want: str, step: str, requirement: str) -> None:
        """The task holds a `want` instruction, or the case cannot go on."""
        got = task.WhichOneof("instruction")
        if not self.check(got == want, step, f"a {want} instruction", str(got), requirement):
            raise CaseFailed

    def exact(
        self, got: Sequence[Any], want: Sequence[Any], step: str, what: str, rid: str
    ) -> bool:
        same = len(got) == len(want) and all(
            np.asarray(g).tobytes() == np.asarray(w, dtype="<f4").tobytes()
            and np.asarray(g).shape == np.asarray(w).shape
            for g, w in zip(got, want, strict=False)
        )
        return self.check(
            same, step, what, f"{[np.asarray(g).ravel()[:4].tolist() for g in got]}", rid
        )

    async def handshake(
        self, peer: Peer, node: str, step: str, *, features: Sequence[str] = ()
    ) -> PB.HandshakeResponse:
        reply = await peer.call(fed_rpc("Handshake"), hello_request(node, features=features))
        if not self.check(
            reply.data is not None,
            step,
            "a successful Handshake",
            f"{reply.status.name} {reply.code}",
            "PLN-HS-008",
        ):
            raise CaseFailed
        assert reply.data is not None
        return PB.HandshakeResponse.FromString(reply.data)

    async def poll_task(
        self, peer: Peer, session: str, step: str, *, wait_ms: int = 20000
    ) -> task_pb2.Task:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            reply = await peer.call(
                fed_rpc("PollTask"),
                PB.PollTaskRequest(session_id=session, wait_ms=wait_ms).SerializeToString(),
                timeout=wait_ms / 1000 + 10,
            )
            if reply.data is None:
                self.check(
                    False,
                    step,
                    "a PollTask answer",
                    f"{reply.status.name} {reply.code}",
                    "PLN-TSK-005",
                )
                raise CaseFailed
            response = PB.PollTaskResponse.FromString(reply.data)
            if response.HasField("task"):
                return response.task
        self.check(False, step, "a task within 40 s", "none", "PLN-TSK-005")
        raise CaseFailed

    async def fetch(
        self, peer: Peer, session: str, tensor: tensor_pb2.Tensor, step: str
    ) -> np.ndarray:
        if tensor.WhichOneof("payload") == "blob":
            chunks, reply = await peer.stream(
                blob_rpc("DownloadBlob"),
                blob_service_pb2.DownloadBlobRequest(
                    session_id=session, sha256=tensor.blob.sha256
                ).SerializeToString(),
            )
            if not self.check(
                reply.status == grpc.StatusCode.OK,
                step,
                "a complete DownloadBlob stream",
                reply.status.name,
                "PLN-BLB-009",
            ):
                raise CaseFailed
            data = b"".join(
                blob_service_pb2.DownloadBlobResponse.FromString(c).data for c in chunks
            )
            self.check(
                hashlib.sha256(data).digest() == tensor.blob.sha256,
                step,
                "blob bytes matching BlobRef.sha256",
                "other bytes",
                "PLN-BLB-001",
            )
        else:
            data = tensor.inline_data
        self.check(
            tensor.dtype == tensor_pb2.DTYPE_FLOAT32 and tensor.codec in ("", "raw"),
            step,
            "a raw FLOAT32 tensor",
            f"{tensor.dtype} {tensor.codec!r}",
            "PLN-HS-017",
        )
        return np.frombuffer(data, dtype="<f4").reshape(tuple(tensor.shape))

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()


def fit_result(
    task: task_pb2.Task,
    arrays: Sequence[Any],
    examples: int,
    *,
    codec: str = "raw",
    payload: Callable[[int, bytes], bytes] | None = None,
) -> task_pb2.TaskResult:
    """A fit result of `arrays` (FLOAT32 or FLOAT64), each tensor's bytes passed through
    `payload(index, bytes)` when given (to break one of them)."""
    result = task_pb2.TaskResult(task_id=task.task_id)
    result.fit.num_examples = examples
    for i, item in enumerate(arrays):
        array = np.asarray(item)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        result.fit.parameters.add(
            dtype=tensor_pb2.DTYPE_FLOAT64
            if array.dtype == np.float64
            else tensor_pb2.DTYPE_FLOAT32,
            shape=list(array.shape),
            codec=codec if i == 0 else "raw",
            name=f"t{i}",
            inline_data=payload(i, data) if payload else data,
        )
    return result


def plus(step_value: float) -> list[Any]:
    return plus_of(initial_model(), step_value)


def plus_of(model: Sequence[Any], step_value: float) -> list[Any]:
    return [m + np.float32(step_value) for m in model]


async def keep_polling(
    play: Play, peer: Peer, session: str, step: str, until: asyncio.Event
) -> task_pb2.Task | None:
    """Polls (which keeps the session alive) until a task comes or `until` is set."""
    for _ in range(60):
        reply, task = await poll_once(peer, session, 1000)
        if reply.data is None:
            play.check(
                False, step, "a PollTask answer", f"{reply.status.name} {reply.code}", "PLN-TSK-005"
            )
            return None
        if task is not None:
            return task
        if until.is_set():
            return None
    return None


def evaluate_result(task: task_pb2.Task, loss: float, examples: int) -> task_pb2.TaskResult:
    result = task_pb2.TaskResult(task_id=task.task_id)
    result.evaluate.loss = loss
    result.evaluate.num_examples = examples
    return result


def query_result(task: task_pb2.Task, tensors: Sequence[Any], examples: int) -> task_pb2.TaskResult:
    result = task_pb2.TaskResult(task_id=task.task_id)
    result.query.num_examples = examples
    result.query.metrics["count"].int_value = max(examples, 0)
    for i, item in enumerate(tensors):
        array = np.asarray(item, dtype="<f4")
        result.query.tensors.add(
            dtype=tensor_pb2.DTYPE_FLOAT32,
            shape=list(array.shape),
            codec="raw",
            name=f"t{i}",
            inline_data=array.tobytes(),
        )
    return result


async def expect_run_failed(play: Play, peer: Peer, session: str, step: str) -> None:
    """Annex C.5: a missed quorum fails the run; no task of the run comes after it."""
    _, task = await poll_once(peer, session, 1000, timeout=10)
    kind = task.WhichOneof("instruction") if task is not None else None
    play.check(
        kind in (None, "shutdown", "reconnect"),
        step,
        "no task of the failed run (a shutdown instruction, nothing, or no session)",
        str(kind),
        "PLN-RND-021",
    )
