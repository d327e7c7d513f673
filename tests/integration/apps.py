"""Client applications of the integration tests (loaded by `pollen client --app`).

A deterministic linear regression: each node's data is derived from its node id, and fit
runs a fixed number of gradient steps, so the same global model always yields the same
update and a whole run is reproducible bit for bit. POLLEN_TEST_APP_MODE selects a
misbehaviour: "hang:R" blocks in fit from round R on; "slow:S" sleeps S seconds per fit.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np

from pollen.client import Client, EvaluateResult, FitResult, QueryResult
from pollen.values import Config

TRUE_WEIGHTS = np.array([2.0, -1.0, 0.5], dtype=np.float64)


class LinearRegression(Client):
    def __init__(self, node_id: str, mode: str = "") -> None:
        seed = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(64, 3))
        self.y = self.x @ TRUE_WEIGHTS + rng.normal(scale=0.1, size=64)
        self.mode = mode

    def get_parameters(self, config: Config) -> Sequence[np.ndarray]:
        return [np.zeros(3, dtype=np.float32), np.zeros(1, dtype=np.float32)]

    def _loss(self, w: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean((self.x @ w + b - self.y) ** 2))

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        kind, _, round_text = self.mode.partition(":")
        if kind == "hang" and int(config.get("round", 0)) >= int(round_text):
            time.sleep(3600)
        if kind == "slow":
            time.sleep(float(round_text))
        w = parameters[0].astype(np.float64)
        b = parameters[1].astype(np.float64)
        start = self._loss(w, b)
        for _ in range(5):
            error = self.x @ w + b - self.y
            w -= 0.1 * (self.x.T @ error) / len(self.y)
            b -= 0.1 * np.array([error.mean()])
        return FitResult(
            parameters=[w.astype(np.float32), b.astype(np.float32)],
            num_examples=len(self.y),
            metrics={"loss": start},
        )

    def evaluate(self, parameters: Sequence[np.ndarray], config: Config) -> EvaluateResult:
        loss = self._loss(parameters[0].astype(np.float64), parameters[1].astype(np.float64))
        return EvaluateResult(loss=loss, num_examples=len(self.y), metrics={"mse": loss})


def make_client() -> Client:
    # The node id is on the command line; the data only has to differ between nodes.
    node = os.environ.get("POLLEN_TEST_NODE", "") or str(os.getpid())
    return LinearRegression(node, os.environ.get("POLLEN_TEST_APP_MODE", ""))


class AddOne(Client):
    """Returns the model plus one: the aggregate after n rounds is exactly initial + n."""

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        return FitResult(parameters=[p + 1 for p in parameters], num_examples=1)


def make_add_one() -> Client:
    return AddOne()


class Census(Client):
    """Answers analytics queries about a node's (synthetic) people, never the rows."""

    def __init__(self, node_id: str) -> None:
        seed = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "little")
        self.ages = np.random.default_rng(seed).integers(18, 90, size=40)

    def query(self, config: Config, inputs: Sequence[np.ndarray]) -> QueryResult:
        counts, _ = np.histogram(self.ages, bins=np.array([0, 30, 50, 70, 120]))
        return QueryResult(
            metrics={"count": len(self.ages), "mean_age": float(self.ages.mean()),
                     "oldest": int(self.ages.max())},
            tensors=[counts.astype(np.int64)],
            num_examples=len(self.ages),
        )  # fmt: skip


def make_census() -> Client:
    return Census(os.environ.get("POLLEN_TEST_NODE", ""))


def central_evaluation(round: int, arrays: list[np.ndarray]) -> tuple[float, dict[str, float]]:
    """Server-side evaluation hook: the distance of the weights to the true ones."""
    distance = float(np.linalg.norm(arrays[0].astype(np.float64) - TRUE_WEIGHTS))
    return distance, {"distance": distance}
