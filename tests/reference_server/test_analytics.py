import numpy as np
import pytest

from pollen.errors import UpdateRejected
from reference_server.analytics import QueryAnswer, reduce_answers, reduce_metrics, reduce_tensors

ANSWERS = [
    QueryAnswer(node_id="a", metrics={"count": 3, "age": 30.0, "max_age": 50}, num_examples=3,
                tensors=(np.array([1, 0, 2]),)),
    QueryAnswer(node_id="b", metrics={"count": 1, "age": 70.0, "max_age": 71}, num_examples=1,
                tensors=(np.array([0, 4, 0]),)),
]  # fmt: skip


def test_metric_reducers() -> None:
    out = reduce_metrics(
        ANSWERS, {"count": "sum", "age": "weighted_mean", "max_age": "max", "missing": "sum"}
    )
    assert out["count"] == 4
    assert isinstance(out["count"], int)
    assert out["age"] == pytest.approx((3 * 30 + 1 * 70) / 4)
    assert out["max_age"] == 71
    assert out["count.clients"] == 2
    assert "missing" not in out
    assert out["num_answers"] == 2
    assert out["num_examples"] == 4
    assert reduce_metrics(ANSWERS, {"age": "min"})["age"] == 30.0


def test_histograms_merge_exactly() -> None:
    (merged,) = reduce_tensors(ANSWERS, "sum")
    assert merged.tolist() == [1, 4, 2]
    assert merged.dtype == np.int64
    (low,) = reduce_tensors(ANSWERS, "min")
    assert low.tolist() == [0, 0, 0]
    assert reduce_answers(ANSWERS, {}, "max").tensors[0].tolist() == [1, 4, 2]


def test_mismatched_answers_are_refused() -> None:
    odd = QueryAnswer(node_id="c", metrics={"count": "x"}, tensors=(np.zeros(2),))
    with pytest.raises(UpdateRejected, match="not a number"):
        reduce_metrics([*ANSWERS, odd], {"count": "sum"})
    with pytest.raises(UpdateRejected, match="shapes"):
        reduce_tensors([*ANSWERS, odd], "sum")
    with pytest.raises(UpdateRejected, match="num_examples"):
        reduce_metrics([QueryAnswer(node_id="z", metrics={"m": 1.0})], {"m": "weighted_mean"})
