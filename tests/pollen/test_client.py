from collections.abc import Sequence

import numpy as np
import pytest

from pollen.client import Client, EvaluateResult, FitResult, QueryResult
from pollen.errors import InvalidArgument, UnsupportedInstruction
from pollen.values import Config


class Trainer(Client):
    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        return FitResult(parameters=[p + 1 for p in parameters], num_examples=3)


def test_unimplemented_instructions_raise_unsupported() -> None:
    client = Client()
    with pytest.raises(UnsupportedInstruction, match="does not implement fit"):
        client.fit([], {})
    with pytest.raises(UnsupportedInstruction):
        client.query({}, [])
    assert client.get_properties({}) == {}


def test_implements_reports_overrides() -> None:
    trainer = Trainer()
    assert trainer.implements("fit")
    assert not trainer.implements("evaluate")
    with pytest.raises(ValueError, match="unknown"):
        trainer.implements("train")
    result = trainer.fit([np.zeros(2)], {})
    np.testing.assert_array_equal(result.parameters[0], np.ones(2))


@pytest.mark.parametrize("num_examples", [0, -1, True, 2.0, "3"])
def test_fit_result_requires_positive_int_examples(num_examples: object) -> None:
    with pytest.raises(InvalidArgument, match="num_examples"):
        FitResult(parameters=[], num_examples=num_examples)  # type: ignore[arg-type]


def test_results_validate_metrics_and_arrays() -> None:
    with pytest.raises(InvalidArgument, match="use bool, int, float, str or bytes"):
        EvaluateResult(loss=0.5, num_examples=1, metrics={"bad": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="sequence of arrays"):
        FitResult(parameters=np.zeros(3), num_examples=1)  # type: ignore[arg-type]
    loss: object = np.float32(0.25)
    result = EvaluateResult(loss=loss, num_examples=2, metrics={"acc": np.float64(0.5)})  # type: ignore[arg-type]
    assert type(result.loss) is float
    assert result.metrics == {"acc": 0.5}
    query = QueryResult(tensors=[[1, 2]], num_examples=0)  # type: ignore[list-item]
    assert isinstance(query.tensors[0], np.ndarray)
    with pytest.raises(InvalidArgument):
        EvaluateResult(loss="low", num_examples=1)  # type: ignore[arg-type]
