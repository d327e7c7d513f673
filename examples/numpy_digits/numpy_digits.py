"""Digits with a numpy softmax regression: the `make demo` app, in both modes.

Simulation (100 virtual clients in one process):

    pollen simulate --app examples/numpy_digits/numpy_digits.py:simulation

Deployment (a server and client processes; README.md has the full commands):

    PYTHONPATH=examples/numpy_digits pollen server \
        --config examples/numpy_digits/server.toml --insecure
    POLLEN_PARTITION=0 POLLEN_NUM_PARTITIONS=3 pollen client \
        --app examples/numpy_digits/numpy_digits.py:client --server 127.0.0.1:8443 --insecure

The model, the training loop and the data split are the demo's
(`reference_server.simulation.demo`); this file only wires them to the two modes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.client import Client
from pollen.values import ConfigValue
from reference_server.simulation import AppContext, SimulationApp
from reference_server.simulation.demo import (
    DigitsClient,
    digits,
    load_digits_split,
    partition,
    score,
)


def simulation(context: AppContext) -> SimulationApp:
    """For `pollen simulate`: the demo app (Dirichlet label skew, alpha from [app])."""
    return digits(context)


def client() -> Client:
    """For `pollen client`: this process is partition POLLEN_PARTITION of POLLEN_NUM_PARTITIONS.

    Every client process computes the same seeded split and keeps its own part, as
    separate data owners would each hold theirs.
    """
    index = int(os.environ.get("POLLEN_PARTITION", "0"))
    count = int(os.environ.get("POLLEN_NUM_PARTITIONS", "3"))
    seed = int(os.environ.get("POLLEN_SEED", "0"))
    if not 0 <= index < count:
        raise ValueError(f"POLLEN_PARTITION must be in [0, {count}), got {index}")
    x_train, y_train, _, _ = load_digits_split(seed)
    rows = partition(y_train, count, how="dirichlet", alpha=0.5, seed=seed)[index]
    return DigitsClient(x_train[rows], y_train[rows], seed=seed * 1_000_003 + index)


def central_evaluation(
    round: int, parameters: list[npt.NDArray[Any]]
) -> tuple[float, dict[str, ConfigValue]]:
    """For the server's [run] central_evaluation: accuracy on the held-out test set."""
    _, _, x_test, y_test = load_digits_split(0)
    loss, accuracy = score([np.asarray(p) for p in parameters], x_test, y_test)
    return loss, {"accuracy": accuracy}
