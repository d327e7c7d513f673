"""The float16 and bfloat16 codecs against independent pure-Python references."""

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

from pollen.codecs.cast import BFLOAT16, FLOAT16, float64_to_bfloat16_bits, narrow_float64
from pollen.dtypes import Dtype
from pollen.errors import CodecDataInvalid, InvalidArgument, TensorSizeMismatch

# --- references -----------------------------------------------------------------------


def _sign(x: float) -> int:
    return 0x8000 if math.copysign(1.0, x) < 0 else 0


def float16_reference(x: float) -> int:
    """struct's 'e' format rounds a double to binary16 correctly (ties to even)."""
    if math.isnan(x):
        return _sign(x) | 0x7E00
    try:
        return int.from_bytes(struct.pack("<e", x), "little")
    except OverflowError:  # rounds past 65504
        return _sign(x) | 0x7C00


def _exponent(a: Fraction) -> int:
    """e with 2^e <= a < 2^(e+1), for a > 0."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > a else e


def bfloat16_reference(x: float) -> int:
    """Round the exact rational value of x to bfloat16, ties to even, with Fractions."""
    if math.isnan(x):
        return _sign(x) | 0x7FC0
    if math.isinf(x):
        return _sign(x) | 0x7F80
    a = Fraction(abs(x))
    if a == 0:
        return _sign(x)
    e = max(_exponent(a), -126)  # below 2^-126 the spacing stays that of subnormals
    ulp = Fraction(2) ** (e - 7)
    n, rest = divmod(a, ulp)
    if rest > ulp / 2 or (rest == ulp / 2 and n % 2 == 1):
        n += 1
    if n < 128:  # subnormal (only when e == -126)
        return _sign(x) | int(n)
    if n == 256:
        n, e = 128, e + 1
    if e > 127:
        return _sign(x) | 0x7F80
    return _sign(x) | ((e + 127) << 7) | (int(n) - 128)


def round_to_odd_reference(x: float) -> int:
    """The spec's hint: truncate to binary32, set the last bit when inexact, then RNE."""
    if math.isnan(x):
        return _sign(x) | 0x7FC0
    if math.isinf(x):
        return _sign(x) | 0x7F80
    a = Fraction(abs(x))
    bits = 0
    if a:
        e = max(_exponent(a), -126)
        ulp = Fraction(2) ** (e - 23)
        n, rest = divmod(a, ulp)
        if e > 127:  # truncation never overflows: the largest finite binary32
            bits, rest = 0x7F7FFFFF, Fraction(1)
        elif n < 2**23:
            bits = int(n)
        else:
            bits = ((e + 127) << 23) | (int(n) - 2**23)
        bits |= 1 if rest else 0
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return _sign(x) | rounded


def bits_of(values: npt.NDArray[Any]) -> list[int]:
    return [int(b) for b in values.view(f"<u{values.dtype.itemsize}")]


def payload_words(payload: bytes | memoryview) -> list[int]:
    data = bytes(payload)
    return list(struct.unpack(f"<{len(data) // 2}H", data))


def floats(bit_patterns: list[int], dtype: str) -> npt.NDArray[Any]:
    unsigned = {"<f4": "<u4", "<f8": "<u8"}[dtype]
    return np.array(bit_patterns, dtype=unsigned).view(dtype)


# --- examples from the spec -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "values", "payload"),
    [
        ("<f4", [65504.0, 65519.99, 65520.0], "ff7bff7b007c"),  # 65520 ties to even: +inf
        ("<f8", [2**-24, 2**-25, 3 * 2**-26], "010000000100"),  # 2^-25 ties to even: 0
        ("<f8", [1 + 2**-11 + 2**-40], "013c"),  # via binary32 it would be 003C
        ("<f8", [1 + 3 * 2**-11 - 2**-40], "013c"),  # via binary32 it would tie to 023C
        ("<f8", [65520 - 2**-30], "ff7b"),  # via binary32 it would overflow to 007C
        ("<f8", [2**-25 + 2**-60], "0100"),  # via binary32 it would tie to 0000
        (
            "<f4",
            [1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 2**-25, 3 * 2**-25],
            "003c023c00bc00000200",
        ),
        ("<f4", [2**-24, 1023 * 2**-24, -(2**-24), 1023.5 * 2**-24], "0100ff0301800004"),
        ("<f8", [1e300, -1e300, 65520.0, 65519.99999999999], "007c00fc007cff7b"),
        ("<f8", [2**-1074, -(2**-1074), 2**-26, -0.0], "0000008000000080"),
        ("<f4", [math.inf, -math.inf, 0.0, -0.0], "007c00fc00000080"),
    ],
)
def test_float16_examples(dtype: str, values: list[float], payload: str) -> None:
    assert bytes(FLOAT16.encode(np.array(values, dtype=dtype))).hex() == payload


@pytest.mark.parametrize(
    ("codec", "dtype", "bits", "payload"),
    [
        ("float16", "<f4", [0xFFC00001], "00fe"),
        ("float16", "<f4", [0x7F800001, 0x7FFFFFFF, 0xFFC00000, 0x7FC00000], "007e007e00fe007e"),
        (
            "float16",
            "<f8",
            [0x7FF0000000000001, 0xFFF8000000000001, 0x7FF8000000000000],
            "007e00fe007e",
        ),
        ("bfloat16", "<f4", [0x3F808000, 0x3F818000, 0xBF808000], "803f823f80bf"),
        ("bfloat16", "<f4", [0x7F7F7FFF, 0x7F7F8000], "7f7f807f"),
        (
            "bfloat16",
            "<f4",
            [0x00010000, 0x00008000, 0x00018000, 0x00000001, 0x80000001, 0x007FFFFF],
            "010000000200000000808000",
        ),
        ("bfloat16", "<f4", [0x7F800001, 0xFFFFFFFF, 0x7FC00000, 0xFF800001], "c07fc0ffc07fc0ff"),
        ("bfloat16", "<f8", [0x7FF0000000000001, 0xFFF8000000000001], "c07fc0ff"),
    ],
)
def test_bit_pattern_examples(codec: str, dtype: str, bits: list[int], payload: str) -> None:
    chosen = FLOAT16 if codec == "float16" else BFLOAT16
    assert bytes(chosen.encode(floats(bits, dtype))).hex() == payload


@pytest.mark.parametrize(
    ("dtype", "values", "payload"),
    [
        ("<f4", [1.0, -2.5], "803f20c0"),
        ("<f8", [1 + 2**-8 + 2**-40], "813f"),  # via binary32 it would be 803F
        ("<f8", [1 + 3 * 2**-8 - 2**-40], "813f"),  # via binary32 it would tie to 823F
        ("<f8", [(2 - 2**-8 - 2**-40) * 2**127], "7f7f"),  # via binary32 it would be +inf
        ("<f8", [2**-134 + 2**-160], "0100"),  # via binary32 it would tie to 0000
        ("<f8", [3.5e38, -1e300, 1e39], "807f80ff807f"),
        ("<f8", [2**-1074, -1e-300, -0.0], "000000800080"),
        ("<f4", [math.inf, -math.inf, 0.0, -0.0], "807f80ff00000080"),
    ],
)
def test_bfloat16_examples(dtype: str, values: list[float], payload: str) -> None:
    assert bytes(BFLOAT16.encode(np.array(values, dtype=dtype))).hex() == payload


def test_the_references_reproduce_the_double_rounding_examples() -> None:
    assert bfloat16_reference(1 + 2**-8 + 2**-40) == 0x3F81
    assert round_to_odd_reference(1 + 2**-8 + 2**-40) == 0x3F81
    assert float16_reference(1 + 2**-11 + 2**-40) == 0x3C01
    # What rounding twice through binary32 gives, to show the examples discriminate:
    assert float16_reference(float(np.float32(1 + 2**-11 + 2**-40))) == 0x3C00
    assert bfloat16_reference(float(np.float32(1 + 2**-8 + 2**-40))) == 0x3F80


# --- properties against the references ---------------------------------------------------

F32_BITS = st.integers(min_value=0, max_value=2**32 - 1)
F64_BITS = st.integers(min_value=0, max_value=2**64 - 1)


def _near(center: float, delta: int) -> int:
    return int.from_bytes(struct.pack("<d", center), "little") + delta


def f64_with_exponents(low: int, high: int) -> st.SearchStrategy[int]:
    """binary64 bits whose biased exponent is in [low, high] (either sign)."""
    return st.builds(
        lambda sign, exponent, mantissa: sign | exponent << 52 | mantissa,
        st.sampled_from([0, 1 << 63]),
        st.integers(min_value=low, max_value=high),
        st.integers(min_value=0, max_value=(1 << 52) - 1),
    )


# Where the results are subnormal or round into the smallest normals, and around overflow.
F64_FOR_FLOAT16 = st.one_of(F64_BITS, f64_with_exponents(990, 1010), f64_with_exponents(1036, 1040))
F64_FOR_BFLOAT16 = st.one_of(F64_BITS, f64_with_exponents(880, 898), f64_with_exponents(1148, 1152))


@st.composite
def f64_near_bfloat16_ties(draw: st.DrawFn) -> int:
    """binary64 bits at or next to the midpoint of two neighbouring bfloat16 values."""
    low = draw(st.integers(min_value=0, max_value=0x7F7F))
    sign = draw(st.sampled_from([0, 1 << 63]))
    midpoint = struct.unpack("<f", ((low << 16) | 0x8000).to_bytes(4, "little"))[0]
    delta = draw(st.one_of(st.integers(-3, 3), st.sampled_from([-(2**28), 2**28, 2**20])))
    return max(_near(midpoint, delta), 0) | sign


@st.composite
def f64_near_float16_ties(draw: st.DrawFn) -> int:
    """binary64 bits at or next to the midpoint of two neighbouring binary16 values."""
    low = draw(st.integers(min_value=0, max_value=0x7BFF))
    sign = draw(st.sampled_from([0, 1 << 63]))
    a = struct.unpack("<e", low.to_bytes(2, "little"))[0]
    # Above the largest value (0x7BFF) the next step would be 2^16, were it representable.
    b = 65536.0 if low == 0x7BFF else struct.unpack("<e", (low + 1).to_bytes(2, "little"))[0]
    midpoint = float((Fraction(a) + Fraction(b)) / 2)
    delta = draw(st.one_of(st.integers(-3, 3), st.sampled_from([-(2**29), 2**29])))
    return max(_near(midpoint, delta), 0) | sign


@given(st.lists(F32_BITS, max_size=64))
def test_float16_from_float32_matches_struct(bit_patterns: list[int]) -> None:
    values = floats(bit_patterns, "<f4")
    expected = [float16_reference(float(v)) for v in values]
    assert payload_words(FLOAT16.encode(values)) == expected


@given(st.lists(st.one_of(F64_FOR_FLOAT16, f64_near_float16_ties()), max_size=64))
def test_float16_from_float64_matches_struct(bit_patterns: list[int]) -> None:
    values = floats(bit_patterns, "<f8")
    expected = [float16_reference(float(v)) for v in values]
    assert payload_words(FLOAT16.encode(values)) == expected


@given(st.lists(F32_BITS, max_size=64))
def test_bfloat16_from_float32_matches_the_reference(bit_patterns: list[int]) -> None:
    values = floats(bit_patterns, "<f4")
    expected = [bfloat16_reference(float(v)) for v in values]
    assert payload_words(BFLOAT16.encode(values)) == expected


@given(st.lists(st.one_of(F64_FOR_BFLOAT16, f64_near_bfloat16_ties()), max_size=64))
def test_bfloat16_from_float64_matches_both_references(bit_patterns: list[int]) -> None:
    values = floats(bit_patterns, "<f8")
    expected = [bfloat16_reference(float(v)) for v in values]
    assert [round_to_odd_reference(float(v)) for v in values] == expected
    assert payload_words(BFLOAT16.encode(values)) == expected


def test_bfloat16_from_float32_matches_ml_dtypes_on_a_million_values() -> None:
    """A second, independent oracle: ml_dtypes rounds binary32 to bfloat16 once."""
    rng = np.random.default_rng(20260101)
    values = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint32).view("<f4")
    values = values[~np.isnan(values)]
    expected = values.astype(ml_dtypes.bfloat16).view("<u2")
    assert np.array_equal(np.frombuffer(BFLOAT16.encode(values), "<u2"), expected)


def test_bfloat16_from_float64_chunks_agree_with_single_elements() -> None:
    """The vectorized rounding works in chunks; results must not depend on position."""
    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**64, size=200_000, dtype=np.uint64).view("<f8")
    whole = float64_to_bfloat16_bits(values)
    picks = rng.integers(0, values.size, size=200)
    for i in picks:
        assert int(whole[i]) == bfloat16_reference(float(values[i]))


# --- decoding: exact widening, checked on every 16-bit pattern ----------------------------

ALL_WORDS = np.arange(1 << 16, dtype="<u2")


@pytest.mark.parametrize("target", [Dtype.FLOAT32, Dtype.FLOAT64])
def test_float16_decode_widens_every_pattern_exactly(target: Dtype) -> None:
    decoded = FLOAT16.decode(ALL_WORDS.tobytes(), target, (1 << 16,), 1 << 16)
    assert decoded.dtype == target.numpy
    for word, value in zip(range(1 << 16), decoded.tolist(), strict=True):
        expected = struct.unpack("<e", word.to_bytes(2, "little"))[0]
        if math.isnan(expected):
            assert math.isnan(value)
            assert math.copysign(1, value) == math.copysign(1, expected)
        else:
            assert struct.pack("<d", value) == struct.pack("<d", expected), hex(word)


@pytest.mark.parametrize("target", [Dtype.FLOAT32, Dtype.FLOAT64])
def test_bfloat16_decode_widens_every_pattern_exactly(target: Dtype) -> None:
    decoded = BFLOAT16.decode(ALL_WORDS.tobytes(), target, (1 << 16,), 1 << 16)
    assert decoded.dtype == target.numpy
    for word, value in zip(range(1 << 16), decoded.tolist(), strict=True):
        expected = struct.unpack("<f", (word << 16).to_bytes(4, "little"))[0]
        if math.isnan(expected):
            assert math.isnan(value)
            assert math.copysign(1, value) == math.copysign(1, expected)
        else:
            assert struct.pack("<d", value) == struct.pack("<d", expected), hex(word)


@pytest.mark.parametrize("codec", [FLOAT16, BFLOAT16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("target", [Dtype.FLOAT32, Dtype.FLOAT64])
def test_every_pattern_survives_decode_then_encode(codec: Any, target: Dtype) -> None:
    """Widening is exact, so narrowing it back is too; NaNs come back canonical."""
    decoded = codec.decode(ALL_WORDS.tobytes(), target, (1 << 16,), 1 << 16)
    back = np.frombuffer(codec.encode(decoded), "<u2").astype(np.int64)
    words = ALL_WORDS.astype(np.int64)
    exponent, quiet = (0x7C00, 0x7E00) if codec is FLOAT16 else (0x7F80, 0x7FC0)
    nan = (words & 0x7FFF) > exponent
    assert np.array_equal(back[~nan], words[~nan])
    assert np.array_equal(back[nan], (words[nan] & 0x8000) | quiet)


# --- contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [FLOAT16, BFLOAT16], ids=["float16", "bfloat16"])
def test_applicability_and_checks(codec: Any) -> None:
    assert {d for d in Dtype if codec.applies_to(d)} == {Dtype.FLOAT32, Dtype.FLOAT64}
    with pytest.raises(CodecDataInvalid) as info:
        codec.encode(np.zeros(2, np.float16))
    assert info.value.field == "codec"
    with pytest.raises(InvalidArgument):
        codec.encode(np.zeros(2, np.float32), k=1)
    for size in (3, 6, 8, 0):
        with pytest.raises(TensorSizeMismatch):
            codec.decode(bytes(size), Dtype.FLOAT32, (2,), 2)


@pytest.mark.parametrize("codec", [FLOAT16, BFLOAT16], ids=["float16", "bfloat16"])
def test_shapes_and_layouts(codec: Any) -> None:
    array = np.arange(6, dtype=">f8").reshape(2, 3).T  # big-endian and not contiguous
    decoded = codec.decode(codec.encode(array), Dtype.FLOAT64, (3, 2), 6)
    assert decoded.shape == (3, 2)
    assert decoded.tolist() == array.tolist()
    scalar = codec.decode(codec.encode(np.array(-0.0)), Dtype.FLOAT64, (), 1)
    assert scalar.shape == ()
    assert math.copysign(1, float(scalar)) == -1


def test_narrow_float64_rounds_once_to_each_float_dtype() -> None:
    tricky = np.array([1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40, 1e-40, 1e300])
    assert bits_of(narrow_float64(tricky, Dtype.FLOAT16)) == [
        float16_reference(float(v)) for v in tricky
    ]
    assert bits_of(narrow_float64(tricky, Dtype.BFLOAT16)) == [
        bfloat16_reference(float(v)) for v in tricky
    ]
    as_float32 = narrow_float64(tricky, Dtype.FLOAT32)
    assert as_float32.dtype == np.dtype("<f4")
    assert as_float32.tolist() == [
        struct.unpack("<f", struct.pack("<f", v))[0] for v in tricky[:3]
    ] + [math.inf]
    assert narrow_float64(tricky, Dtype.FLOAT64) is tricky
