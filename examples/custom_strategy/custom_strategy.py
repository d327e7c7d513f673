"""A custom aggregation strategy: FedAvg that bounds how far any one update can move the model.

Each update's L2 distance to the global model, over all tensors, is clipped to `max_norm`
before the example-weighted average. A node that sends a wildly scaled update then moves
the model at most as far as an ordinary one could. See README.md beside this file.

Run `python examples/custom_strategy/custom_strategy.py` for a small demonstration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from pollen.errors import InvalidArgument
from pollen.values import ConfigValue
from reference_server.strategies import (
    Aggregate,
    FailedTask,
    FitUpdate,
    StrategyState,
    aggregate_metrics,
    weighted_average,
)
from reference_server.strategies.base import MetricsAndCount, failure_counts


@dataclass(frozen=True, kw_only=True)
class ClippedFedAvg:
    """FedAvg over updates whose distance to the global model is at most `max_norm`."""

    # The Strategy protocol: a name, whether all updates must be held at once, and three
    # methods. Nothing else is required; no base class is needed.
    name: ClassVar[str] = "clippedfedavg"
    needs_all_updates: ClassVar[bool] = False

    max_norm: float

    def __post_init__(self) -> None:
        # Configs come from users: refuse bad values at construction, naming the field.
        value = self.max_norm
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument("max_norm must be a number > 0", field="max_norm")
        if not (math.isfinite(value) and value > 0):
            raise InvalidArgument(f"max_norm must be a number > 0, got {value!r}", field="max_norm")
        object.__setattr__(self, "max_norm", float(value))

    def initial_state(self, parameters: Sequence[np.ndarray]) -> StrategyState:
        # Stateless: a strategy with memory would return named float64 arrays here and get
        # them back, unchanged, as `state` in the next round.
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
        # `updates` may be read only once, so the clipping happens inside the same pass
        # as the averaging: the generator below hands weighted_average one clipped
        # update at a time, and memory stays O(model) however many nodes took part.
        seen: list[MetricsAndCount] = []
        clipped: list[bool] = []

        def bounded() -> Iterator[FitUpdate]:
            for update in updates:
                seen.append((update.metrics, update.num_examples))
                tensors, was_clipped = self.clip(parameters, update.parameters)
                clipped.append(was_clipped)
                yield replace(update, parameters=tensors)

        averaged = weighted_average(parameters, bounded())
        metrics: dict[str, ConfigValue] = {
            **aggregate_metrics(seen),
            "num_updates": len(seen),
            "num_clipped": sum(clipped),
            **failure_counts(failures),
        }
        return Aggregate(parameters=averaged, state={}, metrics=metrics)

    def clip(
        self, parameters: Sequence[np.ndarray], tensors: Sequence[np.ndarray]
    ) -> tuple[tuple[np.ndarray, ...], bool]:
        """The update moved towards the global model until its distance is <= max_norm."""
        if len(tensors) != len(parameters):
            # weighted_average checks shapes too, but only after this function has run.
            raise InvalidArgument("update and global model have different tensor counts")
        steps = [
            np.asarray(mine).astype(np.float64) - np.asarray(theirs).astype(np.float64)
            for mine, theirs in zip(tensors, parameters, strict=True)
        ]
        distance = math.sqrt(math.fsum(float(np.square(step).sum()) for step in steps))
        if distance <= self.max_norm:
            return tuple(tensors), False
        scale = self.max_norm / distance
        # Rounded back to each tensor's dtype, so the clipped update is a valid update.
        moved = tuple(
            (np.asarray(base).astype(np.float64) + scale * step).astype(base.dtype)
            for base, step in zip(parameters, steps, strict=True)
        )
        return moved, True


def main() -> None:
    """Two honest nodes and one that scaled its update x100."""
    model = (np.zeros(3, np.float32),)
    updates = [
        FitUpdate(
            node_id="a", parameters=(np.array([0.1, 0.0, 0.2], np.float32),), num_examples=10
        ),
        FitUpdate(
            node_id="b", parameters=(np.array([0.2, 0.1, 0.1], np.float32),), num_examples=10
        ),
        FitUpdate(
            node_id="evil", parameters=(np.array([20.0, 10.0, 20.0], np.float32),), num_examples=10
        ),
    ]
    strategy = ClippedFedAvg(max_norm=0.5)
    result = strategy.aggregate_fit(
        round=1, parameters=model, updates=updates, failures=[], state={}
    )
    print("clipped FedAvg:", result.parameters[0], result.metrics["num_clipped"], "clipped")
    print("plain FedAvg:  ", weighted_average(model, updates)[0])


if __name__ == "__main__":
    main()
