"""Building strategies from the parameters of a user's config file."""

from __future__ import annotations

import pytest

from pollen.errors import ErrorCode, InvalidArgument
from reference_server.strategies import (
    STRATEGIES,
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    make_strategy,
)


def test_the_registry_names() -> None:
    assert dict(STRATEGIES) == {
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
    with pytest.raises(TypeError):
        STRATEGIES["mine"] = FedAvg  # type: ignore[index]


def test_make_strategy_passes_parameters() -> None:
    assert make_strategy("fedavg", {}) == FedAvg()
    assert make_strategy("fedadam", {"eta": 0.01, "tau": 1e-3}) == FedAdam(eta=0.01, tau=1e-3)
    assert make_strategy("multikrum", {"num_malicious": 2, "num_selected": 5}) == MultiKrum(
        num_malicious=2, num_selected=5
    )
    # TOML writes whole numbers as integers; a float field takes them.
    built = make_strategy("fedavgm", {"server_learning_rate": 1})
    assert isinstance(built, FedAvgM)
    assert built.server_learning_rate == 1.0
    assert isinstance(built.server_learning_rate, float)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_strategy("FedAvg", {})
    message = str(caught.value)
    assert "unknown strategy 'FedAvg'" in message
    for name in STRATEGIES:
        assert name in message
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.field == "strategy.name"


def test_unknown_parameters_list_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_strategy("fedadam", {"eta": 0.1, "learning_rate": 0.1})
    message = str(caught.value)
    assert "strategy 'fedadam' has no parameter 'learning_rate'" in message
    assert "eta (float, default 0.1)" in message
    assert "tau (float, default 1e-09)" in message
    # The fixed variant is not a parameter of the named variants.
    assert "variant" not in message
    assert caught.value.field == "strategy.learning_rate"


def test_a_strategy_without_parameters_says_so() -> None:
    with pytest.raises(InvalidArgument, match="valid parameters: none"):
        make_strategy("fedmedian", {"beta": 0.1})


def test_variant_cannot_be_overridden_through_the_registry() -> None:
    with pytest.raises(InvalidArgument, match="has no parameter 'variant'"):
        make_strategy("fedyogi", {"variant": "adam"})


@pytest.mark.parametrize(
    ("name", "params", "missing"),
    [
        ("fedprox", {}, "'proximal_mu'"),
        ("krum", {}, "'num_malicious'"),
        ("multikrum", {"num_malicious": 1}, "'num_selected'"),
        ("qfedavg", {"q": 0.1}, "'learning_rate'"),
        ("qfedavg", {}, "'q', 'learning_rate'"),
    ],
)
def test_missing_parameters_are_named(name: str, params: dict[str, object], missing: str) -> None:
    with pytest.raises(
        InvalidArgument, match=f"strategy '{name}' needs parameter {missing}"
    ) as caught:
        make_strategy(name, params)
    assert "required" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedadam", {"eta": "0.1"}, "eta must be a number > 0, got str '0.1'"),
        ("fedtrimmedavg", {"beta": 0.5}, r"beta must be a number in \[0, 0\.5\), got 0\.5"),
        ("krum", {"num_malicious": 1.0}, "num_malicious must be an integer >= 0, got float"),
        ("fedprox", {"proximal_mu": True}, "proximal_mu must be a number >= 0, got bool"),
        (
            "multikrum",
            {"num_malicious": 0, "num_selected": 0},
            "num_selected must be an integer >= 1",
        ),
    ],
)
def test_mistyped_values_are_refused(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make_strategy(name, params)


def test_a_non_string_name_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown strategy 3"):
        make_strategy(3, {})  # type: ignore[arg-type]
