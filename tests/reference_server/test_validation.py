import ml_dtypes
import numpy as np
import pytest

from pollen.errors import InvalidArgument, UpdateRejected
from reference_server.validation import (
    ValidationConfig,
    check_examples,
    check_metrics,
    validate_parameters,
)

GLOBAL: list[np.ndarray] = [np.zeros((2, 3), np.float32), np.zeros(4, np.int64)]
DEFAULT = ValidationConfig()


def test_matching_finite_update_passes() -> None:
    validate_parameters([np.ones((2, 3), np.float32), np.arange(4)], GLOBAL, DEFAULT)


@pytest.mark.parametrize(
    ("update", "field", "message"),
    [
        ([np.ones((2, 3), np.float32)], "parameters", "1 tensors"),
        ([np.ones((3, 2), np.float32), np.arange(4)], "parameters[0]", "shape"),
        ([np.ones((2, 3), np.float64), np.arange(4)], "parameters[0]", "dtype"),
        ([np.full((2, 3), np.nan, np.float32), np.arange(4)], "parameters[0]", "non-finite"),
        ([np.full((2, 3), -np.inf, np.float32), np.arange(4)], "parameters[0]", "non-finite"),
    ],
)
def test_bad_updates_are_rejected_with_the_place(
    update: list[np.ndarray], field: str, message: str
) -> None:
    with pytest.raises(UpdateRejected, match=message) as info:
        validate_parameters(update, GLOBAL, DEFAULT)
    assert info.value.field == field


def test_bfloat16_nan_is_caught() -> None:
    reference = [np.zeros(3, ml_dtypes.bfloat16)]
    bad = [np.array([1, np.nan, 2], ml_dtypes.bfloat16)]
    with pytest.raises(UpdateRejected, match="non-finite"):
        validate_parameters(bad, reference, DEFAULT)


def test_norm_bound_applies_to_the_distance_from_the_global_model() -> None:
    bounded = ValidationConfig(max_update_norm=5.0)
    near: list[np.ndarray] = [
        np.full((2, 3), 2.0, np.float32),
        np.zeros(4, np.int64),
    ]  # norm sqrt(24) < 5
    validate_parameters(near, GLOBAL, bounded)
    far: list[np.ndarray] = [
        np.full((2, 3), 3.0, np.float32),
        np.zeros(4, np.int64),
    ]  # norm sqrt(54) > 5
    with pytest.raises(UpdateRejected, match="norm"):
        validate_parameters(far, GLOBAL, bounded)


def test_example_counts_and_metrics() -> None:
    check_examples(1, DEFAULT)
    with pytest.raises(UpdateRejected):
        check_examples(0, DEFAULT)
    with pytest.raises(UpdateRejected):
        check_examples(11, ValidationConfig(max_num_examples=10))
    check_examples(0, DEFAULT, minimum=0)
    check_metrics({"loss": 0.5, "name": "x"}, field="m")
    with pytest.raises(UpdateRejected, match="'loss'"):
        check_metrics({"loss": float("nan")}, field="m")


def test_config_is_checked() -> None:
    with pytest.raises(InvalidArgument):
        ValidationConfig(max_num_examples=0)
    with pytest.raises(InvalidArgument):
        ValidationConfig(max_update_norm=-1.0)
