"""The application interface a data owner implements: what a client does with each task.

A `Client` works on numpy arrays and plain typed values; it never sees protobuf, gRPC or
sessions. The reference client (over gRPC) and the simulation engine (in process) both
drive the same `Client`, and `run_instruction`-style dispatch lives with them.

Subclass `Client` and override what the application supports. An instruction that is not
overridden raises UnsupportedInstruction, which drivers report to the server as the task's
failure while the session goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pollen.errors import InvalidArgument, UnsupportedInstruction
from pollen.values import Config, ConfigValue, check_config


def _check_examples(num_examples: object, *, minimum: int) -> None:
    # bool is an int subclass; True examples is a bug, not 1 example.
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        raise InvalidArgument(
            f"num_examples must be an int, got {type(num_examples).__name__}",
            field="num_examples",
        )
    if num_examples < minimum:
        raise InvalidArgument(
            f"num_examples must be >= {minimum}, got {num_examples}", field="num_examples"
        )


def _arrays(values: object, name: str) -> tuple[np.ndarray, ...]:
    if isinstance(values, np.ndarray):
        raise InvalidArgument(f"{name} is a sequence of arrays, not one array", field=name)
    if not isinstance(values, Sequence):
        raise InvalidArgument(f"{name} is a sequence of arrays", field=name)
    return tuple(np.asarray(v) for v in values)


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """What `Client.fit` returns: the updated parameters and how many examples made them."""

    parameters: Sequence[np.ndarray]
    num_examples: int
    metrics: Mapping[str, ConfigValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _arrays(self.parameters, "parameters"))
        _check_examples(self.num_examples, minimum=1)
        object.__setattr__(self, "metrics", check_config(self.metrics, field="metrics"))


@dataclass(frozen=True, kw_only=True)
class EvaluateResult:
    """What `Client.evaluate` returns: the loss, the examples it covers, further metrics."""

    loss: float
    num_examples: int
    metrics: Mapping[str, ConfigValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.loss, bool) or not isinstance(self.loss, int | float | np.number):
            raise InvalidArgument(f"loss must be a number, got {type(self.loss).__name__}")
        object.__setattr__(self, "loss", float(self.loss))
        _check_examples(self.num_examples, minimum=1)
        object.__setattr__(self, "metrics", check_config(self.metrics, field="metrics"))


@dataclass(frozen=True, kw_only=True)
class QueryResult:
    """What `Client.query` returns: statistics over local data, never the data itself."""

    metrics: Mapping[str, ConfigValue] = field(default_factory=dict)
    tensors: Sequence[np.ndarray] = ()
    num_examples: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", check_config(self.metrics, field="metrics"))
        object.__setattr__(self, "tensors", _arrays(self.tensors, "tensors"))
        _check_examples(self.num_examples, minimum=0)


class Client:
    """Base class of federated learning applications (all methods optional)."""

    def get_parameters(self, config: Config) -> Sequence[np.ndarray]:
        """Return the current local parameters (for example to initialize the global model)."""
        raise UnsupportedInstruction(f"{type(self).__name__} does not implement get_parameters")

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        """Train on local data starting from `parameters`."""
        raise UnsupportedInstruction(f"{type(self).__name__} does not implement fit")

    def evaluate(self, parameters: Sequence[np.ndarray], config: Config) -> EvaluateResult:
        """Evaluate `parameters` on local data."""
        raise UnsupportedInstruction(f"{type(self).__name__} does not implement evaluate")

    def query(self, config: Config, inputs: Sequence[np.ndarray]) -> QueryResult:
        """Compute statistics over local data without training (federated analytics)."""
        raise UnsupportedInstruction(f"{type(self).__name__} does not implement query")

    def get_properties(self, config: Config) -> Mapping[str, ConfigValue]:
        """Return properties of this client (for example its dataset size)."""
        return {}

    def implements(self, method: str) -> bool:
        """Whether a subclass overrides `method`, so a driver can advertise the feature."""
        if method not in _INSTRUCTION_METHODS:
            raise ValueError(f"unknown client method {method!r}")
        return getattr(type(self), method) is not getattr(Client, method)


_INSTRUCTION_METHODS = frozenset({"get_parameters", "fit", "evaluate", "query", "get_properties"})
