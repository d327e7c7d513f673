"""Crash resume: a server killed at any point resumes to a bit-identical final model."""

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import Processes, Server, committed_rounds, final_model, wait_all
from tests.support.proxy import TcpProxy

CONFIG: dict[str, dict[str, Any]] = {
    "server": {"heartbeat_interval_s": 1.0, "session_timeout_s": 6.0, "max_poll_wait_s": 5.0},
    "run": {"rounds": 3, "min_available_clients": 3, "start_timeout_s": 60, "seed": 11},
    # Two of three nodes per round (seeded) and a strategy with state: a resume that
    # sampled differently or lost the momentum would end on a different model.
    "fit": {"fraction": 0.6, "min_clients": 2, "min_results": 2, "timeout_s": 60},
    "strategy": {"name": "fedavgm", "server_momentum": 0.9},
}
NODES = ["alpha", "beta", "gamma"]


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    forwarder = TcpProxy()
    yield forwarder
    forwarder.close()


def _train(procs: Processes, proxy: TcpProxy, *, state: str, crash_at: str = "") -> Server:
    env = {"POLLEN_TEST_CRASH_AT": crash_at} if crash_at else None
    server = procs.server(CONFIG, name=f"server-{state}", state=state, env=env)
    proxy.upstream = server.address
    clients = [procs.client(proxy.address, node) for node in NODES]
    if crash_at:
        assert server.proc.wait(timeout=120) == -signal.SIGKILL, server.text()[-2000:]
        # The same configuration and state directory, without the crash point.
        server = procs.server(CONFIG, name=f"server-{state}-restarted", state=state)
        proxy.upstream = server.address
    assert wait_all(clients, timeout=180) == [0, 0, 0]
    assert server.proc.wait(timeout=60) == 0
    return server


def _model_bytes(server: Server) -> list[bytes]:
    return [array.tobytes() for array in final_model(server.state_dir)]


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[bytes]]:
    tmp = tmp_path_factory.mktemp("baseline")
    procs = Processes(tmp)
    forwarder = TcpProxy()
    try:
        yield _model_bytes(_train(procs, forwarder, state="state"))
    finally:
        forwarder.close()
        procs.cleanup()


@pytest.mark.parametrize(
    "crash_at",
    [
        "result_accepted:4",  # while collecting round 2 (round 0 took 1 result, round 1 two)
        "before_aggregation:3",  # after round 2's last result, before aggregating it
        "before_commit:3",  # round 2's model is written, its commit is not
    ],
)
def test_a_killed_server_resumes_to_the_same_model(
    procs: Processes, proxy: TcpProxy, baseline_dir: list[bytes], crash_at: str
) -> None:
    server = _train(procs, proxy, state="state", crash_at=crash_at)
    assert [r.round for r in committed_rounds(server.state_dir)] == [0, 1, 2, 3]
    assert _model_bytes(server) == baseline_dir
    assert "resuming run run after committed round" in server.text()


def test_sigterm_is_graceful_and_the_run_resumes(procs: Processes, proxy: TcpProxy) -> None:
    server = procs.server(CONFIG)
    proxy.upstream = server.address
    clients = [procs.client(proxy.address, node, mode="slow:1") for node in NODES]
    server.wait_for(r"round 1/3")
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    done = [r.round for r in committed_rounds(server.state_dir)]
    assert done[-1] < 3, "the run must still be going when the server stops"
    assert "run run finished" not in server.text()
    server = procs.server(CONFIG, name="server-again")
    proxy.upstream = server.address
    assert wait_all(clients, timeout=180) == [0, 0, 0]
    assert server.proc.wait(timeout=60) == 0
    assert [r.round for r in committed_rounds(server.state_dir)] == [0, 1, 2, 3]
