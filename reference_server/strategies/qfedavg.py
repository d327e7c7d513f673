"""q-FedAvg (Li et al. 2020, "Fair Resource Allocation in Federated Learning").

q-FFL reweights clients by their loss to the power q, so that clients the global model
serves badly pull harder. With L = 1 / learning_rate (the clients' learning rate, used as
the Lipschitz constant estimate), F_k the loss of client k on the global model it received
and w_k its update:

    delta_k = L * (w - w_k)
    h_k     = q * F_k^(q-1) * ||delta_k||^2 + L * F_k^q
    w'      = w - sum_k(F_k^q * delta_k) / sum_k(h_k)

||delta_k|| is the L2 norm over the whole model. With q = 0 every client weighs the same
and w' is the unweighted mean of the updates, whatever the losses and the learning rate.
Example counts play no part in the step. Streaming: one pass, O(model) memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pollen.errors import entry_path
from pollen.values import ConfigValue
from reference_server.strategies import _checks, _state
from reference_server.strategies.base import (
    Aggregate,
    AggregationFailed,
    FailedTask,
    FitUpdate,
    MetricsAndCount,
    StrategyState,
    as_float64,
    cast_like,
    check_update,
    fit_metrics,
)

#: The fit metric that carries F_k, the client's loss of the global model it received
#: (measured before local training).
LOSS_METRIC = "loss"


@dataclass(frozen=True, kw_only=True)
class QFedAvg:
    """q-FedAvg: fair aggregation weighted by each client's loss to the power q."""

    name: ClassVar[str] = "qfedavg"
    needs_all_updates: ClassVar[bool] = False

    q: float
    learning_rate: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", _checks.real(self.q, field="q", ge=0.0))
        rate = _checks.real(self.learning_rate, field="learning_rate", gt=0.0)
        object.__setattr__(self, "learning_rate", rate)

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
        lipschitz = 1.0 / self.learning_rate
        weights = as_float64(parameters)
        numerator = [np.zeros(tensor.shape, dtype=np.float64) for tensor in parameters]
        denominator = 0.0
        tally: list[MetricsAndCount] = []
        for update in updates:
            check_update(parameters, update)
            loss = _loss(update)
            # One update's deltas at a time: the norm needs all tensors before any is added.
            deltas = [
                lipschitz * (global_tensor - np.asarray(tensor).astype(np.float64))
                for global_tensor, tensor in zip(weights, update.parameters, strict=True)
            ]
            squared_norm = math.fsum(float(np.square(delta).sum()) for delta in deltas)
            scale, slope = _powers(loss, self.q, node_id=update.node_id)
            denominator += self.q * slope * squared_norm + lipschitz * scale
            for acc, delta in zip(numerator, deltas, strict=True):
                np.add(acc, scale * delta, out=acc)
            tally.append((update.metrics, update.num_examples))
        if not tally:
            raise AggregationFailed("there are no updates to aggregate", field="updates")
        stepped = [
            global_tensor - acc / denominator
            for global_tensor, acc in zip(weights, numerator, strict=True)
        ]
        return Aggregate(
            parameters=cast_like(parameters, stepped),
            state={},
            metrics=fit_metrics(tally, failures),
        )


def _powers(loss: float, q: float, *, node_id: str) -> tuple[float, float]:
    """F^q and F^(q-1), refusing values a float64 cannot hold."""
    try:
        return loss**q, loss ** (q - 1.0)
    except OverflowError:
        raise AggregationFailed(
            f"loss {loss!r} of node {node_id!r} to the power q={q!r} overflows float64",
            field=entry_path("metrics", LOSS_METRIC),
        ) from None


def _loss(update: FitUpdate) -> float:
    field = entry_path("metrics", LOSS_METRIC)
    if LOSS_METRIC not in update.metrics:
        raise AggregationFailed(
            f"qfedavg needs the fit metric {LOSS_METRIC!r} (the loss of the received global "
            f"model) from every update; node {update.node_id!r} did not send it",
            field=field,
        )
    value = update.metrics[LOSS_METRIC]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AggregationFailed(
            f"fit metric {LOSS_METRIC!r} of node {update.node_id!r} must be a number, "
            f"got {type(value).__name__}",
            field=field,
        )
    loss = float(value)
    # F_k^(q-1) with q < 1 needs F_k > 0, and a zero loss would give the client no weight.
    if not (math.isfinite(loss) and loss > 0.0):
        raise AggregationFailed(
            f"fit metric {LOSS_METRIC!r} of node {update.node_id!r} must be finite and > 0, "
            f"got {loss!r}",
            field=field,
        )
    return loss
