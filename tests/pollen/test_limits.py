import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.dtypes import Dtype
from pollen.errors import LimitExceeded, PollenError, ShapeInvalid
from pollen.limits import INT64_MAX, WIRE_FIELDS, Limits, check_shape

DEFAULTS = {
    "max_message_bytes": 4194304,
    "max_tensor_bytes": 17179869184,
    "max_tensors": 65536,
    "max_rank": 32,
    "max_blob_bytes": 34359738368,
    "max_map_entries": 1024,
}


def test_defaults_are_the_specs() -> None:
    limits = Limits()
    assert limits.to_wire() == DEFAULTS
    assert (limits.max_name_bytes, limits.max_key_bytes) == (256, 256)


def test_wire_fields_are_the_messages() -> None:
    message_fields = [f.name for f in federation_service_pb2.Limits.DESCRIPTOR.fields]
    assert list(WIRE_FIELDS) == message_fields


def test_zero_on_the_wire_means_the_default() -> None:
    assert Limits.from_wire(dict.fromkeys(WIRE_FIELDS, 0)) == Limits()
    received = Limits.from_wire({"max_rank": 4, "max_tensor_bytes": 0, "max_tensors": 7})
    assert (received.max_rank, received.max_tensors) == (4, 7)
    assert received.max_tensor_bytes == DEFAULTS["max_tensor_bytes"]


def test_merged_keeps_the_base_for_zeros() -> None:
    base = Limits(max_rank=3, max_tensors=9)
    merged = base.merged({"max_rank": 0, "max_tensors": 2})
    assert (merged.max_rank, merged.max_tensors) == (3, 2)
    assert base.max_tensors == 9, "merged returns a copy"


def test_merged_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="max_name_bytes"):
        Limits().merged({"max_name_bytes": 3})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rank": 0},
        {"max_tensors": -1},
        {"max_tensors": 2**32},
        {"max_tensor_bytes": 2**64},
        {"max_name_bytes": 2**63},
    ],
)
def test_limits_must_be_in_range(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Limits(**kwargs)


@pytest.mark.parametrize("value", [True, 1.0, "3", None])
def test_limits_must_be_ints(value: Any) -> None:
    with pytest.raises(TypeError):
        Limits(max_rank=value)


def test_limits_at_the_wire_maxima_are_accepted() -> None:
    limits = Limits(max_tensors=2**32 - 1, max_tensor_bytes=2**64 - 1)
    assert limits.to_wire()["max_tensors"] == 2**32 - 1


# --- check_shape ----------------------------------------------------------------------


def test_scalar_and_plain_shapes() -> None:
    assert check_shape((), Dtype.FLOAT32, Limits()) == 1
    assert check_shape((2, 3, 4), Dtype.FLOAT64, Limits()) == 24
    assert check_shape([np.int64(5), np.uint8(2)], Dtype.INT8, Limits()) == 10


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((0,), Dtype.FLOAT32),
        ((3, 0, 5), Dtype.FLOAT64),
        ((0, 2**62, 2**62), Dtype.FLOAT32),
        ((2**62, 4, 0), Dtype.INT64),
        ((INT64_MAX,) * 31 + (0,), Dtype.FLOAT64),
    ],
)
def test_a_zero_extent_makes_an_empty_tensor_whatever_the_others(
    shape: tuple[int, ...], dtype: Dtype
) -> None:
    assert check_shape(shape, dtype, Limits()) == 0


def test_rank_limit_is_inclusive() -> None:
    assert check_shape((1,) * 32, Dtype.UINT8, Limits()) == 1
    with pytest.raises(LimitExceeded) as info:
        check_shape((1,) * 33, Dtype.UINT8, Limits())
    assert info.value.field == "shape"
    with pytest.raises(LimitExceeded):
        check_shape((1, 1, 1), Dtype.UINT8, Limits(max_rank=2))


def test_rank_is_checked_before_extents() -> None:
    with pytest.raises(LimitExceeded):
        check_shape((1,) * 32 + (-1,), Dtype.FLOAT32, Limits())


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((-1,), Dtype.FLOAT32),
        ((-1, 0), Dtype.FLOAT32),  # negative even next to a zero (spec example)
        ((0, -1), Dtype.FLOAT32),
        ((-2, -3), Dtype.FLOAT32),  # the product is positive, the extents are not
        ((-(2**63),), Dtype.UINT8),
        ((2**64,), Dtype.UINT8),  # not an int64
        ((0, 2**63), Dtype.UINT8),  # not an int64, even next to a zero
        ((2**62, 4), Dtype.INT64),  # numel 2^64: a wrapping product would give 0
        ((2**32, 2**32), Dtype.UINT8),
        ((3, 2**62), Dtype.FLOAT32),
        ((2**61,), Dtype.FLOAT64),  # numel fits, numel x 8 = 2^64 does not
        ((2**60,), Dtype.FLOAT64),  # numel x 8 = 2^63, one over
        ((INT64_MAX,) * 32, Dtype.BOOL),
    ],
)
def test_shape_invalid(shape: tuple[int, ...], dtype: Dtype) -> None:
    with pytest.raises(ShapeInvalid) as info:
        check_shape(shape, dtype, Limits(max_tensor_bytes=2**64 - 1))
    assert info.value.field == "shape"


@pytest.mark.parametrize("extent", [1.0, "2", None, True, np.float32(2)])
def test_non_integer_extents_are_shape_invalid(extent: Any) -> None:
    with pytest.raises(ShapeInvalid, match="not an integer"):
        check_shape((2, extent), Dtype.FLOAT32, Limits())


def test_shape_is_checked_before_the_size_limit() -> None:
    with pytest.raises(ShapeInvalid):
        check_shape((2**61,), Dtype.FLOAT64, Limits(max_tensor_bytes=8))


def test_largest_valid_shape_passes_step_5_and_fails_step_6() -> None:
    with pytest.raises(LimitExceeded):
        check_shape((INT64_MAX,), Dtype.UINT8, Limits())
    assert check_shape((INT64_MAX,), Dtype.UINT8, Limits(max_tensor_bytes=INT64_MAX)) == INT64_MAX


def test_size_limit_is_inclusive() -> None:
    assert check_shape((2**32,), Dtype.FLOAT32, Limits()) == 2**32  # exactly 2^34 bytes
    with pytest.raises(LimitExceeded) as info:
        check_shape((2**32 + 1,), Dtype.FLOAT32, Limits())
    assert info.value.field == "shape"
    assert check_shape((4,), Dtype.FLOAT32, Limits(max_tensor_bytes=16)) == 4
    with pytest.raises(LimitExceeded):
        check_shape((5,), Dtype.FLOAT32, Limits(max_tensor_bytes=16))


def _expected(shape: list[int], itemsize: int, max_bytes: int) -> int | type[PollenError]:
    """The rule of steps 5 and 6, written out with Python's unbounded integers."""
    if any(e < 0 or e > INT64_MAX for e in shape):
        return ShapeInvalid
    numel = math.prod(shape)
    if numel == 0:
        return 0
    if numel > INT64_MAX or numel * itemsize > INT64_MAX:
        return ShapeInvalid
    if numel * itemsize > max_bytes:
        return LimitExceeded
    return numel


EXTENTS = st.one_of(
    st.integers(min_value=-3, max_value=5),
    st.sampled_from([2**31, 2**32, 2**32 + 1, 2**61, 2**62, 2**63 - 1, 2**63, -(2**63)]),
    st.integers(min_value=-(2**64), max_value=2**64),
)


@given(
    shape=st.lists(EXTENTS, max_size=8),
    dtype=st.sampled_from(list(Dtype)),
    max_bytes=st.sampled_from([1, 16, 2**34, INT64_MAX, 2**64 - 1]),
)
def test_check_shape_matches_the_rule(shape: list[int], dtype: Dtype, max_bytes: int) -> None:
    expected = _expected(shape, dtype.itemsize, max_bytes)
    limits = Limits(max_tensor_bytes=max_bytes)
    if isinstance(expected, int):
        assert check_shape(shape, dtype, limits) == expected
    else:
        with pytest.raises(expected):
            check_shape(shape, dtype, limits)
