"""Krum, Multi-Krum and Bulyan against brute-force references, orders and attacks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pollen.errors import InvalidArgument
from reference_server.strategies import AggregationFailed, Bulyan, FedAvg, Krum, MultiKrum
from reference_server.strategies.base import Aggregate, FitUpdate
from reference_server.strategies.krum import mean_around_median


def as_updates(
    rows: Sequence[Sequence[float]], counts: Sequence[int] | None = None
) -> list[FitUpdate]:
    return [
        FitUpdate(
            node_id=f"n{k}",
            # Two tensors, so distances must add up over the whole model.
            parameters=(np.array(row[:2], np.float64), np.array(row[2:], np.float64)),
            num_examples=counts[k] if counts else 1,
        )
        for k, row in enumerate(rows)
    ]


def run(strategy: Krum, updates: Sequence[FitUpdate]) -> Aggregate:
    params = tuple(np.zeros_like(t) for t in updates[0].parameters)
    return strategy.aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state={}
    )


def flat(update: FitUpdate) -> list[float]:
    return [float(x) for tensor in update.parameters for x in tensor.ravel()]


def distance(a: FitUpdate, b: FitUpdate) -> float:
    return sum((x - y) ** 2 for x, y in zip(flat(a), flat(b), strict=True))


def scores(updates: Sequence[FitUpdate], neighbours: int) -> list[float]:
    result = []
    for i, update in enumerate(updates):
        near = sorted(distance(update, other) for j, other in enumerate(updates) if j != i)
        result.append(sum(near[:neighbours]))
    return result


def ranking(updates: Sequence[FitUpdate], neighbours: int) -> list[int]:
    """Best first: lowest score, then lowest summed distance to all others, then position."""
    found = scores(updates, neighbours)
    spread = scores(updates, len(updates) - 1)
    return sorted(range(len(updates)), key=lambda i: (found[i], spread[i], i))


def bulyan_reference(updates: Sequence[FitUpdate], f: int) -> list[float]:
    remaining = list(range(len(updates)))
    selected: list[int] = []
    while len(selected) < len(updates) - 2 * f:
        r = len(remaining)
        neighbours = min(max(r - f - 2, 1), r - 1)
        best = ranking([updates[i] for i in remaining], neighbours)[0]
        selected.append(remaining.pop(best))
    keep = len(selected) - 2 * f
    result = []
    for j in range(len(flat(updates[0]))):
        values = sorted(flat(updates[i])[j] for i in selected)
        median = statistics.median(values)
        closest = sorted(values, key=lambda v: (abs(v - median), v))[:keep]
        total = 0.0
        for value in closest:
            total += value
        result.append(total / keep)
    return result


def random_rows(seed: int, count: int, size: int = 5) -> list[list[float]]:
    rows: list[list[float]] = np.random.default_rng(seed).normal(size=(count, size)).tolist()
    return rows


@pytest.mark.parametrize(("count", "f"), [(3, 0), (7, 2), (10, 1), (12, 3)])
def test_krum_selects_the_reference_choice(count: int, f: int) -> None:
    updates = as_updates(random_rows(count, count))
    result = run(Krum(num_malicious=f), updates)
    best = updates[ranking(updates, count - f - 2)[0]]
    for got, want in zip(result.parameters, best.parameters, strict=True):
        assert got.tobytes() == want.tobytes()
    assert result.metrics["num_selected"] == 1


@pytest.mark.parametrize(("count", "f", "m"), [(7, 2, 3), (10, 1, 8), (5, 0, 5), (5, 1, 1)])
def test_multikrum_averages_the_reference_selection(count: int, f: int, m: int) -> None:
    rng = np.random.default_rng(count + m)
    counts = [int(c) for c in rng.integers(1, 50, size=count)]
    updates = as_updates(random_rows(count, count), counts)
    result = run(MultiKrum(num_malicious=f, num_selected=m), updates)
    chosen = sorted(ranking(updates, count - f - 2)[:m])
    total = sum(counts[i] for i in chosen)
    expected = [sum(counts[i] * flat(updates[i])[j] for i in chosen) / total for j in range(5)]
    got = [float(x) for tensor in result.parameters for x in tensor.ravel()]
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)
    assert result.metrics["num_selected"] == m


def test_multikrum_with_one_selected_is_krum() -> None:
    updates = as_updates(random_rows(3, 9))
    single = run(MultiKrum(num_malicious=2, num_selected=1), updates)
    krum = run(Krum(num_malicious=2), updates)
    for a, b in zip(single.parameters, krum.parameters, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("count", "f"), [(3, 0), (7, 1), (11, 2), (12, 2), (15, 3)])
def test_bulyan_matches_the_reference(count: int, f: int) -> None:
    updates = as_updates(random_rows(count + 100, count))
    result = run(Bulyan(num_malicious=f), updates)
    got = [float(x) for tensor in result.parameters for x in tensor.ravel()]
    np.testing.assert_allclose(got, bulyan_reference(updates, f), rtol=1e-14, atol=1e-15)
    assert result.metrics["num_selected"] == count - 2 * f


def test_bulyan_without_byzantine_nodes_is_the_plain_mean() -> None:
    updates = as_updates([[1.0, 2.0, 3.0], [2.0, 4.0, 9.0], [6.0, 0.0, 0.0]], counts=[1, 5, 9])
    got = [float(x) for tensor in run(Bulyan(num_malicious=0), updates).parameters for x in tensor]
    assert got == [3.0, 2.0, 4.0]


def test_trimming_around_the_median_breaks_ties_towards_the_smaller_value() -> None:
    # median 2; distances 2, 1, 0, 2, 3: keep 2, 1 and, of the tied 0 and 4, the 0.
    rows = np.array([[4.0], [0.0], [2.0], [5.0], [1.0]])
    assert mean_around_median(rows, 3).tolist() == [1.0]
    assert mean_around_median(rows[::-1], 3).tolist() == [1.0]


def test_krum_ties_go_to_the_earlier_update() -> None:
    # 1-D points -1, 1, -3, 3 (f = 0, 2 neighbours): -1 and 1 tie with score 8.
    points = [-1.0, 1.0, -3.0, 3.0]
    updates = [
        FitUpdate(node_id=str(k), parameters=(np.array([p]),), num_examples=1)
        for k, p in enumerate(points)
    ]
    params = (np.zeros(1),)

    def pick(order: Sequence[FitUpdate]) -> float:
        result = Krum(num_malicious=0).aggregate_fit(
            round=1, parameters=params, updates=order, failures=[], state={}
        )
        return float(result.parameters[0][0])

    assert pick(updates) == -1.0
    assert pick([updates[1], updates[0], *updates[2:]]) == 1.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(7, 12))
def test_selection_ignores_the_order_of_updates(seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    updates = as_updates(rng.normal(size=(count, 5)).tolist())
    shuffled = [updates[i] for i in rng.permutation(count)]
    krum = [run(Krum(num_malicious=1), order).parameters for order in (updates, shuffled)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*krum, strict=True))
    bulyan = [run(Bulyan(num_malicious=1), order).parameters for order in (updates, shuffled)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*bulyan, strict=True))
    multi = [
        run(MultiKrum(num_malicious=1, num_selected=4), order).parameters
        for order in (updates, shuffled)
    ]
    for a, b in zip(*multi, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def attacked(honest: int, byzantine: int, size: int = 60) -> tuple[list[FitUpdate], np.ndarray]:
    """Honest rows near `truth`; Byzantine rows flip it and scale it x100."""
    rng = np.random.default_rng(5)
    truth = rng.normal(size=size)
    rows = [truth + rng.normal(scale=0.1, size=size) for _ in range(honest)]
    rows += [-100.0 * truth + rng.normal(scale=0.1, size=size) for _ in range(byzantine)]
    updates = [
        FitUpdate(node_id=f"n{k}", parameters=(row[:20].copy(), row[20:].copy()), num_examples=10)
        for k, row in enumerate(rows)
    ]
    # The attackers come first, so a rule that ignored scores would pick them.
    updates = updates[honest:] + updates[:honest]
    return updates, np.array(rows[:honest])


def whole(result: Aggregate) -> np.ndarray:
    return np.concatenate([t.ravel() for t in result.parameters])


def test_robust_rules_pick_honest_values_and_fedavg_does_not() -> None:
    updates, honest = attacked(honest=9, byzantine=2)
    target = honest.mean(axis=0)
    scale = np.linalg.norm(target)

    krum = whole(run(Krum(num_malicious=2), updates))
    assert any(krum.tobytes() == row.tobytes() for row in honest)

    multi = whole(run(MultiKrum(num_malicious=2, num_selected=9), updates))
    np.testing.assert_allclose(multi, target, rtol=1e-12, atol=1e-12)

    bulyan = whole(run(Bulyan(num_malicious=2), updates))
    assert np.all(bulyan >= honest.min(axis=0))
    assert np.all(bulyan <= honest.max(axis=0))
    assert np.linalg.norm(bulyan - target) < 0.1 * scale

    averaged = whole(run(FedAvg(), updates))  # type: ignore[arg-type]
    assert np.linalg.norm(averaged - target) > 5 * scale


@pytest.mark.parametrize(
    ("strategy", "count", "message"),
    [
        (Krum(num_malicious=1), 4, "krum with num_malicious=1 needs at least 5 updates, got 4"),
        (Krum(num_malicious=0), 2, "needs at least 3 updates, got 2"),
        (MultiKrum(num_malicious=1, num_selected=6), 5, "needs at least 6 updates, got 5"),
        (Bulyan(num_malicious=1), 6, "bulyan with num_malicious=1 needs at least 7 updates"),
        (Bulyan(num_malicious=2), 10, "needs at least 11 updates, got 10"),
    ],
)
def test_too_few_updates_is_a_typed_error(strategy: Krum, count: int, message: str) -> None:
    with pytest.raises(AggregationFailed, match=message):
        run(strategy, as_updates(random_rows(0, count)))


@pytest.mark.parametrize("value", [-1, 1.5, True, "2", None])
def test_num_malicious_is_validated(value: object) -> None:
    for kind in (Krum, Bulyan):
        with pytest.raises(InvalidArgument, match="num_malicious must be an integer >= 0"):
            kind(num_malicious=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -2, 2.0, False])
def test_num_selected_is_validated(value: object) -> None:
    with pytest.raises(InvalidArgument, match="num_selected must be an integer >= 1") as caught:
        MultiKrum(num_malicious=0, num_selected=value)  # type: ignore[arg-type]
    assert caught.value.field == "num_selected"
