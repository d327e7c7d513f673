"""The session as the spec's client machine runs it: handshake, retries, losing and
leaving sessions, against a scripted server over real gRPC."""

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pollen.dtypes import Dtype
from pollen.errors import (
    InternalError,
    InvalidArgument,
    SessionUnknown,
    StatusCode,
    Unavailable,
    VersionUnsupported,
)
from pollen.messages import FitReply
from pollen.version import ProtocolVersion
from tests.reference_client.apps import Trainer
from tests.reference_client.fakeserver import (
    FAST,
    FakeServer,
    Running,
    fit_task,
    reconnect,
    result_arrays,
    shutdown,
)

CLIENT_STOPPING, SHUTDOWN_INSTRUCTION, RECONNECT_INSTRUCTION, FATAL_ERROR = 1, 2, 3, 4
# Timers on a busy machine fire late, never early; this covers clock granularity.
GRACE = 0.02


class Querier(Trainer):
    def query(self, config: object, inputs: object) -> object:  # type: ignore[override]
        raise NotImplementedError


def test_handshake_fields_and_a_fit_task_with_inline_tensors(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    params: list[npt.NDArray[Any]] = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([7, 8], dtype=np.int64),
    ]
    server.add_task(fit_task("t1", params))
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0

    hello = server.calls_of("Handshake")[0].request
    assert [(v.major, v.minor) for v in hello.versions] == [(1, 0)]  # one per major
    assert hello.node_id == "node-1"
    assert hello.agent.startswith("pollen-python/")
    assert hello.capabilities.codecs[0] == "raw"
    assert "zstd" in hello.capabilities.codecs
    assert sorted(hello.capabilities.dtypes) == sorted(d.value for d in Dtype)
    assert list(hello.capabilities.features) == []  # Trainer does not implement query
    assert hello.capabilities.limits.max_message_bytes == 4 * 1024 * 1024

    reply = server.results["t1"].reply
    assert isinstance(reply, FitReply)
    assert reply.num_examples == 10
    assert reply.metrics == {"loss": 0.25}
    got = result_arrays(server, "t1")
    assert [a.dtype for a in got] == [np.float32, np.int64]
    np.testing.assert_array_equal(got[0], params[0] + 1)
    np.testing.assert_array_equal(got[1], params[1] + 1)
    assert server.calls_of("Leave")[-1].request.reason == SHUTDOWN_INSTRUCTION


def test_query_is_advertised_only_by_apps_that_implement_it(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(shutdown())
    assert start(Querier(), server.address).join() == 0
    assert list(server.calls_of("Handshake")[0].request.capabilities.features) == ["query"]


def test_every_rpc_carries_a_deadline_and_polls_outlast_their_wait(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(max_poll_wait_ms=300, heartbeat_interval_ms=200)
    big = np.ones(50_000, dtype=np.float32)
    server.add_task(fit_task("t1", [big], server=server))
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    methods = {c.method for c in server.calls}
    assert {"Handshake", "PollTask", "DownloadBlob", "SubmitResult", "Leave"} <= methods
    for call in server.calls:
        assert call.deadline_s is not None
        assert call.deadline_s < 3600, call.method
    for poll in server.calls_of("PollTask"):
        assert poll.request.wait_ms == 300  # max_poll_wait_ms (PLN-TSK-009)
        assert poll.deadline_s is not None
        assert poll.deadline_s > 0.3 + 4.5  # PLN-TRN-016, with slack for transit
    leave_deadline = server.calls_of("Leave")[-1].deadline_s
    assert leave_deadline is not None
    assert leave_deadline <= 5.1  # PLN-SES-019 (5 s; the wire rounds timeouts up)


def test_version_unsupported_ends_the_client_after_one_handshake(
    server: FakeServer, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    error = VersionUnsupported("no", supported_versions=[ProtocolVersion(2, 3)])
    server.fail("Handshake", error, times=100)
    with caplog.at_level(logging.ERROR, logger="reference_client"):
        assert start(Trainer(), server.address).join() == 1
    time.sleep(0.3)  # several backoff delays of the test policy: nothing more comes
    assert server.methods() == ["Handshake"]
    assert "2.3" in caplog.text  # the server's versions are reported (PLN-HS-010)


def test_non_retryable_handshake_errors_are_not_retried(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.fail("Handshake", InvalidArgument("bad node id", field="node_id"), times=100)
    assert start(Trainer(), server.address).join() == 1
    time.sleep(0.3)
    assert server.methods() == ["Handshake"]


def test_retryable_failures_are_retried_with_growing_delays(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.fail("Handshake", StatusCode.UNAVAILABLE, times=2)  # bare status, no trailer
    server.fail("PollTask", InternalError("hiccup"))  # typed, retryable by the table
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    hellos = server.calls_of("Handshake")
    assert len(hellos) == 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(hellos)]
    # Retry n waits at least (1 - jitter) * base(n) of the policy (PLN-RTY-007's shape).
    assert gaps[0] >= 0.8 * FAST.base(1) - GRACE
    assert gaps[1] >= 0.8 * FAST.base(2) - GRACE
    polls = server.calls_of("PollTask")
    assert len(polls) == 2
    # The handshake's success does not restart the sequence; the poll retry is the third.
    assert polls[1].at - polls[0].at >= 0.8 * FAST.base(3) - GRACE


def test_retry_after_ms_is_honoured(server: FakeServer, start: Callable[..., Running]) -> None:
    server.fail("PollTask", Unavailable("draining", retry_after_ms=400))
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    first, second = server.calls_of("PollTask")[:2]
    assert second.at - first.at >= 0.4 - GRACE  # PLN-RTY-006


def test_a_non_retryable_poll_failure_is_fatal(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.fail("PollTask", StatusCode.PERMISSION_DENIED, times=100)
    assert start(Trainer(), server.address).join() == 1
    assert server.methods() == ["Handshake", "PollTask", "Leave"]
    assert server.calls_of("Leave")[0].request.reason == FATAL_ERROR


def test_session_unknown_rehandshakes_and_submits_the_pending_result_first(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    app = Trainer()
    server.add_task(fit_task("t1", [np.zeros(3, dtype=np.float32)]))
    server.fail("SubmitResult", SessionUnknown("server restarted"))
    server.add_task(shutdown())
    assert start(app, server.address).join() == 0

    hellos = server.calls_of("Handshake")
    assert len(hellos) == 2
    assert {h.request.node_id for h in hellos} == {"node-1"}  # PLN-HS-028
    calls = server.calls
    second_hello = calls.index(hellos[1])
    after = calls[second_hello + 1]
    assert after.method == "SubmitResult"  # before any poll (PLN-SES-014)
    assert after.request.session_id == "session-2"
    assert after.request.result.task_id == "t1"
    first_submit = server.calls_of("SubmitResult")[0].request
    assert first_submit.result == after.request.result
    assert app.fits == 1


def test_a_spent_retry_budget_reconnects_with_the_same_identity(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.fail("PollTask", StatusCode.UNAVAILABLE, times=FAST.attempts_per_call)
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    hellos = server.calls_of("Handshake")
    assert len(hellos) == 2
    assert hellos[1].request.node_id == hellos[0].request.node_id


def test_reconnects_after_a_server_restart(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    first = make_server()
    app = Trainer()
    client = start(app, first.address)
    first.wait_calls("PollTask")
    first.stop()
    second = make_server(port=first.port)
    second.add_task(fit_task("t1", [np.ones(2, dtype=np.float32)]))
    second.add_task(shutdown())
    assert client.join(timeout=20) == 0
    # The old session is unknown to the new server: handshake again as the same node.
    assert second.calls_of("Handshake")[0].request.node_id == "node-1"
    np.testing.assert_array_equal(result_arrays(second, "t1")[0], np.full(2, 2.0))


def test_reconnect_instruction_leaves_then_handshakes_after_the_delay(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(reconnect("r1", delay_ms=300))
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    methods = server.methods()
    assert methods[:4] == ["Handshake", "PollTask", "Leave", "Handshake"]
    poll, leave, hello = server.calls[1:4]
    assert leave.request.reason == RECONNECT_INSTRUCTION
    assert leave.request.session_id == "session-1"
    assert hello.request.node_id == "node-1"
    assert hello.at - poll.at >= 0.3 - GRACE  # PLN-CTL-002
    assert "r1" not in server.results  # no result for a control task


def test_shutdown_leaves_and_sends_nothing_more(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    time.sleep(0.2)
    assert server.methods() == ["Handshake", "PollTask", "Leave"]
    assert server.calls_of("Leave")[0].request.reason == SHUTDOWN_INSTRUCTION


def test_stop_while_idle_leaves_with_client_stopping(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    client = start(Trainer(), server.address)
    server.wait_calls("PollTask")
    client.stop.set()
    assert client.join() == 0
    leave = server.calls_of("Leave")[-1].request
    assert leave.reason == CLIENT_STOPPING
    assert leave.session_id == "session-1"


def test_a_handshake_response_with_a_version_not_offered_is_fatal(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(version=(1, 7))
    assert start(Trainer(), server.address).join() == 1
    assert server.methods() == ["Handshake", "Leave"]  # PLN-HS-011
    assert server.calls_of("Leave")[0].request.reason == FATAL_ERROR
