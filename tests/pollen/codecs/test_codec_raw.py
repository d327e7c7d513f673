import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen.codecs.raw import RAW
from pollen.dtypes import Dtype
from pollen.errors import InvalidArgument, TensorSizeMismatch


def _decode(payload: bytes | bytearray | memoryview, dtype: Dtype, shape: tuple[int, ...]) -> Any:
    return RAW.decode(payload, dtype, shape, int(np.prod(shape)))


@pytest.mark.parametrize(
    ("array", "payload"),
    [
        (np.array([1.0, -2.5], dtype=np.float32), "0000803f000020c0"),
        (np.array([-2], dtype=np.int16), "feff"),
        (np.array([True, False, True]), "010001"),
        (np.zeros((2, 0), dtype=np.float32), ""),
        (np.array(-0.0), "0000000000000080"),
        (np.array([[1, 2], [3, 4]], dtype=np.uint16), "0100020003000400"),
    ],
)
def test_spec_examples(array: npt.NDArray[Any], payload: str) -> None:
    assert bytes(RAW.encode(array)).hex() == payload


def test_encode_of_a_little_endian_c_array_is_a_view() -> None:
    array = np.arange(12, dtype="<f4").reshape(3, 4)
    payload = RAW.encode(array)
    assert isinstance(payload, memoryview)
    assert np.shares_memory(np.frombuffer(payload, dtype=np.uint8), array)
    assert payload.nbytes == array.nbytes


def test_encode_copies_to_fix_byte_order() -> None:
    big = np.array([1.0, -2.5], dtype=">f4")
    payload = RAW.encode(big)
    assert bytes(payload) == struct.pack("<2f", 1.0, -2.5)
    assert not np.shares_memory(np.frombuffer(payload, dtype=np.uint8), big)


def test_big_endian_nan_payloads_survive_the_swap() -> None:
    big = np.frombuffer(bytes.fromhex("7f800001ffc00002"), dtype=">f4")
    assert bytes(RAW.encode(big)) == bytes.fromhex("0100807f0200c0ff")


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a.T,
        lambda a: a[:, ::2],
        lambda a: a[::-1],
        np.asfortranarray,
    ],
    ids=["transposed", "strided", "reversed", "fortran"],
)
def test_encode_writes_c_order_for_any_layout(make: Any) -> None:
    base = np.arange(24, dtype=np.int32).reshape(4, 6)
    view = make(base)
    assert bytes(RAW.encode(view)) == np.ascontiguousarray(view).astype("<i4").tobytes()


def test_bool_arrays_with_other_bytes_encode_as_canonical_true() -> None:
    odd = np.frombuffer(b"\x00\x02\xff\x01", dtype=np.bool_)
    assert bytes(RAW.encode(odd)) == b"\x00\x01\x01\x01"


def test_decode_is_a_read_only_view_of_the_payload() -> None:
    payload = struct.pack("<6f", *range(6))
    decoded = _decode(payload, Dtype.FLOAT32, (2, 3))
    assert decoded.dtype == np.dtype("<f4")
    assert decoded.shape == (2, 3)
    assert decoded.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert np.shares_memory(decoded, np.frombuffer(payload, dtype=np.uint8))
    assert not decoded.flags.writeable


def test_decode_accepts_views_and_mutable_buffers() -> None:
    data = bytearray(struct.pack("<3h", 1, -2, 3))
    decoded = _decode(memoryview(data)[:4], Dtype.INT16, (2,))
    assert decoded.tolist() == [1, -2]
    data[0] = 7
    assert decoded[0] == 7, "still a view of the caller's buffer"


@pytest.mark.parametrize(("size", "shape"), [(7, (2,)), (9, (2,)), (0, ()), (4, (0,)), (3, (3, 0))])
def test_decode_length_must_be_exact(size: int, shape: tuple[int, ...]) -> None:
    with pytest.raises(TensorSizeMismatch) as info:
        _decode(bytes(size), Dtype.FLOAT32, shape)
    assert info.value.field == "payload"


def test_raw_takes_no_parameters() -> None:
    with pytest.raises(InvalidArgument):
        RAW.encode(np.zeros(2), k=1)


@pytest.mark.parametrize("dtype", list(Dtype))
def test_applies_to_every_dtype(dtype: Dtype) -> None:
    assert RAW.applies_to(dtype)


@given(dtype=st.sampled_from(list(Dtype)), data=st.data())
def test_round_trip_is_bit_exact(dtype: Dtype, data: st.DataObject) -> None:
    """Any bytes are canonical (NaN payloads, -0.0, subnormals), except BOOL's 0/1 rule."""
    numel = data.draw(st.integers(min_value=0, max_value=40))
    if dtype is Dtype.BOOL:
        raw = bytes(data.draw(st.lists(st.sampled_from([0, 1]), min_size=numel, max_size=numel)))
    else:
        size = numel * dtype.itemsize
        raw = data.draw(st.binary(min_size=size, max_size=size))
    decoded = _decode(raw, dtype, (numel,))
    assert decoded.dtype == dtype.numpy
    assert bytes(RAW.encode(decoded)) == raw
