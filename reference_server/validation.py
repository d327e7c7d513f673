"""Validation of results before any aggregation, always on.

Robust aggregation rules do not protect against a NaN or a wrongly shaped tensor: one such
update poisons a plain average and crashes or silently skews the others. So every result
is checked against the global model first; a result that fails gets a typed error, changes
no aggregation state, and the round goes on with the other clients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pollen.errors import InvalidArgument, UpdateRejected, entry_path
from pollen.values import ConfigValue


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Limits every update must respect (the always-on checks need no configuration)."""

    #: Largest num_examples a client may claim; bounds the weight one client can take.
    max_num_examples: int = 1_000_000_000
    #: Largest L2 norm of (update - global model) over all tensors; None disables it.
    max_update_norm: float | None = None
    #: Shapes a query answer's tensors must have, in order; None: any shapes.
    query_shapes: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.max_num_examples < 1:
            raise InvalidArgument("max_num_examples must be >= 1", field="max_num_examples")
        if self.max_update_norm is not None and not self.max_update_norm > 0:
            raise InvalidArgument("max_update_norm must be > 0", field="max_update_norm")


def check_examples(
    num_examples: int, config: ValidationConfig, *, minimum: int = 1, field: str = "num_examples"
) -> None:
    if not minimum <= num_examples <= config.max_num_examples:
        raise UpdateRejected(
            f"num_examples {num_examples} is outside [{minimum}, {config.max_num_examples}]",
            field=field,
        )


def check_metrics(metrics: dict[str, ConfigValue], *, field: str) -> None:
    """Numeric metrics must be finite: a NaN would poison every weighted mean."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UpdateRejected(f"metric {key!r} is {value}", field=entry_path(field, key))


def validate_answer_tensors(
    tensors: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, ...]] | None,
    *,
    field: str = "tensors",
) -> None:
    """A query answer's tensors hold finite values and, when the run says, the given shapes.

    The same checks as an update's (PLN-RND-011), against the run's expected shapes: a
    histogram of the wrong length or a NaN count would fail the merge of every answer.
    """
    if shapes is not None and len(tensors) != len(shapes):
        raise UpdateRejected(f"{len(tensors)} tensors, the run expects {len(shapes)}", field=field)
    for i, tensor in enumerate(tensors):
        where = f"{field}[{i}]"
        if shapes is not None and tensor.shape != tuple(shapes[i]):
            raise UpdateRejected(
                f"shape {list(tensor.shape)}, the run expects {list(shapes[i])}", field=where
            )
        if not _all_finite(tensor):
            raise UpdateRejected("non-finite values (NaN or infinity)", field=where)


def _all_finite(array: np.ndarray) -> bool:
    if array.dtype.kind == "f":
        return bool(np.isfinite(array).all())
    if array.dtype.name == "bfloat16":  # ml_dtypes: widening to float32 is exact
        return bool(np.isfinite(array.astype(np.float32)).all())
    return True


def validate_parameters(
    parameters: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    config: ValidationConfig,
    *,
    field: str = "parameters",
) -> None:
    """An update must match the global model tensor for tensor and hold finite values."""
    if len(parameters) != len(reference):
        raise UpdateRejected(
            f"{len(parameters)} tensors, the global model has {len(reference)}", field=field
        )
    squared = 0.0
    for i, (update, current) in enumerate(zip(parameters, reference, strict=True)):
        where = f"{field}[{i}]"
        if update.dtype != current.dtype:
            raise UpdateRejected(
                f"dtype {update.dtype}, the global model has {current.dtype}", field=where
            )
        if update.shape != current.shape:
            raise UpdateRejected(
                f"shape {list(update.shape)}, the global model has {list(current.shape)}",
                field=where,
            )
        if not _all_finite(update):
            raise UpdateRejected("non-finite values (NaN or infinity)", field=where)
        if config.max_update_norm is not None:
            diff = update.astype(np.float64) - current.astype(np.float64)
            squared += float(np.dot(diff.ravel(), diff.ravel()))
    if config.max_update_norm is not None and math.sqrt(squared) > config.max_update_norm:
        raise UpdateRejected(
            f"update norm {math.sqrt(squared):.6g} exceeds {config.max_update_norm}",
            field=field,
        )
