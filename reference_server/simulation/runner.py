"""The simulation driver: the deployment's round engine, fed by virtual clients.

The engine, the strategies, result validation and phase reduction are the very ones the
gRPC server runs (`reference_server.engine`, `reference_server.reduction`); only the
transport differs. Instead of sessions and polls, the driver registers every virtual
client as a connected node, asks the engine which nodes got a task, runs those tasks on
an executor and hands each reply back exactly as the coordinator would after a
SubmitResult. State stays in memory: a simulation is re-run, not resumed.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pollen.dispatch import reply_tensors
from pollen.errors import PollenError
from pollen.messages import FailureReply, Reply, TaskResult
from pollen.tensors import EncodedTensor, decode_tensor, encode_tensor
from pollen.values import ConfigValue
from reference_server.engine import (
    AcceptedResult,
    Action,
    AggregatePhase,
    CommitRound,
    Engine,
    PhaseClosed,
    PhaseKind,
    PhasePlan,
    RunEnded,
    RunPlan,
    TasksReady,
)
from reference_server.reduction import CentralEvaluation, check_reply, reduce_phase
from reference_server.simulation.executors import (
    ClientFactory,
    Executor,
    InProcessExecutor,
    node_id,
)
from reference_server.strategies.base import Strategy, StrategyState
from reference_server.strategies.fedavg import FedAvg
from reference_server.validation import ValidationConfig


@dataclass(frozen=True, kw_only=True)
class AppContext:
    """What `pollen simulate` tells an app builder: the fleet size, the seed, [app] options."""

    clients: int
    seed: int
    options: Mapping[str, ConfigValue]


@dataclass(frozen=True, kw_only=True)
class SimulationApp:
    """What the user brings: a client per index, optionally a model and a central test."""

    client_factory: ClientFactory
    #: The first global model; None asks one sampled client (get_parameters).
    initial_parameters: Sequence[np.ndarray] | None = None
    #: (round, global model) -> (loss, metrics), run on the server after every fit phase.
    central_evaluation: CentralEvaluation | None = None


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """The run: how many virtual clients, rounds, who is sampled and how updates are judged."""

    clients: int = 100
    rounds: int = 30
    #: Fraction of clients sampled for each fit phase (at least `min_clients`).
    fraction: float = 1.0
    min_clients: int = 1
    #: Fraction sampled for federated evaluation after each fit phase; 0 turns it off.
    evaluate_fraction: float = 0.0
    seed: int = 0
    run_id: str = "simulation"
    fit_config: Mapping[str, ConfigValue] = field(default_factory=dict)
    evaluate_config: Mapping[str, ConfigValue] = field(default_factory=dict)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if not 0.0 <= self.evaluate_fraction <= 1.0:
            raise ValueError(f"evaluate_fraction must be in [0, 1], got {self.evaluate_fraction}")
        if not 1 <= self.min_clients <= self.clients:
            raise ValueError(f"min_clients must be in [1, clients], got {self.min_clients}")

    def plan(self) -> RunPlan:
        evaluate = None
        if self.evaluate_fraction > 0:
            evaluate = PhasePlan(
                fraction=self.evaluate_fraction,
                min_clients=self.min_clients,
                min_results=1,
                config=dict(self.evaluate_config),
            )
        return RunPlan(
            run_id=self.run_id,
            rounds=self.rounds,
            seed=self.seed,
            fit=PhasePlan(
                fraction=self.fraction,
                min_clients=self.min_clients,
                min_results=1,
                config=dict(self.fit_config),
            ),
            evaluate=evaluate,
            min_available_clients=self.clients,
        )


@dataclass(frozen=True, kw_only=True)
class RoundReport:
    """One committed round: its metrics and how each phase went."""

    round: int
    metrics: Mapping[str, ConfigValue]
    phases: Mapping[str, Mapping[str, Any]]
    duration_s: float
    peak_rss_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "metrics": {k: v for k, v in self.metrics.items() if not isinstance(v, bytes)},
            "phases": {k: dict(v) for k, v in self.phases.items()},
            "duration_s": round(self.duration_s, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
        }


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    """How the run ended, the final model and strategy state, and the round history."""

    status: str
    reason: str
    parameters: tuple[np.ndarray, ...]
    state: StrategyState
    rounds: tuple[RoundReport, ...]
    wall_s: float
    peak_rss_bytes: int
    executor: str


class SimulationFailed(RuntimeError):
    """The run ended without finishing its rounds (for example no quorum)."""


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _owned(tensor: EncodedTensor) -> EncodedTensor:
    # The global model goes to other processes (Ray): its payload must be plain bytes.
    if isinstance(tensor.payload, bytes):
        return tensor
    return dataclasses.replace(tensor, payload=bytes(tensor.payload))


def _load(tensors: Sequence[EncodedTensor]) -> list[np.ndarray]:
    return [decode_tensor(t) for t in tensors]


class Simulation:
    """One simulated run. `run()` drives it to the end and returns the result."""

    def __init__(
        self,
        app: SimulationApp,
        config: SimulationConfig | None = None,
        *,
        strategy: Strategy | None = None,
        executor: Executor | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.config = config or SimulationConfig()
        self.strategy: Strategy = strategy or FedAvg()
        # An executor passed in belongs to the caller (it may serve several runs).
        self._owns_executor = executor is None
        self.executor: Executor = executor or InProcessExecutor(app.client_factory)
        self.on_round = on_round
        self.clock = clock
        self._state: dict[str, np.ndarray] = {}
        self._global: tuple[tuple[EncodedTensor, ...], list[np.ndarray]] | None = None
        self._phases: dict[str, dict[str, Any]] = {}
        self._metrics: dict[str, ConfigValue] = {}
        self._round_started = 0.0
        self._reports: list[RoundReport] = []
        initial = app.initial_parameters
        parameters = None
        if initial is not None:
            arrays = [np.ascontiguousarray(a) for a in initial]
            parameters = tuple(_owned(encode_tensor(a)) for a in arrays)
            self._state = dict(self.strategy.initial_state(arrays))
        self.engine = Engine(
            self.config.plan(),
            now=self.clock(),
            next_round=0 if parameters is None else 1,
            parameters=parameters,
            fit_config=self.strategy.fit_config,
        )

    def run(self) -> SimulationResult:
        started = self.clock()
        self._round_started = started
        clients = self.config.clients
        # Node ids are made on the fly: the engine's node table is the whole idle fleet.
        queue = self.engine.connect_many(
            (node_id(i, clients) for i in range(clients)), self.clock()
        )
        ended: RunEnded | None = None
        try:
            while queue:
                action = queue.pop(0)
                if isinstance(action, TasksReady):
                    queue += self._run_tasks(action)
                elif isinstance(action, PhaseClosed):
                    self._note_phase(action)
                elif isinstance(action, AggregatePhase):
                    queue += self._aggregate(action)
                elif isinstance(action, CommitRound):
                    queue += self._commit(action)
                elif isinstance(action, RunEnded):
                    ended = action
        finally:
            if self._owns_executor:
                self.executor.close()
        if ended is None:
            ended = self.engine.ended or RunEnded(status="failed", reason="the engine stalled")
        return SimulationResult(
            status=ended.status,
            reason=ended.reason,
            # Writable copies: the caller owns the final model, not the run's buffers.
            parameters=tuple(np.array(a) for a in self._global_arrays()),
            state=dict(self._state),
            rounds=tuple(self._reports),
            wall_s=self.clock() - started,
            peak_rss_bytes=peak_rss_bytes(),
            executor=self.executor.name,
        )

    # --- tasks -------------------------------------------------------------------------

    def _run_tasks(self, action: TasksReady) -> list[Action]:
        now = self.clock()
        task_ids: dict[str, str] = {}
        nodes = sorted(action.node_ids)
        instruction = None
        for node in nodes:
            task = self.engine.next_task(node, now)
            assert task is not None, f"the engine readied no task for {node}"
            # Every task of a phase carries one instruction object: the model is shared.
            assert instruction is None or task.instruction is instruction
            instruction = task.instruction
            task_ids[node] = task.task_id
        if instruction is None:
            return []
        actions: list[Action] = []
        for node, reply in self.executor.run(instruction, nodes):
            actions += self._submit(node, task_ids[node], reply)
        return actions

    def _submit(self, node: str, task_id: str, reply: Reply) -> list[Action]:
        """What the coordinator does with a SubmitResult, minus the wire and the store."""
        now = self.clock()
        if not self.engine.check_result(node, TaskResult(task_id=task_id, reply=reply)):
            return []
        if not isinstance(reply, FailureReply):
            try:
                check_reply(
                    reply,
                    _load(reply_tensors(reply)[1]),
                    reference=self._global_arrays,
                    validation=self.config.validation,
                )
            except PollenError as exc:
                return self.engine.reject(task_id, exc, now)
        return self.engine.accept(AcceptedResult(task_id=task_id, node_id=node, reply=reply), now)

    # --- aggregation and commits -------------------------------------------------------

    def _global_arrays(self) -> list[np.ndarray]:
        parameters = self.engine.parameters or ()
        if self._global is None or self._global[0] is not parameters:
            self._global = (parameters, _load(parameters))
        return self._global[1]

    def _note_phase(self, action: PhaseClosed) -> None:
        self._phases[f"{action.kind.value}_attempt_{action.attempt}"] = {
            "accepted": action.accepted,
            "failures": dict(action.failures),
            "duration_s": round(action.duration_s, 4),
            "event": action.event,
        }

    def _aggregate(self, action: AggregatePhase) -> list[Action]:
        try:
            reduced = reduce_phase(
                action,
                strategy=self.strategy,
                state=self._state,
                current=self._global_arrays,
                load=_load,
                central_evaluation=self.app.central_evaluation,
            )
        except PollenError as exc:
            return self.engine.aggregation_failed(str(exc))
        self._metrics.update(reduced.metrics)
        if reduced.state is not None:
            self._state = dict(reduced.state)
        parameters = None
        if action.kind is PhaseKind.INITIALIZE:
            reply = action.results[0].reply
            parameters = tuple(_owned(t) for t in getattr(reply, "parameters", ()))
        elif reduced.parameters is not None:
            parameters = tuple(_owned(encode_tensor(a)) for a in reduced.parameters)
        return self.engine.aggregated(self.clock(), parameters=parameters)

    def _commit(self, action: CommitRound) -> list[Action]:
        now = self.clock()
        report = RoundReport(
            round=action.round,
            metrics=dict(self._metrics),
            phases=dict(self._phases),
            duration_s=now - self._round_started,
            peak_rss_bytes=peak_rss_bytes(),
        )
        self._metrics, self._phases = {}, {}
        self._round_started = now
        if action.round > 0:
            self._reports.append(report)
            if self.on_round is not None:
                self.on_round(report)
        return self.engine.committed(now)


def simulate(
    app: SimulationApp,
    config: SimulationConfig | None = None,
    *,
    strategy: Strategy | None = None,
    executor: Executor | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> SimulationResult:
    """Run a simulation to its end; raises SimulationFailed when it does not finish."""
    result = Simulation(app, config, strategy=strategy, executor=executor, on_round=on_round).run()
    if result.status != "finished":
        raise SimulationFailed(f"the simulation {result.status}: {result.reason}")
    return result


__all__ = [
    "AppContext",
    "RoundReport",
    "Simulation",
    "SimulationApp",
    "SimulationConfig",
    "SimulationFailed",
    "SimulationResult",
    "peak_rss_bytes",
    "simulate",
]
