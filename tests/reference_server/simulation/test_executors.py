"""Executors: the in-process and Ray engines give the same model, bit for bit."""

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from pollen.client import Client, FitResult
from pollen.messages import FailureReply, FitInstruction, FitReply
from pollen.tensors import encode_tensor
from pollen.values import Config
from reference_server.simulation import (
    InProcessExecutor,
    RayExecutor,
    RayOptions,
    SimulationApp,
    SimulationConfig,
    simulate,
)
from reference_server.simulation.executors import node_id


class LocalSgd(Client):
    """Least squares on its own seeded data: deterministic, float32, order-sensitive sums."""

    def __init__(self, index: int) -> None:
        rng = np.random.default_rng(index)
        self.x = rng.standard_normal((20 + index % 7, 5)).astype(np.float32)
        self.y = (self.x @ np.arange(5, dtype=np.float32) + index % 3).astype(np.float32)

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        w = parameters[0].copy()
        # OpenBLAS can leave spurious floating-point flags behind under load (numpy#24067),
        # which this suite's warnings-as-errors would turn into failed clients; a real NaN
        # would still break the bit-identical comparison below.
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for _ in range(3):
                w -= np.float32(0.05) * self.x.T @ (self.x @ w - self.y) / np.float32(len(self.y))
        return FitResult(parameters=[w], num_examples=len(self.y))


def build(index: int) -> Client:
    if index == 3:
        raise OSError("this client's disk is gone")
    return LocalSgd(index)


APP = SimulationApp(client_factory=build, initial_parameters=[np.zeros(5, np.float32)])
CONFIG = SimulationConfig(clients=40, rounds=3, fraction=0.5, seed=11)


def test_in_process_runs_each_node_and_reports_factory_failures() -> None:
    instruction = FitInstruction(parameters=(encode_tensor(np.zeros(5, np.float32)),))
    nodes = [node_id(i, 10) for i in (2, 3, 4)]
    replies = dict(InProcessExecutor(build).run(instruction, nodes))
    assert set(replies) == set(nodes)
    assert isinstance(replies[nodes[0]], FitReply)
    failed = replies[nodes[1]]
    assert isinstance(failed, FailureReply)
    assert failed.error.code.name == "APP_ERROR"
    assert "OSError" in failed.error.message


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[RayExecutor]:
    # Small batches: many Ray tasks, finishing out of order.
    executor = RayExecutor(
        build,
        RayOptions(batch_size=3, init_args={"num_cpus": 2, "_node_ip_address": "127.0.0.1"}),
    )
    yield executor
    executor.close()


def test_ray_and_in_process_give_a_bit_identical_model(ray_executor: RayExecutor) -> None:
    local = simulate(APP, CONFIG)
    remote = simulate(APP, CONFIG, executor=ray_executor)
    assert remote.executor == "ray"
    assert [r.metrics["fit_num_updates"] for r in remote.rounds] == [
        r.metrics["fit_num_updates"] for r in local.rounds
    ]
    assert local.parameters[0].tobytes() == remote.parameters[0].tobytes()
    assert not np.array_equal(local.parameters[0], np.zeros(5, np.float32))
