"""The int8 codec against a plain-Python transcription of the spec's formulas."""

import math
import struct
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen.codecs.int8 import INT8
from pollen.dtypes import Dtype
from pollen.errors import CodecDataInvalid, InvalidArgument, TensorSizeMismatch, TensorValueInvalid

FLOATS = [Dtype.FLOAT16, Dtype.BFLOAT16, Dtype.FLOAT32, Dtype.FLOAT64]

# --- references -------------------------------------------------------------------------


def encode_reference(values: list[float]) -> bytes:
    """PLN-COD-026 line by line; Python floats are binary64 and round() is ties-to-even."""
    lo = min([0.0, *values])  # min(0, min(x)), and 0 for no values
    hi = max([0.0, *values])
    scale = 1.0 if hi == lo else (hi - lo) / 255
    zero_point = min(max(-128 - round(lo / scale), -128), 127)
    q = [min(max(round(x / scale) + zero_point, -128), 127) for x in values]
    return struct.pack("<db", scale, zero_point) + struct.pack(f"<{len(q)}b", *q)


def _bfloat16_bits(y: float) -> int:
    """Round a finite or infinite binary64 to bfloat16 bits with Fractions (ties to even)."""
    sign = 0x8000 if math.copysign(1.0, y) < 0 else 0
    if math.isinf(y):
        return sign | 0x7F80
    a = Fraction(abs(y))
    if a == 0:
        return sign
    e = a.numerator.bit_length() - a.denominator.bit_length()
    e = max(e - 1 if Fraction(2) ** e > a else e, -126)
    ulp = Fraction(2) ** (e - 7)
    n, rest = divmod(a, ulp)
    if rest > ulp / 2 or (rest == ulp / 2 and n % 2 == 1):
        n += 1
    if n < 128:
        return sign | int(n)
    if n == 256:
        n, e = 128, e + 1
    return sign | 0x7F80 if e > 127 else sign | ((e + 127) << 7) | (int(n) - 128)


def element_reference(y: float, dtype: Dtype) -> int:
    """Bits of binary64 y rounded once to `dtype` (struct's formats round correctly)."""
    if dtype is Dtype.FLOAT64:
        return int.from_bytes(struct.pack("<d", y), "little")
    if dtype is Dtype.BFLOAT16:
        return _bfloat16_bits(y)
    fmt, inf = ("<f", 0x7F800000) if dtype is Dtype.FLOAT32 else ("<e", 0x7C00)
    try:
        return int.from_bytes(struct.pack(fmt, y), "little")
    except OverflowError:
        return inf | (1 << (8 * struct.calcsize(fmt) - 1) if y < 0 else 0)


def decode_reference(payload: bytes, dtype: Dtype) -> list[int]:
    scale, zero_point = struct.unpack_from("<db", payload)
    q = struct.unpack_from(f"<{len(payload) - 9}b", payload, 9)
    return [element_reference((qi - zero_point) * scale, dtype) for qi in q]


def as_dtype(values: list[float], dtype: Dtype) -> npt.NDArray[Any]:
    return np.array(values, dtype=np.float64).astype(dtype.numpy)


def bits(array: npt.NDArray[Any]) -> list[int]:
    return [int(b) for b in array.reshape(-1).view(f"<u{array.dtype.itemsize}")]


# --- examples from the spec -------------------------------------------------------------

SPEC_PAYLOAD = bytes.fromhex("181818181818883f" + "d5" + "80d5ff7f")


@pytest.mark.parametrize("dtype", FLOATS)
def test_spec_example_encodes_identically_from_every_float_dtype(dtype: Dtype) -> None:
    assert bytes(INT8.encode(as_dtype([-1.0, 0.0, 0.5, 2.0], dtype))) == SPEC_PAYLOAD


def test_spec_example_decodes_to_the_spec_values() -> None:
    decoded = INT8.decode(SPEC_PAYLOAD, Dtype.FLOAT32, (4,), 4)
    assert decoded.dtype == np.dtype("<f4")
    assert bits(decoded) == [0xBF800000, 0x00000000, 0x3EFCFCFD, 0x40000000]


@pytest.mark.parametrize(
    ("values", "payload"),
    [
        ([0.0, 0.0], "000000000000f03f808080"),  # hi == lo: scale 1.0, zero_point -128
        ([], "000000000000f03f80"),
        ([-0.0, 0.0], "000000000000f03f808080"),
        ([1.0, 2.0, 3.0, 4.0], "101010101010903f80" + "c0003f7f"),  # lo = 0
    ],
    ids=["all-zero", "empty", "negative-zero", "all-positive"],
)
def test_edge_examples(values: list[float], payload: str) -> None:
    encoded = bytes(INT8.encode(np.array(values, dtype=np.float32)))
    assert encoded.hex() == payload
    assert encoded == encode_reference(values)


def test_all_negative_values_put_zero_point_at_the_top() -> None:
    encoded = bytes(INT8.encode(np.array([-1.0, -2.0, -3.0])))
    assert encoded == encode_reference([-1.0, -2.0, -3.0])
    assert struct.unpack("<b", encoded[8:9])[0] == 127  # hi = 0


def test_ties_round_to_even_and_results_clamp() -> None:
    values = [-100.0, 155.0, 0.5, 1.5, 2.5, -0.5, -1.5]  # scale exactly 1.0
    encoded = bytes(INT8.encode(np.array(values)))
    assert struct.unpack_from("<d", encoded)[0] == 1.0
    assert list(struct.unpack("<7b", encoded[9:])) == [-128, 127, -28, -26, -26, -28, -30]
    clamped = bytes(INT8.encode(np.array([-1.5, 253.5, 0.0])))
    assert struct.unpack("<b", clamped[8:9])[0] == -126
    assert list(struct.unpack("<3b", clamped[9:])) == [-128, 127, -126]


def test_subnormal_scale_is_kept() -> None:
    encoded = bytes(INT8.encode(np.array([0.0, 255 * 2**-1074])))
    assert struct.unpack_from("<d", encoded)[0] == 2**-1074
    assert encoded == encode_reference([0.0, 255 * 2**-1074])


@pytest.mark.parametrize(
    "values",
    [
        np.array([1.0, np.nan], dtype=np.float32),
        np.array([np.inf, 1.0]),
        np.array([1.0, -np.inf], dtype=np.float16),
        np.frombuffer(bytes.fromhex("c0ff0000"), dtype=ml_dtypes.bfloat16),  # NaN, +0
        np.frombuffer(bytes.fromhex("0100f07f"), dtype="<f4"),  # subnormal, signalling NaN
        np.array([2**-1074, 0.0]),  # (hi - lo) / 255 underflows to 0 (PLN-COD-028)
        np.array([-(2**-1070), 2**-1070]),
        np.array([1.7e308, -1.7e308]),  # hi - lo overflows: the scale would be infinite
    ],
    ids=[
        "nan",
        "inf",
        "f16-inf",
        "bf16-nan",
        "snan",
        "scale-underflow",
        "scale-underflow-2",
        "scale-overflow",
    ],
)
def test_values_the_encoder_must_refuse(values: npt.NDArray[Any]) -> None:
    with pytest.raises(TensorValueInvalid) as info:
        INT8.encode(values)
    assert info.value.field == "values"


# --- properties against the references ---------------------------------------------------


@st.composite
def float_lists(draw: st.DrawFn, dtype: Dtype) -> list[float]:
    """Finite values of `dtype` with a common scale, so quantization is not degenerate."""
    exponent = draw(st.integers(min_value=-6, max_value=6))
    mantissas = draw(st.lists(st.floats(-1.0, 1.0, allow_nan=False), max_size=40))
    values = as_dtype([m * 2.0**exponent for m in mantissas], dtype)
    return [float(v) for v in values.astype(np.float64)]


@given(dtype=st.sampled_from(FLOATS), data=st.data())
def test_encode_matches_the_reference(dtype: Dtype, data: st.DataObject) -> None:
    values = data.draw(float_lists(dtype))
    encoded = bytes(INT8.encode(as_dtype(values, dtype)))
    assert encoded == encode_reference(values)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=40))
def test_encode_matches_the_reference_on_any_binary64(values: list[float]) -> None:
    try:
        expected = encode_reference(values)
    except (ZeroDivisionError, OverflowError):
        expected = b""  # scale underflowed (or hi - lo overflowed); the codec must refuse
    if not expected or struct.unpack_from("<d", expected)[0] in (0.0, math.inf):
        with pytest.raises(TensorValueInvalid):
            INT8.encode(np.array(values, dtype=np.float64))
    else:
        assert bytes(INT8.encode(np.array(values, dtype=np.float64))) == expected


@given(
    dtype=st.sampled_from(FLOATS),
    scale=st.one_of(
        st.floats(min_value=0.0, exclude_min=True, allow_infinity=False),
        st.sampled_from([2**-1074, 1e308, 1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40, 1 + 2**-11]),
    ),
    zero_point=st.integers(min_value=-128, max_value=127),
    q=st.lists(st.integers(min_value=-128, max_value=127), max_size=40),
)
def test_decode_matches_the_reference(
    dtype: Dtype, scale: float, zero_point: int, q: list[int]
) -> None:
    payload = struct.pack("<db", scale, zero_point) + struct.pack(f"<{len(q)}b", *q)
    decoded = INT8.decode(payload, dtype, (len(q),), len(q))
    assert decoded.dtype == dtype.numpy
    assert bits(decoded) == decode_reference(payload, dtype)


@pytest.mark.parametrize(
    ("dtype", "scale", "expected"),
    [
        (Dtype.FLOAT16, 1 + 2**-11 + 2**-40, [0x3C01, 0xBC01, 0x4001]),  # not via binary32
        (Dtype.BFLOAT16, 1 + 2**-8 + 2**-40, [0x3F81, 0xBF81, 0x4001]),
        (Dtype.FLOAT16, 1 + 2**-11, [0x3C00, 0xBC00, 0x4000]),  # ties to even
    ],
)
def test_decode_rounds_once(dtype: Dtype, scale: float, expected: list[int]) -> None:
    payload = struct.pack("<db3b", scale, 0, 1, -1, 2)
    assert bits(INT8.decode(payload, dtype, (3,), 3)) == expected


def test_decode_overflow_gives_infinity() -> None:
    payload = struct.pack("<db3b", 1000.0, -128, 127, -128, -28)
    assert bits(INT8.decode(payload, Dtype.FLOAT16, (3,), 3)) == [0x7C00, 0x0000, 0x7C00]
    payload = struct.pack("<db2b", 1e308, -128, 127, -128)
    assert INT8.decode(payload, Dtype.FLOAT64, (2,), 2).tolist() == [math.inf, 0.0]


# --- decoder checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale",
    [math.nan, -math.nan, math.inf, -math.inf, -1.0, -(2**-1074), 0.0, -0.0],
)
def test_bad_scales_are_codec_data_invalid(scale: float) -> None:
    payload = struct.pack("<db2b", scale, 0, 1, 2)
    with pytest.raises(CodecDataInvalid) as info:
        INT8.decode(payload, Dtype.FLOAT32, (2,), 2)
    assert info.value.field == "payload"


def test_signalling_nan_scale_is_codec_data_invalid() -> None:
    payload = bytes.fromhex("0100000000f0ff7f") + b"\x00\x01\x02"
    with pytest.raises(CodecDataInvalid):
        INT8.decode(payload, Dtype.FLOAT32, (2,), 2)


@pytest.mark.parametrize(("size", "numel"), [(8, 2), (10, 2), (12, 2), (0, 0), (8, 0)])
def test_length_is_checked_first(size: int, numel: int) -> None:
    payload = (struct.pack("<d", math.nan) + bytes(8))[:size]
    with pytest.raises(TensorSizeMismatch):
        INT8.decode(payload, Dtype.FLOAT32, (numel,), numel)


def test_huge_declared_shape_fails_on_length_without_allocating() -> None:
    numel = 2**40
    with pytest.raises(TensorSizeMismatch):
        INT8.decode(struct.pack("<db", 1.0, 0) + bytes(3), Dtype.FLOAT32, (numel,), numel)


def test_contract() -> None:
    assert {d for d in Dtype if INT8.applies_to(d)} == set(FLOATS)
    with pytest.raises(CodecDataInvalid):
        INT8.encode(np.zeros(2, dtype=np.int32))
    with pytest.raises(InvalidArgument):
        INT8.encode(np.zeros(2), k=3)
    decoded = INT8.decode(INT8.encode(np.ones((2, 3), dtype=np.float32)), Dtype.FLOAT32, (2, 3), 6)
    assert decoded.shape == (2, 3)
    assert decoded.tolist() == [[1.0] * 3] * 2
