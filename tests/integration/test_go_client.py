"""The Go SDK (clients/go) against the Python reference server, over real gRPC.

The Go example client (clients/go/examples/logreg) is built once with the machine's `go`;
the tests skip, saying so, only when no Go toolchain is on PATH.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.harness import ROOT, Processes, committed_rounds, final_model, wait_all

GO_MODULE = ROOT / "clients" / "go"
FAST = {"heartbeat_interval_s": 1.0, "session_timeout_s": 4.0, "max_poll_wait_s": 5.0}


@pytest.fixture(scope="module")
def logreg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain: `go` is not on PATH, so the Go client cannot be built")
    binary = tmp_path_factory.mktemp("go") / "logreg"
    env = {**os.environ, "GOFLAGS": "-mod=readonly"}
    subprocess.run(
        [go, "build", "-o", str(binary), "./examples/logreg"],
        cwd=GO_MODULE, env=env, check=True, timeout=600,
    )  # fmt: skip
    return binary


def go_client(
    procs: Processes, binary: Path, address: str, node_id: str, *args: str
) -> subprocess.Popen[bytes]:
    log = procs.tmp / f"client-{node_id}.log"
    return procs._spawn(
        [str(binary), "-server", address, "-node-id", node_id, "-insecure", *args], log, None
    )


def config(clients: int, rounds: int, **server: Any) -> dict[str, dict[str, Any]]:
    return {
        "server": {**FAST, **server},
        "run": {"rounds": rounds, "min_available_clients": clients, "start_timeout_s": 60},
        "fit": {"min_clients": clients, "min_results": clients, "timeout_s": 60},
        "evaluate": {"min_clients": clients, "min_results": clients, "timeout_s": 60},
    }


def true_weights(d: int) -> np.ndarray:
    # TrueWeight in clients/go/examples/logreg/main.go.
    return np.array([math.sin(j + 1) for j in range(d)])


def test_go_clients_train_logistic_regression(procs: Processes, logreg: Path) -> None:
    server = procs.server(config(3, rounds=3))
    clients = [go_client(procs, logreg, server.address, f"go-{i}") for i in range(3)]
    assert wait_all(clients, timeout=120) == [0, 0, 0]  # a shutdown instruction is a normal end
    assert server.proc.wait(timeout=60) == 0
    rounds = committed_rounds(server.state_dir)
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    losses = [r.metrics["eval_loss"] for r in rounds[1:]]
    assert losses[0] > losses[1] > losses[2]
    weights, bias = final_model(server.state_dir)
    assert weights.dtype == np.float32
    assert weights.shape == (8,)
    assert bias.shape == (1,)
    # The labels come from sign(x . w*): the model must point the same way and classify
    # fresh data from the same distribution.
    w_star = true_weights(8)
    cosine = weights @ w_star / (np.linalg.norm(weights) * np.linalg.norm(w_star))
    assert cosine > 0.9
    x = np.random.default_rng(7).normal(size=(2000, 8))
    accuracy = np.mean((x @ weights + bias[0] > 0) == (x @ w_star > 0))
    assert accuracy > 0.9
    log = server.text()
    assert "round 3/3 | fit: 3 accepted, no failures" in log
    assert "pollen-go/" in log


def test_go_client_moves_large_tensors_through_blobs(procs: Processes, logreg: Path) -> None:
    # 20000 float32 weights are 80 kB: more than the server's 64 KiB messages, so the model
    # reaches the clients as a blob and their updates can only arrive as uploaded blobs,
    # in chunks of 16 KiB.
    server = procs.server(config(2, rounds=2, max_message_bytes=65536, chunk_size_bytes=16384))
    args = ("-features", "20000", "-samples", "32")
    clients = [go_client(procs, logreg, server.address, f"big-{i}", *args) for i in range(2)]
    assert wait_all(clients, timeout=120) == [0, 0]
    assert server.proc.wait(timeout=60) == 0
    rounds = committed_rounds(server.state_dir)
    assert [r.round for r in rounds] == [0, 1, 2]
    weights, _ = final_model(server.state_dir)
    assert weights.shape == (20000,)
    assert np.count_nonzero(weights) > 19000
    assert "round 2/2 | fit: 2 accepted, no failures" in server.text()


def test_go_client_leaves_on_sigterm(procs: Processes, logreg: Path) -> None:
    server = procs.server(config(2, rounds=1))
    client = go_client(procs, logreg, server.address, "go-term")
    server.wait_for(r"node go-term connected")
    os.killpg(client.pid, signal.SIGTERM)
    assert client.wait(timeout=30) == 0
    server.wait_for(r"node go-term left \(CLIENT_STOPPING\)", timeout=30)
