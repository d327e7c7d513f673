"""The numpy digits example (the demo's app) in simulation and in deployment."""

from pathlib import Path

import pytest

from tests.examples.deployment import deploy, load, simulate
from tests.integration.harness import Processes


def test_simulation_learns_the_digits(tmp_path: Path) -> None:
    history = simulate("numpy_digits", tmp_path, "--clients", "20", "--rounds", "5")
    accuracy = [r["metrics"]["central_accuracy"] for r in history["rounds"]]
    assert len(accuracy) == 5
    assert accuracy[-1] >= 0.85


def test_deployment_partitions_and_central_evaluation(
    procs: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load("numpy_digits")
    monkeypatch.setenv("POLLEN_NUM_PARTITIONS", "2")
    sizes = []
    for index in (0, 1):
        monkeypatch.setenv("POLLEN_PARTITION", str(index))
        sizes.append(len(example.client().y))
    assert sum(sizes) == 1437  # the two owners hold the whole training split between them
    rounds = deploy("numpy_digits", procs)
    assert len(rounds) == 2
    assert rounds[-1]["central_accuracy"] > 0.5
    assert rounds[-1]["fit_num_updates"] == 2
