"""The round engine, driven by hand: no network, no clock, no disk."""

import dataclasses

import pytest

from pollen.blob import BlobRef
from pollen.dtypes import Dtype
from pollen.errors import (
    AppError,
    ErrorCode,
    ResultMismatch,
    StaleRound,
    TaskExpired,
    TaskNotAssigned,
    TaskUnknown,
    TensorSizeMismatch,
    UpdateRejected,
)
from pollen.messages import (
    EvaluateInstruction,
    EvaluateReply,
    FailureReply,
    FitInstruction,
    FitReply,
    GetParametersInstruction,
    GetParametersReply,
    QueryInstruction,
    QueryReply,
    ShutdownInstruction,
    TaskResult,
)
from pollen.tensors import EncodedTensor
from pollen.values import ConfigValue
from reference_server.engine import (
    AcceptedResult,
    AggregatePhase,
    CommitRound,
    Engine,
    PhaseClosed,
    PhaseKind,
    PhasePlan,
    QuorumPolicy,
    RunEnded,
    RunPlan,
    TasksReady,
)
from reference_server.strategies.base import TaskOutcome
from reference_server.strategies.fedavg import FedProx

MODEL = (
    EncodedTensor(
        dtype=Dtype.FLOAT32,
        shape=(2,),
        codec="raw",
        payload=b"",
        blob=BlobRef(sha256=bytes(32), size=8),
    ),
)
NEW_MODEL = (dataclasses.replace(MODEL[0], blob=BlobRef(sha256=b"\x01" * 32, size=8)),)


def plan(**kw: object) -> RunPlan:
    defaults: dict[str, object] = {
        "run_id": "r",
        "rounds": 2,
        "fit": PhasePlan(min_clients=2, min_results=2, timeout_s=10),
        "min_available_clients": 2,
        "start_timeout_s": 5,
    }
    defaults.update(kw)
    return RunPlan(**defaults)  # type: ignore[arg-type]


def engine(**kw: object) -> Engine:
    return Engine(plan(**kw), now=0.0, next_round=1, parameters=MODEL)


def fit_reply(n: int = 5) -> FitReply:
    return FitReply(parameters=MODEL, num_examples=n)


def accept(e: Engine, node: str, task_id: str, reply: object, now: float = 1.0) -> list[object]:
    result = TaskResult(task_id=task_id, reply=reply)  # type: ignore[arg-type]
    assert e.check_result(node, result)
    return list(e.accept(AcceptedResult(task_id=task_id, node_id=node, reply=result.reply), now))


def test_a_round_from_connection_to_commit() -> None:
    e = engine()
    assert e.connect("b", 0.0) == []
    assert e.state == "waiting"
    (ready,) = e.connect("a", 0.5)
    assert ready == TasksReady(node_ids=frozenset({"a", "b"}))
    assert e.state == "collecting"
    task_a = e.next_task("a", 1.0)
    assert task_a is not None
    assert isinstance(task_a.instruction, FitInstruction)
    assert task_a.instruction.parameters == MODEL
    assert task_a.instruction.config["round"] == 1
    # The phase deadline (0.5 + 10 s) seen from t = 1, less the 5 s grace (PLN-TSK-020).
    assert task_a.deadline_ms == 4500
    assert e.next_task("a", 2.0) == dataclasses.replace(task_a, deadline_ms=3500), "redelivered"
    task_b = e.next_task("b", 1.0)
    assert task_b is not None
    assert accept(e, "b", task_b.task_id, fit_reply(7)) == []
    closed, aggregate = accept(e, "a", task_a.task_id, fit_reply(3))
    assert isinstance(closed, PhaseClosed)
    assert (closed.accepted, closed.event) == (2, "collection_complete")
    assert isinstance(aggregate, AggregatePhase)
    assert [r.node_id for r in aggregate.results] == ["a", "b"], "fixed node order"
    assert e.state == "aggregating"
    assert e.aggregated(2.0, parameters=NEW_MODEL) == [CommitRound(round=1, last=False)]
    assert e.state == "committing"
    (ready,) = e.committed(3.0)
    assert isinstance(ready, TasksReady)
    assert e.round == 2
    task = e.next_task("a", 3.0)
    assert task is not None
    assert isinstance(task.instruction, FitInstruction)
    assert task.instruction.parameters == NEW_MODEL


def test_sampling_is_seeded_and_sorted() -> None:
    nodes = [f"n{i:02d}" for i in range(10)]

    def sampled(seed: int) -> frozenset[str]:
        e = engine(
            seed=seed,
            fit=PhasePlan(fraction=0.3, min_clients=2, timeout_s=10),
            min_available_clients=10,
        )
        actions: list[object] = []
        for node in nodes:
            actions += e.connect(node, 0.0)
        ready = [a for a in actions if isinstance(a, TasksReady)]
        assert len(ready) == 1
        return ready[0].node_ids

    assert sampled(1) == sampled(1)
    assert len(sampled(1)) == 3
    assert any(sampled(s) != sampled(1) for s in range(2, 6))


def _running(**kw: object) -> tuple[Engine, str, str]:
    e = engine(**kw)
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    ta, tb = e.next_task("a", 0.0), e.next_task("b", 0.0)
    assert ta is not None
    assert tb is not None
    return e, ta.task_id, tb.task_id


def test_deadline_with_quorum_aggregates_and_expires_the_rest() -> None:
    e, ta, tb = _running(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=10))
    accept(e, "a", ta, fit_reply())
    assert e.tick(9.9) == []
    closed, aggregate = e.tick(10.0)
    assert isinstance(aggregate, AggregatePhase)
    assert [f.outcome for f in aggregate.failures] == [TaskOutcome.EXPIRED]
    assert isinstance(closed, PhaseClosed)
    assert dict(closed.failures) == {"expired": 1}
    with pytest.raises(TaskExpired):
        e.check_result("b", TaskResult(task_id=tb, reply=fit_reply()))


def test_quorum_missed_fails_or_retries_by_policy() -> None:
    e, ta, _ = _running()
    accept(e, "a", ta, fit_reply())
    closed, ended = e.tick(10.0)
    assert isinstance(ended, RunEnded)
    assert ended.status == "failed"
    assert "1 accepted results, 2 needed" in ended.reason
    assert e.state == "failed"

    e, ta, tb = _running(on_quorum_missed=QuorumPolicy.RETRY, max_attempts=2)
    accept(e, "a", ta, fit_reply())
    closed, ready = e.tick(10.0)
    assert isinstance(closed, PhaseClosed)
    assert closed.event == "quorum_missed_retry"
    assert isinstance(ready, TasksReady)
    retry = e.next_task("a", 10.0)
    assert retry is not None
    assert "-a2-" in retry.task_id
    with pytest.raises(TaskExpired):  # the first attempt's results are gone
        e.check_result("b", TaskResult(task_id=tb, reply=fit_reply()))


def test_start_deadline() -> None:
    e = engine()
    e.connect("a", 0.0)
    assert e.tick(4.9) == []
    (ended,) = e.tick(5.0)
    assert isinstance(ended, RunEnded)
    assert "1 of 2 nodes connected" in ended.reason
    e = engine(on_quorum_missed=QuorumPolicy.RETRY, max_attempts=2)
    e.connect("a", 0.0)
    assert e.tick(5.0) == []
    assert e.state == "waiting"
    assert e.next_wakeup() == 10.0
    (ready,) = e.connect("b", 6.0)
    assert isinstance(ready, TasksReady)


def test_dropped_nodes_become_typed_outcomes() -> None:
    e, ta, _ = _running(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=10))
    accept(e, "a", ta, fit_reply())
    _, aggregate = e.disconnect("b", 2.0, reason="SESSION_TIMEOUT")
    assert isinstance(aggregate, AggregatePhase)
    (failure,) = aggregate.failures
    assert (failure.node_id, failure.outcome) == ("b", TaskOutcome.DROPPED)


def test_resubmissions_and_misaddressed_results() -> None:
    e, ta, tb = _running(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=10))
    accept(e, "a", ta, fit_reply())
    assert e.check_result("a", TaskResult(task_id=ta, reply=fit_reply())) is False, "duplicate"
    with pytest.raises(TaskUnknown):
        e.check_result("a", TaskResult(task_id="nope", reply=fit_reply()))
    with pytest.raises(TaskNotAssigned):
        e.check_result("a", TaskResult(task_id=tb, reply=fit_reply()))
    with pytest.raises(ResultMismatch):
        e.check_result("b", TaskResult(task_id=tb, reply=EvaluateReply(loss=1.0, num_examples=1)))


def test_rejected_and_failed_results() -> None:
    e, ta, tb = _running(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=10))
    error = UpdateRejected("NaN", field="parameters[0]")
    assert e.reject(ta, error, 1.0) == []
    with pytest.raises(UpdateRejected):
        e.check_result("a", TaskResult(task_id=ta, reply=fit_reply()))
    closed, ended = accept(e, "b", tb, FailureReply(error=AppError("out of memory")))
    assert isinstance(ended, RunEnded)
    assert closed.failures == {"rejected": 1, "failed": 1}  # type: ignore[attr-defined]


def test_tasks_not_yet_handed_out_cannot_be_answered() -> None:
    e = engine()
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    task_id = "r-r1-fit-a1-a"
    with pytest.raises(TaskNotAssigned, match="never handed out"):
        e.check_result("a", TaskResult(task_id=task_id, reply=fit_reply()))


def test_evaluate_phase_uses_the_new_model() -> None:
    e, ta, tb = _running(evaluate=PhasePlan(min_clients=2, min_results=2, timeout_s=10))
    accept(e, "a", ta, fit_reply())
    accept(e, "b", tb, fit_reply())
    (ready,) = e.aggregated(2.0, parameters=NEW_MODEL)
    assert isinstance(ready, TasksReady)
    task = e.next_task("a", 2.0)
    assert task is not None
    assert isinstance(task.instruction, EvaluateInstruction)
    assert task.instruction.parameters == NEW_MODEL
    accept(e, "a", task.task_id, EvaluateReply(loss=0.5, num_examples=2))
    other = e.next_task("b", 2.0)
    assert other is not None
    _, aggregate = accept(e, "b", other.task_id, EvaluateReply(loss=0.7, num_examples=2))
    assert aggregate.kind is PhaseKind.EVALUATE  # type: ignore[attr-defined]
    assert e.aggregated(3.0, parameters=None) == [CommitRound(round=1, last=False)]


def test_run_end_hands_out_shutdown_and_leave_completes_it() -> None:
    e = Engine(plan(rounds=1), now=0.0, next_round=1, parameters=MODEL)
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    for node in "ab":
        task = e.next_task(node, 0.0)
        assert task is not None
        accept(e, node, task.task_id, fit_reply())
    assert e.aggregated(1.0, parameters=NEW_MODEL) == [CommitRound(round=1, last=True)]
    (ended,) = e.committed(1.0)
    assert ended == RunEnded(status="finished", reason="all rounds committed")
    shutdown = e.next_task("a", 2.0)
    assert shutdown is not None
    assert isinstance(shutdown.instruction, ShutdownInstruction)
    assert e.next_task("a", 2.5) == shutdown
    e.disconnect("a", 3.0, reason="SHUTDOWN_INSTRUCTION")
    assert e.task_outcomes()[shutdown.task_id] == "completed"


def test_round_zero_fetches_the_first_model_from_one_client() -> None:
    e = Engine(plan(), now=0.0, next_round=0, parameters=None)
    (ready,) = e.connect("a", 0.0)
    assert ready == TasksReady(node_ids=frozenset({"a"}))
    task = e.next_task("a", 0.0)
    assert task is not None
    assert isinstance(task.instruction, GetParametersInstruction)
    _, aggregate = accept(e, "a", task.task_id, GetParametersReply(parameters=MODEL))
    assert aggregate.kind is PhaseKind.INITIALIZE  # type: ignore[attr-defined]
    assert e.aggregated(1.0, parameters=MODEL) == [CommitRound(round=0, last=False)]
    assert e.committed(1.0) == []  # round 1 waits for a second node
    assert e.round == 1


def test_a_task_expires_a_grace_period_after_its_deadline() -> None:
    e = engine(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=30))
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    task = e.next_task("a", 0.0)
    assert task is not None
    assert task.deadline_ms == 25_000
    e.tick(25.5)  # past deadline_ms, within the grace: a result still counts
    assert e.task_outcomes()[task.task_id] == "delivered"
    e.tick(30.0)
    assert e.task_outcomes()[task.task_id] == "expired"
    short = engine(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=2))
    short.connect("a", 0.0)
    short.connect("b", 0.0)
    first = short.next_task("a", 0.0)
    assert first is not None
    assert first.deadline_ms == 1000  # a short phase keeps half its time as grace


def test_analytics_runs_query_phases() -> None:
    e = Engine(
        plan(
            analytics=True,
            query=PhasePlan(min_clients=2, min_results=2, timeout_s=5, config={"q": "age"}),
        ),
        now=0.0,
        next_round=1,
    )
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    task = e.next_task("a", 0.0)
    assert task is not None
    assert isinstance(task.instruction, QueryInstruction)
    assert task.instruction.config == {"round": 1, "q": "age"}
    accept(e, "a", task.task_id, QueryReply(metrics={"n": 1}))


def _analytics(min_clients: int = 1) -> Engine:
    return Engine(
        plan(
            analytics=True,
            min_available_clients=min_clients,
            query=PhasePlan(min_clients=min_clients, min_results=1, timeout_s=5),
        ),
        now=0.0,
        next_round=1,
    )


def test_query_tasks_go_only_to_sessions_with_the_query_feature() -> None:
    e = _analytics(min_clients=2)
    e.connect("a", 0.0, query=False)
    e.connect("b", 0.0)
    assert e.next_task("b", 0.0) is None  # a node without the feature does not count
    e.connect("c", 0.0)
    assert e.next_task("a", 0.0) is None
    for node in ("b", "c"):
        task = e.next_task(node, 0.0)
        assert task is not None
        assert isinstance(task.instruction, QueryInstruction)


def test_a_new_session_without_the_query_feature_drops_the_open_query_task() -> None:
    e = _analytics()
    e.connect("a", 0.0)
    task = e.next_task("a", 0.0)
    assert task is not None
    e.connect("a", 1.0, query=False)
    assert e.task_outcomes()[task.task_id] == "dropped"
    after = e.next_task("a", 1.0)  # the phase missed its quorum: the run ends
    assert after is not None
    assert isinstance(after.instruction, ShutdownInstruction)


def test_stop_closes_open_tasks_as_stale() -> None:
    e, ta, _ = _running()
    (ended,) = e.stop("operator")
    assert isinstance(ended, RunEnded)
    assert ended.status == "stopped"
    with pytest.raises(StaleRound):
        e.check_result("a", TaskResult(task_id=ta, reply=fit_reply()))
    assert e.stop("again") == []


def test_a_node_that_reconnects_keeps_its_tasks() -> None:
    e, ta, _ = _running()
    assert e.connect("a", 1.0) == []
    again = e.next_task("a", 1.0)
    assert again is not None
    assert again.task_id == ta
    assert ErrorCode.TASK_EXPIRED.name == "TASK_EXPIRED"


def test_the_strategy_adds_its_fit_config_and_the_run_config_wins() -> None:
    fit = PhasePlan(min_clients=2, min_results=2, timeout_s=10, config={"lr": 0.1, "mu": 9})
    rounds_asked: list[int] = []

    def strategy_config(round: int) -> dict[str, ConfigValue]:
        rounds_asked.append(round)
        return {"mu": 0.5, **FedProx(proximal_mu=0.25).fit_config(round)}

    e = Engine(plan(fit=fit), now=0.0, parameters=MODEL, fit_config=strategy_config)
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    task = e.next_task("a", 0.1)
    assert task is not None
    assert isinstance(task.instruction, FitInstruction)
    assert task.instruction.config == {"round": 1, "mu": 9, "proximal_mu": 0.25, "lr": 0.1}
    assert set(rounds_asked) == {1}


def test_a_task_is_open_only_for_the_node_it_was_assigned_to() -> None:
    e = engine()
    e.connect("a", 0.0)
    e.connect("b", 0.0)
    task = e.next_task("a", 0.1)
    assert task is not None
    assert e.is_open(task.task_id, "a")
    assert not e.is_open(task.task_id, "b")
    assert not e.is_open("", "a")
    assert not e.is_open("no-such-task", "a")


def test_a_task_rejected_for_any_error_answers_later_submits_with_update_rejected() -> None:
    # PLN-TSK-030: the reply of a closed task comes from its state, not from the error that
    # closed it (a short tensor payload here).
    e, ta, _ = _running(fit=PhasePlan(min_clients=2, min_results=1, timeout_s=10))
    e.reject(ta, TensorSizeMismatch("3 bytes short", field="result.fit.parameters[0]"), 1.0)
    with pytest.raises(UpdateRejected):
        e.check_result("a", TaskResult(task_id=ta, reply=fit_reply()))


def test_task_ids_of_engines_with_different_epochs_never_meet() -> None:
    # PLN-TSK-002: after a restart, the same round and node get a task id never seen before.
    ids = []
    for epoch in ("boot1", "boot2"):
        e = Engine(plan(), now=0.0, next_round=1, parameters=MODEL, epoch=epoch)
        e.connect("a", 0.0)
        e.connect("b", 0.0)
        task = e.next_task("a", 0.0)
        assert task is not None
        ids.append(task.task_id)
    assert ids[0] != ids[1]
