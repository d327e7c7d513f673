"""Aggregation strategies: pure functions from one round's outcomes to the next model.

Each strategy is a frozen dataclass whose fields are its configuration and whose
`aggregate_fit` is a pure function with explicit state in and out (see `base`). Build one
from a config file with `make_strategy(name, params)`; write your own by implementing the
`Strategy` protocol (examples/custom_strategy/).
"""

from reference_server.strategies.base import (
    Aggregate,
    AggregationFailed,
    EvaluateReport,
    FailedTask,
    FitUpdate,
    Strategy,
    StrategyState,
    TaskOutcome,
    aggregate_evaluate,
    aggregate_metrics,
    weighted_average,
)
from reference_server.strategies.coordinatewise import FedMedian, FedTrimmedAvg
from reference_server.strategies.fedavg import FedAvg, FedAvgM, FedProx
from reference_server.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from reference_server.strategies.krum import Bulyan, Krum, MultiKrum
from reference_server.strategies.qfedavg import QFedAvg
from reference_server.strategies.registry import STRATEGIES, make_strategy

__all__ = [
    "STRATEGIES",
    "Aggregate",
    "AggregationFailed",
    "Bulyan",
    "EvaluateReport",
    "FailedTask",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedOpt",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "FitUpdate",
    "Krum",
    "MultiKrum",
    "QFedAvg",
    "Strategy",
    "StrategyState",
    "TaskOutcome",
    "aggregate_evaluate",
    "aggregate_metrics",
    "make_strategy",
    "weighted_average",
]
