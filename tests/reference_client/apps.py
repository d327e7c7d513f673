"""Client applications for the reference client's tests."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.client import Client, EvaluateResult, FitResult
from pollen.values import Config, ConfigValue

Arrays = Sequence[npt.NDArray[Any]]


class Trainer(Client):
    """Adds 1 to every parameter; counts its calls."""

    def __init__(self) -> None:
        self.fits = 0
        self.seen: list[list[npt.NDArray[Any]]] = []

    def fit(self, parameters: Arrays, config: Config) -> FitResult:
        self.fits += 1
        self.seen.append([np.array(p) for p in parameters])
        return FitResult(
            parameters=[p + 1 for p in parameters], num_examples=10, metrics={"loss": 0.25}
        )

    def evaluate(self, parameters: Arrays, config: Config) -> EvaluateResult:
        return EvaluateResult(loss=float(sum(float(p.sum()) for p in parameters)), num_examples=3)

    def get_properties(self, config: Config) -> Mapping[str, ConfigValue]:
        return {"cores": 2}


class SlowTrainer(Trainer):
    """A fit that lasts until released (or `seconds` pass)."""

    def __init__(self, seconds: float = 5.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = threading.Event()
        self.release = threading.Event()

    def fit(self, parameters: Arrays, config: Config) -> FitResult:
        self.started.set()
        self.release.wait(self.seconds)
        return super().fit(parameters, config)


class Broken(Trainer):
    """A fit that raises, with a message that must not leave the node."""

    def fit(self, parameters: Arrays, config: Config) -> FitResult:
        raise ValueError("patient 1234 has no record")


class BadResult(Trainer):
    """A fit that returns a result with zero examples (InvalidArgument from FitResult)."""

    def fit(self, parameters: Arrays, config: Config) -> FitResult:
        return FitResult(parameters=list(parameters), num_examples=0)
