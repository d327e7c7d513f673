"""Federated averaging and the two rules that keep its aggregation: FedProx and FedAvgM.

All three stream: one pass over the updates, O(model) memory.
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
    FailedTask,
    FitUpdate,
    StrategyState,
    as_float64,
    cast_like,
    fit_metrics,
    weighted_mean64,
)


@dataclass(frozen=True, kw_only=True)
class FedAvg:
    """FedAvg (McMahan et al. 2017): the new model is the example-weighted mean of updates."""

    name: ClassVar[str] = "fedavg"
    needs_all_updates: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Validate the fields (subclasses extend this)."""

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
        mean = weighted_mean64(parameters, updates)
        return Aggregate(
            parameters=cast_like(parameters, mean.arrays),
            state={},
            metrics=fit_metrics(mean.tally, failures),
        )


@dataclass(frozen=True, kw_only=True)
class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg whose clients add (mu/2)||w - w_global||^2 to their loss.

    The server's part is only to send `proximal_mu` with every fit instruction; clients
    implement the proximal term.
    """

    name: ClassVar[str] = "fedprox"

    proximal_mu: float

    def __post_init__(self) -> None:
        super().__post_init__()
        mu = _checks.real(self.proximal_mu, field="proximal_mu", ge=0.0)
        object.__setattr__(self, "proximal_mu", mu)

    def fit_config(self, round: int) -> dict[str, ConfigValue]:
        return {**super().fit_config(round), "proximal_mu": self.proximal_mu}


@dataclass(frozen=True, kw_only=True)
class FedAvgM(FedAvg):
    """FedAvg with server momentum (Hsu et al. 2019).

    With the pseudo-gradient d = w - avg(updates), the server keeps v = momentum * v + d
    (v starts at 0) and steps w' = w - server_learning_rate * v. State: "momentum.<i>",
    float64. With momentum 0 and learning rate 1 this is FedAvg.
    """

    name: ClassVar[str] = "fedavgm"

    server_learning_rate: float = 1.0
    server_momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        rate = _checks.real(self.server_learning_rate, field="server_learning_rate", gt=0.0)
        momentum = _checks.real(self.server_momentum, field="server_momentum", ge=0.0, lt=1.0)
        object.__setattr__(self, "server_learning_rate", rate)
        object.__setattr__(self, "server_momentum", momentum)

    def initial_state(self, parameters: Sequence[np.ndarray]) -> StrategyState:
        return _state.fresh(parameters, {"momentum": 0.0})

    def aggregate_fit(
        self,
        *,
        round: int,
        parameters: Sequence[np.ndarray],
        updates: Iterable[FitUpdate],
        failures: Sequence[FailedTask],
        state: StrategyState,
    ) -> Aggregate:
        velocity = _state.read(state, parameters, ("momentum",))["momentum"]
        mean = weighted_mean64(parameters, updates)
        new_state: dict[str, np.ndarray] = {}
        stepped = []
        for index, (weights, average, previous) in enumerate(
            zip(as_float64(parameters), mean.arrays, velocity, strict=True)
        ):
            pseudo_gradient = weights - average
            current = self.server_momentum * previous + pseudo_gradient
            stepped.append(weights - self.server_learning_rate * current)
            new_state[_state.key("momentum", index)] = current
        return Aggregate(
            parameters=cast_like(parameters, stepped),
            state=new_state,
            metrics=fit_metrics(mean.tally, failures),
        )
