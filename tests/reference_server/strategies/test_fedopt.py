"""FedOpt (adagrad, adam, yogi) against Reddi et al. 2021 written as per-coordinate loops."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from pollen.errors import InvalidArgument
from reference_server.strategies import FedAdagrad, FedAdam, FedOpt, FedYogi
from reference_server.strategies.base import FitUpdate


def make_updates(
    rng: np.random.Generator, parameters: Sequence[np.ndarray], count: int
) -> list[FitUpdate]:
    return [
        FitUpdate(
            node_id=f"n{k}",
            parameters=tuple(
                (p + rng.normal(scale=0.3, size=p.shape)).astype(p.dtype) for p in parameters
            ),
            num_examples=int(rng.integers(1, 200)),
        )
        for k in range(count)
    ]


def loop_mean(updates: Sequence[FitUpdate], index: int) -> list[float]:
    total = sum(u.num_examples for u in updates)
    means = []
    for j in range(updates[0].parameters[index].size):
        acc = 0.0
        for u in updates:
            acc += u.num_examples * float(u.parameters[index].ravel()[j])
        means.append(acc / total)
    return means


def sign(x: float) -> float:
    return 0.0 if x == 0 else math.copysign(1.0, x)


def reference(
    variant: str,
    weights: list[float],
    rounds: Sequence[Sequence[FitUpdate]],
    *,
    eta: float,
    beta_1: float,
    beta_2: float,
    tau: float,
) -> tuple[list[float], list[float], list[float]]:
    m = [0.0] * len(weights)
    v = [tau * tau] * len(weights)
    for updates in rounds:
        average = loop_mean(updates, 0)
        for j in range(len(weights)):
            delta = average[j] - weights[j]
            m[j] = beta_1 * m[j] + (1 - beta_1) * delta
            square = delta * delta
            if variant == "adagrad":
                v[j] = v[j] + square
            elif variant == "adam":
                v[j] = beta_2 * v[j] + (1 - beta_2) * square
            else:
                v[j] = v[j] - (1 - beta_2) * square * sign(v[j] - square)
            weights[j] = weights[j] + eta * m[j] / (math.sqrt(v[j]) + tau)
    return weights, m, v


HYPER = [
    {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9},
    {"eta": 0.03, "beta_1": 0.5, "beta_2": 0.7, "tau": 1e-2},
    {"eta": 1.0, "beta_1": 0.0, "beta_2": 0.0, "tau": 0.5},
]


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("variant", ["adagrad", "adam", "yogi"])
def test_three_rounds_match_the_reference(variant: str, hyper: dict[str, float]) -> None:
    rng = np.random.default_rng(7)
    strategy = FedOpt(variant=variant, **hyper)  # type: ignore[arg-type]
    params: tuple[np.ndarray, ...] = (rng.normal(size=12),)
    start = params[0].tolist()
    state = strategy.initial_state(params)
    rounds = []
    for round_number in range(1, 4):
        updates = make_updates(rng, params, 5)
        rounds.append(updates)
        before = {key: value.copy() for key, value in state.items()}
        result = strategy.aggregate_fit(
            round=round_number, parameters=params, updates=updates, failures=[], state=state
        )
        for key, value in state.items():  # the input state is not mutated
            np.testing.assert_array_equal(value, before[key])
        params, state = result.parameters, result.state
    weights, m, v = reference(variant, start, rounds, **hyper)
    np.testing.assert_allclose(params[0], weights, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state["m.0"], m, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(state["v.0"], v, rtol=1e-12, atol=1e-30)


def test_the_variants_differ() -> None:
    rng = np.random.default_rng(8)
    params: tuple[np.ndarray, ...] = (rng.normal(size=20),)
    results = {}
    for kind in (FedAdagrad, FedAdam, FedYogi):
        strategy = kind(eta=0.1, tau=1e-2)
        state = strategy.initial_state(params)
        current = params
        local = np.random.default_rng(9)
        for round_number in range(1, 4):
            result = strategy.aggregate_fit(
                round=round_number,
                parameters=current,
                updates=make_updates(local, current, 4),
                failures=[],
                state=state,
            )
            current, state = result.parameters, result.state
        results[strategy.name] = current[0]
    assert not np.allclose(results["fedadagrad"], results["fedadam"])
    assert not np.allclose(results["fedadam"], results["fedyogi"])
    assert not np.allclose(results["fedadagrad"], results["fedyogi"])


@pytest.mark.parametrize(
    ("variant", "expected_v"),
    [("adagrad", 4.0 + 1.0), ("adam", 0.5 * 4.0 + 0.5 * 1.0), ("yogi", 4.0 - 0.5 * 1.0)],
)
def test_one_step_by_hand(variant: str, expected_v: float) -> None:
    """w = 0, avg = 1 (delta = +1), m = 0, v = 4, beta_1 = beta_2 = 0.5, eta = 1, tau = 0.5."""
    strategy = FedOpt(variant=variant, eta=1.0, beta_1=0.5, beta_2=0.5, tau=0.5)  # type: ignore[arg-type]
    params = (np.array([0.0]),)
    updates = [FitUpdate(node_id="a", parameters=(np.array([1.0]),), num_examples=3)]
    state = {"m.0": np.array([0.0]), "v.0": np.array([4.0])}
    result = strategy.aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state=state
    )
    assert result.state["m.0"].tolist() == [0.5]
    assert result.state["v.0"].tolist() == [expected_v]
    # The step is along +delta: the model moves towards the clients' average.
    assert result.parameters[0].tolist() == [0.5 / (math.sqrt(expected_v) + 0.5)]


def test_yogi_raises_a_small_v_towards_delta_squared() -> None:
    strategy = FedYogi(eta=1.0, beta_1=0.0, beta_2=0.75, tau=1.0)
    params = (np.array([0.0]),)
    updates = [FitUpdate(node_id="a", parameters=(np.array([-2.0]),), num_examples=1)]
    state = {"m.0": np.array([0.0]), "v.0": np.array([1.0])}
    result = strategy.aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state=state
    )
    # delta^2 = 4 > v = 1, so v grows by (1 - 0.75) * 4 = 1; m = delta = -2.
    assert result.state["v.0"].tolist() == [2.0]
    assert result.parameters[0].tolist() == [-2.0 / (math.sqrt(2.0) + 1.0)]


def test_initial_state_is_zero_momentum_and_tau_squared() -> None:
    strategy = FedAdam(tau=1e-3)
    params = (np.zeros((2, 2), np.float32), np.zeros(3, np.float16))
    state = strategy.initial_state(params)
    assert set(state) == {"m.0", "m.1", "v.0", "v.1"}
    assert all(array.dtype == np.float64 for array in state.values())
    assert state["m.1"].shape == (3,)
    assert not np.any(state["m.1"])
    assert np.all(state["v.0"] == 1e-3 * 1e-3)


def test_first_adam_step_is_about_eta_along_the_sign_of_delta() -> None:
    # m = 0.1 delta, v ~ 0.01 delta^2: the step is eta * sign(delta), whatever |delta|.
    strategy = FedAdam()
    params = (np.array([0.0, 0.0, 5.0]),)
    updates = [FitUpdate(node_id="a", parameters=(np.array([1e-3, -7.0, 6.0]),), num_examples=1)]
    result = strategy.aggregate_fit(
        round=1,
        parameters=params,
        updates=updates,
        failures=[],
        state=strategy.initial_state(params),
    )
    np.testing.assert_allclose(result.parameters[0], [0.1, -0.1, 5.1], rtol=1e-5)


def test_named_variants_fix_the_variant_and_match_fedopt() -> None:
    assert (FedAdagrad().variant, FedAdam().variant, FedYogi().variant) == (
        "adagrad",
        "adam",
        "yogi",
    )
    assert (FedAdagrad().name, FedAdam().name, FedYogi().name) == (
        "fedadagrad",
        "fedadam",
        "fedyogi",
    )
    assert FedOpt(variant="yogi").name == "fedyogi"
    with pytest.raises(TypeError):
        FedAdam(variant="yogi")  # type: ignore[call-arg]
    rng = np.random.default_rng(10)
    params = (rng.normal(size=5),)
    updates = make_updates(rng, params, 3)
    named = FedYogi(eta=0.2).aggregate_fit(
        round=1,
        parameters=params,
        updates=updates,
        failures=[],
        state=FedYogi(eta=0.2).initial_state(params),
    )
    generic = FedOpt(variant="yogi", eta=0.2)
    plain = generic.aggregate_fit(
        round=1,
        parameters=params,
        updates=updates,
        failures=[],
        state=generic.initial_state(params),
    )
    assert named.parameters[0].tobytes() == plain.parameters[0].tobytes()


def test_defaults() -> None:
    strategy = FedAdam()
    assert (strategy.eta, strategy.beta_1, strategy.beta_2, strategy.tau) == (0.1, 0.9, 0.99, 1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 0.0}, r"eta must be a number > 0, got 0\.0"),
        ({"beta_1": 1.0}, r"beta_1 must be a number in \[0, 1\), got 1\.0"),
        ({"beta_1": -0.5}, r"beta_1 must be a number in \[0, 1\)"),
        ({"beta_2": 1.5}, r"beta_2 must be a number in \[0, 1\)"),
        ({"tau": 0.0}, "tau must be a number > 0"),
        ({"tau": float("inf")}, "tau must be a number > 0"),
        ({"eta": "fast"}, "eta must be a number > 0, got str"),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        FedAdam(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == next(iter(kwargs))


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="variant must be one of 'adagrad', 'adam', 'yogi'"):
        FedOpt(variant="sgd")  # type: ignore[arg-type]


def test_fedopt_overflow_is_a_typed_error() -> None:
    from reference_server.strategies import AggregationFailed

    strategy = FedAdagrad(eta=1e6)
    params = (np.array([60000.0], np.float16),)
    updates = [
        FitUpdate(node_id="a", parameters=(np.array([65000.0], np.float16),), num_examples=1)
    ]
    with pytest.raises(AggregationFailed, match="overflows float16"):
        strategy.aggregate_fit(
            round=1,
            parameters=params,
            updates=updates,
            failures=[],
            state=strategy.initial_state(params),
        )
