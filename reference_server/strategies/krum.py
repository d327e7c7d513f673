"""Distance-based Byzantine-robust rules: Krum, Multi-Krum and Bulyan.

Krum (Blanchard et al. 2017) scores each update by the sum of its squared L2 distances,
over the whole model, to its n - f - 2 nearest other updates, and keeps the update with
the lowest score: with at most f Byzantine updates among n > 2f + 2, that update sits among
honest ones. Multi-Krum averages the m best-scored updates. Bulyan (El Mhamdi et al. 2018)
selects n - 2f updates by repeated Krum and then takes, per coordinate, the mean of the
n - 4f selected values closest to their median.

Equal scores are ordered by each update's summed distance to all the others, then by
iteration order (see `krum_ranking`), so results are deterministic. All three rules
hold every update at once and compute all n^2 distances: O(n x model) memory and
O(n^2 x model) time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pollen.values import ConfigValue
from reference_server.strategies import _checks, _state
from reference_server.strategies.base import (
    Aggregate,
    AggregationFailed,
    FailedTask,
    FitUpdate,
    StrategyState,
    cast_like,
    collect,
    fit_metrics,
    stacked,
    weighted_mean64,
)


def squared_distances(parameters: Sequence[np.ndarray], updates: Sequence[FitUpdate]) -> np.ndarray:
    """The (n, n) matrix of squared L2 distances between updates over all tensors, float64.

    Differences are taken directly (not through |a|^2 + |b|^2 - 2ab), because near-equal
    updates are exactly the ones Krum must tell apart and the expansion cancels there.
    """
    count = len(updates)
    upper = np.zeros((count, count), dtype=np.float64)
    for index in range(len(parameters)):
        rows = stacked(updates, index)
        for first in range(count - 1):
            differences = rows[first + 1 :] - rows[first]
            upper[first, first + 1 :] += np.square(differences).sum(axis=1)
    # Mirroring keeps d(i, j) and d(j, i) the same bits.
    distances: np.ndarray = upper + upper.T
    return distances


def krum_scores(distances: np.ndarray, neighbours: int) -> np.ndarray:
    """Each update's sum of squared distances to its `neighbours` nearest other updates."""
    others = distances.copy()
    np.fill_diagonal(others, np.inf)
    nearest = np.sort(others, axis=1)[:, :neighbours]
    scores: np.ndarray = nearest.sum(axis=1)
    return scores


def krum_ranking(distances: np.ndarray, neighbours: int) -> list[int]:
    """Update positions from best to worst Krum score.

    Equal scores are common with few neighbours: two updates that are each other's
    nearest neighbour score the same with one. They are ordered by the sum of distances to
    all other updates, which depends on the updates and not on their order, and only then
    by position.
    """
    scores = krum_scores(distances, neighbours)
    # Summing sorted rows gives the same bits whatever the order of the updates.
    spread = np.sort(distances, axis=1).sum(axis=1)
    positions = np.arange(distances.shape[0])
    # lexsort sorts by its last key first.
    return [int(position) for position in np.lexsort((positions, spread, scores))]


@dataclass(frozen=True, kw_only=True)
class Krum:
    """Krum: the new model is the single update with the lowest Krum score.

    Needs more than 2 * num_malicious + 2 updates.
    """

    name: ClassVar[str] = "krum"
    needs_all_updates: ClassVar[bool] = True

    num_malicious: int

    def __post_init__(self) -> None:
        _checks.integer(self.num_malicious, field="num_malicious", ge=0)

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
        _state.read(state, parameters, ())
        held = collect(parameters, updates)
        self._require(len(held), 2 * self.num_malicious + 3)
        neighbours = len(held) - self.num_malicious - 2
        best = held[krum_ranking(squared_distances(parameters, held), neighbours)[0]]
        return Aggregate(
            # Copies: the engine may hand over buffers it reuses or maps from disk.
            parameters=tuple(np.array(tensor, copy=True) for tensor in best.parameters),
            state={},
            metrics=_metrics(held, failures, selected=1),
        )

    def _require(self, count: int, minimum: int) -> None:
        if count < minimum:
            raise AggregationFailed(
                f"{self.name} with num_malicious={self.num_malicious} needs at least "
                f"{minimum} updates, got {count}",
                field="updates",
            )


@dataclass(frozen=True, kw_only=True)
class MultiKrum(Krum):
    """Multi-Krum: the example-weighted mean of the `num_selected` best-scored updates.

    The selected updates are averaged in their iteration order.
    """

    name: ClassVar[str] = "multikrum"

    num_selected: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _checks.integer(self.num_selected, field="num_selected", ge=1)

    def aggregate_fit(
        self,
        *,
        round: int,
        parameters: Sequence[np.ndarray],
        updates: Iterable[FitUpdate],
        failures: Sequence[FailedTask],
        state: StrategyState,
    ) -> Aggregate:
        _state.read(state, parameters, ())
        held = collect(parameters, updates)
        self._require(len(held), max(2 * self.num_malicious + 3, self.num_selected))
        neighbours = len(held) - self.num_malicious - 2
        ranking = krum_ranking(squared_distances(parameters, held), neighbours)
        chosen = [held[position] for position in sorted(ranking[: self.num_selected])]
        mean = weighted_mean64(parameters, chosen)
        return Aggregate(
            parameters=cast_like(parameters, mean.arrays),
            state={},
            metrics=_metrics(held, failures, selected=self.num_selected),
        )


@dataclass(frozen=True, kw_only=True)
class Bulyan(Krum):
    """Bulyan: repeated Krum selection, then a coordinate-wise trimmed mean.

    With f = num_malicious and n >= 4f + 3 updates: select theta = n - 2f updates by
    running Krum on the remaining ones and moving its pick to the selection, theta times.
    Late in the selection fewer than 2f + 3 updates remain, where Krum's n - f - 2
    neighbours would be fewer than one; the score then uses the nearest neighbour. Per
    coordinate, keep the theta - 2f selected values closest to their median (ties keep the
    smaller value) and average them, unweighted.
    """

    name: ClassVar[str] = "bulyan"

    def aggregate_fit(
        self,
        *,
        round: int,
        parameters: Sequence[np.ndarray],
        updates: Iterable[FitUpdate],
        failures: Sequence[FailedTask],
        state: StrategyState,
    ) -> Aggregate:
        _state.read(state, parameters, ())
        held = collect(parameters, updates)
        f = self.num_malicious
        self._require(len(held), 4 * f + 3)
        selection = self._select(squared_distances(parameters, held), len(held) - 2 * f)
        chosen = [held[position] for position in selection]
        keep = len(chosen) - 2 * f
        reduced = [
            mean_around_median(stacked(chosen, index), keep).reshape(tensor.shape)
            for index, tensor in enumerate(parameters)
        ]
        return Aggregate(
            parameters=cast_like(parameters, reduced),
            state={},
            metrics=_metrics(held, failures, selected=len(chosen)),
        )

    def _select(self, distances: np.ndarray, size: int) -> list[int]:
        remaining = list(range(distances.shape[0]))
        selection: list[int] = []
        while len(selection) < size:
            count = len(remaining)
            neighbours = min(max(count - self.num_malicious - 2, 1), count - 1)
            best = krum_ranking(distances[np.ix_(remaining, remaining)], neighbours)[0]
            selection.append(remaining.pop(best))
        return sorted(selection)


def mean_around_median(rows: np.ndarray, keep: int) -> np.ndarray:
    """Per column of `rows`, the mean of the `keep` values closest to the column's median."""
    # Working on sorted values makes the result independent of the updates' order, and a
    # stable sort by distance then breaks distance ties towards the smaller value.
    ordered = np.sort(rows, axis=0)
    median = np.median(ordered, axis=0)
    closest = np.argsort(np.abs(ordered - median), axis=0, kind="stable")[:keep]
    result: np.ndarray = np.take_along_axis(ordered, closest, axis=0).mean(axis=0)
    return result


def _metrics(
    held: Sequence[FitUpdate], failures: Sequence[FailedTask], *, selected: int
) -> dict[str, ConfigValue]:
    metrics = fit_metrics([(u.metrics, u.num_examples) for u in held], failures)
    metrics["num_selected"] = selected
    return metrics
