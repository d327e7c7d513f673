"""Run an example in both modes: `pollen simulate`, and a real server with client processes."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from reference_server.simulation.cli import main as simulate_main
from tests.integration.harness import ROOT, Processes, committed_rounds, wait_all

EXAMPLES = ROOT / "examples"


def load(name: str) -> ModuleType:
    """The example's module, loaded from its file as `pollen simulate` loads it."""
    path = EXAMPLES / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def simulate(name: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    """`pollen simulate --app examples/NAME/NAME.py:simulation ...`; the history it wrote."""
    app = f"{EXAMPLES / name / name}.py:simulation"
    code = simulate_main(
        ["--app", app, "--output", str(tmp_path), "--run-id", "sim", "--no-progress", *args]
    )
    assert code == 0
    history: dict[str, Any] = json.loads((tmp_path / "sim" / "history.json").read_text())
    return history


def deploy(
    name: str, procs: Processes, *, clients: int = 2, rounds: int = 2
) -> list[dict[str, Any]]:
    """The example's server.toml (shrunk) and client processes; the committed rounds' metrics."""
    config = tomllib.loads((EXAMPLES / name / "server.toml").read_text())
    config["server"] = {"insecure": True}  # the harness picks the address and state folder
    config["run"].update(rounds=rounds, min_available_clients=clients)
    config["fit"].update(min_clients=clients, min_results=clients)
    # The server imports the central evaluation hook by module name, as the README says.
    env = {"PYTHONPATH": os.pathsep.join([str(EXAMPLES / name), str(ROOT)])}
    server = procs.server(config, env=env)
    app = f"{EXAMPLES / name / name}.py:client"
    workers = []
    for index in range(clients):
        log = procs.tmp / f"client-{index}.log"
        args = [
            sys.executable, "-m", "pollen_cli", "client", "--app", app,
            "--server", server.address, "--insecure", "--node-id", f"owner-{index}",
        ]  # fmt: skip
        partition = {"POLLEN_PARTITION": str(index), "POLLEN_NUM_PARTITIONS": str(clients)}
        workers.append(procs._spawn(args, log, partition))
    codes = wait_all(workers, timeout=120)
    assert codes == [0] * clients, server.text()[-3000:]
    assert server.proc.wait(timeout=60) == 0, server.text()[-3000:]  # it holds the state lock
    records = committed_rounds(server.state_dir, config["run"]["id"])
    return [dict(r.metrics) for r in records if r.round > 0]
