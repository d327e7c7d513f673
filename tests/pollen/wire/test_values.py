import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen import wire
from pollen._generated.pollen.v1 import task_pb2, value_pb2
from pollen.errors import (
    InvalidArgument,
    LimitExceeded,
)
from pollen.values import INT64_MAX, INT64_MIN

WIRE_VALUES = st.one_of(
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(),
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


@given(WIRE_VALUES)
def test_values_round_trip_through_bytes(value: bool | int | float | str | bytes) -> None:
    data = wire.value_to_proto(value).SerializeToString()
    assert _same(wire.value_from_proto_bytes(data), value)


@pytest.mark.parametrize(
    "value",
    [INT64_MIN, INT64_MAX, float("nan"), -0.0, float("inf"), "\x00\U0001f41d", b"\x00\x00", True],
)
def test_value_extremes(value: bool | int | float | str | bytes) -> None:
    msg = value_pb2.Value()
    msg.ParseFromString(wire.value_to_proto(value).SerializeToString())
    assert _same(wire.value_from_proto(msg), value)


def test_nan_payload_survives() -> None:
    nan = struct.unpack("<d", struct.pack("<Q", 0xFFF0000000000001))[0]
    back = wire.value_from_proto_bytes(wire.value_to_proto(nan).SerializeToString())
    assert struct.pack("<d", back) == struct.pack("<d", nan)


def test_empty_value_and_bad_utf8_are_invalid() -> None:
    with pytest.raises(InvalidArgument, match="exactly one"):
        wire.value_from_proto_bytes(b"")
    # field 4 (string_value), length 1, byte 0xff: not UTF-8.
    with pytest.raises(InvalidArgument, match="malformed"):
        wire.value_from_proto_bytes(b"\x22\x01\xff")


def test_config_maps_round_trip_and_enforce_limits() -> None:
    config = {"lr": 0.01, "epochs": 3, "name": "x", "flag": False, "blob": b"\x00"}
    msg = task_pb2.FitInstruction()
    wire.config_to_proto(config, msg.config)
    parsed = task_pb2.FitInstruction.FromString(msg.SerializeToString())
    assert wire.config_from_proto(parsed.config, max_entries=5) == config
    with pytest.raises(LimitExceeded):
        wire.config_from_proto(parsed.config, max_entries=4)
    with pytest.raises(InvalidArgument):
        wire.config_to_proto({"": 1}, msg.config)
