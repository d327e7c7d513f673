"""Adaptive server optimizers: FedAdagrad, FedAdam and FedYogi as one rule.

Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2, as published (no bias
correction). With delta = avg(updates) - w, the example-weighted pseudo-gradient pointing
from the global model towards the clients:

    m = beta_1 * m + (1 - beta_1) * delta
    v = v + delta^2                                      (adagrad)
    v = beta_2 * v + (1 - beta_2) * delta^2              (adam)
    v = v - (1 - beta_2) * delta^2 * sign(v - delta^2)   (yogi)
    w' = w + eta * m / (sqrt(v) + tau)

State "m.<i>" starts at 0 and "v.<i>" at tau^2, both float64, as in the paper. The three
variants differ only in the line that updates v, so they are one class with a `variant`
field; FedAdagrad, FedAdam and FedYogi fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

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

Variant = Literal["adagrad", "adam", "yogi"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)

_SecondMoment = Callable[[np.ndarray, np.ndarray, float], np.ndarray]

# (v, delta^2, beta_2) -> new v
_SECOND_MOMENT: Mapping[Variant, _SecondMoment] = {
    "adagrad": lambda v, square, beta_2: v + square,
    "adam": lambda v, square, beta_2: beta_2 * v + (1.0 - beta_2) * square,
    # Yogi moves v towards delta^2 by an additive step, so v cannot forget a large
    # gradient as fast as Adam's multiplicative decay does.
    "yogi": lambda v, square, beta_2: v - (1.0 - beta_2) * square * np.sign(v - square),
}


@dataclass(frozen=True, kw_only=True)
class FedOpt:
    """One adaptive server optimizer; `variant` picks adagrad, adam or yogi."""

    needs_all_updates: ClassVar[bool] = False

    variant: Variant
    eta: float = 1e-1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-9

    def __post_init__(self) -> None:
        _checks.choice(self.variant, field="variant", allowed=VARIANTS)
        for name, value in (
            ("eta", _checks.real(self.eta, field="eta", gt=0.0)),
            ("beta_1", _checks.real(self.beta_1, field="beta_1", ge=0.0, lt=1.0)),
            ("beta_2", _checks.real(self.beta_2, field="beta_2", ge=0.0, lt=1.0)),
            # tau > 0 keeps the step finite where delta and v are both 0.
            ("tau", _checks.real(self.tau, field="tau", gt=0.0)),
        ):
            object.__setattr__(self, name, value)

    @property
    def name(self) -> str:
        """The registry name of the variant ("fedadagrad", "fedadam" or "fedyogi")."""
        return f"fed{self.variant}"

    def initial_state(self, parameters: Sequence[np.ndarray]) -> StrategyState:
        return _state.fresh(parameters, {"m": 0.0, "v": self.tau * self.tau})

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
        moments = _state.read(state, parameters, ("m", "v"))
        mean = weighted_mean64(parameters, updates)
        second_moment = _SECOND_MOMENT[self.variant]
        new_state: dict[str, np.ndarray] = {}
        stepped = []
        for index, (weights, average, m, v) in enumerate(
            zip(as_float64(parameters), mean.arrays, moments["m"], moments["v"], strict=True)
        ):
            delta = average - weights
            new_m = self.beta_1 * m + (1.0 - self.beta_1) * delta
            new_v = second_moment(v, delta * delta, self.beta_2)
            stepped.append(weights + self.eta * new_m / (np.sqrt(new_v) + self.tau))
            new_state[_state.key("m", index)] = new_m
            new_state[_state.key("v", index)] = new_v
        return Aggregate(
            parameters=cast_like(parameters, stepped),
            state=new_state,
            metrics=fit_metrics(mean.tally, failures),
        )


@dataclass(frozen=True, kw_only=True)
class FedAdagrad(FedOpt):
    """FedOpt with the adagrad second moment."""

    variant: Variant = field(default="adagrad", init=False)


@dataclass(frozen=True, kw_only=True)
class FedAdam(FedOpt):
    """FedOpt with the adam second moment."""

    variant: Variant = field(default="adam", init=False)


@dataclass(frozen=True, kw_only=True)
class FedYogi(FedOpt):
    """FedOpt with the yogi second moment."""

    variant: Variant = field(default="yogi", init=False)
