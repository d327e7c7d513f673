from typing import Any

import ml_dtypes
import numpy as np
import pytest

from pollen._generated.pollen.v1 import tensor_pb2
from pollen.dtypes import FLOAT_DTYPES, Dtype
from pollen.errors import DtypeUnsupported

# The spec's table (08-tensors.md): wire number, itemsize, numpy dtype.
SPEC = {
    "BOOL": (1, 1, np.dtype(np.bool_)),
    "INT8": (2, 1, np.dtype("<i1")),
    "INT16": (3, 2, np.dtype("<i2")),
    "INT32": (4, 4, np.dtype("<i4")),
    "INT64": (5, 8, np.dtype("<i8")),
    "UINT8": (6, 1, np.dtype("<u1")),
    "UINT16": (7, 2, np.dtype("<u2")),
    "UINT32": (8, 4, np.dtype("<u4")),
    "UINT64": (9, 8, np.dtype("<u8")),
    "FLOAT16": (10, 2, np.dtype("<f2")),
    "BFLOAT16": (11, 2, np.dtype(ml_dtypes.bfloat16)),
    "FLOAT32": (12, 4, np.dtype("<f4")),
    "FLOAT64": (13, 8, np.dtype("<f8")),
}


def test_members_match_the_spec_table() -> None:
    assert [d.name for d in Dtype] == list(SPEC)
    for dtype in Dtype:
        number, itemsize, numpy_dtype = SPEC[dtype.name]
        assert (dtype.value, dtype.itemsize, dtype.numpy) == (number, itemsize, numpy_dtype)
        assert dtype.numpy.byteorder in "<|="


def test_members_match_the_wire_enum() -> None:
    wire = {
        name.removeprefix("DTYPE_"): number
        for name, number in tensor_pb2.Dtype.items()
        if number != 0
    }
    assert wire == {d.name: d.value for d in Dtype}


def test_is_float() -> None:
    floats = {Dtype.FLOAT16, Dtype.BFLOAT16, Dtype.FLOAT32, Dtype.FLOAT64}
    assert {d for d in Dtype if d.is_float} == floats == FLOAT_DTYPES


@pytest.mark.parametrize("dtype", list(Dtype))
def test_from_wire_and_from_numpy_invert_the_mapping(dtype: Dtype) -> None:
    assert Dtype.from_wire(dtype.value) is dtype
    assert Dtype.from_numpy(dtype.numpy) is dtype


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (np.dtype(">f4"), Dtype.FLOAT32),
        (np.dtype(">i8"), Dtype.INT64),
        (np.dtype(">u2"), Dtype.UINT16),
        (np.float64, Dtype.FLOAT64),
        ("int16", Dtype.INT16),
        (np.intc, Dtype.INT32),
        (np.longlong, Dtype.INT64),
        (bool, Dtype.BOOL),
        (ml_dtypes.bfloat16, Dtype.BFLOAT16),
    ],
)
def test_from_numpy_ignores_byte_order_and_spelling(given: Any, expected: Dtype) -> None:
    assert Dtype.from_numpy(given) is expected


@pytest.mark.parametrize(
    "given",
    [
        np.complex64,
        np.complex128,
        object,
        "U3",
        "S4",
        "M8[s]",
        "m8[s]",
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e5m2,
        np.dtype([("a", "<f4")]),
        np.dtype(("<f4", (2,))),
        np.dtype(("<i4", [("lo", "<i2"), ("hi", "<i2")])),
        "V2",
        "not a dtype",
    ],
)
def test_from_numpy_refuses_what_the_wire_cannot_carry(given: Any) -> None:
    with pytest.raises(DtypeUnsupported) as info:
        Dtype.from_numpy(given)
    assert info.value.field == "dtype"


def test_from_numpy_refuses_extended_precision() -> None:
    if np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("long double is binary64 on this platform")
    with pytest.raises(DtypeUnsupported):
        Dtype.from_numpy(np.longdouble)


@pytest.mark.parametrize("number", [0, 14, 99, -1, 2**31, True, 12.0, "12", None])
def test_from_wire_refuses_unspecified_unknown_and_non_integers(number: Any) -> None:
    with pytest.raises(DtypeUnsupported) as info:
        Dtype.from_wire(number)
    assert info.value.field == "dtype"
    if number == 0 and not isinstance(number, bool):
        assert "UNSPECIFIED" in info.value.message
