"""Large models through chunked blobs, federated analytics, central evaluation."""

import numpy as np
import pytest

from tests.integration.apps import Census
from tests.integration.harness import Processes, committed_rounds, final_model, wait_all


def test_large_models_travel_as_chunked_blobs(procs: Processes) -> None:
    initial = procs.tmp / "initial.npz"
    model = [np.arange(300_000, dtype=np.float32), np.zeros((3, 5), np.float32)]
    np.savez(initial, *model)
    server = procs.server(
        {
            # A 1.2 MB tensor against 256 KiB messages: both directions must go by blob.
            "server": {"max_message_bytes": 256 * 1024, "chunk_size_bytes": 128 * 1024},
            "run": {"rounds": 2, "min_available_clients": 2, "initial_model": str(initial)},
            "fit": {"min_clients": 2, "min_results": 2, "timeout_s": 60},
        }
    )
    clients = [procs.client(server.address, f"n{i}", app="make_add_one") for i in range(2)]
    assert wait_all(clients, timeout=120) == [0, 0]
    assert server.proc.wait(timeout=60) == 0
    big, small = final_model(server.state_dir)
    np.testing.assert_array_equal(big, model[0] + 2)
    np.testing.assert_array_equal(small, model[1] + 2)


def test_an_analytics_job_reduces_statistics(procs: Processes) -> None:
    server = procs.server(
        {
            "run": {"kind": "analytics", "rounds": 1, "min_available_clients": 3},
            "query": {
                "min_clients": 3,
                "min_results": 3,
                "timeout_s": 60,
                "config": {"question": "ages"},
                "reduce": {"count": "sum", "mean_age": "weighted_mean", "oldest": "max"},
                "tensors": "sum",
            },
        }
    )
    nodes = ["h1", "h2", "h3"]
    clients = [procs.client(server.address, n, app="make_census") for n in nodes]
    assert wait_all(clients, timeout=120) == [0, 0, 0]
    assert server.proc.wait(timeout=60) == 0
    (result,) = committed_rounds(server.state_dir)
    ages = np.concatenate([Census(n).ages for n in nodes])
    assert result.metrics["count"] == len(ages)
    assert result.metrics["mean_age"] == pytest.approx(ages.mean())
    assert result.metrics["oldest"] == ages.max()
    (histogram,) = final_model(server.state_dir)
    expected, _ = np.histogram(ages, bins=np.array([0, 30, 50, 70, 120]))
    assert histogram.tolist() == expected.tolist()


def test_central_evaluation_runs_every_round(procs: Processes) -> None:
    server = procs.server(
        {
            "run": {
                "rounds": 2,
                "min_available_clients": 2,
                "central_evaluation": "tests.integration.apps:central_evaluation",
            },
            "fit": {"min_clients": 2, "min_results": 2, "timeout_s": 60},
        }
    )
    clients = [procs.client(server.address, f"n{i}") for i in range(2)]
    assert wait_all(clients, timeout=120) == [0, 0]
    assert server.proc.wait(timeout=60) == 0
    rounds = committed_rounds(server.state_dir)[1:]
    distances = [r.metrics["central_distance"] for r in rounds]
    assert distances[1] < distances[0]
    assert all(r.metrics["central_loss"] == r.metrics["central_distance"] for r in rounds)
