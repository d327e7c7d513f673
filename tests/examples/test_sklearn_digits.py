"""The scikit-learn example in simulation and in deployment."""

from pathlib import Path

from tests.examples.deployment import deploy, simulate
from tests.integration.harness import Processes


def test_simulation_learns_from_shards(tmp_path: Path) -> None:
    history = simulate("sklearn_digits", tmp_path, "--clients", "10", "--rounds", "4")
    accuracy = [r["metrics"]["central_accuracy"] for r in history["rounds"]]
    assert accuracy[-1] > 0.7
    assert accuracy[-1] > accuracy[0]


def test_deployment(procs: Processes) -> None:
    rounds = deploy("sklearn_digits", procs)
    assert [r["fit_num_updates"] for r in rounds] == [2, 2]
    assert rounds[-1]["central_accuracy"] > 0.3
