import dataclasses
import struct

import numpy as np
import pytest

from pollen import wire
from pollen._generated.pollen.v1 import tensor_pb2
from pollen.blob import BlobRef, blob_ref
from pollen.dtypes import Dtype
from pollen.errors import InvalidArgument
from pollen.tensors import EncodedTensor, encode_tensor


def _raw(values: np.ndarray) -> EncodedTensor:
    return encode_tensor(values, codec="raw", name="w")


def test_tensor_bytes_parse_with_upb_and_back_without_copies() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = wire.tensor_to_bytes(_raw(array))
    msg = tensor_pb2.Tensor.FromString(data)
    assert (msg.dtype, list(msg.shape), msg.codec, msg.name) == (
        Dtype.FLOAT32.value,
        [3, 4],
        "raw",
        "w",
    )
    assert msg.inline_data == array.tobytes()
    received = wire.tensor_from_bytes(data)
    payload = memoryview(received.payload)
    assert payload.obj is data, "the payload must be a view of the received buffer"
    decoded = wire.decode_tensor_message(data)
    np.testing.assert_array_equal(decoded, array)
    assert np.shares_memory(decoded, np.frombuffer(data, dtype=np.uint8))


def test_tensor_from_bytes_agrees_with_upb_on_unusual_encodings() -> None:
    array = np.arange(3, dtype=np.int16)
    base = wire.tensor_to_bytes(_raw(array))
    unknown_field = b"\xf8\x06\x07"  # field 111, varint 7: must be ignored
    later_payload = tensor_pb2.Tensor(inline_data=(array + 10).tobytes()).SerializeToString()
    twice = base + later_payload  # the last occurrence of a field wins
    for data, expected in [(unknown_field + base, array), (twice, array + 10)]:
        assert wire.decode_tensor_message(data).tolist() == expected.tolist()
        upb = tensor_pb2.Tensor.FromString(data)
        assert upb.inline_data == expected.tobytes()


def test_blob_member_after_inline_data_wins() -> None:
    ref = blob_ref(b"abc")
    blob_field = tensor_pb2.Tensor(blob=wire.blob_ref_to_proto(ref)).SerializeToString()
    data = wire.tensor_to_bytes(_raw(np.zeros(3, dtype=np.uint8))) + blob_field
    assert wire.tensor_from_bytes(data).blob == ref
    with pytest.raises(InvalidArgument, match="blob"):
        wire.decode_tensor_message(data)
    inline_last = blob_field + wire.tensor_to_bytes(_raw(np.ones(3, dtype=np.uint8)))
    assert wire.decode_tensor_message(inline_last).tolist() == [1, 1, 1]


def test_groups_fall_back_to_upb() -> None:
    group = b"\xfb\x06\x08\x01\xfc\x06"  # unknown group 111 holding a varint
    data = group + wire.tensor_to_bytes(_raw(np.arange(2, dtype=np.uint8)))
    assert wire.decode_tensor_message(data).tolist() == [0, 1]


@pytest.mark.parametrize(
    "data",
    [b"\x08", b"\x22\x05ab", b"\x0f", b"\x00\x01", b"\x22" + b"\xff" * 11],
    ids=["truncated-varint", "short-bytes", "wire-type-7", "field-0", "overlong-varint"],
)
def test_malformed_tensors_are_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="malformed"):
        wire.tensor_from_bytes(data)


def test_tensor_to_proto_inline_and_blob() -> None:
    enc = _raw(np.array([1.5], dtype=np.float64))
    assert wire.tensor_to_proto(enc).inline_data == struct.pack("<d", 1.5)
    ref = BlobRef(sha256=bytes(32), size=8)
    msg = wire.tensor_to_proto(dataclasses.replace(enc, payload=b"", blob=ref))
    assert msg.WhichOneof("payload") == "blob"
    back = wire.tensor_from_proto(msg)
    assert back.blob == ref
    assert back.dtype is Dtype.FLOAT64


def test_empty_codec_means_raw_and_unset_payload_is_empty() -> None:
    msg = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[0])
    decoded = wire.decode_tensor_message(msg.SerializeToString())
    assert decoded.shape == (0,)
    assert decoded.dtype == np.float32
