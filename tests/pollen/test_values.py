import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen.errors import InvalidArgument, LimitExceeded
from pollen.values import INT64_MAX, INT64_MIN, check_config, check_key, check_value


def test_bool_is_not_taken_for_an_int() -> None:
    assert check_value(True) is True
    assert type(check_value(np.bool_(False))) is bool


@pytest.mark.parametrize("number", [INT64_MIN, -1, 0, 1, INT64_MAX])
def test_int64_range_is_accepted(number: int) -> None:
    assert check_value(number) == number


@pytest.mark.parametrize("number", [INT64_MIN - 1, INT64_MAX + 1, 1 << 100])
def test_ints_outside_int64_are_refused(number: int) -> None:
    with pytest.raises(InvalidArgument, match="int64"):
        check_value(number)


def test_numpy_scalars_convert_exactly() -> None:
    value = check_value(np.float32(0.1))
    assert type(value) is float
    assert value == float(np.float32(0.1))
    assert check_value(np.int64(INT64_MIN)) == INT64_MIN
    assert check_value(np.uint8(255)) == 255


def test_floats_keep_their_bits() -> None:
    nan = struct.unpack("<d", struct.pack("<Q", 0x7FF4000000000001))[0]
    kept = check_value(nan)
    assert isinstance(kept, float)
    assert struct.pack("<d", kept) == struct.pack("<d", nan)
    negative_zero = check_value(-0.0)
    assert isinstance(negative_zero, float)
    assert math.copysign(1.0, negative_zero) == -1.0


def test_text_and_bytes() -> None:
    assert check_value("héllo \U0001f41d\x00") == "héllo \U0001f41d\x00"
    assert check_value(bytearray(b"\x00a\x00")) == b"\x00a\x00"
    with pytest.raises(InvalidArgument, match="Unicode"):
        check_value("\ud800")


@pytest.mark.parametrize("bad", [None, [1], {"a": 1}, 1j, object()])
def test_other_types_are_refused_with_a_clear_message(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="use bool, int, float, str or bytes"):
        check_value(bad, field='config["x"]')


@pytest.mark.parametrize("key", ["", "k" * 257, "é" * 129, 5])
def test_bad_keys(key: object) -> None:
    with pytest.raises(InvalidArgument):
        check_key(key)


def test_key_length_counts_utf8_bytes() -> None:
    assert check_key("é" * 128) == "é" * 128


def test_config_entry_limit() -> None:
    assert check_config({f"k{i}": i for i in range(4)}, max_entries=4) == {
        f"k{i}": i for i in range(4)
    }
    with pytest.raises(LimitExceeded):
        check_config({f"k{i}": i for i in range(5)}, max_entries=4)
    assert check_config(None) == {}


@given(
    st.one_of(
        st.booleans(),
        st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
        st.floats(allow_nan=True),
        st.text(),
        st.binary(),
    )
)
def test_check_value_is_identity_on_wire_types(value: bool | int | float | str | bytes) -> None:
    checked = check_value(value)
    assert type(checked) is type(value)
    if isinstance(value, float):
        assert isinstance(checked, float)
        assert struct.pack("<d", checked) == struct.pack("<d", value)
    else:
        assert checked == value
