"""The PyTorch example in simulation and in deployment; runs only where torch is installed."""

from pathlib import Path

import pytest

from tests.examples.deployment import deploy, simulate
from tests.integration.harness import Processes

pytest.importorskip(
    "torch",
    reason="torch is not a project dependency (examples/pytorch_digits/requirements.txt)",
)


def test_simulation_learns_the_digits(tmp_path: Path) -> None:
    history = simulate("pytorch_digits", tmp_path, "--clients", "10", "--rounds", "5")
    accuracy = [r["metrics"]["central_accuracy"] for r in history["rounds"]]
    assert accuracy[-1] > 0.6


def test_deployment(procs: Processes) -> None:
    rounds = deploy("pytorch_digits", procs)
    assert [r["fit_num_updates"] for r in rounds] == [2, 2]
    assert rounds[-1]["central_accuracy"] > 0.2
