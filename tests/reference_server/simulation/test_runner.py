"""The simulation driver: the deployment's engine and strategies, fed by virtual clients."""

import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest

from pollen.client import Client, EvaluateResult, FitResult
from pollen.values import Config
from reference_server.simulation import (
    InProcessExecutor,
    RoundReport,
    Simulation,
    SimulationApp,
    SimulationConfig,
    SimulationFailed,
    simulate,
)
from reference_server.simulation.executors import client_index, node_id
from reference_server.strategies import FedMedian

MODEL = [np.zeros((3, 2), np.float32), np.arange(4, dtype=np.float32)]


class Shift(Client):
    """Returns the model + (index + 1), weighted by index + 1; counts live instances."""

    live = 0
    most_live = 0
    fits: list[tuple[int, int]] = []  # noqa: RUF012  (a test log, reset by each test)

    def __init__(self, index: int) -> None:
        self.index = index
        Shift.live += 1
        Shift.most_live = max(Shift.most_live, Shift.live)

    def __del__(self) -> None:
        Shift.live -= 1

    def get_parameters(self, config: Config) -> list[np.ndarray]:
        return [m + 1 for m in MODEL]

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        Shift.fits.append((int(config["round"]), self.index))
        step = np.float32(self.index + 1)
        return FitResult(parameters=[p + step for p in parameters], num_examples=self.index + 1)

    def evaluate(self, parameters: Sequence[np.ndarray], config: Config) -> EvaluateResult:
        return EvaluateResult(loss=float(self.index), num_examples=1, metrics={"seen": 1.0})


@pytest.fixture(autouse=True)
def _reset() -> None:
    Shift.live = Shift.most_live = 0
    Shift.fits = []


def shift_app(**kwargs: object) -> SimulationApp:
    return SimulationApp(client_factory=Shift, initial_parameters=MODEL, **kwargs)  # type: ignore[arg-type]


def test_fedavg_over_every_client_gives_the_weighted_mean() -> None:
    reports: list[RoundReport] = []
    result = simulate(shift_app(), SimulationConfig(clients=10, rounds=3), on_round=reports.append)
    # Each round adds sum((i+1)^2) / sum(i+1) = 385 / 55 = 7 to every parameter.
    for got, start in zip(result.parameters, MODEL, strict=True):
        np.testing.assert_array_equal(got, start + 21)
        assert got.dtype == np.float32
    assert [r.round for r in reports] == [1, 2, 3]
    assert all(r.metrics["fit_num_updates"] == 10 for r in reports)
    assert reports[0].phases["fit_attempt_1"]["accepted"] == 10
    assert result.status == "finished"
    assert result.executor == "in-process"
    assert result.peak_rss_bytes > 0


def test_clients_exist_only_while_they_run() -> None:
    simulate(shift_app(), SimulationConfig(clients=50, rounds=2, fraction=0.2))
    assert len(Shift.fits) == 20  # 10 sampled per round, one client object per task
    assert Shift.most_live == 1
    assert Shift.live == 0


def test_sampling_is_seeded_and_changes_between_rounds() -> None:
    def sampled(seed: int) -> list[set[int]]:
        Shift.fits = []
        simulate(shift_app(), SimulationConfig(clients=20, rounds=3, fraction=0.3, seed=seed))
        return [{i for r, i in Shift.fits if r == n} for n in (1, 2, 3)]

    first = sampled(7)
    assert [len(s) for s in first] == [6, 6, 6]
    assert first[0] != first[1]
    assert sampled(7) == first
    assert sampled(8) != first


class Faulty(Shift):
    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        if self.index == 0:
            raise RuntimeError("local data is corrupt")
        if self.index == 1:
            return FitResult(parameters=[p * np.nan for p in parameters], num_examples=1)
        return super().fit(parameters, config)


def test_failures_and_invalid_updates_are_outcomes_not_crashes() -> None:
    reports: list[RoundReport] = []
    app = SimulationApp(client_factory=Faulty, initial_parameters=MODEL)
    result = simulate(app, SimulationConfig(clients=4, rounds=1), on_round=reports.append)
    phase = reports[0].phases["fit_attempt_1"]
    assert phase["accepted"] == 2
    assert phase["failures"] == {"failed": 1, "rejected": 1}
    # Only clients 2 and 3 count, weighted 3 and 4, summed in float64.
    start = MODEL[1].astype(np.float64)
    expected = ((start + 3) * 3 + (start + 4) * 4) / 7
    np.testing.assert_array_equal(result.parameters[1], expected.astype(np.float32))


def test_a_round_without_quorum_fails_the_run() -> None:
    class Broken(Client):
        def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
            raise ValueError("no")

    app = SimulationApp(client_factory=lambda i: Broken(), initial_parameters=MODEL)
    with pytest.raises(SimulationFailed, match="0 accepted results"):
        simulate(app, SimulationConfig(clients=3, rounds=2))


def test_without_initial_parameters_one_client_provides_them() -> None:
    result = simulate(SimulationApp(client_factory=Shift), SimulationConfig(clients=10, rounds=1))
    np.testing.assert_array_equal(result.parameters[1], MODEL[1] + 1 + 7)
    assert len(result.rounds) == 1  # the initialize round is not a training round


def test_federated_evaluation_and_other_strategies() -> None:
    reports: list[RoundReport] = []
    result = simulate(
        shift_app(),
        SimulationConfig(clients=5, rounds=1, evaluate_fraction=1.0),
        strategy=FedMedian(),
        on_round=reports.append,
    )
    np.testing.assert_array_equal(result.parameters[0], MODEL[0] + 3)  # median of 1..5
    metrics = reports[0].metrics
    assert metrics["eval_loss"] == pytest.approx(2.0)  # mean of indices 0..4
    assert metrics["eval_num_reports"] == 5


def test_node_ids_sort_in_index_order() -> None:
    ids = [node_id(i, 10_000) for i in range(10_000)]
    assert ids == sorted(ids)
    assert [client_index(n) for n in ids[:3]] == [0, 1, 2]


class Tiny(Client):
    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        return FitResult(parameters=[p + 1 for p in parameters], num_examples=1)


def test_ten_thousand_idle_clients_cost_under_10_kb_each() -> None:
    clients = 10_000
    app = SimulationApp(
        client_factory=lambda i: Tiny(), initial_parameters=[np.zeros(4, np.float32)]
    )
    config = SimulationConfig(clients=clients, rounds=2, fraction=0.01)
    tracemalloc.start()
    try:
        result = Simulation(app, config, executor=InProcessExecutor(app.client_factory)).run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "finished"
    assert [r.metrics["fit_num_updates"] for r in result.rounds] == [100, 100]
    assert peak / clients < 10 * 1024, f"{peak / clients:.0f} bytes per client"
