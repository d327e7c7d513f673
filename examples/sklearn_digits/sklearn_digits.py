"""Digits with scikit-learn's SGDClassifier (logistic loss), in both modes.

Simulation (50 virtual clients, pathological shards: most clients see two digits):

    pollen simulate --app examples/sklearn_digits/sklearn_digits.py:simulation --clients 50

Deployment (a server and client processes; README.md has the full commands):

    PYTHONPATH=examples/sklearn_digits pollen server \
        --config examples/sklearn_digits/server.toml --insecure
    POLLEN_PARTITION=0 POLLEN_NUM_PARTITIONS=3 pollen client \
        --app examples/sklearn_digits/sklearn_digits.py:client --server 127.0.0.1:8443 --insecure

The federated model is the classifier's `coef_` and `intercept_`: each round a client
loads the global ones, runs `partial_fit` over its data for a few epochs and returns them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import SGDClassifier

from pollen.client import Client, EvaluateResult, FitResult
from pollen.values import Config, ConfigValue
from reference_server.simulation import AppContext, SimulationApp
from reference_server.simulation.demo import load_digits_split
from reference_server.simulation.partitioners import shards

CLASSES = np.arange(10)


def model(parameters: Sequence[npt.NDArray[Any]], *, seed: int = 0) -> SGDClassifier:
    """A classifier holding `parameters` (coef_, intercept_), ready for partial_fit."""
    classifier = SGDClassifier(
        loss="log_loss", learning_rate="constant", eta0=0.05, alpha=1e-4, random_state=seed
    )
    # partial_fit sets up classes_ and the shapes; the global weights then replace its own.
    classifier.partial_fit(np.zeros((1, 64)), [0], classes=CLASSES)
    classifier.coef_ = np.asarray(parameters[0], dtype=np.float64).copy()
    classifier.intercept_ = np.asarray(parameters[1], dtype=np.float64).copy()
    return classifier


def initial_parameters() -> list[npt.NDArray[np.float64]]:
    return [np.zeros((10, 64)), np.zeros(10)]


def evaluate_on(
    parameters: Sequence[npt.NDArray[Any]], x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[float, float]:
    classifier = model(parameters)
    x = x.astype(np.float64)
    probabilities = np.clip(classifier.predict_proba(x), 1e-12, 1.0)
    loss = float(-np.mean(np.log(probabilities[np.arange(len(y)), y])))
    return loss, float(classifier.score(x, y))


class SklearnClient(Client):
    def __init__(self, x: npt.NDArray[Any], y: npt.NDArray[Any], *, seed: int) -> None:
        # SGDClassifier keeps float64 weights and wants its data in the same precision.
        self.x, self.y, self.seed = x.astype(np.float64), y, seed

    def get_parameters(self, config: Config) -> list[npt.NDArray[np.float64]]:
        return initial_parameters()

    def fit(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> FitResult:
        round_seed = self.seed * 1000 + int(config.get("round", 0))
        classifier = model(parameters, seed=round_seed)
        rng = np.random.default_rng(round_seed)
        for _ in range(int(config.get("local_epochs", 3))):
            order = rng.permutation(len(self.y))
            classifier.partial_fit(self.x[order], self.y[order])
        return FitResult(
            parameters=[classifier.coef_, classifier.intercept_], num_examples=len(self.y)
        )

    def evaluate(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> EvaluateResult:
        loss, accuracy = evaluate_on(parameters, self.x, self.y)
        return EvaluateResult(loss=loss, num_examples=len(self.y), metrics={"accuracy": accuracy})


def _client(index: int, count: int, seed: int) -> SklearnClient:
    x_train, y_train, _, _ = load_digits_split(seed)
    rows = shards(y_train, count, shards_per_client=2, seed=seed)[index]
    return SklearnClient(x_train[rows], y_train[rows], seed=seed * 1_000_003 + index)


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
        initial_parameters=initial_parameters(),
        central_evaluation=central_evaluation,
    )


def client() -> Client:
    """For `pollen client`: partition POLLEN_PARTITION of POLLEN_NUM_PARTITIONS."""
    return _client(
        int(os.environ.get("POLLEN_PARTITION", "0")),
        int(os.environ.get("POLLEN_NUM_PARTITIONS", "3")),
        int(os.environ.get("POLLEN_SEED", "0")),
    )
