"""The round engine: a sans-IO coordinator of one run.

The engine knows which nodes are connected, which phase the run is in, which tasks exist
and how each ended. It never touches the network, the disk or the clock: drivers (the gRPC
service, the simulation loop) call its methods with the current time and carry out the
actions it returns. Its two state machines, the server round and the task, are the spec's
tables (pollen.state), so every move the engine makes is one the spec allows.

A round is a list of phases (fit, then evaluate when federated evaluation is on; query for
an analytics run; a one-off initialize phase fetches the first model from a client when no
initial model is configured). Each phase waits for enough nodes (with a deadline), samples
them with a seeded generator, hands each one task, collects until every task is closed or
the phase deadline passes, then applies the quorum policy. Accepted results are kept in
node order, so aggregation sees them in the same order on every run with the same seed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from pollen.errors import (
    ErrorCode,
    PollenError,
    ResultMismatch,
    StaleRound,
    TaskExpired,
    TaskNotAssigned,
    TaskUnknown,
    make_error,
)
from pollen.messages import (
    REPLY_FOR,
    EvaluateInstruction,
    FailureReply,
    FitInstruction,
    GetParametersInstruction,
    Instruction,
    QueryInstruction,
    Reply,
    ShutdownInstruction,
    Task,
    TaskResult,
)
from pollen.state import SERVER_ROUND, TASK, StateMachine
from pollen.tensors import EncodedTensor
from pollen.values import ConfigValue
from reference_server.strategies.base import FailedTask, TaskOutcome


class PhaseKind(enum.Enum):
    INITIALIZE = "initialize"
    FIT = "fit"
    EVALUATE = "evaluate"
    QUERY = "query"


class QuorumPolicy(enum.Enum):
    """What happens when a phase ends below its minimum of accepted results."""

    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, kw_only=True)
class PhasePlan:
    """How one kind of phase samples and waits."""

    fraction: float = 1.0
    min_clients: int = 1
    min_results: int = 1
    timeout_s: float = 600.0
    config: Mapping[str, ConfigValue] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """Everything the engine needs to schedule a run (built from the server config)."""

    run_id: str
    rounds: int
    seed: int = 0
    analytics: bool = False
    fit: PhasePlan = field(default_factory=PhasePlan)
    evaluate: PhasePlan | None = None
    query: PhasePlan = field(default_factory=PhasePlan)
    min_available_clients: int = 1
    start_timeout_s: float = 300.0
    on_quorum_missed: QuorumPolicy = QuorumPolicy.FAIL
    max_attempts: int = 3

    def phases(self, round: int) -> tuple[PhaseKind, ...]:
        """The phases of `round`; round 0 only fetches the first model from a client."""
        if self.analytics:
            return (PhaseKind.QUERY,)
        if round == 0:
            return (PhaseKind.INITIALIZE,)
        return (PhaseKind.FIT,) + ((PhaseKind.EVALUATE,) if self.evaluate else ())

    def plan(self, kind: PhaseKind) -> PhasePlan:
        if kind is PhaseKind.EVALUATE and self.evaluate is not None:
            return self.evaluate
        if kind is PhaseKind.QUERY:
            return self.query
        if kind is PhaseKind.INITIALIZE:
            return replace(self.fit, fraction=0.0, min_clients=1, min_results=1)
        return self.fit


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TasksReady:
    """Tasks were created for these nodes: wake their pending polls."""

    node_ids: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class AcceptedResult:
    """A validated result, its tensors already stored by the driver (blob references)."""

    task_id: str
    node_id: str
    reply: Reply


@dataclass(frozen=True, kw_only=True)
class AggregatePhase:
    """Collection ended with quorum: reduce these results (in this order)."""

    round: int
    kind: PhaseKind
    results: tuple[AcceptedResult, ...]
    failures: tuple[FailedTask, ...]


@dataclass(frozen=True, kw_only=True)
class CommitRound:
    """The round's phases are aggregated: make the round durable, then call `committed`."""

    round: int
    last: bool


@dataclass(frozen=True, kw_only=True)
class RunEnded:
    status: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class PhaseClosed:
    """For logs: a phase ended (aggregated, retried or failed) with these counts."""

    round: int
    kind: PhaseKind
    attempt: int
    accepted: int
    failures: Mapping[str, int]
    duration_s: float
    event: str


Action = TasksReady | AggregatePhase | CommitRound | RunEnded | PhaseClosed


# --- bookkeeping ----------------------------------------------------------------------


#: How long a delivered task stays open past the deadline_ms it was sent with (PLN-TSK-020);
#: phases shorter than twice this keep half their time as grace.
TASK_GRACE_S = 5.0


@dataclass(kw_only=True)
class _TaskRecord:
    task: Task
    node_id: str
    machine: StateMachine
    round: int
    phase: PhaseKind | None  # None for control tasks (shutdown)
    attempt: int
    closed_by: PollenError | None = None
    failure: FailedTask | None = None

    @property
    def open(self) -> bool:
        return not self.machine.terminal


@dataclass(kw_only=True)
class _Phase:
    round: int
    kind: PhaseKind
    attempt: int
    started_at: float
    deadline: float
    task_ids: list[str]
    #: Tasks before this index are closed (they never reopen), so the completion check
    #: after each result resumes there instead of rescanning the phase.
    closed_prefix: int = 0


_OUTCOME = {
    "completed": TaskOutcome.COMPLETED,
    "failed": TaskOutcome.FAILED,
    "rejected": TaskOutcome.REJECTED,
    "expired": TaskOutcome.EXPIRED,
    "dropped": TaskOutcome.DROPPED,
    "cancelled": TaskOutcome.CANCELLED,
}


class Engine:
    """Schedules one run. Every method takes `now` (seconds, any monotonic origin)."""

    def __init__(
        self,
        plan: RunPlan,
        *,
        now: float,
        next_round: int = 1,
        parameters: tuple[EncodedTensor, ...] | None = None,
        finished: bool = False,
        fit_config: Callable[[int], Mapping[str, ConfigValue]] | None = None,
        epoch: str = "",
    ) -> None:
        self.plan = plan
        #: Part of every task id, different for each start of the server, so that a task
        #: created after a restart never reuses the id of one created before (PLN-TSK-002).
        self._epoch = f"-{epoch}" if epoch else ""
        #: Entries the strategy adds to each round's fit instructions (FedProx's mu...).
        self._fit_config = fit_config
        self.round = next_round
        self.parameters = parameters
        self.machine = StateMachine(SERVER_ROUND)
        self._nodes: dict[str, bool] = {}
        #: Nodes whose current session did not negotiate the `query` feature (PLN-QRY-001).
        self._no_query: set[str] = set()
        self._tasks: dict[str, _TaskRecord] = {}
        # Open and recently closed task ids per node, so a poll costs O(its own tasks).
        self._node_tasks: dict[str, list[str]] = {}
        self._shutdown_tasks: dict[str, str] = {}
        self._phase_index = 0
        self._attempt = 1
        self._wait_deadline = now + plan.start_timeout_s
        self._phase: _Phase | None = None
        self._accepted: dict[str, AcceptedResult] = {}
        self.ended: RunEnded | None = None
        if finished or next_round > plan.rounds:
            self.machine.state = "finished"
            self.ended = RunEnded(status="finished", reason="all rounds committed")

    # --- queries ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.machine.state

    @property
    def phase_kind(self) -> PhaseKind:
        return self.plan.phases(self.round)[self._phase_index]

    def connected_nodes(self) -> list[str]:
        return sorted(node for node, up in self._nodes.items() if up)

    def next_wakeup(self) -> float | None:
        """When `tick` next has something to do (a deadline), or None."""
        if self.state == "waiting":
            return self._wait_deadline
        if self.state == "collecting" and self._phase is not None:
            return self._phase.deadline
        return None

    def task_outcomes(self) -> dict[str, str]:
        """Task id -> state, for logs and tests."""
        return {task_id: rec.machine.state for task_id, rec in self._tasks.items()}

    # --- node events -----------------------------------------------------------------

    def connect(self, node_id: str, now: float, *, query: bool = True) -> list[Action]:
        """A node opened a session; `query`: whether the session negotiated that feature.

        A new session of a known node keeps its open tasks, except query tasks when the new
        session cannot take them.
        """
        return self.connect_many((node_id,), now, query=query)

    def connect_many(
        self, node_ids: Iterable[str], now: float, *, query: bool = True
    ) -> list[Action]:
        """Several nodes opened sessions at once (a simulation registers its fleet so)."""
        closed = False
        for node_id in node_ids:
            self._nodes[node_id] = True
            if query:
                self._no_query.discard(node_id)
                continue
            self._no_query.add(node_id)
            for rec in self._open_tasks(node_id):
                if rec.phase is PhaseKind.QUERY:
                    self._close(
                        rec, "session_lost", TaskExpired("the new session has no query feature")
                    )
                    closed = True
        return (self._maybe_complete(now) if closed else []) + self.tick(now)

    def disconnect(self, node_id: str, now: float, *, reason: str = "") -> list[Action]:
        """A node's session ended (Leave or session timeout): its open tasks close.

        `reason` is the Leave reason name; a Leave that answers the node's control task
        (RECONNECT_INSTRUCTION / SHUTDOWN_INSTRUCTION) completes it.
        """
        self._nodes[node_id] = False
        for rec in self._open_tasks(node_id):
            if rec.phase is None and reason == "SHUTDOWN_INSTRUCTION":
                rec.machine.handle("control_acknowledged")
            else:
                self._close(rec, "session_lost", TaskExpired("the node's session ended"))
        return self._maybe_complete(now) + self.tick(now)

    # --- tasks -----------------------------------------------------------------------

    def next_task(self, node_id: str, now: float) -> Task | None:
        """The task a PollTask from `node_id` gets: its oldest open task, or None.

        An open task is handed out again until it closes (at-least-once delivery), with
        the time left to its deadline. The task expires with its phase, a grace period after
        the deadline_ms the client gets (PLN-TSK-020), so that a result finished in time is
        not lost to network delay.
        """
        if self.ended is not None and self._nodes.get(node_id):
            self._ensure_shutdown_task(node_id)
        for rec in self._open_tasks(node_id):
            rec.machine.handle("deliver")
            deadline_ms = 0
            if rec.phase is not None and self._phase is not None:
                grace = min(TASK_GRACE_S, self.plan.plan(rec.phase).timeout_s / 2)
                left = self._phase.deadline - grace - now
                deadline_ms = max(1, math.ceil(left * 1000))
            return replace(rec.task, deadline_ms=deadline_ms)
        return None

    def is_open(self, task_id: str, node_id: str) -> bool:
        """Whether `task_id` is an open task assigned to `node_id` (PLN-SES-010)."""
        rec = self._tasks.get(task_id)
        return rec is not None and rec.open and rec.node_id == node_id

    def check_result(self, node_id: str, result: TaskResult) -> bool:
        """Decide what a SubmitResult gets before the driver validates its content.

        Returns True when the task is open and the result must be validated, False when it
        is a harmless resubmission (acknowledged as a duplicate); raises the typed error
        the spec gives otherwise.
        """
        rec = self._tasks.get(result.task_id)
        if rec is None:
            raise TaskUnknown(f"no task {result.task_id!r}", field="result.task_id")
        if rec.node_id != node_id:
            raise TaskNotAssigned(
                f"task {result.task_id!r} was not given to this node", field="result.task_id"
            )
        if not rec.open:
            reply = TASK.states[rec.machine.state].submit_reply
            if reply == "OK":
                return False
            code = ErrorCode[reply or "TASK_EXPIRED"]
            if rec.closed_by is not None and rec.closed_by.code == code:
                raise rec.closed_by
            raise make_error(code, f"task is {rec.machine.state}")
        if rec.machine.state == "created":
            raise TaskNotAssigned(
                f"task {result.task_id!r} was never handed out", field="result.task_id"
            )
        if not isinstance(result.reply, FailureReply):
            expected = REPLY_FOR.get(type(rec.task.instruction))
            if expected is None or not isinstance(result.reply, expected):
                raise ResultMismatch(
                    f"a {type(rec.task.instruction).__name__} is not answered by a "
                    f"{type(result.reply).__name__}",
                    field="result",
                )
        return True

    def accept(self, result: AcceptedResult, now: float) -> list[Action]:
        """Record a validated result (or a client-reported failure)."""
        rec = self._tasks[result.task_id]
        if not rec.open:
            # It closed while the driver validated it (deadline, phase end).
            self.check_result(
                result.node_id, TaskResult(task_id=result.task_id, reply=result.reply)
            )
            return []
        if isinstance(result.reply, FailureReply):
            error = result.reply.error
            self._close(rec, "failure_reported", None, code=error.code, message=error.message)
        else:
            rec.machine.handle("result_valid")
            self._accepted[result.task_id] = result
        return self._maybe_complete(now)

    def reject(self, task_id: str, error: PollenError, now: float) -> list[Action]:
        """Record that a result failed validation: its task closes as rejected."""
        rec = self._tasks[task_id]
        if rec.open:
            self._close(rec, "result_invalid", error)
        return self._maybe_complete(now)

    # --- time ------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Apply every deadline that has passed and start the phase when nodes suffice."""
        actions: list[Action] = []
        if self.state == "waiting":
            actions += self._try_start(now)
        elif self.state == "collecting" and self._phase is not None and now >= self._phase.deadline:
            for task_id in self._phase.task_ids:
                rec = self._tasks[task_id]
                if rec.open:
                    self._close(rec, "deadline_passed", TaskExpired("the deadline passed"))
            actions += self._end_collection(now)
        return actions

    # --- driver callbacks ------------------------------------------------------------

    def aggregated(
        self, now: float, *, parameters: tuple[EncodedTensor, ...] | None
    ) -> list[Action]:
        """The driver reduced the phase; `parameters` is the new global model (fit and
        initialize phases), stored as blobs."""
        if parameters is not None:
            self.parameters = parameters
        self._phase = None
        if self._phase_index + 1 < len(self.plan.phases(self.round)):
            self.machine.handle("phase_aggregated")
            self._phase_index += 1
            self._attempt = 1
            return self._enter_waiting(now)
        self.machine.handle("round_aggregated")
        return [CommitRound(round=self.round, last=self.round >= self.plan.rounds)]

    def aggregation_failed(self, reason: str) -> list[Action]:
        self.machine.handle("aggregation_failed")
        return self._end("failed", reason)

    def committed(self, now: float) -> list[Action]:
        """The driver made the round durable."""
        if self.round >= self.plan.rounds:
            self.machine.handle("run_committed")
            return self._end("finished", "all rounds committed")
        self.machine.handle("round_committed")
        self.round += 1
        self._phase_index, self._attempt = 0, 1
        return self._enter_waiting(now)

    def stop(self, reason: str) -> list[Action]:
        """The operator stops the run for good (not a server shutdown: that resumes)."""
        if self.machine.terminal:
            return []
        self.machine.handle("stop")
        return self._end("stopped", reason)

    # --- internals -------------------------------------------------------------------

    def _open_tasks(self, node_id: str) -> list[_TaskRecord]:
        task_ids = self._node_tasks.get(node_id)
        if not task_ids:
            return []
        records = [self._tasks[t] for t in task_ids]
        open_records = [r for r in records if r.open]
        if len(open_records) < len(records):
            # A closed task never reopens: forget it here (it stays in self._tasks).
            self._node_tasks[node_id] = [r.task.task_id for r in open_records]
        return open_records

    def _add_task(self, record: _TaskRecord) -> None:
        self._tasks[record.task.task_id] = record
        self._node_tasks.setdefault(record.node_id, []).append(record.task.task_id)

    def _ensure_shutdown_task(self, node_id: str) -> None:
        if node_id in self._shutdown_tasks:
            return
        task_id = f"{self.plan.run_id}-shutdown{self._epoch}-{node_id}"
        reason = self.ended.reason if self.ended else "the run ended"
        task = Task(
            task_id=task_id, run_id=self.plan.run_id, instruction=ShutdownInstruction(reason=reason)
        )
        self._add_task(
            _TaskRecord(
                task=task,
                node_id=node_id,
                machine=StateMachine(TASK),
                round=0,
                phase=None,
                attempt=1,
            )
        )
        self._shutdown_tasks[node_id] = task_id

    def _enter_waiting(self, now: float) -> list[Action]:
        self._wait_deadline = now + self.plan.start_timeout_s
        return self._try_start(now)

    def _try_start(self, now: float) -> list[Action]:
        kind = self.phase_kind
        plan = self.plan.plan(kind)
        available = self.connected_nodes()
        if kind is PhaseKind.QUERY:
            available = [node for node in available if node not in self._no_query]
        needed = max(self.plan.min_available_clients, plan.min_clients)
        if kind is PhaseKind.INITIALIZE:
            needed = 1
        if len(available) >= needed:
            return self._start_phase(kind, plan, available, now)
        if now < self._wait_deadline:
            return []
        if (
            self.plan.on_quorum_missed is QuorumPolicy.RETRY
            and self._attempt < self.plan.max_attempts
        ):
            self.machine.handle("wait_timeout_retry")
            self._attempt += 1
            self._wait_deadline = now + self.plan.start_timeout_s
            return []
        self.machine.handle("wait_timeout_fail")
        return self._end(
            "failed",
            f"round {self.round} {kind.value}: {len(available)} of {needed} nodes connected "
            f"before the start deadline",
        )

    def _sample(self, kind: PhaseKind, plan: PhasePlan, available: list[str]) -> list[str]:
        count = 1
        if kind is not PhaseKind.INITIALIZE:
            count = min(
                len(available), max(plan.min_clients, math.ceil(plan.fraction * len(available)))
            )
        kinds = list(PhaseKind)
        rng = np.random.default_rng([self.plan.seed, self.round, kinds.index(kind), self._attempt])
        picked = rng.permutation(len(available))[:count]
        # Node order, not draw order: aggregation sees results in a fixed order.
        return sorted(available[i] for i in picked)

    def _instruction(self, kind: PhaseKind, plan: PhasePlan) -> Instruction:
        config = {"round": self.round, **plan.config}
        if kind is PhaseKind.FIT:
            if self._fit_config is not None:
                # The run's own fit config wins over the strategy's defaults.
                config = {"round": self.round, **self._fit_config(self.round), **plan.config}
            return FitInstruction(parameters=self.parameters or (), config=config)
        if kind is PhaseKind.EVALUATE:
            return EvaluateInstruction(parameters=self.parameters or (), config=config)
        if kind is PhaseKind.QUERY:
            return QueryInstruction(config=config)
        return GetParametersInstruction(config=dict(plan.config))

    def _start_phase(
        self, kind: PhaseKind, plan: PhasePlan, available: list[str], now: float
    ) -> list[Action]:
        self.machine.handle("clients_ready")
        nodes = self._sample(kind, plan, available)
        instruction = self._instruction(kind, plan)
        phase = _Phase(
            round=self.round,
            kind=kind,
            attempt=self._attempt,
            started_at=now,
            deadline=now + plan.timeout_s,
            task_ids=[],
        )
        for node_id in nodes:
            task_id = (
                f"{self.plan.run_id}-r{self.round}-{kind.value}-a{self._attempt}"
                f"{self._epoch}-{node_id}"
            )
            task = Task(
                task_id=task_id, run_id=self.plan.run_id, round=self.round, instruction=instruction
            )
            self._add_task(
                _TaskRecord(
                    task=task,
                    node_id=node_id,
                    machine=StateMachine(TASK),
                    round=self.round,
                    phase=kind,
                    attempt=self._attempt,
                )
            )
            phase.task_ids.append(task_id)
        self._phase = phase
        self._accepted = {}
        return [TasksReady(node_ids=frozenset(nodes))]

    def _close(
        self,
        rec: _TaskRecord,
        event: str,
        error: PollenError | None,
        *,
        code: ErrorCode | None = None,
        message: str = "",
    ) -> None:
        rec.machine.handle(event)
        rec.closed_by = error
        if rec.phase is not None:
            outcome = _OUTCOME[rec.machine.state]
            rec.failure = FailedTask(
                node_id=rec.node_id,
                outcome=outcome,
                error_code=code or (error.code if error else None),
                message=message or (error.message if error else ""),
            )

    def _maybe_complete(self, now: float) -> list[Action]:
        phase = self._phase
        if self.state != "collecting" or phase is None:
            return []
        task_ids = phase.task_ids
        while (
            phase.closed_prefix < len(task_ids)
            and not self._tasks[task_ids[phase.closed_prefix]].open
        ):
            phase.closed_prefix += 1
        if phase.closed_prefix < len(task_ids):
            return []
        return self._end_collection(now)

    def _end_collection(self, now: float) -> list[Action]:
        phase = self._phase
        assert phase is not None
        plan = self.plan.plan(phase.kind)
        records = [self._tasks[t] for t in phase.task_ids]
        accepted = tuple(self._accepted[t] for t in phase.task_ids if t in self._accepted)
        failures = tuple(r.failure for r in records if r.failure is not None)
        counts: dict[str, int] = {}
        for failure in failures:
            counts[failure.outcome.value] = counts.get(failure.outcome.value, 0) + 1

        def closed(event: str) -> PhaseClosed:
            return PhaseClosed(
                round=phase.round,
                kind=phase.kind,
                attempt=phase.attempt,
                accepted=len(accepted),
                failures=counts,
                duration_s=now - phase.started_at,
                event=event,
            )

        if len(accepted) >= plan.min_results:
            self.machine.handle("collection_complete")
            return [
                closed("collection_complete"),
                AggregatePhase(
                    round=phase.round, kind=phase.kind, results=accepted, failures=failures
                ),
            ]
        self._phase = None
        if (
            self.plan.on_quorum_missed is QuorumPolicy.RETRY
            and self._attempt < self.plan.max_attempts
        ):
            self.machine.handle("quorum_missed_retry")
            self._attempt += 1
            return [closed("quorum_missed_retry"), *self._enter_waiting(now)]
        self.machine.handle("quorum_missed_fail")
        return [
            closed("quorum_missed_fail"),
            *self._end(
                "failed",
                f"round {phase.round} {phase.kind.value}: {len(accepted)} accepted results, "
                f"{plan.min_results} needed",
            ),
        ]

    def _end(self, status: str, reason: str) -> list[Action]:
        self.ended = RunEnded(status=status, reason=reason)
        for rec in self._tasks.values():
            if rec.open and rec.phase is not None:
                self._close(rec, "phase_closed", StaleRound("the run ended"))
        return [self.ended]


__all__ = [
    "AcceptedResult",
    "Action",
    "AggregatePhase",
    "CommitRound",
    "Engine",
    "PhaseClosed",
    "PhaseKind",
    "PhasePlan",
    "QuorumPolicy",
    "RunEnded",
    "RunPlan",
    "TasksReady",
]
