"""FedAvg, FedProx and FedAvgM against float64 references written as plain loops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pollen.errors import InvalidArgument
from reference_server.strategies import FedAvg, FedAvgM, FedProx
from reference_server.strategies.base import FitUpdate


def make_updates(
    rng: np.random.Generator, parameters: Sequence[np.ndarray], count: int
) -> list[FitUpdate]:
    return [
        FitUpdate(
            node_id=f"n{k}",
            parameters=tuple(
                (p + rng.normal(scale=0.5, size=p.shape)).astype(p.dtype) for p in parameters
            ),
            num_examples=int(rng.integers(1, 500)),
        )
        for k in range(count)
    ]


def loop_mean(updates: Sequence[FitUpdate], index: int) -> list[float]:
    total = sum(u.num_examples for u in updates)
    size = updates[0].parameters[index].size
    means = []
    for j in range(size):
        acc = 0.0
        for u in updates:
            acc += u.num_examples * float(u.parameters[index].ravel()[j])
        means.append(acc / total)
    return means


def test_fedavg_is_the_exact_example_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    params: tuple[np.ndarray, ...] = (np.zeros((4, 3), np.float32), np.ones(6, np.float64))
    updates = make_updates(rng, params, 8)
    result = FedAvg().aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    for index, tensor in enumerate(params):
        expected = np.array(loop_mean(updates, index)).reshape(tensor.shape).astype(tensor.dtype)
        np.testing.assert_array_equal(result.parameters[index], expected)
    assert result.state == {}
    assert result.metrics["num_examples"] == sum(u.num_examples for u in updates)


def test_fedavg_weights_by_examples_not_by_node() -> None:
    params = (np.zeros(1, np.float64),)
    updates = [
        FitUpdate(node_id="big", parameters=(np.array([1.0]),), num_examples=99),
        FitUpdate(node_id="small", parameters=(np.array([101.0]),), num_examples=1),
    ]
    result = FedAvg().aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    assert result.parameters[0].tolist() == [2.0]


def test_fedavg_is_permutation_invariant_up_to_rounding() -> None:
    rng = np.random.default_rng(1)
    params = (np.zeros(100, np.float64),)
    updates = make_updates(rng, params, 10)
    forward = FedAvg().aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    backward = FedAvg().aggregate_fit(
        round=1, parameters=params, updates=updates[::-1], failures=[], state={}
    )
    np.testing.assert_allclose(forward.parameters[0], backward.parameters[0], rtol=1e-14)


def test_fedprox_sends_mu_and_aggregates_like_fedavg() -> None:
    strategy = FedProx(proximal_mu=0.25)
    assert strategy.fit_config(3) == {"proximal_mu": 0.25}
    assert FedAvg().fit_config(3) == {}
    rng = np.random.default_rng(2)
    params = (np.zeros(7, np.float32),)
    updates = make_updates(rng, params, 5)
    prox = strategy.aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    avg = FedAvg().aggregate_fit(round=1, parameters=params, updates=updates, failures=[], state={})
    np.testing.assert_array_equal(prox.parameters[0], avg.parameters[0])


def test_fedprox_accepts_an_integer_mu_as_float() -> None:
    strategy = FedProx(proximal_mu=1)
    assert isinstance(strategy.proximal_mu, float)
    assert isinstance(strategy.fit_config(1)["proximal_mu"], float)


def fedavgm_reference(
    weights: list[float],
    rounds: Sequence[Sequence[FitUpdate]],
    *,
    rate: float,
    momentum: float,
) -> list[list[float]]:
    velocity = [0.0] * len(weights)
    history = []
    for updates in rounds:
        average = loop_mean(updates, 0)
        for j in range(len(weights)):
            pseudo_gradient = weights[j] - average[j]
            velocity[j] = momentum * velocity[j] + pseudo_gradient
            weights[j] = weights[j] - rate * velocity[j]
        history.append(list(weights))
    return history


def test_fedavgm_follows_the_reference_over_three_rounds() -> None:
    rng = np.random.default_rng(3)
    strategy = FedAvgM(server_learning_rate=0.7, server_momentum=0.8)
    params: tuple[np.ndarray, ...] = (rng.normal(size=6),)
    rounds = []
    state = strategy.initial_state(params)
    assert set(state) == {"momentum.0"}
    assert not np.any(state["momentum.0"])
    weights = params[0].tolist()
    for round_number in range(1, 4):
        updates = make_updates(rng, params, 4)
        rounds.append(updates)
        result = strategy.aggregate_fit(
            round=round_number, parameters=params, updates=updates, failures=[], state=state
        )
        params, state = result.parameters, result.state
    expected = fedavgm_reference(weights, rounds, rate=0.7, momentum=0.8)
    np.testing.assert_allclose(params[0], expected[-1], rtol=1e-13, atol=1e-14)


def test_fedavgm_first_step_moves_towards_the_average() -> None:
    params = (np.array([1.0, -2.0]),)
    updates = [FitUpdate(node_id="a", parameters=(np.array([3.0, -4.0]),), num_examples=1)]
    strategy = FedAvgM(server_learning_rate=0.5, server_momentum=0.9)
    result = strategy.aggregate_fit(
        round=1,
        parameters=params,
        updates=updates,
        failures=[],
        state=strategy.initial_state(params),
    )
    # d = w - avg = [-2, 2]; v = d; w' = w - 0.5 v
    assert result.parameters[0].tolist() == [2.0, -3.0]
    assert result.state["momentum.0"].tolist() == [-2.0, 2.0]
    again = strategy.aggregate_fit(
        round=2, parameters=result.parameters, updates=updates, failures=[], state=result.state
    )
    # d = [-1, 1]; v = 0.9 * [-2, 2] + d = [-2.8, 2.8]; w' = [2, -3] - 0.5 v
    np.testing.assert_allclose(again.parameters[0], [3.4, -4.4], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fedavgm_without_momentum_and_unit_rate_is_fedavg(dtype: type) -> None:
    rng = np.random.default_rng(4)
    params: tuple[np.ndarray, ...] = (rng.normal(size=50).astype(dtype),)
    updates = make_updates(rng, params, 6)
    plain = FedAvg().aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    strategy = FedAvgM(server_learning_rate=1.0, server_momentum=0.0)
    momentum = strategy.aggregate_fit(
        round=1,
        parameters=params,
        updates=updates,
        failures=[],
        state=strategy.initial_state(params),
    )
    # w - (w - avg) equals avg up to one rounding at the magnitude of w.
    np.testing.assert_allclose(momentum.parameters[0], plain.parameters[0], rtol=0, atol=1e-14)
    if dtype is np.float32:
        np.testing.assert_array_equal(momentum.parameters[0], plain.parameters[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_learning_rate": 0.0}, r"server_learning_rate must be a number > 0, got 0\.0"),
        ({"server_learning_rate": -1.0}, "server_learning_rate must be a number > 0"),
        ({"server_momentum": 1.0}, r"server_momentum must be a number in \[0, 1\), got 1\.0"),
        ({"server_momentum": -0.1}, r"server_momentum must be a number in \[0, 1\)"),
        ({"server_momentum": float("nan")}, "server_momentum"),
        ({"server_learning_rate": "1"}, "server_learning_rate must be a number > 0, got str"),
        ({"server_learning_rate": True}, "got bool"),
    ],
)
def test_fedavgm_config_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        FedAvgM(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == next(iter(kwargs))


@pytest.mark.parametrize("mu", [-0.1, float("inf"), "0.1", None])
def test_fedprox_mu_is_validated(mu: object) -> None:
    with pytest.raises(InvalidArgument, match="proximal_mu must be a number >= 0"):
        FedProx(proximal_mu=mu)  # type: ignore[arg-type]


def test_fedavgm_defaults() -> None:
    strategy = FedAvgM()
    assert (strategy.server_learning_rate, strategy.server_momentum) == (1.0, 0.9)
