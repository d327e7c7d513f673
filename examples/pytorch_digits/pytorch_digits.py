"""Digits with a small PyTorch MLP on the CPU, in both modes.

Needs PyTorch (requirements.txt); everything else comes from `pip install -e '.[examples]'`.

Simulation (100 virtual clients, Dirichlet label skew):

    pollen simulate --app examples/pytorch_digits/pytorch_digits.py:simulation --rounds 20

Deployment (a server and client processes; README.md has the full commands):

    PYTHONPATH=examples/pytorch_digits pollen server \
        --config examples/pytorch_digits/server.toml --insecure
    POLLEN_PARTITION=0 POLLEN_NUM_PARTITIONS=3 pollen client \
        --app examples/pytorch_digits/pytorch_digits.py:client --server 127.0.0.1:8443 --insecure

The federated model is the network's state_dict as float32 numpy arrays, in the
state_dict's order; a client loads them, trains a few epochs of SGD and returns them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from pollen.client import Client, EvaluateResult, FitResult
from pollen.values import Config, ConfigValue
from reference_server.simulation import AppContext, SimulationApp
from reference_server.simulation.demo import load_digits_split, partition

# Many virtual clients share two cores: one thread each avoids oversubscription, and
# single-threaded CPU kernels make a client's training reproducible.
torch.set_num_threads(1)


def network() -> nn.Module:
    torch.manual_seed(0)  # the same initial model in every process
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def get_arrays(net: nn.Module) -> list[npt.NDArray[np.float32]]:
    return [t.detach().cpu().numpy().copy() for t in net.state_dict().values()]


def set_arrays(net: nn.Module, arrays: Sequence[npt.NDArray[Any]]) -> None:
    keys = list(net.state_dict())
    net.load_state_dict(
        {k: torch.from_numpy(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)}
    )


def evaluate_on(
    arrays: Sequence[npt.NDArray[Any]], x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[float, float]:
    net = network()
    set_arrays(net, arrays)
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
        target = torch.from_numpy(y)
        loss = nn.functional.cross_entropy(logits, target).item()
        accuracy = (logits.argmax(dim=1) == target).float().mean().item()
    return float(loss), float(accuracy)


class TorchClient(Client):
    def __init__(self, x: npt.NDArray[Any], y: npt.NDArray[Any], *, seed: int) -> None:
        self.x, self.y, self.seed = torch.from_numpy(x), torch.from_numpy(y), seed

    def get_parameters(self, config: Config) -> list[npt.NDArray[np.float32]]:
        return get_arrays(network())

    def fit(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> FitResult:
        net = network()
        set_arrays(net, parameters)
        optimizer = torch.optim.SGD(net.parameters(), lr=float(config.get("lr", 0.1)))
        generator = torch.Generator().manual_seed(self.seed * 1000 + int(config.get("round", 0)))
        for _ in range(int(config.get("local_epochs", 5))):
            order = torch.randperm(len(self.y), generator=generator)
            for start in range(0, len(order), 16):
                rows = order[start : start + 16]
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(self.x[rows]), self.y[rows]).backward()
                optimizer.step()
        return FitResult(parameters=get_arrays(net), num_examples=len(self.y))

    def evaluate(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> EvaluateResult:
        loss, accuracy = evaluate_on(parameters, self.x.numpy(), self.y.numpy())
        return EvaluateResult(loss=loss, num_examples=len(self.y), metrics={"accuracy": accuracy})


def _client(index: int, count: int, seed: int) -> TorchClient:
    x_train, y_train, _, _ = load_digits_split(seed)
    rows = partition(y_train, count, how="dirichlet", alpha=0.5, seed=seed)[index]
    return TorchClient(x_train[rows], y_train[rows], seed=seed * 1_000_003 + index)


def central_evaluation(
    round: int, parameters: list[npt.NDArray[Any]]
) -> tuple[float, dict[str, ConfigValue]]:
    _, _, x_test, y_test = load_digits_split(0)
    loss, accuracy = evaluate_on(parameters, x_test, y_test)
    return loss, {"accuracy": accuracy}


def simulation(context: AppContext) -> SimulationApp:
    """For `pollen simulate`."""
    return SimulationApp(
        client_factory=lambda index: _client(index, context.clients, context.seed),
        initial_parameters=get_arrays(network()),
        central_evaluation=central_evaluation,
    )


def client() -> Client:
    """For `pollen client`: partition POLLEN_PARTITION of POLLEN_NUM_PARTITIONS."""
    return _client(
        int(os.environ.get("POLLEN_PARTITION", "0")),
        int(os.environ.get("POLLEN_NUM_PARTITIONS", "3")),
        int(os.environ.get("POLLEN_SEED", "0")),
    )
