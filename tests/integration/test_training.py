"""Training over real gRPC: one server process and several client processes."""

import os
import signal
import time
from typing import Any

import numpy as np

from tests.integration.apps import TRUE_WEIGHTS
from tests.integration.harness import Processes, committed_rounds, final_model, wait_all

FAST = {"heartbeat_interval_s": 1.0, "session_timeout_s": 4.0, "max_poll_wait_s": 5.0}


def config(clients: int, rounds: int = 3, **fit: object) -> dict[str, dict[str, Any]]:
    return {
        "server": FAST,
        "run": {"rounds": rounds, "min_available_clients": clients, "start_timeout_s": 60},
        "fit": {"min_clients": clients, "min_results": clients, "timeout_s": 60, **fit},
        "evaluate": {"min_clients": clients, "min_results": clients, "timeout_s": 60},
    }


def test_clients_train_a_model_over_grpc(procs: Processes) -> None:
    server = procs.server(config(3))
    clients = [procs.client(server.address, f"node-{i}") for i in range(3)]
    assert wait_all(clients, timeout=120) == [0, 0, 0]
    assert server.proc.wait(timeout=60) == 0
    rounds = committed_rounds(server.state_dir)
    assert [r.round for r in rounds] == [0, 1, 2, 3]  # round 0: the model from a client
    losses = [r.metrics["eval_loss"] for r in rounds[1:]]
    assert losses[2] < losses[0]
    weights, _ = final_model(server.state_dir)
    assert np.abs(weights - TRUE_WEIGHTS).max() < 0.5
    log = server.text()
    assert "round 3/3 | fit: 3 accepted, no failures" in log
    assert "run run finished" in log


def test_a_client_killed_mid_round_does_not_stop_the_round(procs: Processes) -> None:
    settings = config(3, rounds=2, min_results=2)
    del settings["evaluate"]
    server = procs.server(settings)
    good = [procs.client(server.address, f"node-{i}") for i in range(2)]
    doomed = procs.client(server.address, "node-doomed", mode="hang:2")
    server.wait_for(r"round 1/2")
    # node-doomed now blocks in its round-2 fit, still sending heartbeats, until killed.
    time.sleep(1.0)
    os.killpg(doomed.pid, signal.SIGKILL)
    assert wait_all(good, timeout=120) == [0, 0]
    assert server.proc.wait(timeout=60) == 0
    round2 = committed_rounds(server.state_dir)[2]
    fit = round2.history["fit_attempt_1"]
    assert fit["accepted"] == 2
    assert fit["failures"] == {"dropped": 1}
    assert "node node-doomed timed out" in server.text()
