"""Reducers of federated analytics: statistics from many clients, no raw data moved.

Each client answers a query with scalar metrics, tensors (for example histogram counts)
and the number of examples they cover. The server combines the answers with reducers
chosen per metric, so it only ever sees aggregates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pollen.errors import UpdateRejected
from pollen.values import ConfigValue


@dataclass(frozen=True, kw_only=True)
class QueryAnswer:
    node_id: str
    metrics: Mapping[str, ConfigValue]
    tensors: tuple[np.ndarray, ...] = ()
    num_examples: int = 0


@dataclass(frozen=True, kw_only=True)
class QueryOutcome:
    metrics: dict[str, ConfigValue] = field(default_factory=dict)
    tensors: tuple[np.ndarray, ...] = ()


def _number(value: ConfigValue, key: str, node: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpdateRejected(f"metric {key!r} of node {node!r} is not a number")
    return float(value)


def reduce_metrics(
    answers: Sequence[QueryAnswer], reducers: Mapping[str, str]
) -> dict[str, ConfigValue]:
    """Combine each configured metric over the answers that carry it, in answer order."""
    out: dict[str, ConfigValue] = {}
    for key, how in reducers.items():
        pairs = [
            (_number(a.metrics[key], key, a.node_id), a.num_examples)
            for a in answers
            if key in a.metrics
        ]
        if not pairs:
            continue
        values = [v for v, _ in pairs]
        if how == "sum":
            total = sum(values)
            out[key] = (
                int(total)
                if all(isinstance(a.metrics[key], int) for a in answers if key in a.metrics)
                else total
            )
        elif how == "min":
            out[key] = min(values)
        elif how == "max":
            out[key] = max(values)
        else:  # weighted_mean
            weight = sum(n for _, n in pairs)
            if weight <= 0:
                raise UpdateRejected(f"weighted_mean of {key!r} needs num_examples > 0")
            out[key] = sum(v * n for v, n in pairs) / weight
        out[f"{key}.clients"] = len(pairs)
    out["num_answers"] = len(answers)
    out["num_examples"] = sum(a.num_examples for a in answers)
    return out


def reduce_tensors(answers: Sequence[QueryAnswer], how: str) -> tuple[np.ndarray, ...]:
    """Element-wise sum (histogram merge), min or max of the answers' tensors, by position."""
    with_tensors = [a for a in answers if a.tensors]
    if not with_tensors:
        return ()
    first = with_tensors[0]
    for answer in with_tensors[1:]:
        shapes = [t.shape for t in answer.tensors]
        if shapes != [t.shape for t in first.tensors]:
            raise UpdateRejected(
                f"node {answer.node_id!r} answered tensors of shapes {shapes}, "
                f"node {first.node_id!r} {[t.shape for t in first.tensors]}"
            )
    reduced = []
    for i, template in enumerate(first.tensors):
        stack = [a.tensors[i] for a in with_tensors]
        if how == "sum":
            # Counts stay exact: integers sum in int64, floats in float64.
            wide = np.int64 if template.dtype.kind in "iub" else np.float64
            total = np.zeros(template.shape, dtype=wide)
            for part in stack:
                total += part.astype(wide)
            reduced.append(total)
        else:
            combine = np.minimum if how == "min" else np.maximum
            result = stack[0].copy()
            for part in stack[1:]:
                result = combine(result, part)
            reduced.append(result)
    return tuple(reduced)


def reduce_answers(
    answers: Sequence[QueryAnswer], reducers: Mapping[str, str], tensors: str
) -> QueryOutcome:
    return QueryOutcome(
        metrics=reduce_metrics(answers, reducers), tensors=reduce_tensors(answers, tensors)
    )
