"""Server mode: scripted clients against a server under test (spec Annex C.5).

For every case the runner starts a fresh process of the server command with Annex C.5's
environment (a free port on 127.0.0.1 and an empty state folder), waits until it accepts
connections, and plays the case's scenarios as one or more clients. The scenarios are the
Python functions of this module, named by the cases' steps; the judge is the same: what the
server answers, with which typed error, and when. Protobuf messages stay in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import signal
import socket
import ssl
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from conformance.cases import Case
from conformance.client_runner import CaseFailed, CaseResult, Failure, TlsFiles
from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    error_pb2,
    federation_service_pb2,
    task_pb2,
    tensor_pb2,
)
from pollen.errors import ERROR_TABLE, ErrorCode
from pollen.limits import Limits
from pollen.services import ERROR_TRAILER
from pollen.state import TASK

START_TIMEOUT_S = 30.0
GRACE_S = 0.5
PB = federation_service_pb2
_PRINTABLE = set(range(0x21, 0x7F))


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


class _Peer:
    """A scripted client: raw calls over one channel, each judged by the scenario.

    Every reply also goes to `seen`, which judges the rules that hold for all of them (no
    trailer on success, trailer size, no client-only codes)."""

    def __init__(
        self,
        address: str,
        seen: Callable[[str, Reply], None],
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.channel = _channel(address, credentials)
        self.seen = seen

    async def call(self, path: str, request: bytes, *, timeout: float = 10.0) -> Reply:
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(path)
        started = time.monotonic()
        call = method(request, timeout=timeout)
        try:
            data = await call
            trailer = _trailer_bytes(await call.trailing_metadata())
        except grpc.aio.AioRpcError as exc:
            reply = Reply(
                data=None,
                status=exc.code(),
                error=_trailer(exc.trailing_metadata()),
                elapsed=time.monotonic() - started,
                trailer_bytes=_trailer_bytes(exc.trailing_metadata()),
                details=exc.details() or "",
            )
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
            reply = Reply(
                data=None,
                status=exc.code(),
                error=_trailer(exc.trailing_metadata()),
                elapsed=time.monotonic() - started,
                trailer_bytes=_trailer_bytes(exc.trailing_metadata()),
            )
        else:
            reply = Reply(
                data=b"", status=grpc.StatusCode.OK, error=None, elapsed=time.monotonic() - started
            )
        self.seen(path, reply)
        return chunks, reply

    async def close(self) -> None:
        await self.channel.close()


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)


def _client_credentials(tls: TlsFiles | None, node: str) -> grpc.ChannelCredentials | None:
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


def _fed(name: str) -> str:
    return f"/pollen.v1.FederationService/{name}"


def _blob(name: str) -> str:
    return f"/pollen.v1.BlobService/{name}"


def _hello(
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


class _Play:
    def __init__(self, case: Case, address: str, tls: TlsFiles | None = None) -> None:
        self.case = case
        self.address = address
        #: Set for the mutual-TLS cases: a peer presents the certificate of its node.
        self.tls = tls
        self.failures: list[Failure] = []
        self.peers: list[_Peer] = []
        #: Kills the server and starts it again on the same state folder; False when the
        #: new process does not listen in time.
        self.restart: Callable[[], Awaitable[bool]] | None = None
        #: Sends SIGTERM to the server (an operator's stop), without waiting for it to exit.
        self.terminate: Callable[[], None] | None = None

    def peer(self, node: str = "conformance-a") -> _Peer:
        """A new connection; under mutual TLS it presents the certificate naming `node`."""
        peer = _Peer(self.address, self.seen, _client_credentials(self.tls, node))
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

    async def pair(
        self, step: str
    ) -> tuple[tuple[_Peer, PB.HandshakeResponse, task_pb2.Task], ...]:
        """Two nodes, a then b, each with its round 1 task (the run starts at the second)."""
        a, b = self.peer(), self.peer("conformance-b")
        ha = await self.handshake(a, "conformance-a", step)
        hb = await self.handshake(b, "conformance-b", step)
        ta, tb = await asyncio.gather(
            self.poll_task(a, ha.session_id, step), self.poll_task(b, hb.session_id, step)
        )
        return (a, ha, ta), (b, hb, tb)

    async def submit(self, peer: _Peer, session: str, result: task_pb2.TaskResult) -> Reply:
        request = PB.SubmitResultRequest(session_id=session, result=result)
        return await peer.call(_fed("SubmitResult"), request.SerializeToString())

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

    async def model(self, peer: _Peer, session: str, task: task_pb2.Task, step: str) -> list[Any]:
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
        self, peer: _Peer, node: str, step: str, *, features: Sequence[str] = ()
    ) -> PB.HandshakeResponse:
        reply = await peer.call(_fed("Handshake"), _hello(node, features=features))
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
        self, peer: _Peer, session: str, step: str, *, wait_ms: int = 20000
    ) -> task_pb2.Task:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            reply = await peer.call(
                _fed("PollTask"),
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
        self, peer: _Peer, session: str, tensor: tensor_pb2.Tensor, step: str
    ) -> np.ndarray:
        if tensor.WhichOneof("payload") == "blob":
            chunks, reply = await peer.stream(
                _blob("DownloadBlob"),
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


# --- scenarios -------------------------------------------------------------------------------


async def handshake_negotiation(play: _Play, step: str) -> None:
    peer = play.peer()
    request = _hello(
        "conformance-a",
        versions=((1, 0), (7, 3)),
        codecs=("x-future", "raw", "zstd"),
        features=("x-unknown",),
    )
    reply = await peer.call(_fed("Handshake"), request)
    if not play.check(
        reply.data is not None,
        step,
        "a successful Handshake (unknown codecs, majors and features ignored)",
        f"{reply.status.name} {reply.code}",
        "PLN-HS-013",
    ):
        return
    assert reply.data is not None
    response = PB.HandshakeResponse.FromString(reply.data)
    play.check(
        (response.version.major, response.version.minor) == (1, 0),
        step,
        "version 1.0",
        f"{response.version.major}.{response.version.minor}",
        "PLN-HS-008",
    )
    codecs = list(response.capabilities.codecs)
    play.check(
        "raw" in codecs
        and set(codecs) <= {"raw", "zstd"}
        and codecs == [c for c in ("raw", "zstd") if c in codecs],
        step,
        "codecs holding raw, within the offer, in the client's order",
        str(codecs),
        "PLN-HS-014",
    )
    offered = {tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT64, tensor_pb2.DTYPE_INT64}
    play.check(
        set(response.capabilities.dtypes) <= offered,
        step,
        "dtypes within the offer",
        str(list(response.capabilities.dtypes)),
        "PLN-HS-015",
    )
    play.check(
        not response.capabilities.features,
        step,
        "no feature (the only one offered is unknown to every server)",
        str(list(response.capabilities.features)),
        "PLN-HS-015",
    )
    values = (
        response.heartbeat_interval_ms,
        response.max_poll_wait_ms,
        response.session_timeout_ms,
        response.chunk_size_bytes,
    )
    play.check(
        all(v > 0 for v in values),
        step,
        "heartbeat, poll wait, session timeout and chunk size above 0",
        str(values),
        "PLN-HS-022",
    )
    play.check(
        response.session_timeout_ms > response.heartbeat_interval_ms,
        step,
        "session_timeout_ms above heartbeat_interval_ms",
        str(values[:3]),
        "PLN-HS-023",
    )
    server_limit = response.capabilities.limits.max_message_bytes or 4 * 1024 * 1024
    play.check(
        response.chunk_size_bytes + 1024 <= min(server_limit, 4 * 1024 * 1024),
        step,
        "chunk_size_bytes + 1024 within both message limits",
        str(response.chunk_size_bytes),
        "PLN-HS-024",
    )
    session = response.session_id.encode()
    play.check(
        1 <= len(session) <= 128 and set(session) <= _PRINTABLE,
        step,
        "a session_id of 1 to 128 printable ASCII bytes",
        repr(response.session_id[:40]),
        "PLN-SES-001",
    )
    play.check(
        len(session) >= 16,
        step,
        "a session_id long enough to hold 128 random bits",
        f"{len(session)} bytes",
        "PLN-SEC-010",
    )


async def handshake_errors(play: _Play, step: str) -> None:
    peer = play.peer()
    reply = await peer.call(_fed("Handshake"), _hello("conformance-a", versions=((2, 0),)))
    if play.expect_error(step, reply, ErrorCode.VERSION_UNSUPPORTED, "PLN-HS-009"):
        assert reply.error is not None
        majors = {(v.major, v.minor) for v in reply.error.supported_versions}
        play.check(
            (1, 0) in majors,
            step,
            "supported_versions listing 1.0",
            str(sorted(majors)),
            "PLN-ERR-007",
        )
    checks: list[tuple[bytes, ErrorCode, str, str]] = [
        (_hello("bad node id!", versions=()), ErrorCode.INVALID_ARGUMENT, "", "PLN-HS-033"),
        (
            _hello("bad node id!", versions=((2, 0),)),
            ErrorCode.VERSION_UNSUPPORTED,
            "",
            "PLN-HS-033",
        ),
        (_hello("bad node id!"), ErrorCode.INVALID_ARGUMENT, "node_id", "PLN-HS-027"),
        (
            _hello(
                "",
            ),
            ErrorCode.INVALID_ARGUMENT,
            "node_id",
            "PLN-HS-027",
        ),
        (
            _hello("conformance-a", codecs=("zstd",)),
            ErrorCode.CAPABILITY_MISMATCH,
            "",
            "PLN-HS-033",
        ),
    ]
    for request, code, field, requirement in checks:
        play.expect_error(
            step, await peer.call(_fed("Handshake"), request), code, requirement, field=field
        )
    garbage = await peer.call(_fed("Handshake"), b"\xff\xff\xff")
    play.expect_error(step, garbage, ErrorCode.INVALID_ARGUMENT, "PLN-TRN-007")


async def sessions(play: _Play, step: str) -> None:
    peer = play.peer()
    poll = PB.PollTaskRequest(session_id="no-such-session", wait_ms=0).SerializeToString()
    play.expect_error(
        step, await peer.call(_fed("PollTask"), poll), ErrorCode.SESSION_UNKNOWN, "PLN-SES-003"
    )
    beat = PB.HeartbeatRequest(session_id="no-such-session", task_id="t").SerializeToString()
    play.expect_error(
        step, await peer.call(_fed("Heartbeat"), beat), ErrorCode.SESSION_UNKNOWN, "PLN-SES-003"
    )
    leave = await peer.call(
        _fed("Leave"), PB.LeaveRequest(session_id="no-such-session").SerializeToString()
    )
    play.check(
        leave.status == grpc.StatusCode.OK,
        step,
        "Leave of an unknown session succeeds",
        leave.status.name,
        "PLN-SES-022",
    )
    first = await play.handshake(peer, "conformance-a", step)
    second = await play.handshake(peer, "conformance-a", step)
    old = PB.PollTaskRequest(session_id=first.session_id, wait_ms=0).SerializeToString()
    play.expect_error(
        step, await peer.call(_fed("PollTask"), old), ErrorCode.SESSION_UNKNOWN, "PLN-HS-030"
    )
    new = await peer.call(
        _fed("PollTask"),
        PB.PollTaskRequest(session_id=second.session_id, wait_ms=0).SerializeToString(),
    )
    play.check(
        new.status == grpc.StatusCode.OK,
        step,
        "the new session polls",
        new.status.name,
        "PLN-HS-030",
    )
    odd = PB.LeaveRequest(session_id=second.session_id)
    raw = odd.SerializeToString() + b"\x10\x63"  # reason = 99, a value no version defines
    reply = await peer.call(_fed("Leave"), raw)
    play.check(
        reply.status == grpc.StatusCode.OK,
        step,
        "Leave with an unknown reason succeeds",
        reply.status.name,
        "PLN-SES-023",
    )
    after = PB.PollTaskRequest(session_id=second.session_id, wait_ms=0).SerializeToString()
    play.expect_error(
        step, await peer.call(_fed("PollTask"), after), ErrorCode.SESSION_UNKNOWN, "PLN-SES-021"
    )


async def long_poll(play: _Play, step: str) -> None:
    peer = play.peer()
    response = await play.handshake(peer, "conformance-a", step)
    cap = response.max_poll_wait_ms / 1000
    for wait_ms in (600, 10**9):
        wait = min(wait_ms / 1000, cap)
        reply = await peer.call(
            _fed("PollTask"),
            PB.PollTaskRequest(session_id=response.session_id, wait_ms=wait_ms).SerializeToString(),
            timeout=wait + 10,
        )
        if not play.check(
            reply.data is not None,
            step,
            f"an answer to PollTask(wait_ms={wait_ms})",
            f"{reply.status.name} {reply.code}",
            "PLN-TSK-008",
        ):
            continue
        assert reply.data is not None
        empty = not PB.PollTaskResponse.FromString(reply.data).HasField("task")
        play.check(
            empty, step, "no task while the run waits for a second client", "a task", "PLN-TSK-005"
        )
        play.check(
            reply.elapsed >= wait - 0.05,
            step,
            f"no empty answer before {wait:.2f} s",
            f"{reply.elapsed:.3f} s",
            "PLN-TSK-007",
        )
        play.check(
            reply.elapsed <= wait + GRACE_S,
            step,
            f"an empty answer within {wait:.2f} s",
            f"{reply.elapsed:.3f} s",
            "PLN-TSK-006",
        )


async def training(play: _Play, step: str) -> None:
    a, b = play.peer(), play.peer()
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    sb = (await play.handshake(b, "conformance-b", step)).session_id
    task_a, task_b = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
    for task in (task_a, task_b):
        tid = task.task_id.encode()
        play.check(
            1 <= len(tid) <= 128 and set(tid) <= _PRINTABLE,
            step,
            "a task_id of 1 to 128 printable bytes",
            repr(task.task_id),
            "PLN-TSK-001",
        )
        play.check(
            task.WhichOneof("instruction") == "fit",
            step,
            "a fit instruction",
            str(task.WhichOneof("instruction")),
            "PLN-TSK-003",
        )
        play.check(task.round == 1, step, "round 1", str(task.round), "PLN-RND-004")
    play.check(
        task_a.task_id != task_b.task_id, step, "distinct task ids", task_a.task_id, "PLN-TSK-002"
    )
    again = await play.poll_task(a, sa, step)
    play.check(
        again.SerializeToString(deterministic=True) == task_a.SerializeToString(deterministic=True)
        or (again.task_id == task_a.task_id and again.fit == task_a.fit),
        step,
        "the same open task handed out again",
        again.task_id,
        "PLN-TSK-011",
    )
    model = initial_model()
    for peer, session, task in ((a, sa, task_a), (b, sb, task_b)):
        got = [await play.fetch(peer, session, t, step) for t in task.fit.parameters]
        play.check(
            len(got) == len(model)
            and all(np.array_equal(g, m) for g, m in zip(got, model, strict=False)),
            step,
            "the initial model of Annex C.5",
            f"{len(got)} tensors",
            "PLN-BLB-009",
        )
    # Checks that leave the tasks open: unknown and foreign task ids, an unset outcome.
    unknown = PB.SubmitResultRequest(
        session_id=sa,
        result=task_pb2.TaskResult(
            task_id="no-such-task", failure=error_pb2.Error(code=error_pb2.ERROR_CODE_APP_ERROR)
        ),
    )
    play.expect_error(
        step,
        await a.call(_fed("SubmitResult"), unknown.SerializeToString()),
        ErrorCode.TASK_UNKNOWN,
        "PLN-TSK-028",
    )
    unset = PB.SubmitResultRequest(
        session_id=sa, result=task_pb2.TaskResult(task_id=task_a.task_id)
    )
    play.expect_error(
        step,
        await a.call(_fed("SubmitResult"), unset.SerializeToString()),
        ErrorCode.INVALID_ARGUMENT,
        "PLN-TSK-028",
    )
    foreign = PB.SubmitResultRequest(
        session_id=sa,
        result=task_pb2.TaskResult(
            task_id=task_b.task_id, failure=error_pb2.Error(code=error_pb2.ERROR_CODE_APP_ERROR)
        ),
    )
    play.expect_error(
        step,
        await a.call(_fed("SubmitResult"), foreign.SerializeToString()),
        ErrorCode.TASK_NOT_ASSIGNED,
        "PLN-TSK-028",
    )
    # The results: a + 1 with 1 example, b + 3 with 3 examples; FedAvg gives x + 2.5.
    for peer, session, task, step_value, examples in (
        (a, sa, task_a, 1.0, 1),
        (b, sb, task_b, 3.0, 3),
    ):
        result = task_pb2.TaskResult(task_id=task.task_id)
        result.fit.num_examples = examples
        for i, array in enumerate(model):
            result.fit.parameters.add(
                dtype=tensor_pb2.DTYPE_FLOAT32,
                shape=list(array.shape),
                codec="raw",
                name=f"t{i}",
                inline_data=(array + np.float32(step_value)).astype("<f4").tobytes(),
            )
        request = PB.SubmitResultRequest(session_id=session, result=result).SerializeToString()
        first = await peer.call(_fed("SubmitResult"), request)
        ok = play.check(
            first.data is not None and not PB.SubmitResultResponse.FromString(first.data).duplicate,
            step,
            "the result accepted (duplicate false)",
            f"{first.status.name} {first.code}",
            "PLN-TSK-028",
        )
        if ok:
            second = await peer.call(_fed("SubmitResult"), request)
            play.check(
                second.data is not None,
                step,
                "a resubmitted result answered OK",
                f"{second.status.name} {second.code}",
                "PLN-TSK-030",
            )
    next_a = await play.poll_task(a, sa, step)
    play.check(
        next_a.round == 2,
        step,
        "a round 2 task after both results",
        str(next_a.round),
        "PLN-RND-008",
    )
    got = [await play.fetch(a, sa, t, step) for t in next_a.fit.parameters]
    want = [m + np.float32(2.5) for m in model]
    exact = len(got) == len(want) and all(
        g.tobytes() == w.astype("<f4").tobytes() for g, w in zip(got, want, strict=False)
    )
    play.check(
        exact,
        step,
        "round 2 parameters = weighted FedAvg of round 1, exactly (x + 2.5)",
        f"{[g[:4].tolist() for g in got]}",
        "PLN-RND-008",
    )


async def heartbeats(play: _Play, step: str) -> None:
    a, b = play.peer(), play.peer()
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    sb = (await play.handshake(b, "conformance-b", step)).session_id
    task_a, task_b = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
    for task_id, want, what in (
        (task_a.task_id, True, "its own open task"),
        (task_b.task_id, False, "another node's task"),
        ("", False, "an empty task_id"),
        ("no-such-task", False, "an unknown task_id"),
    ):
        request = PB.HeartbeatRequest(session_id=sa, task_id=task_id).SerializeToString()
        reply = await a.call(_fed("Heartbeat"), request)
        got = (
            None if reply.data is None else PB.HeartbeatResponse.FromString(reply.data).task_active
        )
        play.check(
            got is want,
            step,
            f"task_active {want} for {what}",
            f"{reply.status.name}, task_active {got}",
            "PLN-SES-010",
        )


async def blobs(play: _Play, step: str) -> None:
    a, b = play.peer(), play.peer()
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    response = await play.handshake(b, "conformance-b", step)
    sb = response.session_id
    task = await play.poll_task(a, sa, step)
    await play.poll_task(b, sb, step)
    blob_refs = [t.blob for t in task.fit.parameters if t.WhichOneof("payload") == "blob"]
    if not play.check(
        bool(blob_refs), step, "the 80000-byte tensor sent as a blob", "all inline", "PLN-BLB-003"
    ):
        return
    ref = blob_refs[0]
    chunk = response.chunk_size_bytes

    async def download(offset: int) -> tuple[list[blob_service_pb2.DownloadBlobResponse], Reply]:
        raw, reply = await a.stream(
            _blob("DownloadBlob"),
            blob_service_pb2.DownloadBlobRequest(
                session_id=sa, sha256=ref.sha256, offset=offset
            ).SerializeToString(),
        )
        return [blob_service_pb2.DownloadBlobResponse.FromString(r) for r in raw], reply

    for offset in (0, ref.size // 3):
        parts, reply = await download(offset)
        position = offset
        ok = reply.status == grpc.StatusCode.OK
        for part in parts:
            ok &= (
                part.offset == position
                and part.total_size == ref.size
                and 1 <= len(part.data) <= chunk
            )
            position += len(part.data)
        play.check(
            ok and position == ref.size,
            step,
            f"a gapless stream from {offset} to {ref.size}",
            f"{reply.status.name}, ended at {position}",
            "PLN-BLB-007",
        )
    parts, reply = await download(ref.size)
    play.check(
        reply.status == grpc.StatusCode.OK and len(parts) == 1 and not parts[0].data,
        step,
        "one empty response at offset = size",
        f"{len(parts)} responses",
        "PLN-BLB-008",
    )
    _, reply = await download(ref.size + 1)
    play.expect_error(step, reply, ErrorCode.INVALID_ARGUMENT, "PLN-BLB-006")
    _, reply = await a.stream(
        _blob("DownloadBlob"),
        blob_service_pb2.DownloadBlobRequest(
            session_id=sa, sha256=b"\x01" * 32
        ).SerializeToString(),
    )
    play.expect_error(step, reply, ErrorCode.BLOB_NOT_FOUND, "PLN-BLB-006")
    # Uploads: a status query, an out-of-order chunk, the rest, a completed blob again.
    data = bytes(range(256)) * 64
    digest = hashlib.sha256(data).digest()
    size = min(chunk, 4096)

    async def upload(offset: int, body: bytes, sha: bytes = digest) -> Reply:
        request = blob_service_pb2.UploadBlobRequest(
            session_id=sa, sha256=sha, total_size=len(data), offset=offset, data=body
        )
        return await a.call(_blob("UploadBlob"), request.SerializeToString())

    def committed(reply: Reply) -> tuple[int, bool] | None:
        if reply.data is None:
            return None
        message = blob_service_pb2.UploadBlobResponse.FromString(reply.data)
        return message.committed_size, message.complete

    play.check(
        committed(await upload(0, b"")) == (0, False),
        step,
        "a status query answers committed 0",
        "other",
        "PLN-BLB-018",
    )
    play.check(
        committed(await upload(size, data[size : 2 * size])) == (0, False),
        step,
        "a chunk past the committed size not written",
        "written",
        "PLN-BLB-018",
    )
    last: tuple[int, bool] | None = None
    for start in range(0, len(data), size):
        last = committed(await upload(start, data[start : start + size]))
    play.check(
        last == (len(data), True),
        step,
        "the upload complete at its total size",
        str(last),
        "PLN-BLB-019",
    )
    play.check(
        committed(await upload(0, data[:size])) == (len(data), True),
        step,
        "a complete blob answered complete without writing",
        "other",
        "PLN-BLB-017",
    )
    wrong = hashlib.sha256(b"other").digest()
    for start in range(0, len(data), size):
        reply = await upload(start, data[start : start + size], wrong)
    play.expect_error(step, reply, ErrorCode.BLOB_DIGEST_MISMATCH, "PLN-BLB-019")


# --- results, deadlines, dropouts --------------------------------------------------------------


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


async def _keep_polling(
    play: _Play, peer: _Peer, session: str, step: str, until: asyncio.Event
) -> task_pb2.Task | None:
    """Polls (which keeps the session alive) until a task comes or `until` is set."""
    for _ in range(60):
        reply = await peer.call(
            _fed("PollTask"),
            PB.PollTaskRequest(session_id=session, wait_ms=1000).SerializeToString(),
            timeout=15,
        )
        if reply.data is None:
            play.check(
                False, step, "a PollTask answer", f"{reply.status.name} {reply.code}", "PLN-TSK-005"
            )
            return None
        response = PB.PollTaskResponse.FromString(reply.data)
        if response.HasField("task"):
            return response.task
        if until.is_set():
            return None
    return None


async def resubmits(play: _Play, step: str) -> None:
    """Idempotent resubmits: the first result that closes a task is the one that counts."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    first = fit_result(ta, plus(1), 1)
    play.accepted(await play.submit(a, sa, first), step, "PLN-TSK-028")
    play.accepted(await play.submit(a, sa, first), step, "PLN-TSK-030", duplicate=True)
    other = fit_result(ta, plus(7), 5)
    play.accepted(await play.submit(a, sa, other), step, "PLN-TSK-029", duplicate=True)
    failure = task_pb2.TaskResult(
        task_id=ta.task_id, failure=error_pb2.Error(code=error_pb2.ERROR_CODE_APP_ERROR)
    )
    play.accepted(await play.submit(a, sa, failure), step, "PLN-TSK-029", duplicate=True)
    # b reports a failure: the task closes as failed, and a resubmit is a duplicate too.
    failed = task_pb2.TaskResult(
        task_id=tb.task_id, failure=error_pb2.Error(code=error_pb2.ERROR_CODE_APP_ERROR)
    )
    play.accepted(await play.submit(b, sb, failed), step, "PLN-TSK-028")
    play.accepted(
        await play.submit(b, sb, fit_result(tb, plus(3), 3)), step, "PLN-TSK-030", duplicate=True
    )
    # Round 2 starts from a's first result alone: not x + 1 counted twice, not x + 7, not b's.
    next_a = await play.poll_task(a, sa, step)
    play.check(next_a.round == 2, step, "a round 2 task", str(next_a.round), "PLN-RND-008")
    play.exact(
        await play.model(a, sa, next_a, step),
        plus(1),
        step,
        "round 2 parameters = a's first result exactly (x + 1): no double counting",
        "PLN-TSK-029",
    )
    # A result for a task of the previous, committed round: the reply of its closed state.
    play.accepted(await play.submit(a, sa, first), step, "PLN-TSK-030", duplicate=True)


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


async def evaluate_phases(play: _Play, step: str) -> None:
    """Annex C.5 `evaluate`: each round's evaluate phase carries its aggregate; any loss counts."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    model = plus(0)
    for rnd, (loss_a, loss_b, examples_b) in enumerate(
        ((math.nan, 1.0, 0), (math.inf, -math.inf, -1)), start=1
    ):
        play.kind(ta, "fit", step, "PLN-CNF-031")
        play.kind(tb, "fit", step, "PLN-CNF-031")
        play.accepted(
            await play.submit(a, sa, fit_result(ta, plus_of(model, 1), 1)), step, "PLN-TSK-028"
        )
        play.accepted(
            await play.submit(b, sb, fit_result(tb, plus_of(model, 3), 3)), step, "PLN-TSK-028"
        )
        model = plus_of(model, 2.5)
        ea, eb = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
        play.kind(ea, "evaluate", step, "PLN-CNF-031")
        play.kind(eb, "evaluate", step, "PLN-CNF-031")
        play.check(
            ea.round == rnd, step, f"an evaluate task of round {rnd}", str(ea.round), "PLN-RND-004"
        )
        play.exact(
            await play.model(a, sa, ea, step),
            model,
            step,
            f"round {rnd}'s evaluate parameters = its FedAvg aggregate exactly (x + {2.5 * rnd})",
            "PLN-RND-008",
        )
        play.accepted(await play.submit(a, sa, evaluate_result(ea, loss_a, 2)), step, "PLN-EVL-002")
        if examples_b > 0:
            play.accepted(
                await play.submit(b, sb, evaluate_result(eb, loss_b, examples_b)),
                step,
                "PLN-EVL-002",
            )
        else:
            play.expect_error(
                step,
                await play.submit(b, sb, evaluate_result(eb, loss_b, examples_b)),
                ErrorCode.UPDATE_REJECTED,
                "PLN-EVL-003",
                path="result.evaluate.num_examples",
            )
            play.expect_error(
                step,
                await play.submit(b, sb, evaluate_result(eb, loss_b, 5)),
                ErrorCode.UPDATE_REJECTED,
                "PLN-TSK-030",
            )
        if rnd == 1:
            ta, tb = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
            play.check(ta.round == 2, step, "a round 2 fit task", str(ta.round), "PLN-RND-008")


async def query_phases(play: _Play, step: str) -> None:
    """Annex C.5 `analytics`: query tasks only for sessions with the feature; answers checked."""
    a, b, c = play.peer(), play.peer(), play.peer()
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    hb = await play.handshake(b, "conformance-b", step, features=("query",))
    if not play.check(
        "query" in hb.capabilities.features,
        step,
        "the query feature negotiated (the analytics configuration offers it)",
        str(list(hb.capabilities.features)),
        "PLN-CNF-031",
    ):
        raise CaseFailed
    sb = hb.session_id
    # a never negotiated `query`: whatever a gets while it polls through the run, it is not a
    # query task, and a does not count toward the 2 nodes the phase waits for.
    done = asyncio.Event()
    kinds: list[str] = []

    async def watch_a() -> None:
        for _ in range(60):
            reply = await a.call(
                _fed("PollTask"),
                PB.PollTaskRequest(session_id=sa, wait_ms=1000).SerializeToString(),
                timeout=15,
            )
            if reply.data is None or done.is_set():
                return
            response = PB.PollTaskResponse.FromString(reply.data)
            if response.HasField("task"):
                kinds.append(str(response.task.WhichOneof("instruction")))
                if kinds[-1] in ("shutdown", "reconnect"):
                    return

    watcher = asyncio.create_task(watch_a())
    try:
        early = await b.call(
            _fed("PollTask"),
            PB.PollTaskRequest(session_id=sb, wait_ms=1500).SerializeToString(),
            timeout=15,
        )
        early_kind = None
        if early.data is not None:
            response = PB.PollTaskResponse.FromString(early.data)
            early_kind = (
                response.task.WhichOneof("instruction") if response.HasField("task") else None
            )
        play.check(
            early_kind is None,
            step,
            "no query phase while one node with the query feature is connected",
            str(early_kind),
            "PLN-QRY-001",
        )
        sc = (await play.handshake(c, "conformance-c", step, features=("query",))).session_id
        tb, tc = await asyncio.gather(play.poll_task(b, sb, step), play.poll_task(c, sc, step))
        for task in (tb, tc):
            play.kind(task, "query", step, "PLN-CNF-031")
        good = [np.arange(4)]
        play.expect_error(
            step,
            await play.submit(b, sb, query_result(tb, good, -1)),
            ErrorCode.UPDATE_REJECTED,
            "PLN-QRY-004",
            path="result.query.num_examples",
        )
        play.expect_error(
            step,
            await play.submit(b, sb, query_result(tb, good, 4)),
            ErrorCode.UPDATE_REJECTED,
            "PLN-TSK-030",
        )
        play.accepted(await play.submit(c, sc, query_result(tc, good, 4)), step, "PLN-TSK-028")
        tb, tc = await asyncio.gather(play.poll_task(b, sb, step), play.poll_task(c, sc, step))
        for task in (tb, tc):
            play.kind(task, "query", step, "PLN-CNF-031")
            play.check(
                task.round == 2, step, "a round 2 query task", str(task.round), "PLN-RND-008"
            )
        play.expect_error(
            step,
            await play.submit(b, sb, query_result(tb, [np.arange(5)], 4)),
            ErrorCode.UPDATE_REJECTED,
            "PLN-RND-011",
            path="result.query.tensors",
        )
        play.expect_error(
            step,
            await play.submit(c, sc, query_result(tc, [np.array([0, 1, np.nan, 3])], 4)),
            ErrorCode.UPDATE_REJECTED,
            "PLN-RND-011",
            path="result.query.tensors[0]",
        )
        await _run_failed(play, b, sb, step)
    finally:
        done.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(watcher, timeout=5)
        watcher.cancel()
    play.check(
        "query" not in kinds,
        step,
        "no query task in a session without the query feature",
        f"tasks {kinds}",
        "PLN-QRY-001",
    )


async def declared_limits(play: _Play, step: str) -> None:
    """The limits a server declares are the ones it applies: at a limit a request passes the
    limit checks, one past it gets LIMIT_EXCEEDED (0 declares the default, PLN-LIM-001)."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    declared, defaults = ha.capabilities.limits, Limits()
    max_tensors = declared.max_tensors or defaults.max_tensors
    max_entries = declared.max_map_entries or defaults.max_map_entries
    max_blob = declared.max_blob_bytes or defaults.max_blob_bytes

    def empty_tensors(task: task_pb2.Task, count: int) -> task_pb2.TaskResult:
        result = task_pb2.TaskResult(task_id=task.task_id)
        result.fit.num_examples = 1
        for _ in range(count):
            result.fit.parameters.add(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[0], codec="raw")
        return result

    def not_a_limit(reply: Reply, what: str) -> None:
        # Within the limits the result may still be refused, for its shapes: not as too big.
        play.check(
            reply.code != ErrorCode.LIMIT_EXCEEDED.name,
            step,
            f"{what} at the declared limit passing the limit checks",
            f"{reply.status.name} {reply.code}",
            "PLN-HS-016",
        )

    not_a_limit(await play.submit(a, sa, empty_tensors(ta, max_tensors)), f"{max_tensors} tensors")
    first = blob_service_pb2.UploadBlobRequest(
        session_id=sb, sha256=hashlib.sha256(b"limit").digest(), total_size=max_blob, data=b"x"
    )
    reply = await b.call(_blob("UploadBlob"), first.SerializeToString())
    not_a_limit(reply, f"a blob of {max_blob} bytes")
    play.accepted(await play.submit(b, sb, fit_result(tb, plus(3), 3)), step, "PLN-TSK-028")
    r2a, r2b = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
    play.expect_error(
        step,
        await play.submit(a, sa, empty_tensors(r2a, max_tensors + 1)),
        ErrorCode.LIMIT_EXCEEDED,
        "PLN-HS-016",
        path="result.fit.parameters",
    )
    crowded = fit_result(r2b, plus(1), 1)
    for i in range(max_entries + 1):
        crowded.fit.metrics[f"m{i}"].int_value = i
    play.expect_error(
        step,
        await play.submit(b, sb, crowded),
        ErrorCode.LIMIT_EXCEEDED,
        "PLN-HS-016",
        path="result.fit.metrics",
    )


async def draining(play: _Play, step: str) -> None:
    """After SIGTERM every request is answered: OK before the drain begins, UNAVAILABLE once
    it has (or from the transport once the server is gone), never left hanging."""
    a, b = play.peer(), play.peer()
    ha = await play.handshake(a, "conformance-a", step)
    held = asyncio.create_task(
        a.call(
            _fed("PollTask"),
            PB.PollTaskRequest(session_id=ha.session_id, wait_ms=2000).SerializeToString(),
            timeout=10,
        )
    )
    beat = PB.HeartbeatRequest(session_id=ha.session_id).SerializeToString()
    first = await b.call(_fed("Heartbeat"), beat)  # b's connection is up before the stop
    play.check(first.data is not None, step, "a Heartbeat answered", first.code, "PLN-SES-010")
    assert play.terminate is not None
    play.terminate()
    allowed = (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    for _ in range(40):
        reply = await b.call(_fed("Heartbeat"), beat, timeout=5)
        if not play.check(
            reply.status in allowed,
            step,
            "a request during the drain answered OK or UNAVAILABLE, not left hanging",
            f"{reply.status.name} {reply.code}",
            "PLN-TRN-023",
        ):
            break
        if reply.status == grpc.StatusCode.UNAVAILABLE:
            break
        await asyncio.sleep(0.1)
    else:
        play.check(False, step, "UNAVAILABLE within 4 s of SIGTERM", "OK throughout", "PLN-TRN-023")
    poll = await held
    play.check(
        poll.status in allowed,
        step,
        "the poll held at SIGTERM answered OK or UNAVAILABLE",
        f"{poll.status.name} {poll.code}",
        "PLN-TRN-023",
    )


#: What a scripted node sends to cause each event of the task machine that a peer can cause.
_PEER_EVENTS = ("result_valid", "result_invalid", "failure_reported")


def _event_result(task: task_pb2.Task, event: str, model: Sequence[Any]) -> task_pb2.TaskResult:
    """A SubmitResult payload for `task` that causes `event` (fit or evaluate tasks)."""
    if event == "failure_reported":
        return task_pb2.TaskResult(
            task_id=task.task_id, failure=error_pb2.Error(code=error_pb2.ERROR_CODE_APP_ERROR)
        )
    valid = event == "result_valid"
    if task.HasField("evaluate"):
        return evaluate_result(task, 1.0, 1 if valid else 0)
    arrays = plus_of(model, 1)
    if not valid:
        arrays[0][0] = np.float32("nan")
    return fit_result(task, arrays, 1)


async def task_machine(play: _Play, step: str) -> None:
    """The complement of the task machine (spec/state_machines.yaml), generated: every closed
    state a scripted node can drive a task into, then every event a node can cause, none of
    which the table allows there; each must get the state's submit_reply and change nothing.

    Annex C.5 `evaluate` gives 8 tasks (2 rounds x fit, evaluate x 2 nodes); node a completes
    each of its tasks, so every phase has its quorum, and node b's four end, in turn, as
    rejected, failed, dropped (b leaves and handshakes again) and expired (b stays silent but
    for heartbeats until its deadline passes). `created` and `cancelled` cannot be reached
    by a client (a task id is only known once delivered; a phase closes at its tasks'
    deadline), and `delivered` allows every peer event.
    """
    machine = TASK
    closed = [s for s, info in machine.states.items() if info.terminal]
    untested = {
        s for s in closed if s not in ("completed", "failed", "rejected", "dropped", "expired")
    }
    assert untested <= {"cancelled"}, untested
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sessions = {"a": ha.session_id, "b": hb.session_id}
    model = plus(0)
    swept: set[str] = set()

    async def sweep(peer: _Peer, session: str, task: task_pb2.Task, state: str, where: str) -> None:
        reply_spec = machine.states[state].submit_reply
        for event in _PEER_EVENTS:
            assert machine.transitions[state].get(event) is None  # the table's complement
            reply = await play.submit(peer, session, _event_result(task, event, model))
            what = f"{where}: {event} for a task {state}"
            if reply_spec == "OK":
                play.accepted(reply, what, "PLN-SM-002", duplicate=True)
            else:
                assert reply_spec is not None
                play.expect_error(what, reply, ErrorCode[reply_spec], "PLN-SM-002")
        swept.add(state)

    for phase, b_ends in enumerate(("rejected", "failed", "dropped", "expired")):
        where = f"{step} phase {phase + 1}"
        kind = "fit" if phase % 2 == 0 else "evaluate"
        play.kind(ta, kind, where, "PLN-CNF-031")
        play.kind(tb, kind, where, "PLN-CNF-031")
        if kind == "evaluate":
            model = await play.model(a, sessions["a"], ta, where)
        play.accepted(
            await play.submit(a, sessions["a"], _event_result(ta, "result_valid", model)),
            where,
            "PLN-TSK-028",
        )
        if phase == 0:
            await sweep(a, sessions["a"], ta, "completed", where)
        if b_ends == "rejected":
            play.expect_error(
                where,
                await play.submit(b, sessions["b"], _event_result(tb, "result_invalid", model)),
                ErrorCode.UPDATE_REJECTED,
                "PLN-RND-010",
            )
        elif b_ends == "failed":
            play.accepted(
                await play.submit(b, sessions["b"], _event_result(tb, "failure_reported", model)),
                where,
                "PLN-TSK-028",
            )
        elif b_ends == "dropped":
            leave = PB.LeaveRequest(session_id=sessions["b"])
            await b.call(_fed("Leave"), leave.SerializeToString())
            sessions["b"] = (await play.handshake(b, "conformance-b", where)).session_id
        else:  # expired: heartbeats keep the session, not the task, alive past its deadline
            beat = PB.HeartbeatRequest(session_id=sessions["b"], task_id=tb.task_id)
            for _ in range(30):
                reply = await b.call(_fed("Heartbeat"), beat.SerializeToString())
                if (
                    reply.data is None
                    or not PB.HeartbeatResponse.FromString(reply.data).task_active
                ):
                    break
                await asyncio.sleep(0.5)
        await sweep(b, sessions["b"], tb, b_ends, where)
        if phase < 3:
            ta, tb = await asyncio.gather(
                play.poll_task(a, sessions["a"], where), play.poll_task(b, sessions["b"], where)
            )
    play.check(
        swept == {"completed", "rejected", "failed", "dropped", "expired"},
        step,
        "every closed state a client can reach swept",
        str(sorted(swept)),
        "PLN-SM-002",
    )


async def recommended(play: _Play, step: str) -> None:
    """What a server SHOULD do: task deadlines within the phase's, errors that name their
    field with the status message equal to Error.message, the standard health service."""
    (a, ha, ta), _ = await play.pair(step)
    play.check(
        0 < ta.deadline_ms <= 10_000,
        step,
        "a nonzero deadline_ms within the phase's 10 s",
        str(ta.deadline_ms),
        "PLN-TSK-021",
    )
    errors = [
        (
            "Handshake",
            await a.call(_fed("Handshake"), _hello("bad node")),
            "node_id",
        ),
        (
            "PollTask",
            await a.call(
                _fed("PollTask"), PB.PollTaskRequest(session_id="nope").SerializeToString()
            ),
            "session_id",
        ),
        (
            "SubmitResult",
            await play.submit(a, ha.session_id, fit_result(ta, [np.zeros(3)], 1)),
            "result.fit.parameters",
        ),
    ]
    for rpc, reply, field in errors:
        got = reply.error.field if reply.error else None
        play.check(
            got is not None and (got == field or got.startswith((field + ".", field + "["))),
            f"{step}: {rpc}",
            f"Error.field naming {field!r}",
            repr(got),
            "PLN-ERR-009",
        )
        play.check(
            reply.error is not None and reply.details == reply.error.message,
            f"{step}: {rpc}",
            "the status message equal to Error.message",
            f"{reply.details!r} vs {reply.error.message if reply.error else None!r}",
            "PLN-TRN-010",
        )
    health = await a.call(
        "/grpc.health.v1.Health/Check",
        b"",  # an empty HealthCheckRequest: the whole server
    )
    serving = health.data is not None and health.data == b"\x08\x01"  # status: SERVING
    play.check(
        serving,
        step,
        "grpc.health.v1.Health/Check answering SERVING",
        f"{health.status.name} {health.data!r}",
        "PLN-TRN-022",
    )


def _tls_version(
    address: str, tls: TlsFiles, *, highest: ssl.TLSVersion | None = None
) -> str | None:
    """The TLS version a handshake with the server settles on, or None when it fails.

    Plain `ssl`, not gRPC: gRPC's stack offers only TLS 1.2 and later, so it cannot be the
    old peer PLN-SEC-003 needs. The socket is closed right after the TLS handshake.
    """
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(tls.ca)
    context.load_cert_chain(*tls.clients[NODES[0]])
    context.set_alpn_protocols(["h2"])
    if highest is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the old versions be offered at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = highest
    try:
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as wrapped,
        ):
            return wrapped.version()
    except (OSError, ssl.SSLError):
        return None


async def tls_versions(play: _Play, step: str) -> None:
    """No TLS below 1.2; TLS 1.2 itself still works."""
    assert play.tls is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.TLSVersion.TLSv1_1
    got = await asyncio.to_thread(_tls_version, play.address, play.tls, highest=old)
    play.check(got is None, step, "no TLS handshake at TLS 1.1", str(got), "PLN-SEC-003")
    got = await asyncio.to_thread(
        _tls_version, play.address, play.tls, highest=ssl.TLSVersion.TLSv1_2
    )
    play.check(got == "TLSv1.2", step, "a TLS handshake at TLS 1.2", str(got), "PLN-SEC-003")


async def tls_13(play: _Play, step: str) -> None:
    assert play.tls is not None
    got = await asyncio.to_thread(_tls_version, play.address, play.tls)
    play.check(got == "TLSv1.3", step, "TLS 1.3 when the peer offers it", str(got), "PLN-SEC-004")


async def deadline_grace(play: _Play, step: str) -> None:
    """A result sent after deadline_ms, within 5 s of it, still counts (PLN-TSK-020)."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    delivered = time.monotonic()
    play.accepted(
        await play.submit(a, ha.session_id, fit_result(ta, plus(1), 1)), step, "PLN-TSK-028"
    )
    late_by = 2.0
    beat = PB.HeartbeatRequest(session_id=hb.session_id, task_id=tb.task_id).SerializeToString()
    while time.monotonic() < delivered + tb.deadline_ms / 1000 + late_by:
        await b.call(_fed("Heartbeat"), beat)  # the session, not the task, is kept alive
        await asyncio.sleep(0.5)
    reply = await play.submit(b, hb.session_id, fit_result(tb, plus(3), 3))
    play.check(
        reply.data is not None,
        step,
        f"a result {late_by:.0f} s past deadline_ms accepted",
        f"{reply.status.name} {reply.code}",
        "PLN-TSK-020",
    )


async def partial_uploads(play: _Play, step: str) -> None:
    """Partial uploads outlive a new Handshake (PLN-BLB-028) and stay apart per node, even
    for the same digest (PLN-BLB-029)."""
    a, b = play.peer(), play.peer("conformance-b")
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    hb = await play.handshake(b, "conformance-b", step)
    chunk = min(hb.chunk_size_bytes, 4096)
    body = bytes(range(256)) * (3 * chunk // 256)
    sha = hashlib.sha256(body).digest()

    async def up(peer: _Peer, session: str, offset: int, data: bytes) -> int | None:
        request = blob_service_pb2.UploadBlobRequest(
            session_id=session, sha256=sha, total_size=len(body), offset=offset, data=data
        )
        reply = await peer.call(_blob("UploadBlob"), request.SerializeToString())
        if reply.data is None:
            return None
        return blob_service_pb2.UploadBlobResponse.FromString(reply.data).committed_size

    await up(a, sa, 0, body[:chunk])
    await up(a, sa, chunk, body[chunk : 2 * chunk])
    got = await up(b, hb.session_id, 0, b"")
    play.check(got == 0, step, "b's own upload at 0, not a's", str(got), "PLN-BLB-029")
    got = await up(b, hb.session_id, 0, body[:chunk])
    play.check(got == chunk, step, f"b's upload at {chunk}", str(got), "PLN-BLB-029")
    sa = (await play.handshake(a, "conformance-a", step)).session_id  # a new session of a
    got = await up(a, sa, 0, b"")
    play.check(
        got == 2 * chunk,
        step,
        f"a's upload kept at {2 * chunk} across its new session, untouched by b",
        str(got),
        "PLN-BLB-028",
    )


async def node_binding(play: _Play, step: str) -> None:
    """Mutual TLS with bound node ids: a Handshake for a node the certificate does not name
    is UNAUTHENTICATED, after the malformed-node check and before the capability checks."""
    a = play.peer("conformance-a")
    for what, request, code, rid in (
        (
            "a node the certificate does not name",
            _hello("conformance-b"),
            ErrorCode.UNAUTHENTICATED,
            "PLN-HS-029",
        ),
        (
            "an unnamed node and no raw codec",
            _hello("conformance-b", codecs=("zstd",)),
            ErrorCode.UNAUTHENTICATED,
            "PLN-HS-033",
        ),
        ("a malformed node id", _hello("bad node"), ErrorCode.INVALID_ARGUMENT, "PLN-HS-033"),
    ):
        play.expect_error(
            f"{step}: {what}", await a.call(_fed("Handshake"), request), code, rid, path="node_id"
        )
    # The same refusal is the credentials check of PLN-SEC-007: a call after the TLS handshake.
    refused = await a.call(_fed("Handshake"), _hello("conformance-c"))
    play.expect_error(step, refused, ErrorCode.UNAUTHENTICATED, "PLN-SEC-007")
    session = (await play.handshake(a, "conformance-a", step)).session_id
    reply = await a.call(
        _fed("PollTask"), PB.PollTaskRequest(session_id=session, wait_ms=0).SerializeToString()
    )
    play.check(
        reply.data is not None,
        step,
        "the bound node's session serves its calls",
        f"{reply.status.name} {reply.code}",
        "PLN-CNF-033",
    )


async def session_binding(play: _Play, step: str) -> None:
    """A session's calls from a connection with another node's certificate are refused."""
    a, b = play.peer("conformance-a"), play.peer("conformance-b")
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    for rpc, request in (
        ("PollTask", PB.PollTaskRequest(session_id=sa, wait_ms=0)),
        ("Heartbeat", PB.HeartbeatRequest(session_id=sa)),
        ("Leave", PB.LeaveRequest(session_id=sa)),
    ):
        play.expect_error(
            f"{step}: {rpc} with a's session over b's certificate",
            await b.call(_fed(rpc), request.SerializeToString()),
            ErrorCode.UNAUTHENTICATED,
            "PLN-SEC-009",
        )
    reply = await a.call(
        _fed("PollTask"), PB.PollTaskRequest(session_id=sa, wait_ms=0).SerializeToString()
    )
    play.check(
        reply.data is not None,
        step,
        "a's session unharmed by the refused calls",
        f"{reply.status.name} {reply.code}",
        "PLN-SEC-009",
    )


async def dropout(play: _Play, step: str) -> None:
    """A node goes silent: its session times out, its task drops, the round goes on."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    timeout = hb.session_timeout_ms / 1000
    if not play.check(
        0 < timeout <= 5.0,
        step,
        "session_timeout_ms of 5000 or less (Annex C.5)",
        str(hb.session_timeout_ms),
        "PLN-CNF-031",
    ):
        return
    last = time.monotonic()
    play.accepted(await play.submit(a, sa, fit_result(ta, plus(1), 2)), step, "PLN-TSK-028")
    done = asyncio.Event()

    async def silent_b() -> None:
        await asyncio.sleep(max(0.0, last + 0.6 * timeout - time.monotonic()))
        beat = PB.HeartbeatRequest(session_id=sb, task_id=tb.task_id).SerializeToString()
        reply = await b.call(_fed("Heartbeat"), beat)
        play.check(
            reply.data is not None and PB.HeartbeatResponse.FromString(reply.data).task_active,
            step,
            f"the session alive {0.6 * timeout:.1f} s after its last request, its task open",
            f"{reply.status.name} {reply.code}",
            "PLN-SES-005",
        )
        quiet = time.monotonic()
        # The session must be gone once session_timeout_ms has passed (1 s for the server's
        # clock granularity, plus the harness's grace).
        await asyncio.sleep(max(0.0, quiet + timeout + 1.0 + 4 * GRACE_S - time.monotonic()))
        unset = PB.SubmitResultRequest(
            session_id=sb, result=task_pb2.TaskResult(task_id="")
        ).SerializeToString()
        play.expect_error(
            step,
            await b.call(_fed("SubmitResult"), unset),
            ErrorCode.SESSION_UNKNOWN,
            "PLN-SES-006",
        )
        bad_upload = blob_service_pb2.UploadBlobRequest(
            session_id=sb, sha256=b"short", total_size=1, data=b"xx"
        ).SerializeToString()
        play.expect_error(
            step,
            await b.call(_blob("UploadBlob"), bad_upload),
            ErrorCode.SESSION_UNKNOWN,
            "PLN-SES-004",
        )
        again = await play.handshake(b, "conformance-b", step)
        late = await play.submit(b, again.session_id, fit_result(tb, plus(3), 3))
        play.expect_error(step, late, ErrorCode.TASK_EXPIRED, "PLN-SES-006")
        next_b = await play.poll_task(b, again.session_id, step)
        play.check(
            next_b.round == 2,
            step,
            "a round 2 task for the node back",
            str(next_b.round),
            "PLN-RND-008",
        )
        done.set()

    next_a, _ = await asyncio.gather(_keep_polling(play, a, sa, step, done), silent_b())
    if not play.check(
        next_a is not None and next_a.round == 2,
        step,
        "a round 2 task after the silent node dropped",
        "none" if next_a is None else f"round {next_a.round}",
        "PLN-RND-007",
    ):
        return
    assert next_a is not None
    play.exact(
        await play.model(a, sa, next_a, step),
        plus(1),
        step,
        "round 2 parameters = the one result round 1 got (x + 1)",
        "PLN-RND-007",
    )


async def task_deadline(play: _Play, step: str) -> None:
    """A node that keeps its session but never answers: its task expires at its deadline."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    delivered = time.monotonic()
    sa, sb = ha.session_id, hb.session_id
    deadline = tb.deadline_ms / 1000
    if not play.check(
        0 < deadline <= 10.0,
        step,
        "a task deadline_ms within Annex C.5's phase deadline",
        str(tb.deadline_ms),
        "PLN-CNF-031",
    ):
        return
    play.accepted(await play.submit(a, sa, fit_result(ta, plus(1), 1)), step, "PLN-TSK-028")
    done = asyncio.Event()
    expired_at: list[float] = []
    active_sent: list[float] = []  # when each Heartbeat that found the task open was sent
    fetched: list[list[Any]] = []

    async def idle_b() -> None:
        # Heartbeats keep the session; the server may expire the task from deadline_ms on,
        # and (its SHOULD grace of 5 s included) must have by 10 s after that.
        interval = max(0.2, min(0.5, hb.heartbeat_interval_ms / 1000))
        limit = delivered + deadline + 5.0 + 1.0 + GRACE_S
        while time.monotonic() < limit:
            beat = PB.HeartbeatRequest(session_id=sb, task_id=tb.task_id).SerializeToString()
            reply = await b.call(_fed("Heartbeat"), beat)
            if reply.data is None:
                play.check(
                    False,
                    step,
                    "a Heartbeat answer",
                    f"{reply.status.name} {reply.code}",
                    "PLN-SES-010",
                )
                break
            if not PB.HeartbeatResponse.FromString(reply.data).task_active:
                expired_at.append(time.monotonic() - reply.elapsed)
                break
            active_sent.append(time.monotonic() - reply.elapsed)
            if not fetched and time.monotonic() > delivered + 0.7 * deadline:
                # Late in the task's life its blobs are still there (PLN-BLB-026).
                fetched.append(await play.model(b, sb, tb, step))
            await asyncio.sleep(interval)
        if play.check(
            bool(expired_at),
            step,
            f"the task closed within {deadline + 5.0 + 1.0:.1f} s of its delivery",
            "still open",
            "PLN-RND-002",
        ):
            play.check(
                expired_at[0] - delivered >= deadline - 0.25,
                step,
                f"the task open until deadline_ms ({deadline:.2f} s) after delivery",
                f"closed after {expired_at[0] - delivered:.2f} s",
                "PLN-TSK-019",
            )
        late = await play.submit(b, sb, fit_result(tb, plus(3), 3))
        # Expired by its deadline, or cancelled as its phase closed at the same moment.
        play.check(
            late.code in ("TASK_EXPIRED", "STALE_ROUND"),
            step,
            "TASK_EXPIRED (or STALE_ROUND) for a result after the deadline",
            f"{late.status.name} {late.code}",
            "PLN-TSK-030",
        )
        done.set()

    async def poll_a() -> tuple[task_pb2.Task | None, float]:
        task = await _keep_polling(play, a, sa, step, done)
        return task, time.monotonic()

    (next_a, got_at), _ = await asyncio.gather(poll_a(), idle_b())
    if play.check(
        next_a is not None and next_a.round == 2,
        step,
        "a round 2 task once the phase deadline passed",
        "none" if next_a is None else f"round {next_a.round}",
        "PLN-RND-007",
    ):
        assert next_a is not None
        # A round 2 task received before a Heartbeat that still found b's round 1 task open
        # was sent: round 2 began while round 1 was collecting.
        play.check(
            not active_sent or got_at >= max(active_sent),
            step,
            "no round 2 task while a round 1 task is open (round 1 not committed)",
            f"round 2 task {max(active_sent) - got_at:.2f} s before b's task closed",
            "PLN-RND-005",
        )
        play.exact(
            await play.model(a, sa, next_a, step),
            plus(1),
            step,
            "round 2 parameters = the one result round 1 got (x + 1)",
            "PLN-RND-013",
        )


async def _run_failed(play: _Play, peer: _Peer, session: str, step: str) -> None:
    """Annex C.5: a missed quorum fails the run; no task of the run comes after it."""
    reply = await peer.call(
        _fed("PollTask"),
        PB.PollTaskRequest(session_id=session, wait_ms=1000).SerializeToString(),
        timeout=10,
    )
    kind = None
    if reply.data is not None:
        response = PB.PollTaskResponse.FromString(reply.data)
        kind = response.task.WhichOneof("instruction") if response.HasField("task") else None
    play.check(
        kind in (None, "shutdown", "reconnect"),
        step,
        "no task of the failed run (a shutdown instruction, nothing, or no session)",
        str(kind),
        "PLN-RND-021",
    )


async def rejections(play: _Play, step: str) -> None:
    """Updates that break PLN-RND-010 are rejected and change nothing."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    model = initial_model()
    shape = [model[0].reshape(2, 2) + 1, model[1] + 1]
    play.expect_error(
        step,
        await play.submit(a, sa, fit_result(ta, shape, 1)),
        ErrorCode.UPDATE_REJECTED,
        "PLN-FIT-005",
        path="result.fit.parameters[0]",
    )
    play.expect_error(
        step,
        await play.submit(a, sa, fit_result(ta, plus(1), 1)),
        ErrorCode.UPDATE_REJECTED,
        "PLN-TSK-030",
    )
    play.accepted(await play.submit(b, sb, fit_result(tb, plus(3), 3)), step, "PLN-TSK-028")
    r2a, r2b = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
    play.exact(
        await play.model(a, sa, r2a, step),
        plus(3),
        step,
        "round 2 parameters = b's result alone (x + 3): the rejected one took no part",
        "PLN-RND-012",
    )
    nan = plus(1)
    nan[1][7] = np.float32("nan")
    play.expect_error(
        step,
        await play.submit(a, sa, fit_result(r2a, nan, 1)),
        ErrorCode.UPDATE_REJECTED,
        "PLN-RND-010",
        path="result.fit.parameters[1]",
    )
    play.expect_error(
        step,
        await play.submit(b, sb, fit_result(r2b, plus(1), 0)),
        ErrorCode.UPDATE_REJECTED,
        "PLN-FIT-005",
        path="result.fit.num_examples",
    )
    await _run_failed(play, a, sa, step)


async def malformed_results(play: _Play, step: str) -> None:
    """Malformed tensors and mismatched outcomes get their typed errors."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    short = fit_result(ta, plus(1), 1, payload=lambda i, d: d[:-4] if i == 1 else d)
    play.expect_error(
        step,
        await play.submit(a, sa, short),
        ErrorCode.TENSOR_SIZE_MISMATCH,
        "PLN-GEN-006",
        path="result.fit.parameters[1]",
    )
    play.expect_error(  # the reply of a rejected task, whatever error rejected it
        step,
        await play.submit(a, sa, fit_result(ta, plus(1), 1)),
        ErrorCode.UPDATE_REJECTED,
        "PLN-TSK-030",
    )
    play.accepted(await play.submit(b, sb, fit_result(tb, plus(3), 3)), step, "PLN-TSK-028")
    r2a, r2b = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
    play.exact(
        await play.model(b, sb, r2b, step),
        plus(3),
        step,
        "round 2 parameters = b's result alone (x + 3)",
        "PLN-RND-012",
    )
    odd = fit_result(r2a, plus(1), 1, codec="x-unknown")
    reply = await play.submit(a, sa, odd)
    if play.expect_error(
        step, reply, ErrorCode.CODEC_UNSUPPORTED, "PLN-ERR-008", path="result.fit.parameters[0]"
    ):
        assert reply.error is not None
        play.check(
            list(reply.error.supported_codecs) == ["raw"],
            step,
            "supported_codecs = the session's codecs ([raw], all this client offered)",
            str(list(reply.error.supported_codecs)),
            "PLN-ERR-008",
        )
    mismatch = task_pb2.TaskResult(task_id=r2b.task_id)
    mismatch.evaluate.loss = 1.0
    mismatch.evaluate.num_examples = 1
    play.expect_error(
        step, await play.submit(b, sb, mismatch), ErrorCode.RESULT_MISMATCH, "PLN-TSK-028"
    )
    play.expect_error(
        step,
        await play.submit(b, sb, fit_result(r2b, plus(1), 1)),
        ErrorCode.UPDATE_REJECTED,
        "PLN-TSK-030",
    )
    await _run_failed(play, a, sa, step)


async def session_replace(play: _Play, step: str) -> None:
    """A new Handshake of a node ends its old session, held poll included, and keeps its task."""
    a = play.peer()
    first = await play.handshake(a, "conformance-a", step)
    held = asyncio.ensure_future(
        a.call(
            _fed("PollTask"),
            PB.PollTaskRequest(session_id=first.session_id, wait_ms=1500).SerializeToString(),
            timeout=15,
        )
    )
    await asyncio.sleep(0.3)
    second = await play.handshake(a, "conformance-a", step)
    play.expect_error(step, await held, ErrorCode.SESSION_UNKNOWN, "PLN-HS-032")
    b = play.peer()
    hb = await play.handshake(b, "conformance-b", step)
    ta, tb = await asyncio.gather(
        play.poll_task(a, second.session_id, step), play.poll_task(b, hb.session_id, step)
    )
    third = await play.handshake(a, "conformance-a", step)
    again = await play.poll_task(a, third.session_id, step)
    play.check(
        (again.task_id, again.run_id, again.round, again.WhichOneof("instruction"))
        == (ta.task_id, ta.run_id, ta.round, ta.WhichOneof("instruction"))
        and again.fit.parameters == ta.fit.parameters
        and again.fit.config == ta.fit.config,
        step,
        "the open task handed out in the new session, same id, run, round and instruction",
        again.task_id,
        "PLN-HS-031",
    )
    play.check(
        again.deadline_ms <= ta.deadline_ms,
        step,
        "deadline_ms no later than when first handed out",
        f"{again.deadline_ms} after {ta.deadline_ms}",
        "PLN-TSK-012",
    )
    play.accepted(
        await play.submit(a, third.session_id, fit_result(again, plus(1), 1)),
        step,
        "PLN-HS-031",
    )
    play.accepted(
        await play.submit(b, hb.session_id, fit_result(tb, plus(3), 1)), step, "PLN-TSK-028"
    )
    r2 = await play.poll_task(a, third.session_id, step)
    play.exact(
        await play.model(a, third.session_id, r2, step),
        plus(2),
        step,
        "round 2 parameters = FedAvg of both results (x + 2)",
        "PLN-HS-031",
    )


async def uploads(play: _Play, step: str) -> None:  # noqa: PLR0915 - one story, told in order
    """Upload check order, resume from the committed size, digest verification, and a
    result that references an uploaded blob."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    chunk = min(ha.chunk_size_bytes, 16384)
    max_blob = ha.capabilities.limits.max_blob_bytes or 1 << 35

    async def up(  # noqa: PLR0917 - the request's fields, in the proto's order
        peer: _Peer, session: str, sha: bytes, total: int, offset: int, data: bytes
    ) -> Reply:
        request = blob_service_pb2.UploadBlobRequest(
            session_id=session, sha256=sha, total_size=total, offset=offset, data=data
        )
        return await peer.call(_blob("UploadBlob"), request.SerializeToString())

    def state(reply: Reply) -> tuple[int, bool] | None:
        if reply.data is None:
            return None
        message = blob_service_pb2.UploadBlobResponse.FromString(reply.data)
        return message.committed_size, message.complete

    # PLN-BLB-016: each request breaks its rule and every later one; the first must win.
    too_long = b"\0" * (ha.chunk_size_bytes + 1)
    sha = hashlib.sha256(b"x").digest()
    order: list[tuple[Reply, ErrorCode, str]] = [
        (
            await up(a, "no-such-session", b"short", max_blob + 1, 5, too_long),
            ErrorCode.SESSION_UNKNOWN,
            "",
        ),
        (
            await up(a, sa, b"short", max_blob + 1, 5, too_long),
            ErrorCode.INVALID_ARGUMENT,
            "sha256",
        ),
        (
            await up(a, sa, sha, max_blob + 1, max_blob, too_long),
            ErrorCode.LIMIT_EXCEEDED,
            "total_size",
        ),
        (await up(a, sa, sha, 10, 5, too_long), ErrorCode.LIMIT_EXCEEDED, "data"),
        (await up(a, sa, sha, 10, 8, b"abcd"), ErrorCode.INVALID_ARGUMENT, ""),
    ]
    for reply, code, field in order:
        play.expect_error(step, reply, code, "PLN-BLB-016", path=field)
    play.check(
        state(await up(a, sa, sha, 10, 0, b"ab")) == (2, False),
        step,
        "the first chunk appended (committed 2)",
        "other",
        "PLN-BLB-018",
    )
    play.expect_error(
        step, await up(a, sa, sha, 20, 0, b""), ErrorCode.INVALID_ARGUMENT, "PLN-BLB-016"
    )
    # The fit result's large tensor, uploaded in pieces with a resume in the middle.
    data = (initial_model()[1] + np.float32(1)).astype("<f4").tobytes()
    digest = hashlib.sha256(data).digest()
    for start in (0, chunk):
        await up(a, sa, digest, len(data), start, data[start : start + chunk])
    resumed = state(await up(a, sa, digest, len(data), 0, b""))
    play.check(
        resumed == (2 * chunk, False),
        step,
        f"a status query answers the committed size {2 * chunk}",
        str(resumed),
        "PLN-BLB-018",
    )
    again = state(await up(a, sa, digest, len(data), chunk, data[chunk : 2 * chunk]))
    play.check(
        again == (2 * chunk, False),
        step,
        "a chunk sent again (below the committed size) not written twice",
        str(again),
        "PLN-BLB-018",
    )
    last: tuple[int, bool] | None = None
    for start in range(2 * chunk, len(data), chunk):
        last = state(await up(a, sa, digest, len(data), start, data[start : start + chunk]))
    play.check(last == (len(data), True), step, "the upload complete", str(last), "PLN-BLB-019")
    # Nobody else reads an uploaded blob (PLN-BLB-010, PLN-SEC-014).
    _, reply = await b.stream(
        _blob("DownloadBlob"),
        blob_service_pb2.DownloadBlobRequest(session_id=sb, sha256=digest).SerializeToString(),
    )
    play.expect_error(step, reply, ErrorCode.BLOB_NOT_FOUND, "PLN-BLB-010")
    # A digest mismatch resets the upload to 0, and the bytes are never used (PLN-BLB-020).
    wrong = hashlib.sha256(b"not these bytes").digest()
    body = data[:chunk]
    reply = await up(a, sa, wrong, len(body), 0, body)
    play.expect_error(step, reply, ErrorCode.BLOB_DIGEST_MISMATCH, "PLN-BLB-019")
    play.check(
        state(await up(a, sa, wrong, len(body), 0, b"")) == (0, False),
        step,
        "committed size back to 0 after a digest mismatch",
        "other",
        "PLN-BLB-019",
    )

    def referencing(task: task_pb2.Task, sha: bytes, size: int) -> task_pb2.TaskResult:
        result = fit_result(task, plus(1)[:1], 1)
        result.fit.parameters.add(
            dtype=tensor_pb2.DTYPE_FLOAT32, shape=[20000], codec="raw", name="t1"
        ).blob.CopyFrom(tensor_pb2.BlobRef(sha256=sha, size=size))
        return result

    reply = await play.submit(a, sa, referencing(ta, wrong, len(data)))
    play.check(
        reply.code in ("BLOB_NOT_FOUND", "BLOB_INCOMPLETE"),
        step,
        "BLOB_NOT_FOUND or BLOB_INCOMPLETE for a blob whose digest did not verify",
        f"{reply.status.name} {reply.code}",
        "PLN-BLB-020",
    )
    # b uploads 4 bytes fewer under their own digest and references them with the full size.
    cut = data[:-4]
    cut_digest = hashlib.sha256(cut).digest()
    for start in range(0, len(cut), chunk):
        last = state(await up(b, sb, cut_digest, len(cut), start, cut[start : start + chunk]))
    play.check(last == (len(cut), True), step, "b's upload complete", str(last), "PLN-BLB-019")
    play.expect_error(
        step,
        await play.submit(b, sb, referencing(tb, cut_digest, len(data))),
        ErrorCode.BLOB_DIGEST_MISMATCH,
        "PLN-BLB-025",
    )
    # The verified upload is still there most of a session timeout later (PLN-BLB-027).
    wait = 0.8 * ha.session_timeout_ms / 1000
    until = time.monotonic() + wait
    while time.monotonic() < until:
        await asyncio.sleep(min(0.5, max(0.0, until - time.monotonic())))
        for peer, session in ((a, sa), (b, sb)):  # both stay: round 2 needs two nodes
            await peer.call(
                _fed("Heartbeat"), PB.HeartbeatRequest(session_id=session).SerializeToString()
            )
    play.accepted(await play.submit(a, sa, referencing(ta, digest, len(data))), step, "PLN-BLB-027")
    next_a = await play.poll_task(a, sa, step)
    play.exact(
        await play.model(a, sa, next_a, step),
        plus(1),
        step,
        "round 2 parameters = a's uploaded result exactly (x + 1)",
        "PLN-BLB-027",
    )


async def services(play: _Play, step: str) -> None:
    """Every RPC of the two services is served under its standard path (PLN-TRN-001)."""
    peer = play.peer()
    for name in ("Handshake", "PollTask", "SubmitResult", "Heartbeat", "Leave", "UploadBlob"):
        path = _fed(name) if name != "UploadBlob" else _blob(name)
        reply = await peer.call(path, b"", timeout=5)
        play.check(
            reply.status != grpc.StatusCode.UNIMPLEMENTED,
            step,
            f"{path} served",
            reply.status.name,
            "PLN-TRN-001",
        )
    _, reply = await peer.stream(_blob("DownloadBlob"), b"", timeout=5)
    play.check(
        reply.status != grpc.StatusCode.UNIMPLEMENTED,
        step,
        "/pollen.v1.BlobService/DownloadBlob served",
        reply.status.name,
        "PLN-TRN-001",
    )
    # The agent string changes nothing (PLN-HS-007): two Handshakes that differ only in it
    # get the same terms.
    terms: list[bytes] = []
    for agent in ("pollen-conformance-harness", "x-other-sdk/9.9 (PLN-HS-007)"):
        request = PB.HandshakeRequest.FromString(_hello(f"conformance-{len(terms)}"))
        request.agent = agent
        reply = await peer.call(_fed("Handshake"), request.SerializeToString())
        if reply.data is None:
            play.check(False, step, "a successful Handshake", reply.code, "PLN-HS-007")
            return
        response = PB.HandshakeResponse.FromString(reply.data)
        response.session_id = ""
        response.agent = ""
        terms.append(response.SerializeToString(deterministic=True))
    play.check(
        terms[0] == terms[1],
        step,
        "the same Handshake terms whatever the agent string",
        "different terms",
        "PLN-HS-007",
    )
    # No chunk size fits a client whose messages may hold 1024 bytes at most (PLN-HS-025).
    request = PB.HandshakeRequest.FromString(_hello("conformance-c"))
    request.capabilities.limits.max_message_bytes = 1024
    play.expect_error(
        step,
        await peer.call(_fed("Handshake"), request.SerializeToString()),
        ErrorCode.CAPABILITY_MISMATCH,
        "PLN-HS-025",
    )


async def restart(play: _Play, step: str) -> None:
    """A crash after round 1 is committed: the run resumes at round 2 with its model, and
    nothing from before the crash counts again (07-rounds.md, Commit and crash recovery)."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    play.accepted(
        await play.submit(a, ha.session_id, fit_result(ta, plus(1), 1)), step, "PLN-TSK-028"
    )
    play.accepted(
        await play.submit(b, hb.session_id, fit_result(tb, plus(3), 3)), step, "PLN-TSK-028"
    )
    before_a, before_b = await asyncio.gather(
        play.poll_task(a, ha.session_id, step), play.poll_task(b, hb.session_id, step)
    )
    assert play.restart is not None
    if not play.check(
        await play.restart(),
        step,
        f"the server listening again within {START_TIMEOUT_S:.0f} s of a restart",
        "not listening",
        "PLN-CNF-030",
    ):
        return
    old = PB.PollTaskRequest(session_id=ha.session_id, wait_ms=0).SerializeToString()
    play.expect_error(
        step, await a.call(_fed("PollTask"), old), ErrorCode.SESSION_UNKNOWN, "PLN-SES-003"
    )
    na = await play.handshake(a, "conformance-a", step)
    nb = await play.handshake(b, "conformance-b", step)
    after_a, after_b = await asyncio.gather(
        play.poll_task(a, na.session_id, step), play.poll_task(b, nb.session_id, step)
    )
    play.check(
        (after_a.round, after_b.round) == (2, 2),
        step,
        "round 2 tasks: the run resumes after its last committed round",
        f"rounds {after_a.round}, {after_b.round}",
        "PLN-RND-017",
    )
    play.exact(
        await play.model(a, na.session_id, after_a, step),
        plus(2.5),
        step,
        "the committed model of round 1 (x + 2.5) after the crash",
        "PLN-RND-016",
    )
    old_ids = {before_a.task_id, before_b.task_id, ta.task_id, tb.task_id}
    play.check(
        not {after_a.task_id, after_b.task_id} & old_ids,
        step,
        "task ids never given before the restart",
        f"{after_a.task_id}, {after_b.task_id}",
        "PLN-TSK-002",
    )
    # A result for a task of the round the crash interrupted counts toward nothing.
    stale = await play.submit(a, na.session_id, fit_result(before_a, plus(7), 7))
    play.check(
        stale.code in ("STALE_ROUND", "TASK_UNKNOWN"),
        step,
        "STALE_ROUND or TASK_UNKNOWN for a result of a task from before the crash",
        f"{stale.status.name} {stale.code}",
        "PLN-RND-018",
    )
    play.accepted(
        await play.submit(a, na.session_id, fit_result(after_a, plus(3.5), 1)), step, "PLN-TSK-028"
    )
    play.accepted(
        await play.submit(b, nb.session_id, fit_result(after_b, plus(3.5), 1)), step, "PLN-TSK-028"
    )


SCENARIOS: dict[str, Callable[[_Play, str], Awaitable[None]]] = {
    "handshake_negotiation": handshake_negotiation,
    "handshake_errors": handshake_errors,
    "sessions": sessions,
    "long_poll": long_poll,
    "training": training,
    "blobs": blobs,
    "heartbeats": heartbeats,
    "resubmits": resubmits,
    "dropout": dropout,
    "task_deadline": task_deadline,
    "rejections": rejections,
    "malformed_results": malformed_results,
    "session_replace": session_replace,
    "uploads": uploads,
    "services": services,
    "restart": restart,
    "evaluate_phases": evaluate_phases,
    "query_phases": query_phases,
    "declared_limits": declared_limits,
    "recommended": recommended,
    "partial_uploads": partial_uploads,
    "deadline_grace": deadline_grace,
    "task_machine": task_machine,
    "draining": draining,
    "node_binding": node_binding,
    "tls_versions": tls_versions,
    "tls_13": tls_13,
    "session_binding": session_binding,
}
#: Scenarios played over mutual TLS, each peer presenting the certificate of its node.
MUTUAL_TLS = frozenset({"node_binding", "session_binding", "tls_versions", "tls_13"})
NODES = ("conformance-a", "conformance-b", "conformance-c")
#: The Annex C.5 configuration a scenario needs, when it is not `train`.
CONFIGURATION = {
    "evaluate_phases": "evaluate",
    "query_phases": "analytics",
    "task_machine": "evaluate",
}


def configuration(case: Case) -> str:
    return CONFIGURATION.get(str(case.steps[0]["scenario"]), "train") if case.steps else "train"


def validate(case: Case) -> None:
    for step in case.steps:
        if set(step) != {"scenario"} or step["scenario"] not in SCENARIOS:
            raise ValueError(
                f"{case.name}: a server step is {{scenario: one of {sorted(SCENARIOS)}}}"
            )
        if CONFIGURATION.get(step["scenario"], "train") != configuration(case):
            raise ValueError(f"{case.name}: its scenarios need different configurations")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ready(
    address: str, proc: asyncio.subprocess.Process, tls: TlsFiles | None = None
) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.returncode is None:
        async with _channel(address, _client_credentials(tls, "conformance-a")) as channel:
            with contextlib.suppress(asyncio.TimeoutError, grpc.aio.AioRpcError):
                await asyncio.wait_for(channel.channel_ready(), timeout=1.0)
                return True
        await asyncio.sleep(0.1)
    return False


def _environment(
    case: Case, address: str, state: Path, workdir: Path
) -> tuple[dict[str, str], TlsFiles | None]:
    """Annex C.5's variables for the case, and the TLS files of a mutual-TLS case."""
    env = {
        **os.environ,
        "POLLEN_CONFORMANCE_ADDRESS": address,
        "POLLEN_CONFORMANCE_STATE_DIR": str(state),
        "POLLEN_CONFORMANCE_CONFIGURATION": configuration(case),
        "POLLEN_CONFORMANCE_CASE": case.name,
    }
    if not any(step["scenario"] in MUTUAL_TLS for step in case.steps):
        env["POLLEN_CONFORMANCE_INSECURE"] = "1"
        return env, None
    from conformance.tls import make_tls_files  # noqa: PLC0415 - the conformance extra

    tls = make_tls_files(Path(tempfile.mkdtemp(prefix="tls-", dir=workdir)), clients=NODES)
    env["POLLEN_CONFORMANCE_CERT"] = str(tls.server_cert)
    env["POLLEN_CONFORMANCE_KEY"] = str(tls.server_key)
    env["POLLEN_CONFORMANCE_CLIENT_CA"] = str(tls.ca)
    return env, tls


async def play(case: Case, command: Sequence[str], workdir: Path) -> CaseResult:
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
    log_path = workdir / (case.name.replace("/", "__") + ".log")
    address = f"127.0.0.1:{_free_port()}"
    env, tls = _environment(case, address, state, workdir)

    async def launch() -> asyncio.subprocess.Process:
        with log_path.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    proc = await launch()
    run = _Play(case, address, tls)

    async def crash_and_restart() -> bool:
        """SIGKILL the server (a crash), then start the same command on the same state."""
        nonlocal proc
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout=10.0)
        proc = await launch()
        return await _ready(address, proc, tls)

    run.restart = crash_and_restart

    def terminate() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    run.terminate = terminate
    outcome, note = "PASS", ""
    try:
        if not await _ready(address, proc, tls):
            outcome, note = (
                "ERROR",
                f"the server did not listen on {address} within {START_TIMEOUT_S:.0f} s",
            )
        else:
            for index, step in enumerate(case.steps):
                await asyncio.wait_for(
                    SCENARIOS[step["scenario"]](run, f"step {index + 1} ({step['scenario']})"),
                    timeout=case.timeout_s,
                )
    except CaseFailed:
        pass
    except TimeoutError:
        run.failures.append(
            Failure(step="case", expected=f"done within {case.timeout_s:.0f} s", actual="timed out")
        )
    except Exception as exc:  # a harness defect: never a verdict on the server
        outcome, note = "ERROR", f"{type(exc).__name__}: {exc}"
    finally:
        await run.close()
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            if proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=wait)
    if run.failures and outcome != "ERROR":
        outcome = "FAIL"
    tail = log_path.read_bytes()[-4000:].decode(errors="replace") if log_path.exists() else ""
    return CaseResult(
        case=case,
        outcome=outcome,
        failures=tuple(run.failures),
        duration_s=time.monotonic() - started,
        exit_status=proc.returncode,
        output_tail=tail,
        note=note,
    )


async def play_all(
    cases: Sequence[Case], command: Sequence[str], workdir: Path, *, jobs: int
) -> list[CaseResult]:
    gate = asyncio.Semaphore(max(1, jobs))

    async def one(case: Case) -> CaseResult:
        async with gate:
            return await play(case, command, workdir)

    return list(await asyncio.gather(*(one(c) for c in cases)))
