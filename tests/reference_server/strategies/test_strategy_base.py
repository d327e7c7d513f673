"""The shared pieces of reference_server.strategies.base, against float64 references."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Iterator, Sequence
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pollen.errors import ErrorCode, InvalidArgument
from pollen.state import TASK
from reference_server.strategies.base import (
    AggregationFailed,
    EvaluateReport,
    FailedTask,
    FitUpdate,
    TaskOutcome,
    aggregate_evaluate,
    aggregate_metrics,
    cast_like,
    check_update,
    failure_counts,
    fit_metrics,
    weighted_average,
    weighted_mean64,
)


def make_updates(
    rng: np.random.Generator, parameters: Sequence[np.ndarray], count: int
) -> list[FitUpdate]:
    return [
        FitUpdate(
            node_id=f"n{k}",
            parameters=tuple(rng.normal(size=p.shape).astype(p.dtype) for p in parameters),
            num_examples=int(rng.integers(1, 1000)),
        )
        for k in range(count)
    ]


def reference_mean(updates: Sequence[FitUpdate], index: int) -> np.ndarray:
    """sum_k(n_k * x_k) / sum_k(n_k), one coordinate at a time, in Python floats."""
    shape = updates[0].parameters[index].shape
    flat = [u.parameters[index].astype(np.float64).ravel() for u in updates]
    total = sum(u.num_examples for u in updates)
    out = []
    for j in range(flat[0].size):
        acc = 0.0
        for update, values in zip(updates, flat, strict=True):
            acc += update.num_examples * float(values[j])
        out.append(acc / total)
    return np.array(out, dtype=np.float64).reshape(shape)


class Once:
    """An iterable that fails the test when it is iterated a second time."""

    def __init__(self, items: Sequence[FitUpdate]) -> None:
        self._items = items
        self.used = False

    def __iter__(self) -> Iterator[FitUpdate]:
        if self.used:
            raise AssertionError("updates were iterated twice")
        self.used = True
        return iter(self._items)


# --- weighted_average ------------------------------------------------------------------


def test_weighted_average_matches_the_float64_reference_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    params: tuple[np.ndarray, ...] = (
        np.zeros((3, 4), np.float32),
        np.zeros(5, np.float64),
        np.zeros((), np.float32),
    )
    updates = make_updates(rng, params, 7)
    result = weighted_average(params, updates)
    for index, tensor in enumerate(params):
        expected = reference_mean(updates, index).astype(tensor.dtype)
        assert result[index].dtype == tensor.dtype
        assert result[index].shape == tensor.shape
        np.testing.assert_array_equal(result[index], expected)


def test_weighted_average_is_within_half_an_ulp_of_the_exact_mean() -> None:
    rng = np.random.default_rng(2)
    params = (np.zeros(50, np.float32),)
    updates = make_updates(rng, params, 9)
    (result,) = weighted_average(params, updates)
    total = sum(u.num_examples for u in updates)
    for j in range(50):
        exact = sum(
            (Fraction(float(u.parameters[0][j])) * u.num_examples for u in updates), Fraction(0)
        ) / Fraction(total)
        got: Fraction = Fraction(float(result[j]))
        ulp = Fraction(float(np.spacing(np.abs(result[j]))))  # result[j] is float32
        # float64 accumulation adds far less than 2^-20 ulp of float32 on top of rounding.
        assert abs(got - exact) <= ulp / 2 * (1 + Fraction(1, 2**20))


def test_weighted_average_of_small_integers_is_exact() -> None:
    params = (np.zeros(3, np.float32),)
    updates = [
        FitUpdate(node_id="a", parameters=(np.array([1, 2, 3], np.float32),), num_examples=1),
        FitUpdate(node_id="b", parameters=(np.array([4, 8, -3], np.float32),), num_examples=3),
    ]
    (result,) = weighted_average(params, updates)
    np.testing.assert_array_equal(result, np.array([3.25, 6.5, -1.5], np.float32))


def test_weighted_average_reads_its_input_once() -> None:
    params = (np.zeros(4, np.float32),)
    updates = Once(make_updates(np.random.default_rng(3), params, 5))
    weighted_average(params, updates)
    assert updates.used


def test_weighted_average_keeps_no_update_alive() -> None:
    """O(model) memory: when update k is produced, updates 0..k-2 are already garbage."""
    params = (np.zeros(1000, np.float32), np.zeros((10, 10), np.float64))
    rng = np.random.default_rng(4)
    produced: list[weakref.ref[np.ndarray]] = []

    def lazily() -> Iterator[FitUpdate]:
        for k in range(6):
            gc.collect()
            # The consumer's loop variable may still point at the previous update.
            alive = [i for i, ref in enumerate(produced[:-1]) if ref() is not None]
            assert not alive, f"updates {alive} are still referenced"
            update = make_updates(rng, params, 1)[0]
            produced.append(weakref.ref(update.parameters[0]))
            yield FitUpdate(
                node_id=f"n{k}", parameters=update.parameters, num_examples=update.num_examples
            )
            del update

    weighted_average(params, lazily())
    assert len(produced) == 6


def test_weighted_mean64_holds_one_float64_accumulator_per_tensor() -> None:
    params = (np.zeros((2, 3), np.float16), np.zeros(4, np.float32))
    mean = weighted_mean64(params, make_updates(np.random.default_rng(5), params, 3))
    assert [a.dtype for a in mean.arrays] == [np.float64, np.float64]
    assert [a.shape for a in mean.arrays] == [(2, 3), (4,)]
    assert mean.num_examples == sum(count for _, count in mean.tally)
    assert len(mean.tally) == 3


def test_weighted_average_is_deterministic_for_a_fixed_order() -> None:
    params = (np.zeros(257, np.float32),)
    updates = make_updates(np.random.default_rng(6), params, 11)
    first = weighted_average(params, updates)[0]
    second = weighted_average(params, list(updates))[0]
    assert first.tobytes() == second.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3),
        min_size=1,
        max_size=8,
    ),
    counts=st.lists(st.integers(1, 10**6), min_size=8, max_size=8),
)
def test_weighted_average_property(values: list[list[float]], counts: list[int]) -> None:
    params = (np.zeros(3, np.float32),)
    updates = [
        FitUpdate(node_id=str(k), parameters=(np.array(v, np.float32),), num_examples=n)
        for k, (v, n) in enumerate(zip(values, counts, strict=False))
    ]
    (result,) = weighted_average(params, updates)
    np.testing.assert_array_equal(result, reference_mean(updates, 0).astype(np.float32))
    # A mean lies within the range of what it averages.
    stacked = np.array(values, np.float32)
    assert np.all(result >= stacked.min(axis=0))
    assert np.all(result <= stacked.max(axis=0))


def test_bfloat16_and_float16_keep_their_dtype() -> None:
    params = (np.zeros(8, ml_dtypes.bfloat16), np.zeros(8, np.float16))
    updates = make_updates(np.random.default_rng(7), params, 4)
    result = weighted_average(params, updates)
    for index, tensor in enumerate(params):
        assert result[index].dtype == tensor.dtype
        expected = reference_mean(updates, index).astype(tensor.dtype)
        np.testing.assert_array_equal(result[index].astype(np.float64), expected.astype(np.float64))


def test_no_updates_is_a_typed_error() -> None:
    with pytest.raises(AggregationFailed, match="no updates") as caught:
        weighted_average((np.zeros(2, np.float32),), [])
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


# --- checks of updates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ((np.zeros(3, np.float32),), "has 1 tensors, the global model has 2"),
        ((np.zeros(3, np.float32), np.zeros((1, 2), np.float32)), r"float32\[1, 2\]"),
        ((np.zeros(3, np.float32), np.zeros((2, 1), np.float32)), r"float32\[2, 1\]"),
        ((np.zeros(3, np.float64), np.zeros((2, 2), np.float32)), r"float64\[3\]"),
    ],
)
def test_mismatched_updates_are_refused(tensors: tuple[np.ndarray, ...], message: str) -> None:
    params = (np.zeros(3, np.float32), np.zeros((2, 2), np.float32))
    update = FitUpdate(node_id="odd", parameters=tensors, num_examples=1)
    with pytest.raises(InvalidArgument, match=message):
        check_update(params, update)
    # The averaging refuses it too rather than broadcasting.
    with pytest.raises(InvalidArgument, match="'odd'"):
        weighted_average(params, [update])


@pytest.mark.parametrize("count", [0, -3, True, 1.0])
def test_updates_without_examples_are_refused(count: object) -> None:
    params = (np.zeros(1, np.float32),)
    update = FitUpdate(node_id="x", parameters=params, num_examples=count)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="num_examples"):
        weighted_average(params, [update])


def test_fit_update_stores_a_tuple() -> None:
    update = FitUpdate(node_id="a", parameters=[np.zeros(1)], num_examples=1)  # type: ignore[arg-type]
    assert isinstance(update.parameters, tuple)


# --- cast_like -----------------------------------------------------------------------------


def test_cast_rounds_to_nearest_even() -> None:
    halfway_down = 1.0 + 2.0**-24  # between 1 and 1 + 2^-23: ties to 1 (even)
    halfway_up = 1.0 + 3 * 2.0**-24  # between 1 + 2^-23 and 1 + 2^-22: ties to the latter
    (out,) = cast_like((np.zeros(2, np.float32),), (np.array([halfway_down, halfway_up]),))
    assert out.tolist() == [1.0, 1.0 + 2.0**-22]


def test_integer_tensors_round_half_to_even_and_bools_round_too() -> None:
    params = (np.zeros(5, np.int32), np.zeros(3, np.bool_))
    values = (np.array([0.5, 1.5, 2.5, -0.5, -1.7]), np.array([0.5, 0.51, 1.0]))
    ints, flags = cast_like(params, values)
    assert ints.dtype == np.int32
    assert ints.tolist() == [0, 2, 2, 0, -2]
    assert flags.dtype == np.bool_
    assert flags.tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        (np.float16, 70000.0, "overflows float16"),
        (np.float32, np.inf, "not finite"),
        (np.float64, np.nan, "not finite"),
        (np.int8, 128.0, "range of int8"),
        (np.uint8, -1.0, "range of uint8"),
        (np.int64, 2.0**63, "range of int64"),
    ],
)
def test_cast_refuses_results_that_do_not_fit(dtype: type, value: float, message: str) -> None:
    with pytest.raises(AggregationFailed, match=message):
        cast_like((np.zeros(1, dtype),), (np.array([value]),))


def test_cast_keeps_the_largest_int64_below_two_to_the_63() -> None:
    largest = float(np.nextafter(2.0**63, 0.0))
    (out,) = cast_like((np.zeros(1, np.int64),), (np.array([largest]),))
    assert int(out[0]) == int(largest)


# --- metrics -------------------------------------------------------------------------------


def test_aggregate_metrics_weights_by_examples_over_reporters() -> None:
    result = aggregate_metrics(
        [
            ({"acc": 0.5, "loss": 2, "flag": True, "tag": "x", "raw": b"y"}, 1),
            ({"acc": 1.0}, 3),
            ({"loss": 4.0}, 1),
        ]
    )
    assert result == {"acc": (0.5 * 1 + 1.0 * 3) / 4, "loss": (2 * 1 + 4.0 * 1) / 2}
    assert list(result) == ["acc", "loss"]


def test_failure_counts_cover_every_closed_state() -> None:
    failures = [
        FailedTask(node_id="a", outcome=TaskOutcome.DROPPED),
        FailedTask(node_id="b", outcome=TaskOutcome.DROPPED),
        FailedTask(node_id="c", outcome=TaskOutcome.REJECTED, error_code=ErrorCode.UPDATE_REJECTED),
    ]
    assert failure_counts(failures) == {
        "num_failures": 3,
        "num_failures_failed": 0,
        "num_failures_rejected": 1,
        "num_failures_expired": 0,
        "num_failures_dropped": 2,
        "num_failures_cancelled": 0,
    }


def test_fit_metrics_counts_win_over_client_metrics() -> None:
    metrics = fit_metrics([({"num_updates": 99.0, "acc": 1.0}, 2), ({}, 3)], [])
    assert metrics["num_updates"] == 2
    assert metrics["num_examples"] == 5
    assert metrics["acc"] == 1.0


def test_task_outcomes_are_the_spec_task_machine_closed_states() -> None:
    closed = {name for name, info in TASK.states.items() if info.terminal}
    assert {outcome.value for outcome in TaskOutcome} == closed
    assert all(outcome.value == outcome.name.lower() for outcome in TaskOutcome)


def test_a_completed_task_is_not_a_failure() -> None:
    with pytest.raises(InvalidArgument, match="not a failure"):
        FailedTask(node_id="a", outcome=TaskOutcome.COMPLETED)


def test_aggregate_evaluate() -> None:
    reports = [
        EvaluateReport(node_id="a", loss=1.0, num_examples=10, metrics={"acc": 0.9, "n": "x"}),
        EvaluateReport(node_id="b", loss=4.0, num_examples=30, metrics={"acc": 0.5}),
    ]
    failures = [FailedTask(node_id="c", outcome=TaskOutcome.EXPIRED, message="deadline")]
    loss, metrics = aggregate_evaluate(reports, failures)
    assert loss == (1.0 * 10 + 4.0 * 30) / 40
    assert metrics["acc"] == (0.9 * 10 + 0.5 * 30) / 40
    assert metrics["num_reports"] == 2
    assert metrics["num_examples"] == 40
    assert metrics["num_failures"] == 1
    assert metrics["num_failures_expired"] == 1
    assert metrics["num_failures_dropped"] == 0
    assert "n" not in metrics


def test_aggregate_evaluate_leaves_non_finite_losses_out_and_counts_them() -> None:
    reports = [
        EvaluateReport(node_id="a", loss=2.0, num_examples=10, metrics={}),
        EvaluateReport(node_id="b", loss=math.nan, num_examples=30, metrics={}),
        EvaluateReport(node_id="c", loss=math.inf, num_examples=5, metrics={}),
    ]
    loss, metrics = aggregate_evaluate(reports, [])
    assert loss == 2.0
    assert metrics["num_nonfinite_loss"] == 2
    assert metrics["num_examples"] == 45
    loss, metrics = aggregate_evaluate(reports[1:], [])
    assert math.isnan(loss)
    assert metrics["num_nonfinite_loss"] == 2


def test_aggregate_evaluate_needs_reports_with_examples() -> None:
    with pytest.raises(AggregationFailed, match="no evaluation reports"):
        aggregate_evaluate([], [])
    with pytest.raises(InvalidArgument, match="num_examples"):
        aggregate_evaluate([EvaluateReport(node_id="a", loss=1.0, num_examples=0)], [])


def test_a_model_summed_on_several_threads_is_the_sequential_sum_bit_for_bit() -> None:
    # Shapes that split into several spans per tensor, with a ragged last span and block.
    rng = np.random.default_rng(5)
    shapes = [(3, 1_000_003), (17,), (2_500_001,)]
    parameters = [np.zeros(shape, np.float32) for shape in shapes]
    updates = [
        FitUpdate(
            node_id=f"n{k}",
            parameters=tuple(rng.standard_normal(shape).astype(np.float32) for shape in shapes),
            num_examples=int(rng.integers(1, 1000)),
        )
        for k in range(4)
    ]
    expected = [np.zeros(shape) for shape in shapes]
    for update in updates:
        for acc, tensor in zip(expected, update.parameters, strict=True):
            np.add(acc, tensor.astype(np.float64) * float(update.num_examples), out=acc)
    total = sum(u.num_examples for u in updates)
    mean = weighted_mean64(parameters, updates)
    assert mean.num_examples == total
    for got, want in zip(mean.arrays, expected, strict=True):
        assert got.shape == want.shape
        assert np.array_equal(got, want / total)
