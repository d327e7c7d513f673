"""Coordinate-wise robust statistics: the median and the trimmed mean of the updates.

Each coordinate of the new model is a robust statistic of that coordinate across the
updates, unweighted by example counts (a weight would let one node claim the majority).
Both rules hold every update at once, and both depend only on the sorted values of each
coordinate, so the order of the updates cannot change a single bit of the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pollen.values import ConfigValue
from reference_server.strategies import _checks, _state
from reference_server.strategies.base import (
    Aggregate,
    FailedTask,
    FitUpdate,
    StrategyState,
    cast_like,
    collect,
    fit_metrics,
    stacked,
)

# (rows of one tensor, shape (updates, size)) -> one value per column
_Reduce = Callable[[np.ndarray], np.ndarray]


def _aggregate(
    parameters: Sequence[np.ndarray],
    updates: Iterable[FitUpdate],
    failures: Sequence[FailedTask],
    state: StrategyState,
    reduce: _Reduce,
) -> Aggregate:
    _state.read(state, parameters, ())
    held = collect(parameters, updates)
    reduced = [
        reduce(stacked(held, index)).reshape(tensor.shape)
        for index, tensor in enumerate(parameters)
    ]
    return Aggregate(
        parameters=cast_like(parameters, reduced),
        state={},
        metrics=fit_metrics([(u.metrics, u.num_examples) for u in held], failures),
    )


@dataclass(frozen=True, kw_only=True)
class FedMedian:
    """Coordinate-wise median (Yin et al. 2018); even counts average the two middle values."""

    name: ClassVar[str] = "fedmedian"
    needs_all_updates: ClassVar[bool] = True

    def initial_state(self, parameters: Sequence[np.ndarray]) -> StrategyState:
        return {}

    def fit_config(self, round: int) -> dict[str, ConfigValue]:
        return {}

    def aggregate_fit(
        self,
        *,
        round: int,
        parameters: Sequence[np.ndarray],
        updates: Iterable[FitUpdate],
        failures: Sequence[FailedTask],
        state: StrategyState,
    ) -> Aggregate:
        return _aggregate(parameters, updates, failures, state, _median)


@dataclass(frozen=True, kw_only=True)
class FedTrimmedAvg:
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    Of n values per coordinate, the floor(beta * n) smallest and as many largest are
    dropped and the rest averaged; beta < 0.5 always leaves at least one value.
    """

    name: ClassVar[str] = "fedtrimmedavg"
    needs_all_updates: ClassVar[bool] = True

    beta: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _checks.real(self.beta, field="beta", ge=0.0, lt=0.5))

    def initial_state(self, parameters: Sequence[np.ndarray]) -> StrategyState:
        return {}

    def fit_config(self, round: int) -> dict[str, ConfigValue]:
        return {}

    def aggregate_fit(
        self,
        *,
        round: int,
        parameters: Sequence[np.ndarray],
        updates: Iterable[FitUpdate],
        failures: Sequence[FailedTask],
        state: StrategyState,
    ) -> Aggregate:
        return _aggregate(parameters, updates, failures, state, self._trimmed_mean)

    def _trimmed_mean(self, rows: np.ndarray) -> np.ndarray:
        count = rows.shape[0]
        cut = math.floor(self.beta * count)
        ordered = np.sort(rows, axis=0)
        result: np.ndarray = ordered[cut : count - cut].mean(axis=0)
        return result


def _median(rows: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.median(rows, axis=0)
    return result
