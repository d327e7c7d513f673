"""Server-mode scenarios about tasks and rounds: results, aggregation, deadlines, dropouts,
restarts, and the task machine's complement."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from conformance.client_runner import CaseFailed
from conformance.server_play import (
    GRACE_S,
    PB,
    PRINTABLE,
    START_TIMEOUT_S,
    Peer,
    Play,
    blob_rpc,
    evaluate_result,
    expect_run_failed,
    fed_rpc,
    fit_result,
    initial_model,
    keep_polling,
    plus,
    plus_of,
    poll_once,
    query_result,
)
from pollen._generated.pollen.v1 import (
    blob_service_pb2,
    error_pb2,
    task_pb2,
    tensor_pb2,
)
from pollen.errors import ErrorCode
from pollen.state import TASK


async def training(play: Play, step: str) -> None:
    a, b = play.peer(), play.peer()
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    sb = (await play.handshake(b, "conformance-b", step)).session_id
    task_a, task_b = await asyncio.gather(play.poll_task(a, sa, step), play.poll_task(b, sb, step))
    for task in (task_a, task_b):
        tid = task.task_id.encode()
        play.check(
            1 <= len(tid) <= 128 and set(tid) <= PRINTABLE,
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
        await a.call(fed_rpc("SubmitResult"), unknown.SerializeToString()),
        ErrorCode.TASK_UNKNOWN,
        "PLN-TSK-028",
    )
    unset = PB.SubmitResultRequest(
        session_id=sa, result=task_pb2.TaskResult(task_id=task_a.task_id)
    )
    play.expect_error(
        step,
        await a.call(fed_rpc("SubmitResult"), unset.SerializeToString()),
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
        await a.call(fed_rpc("SubmitResult"), foreign.SerializeToString()),
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
        first = await peer.call(fed_rpc("SubmitResult"), request)
        ok = play.check(
            first.data is not None and not PB.SubmitResultResponse.FromString(first.data).duplicate,
            step,
            "the result accepted (duplicate false)",
            f"{first.status.name} {first.code}",
            "PLN-TSK-028",
        )
        if ok:
            second = await peer.call(fed_rpc("SubmitResult"), request)
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


async def resubmits(play: Play, step: str) -> None:
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


async def evaluate_phases(play: Play, step: str) -> None:
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


async def query_phases(play: Play, step: str) -> None:
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
            reply, task = await poll_once(a, sa, 1000)
            if reply.data is None or done.is_set():
                return
            if task is not None:
                kinds.append(str(task.WhichOneof("instruction")))
                if kinds[-1] in ("shutdown", "reconnect"):
                    return

    watcher = asyncio.create_task(watch_a())
    try:
        _, early = await poll_once(b, sb, 1500)
        early_kind = early.WhichOneof("instruction") if early is not None else None
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
        await expect_run_failed(play, b, sb, step)
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


async def dropout(play: Play, step: str) -> None:
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
        reply = await b.call(fed_rpc("Heartbeat"), beat)
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
            await b.call(fed_rpc("SubmitResult"), unset),
            ErrorCode.SESSION_UNKNOWN,
            "PLN-SES-006",
        )
        bad_upload = blob_service_pb2.UploadBlobRequest(
            session_id=sb, sha256=b"short", total_size=1, data=b"xx"
        ).SerializeToString()
        play.expect_error(
            step,
            await b.call(blob_rpc("UploadBlob"), bad_upload),
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

    next_a, _ = await asyncio.gather(keep_polling(play, a, sa, step, done), silent_b())
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


async def task_deadline(play: Play, step: str) -> None:
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
            reply = await b.call(fed_rpc("Heartbeat"), beat)
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
        task = await keep_polling(play, a, sa, step, done)
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


async def rejections(play: Play, step: str) -> None:
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
    await expect_run_failed(play, a, sa, step)


async def malformed_results(play: Play, step: str) -> None:
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
    await expect_run_failed(play, a, sa, step)


async def restart(play: Play, step: str) -> None:
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
        step, await a.call(fed_rpc("PollTask"), old), ErrorCode.SESSION_UNKNOWN, "PLN-SES-003"
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


async def deadline_grace(play: Play, step: str) -> None:
    """A result sent after deadline_ms, within 5 s of it, still counts (PLN-TSK-020)."""
    (a, ha, ta), (b, hb, tb) = await play.pair(step)
    delivered = time.monotonic()
    play.accepted(
        await play.submit(a, ha.session_id, fit_result(ta, plus(1), 1)), step, "PLN-TSK-028"
    )
    late_by = 2.0
    beat = PB.HeartbeatRequest(session_id=hb.session_id, task_id=tb.task_id).SerializeToString()
    while time.monotonic() < delivered + tb.deadline_ms / 1000 + late_by:
        await b.call(fed_rpc("Heartbeat"), beat)  # the session, not the task, is kept alive
        await asyncio.sleep(0.5)
    reply = await play.submit(b, hb.session_id, fit_result(tb, plus(3), 3))
    play.check(
        reply.data is not None,
        step,
        f"a result {late_by:.0f} s past deadline_ms accepted",
        f"{reply.status.name} {reply.code}",
        "PLN-TSK-020",
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


async def task_machine(play: Play, step: str) -> None:
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

    async def sweep(peer: Peer, session: str, task: task_pb2.Task, state: str, where: str) -> None:
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
            await b.call(fed_rpc("Leave"), leave.SerializeToString())
            sessions["b"] = (await play.handshake(b, "conformance-b", where)).session_id
        else:  # expired: heartbeats keep the session, not the task, alive past its deadline
            beat = PB.HeartbeatRequest(session_id=sessions["b"], task_id=tb.task_id)
            for _ in range(30):
                reply = await b.call(fed_rpc("Heartbeat"), beat.SerializeToString())
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
