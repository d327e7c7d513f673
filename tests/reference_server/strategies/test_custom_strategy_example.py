"""The custom strategy of examples/custom_strategy/ computes what its README promises."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pollen.errors import InvalidArgument
from reference_server.strategies import FedAvg, Strategy
from reference_server.strategies.base import FailedTask, FitUpdate, TaskOutcome

EXAMPLE = (
    Path(__file__).resolve().parents[3] / "examples" / "custom_strategy" / "custom_strategy.py"
)


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_strategy_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while building the class.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load()


def clipped(max_norm: float) -> Any:
    return example.ClippedFedAvg(max_norm=max_norm)


def update(node: str, values: Sequence[float], count: int, **metrics: float) -> FitUpdate:
    return FitUpdate(
        node_id=node,
        parameters=(np.array(values, np.float64),),
        num_examples=count,
        metrics=metrics,
    )


def test_it_is_a_strategy() -> None:
    strategy = clipped(1.0)
    assert isinstance(strategy, Strategy)
    assert strategy.name == "clippedfedavg"
    assert strategy.needs_all_updates is False
    assert strategy.initial_state([np.zeros(2)]) == {}


def test_only_the_far_update_is_clipped() -> None:
    model = (np.zeros(2),)
    # a is 5 away and is pulled in to distance 2: [1.2, 1.6]; b is 1 away and stays.
    updates = [update("a", [3.0, 4.0], 1, loss=1.0), update("b", [0.6, 0.8], 3, loss=2.0)]
    failures = [FailedTask(node_id="c", outcome=TaskOutcome.FAILED)]
    result = clipped(2.0).aggregate_fit(
        round=1, parameters=model, updates=updates, failures=failures, state={}
    )
    # (1 * [1.2, 1.6] + 3 * [0.6, 0.8]) / 4
    np.testing.assert_allclose(result.parameters[0], [0.75, 1.0], rtol=1e-15)
    assert result.metrics["num_clipped"] == 1
    assert result.metrics["num_updates"] == 2
    assert result.metrics["loss"] == (1.0 * 1 + 2.0 * 3) / 4
    assert result.metrics["num_failures_failed"] == 1
    assert result.state == {}


def test_the_distance_spans_all_tensors() -> None:
    model = (np.zeros(1), np.zeros(1))
    # 3 in one tensor and 4 in the other: distance 5, clipped to 1 -> [0.6], [0.8].
    far = FitUpdate(node_id="a", parameters=(np.array([3.0]), np.array([4.0])), num_examples=2)
    result = clipped(1.0).aggregate_fit(
        round=1, parameters=model, updates=[far], failures=[], state={}
    )
    np.testing.assert_allclose([result.parameters[0][0], result.parameters[1][0]], [0.6, 0.8])


def test_with_a_loose_bound_it_is_fedavg() -> None:
    rng = np.random.default_rng(0)
    model = (rng.normal(size=10).astype(np.float32),)
    updates = [
        FitUpdate(
            node_id=str(k),
            parameters=((model[0] + rng.normal(size=10)).astype(np.float32),),
            num_examples=k + 1,
        )
        for k in range(5)
    ]
    ours = clipped(1e9).aggregate_fit(
        round=1, parameters=model, updates=updates, failures=[], state={}
    )
    plain = FedAvg().aggregate_fit(
        round=1, parameters=model, updates=updates, failures=[], state={}
    )
    assert ours.parameters[0].dtype == np.float32
    assert ours.parameters[0].tobytes() == plain.parameters[0].tobytes()
    assert ours.metrics["num_clipped"] == 0


def test_it_reads_the_updates_once() -> None:
    reads = []

    def once() -> Iterator[FitUpdate]:
        reads.append(1)
        yield update("a", [1.0], 1)
        yield update("b", [3.0], 1)

    source = once()
    result = clipped(10.0).aggregate_fit(
        round=1, parameters=(np.zeros(1),), updates=source, failures=[], state={}
    )
    assert result.parameters[0].tolist() == [2.0]
    assert reads == [1]


def test_the_scaled_attack_of_the_demo_is_bounded() -> None:
    model = (np.zeros(3, np.float32),)
    evil = update("evil", [20.0, 10.0, 20.0], 10)
    result = clipped(0.5).aggregate_fit(
        round=1, parameters=model, updates=[evil], failures=[], state={}
    )
    assert np.linalg.norm(result.parameters[0]) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), "1", True])
def test_max_norm_is_validated(value: object) -> None:
    with pytest.raises(InvalidArgument, match="max_norm must be a number > 0"):
        clipped(value)  # type: ignore[arg-type]


def test_the_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    example.main()
    out = capsys.readouterr().out
    assert "1 clipped" in out
