"""q-FedAvg against the q-FFL update written as a loop, and its q = 0 special case."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pollen.errors import InvalidArgument
from reference_server.strategies import AggregationFailed, QFedAvg
from reference_server.strategies.base import FitUpdate


def make_updates(
    rng: np.random.Generator, parameters: Sequence[np.ndarray], count: int
) -> list[FitUpdate]:
    return [
        FitUpdate(
            node_id=f"n{k}",
            parameters=tuple(
                (p + rng.normal(scale=0.2, size=p.shape)).astype(p.dtype) for p in parameters
            ),
            num_examples=int(rng.integers(1, 100)),
            metrics={"loss": float(rng.uniform(0.1, 3.0))},
        )
        for k in range(count)
    ]


def reference(
    weights: Sequence[np.ndarray], updates: Sequence[FitUpdate], *, q: float, rate: float
) -> list[float]:
    """Li et al. 2020: w - sum(F^q * L(w - w_k)) / sum(q F^(q-1) ||L(w - w_k)||^2 + L F^q)."""
    lipschitz = 1.0 / rate
    w = [float(x) for tensor in weights for x in tensor.ravel()]
    numerator = [0.0] * len(w)
    denominator = 0.0
    for update in updates:
        loss = float(update.metrics["loss"])
        local = [float(x) for tensor in update.parameters for x in tensor.ravel()]
        delta = [lipschitz * (a - b) for a, b in zip(w, local, strict=True)]
        squared_norm = sum(d * d for d in delta)
        denominator += q * loss ** (q - 1) * squared_norm + lipschitz * loss**q
        for j, d in enumerate(delta):
            numerator[j] += loss**q * d
    return [a - n / denominator for a, n in zip(w, numerator, strict=True)]


def flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.astype(np.float64).ravel() for a in arrays])


@pytest.mark.parametrize(("q", "rate"), [(0.0, 0.1), (0.5, 0.01), (1.0, 0.3), (3.0, 1.0)])
def test_matches_the_reference(q: float, rate: float) -> None:
    rng = np.random.default_rng(int(q * 10))
    params = (rng.normal(size=(3, 2)), rng.normal(size=4))
    updates = make_updates(rng, params, 6)
    result = QFedAvg(q=q, learning_rate=rate).aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    np.testing.assert_allclose(
        flat(result.parameters), reference(params, updates, q=q, rate=rate), rtol=1e-12, atol=1e-13
    )


@pytest.mark.parametrize("rate", [0.001, 0.1, 5.0])
def test_q_zero_is_the_unweighted_mean_whatever_the_losses(rate: float) -> None:
    # q = 0: F^0 = 1 and the norm term vanishes, so w' = w - sum L(w - w_k) / (n L) = mean(w_k).
    rng = np.random.default_rng(3)
    params = (rng.normal(size=10), rng.normal(size=(2, 2)))
    updates = make_updates(rng, params, 7)
    result = QFedAvg(q=0.0, learning_rate=rate).aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    unweighted = np.mean([flat(u.parameters) for u in updates], axis=0)
    np.testing.assert_allclose(flat(result.parameters), unweighted, rtol=1e-12, atol=1e-12)


def test_a_larger_q_favours_the_client_with_the_larger_loss() -> None:
    params = (np.array([0.0]),)
    updates = [
        FitUpdate(
            node_id="good", parameters=(np.array([-1.0]),), num_examples=1, metrics={"loss": 0.5}
        ),
        FitUpdate(
            node_id="bad", parameters=(np.array([1.0]),), num_examples=1, metrics={"loss": 2.0}
        ),
    ]
    positions = [
        float(
            QFedAvg(q=q, learning_rate=1.0)
            .aggregate_fit(round=1, parameters=params, updates=updates, failures=[], state={})
            .parameters[0][0]
        )
        for q in (0.0, 1.0, 2.0)
    ]
    assert positions[0] == 0.0
    assert 0.0 < positions[1] < positions[2] < 1.0


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({}, "needs the fit metric 'loss'.*node 'n2' did not send it"),
        ({"loss": 0.0}, "must be finite and > 0, got 0.0"),
        ({"loss": -1.0}, "must be finite and > 0"),
        ({"loss": float("nan")}, "must be finite and > 0"),
        ({"loss": True}, "must be a number, got bool"),
        ({"loss": "1.0"}, "must be a number, got str"),
    ],
)
def test_the_loss_metric_is_required(metrics: dict[str, object], message: str) -> None:
    rng = np.random.default_rng(4)
    params = (np.zeros(3),)
    updates = make_updates(rng, params, 4)
    updates[2] = FitUpdate(
        node_id="n2",
        parameters=updates[2].parameters,
        num_examples=3,
        metrics=metrics,  # type: ignore[arg-type]
    )
    with pytest.raises(AggregationFailed, match=message) as caught:
        QFedAvg(q=0.2, learning_rate=0.1).aggregate_fit(
            round=1, parameters=params, updates=updates, failures=[], state={}
        )
    assert caught.value.field == 'metrics["loss"]'


def test_an_integer_loss_is_accepted() -> None:
    params = (np.zeros(1),)
    updates = [
        FitUpdate(node_id="a", parameters=(np.ones(1),), num_examples=1, metrics={"loss": 2})
    ]
    result = QFedAvg(q=1.0, learning_rate=1.0).aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    # delta = -1, h = 1 * 2^0 * 1 + 1 * 2 = 3, w' = 0 - (2 * -1) / 3
    assert result.parameters[0].tolist() == [2.0 / 3.0]


def test_an_overflowing_power_is_a_typed_error() -> None:
    params = (np.zeros(1),)
    updates = [
        FitUpdate(node_id="a", parameters=(np.ones(1),), num_examples=1, metrics={"loss": 1e10})
    ]
    with pytest.raises(AggregationFailed, match=r"to the power q=50\.0 overflows"):
        QFedAvg(q=50.0, learning_rate=1.0).aggregate_fit(
            round=1, parameters=params, updates=updates, failures=[], state={}
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": -0.1, "learning_rate": 0.1}, "q must be a number >= 0"),
        ({"q": 1.0, "learning_rate": 0.0}, "learning_rate must be a number > 0"),
        ({"q": "1", "learning_rate": 0.1}, "q must be a number >= 0, got str"),
        ({"q": 1.0, "learning_rate": float("inf")}, "learning_rate must be a number > 0"),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        QFedAvg(**kwargs)  # type: ignore[arg-type]
