"""The topk codec against a sort-based reference."""

import math
import struct
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen.codecs.topk import TOPK, index_width, top_indices
from pollen.dtypes import Dtype
from pollen.errors import CodecDataInvalid, InvalidArgument, TensorSizeMismatch, TensorValueInvalid

FLOATS = [Dtype.FLOAT16, Dtype.BFLOAT16, Dtype.FLOAT32, Dtype.FLOAT64]


def encode_reference(array: npt.NDArray[Any], k: int) -> bytes:
    """Sort by (-|x|, index), keep k, write them in index order with their raw bytes."""
    flat = array.reshape(-1)
    magnitudes = [abs(float(v)) for v in flat.astype(np.float64)]
    kept = sorted(sorted(range(flat.size), key=lambda i: (-magnitudes[i], i))[:k])
    width = "I" if flat.size <= 2**32 else "Q"
    raw = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
    size = flat.dtype.itemsize
    values = b"".join(raw[i * size : (i + 1) * size] for i in kept)
    return struct.pack(f"<Q{k}{width}", k, *kept) + values


def decode(payload: bytes, dtype: Dtype, shape: tuple[int, ...]) -> Any:
    return TOPK.decode(payload, dtype, shape, math.prod(shape))


def words(array: npt.NDArray[Any]) -> list[int]:
    return [int(b) for b in array.reshape(-1).view(f"<u{array.dtype.itemsize}")]


# --- examples ------------------------------------------------------------------------------

SPEC_PAYLOAD = bytes.fromhex("0200000000000000" + "0100000002000000" + "000040c000000040")


def test_spec_example() -> None:
    array = np.array([0.5, -3.0, 2.0, -2.0, 1.0], dtype=np.float32)
    assert bytes(TOPK.encode(array, k=2)) == SPEC_PAYLOAD
    assert decode(SPEC_PAYLOAD, Dtype.FLOAT32, (5,)).tolist() == [0.0, -3.0, 2.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("values", "k", "indices"),
    [
        ([1.0, -1.0, 1.0, -1.0], 2, [0, 1]),
        ([1.0, -math.inf, 3.0, math.inf], 1, [1]),
        ([1.0, -math.inf, 3.0, math.inf], 3, [1, 2, 3]),
        ([0.0, -0.0, 0.0], 2, [0, 1]),
        ([0.0, 2**-149, -0.0], 1, [1]),
        ([5.0, 4.0, 3.0], 0, []),
        ([5.0, 4.0, 3.0], 3, [0, 1, 2]),
        ([-2.0, 2.0, -2.0, 1.0, 2.0], 2, [0, 1]),
    ],
)
def test_selection_rule(values: list[float], k: int, indices: list[int]) -> None:
    array = np.array(values, dtype=np.float32)
    payload = bytes(TOPK.encode(array, k=k))
    assert struct.unpack_from(f"<Q{k}I", payload) == (k, *indices)
    assert payload == encode_reference(array, k)


def test_values_are_copied_bit_for_bit() -> None:
    array = np.frombuffer(bytes.fromhex("000000800000807f01000000"), dtype="<f4")
    payload = bytes(TOPK.encode(array, k=3))
    assert payload[8 + 12 :] == array.tobytes()  # -0.0, +inf and the smallest subnormal


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_float_dtype(dtype: Dtype) -> None:
    array = np.array([0.5, -3.0, 2.0, -2.0, 1.0]).astype(dtype.numpy)
    payload = bytes(TOPK.encode(array, k=2))
    assert payload == encode_reference(array, 2)
    assert struct.unpack_from("<Q2I", payload) == (2, 1, 2)
    assert decode(payload, dtype, (5,)).astype(np.float64).tolist() == [0, -3, 2, 0, 0]


def test_shapes_use_flat_c_order_indices() -> None:
    array = np.array([[0.0, 9.0, 0.0], [0.0, 0.0, -8.0]], dtype=np.float32)
    payload = bytes(TOPK.encode(array, k=2))
    assert struct.unpack_from("<Q2I", payload) == (2, 1, 5)
    assert decode(payload, Dtype.FLOAT32, (2, 3)).tolist() == array.tolist()
    transposed = np.asfortranarray(array).T  # a non-contiguous view with flat order 0..5
    assert bytes(TOPK.encode(transposed, k=2)) == encode_reference(transposed, 2)


def test_scalars_and_empty_tensors() -> None:
    scalar = np.array(-7.5, dtype=np.float32)
    assert decode(bytes(TOPK.encode(scalar, k=1)), Dtype.FLOAT32, ()).tolist() == -7.5
    zero = decode(bytes(TOPK.encode(scalar, k=0)), Dtype.FLOAT32, ())
    assert zero.shape == ()
    assert words(zero) == [0]
    empty = bytes(TOPK.encode(np.zeros(0, np.float32), k=0))
    assert empty == bytes(8)
    assert decode(empty, Dtype.FLOAT32, (0,)).shape == (0,)


def test_decode_fills_with_positive_zero() -> None:
    payload = struct.pack("<QIe", 1, 2, -1.0)
    decoded = decode(payload, Dtype.FLOAT16, (4,))
    assert words(decoded) == [0, 0, 0xBC00, 0]


# --- properties ------------------------------------------------------------------------------


@given(
    dtype=st.sampled_from(FLOATS),
    values=st.lists(st.integers(min_value=-3, max_value=3), max_size=60),
    data=st.data(),
)
def test_many_ties_match_the_reference(
    dtype: Dtype, values: list[int], data: st.DataObject
) -> None:
    array = np.array(values, dtype=np.float64).astype(dtype.numpy)
    k = data.draw(st.integers(min_value=0, max_value=len(values)))
    assert bytes(TOPK.encode(array, k=k)) == encode_reference(array, k)


@given(
    bit_patterns=st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=60),
    data=st.data(),
)
def test_any_float32_bits_match_the_reference(bit_patterns: list[int], data: st.DataObject) -> None:
    array = np.array(bit_patterns, dtype="<u4").view("<f4")
    array = array[~np.isnan(array)]
    k = data.draw(st.integers(min_value=0, max_value=array.size))
    payload = bytes(TOPK.encode(array, k=k))
    assert payload == encode_reference(array, k)
    # Decoding keeps exactly the kept elements, bit for bit, and +0.0 elsewhere.
    kept = set(struct.unpack_from(f"<{k}I", payload, 8))
    decoded = words(decode(payload, Dtype.FLOAT32, (array.size,)))
    assert decoded == [w if i in kept else 0 for i, w in enumerate(words(array))]


@given(
    magnitudes=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=200),
    data=st.data(),
)
def test_top_indices_is_exact(magnitudes: list[int], data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=len(magnitudes)))
    expected = sorted(sorted(range(len(magnitudes)), key=lambda i: (-magnitudes[i], i))[:k])
    assert top_indices(np.array(magnitudes, dtype=np.uint16), k).tolist() == expected


# --- encoder checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "k"),
    [
        (np.array([1.0, np.nan, 3.0], dtype=np.float32), 1),
        (np.array([np.nan, 1.0], dtype=np.float32), 0),  # refused even if nothing is kept
        (np.frombuffer(bytes.fromhex("00000000000014400100000000f0ff7f"), "<f8"), 1),
        (np.array([1.0, np.nan], dtype=np.float16), 1),
        (np.frombuffer(bytes.fromhex("c1ff"), dtype=ml_dtypes.bfloat16), 0),
    ],
    ids=["nan", "nan-k0", "snan", "f16-nan", "bf16-nan"],
)
def test_nan_is_tensor_value_invalid(array: npt.NDArray[Any], k: int) -> None:
    with pytest.raises(TensorValueInvalid):
        TOPK.encode(array, k=k)


@pytest.mark.parametrize("k", [None, -1, 4, 1.0, True, "1"])
def test_k_must_be_an_integer_in_range(k: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        TOPK.encode(np.zeros(3, np.float32), **({} if k is None else {"k": k}))
    assert info.value.field == "k"


def test_k_accepts_numpy_integers_and_rejects_other_parameters() -> None:
    assert bytes(TOPK.encode(np.ones(3, np.float32), k=np.int64(1)))[:8] == struct.pack("<Q", 1)
    with pytest.raises(InvalidArgument):
        TOPK.encode(np.ones(3, np.float32), k=1, level=3)


def test_contract() -> None:
    assert {d for d in Dtype if TOPK.applies_to(d)} == set(FLOATS)
    with pytest.raises(CodecDataInvalid):
        TOPK.encode(np.zeros(2, dtype=np.int32), k=1)


def test_index_width() -> None:
    assert [index_width(n) for n in (0, 5, 2**32, 2**32 + 1, 2**63 - 1)] == [4, 4, 4, 8, 8]


# --- decoder checks, in PLN-COD-029's order -----------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "numel", "error"),
    [
        (bytes(7), 5, TensorSizeMismatch),
        (b"", 0, TensorSizeMismatch),
        (struct.pack("<Q6I6f", 6, *range(6), *range(6)), 5, CodecDataInvalid),  # k > numel
        (struct.pack("<Q", 6), 5, CodecDataInvalid),  # k > numel before the length
        (struct.pack("<Q", 2**64 - 1), 5, CodecDataInvalid),
        (struct.pack("<Q", 1), 0, CodecDataInvalid),
        (struct.pack("<Q2I2f", 2, 1, 2, 1.0, 2.0)[:-1], 5, TensorSizeMismatch),
        (struct.pack("<Q2I2f", 2, 1, 2, 1.0, 2.0) + b"\x00", 5, TensorSizeMismatch),
        (struct.pack("<Q2Q2f", 2, 1, 2, 1.0, 2.0), 5, TensorSizeMismatch),  # 8-byte indices
        (struct.pack("<Q2I2f", 2, 2, 1, 1.0, 2.0), 5, CodecDataInvalid),  # decreasing
        (struct.pack("<Q2I2f", 2, 1, 1, 1.0, 2.0), 5, CodecDataInvalid),  # repeated
        (struct.pack("<Q2I2f", 2, 1, 5, 1.0, 2.0), 5, CodecDataInvalid),  # index == numel
        (struct.pack("<Q1If", 1, 2**32 - 1, 1.0), 5, CodecDataInvalid),
    ],
    ids=[
        "shorter-than-k",
        "empty",
        "k-over-numel",
        "k-over-numel-first",
        "k-max-uint64",
        "k-on-empty",
        "truncated",
        "overlong",
        "wrong-width",
        "decreasing",
        "repeated",
        "index-numel",
        "index-huge",
    ],
)
def test_decode_checks(payload: bytes, numel: int, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        decode(payload, Dtype.FLOAT32, (numel,))
    assert getattr(info.value, "field", None) == "payload"


@pytest.mark.parametrize(
    ("payload", "numel", "error"),
    [
        # numel 2^32 (8 GiB of float16) still uses 4-byte indices: the length fits and the
        # descending indices are the error, found before the tensor is allocated.
        (struct.pack("<Q2I2H", 2, 5, 3, 0, 0), 2**32, CodecDataInvalid),
        (struct.pack("<Q2Q2H", 2, 3, 5, 0, 0), 2**32, TensorSizeMismatch),
        (struct.pack("<Q2I2H", 2, 3, 5, 0, 0), 2**32 + 1, TensorSizeMismatch),
        (struct.pack("<Q2Q2H", 2, 3, 2**32 + 1, 0, 0), 2**32 + 1, CodecDataInvalid),
        (struct.pack("<Q2I2H", 2, 1, 2, 0, 0)[:-1], 2**40, TensorSizeMismatch),
    ],
)
def test_huge_declared_shapes_fail_without_allocating(
    payload: bytes, numel: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        decode(payload, Dtype.FLOAT16, (numel,))
