"""`pollen simulate`: options, config file, outputs, and the demo's promise."""

import importlib.util
import json
from pathlib import Path

import pytest

from pollen_cli import main as pollen_main
from reference_server.simulation.cli import main

APP = """
import numpy as np
from pollen.client import Client, EvaluateResult, FitResult
from reference_server.simulation import SimulationApp


class Half(Client):
    def __init__(self, index):
        self.index = index

    def fit(self, parameters, config):
        target = np.float32(config.get("target", 1.0))
        return FitResult(parameters=[(p + target) / 2 for p in parameters], num_examples=1)

    def evaluate(self, parameters, config):
        return EvaluateResult(loss=float(abs(parameters[0] - 1).max()), num_examples=1,
                              metrics={"accuracy": 0.5})


def build(context):
    assert context.options == {"flavour": "test"}, context.options
    return SimulationApp(client_factory=Half, initial_parameters=[np.zeros(3, np.float32)])
"""


def test_help_documents_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pollen_main(["simulate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--clients", "--rounds", "--strategy", "--engine", "--fraction", "--seed"):
        assert flag in text
    for flag in ("--output", "--config", "in-process", "ray", "[strategy]", "fedadam"):
        assert flag in text


def test_a_config_file_and_flags_drive_a_custom_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "half_app.py"
    app.write_text(APP)
    config = tmp_path / "sim.toml"
    config.write_text(
        "[simulation]\nclients = 7\nrounds = 4\nevaluate_fraction = 1\n"
        f'app = "{app}:build"\n'
        '[fit]\ntarget = 1.0\n[app]\nflavour = "test"\n'
    )
    code = main(
        ["--config", str(config), "--rounds", "3", "--output", str(tmp_path / "runs"),
         "--run-id", "r1", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "simulating 7 clients x 3 rounds" in out
    assert out.count("round ") >= 3
    history = json.loads((tmp_path / "runs" / "r1" / "history.json").read_text())
    assert history["status"] == "finished"
    assert history["settings"]["clients"] == 7
    assert [r["round"] for r in history["rounds"]] == [1, 2, 3]
    # The model halves its distance to 1 each round: 0.5, 0.75, 0.875.
    assert history["rounds"][-1]["metrics"]["eval_loss"] == pytest.approx(0.125)
    assert history["rounds"][0]["phases"]["fit_attempt_1"]["accepted"] == 7
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "runs" / "r1" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_settings_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--strategy", "fedbest", "--output", str(tmp_path), "--no-progress"]) == 2
    assert "unknown strategy 'fedbest'" in capsys.readouterr().err
    config = tmp_path / "bad.toml"
    config.write_text("[simulation]\nclients = 'many'\n")
    assert main(["--config", str(config)]) == 2
    assert "clients: expected int" in capsys.readouterr().err


def test_the_demo_reaches_its_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", str(tmp_path), "--run-id", "demo", "--no-progress"]) == 0
    history = json.loads((tmp_path / "demo" / "history.json").read_text())
    settings = history["settings"]
    assert (settings["clients"], settings["rounds"], settings["strategy"]["name"]) == (
        100,
        30,
        "fedavg",
    )
    final = history["rounds"][-1]["metrics"]
    assert final["central_accuracy"] >= 0.90
    assert "final accuracy" in capsys.readouterr().out
