"""Work on tasks: failures the session survives, heartbeats, abandoned and redelivered
tasks, against a scripted server over real gRPC."""

from collections.abc import Callable

import numpy as np

from pollen._generated.pollen.v1 import task_pb2
from pollen.dtypes import Dtype
from pollen.errors import ErrorCode, SessionUnknown, StatusCode, TaskExpired
from pollen.messages import (
    FailureReply,
    FitInstruction,
    FitReply,
    GetPropertiesInstruction,
    GetPropertiesReply,
    QueryInstruction,
)
from pollen.tensors import EncodedTensor
from tests.reference_client.apps import BadResult, Broken, SlowTrainer, Trainer
from tests.reference_client.fakeserver import (
    FakeServer,
    Running,
    fit_task,
    result_arrays,
    shutdown,
    task,
)


def _failure(server: FakeServer, task_id: str) -> FailureReply:
    reply = server.results[task_id].reply
    assert isinstance(reply, FailureReply), reply
    return reply


def test_unsupported_and_unknown_instructions_fail_and_the_session_goes_on(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(task_pb2.Task(task_id="none", run_id="run-1"))  # no instruction set
    server.add_task(task("q1", QueryInstruction()))  # Trainer does not implement query
    server.add_task(task("p1", GetPropertiesInstruction()))
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)]))
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    assert _failure(server, "none").error.code is ErrorCode.UNSUPPORTED_INSTRUCTION
    assert _failure(server, "q1").error.code is ErrorCode.UNSUPPORTED_INSTRUCTION
    properties = server.results["p1"].reply
    assert isinstance(properties, GetPropertiesReply)
    assert properties.properties == {"cores": 2}
    assert isinstance(server.results["t1"].reply, FitReply)
    assert len(server.calls_of("Handshake")) == 1


def test_app_errors_are_reported_without_their_message_and_the_session_goes_on(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)]))
    server.add_task(shutdown())
    assert start(Broken(), server.address).join() == 0
    error = _failure(server, "t1").error
    assert error.code is ErrorCode.APP_ERROR
    assert "ValueError" in error.message
    assert "1234" not in error.message  # local data stays local (PLN-ERR-006)
    assert server.calls_of("Leave")[0].request.reason == 2


def test_a_malformed_result_is_an_app_error(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)]))
    server.add_task(shutdown())
    assert start(BadResult(), server.address).join() == 0
    error = _failure(server, "t1").error
    assert error.code is ErrorCode.APP_ERROR
    assert "num_examples" in error.message


def test_a_tensor_that_does_not_decode_is_reported_with_its_code_and_field(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    bad = EncodedTensor(dtype=Dtype.FLOAT32, shape=(3,), codec="raw", payload=b"\x00" * 7)
    good = EncodedTensor(dtype=Dtype.FLOAT32, shape=(1,), codec="raw", payload=b"\x00" * 4)
    app = Trainer()
    server.add_task(task("t1", FitInstruction(parameters=(good, bad))))
    server.add_task(shutdown())
    assert start(app, server.address).join() == 0
    error = _failure(server, "t1").error
    assert error.code is ErrorCode.TENSOR_SIZE_MISMATCH
    assert error.field.startswith("fit.parameters[1]")
    assert app.fits == 0


def test_heartbeats_keep_a_slow_task_alive(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(heartbeat_interval_ms=200)
    app = SlowTrainer(seconds=1.0)
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)]))
    server.add_task(shutdown())
    assert start(app, server.address).join() == 0
    beats = server.calls_of("Heartbeat")
    assert len(beats) >= 3
    assert {b.request.task_id for b in beats} == {"t1"}
    assert {b.request.session_id for b in beats} == {"session-1"}
    assert isinstance(server.results["t1"].reply, FitReply)


def test_a_task_the_server_no_longer_wants_is_abandoned(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(heartbeat_interval_ms=200)
    server.task_active = False
    app = SlowTrainer(seconds=10.0)
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)]))
    try:
        client = start(app, server.address)
        server.wait_calls("Heartbeat")
        server.wait_calls("PollTask", 2)  # polling again while the app still runs
        assert not app.release.is_set()
        server.add_task(shutdown())
        assert client.join() == 0
    finally:
        app.release.set()
    assert server.calls_of("SubmitResult") == []


def test_a_task_past_its_deadline_is_abandoned(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    app = SlowTrainer(seconds=10.0)
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)], deadline_ms=200))
    try:
        client = start(app, server.address)
        server.wait_calls("PollTask", 2)
        server.add_task(shutdown())
        assert client.join() == 0
    finally:
        app.release.set()
    assert server.calls_of("SubmitResult") == []  # PLN-TSK-018


def test_a_redelivered_task_is_answered_from_the_kept_result(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    app = Trainer()
    t1 = fit_task("t1", [np.arange(3, dtype=np.float32)])
    server.add_task(t1)
    server.add_task(t1)  # delivered again (at least once delivery)
    server.add_task(shutdown())
    assert start(app, server.address).join() == 0
    submits = server.calls_of("SubmitResult")
    assert len(submits) == 2
    assert submits[0].request.result == submits[1].request.result
    assert app.fits == 1  # PLN-TSK-015


def test_work_survives_a_lost_session_when_the_task_is_handed_out_again(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(heartbeat_interval_ms=200)
    app = SlowTrainer(seconds=10.0)
    t1 = fit_task("t1", [np.arange(3, dtype=np.float32)])
    server.add_task(t1)
    server.fail("Heartbeat", SessionUnknown("session timed out"))
    try:
        client = start(app, server.address)
        server.wait_calls("Handshake", 2)
        server.add_task(t1)  # the new session gets the open task again (PLN-HS-031)
        server.wait_for(
            lambda calls: any(
                c.method == "PollTask" and c.request.session_id == "session-2" for c in calls
            )
        )
        app.release.set()
        server.wait_calls("SubmitResult")
        server.add_task(shutdown())
        assert client.join() == 0
    finally:
        app.release.set()
    submit = server.calls_of("SubmitResult")[0].request
    assert submit.session_id == "session-2"
    assert app.fits == 1
    np.testing.assert_array_equal(result_arrays(server, "t1")[0], np.arange(1, 4))
    assert {h.request.node_id for h in server.calls_of("Handshake")} == {"node-1"}


def test_results_are_resubmitted_after_retryable_errors_and_dropped_after_others(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(fit_task("t1", [np.zeros(2, dtype=np.float32)]))
    server.add_task(fit_task("t2", [np.zeros(2, dtype=np.float32)]))
    server.add_task(shutdown())
    server.fail("SubmitResult", StatusCode.DEADLINE_EXCEEDED)  # t1's first attempt
    server.fail("SubmitResult", TaskExpired("too late"), after=1)  # t2's only attempt
    assert start(Trainer(), server.address).join() == 0
    submits = [c.request for c in server.calls_of("SubmitResult")]
    assert [s.result.task_id for s in submits] == ["t1", "t1", "t2"]  # PLN-TSK-032
    assert submits[0].result == submits[1].result
    assert "t1" in server.results
    assert server.methods()[-2:] == ["PollTask", "Leave"]  # polling went on
