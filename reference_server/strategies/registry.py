"""Strategies by name, built from the parameters of a user's config file.

`make_strategy("fedadam", {"eta": 0.01})` is how a TOML table such as

    [strategy]
    name = "fedadam"
    eta = 0.01

becomes a strategy. Unknown names and parameters are refused with the list of valid
ones; values are checked by the strategy itself, which names the field and its range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

from pollen.errors import InvalidArgument
from reference_server.strategies.base import Strategy
from reference_server.strategies.coordinatewise import FedMedian, FedTrimmedAvg
from reference_server.strategies.fedavg import FedAvg, FedAvgM, FedProx
from reference_server.strategies.fedopt import FedAdagrad, FedAdam, FedYogi
from reference_server.strategies.krum import Bulyan, Krum, MultiKrum
from reference_server.strategies.qfedavg import QFedAvg

STRATEGIES: Mapping[str, type[Strategy]] = MappingProxyType(
    {
        "fedavg": FedAvg,
        "fedprox": FedProx,
        "fedavgm": FedAvgM,
        "fedadagrad": FedAdagrad,
        "fedadam": FedAdam,
        "fedyogi": FedYogi,
        "fedmedian": FedMedian,
        "fedtrimmedavg": FedTrimmedAvg,
        "krum": Krum,
        "multikrum": MultiKrum,
        "bulyan": Bulyan,
        "qfedavg": QFedAvg,
    }
)


def make_strategy(name: str, params: Mapping[str, object]) -> Strategy:
    """The strategy registered as `name`, configured with `params`.

    Raises InvalidArgument for an unknown name, an unknown or missing parameter, or a
    value of the wrong type or out of range.
    """
    kind = STRATEGIES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise InvalidArgument(
            f"unknown strategy {name!r}; valid names: {', '.join(STRATEGIES)}",
            field="strategy.name",
        )
    fields = {field.name: field for field in _config_fields(kind)}
    valid = ", ".join(_describe(field) for field in fields.values()) or "none"
    unknown = sorted(str(key) for key in params if key not in fields)
    if unknown:
        raise InvalidArgument(
            f"strategy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {valid}",
            field=f"strategy.{unknown[0]}",
        )
    missing = [key for key, field in fields.items() if _required(field) and key not in params]
    if missing:
        raise InvalidArgument(
            f"strategy {name!r} needs parameter {', '.join(map(repr, missing))}; "
            f"valid parameters: {valid}",
            field=f"strategy.{missing[0]}",
        )
    build = cast(Callable[..., Strategy], kind)
    return build(**params)


def _config_fields(kind: type[Strategy]) -> list[dataclasses.Field[Any]]:
    return [field for field in dataclasses.fields(cast(Any, kind)) if field.init]


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _describe(field: dataclasses.Field[Any]) -> str:
    # Annotations are strings here (postponed evaluation), which reads well in a message.
    if _required(field):
        return f"{field.name} ({field.type}, required)"
    return f"{field.name} ({field.type}, default {field.default!r})"
