"""Server-mode scenarios about handshakes, sessions, long polls and the transport."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import numpy as np

from conformance.server_play import (
    GRACE_S,
    PB,
    PRINTABLE,
    Play,
    Reply,
    blob_rpc,
    fed_rpc,
    fit_result,
    hello_request,
    plus,
)
from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    task_pb2,
    tensor_pb2,
)
from pollen.errors import ErrorCode
from pollen.limits import Limits


async def handshake_negotiation(play: Play, step: str) -> None:
    peer = play.peer()
    request = hello_request(
        "conformance-a",
        versions=((1, 0), (7, 3)),
        codecs=("x-future", "raw", "zstd"),
        features=("x-unknown",),
    )
    reply = await peer.call(fed_rpc("Handshake"), request)
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
        1 <= len(session) <= 128 and set(session) <= PRINTABLE,
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


async def handshake_errors(play: Play, step: str) -> None:
    peer = play.peer()
    reply = await peer.call(
        fed_rpc("Handshake"), hello_request("conformance-a", versions=((2, 0),))
    )
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
        (hello_request("bad node id!", versions=()), ErrorCode.INVALID_ARGUMENT, "", "PLN-HS-033"),
        (
            hello_request("bad node id!", versions=((2, 0),)),
            ErrorCode.VERSION_UNSUPPORTED,
            "",
            "PLN-HS-033",
        ),
        (hello_request("bad node id!"), ErrorCode.INVALID_ARGUMENT, "node_id", "PLN-HS-027"),
        (
            hello_request(
                "",
            ),
            ErrorCode.INVALID_ARGUMENT,
            "node_id",
            "PLN-HS-027",
        ),
        (
            hello_request("conformance-a", codecs=("zstd",)),
            ErrorCode.CAPABILITY_MISMATCH,
            "",
            "PLN-HS-033",
        ),
    ]
    for request, code, field, requirement in checks:
        play.expect_error(
            step, await peer.call(fed_rpc("Handshake"), request), code, requirement, field=field
        )
    garbage = await peer.call(fed_rpc("Handshake"), b"\xff\xff\xff")
    play.expect_error(step, garbage, ErrorCode.INVALID_ARGUMENT, "PLN-TRN-007")


async def sessions(play: Play, step: str) -> None:
    peer = play.peer()
    poll = PB.PollTaskRequest(session_id="no-such-session", wait_ms=0).SerializeToString()
    play.expect_error(
        step, await peer.call(fed_rpc("PollTask"), poll), ErrorCode.SESSION_UNKNOWN, "PLN-SES-003"
    )
    beat = PB.HeartbeatRequest(session_id="no-such-session", task_id="t").SerializeToString()
    play.expect_error(
        step, await peer.call(fed_rpc("Heartbeat"), beat), ErrorCode.SESSION_UNKNOWN, "PLN-SES-003"
    )
    leave = await peer.call(
        fed_rpc("Leave"), PB.LeaveRequest(session_id="no-such-session").SerializeToString()
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
        step, await peer.call(fed_rpc("PollTask"), old), ErrorCode.SESSION_UNKNOWN, "PLN-HS-030"
    )
    new = await peer.call(
        fed_rpc("PollTask"),
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
    reply = await peer.call(fed_rpc("Leave"), raw)
    play.check(
        reply.status == grpc.StatusCode.OK,
        step,
        "Leave with an unknown reason succeeds",
        reply.status.name,
        "PLN-SES-023",
    )
    after = PB.PollTaskRequest(session_id=second.session_id, wait_ms=0).SerializeToString()
    play.expect_error(
        step, await peer.call(fed_rpc("PollTask"), after), ErrorCode.SESSION_UNKNOWN, "PLN-SES-021"
    )


async def long_poll(play: Play, step: str) -> None:
    peer = play.peer()
    response = await play.handshake(peer, "conformance-a", step)
    cap = response.max_poll_wait_ms / 1000
    for wait_ms in (600, 10**9):
        wait = min(wait_ms / 1000, cap)
        reply = await peer.call(
            fed_rpc("PollTask"),
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


async def heartbeats(play: Play, step: str) -> None:
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
        reply = await a.call(fed_rpc("Heartbeat"), request)
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


async def session_replace(play: Play, step: str) -> None:
    """A new Handshake of a node ends its old session, held poll included, and keeps its task."""
    a = play.peer()
    first = await play.handshake(a, "conformance-a", step)
    held = asyncio.ensure_future(
        a.call(
            fed_rpc("PollTask"),
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


async def services(play: Play, step: str) -> None:
    """Every RPC of the two services is served under its standard path (PLN-TRN-001)."""
    peer = play.peer()
    for name in ("Handshake", "PollTask", "SubmitResult", "Heartbeat", "Leave", "UploadBlob"):
        path = fed_rpc(name) if name != "UploadBlob" else blob_rpc(name)
        reply = await peer.call(path, b"", timeout=5)
        play.check(
            reply.status != grpc.StatusCode.UNIMPLEMENTED,
            step,
            f"{path} served",
            reply.status.name,
            "PLN-TRN-001",
        )
    _, reply = await peer.stream(blob_rpc("DownloadBlob"), b"", timeout=5)
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
        request = PB.HandshakeRequest.FromString(hello_request(f"conformance-{len(terms)}"))
        request.agent = agent
        reply = await peer.call(fed_rpc("Handshake"), request.SerializeToString())
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
    request = PB.HandshakeRequest.FromString(hello_request("conformance-c"))
    request.capabilities.limits.max_message_bytes = 1024
    play.expect_error(
        step,
        await peer.call(fed_rpc("Handshake"), request.SerializeToString()),
        ErrorCode.CAPABILITY_MISMATCH,
        "PLN-HS-025",
    )


async def draining(play: Play, step: str) -> None:
    """After SIGTERM every request is answered: OK before the drain begins, UNAVAILABLE once
    it has (or from the transport once the server is gone), never left hanging."""
    a, b = play.peer(), play.peer()
    ha = await play.handshake(a, "conformance-a", step)
    held = asyncio.create_task(
        a.call(
            fed_rpc("PollTask"),
            PB.PollTaskRequest(session_id=ha.session_id, wait_ms=2000).SerializeToString(),
            timeout=10,
        )
    )
    beat = PB.HeartbeatRequest(session_id=ha.session_id).SerializeToString()
    first = await b.call(fed_rpc("Heartbeat"), beat)  # b's connection is up before the stop
    play.check(first.data is not None, step, "a Heartbeat answered", first.code, "PLN-SES-010")
    assert play.terminate is not None
    play.terminate()
    allowed = (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    for _ in range(40):
        reply = await b.call(fed_rpc("Heartbeat"), beat, timeout=5)
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


async def declared_limits(play: Play, step: str) -> None:
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
    reply = await b.call(blob_rpc("UploadBlob"), first.SerializeToString())
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


async def recommended(play: Play, step: str) -> None:
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
            await a.call(fed_rpc("Handshake"), hello_request("bad node")),
            "node_id",
        ),
        (
            "PollTask",
            await a.call(
                fed_rpc("PollTask"), PB.PollTaskRequest(session_id="nope").SerializeToString()
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
