"""FedMedian and FedTrimmedAvg against per-coordinate references, orders and attacks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pollen.errors import InvalidArgument
from reference_server.strategies import FedAvg, FedMedian, FedTrimmedAvg, Strategy
from reference_server.strategies.base import FitUpdate


def as_updates(
    rows: Sequence[Sequence[float] | np.ndarray], dtype: type = np.float64
) -> list[FitUpdate]:
    return [
        FitUpdate(node_id=f"n{k}", parameters=(np.array(row, dtype),), num_examples=k + 1)
        for k, row in enumerate(rows)
    ]


def run(strategy: Strategy, updates: Sequence[FitUpdate]) -> np.ndarray:
    params = (np.zeros_like(updates[0].parameters[0]),)
    result = strategy.aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )
    return result.parameters[0]


def median_reference(column: Sequence[float]) -> float:
    ordered = sorted(column)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def trimmed_reference(column: Sequence[float], beta: float) -> float:
    ordered = sorted(column)
    cut = math.floor(beta * len(ordered))
    kept = ordered[cut : len(ordered) - cut]
    total = 0.0
    for value in kept:
        total += value
    return total / len(kept)


@pytest.mark.parametrize("count", [1, 2, 5, 8])
def test_median_matches_the_reference(count: int) -> None:
    rows = np.random.default_rng(count).normal(size=(count, 30)).tolist()
    result = run(FedMedian(), as_updates(rows))
    expected = [median_reference([row[j] for row in rows]) for j in range(30)]
    np.testing.assert_array_equal(result, expected)


def test_median_of_an_even_count_averages_the_middle_pair() -> None:
    result = run(FedMedian(), as_updates([[1.0], [10.0], [2.0], [4.0]]))
    assert result.tolist() == [3.0]


def test_median_ignores_example_counts() -> None:
    updates = [
        FitUpdate(node_id="a", parameters=(np.array([0.0]),), num_examples=1_000_000),
        FitUpdate(node_id="b", parameters=(np.array([5.0]),), num_examples=1),
        FitUpdate(node_id="c", parameters=(np.array([6.0]),), num_examples=1),
    ]
    assert run(FedMedian(), updates).tolist() == [5.0]


@pytest.mark.parametrize(("count", "beta"), [(10, 0.2), (9, 0.2), (5, 0.0), (7, 0.45), (3, 0.34)])
def test_trimmed_mean_matches_the_reference(count: int, beta: float) -> None:
    rows = np.random.default_rng(count).normal(size=(count, 25)).tolist()
    result = run(FedTrimmedAvg(beta=beta), as_updates(rows))
    expected = [trimmed_reference([row[j] for row in rows], beta) for j in range(25)]
    np.testing.assert_allclose(result, expected, rtol=1e-15, atol=1e-16)


def test_trimmed_mean_drops_floor_beta_n_from_each_end() -> None:
    # n = 9, beta = 0.25: floor(2.25) = 2 dropped at each end; 1000 and -1000 go, 3 to 7 stay.
    rows = [[v] for v in [5.0, 1000.0, 3.0, -1000.0, 7.0, 4.0, 6.0, 1.0, 9.0]]
    assert run(FedTrimmedAvg(beta=0.25), as_updates(rows)).tolist() == [5.0]
    # beta = 0 is the unweighted mean.
    assert run(FedTrimmedAvg(beta=0.0), as_updates([[1.0], [2.0], [6.0]])).tolist() == [3.0]


rows_strategy = st.integers(1, 9).flatmap(
    lambda n: st.lists(
        st.lists(st.floats(-1e6, 1e6, width=32), min_size=4, max_size=4),
        min_size=n,
        max_size=n,
    )
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**32 - 1), beta=st.floats(0.0, 0.49))
def test_coordinatewise_rules_ignore_the_order_of_updates(
    rows: list[list[float]], seed: int, beta: float
) -> None:
    shuffled = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    for strategy in (FedMedian(), FedTrimmedAvg(beta=beta)):
        first = run(strategy, as_updates(rows, np.float32))
        second = run(strategy, as_updates(shuffled, np.float32))
        assert first.tobytes() == second.tobytes()
        # Both stay within the values they summarize.
        array = np.array(rows, np.float32)
        assert np.all(first >= array.min(axis=0))
        assert np.all(first <= array.max(axis=0))


def attacked(honest: int, byzantine: int, size: int = 200) -> tuple[list[FitUpdate], np.ndarray]:
    """Honest updates near `truth`; Byzantine ones flip and scale the honest step x100."""
    rng = np.random.default_rng(11)
    truth = rng.normal(size=size)
    rows = [truth + rng.normal(scale=0.1, size=size) for _ in range(honest)]
    rows += [-100.0 * truth for _ in range(byzantine)]
    return as_updates(rows), np.array(rows[:honest])


@pytest.mark.parametrize(
    "strategy", [FedMedian(), FedTrimmedAvg(beta=0.2)], ids=["median", "trimmed"]
)
def test_robust_rules_stay_with_the_honest_values(strategy: Strategy) -> None:
    updates, honest = attacked(honest=8, byzantine=2)
    result = run(strategy, updates)
    assert np.all(result >= honest.min(axis=0))
    assert np.all(result <= honest.max(axis=0))
    assert np.linalg.norm(result - honest.mean(axis=0)) < 0.1 * np.linalg.norm(honest.mean(axis=0))
    # FedAvg is dragged far away by the same two updates.
    averaged = run(FedAvg(), updates)
    assert np.linalg.norm(averaged - honest.mean(axis=0)) > 5 * np.linalg.norm(honest.mean(axis=0))


@pytest.mark.parametrize("beta", [0.5, -0.01, 1.0, "0.2", None, float("nan")])
def test_beta_is_validated(beta: object) -> None:
    with pytest.raises(InvalidArgument, match=r"beta must be a number in \[0, 0\.5\)") as caught:
        FedTrimmedAvg(beta=beta)  # type: ignore[arg-type]
    assert caught.value.field == "beta"


def test_trimmed_default_beta() -> None:
    assert FedTrimmedAvg().beta == 0.2
