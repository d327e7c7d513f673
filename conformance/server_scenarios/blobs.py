"""Server-mode scenarios about blob downloads and uploads."""

from __future__ import annotations

import asyncio
import hashlib
import time

import grpc
import numpy as np

from conformance.server_play import (
    PB,
    Peer,
    Play,
    Reply,
    blob_rpc,
    fed_rpc,
    fit_result,
    initial_model,
    plus,
)
from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    task_pb2,
    tensor_pb2,
)
from pollen.errors import ErrorCode


async def blobs(play: Play, step: str) -> None:
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
            blob_rpc("DownloadBlob"),
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
        blob_rpc("DownloadBlob"),
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
        return await a.call(blob_rpc("UploadBlob"), request.SerializeToString())

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


async def uploads(play: Play, step: str) -> None:  # noqa: PLR0915 - one story, told in order
    """Upload check order, resume from the committed size, digest verification, and a
    result that references an uploaded blob."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    sa, sb = ha.session_id, hb.session_id
    chunk = min(ha.chunk_size_bytes, 16384)
    max_blob = ha.capabilities.limits.max_blob_bytes or 1 << 35

    async def up(  # noqa: PLR0917 - the request's fields, in the proto's order
        peer: Peer, session: str, sha: bytes, total: int, offset: int, data: bytes
    ) -> Reply:
        request = blob_service_pb2.UploadBlobRequest(
            session_id=session, sha256=sha, total_size=total, offset=offset, data=data
        )
        return await peer.call(blob_rpc("UploadBlob"), request.SerializeToString())

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
        blob_rpc("DownloadBlob"),
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
                fed_rpc("Heartbeat"), PB.HeartbeatRequest(session_id=session).SerializeToString()
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


async def partial_uploads(play: Play, step: str) -> None:
    """Partial uploads outlive a new Handshake (PLN-BLB-028) and stay apart per node, even
    for the same digest (PLN-BLB-029)."""
    a, b = play.peer(), play.peer("conformance-b")
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    hb = await play.handshake(b, "conformance-b", step)
    chunk = min(hb.chunk_size_bytes, 4096)
    body = bytes(range(256)) * (3 * chunk // 256)
    sha = hashlib.sha256(body).digest()

    async def up(peer: Peer, session: str, offset: int, data: bytes) -> int | None:
        request = blob_service_pb2.UploadBlobRequest(
            session_id=session, sha256=sha, total_size=len(body), offset=offset, data=data
        )
        reply = await peer.call(blob_rpc("UploadBlob"), request.SerializeToString())
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
