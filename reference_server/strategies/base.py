"""The strategy interface, the values it works on, and the pure helpers strategies share.

A strategy turns the outcomes of one round into the next global model. It is a pure
function: the round engine hands it the global model, the accepted updates, the tasks that
closed without a result and the strategy's state, and it returns the new model, the new
state and metrics. It does no I/O and keeps nothing between calls, because everything it
carries from round to round lives in `StrategyState`, a set of named arrays the server
persists with the model. A server that restarts from its store therefore aggregates
bit-identically to one that never stopped.

The engine reads accepted updates lazily, one at a time and in a fixed order, so a
streaming strategy consumes `updates` in a single pass and holds O(model) memory. Sums run
in float64 in iteration order and are rounded back to each global tensor's dtype at the
end (round to nearest, ties to even), so the same updates in the same order always give
the same bits.
"""

from __future__ import annotations

import enum
import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pollen.dtypes import Dtype
from pollen.errors import ErrorCode, InvalidArgument
from pollen.values import ConfigValue

#: Everything a strategy carries between rounds: named arrays only (momentum, moment
#: estimates, step counters as 0-d arrays), so the server can persist them exactly.
StrategyState = Mapping[str, np.ndarray]

#: The fit metrics and example count of one update, as `aggregate_metrics` takes them.
MetricsAndCount = tuple[Mapping[str, ConfigValue], int]


class AggregationFailed(InvalidArgument):
    """A strategy cannot produce an aggregate from what it was given.

    For example there were no updates, fewer than a robust rule needs, or the new model
    does not fit its dtype. The engine fails the run and records the message
    (PLN-RND-015); it keeps the code INVALID_ARGUMENT of its parent.
    """


class TaskOutcome(enum.Enum):
    """The closed states of the spec's task machine, as the strategy sees them."""

    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DROPPED = "dropped"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class FitUpdate:
    """One accepted fit result: the node's parameters and the examples that made them."""

    node_id: str
    parameters: tuple[np.ndarray, ...]
    num_examples: int
    metrics: Mapping[str, ConfigValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A list would leave a frozen update mutable from outside.
        object.__setattr__(self, "parameters", tuple(self.parameters))


@dataclass(frozen=True, kw_only=True)
class FailedTask:
    """A task of the round that closed without a result the strategy can use."""

    node_id: str
    outcome: TaskOutcome
    error_code: ErrorCode | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if self.outcome is TaskOutcome.COMPLETED:
            raise InvalidArgument(
                f"task of node {self.node_id!r} is completed, which is not a failure",
                field="outcome",
            )


@dataclass(frozen=True, kw_only=True)
class EvaluateReport:
    """One accepted evaluate result."""

    node_id: str
    loss: float
    num_examples: int
    metrics: Mapping[str, ConfigValue] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Aggregate:
    """What `aggregate_fit` returns: the new global model, the new state and metrics."""

    parameters: tuple[np.ndarray, ...]
    state: StrategyState
    metrics: Mapping[str, ConfigValue]


@runtime_checkable
class Strategy(Protocol):
    """What the round engine needs from an aggregation strategy."""

    @property
    def name(self) -> str:
        """The registry name (for example "fedavg")."""
        ...

    @property
    def needs_all_updates(self) -> bool:
        """True when the rule holds every update at once: memory O(clients x model)."""
        ...

    def initial_state(self, parameters: Sequence[np.ndarray]) -> StrategyState:
        """The state before the first round, for a global model like `parameters`."""
        ...

    def fit_config(self, round: int) -> dict[str, ConfigValue]:
        """Config entries the server adds to every fit instruction of `round`."""
        ...

    def aggregate_fit(
        self,
        *,
        round: int,
        parameters: Sequence[np.ndarray],
        updates: Iterable[FitUpdate],
        failures: Sequence[FailedTask],
        state: StrategyState,
    ) -> Aggregate:
        """Reduce one round's updates to the next global model and state.

        `updates` may be iterated only once. Raises AggregationFailed when no aggregate
        can be made (for example with no updates) and InvalidArgument when an update or
        the state does not match `parameters`.
        """
        ...


@dataclass(frozen=True, kw_only=True)
class WeightedMean:
    """The float64 example-weighted mean of a pass over updates, and what the pass saw."""

    arrays: tuple[np.ndarray, ...]
    num_examples: int
    tally: tuple[MetricsAndCount, ...]


def check_update(parameters: Sequence[np.ndarray], update: FitUpdate) -> None:
    """Refuse an update whose tensors do not match the global model.

    The engine validates updates before they reach a strategy; this is the strategy's own
    guard, so that a mismatch fails loudly instead of broadcasting.
    """
    where = f"update from node {update.node_id!r}"
    if len(update.parameters) != len(parameters):
        raise InvalidArgument(
            f"{where} has {len(update.parameters)} tensors, the global model has {len(parameters)}",
            field="parameters",
        )
    for index, (mine, theirs) in enumerate(zip(parameters, update.parameters, strict=True)):
        if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
            raise InvalidArgument(
                f"tensor {index} of the {where} is {theirs.dtype}{list(theirs.shape)}, "
                f"the global model's is {mine.dtype}{list(mine.shape)}",
                field=f"parameters[{index}]",
            )
    count = update.num_examples
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise InvalidArgument(
            f"{where} has num_examples {count!r}; it must be an integer > 0",
            field="num_examples",
        )


def collect(parameters: Sequence[np.ndarray], updates: Iterable[FitUpdate]) -> list[FitUpdate]:
    """Materialize and check every update (for rules with `needs_all_updates`)."""
    held = list(updates)
    if not held:
        raise AggregationFailed("there are no updates to aggregate", field="updates")
    for update in held:
        check_update(parameters, update)
    return held


def stacked(updates: Sequence[FitUpdate], index: int) -> np.ndarray:
    """Tensor `index` of every update as float64 rows: shape (len(updates), tensor size)."""
    return np.stack(
        [np.asarray(update.parameters[index]).astype(np.float64).reshape(-1) for update in updates]
    )


def weighted_mean64(parameters: Sequence[np.ndarray], updates: Iterable[FitUpdate]) -> WeightedMean:
    """Example-weighted mean of the updates in float64, in one pass and O(model) memory.

    `parameters` is the global model; only its shapes and dtypes are read. The sum
    sum_k(n_k * x_k) is accumulated in iteration order and divided by sum_k(n_k) once.
    """
    sums = [np.zeros(tensor.shape, dtype=np.float64) for tensor in parameters]
    tally: list[MetricsAndCount] = []
    total = 0
    for update in updates:
        check_update(parameters, update)
        _add_update(sums, update.parameters, float(update.num_examples))
        total += update.num_examples
        tally.append((update.metrics, update.num_examples))
    if not tally:
        raise AggregationFailed("there are no updates to aggregate", field="updates")
    for acc in sums:
        np.divide(acc, total, out=acc)
    return WeightedMean(arrays=tuple(sums), num_examples=total, tally=tuple(tally))


#: Elements per step of the weighted sum: the float64 temporary stays in the CPU cache.
_BLOCK = 1 << 16
#: Elements per unit of work handed to a thread.
_SPAN = 1 << 20


@functools.cache
def _workers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="pollen-sum"
    )


def _add_update(sums: list[np.ndarray], tensors: Sequence[np.ndarray], weight: float) -> None:
    """sums[i] += weight * tensors[i] in float64, spread over threads.

    numpy releases the GIL in these loops, so spans of the model are summed in parallel.
    Each element still sees the same two operations in the same update order, so the
    result is bit for bit the one of a single thread.
    """
    spans = [
        (acc.reshape(-1), np.asarray(tensor).reshape(-1), start)
        for acc, tensor in zip(sums, tensors, strict=True)
        for start in range(0, acc.size, _SPAN)
    ]
    if len(spans) < 2:
        for acc, values, start in spans:
            _add_span(acc, values, start, weight)
        return
    for done in [_workers().submit(_add_span, *span, weight) for span in spans]:
        done.result()


def _add_span(acc: np.ndarray, values: np.ndarray, start: int, weight: float) -> None:
    # Block by block: whole-span float64 temporaries would stream every element through
    # memory three more times.
    scratch = np.empty(_BLOCK, dtype=np.float64)
    for first in range(start, min(start + _SPAN, acc.size), _BLOCK):
        last = min(first + _BLOCK, start + _SPAN, acc.size)
        weighted = scratch[: last - first]
        np.multiply(values[first:last], weight, out=weighted, dtype=np.float64)
        np.add(acc[first:last], weighted, out=acc[first:last])


def weighted_average(
    parameters: Sequence[np.ndarray], updates: Iterable[FitUpdate]
) -> tuple[np.ndarray, ...]:
    """Example-weighted mean of the updates, rounded to the global model's dtypes.

    Streaming: one pass over `updates`, one float64 accumulator per tensor.
    """
    return cast_like(parameters, weighted_mean64(parameters, updates).arrays)


def as_float64(parameters: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Fresh float64 copies of the tensors (exact except 64-bit integers beyond 2**53)."""
    return tuple(np.asarray(tensor).astype(np.float64) for tensor in parameters)


def cast_like(
    parameters: Sequence[np.ndarray], values: Sequence[np.ndarray]
) -> tuple[np.ndarray, ...]:
    """Round float64 results to the dtypes of `parameters` (nearest, ties to even).

    Integer and bool tensors are rounded half to even first, so an averaged counter stays
    a count. Raises AggregationFailed when a result is not finite or does not fit its
    dtype, because a model full of inf would poison every later round.
    """
    return tuple(
        _cast(np.asarray(value), tensor.dtype, index=index)
        for index, (tensor, value) in enumerate(zip(parameters, values, strict=True))
    )


def _cast(values: np.ndarray, dtype: np.dtype[Any], *, index: int) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise AggregationFailed(f"tensor {index}: the aggregate is not finite", field="parameters")
    if Dtype.from_numpy(dtype).is_float:
        # Overflow is reported as a typed error below, not as a numpy warning.
        with np.errstate(over="ignore"):
            out = values.astype(dtype)
        if not np.all(np.isfinite(out)):
            raise AggregationFailed(
                f"tensor {index}: the aggregate overflows {dtype}", field="parameters"
            )
        return out
    rounded = np.rint(values)
    if dtype == np.bool_:
        flags: np.ndarray = rounded != 0
        return flags
    info = np.iinfo(dtype)
    high = float(info.max)
    if high > info.max:
        # 2**63 - 1 is not a float64; the largest float64 below it is the true bound.
        high = float(np.nextafter(high, 0.0))
    if rounded.size and (rounded.min() < info.min or rounded.max() > high):
        raise AggregationFailed(
            f"tensor {index}: the aggregate leaves the range of {dtype}", field="parameters"
        )
    cast: np.ndarray = rounded.astype(dtype)
    return cast


def aggregate_metrics(metrics_and_counts: Iterable[MetricsAndCount]) -> dict[str, ConfigValue]:
    """Example-weighted mean of each numeric metric, over the updates that report it.

    Only int and float values count (bool, str and bytes are skipped); the result is a
    float per metric, in key order.
    """
    sums: dict[str, float] = {}
    weights: dict[str, int] = {}
    for metrics, count in metrics_and_counts:
        for key, value in metrics.items():
            if isinstance(value, bool | np.bool_) or not isinstance(
                value, int | float | np.integer | np.floating
            ):
                continue
            sums[key] = sums.get(key, 0.0) + count * float(value)
            weights[key] = weights.get(key, 0) + count
    return {key: sums[key] / weights[key] for key in sorted(sums)}


def failure_counts(failures: Sequence[FailedTask]) -> dict[str, ConfigValue]:
    """Count failures: "num_failures" and "num_failures_<outcome>" for each closed state.

    Every key is always present, so a round's history has the same columns every round.
    """
    counts: dict[str, ConfigValue] = {"num_failures": len(failures)}
    for outcome in TaskOutcome:
        if outcome is not TaskOutcome.COMPLETED:
            counts[f"num_failures_{outcome.value}"] = sum(
                1 for failure in failures if failure.outcome is outcome
            )
    return counts


def fit_metrics(
    tally: Sequence[MetricsAndCount], failures: Sequence[FailedTask]
) -> dict[str, ConfigValue]:
    """The metrics of a fit aggregate: weighted client metrics, counts and failures.

    The counts are written last, so they win over a client metric of the same name.
    """
    return {
        **aggregate_metrics(tally),
        "num_updates": len(tally),
        "num_examples": sum(count for _, count in tally),
        **failure_counts(failures),
    }


def aggregate_evaluate(
    reports: Sequence[EvaluateReport], failures: Sequence[FailedTask]
) -> tuple[float, dict[str, ConfigValue]]:
    """Example-weighted mean loss and metrics of an evaluate phase.

    A loss may be NaN or infinite (a model can diverge on a client's data): the mean is over
    the finite losses only, "num_nonfinite_loss" counts the others, and the loss is NaN when
    none is finite. Metrics are the weighted means of the numeric client metrics plus
    "num_reports", "num_examples" and the failure counts of `failure_counts`.
    """
    if not reports:
        raise AggregationFailed("there are no evaluation reports to aggregate", field="reports")
    total = 0
    loss_sum = 0.0
    loss_weight = 0
    nonfinite = 0
    for report in reports:
        count = report.num_examples
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise InvalidArgument(
                f"evaluation report from node {report.node_id!r} has num_examples {count!r}; "
                "it must be an integer > 0",
                field="num_examples",
            )
        total += report.num_examples
        if math.isfinite(report.loss):
            loss_sum += report.num_examples * float(report.loss)
            loss_weight += report.num_examples
        else:
            nonfinite += 1
    tally = [(report.metrics, report.num_examples) for report in reports]
    metrics: dict[str, ConfigValue] = {
        **aggregate_metrics(tally),
        "num_reports": len(reports),
        "num_examples": total,
        "num_nonfinite_loss": nonfinite,
        **failure_counts(failures),
    }
    return (loss_sum / loss_weight if loss_weight else math.nan), metrics
