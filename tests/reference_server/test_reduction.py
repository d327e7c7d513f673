"""What a driver does with one result: the checks of check_reply per result kind."""

import math

import numpy as np
import pytest

from pollen.errors import UpdateRejected
from pollen.messages import EvaluateReply, QueryReply
from reference_server.reduction import check_reply
from reference_server.validation import ValidationConfig

QUERY_SHAPES = ValidationConfig(query_shapes=((4,),))


def _no_model() -> list[np.ndarray]:
    raise AssertionError("only fit results are compared with the global model")


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf, 0.0, -1.5e308])
def test_any_evaluate_loss_is_accepted(loss: float) -> None:
    reply = EvaluateReply(loss=loss, num_examples=3)
    check_reply(reply, [], reference=_no_model, validation=ValidationConfig())


@pytest.mark.parametrize("count", [0, -1])
def test_an_evaluate_result_needs_examples(count: int) -> None:
    reply = EvaluateReply(loss=1.0, num_examples=count)
    with pytest.raises(UpdateRejected) as caught:
        check_reply(reply, [], reference=_no_model, validation=ValidationConfig())
    assert caught.value.field == "result.evaluate.num_examples"


def test_a_query_answer_with_the_expected_shapes_passes() -> None:
    reply = QueryReply(metrics={"n": 2}, num_examples=0)
    check_reply(reply, [np.ones(4)], reference=_no_model, validation=QUERY_SHAPES)
    # Without expected shapes only finiteness is checked.
    check_reply(reply, [np.ones(7), np.ones(1)], reference=_no_model, validation=ValidationConfig())


@pytest.mark.parametrize(
    ("reply", "arrays", "field"),
    [
        (QueryReply(num_examples=-1), [np.ones(4)], "result.query.num_examples"),
        (QueryReply(num_examples=1), [np.ones(5)], "result.query.tensors[0]"),
        (QueryReply(num_examples=1), [np.ones(4), np.ones(4)], "result.query.tensors"),
        (QueryReply(num_examples=1), [], "result.query.tensors"),
        (QueryReply(num_examples=1), [np.array([0, 1, math.nan, 3])], "result.query.tensors[0]"),
        (
            QueryReply(metrics={"mean": math.inf}, num_examples=1),
            [np.ones(4)],
            'result.query.metrics["mean"]',
        ),
    ],
)
def test_a_bad_query_answer_is_rejected_with_its_field(
    reply: QueryReply, arrays: list[np.ndarray], field: str
) -> None:
    with pytest.raises(UpdateRejected) as caught:
        check_reply(reply, arrays, reference=_no_model, validation=QUERY_SHAPES)
    assert caught.value.field == field
