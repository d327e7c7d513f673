"""What every registered strategy promises the round engine, checked for all of them."""

from __future__ import annotations

import dataclasses
import gc
import io
import tracemalloc
import weakref
from collections.abc import Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np
import pytest

from pollen.errors import InvalidArgument
from pollen.values import check_config
from reference_server.strategies import STRATEGIES, Strategy, make_strategy
from reference_server.strategies.base import (
    AggregationFailed,
    FailedTask,
    FitUpdate,
    StrategyState,
    TaskOutcome,
)

CONFIGS: Mapping[str, Mapping[str, object]] = {
    "fedavg": {},
    "fedprox": {"proximal_mu": 0.01},
    "fedavgm": {"server_learning_rate": 0.5, "server_momentum": 0.9},
    "fedadagrad": {"eta": 0.05},
    "fedadam": {"eta": 0.05},
    "fedyogi": {"eta": 0.05},
    "fedmedian": {},
    "fedtrimmedavg": {"beta": 0.2},
    "krum": {"num_malicious": 1},
    "multikrum": {"num_malicious": 1, "num_selected": 3},
    "bulyan": {"num_malicious": 1},
    "qfedavg": {"q": 0.5, "learning_rate": 0.1},
}
NEEDS_ALL = {"fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"}
STREAMING = sorted(set(CONFIGS) - NEEDS_ALL)


def strategy(name: str) -> Strategy:
    return make_strategy(name, CONFIGS[name])


def model(dtype: object = np.float32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(100)
    return tuple(
        rng.normal(size=shape).astype(dtype)  # type: ignore[call-overload]
        for shape in [(3, 4), (5,), ()]
    )


def updates_for(parameters: Sequence[np.ndarray], count: int = 7, seed: int = 0) -> list[FitUpdate]:
    rng = np.random.default_rng(seed)
    return [
        FitUpdate(
            node_id=f"node-{k}",
            parameters=tuple(
                (p.astype(np.float64) + rng.normal(scale=0.1, size=p.shape)).astype(p.dtype)
                for p in parameters
            ),
            num_examples=int(rng.integers(1, 100)),
            metrics={"loss": float(rng.uniform(0.5, 2.0)), "accuracy": 0.5},
        )
        for k in range(count)
    ]


def test_every_registered_strategy_is_covered_here() -> None:
    assert set(CONFIGS) == set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_strategies_implement_the_protocol(name: str) -> None:
    built = strategy(name)
    assert isinstance(built, Strategy)
    assert built.name == name
    assert built.needs_all_updates is (name in NEEDS_ALL)
    assert isinstance(built.fit_config(1), dict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.float64])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dtype_and_shape_are_preserved(name: str, dtype: type) -> None:
    built = strategy(name)
    params = model(dtype)
    result = built.aggregate_fit(
        round=1,
        parameters=params,
        updates=updates_for(params),
        failures=[],
        state=built.initial_state(params),
    )
    assert [a.dtype for a in result.parameters] == [np.dtype(dtype)] * 3
    assert [a.shape for a in result.parameters] == [(3, 4), (5,), ()]
    assert all(np.all(np.isfinite(a.astype(np.float64))) for a in result.parameters)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_zero_updates_is_a_typed_error(name: str) -> None:
    built = strategy(name)
    params = model()
    with pytest.raises(AggregationFailed, match="no updates"):
        built.aggregate_fit(
            round=1, parameters=params, updates=[], failures=[], state=built.initial_state(params)
        )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_mismatched_shape_is_refused_not_broadcast(name: str) -> None:
    built = strategy(name)
    params = model()
    updates = updates_for(params)
    odd = tuple(
        np.broadcast_to(p, (2, *p.shape)).copy() if i == 1 else p for i, p in enumerate(params)
    )
    updates[3] = dataclasses.replace(updates[3], parameters=odd)
    with pytest.raises(InvalidArgument, match="tensor 1 of the update from node 'node-3'"):
        built.aggregate_fit(
            round=1,
            parameters=params,
            updates=updates,
            failures=[],
            state=built.initial_state(params),
        )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_metrics_are_wire_values_with_counts(name: str) -> None:
    built = strategy(name)
    params = model()
    failures = [
        FailedTask(node_id="gone", outcome=TaskOutcome.DROPPED),
        FailedTask(node_id="late", outcome=TaskOutcome.EXPIRED),
    ]
    result = built.aggregate_fit(
        round=1,
        parameters=params,
        updates=updates_for(params),
        failures=failures,
        state=built.initial_state(params),
    )
    assert check_config(result.metrics) == result.metrics
    assert result.metrics["num_updates"] == 7
    assert result.metrics["num_failures"] == 2
    assert result.metrics["num_failures_dropped"] == 1
    assert result.metrics["num_failures_expired"] == 1
    assert result.metrics["accuracy"] == pytest.approx(0.5)


def _frozen(state: StrategyState) -> dict[str, np.ndarray]:
    copies = {}
    for key, value in state.items():
        value.setflags(write=False)
        copies[key] = value.copy()
    return copies


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_in_state_out_without_mutation(name: str) -> None:
    built = strategy(name)
    params = model()
    for tensor in params:
        tensor.setflags(write=False)
    state = built.initial_state(params)
    before = _frozen(state)
    result = built.aggregate_fit(
        round=1, parameters=params, updates=updates_for(params), failures=[], state=state
    )
    assert set(result.state) == set(state)
    for key, value in state.items():
        assert value.tobytes() == before[key].tobytes()
        assert result.state[key].dtype == np.float64
        assert result.state[key].shape == value.shape
    np.testing.assert_array_equal(params[0], model()[0])


def _roundtrip(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    buffer.seek(0)
    with np.load(buffer) as loaded:
        return {key: loaded[key] for key in loaded.files}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resuming_from_persisted_state_is_bit_identical(name: str) -> None:
    def run(persist: bool) -> list[bytes]:
        built = strategy(name)
        params = model()
        state = built.initial_state(params)
        for round_number in range(1, 4):
            result = built.aggregate_fit(
                round=round_number,
                parameters=params,
                updates=updates_for(params, seed=round_number),
                failures=[],
                state=state,
            )
            params, state = result.parameters, result.state
            if persist:
                # What a restarted server reads back: named arrays, nothing else.
                state = _roundtrip(state)
                stored = _roundtrip({str(i): p for i, p in enumerate(params)})
                params = tuple(stored[str(i)] for i in range(len(params)))
                built = strategy(name)
        return [p.tobytes() for p in params]

    assert run(persist=True) == run(persist=False)


STATEFUL = {"fedavgm", "fedadagrad", "fedadam", "fedyogi"}
TAMPERING = [
    (name, tamper)
    for name in sorted(CONFIGS)
    for tamper in (["missing", "extra", "shape", "dtype"] if name in STATEFUL else ["extra"])
]


@pytest.mark.parametrize(("name", "tamper"), TAMPERING)
def test_a_state_that_does_not_fit_is_refused(name: str, tamper: str) -> None:
    built = strategy(name)
    params = model()
    state = dict(built.initial_state(params))
    assert bool(state) is (name in STATEFUL)
    if tamper == "extra":
        state["stray"] = np.zeros(1)
    first = sorted(state)[0]
    if tamper == "missing":
        del state[first]
    elif tamper == "shape":
        state[first] = np.zeros((7, 7))
    elif tamper == "dtype":
        state[first] = state[first].astype(np.float32)
    with pytest.raises(InvalidArgument, match="state"):
        built.aggregate_fit(
            round=1, parameters=params, updates=updates_for(params), failures=[], state=state
        )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_inputs_same_bits(name: str) -> None:
    params = model()
    outputs = []
    for _ in range(2):
        built = strategy(name)
        result = built.aggregate_fit(
            round=1,
            parameters=params,
            updates=updates_for(params),
            failures=[],
            state=built.initial_state(params),
        )
        outputs.append([a.tobytes() for a in result.parameters])
    assert outputs[0] == outputs[1]


# --- streaming -------------------------------------------------------------------------


class Once:
    def __init__(self, items: Sequence[FitUpdate]) -> None:
        self._items = items
        self.used = False

    def __iter__(self) -> Iterator[FitUpdate]:
        if self.used:
            raise AssertionError("updates were iterated twice")
        self.used = True
        return iter(self._items)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_updates_are_read_in_one_pass(name: str) -> None:
    built = strategy(name)
    params = model()
    updates = Once(updates_for(params))
    built.aggregate_fit(
        round=1, parameters=params, updates=updates, failures=[], state=built.initial_state(params)
    )
    assert updates.used


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_strategies_keep_no_update_alive(name: str) -> None:
    built = strategy(name)
    params = model()
    produced: list[weakref.ref[np.ndarray]] = []
    source = updates_for(params, count=6)

    def lazily() -> Iterator[FitUpdate]:
        for k in range(6):
            gc.collect()
            alive = [i for i, ref in enumerate(produced[:-1]) if ref() is not None]
            assert not alive, f"updates {alive} are still referenced"
            fresh = tuple(p.copy() for p in source[k].parameters)
            produced.append(weakref.ref(fresh[0]))
            yield dataclasses.replace(source[k], parameters=fresh)
            del fresh

    built.aggregate_fit(
        round=1, parameters=params, updates=lazily(), failures=[], state=built.initial_state(params)
    )
    assert len(produced) == 6


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_memory_does_not_grow_with_the_number_of_updates(name: str) -> None:
    built = strategy(name)
    size = 100_000
    params = (np.zeros(size, np.float32),)
    model_bytes = size * 4
    state = built.initial_state(params)
    rng = np.random.default_rng(0)

    def lazily(count: int) -> Iterator[FitUpdate]:
        for k in range(count):
            yield FitUpdate(
                node_id=str(k),
                parameters=(rng.normal(size=size).astype(np.float32),),
                num_examples=k + 1,
                metrics={"loss": 1.0},
            )

    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            built.aggregate_fit(
                round=1, parameters=params, updates=lazily(count), failures=[], state=state
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, many = peak(4), peak(40)
    # Holding the updates would add 36 model sizes; a constant amount of float64 work
    # (accumulator, state, temporaries) is the same for both.
    assert many < few + model_bytes, f"{few / model_bytes:.1f} -> {many / model_bytes:.1f}"
    assert few < 20 * model_bytes
