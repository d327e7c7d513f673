"""The default app of `pollen simulate`: handwritten digits, softmax regression in numpy.

scikit-learn's bundled digits (1,797 8x8 images, no download) are split into a seeded
80/20 train/test set; the training part is dealt to the virtual clients with a Dirichlet
label skew, and the server scores every new global model on the test part (the central
accuracy the demo reports). Needs the `examples` extra for scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.client import Client, EvaluateResult, FitResult
from pollen.values import Config, ConfigValue
from reference_server.simulation.partitioners import dirichlet, iid, quantity_skew, shards
from reference_server.simulation.runner import AppContext, SimulationApp

FEATURES = 64
CLASSES = 10
Arrays = tuple[npt.NDArray[Any], ...]


@cache
def load_digits_split(seed: int = 0) -> Arrays:
    """(x_train, y_train, x_test, y_test): features scaled to [0, 1], float32."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(
            "the digits demo needs scikit-learn: pip install 'pollen-fl[examples]'"
        ) from exc
    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def initial_model() -> list[npt.NDArray[np.float32]]:
    return [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]


def _probabilities(
    parameters: Sequence[npt.NDArray[Any]], x: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    weights, bias = parameters
    logits = x.astype(np.float64) @ weights.astype(np.float64) + bias.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    out: npt.NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return out


def score(
    parameters: Sequence[npt.NDArray[Any]], x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model on (x, y)."""
    p = _probabilities(parameters, x)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))


class DigitsClient(Client):
    """Softmax regression trained with minibatch SGD on one client's digits."""

    def __init__(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *, seed: int) -> None:
        self.x, self.y, self.seed = x, y, seed

    def get_parameters(self, config: Config) -> list[npt.NDArray[np.float32]]:
        return initial_model()

    def fit(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> FitResult:
        weights = parameters[0].astype(np.float64)
        bias = parameters[1].astype(np.float64)
        lr = float(config.get("lr", 0.5))
        epochs = int(config.get("local_epochs", 5))
        batch = int(config.get("batch_size", 16))
        # Seeded by client and round, so a rerun (any executor) trains identically.
        rng = np.random.default_rng([self.seed, int(config.get("round", 0))])
        onehot = np.eye(CLASSES)[self.y]
        x = self.x.astype(np.float64)
        for _ in range(epochs):
            order = rng.permutation(len(self.y))
            for start in range(0, len(order), batch):
                rows = order[start : start + batch]
                p = _probabilities((weights, bias), self.x[rows])
                grad = (p - onehot[rows]) / len(rows)
                weights -= lr * (x[rows].T @ grad)
                bias -= lr * grad.sum(axis=0)
        loss, accuracy = score((weights, bias), self.x, self.y)
        return FitResult(
            parameters=[weights.astype(np.float32), bias.astype(np.float32)],
            num_examples=len(self.y),
            metrics={"train_loss": loss, "train_accuracy": accuracy},
        )

    def evaluate(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> EvaluateResult:
        loss, accuracy = score(parameters, self.x, self.y)
        return EvaluateResult(loss=loss, num_examples=len(self.y), metrics={"accuracy": accuracy})


def partition(
    labels: npt.NDArray[np.int64], clients: int, *, how: str, alpha: float, seed: int
) -> tuple[npt.NDArray[np.int64], ...]:
    if how == "dirichlet":
        return dirichlet(labels, clients, alpha=alpha, seed=seed)
    if how == "iid":
        return iid(len(labels), clients, seed=seed)
    if how == "shards":
        return shards(labels, clients, seed=seed)
    if how == "quantity":
        return quantity_skew(len(labels), clients, alpha=alpha, seed=seed)
    raise ValueError(f"unknown partitioner {how!r}: dirichlet, iid, shards or quantity")


def digits(context: AppContext) -> SimulationApp:
    """The demo app. [app] options: partitioner ("dirichlet"), alpha (0.5)."""
    options = dict(context.options)
    how = str(options.pop("partitioner", "dirichlet"))
    alpha = float(options.pop("alpha", 0.5))
    if options:
        raise ValueError(f"unknown [app] option(s) {sorted(options)}: partitioner, alpha")
    x_train, y_train, x_test, y_test = load_digits_split(context.seed)
    parts = partition(y_train, context.clients, how=how, alpha=alpha, seed=context.seed)

    def client(index: int) -> Client:
        rows = parts[index]
        return DigitsClient(x_train[rows], y_train[rows], seed=context.seed * 1_000_003 + index)

    def central(
        round: int, parameters: list[npt.NDArray[Any]]
    ) -> tuple[float, dict[str, ConfigValue]]:
        loss, accuracy = score(parameters, x_test, y_test)
        return loss, {"accuracy": accuracy}

    return SimulationApp(
        client_factory=client, initial_parameters=initial_model(), central_evaluation=central
    )


__all__ = ["DigitsClient", "digits", "initial_model", "load_digits_split", "partition", "score"]
