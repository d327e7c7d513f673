import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollen import wire
from pollen._generated.pollen.v1 import blob_service_pb2, error_pb2, task_pb2, tensor_pb2, value_pb2
from pollen.blob import BlobRef, blob_ref
from pollen.dtypes import Dtype
from pollen.errors import (
    ErrorCode,
    InternalError,
    InvalidArgument,
    LimitExceeded,
    Retry,
    VersionUnsupported,
)
from pollen.tensors import EncodedTensor, encode_tensor
from pollen.values import INT64_MAX, INT64_MIN
from pollen.version import ProtocolVersion

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


def test_errors_round_trip() -> None:
    err = VersionUnsupported(
        "nope", field="versions", supported_versions=[ProtocolVersion(1, 0)], retry_after_ms=5
    )
    data = wire.error_to_proto(err).SerializeToString()
    back = wire.error_from_bytes(data)
    assert isinstance(back, VersionUnsupported)
    assert (back.message, back.field, back.supported_versions, back.retry_after_ms) == (
        "nope",
        "versions",
        (ProtocolVersion(1, 0),),
        5,
    )
    assert error_pb2.Error.FromString(data).retryable is False


def test_unknown_error_codes_follow_the_senders_retry_flag() -> None:
    unknown: object = 999
    data = error_pb2.Error(code=unknown, message="new", retryable=True).SerializeToString()  # type: ignore[arg-type]
    back = wire.error_from_bytes(data)
    assert isinstance(back, InternalError)
    assert back.retry is Retry.YES
    assert "999" in back.message
    assert wire.error_from_bytes(b"\xff").code is ErrorCode.INTERNAL


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


def test_download_chunks_round_trip_zero_copy() -> None:
    chunk = bytes(range(256)) * 10
    data = wire.download_chunk_to_bytes(offset=4096, data=chunk, total_size=10_000)
    upb = blob_service_pb2.DownloadBlobResponse.FromString(data)
    assert (upb.offset, upb.data, upb.total_size) == (4096, chunk, 10_000)
    parsed = wire.download_chunk_from_bytes(data)
    assert (parsed.offset, bytes(parsed.data), parsed.total_size) == (4096, chunk, 10_000)
    assert parsed.data.obj is data


def test_upload_chunks_round_trip_and_validate_digest() -> None:
    ref = blob_ref(b"hello world")
    chunk = wire.UploadChunk(session_id="s1", blob=ref, offset=6, data=memoryview(b"world"))
    data = wire.upload_chunk_to_bytes(chunk)
    upb = blob_service_pb2.UploadBlobRequest.FromString(data)
    assert (upb.session_id, upb.sha256, upb.total_size, upb.offset, upb.data) == (
        "s1", ref.sha256, 11, 6, b"world",
    )  # fmt: skip
    back = wire.upload_chunk_from_bytes(data)
    assert (back.session_id, back.blob, back.offset, bytes(back.data)) == ("s1", ref, 6, b"world")
    bad = blob_service_pb2.UploadBlobRequest(sha256=b"x", total_size=1).SerializeToString()
    with pytest.raises(InvalidArgument, match="32 bytes"):
        wire.upload_chunk_from_bytes(bad)
    status_query = blob_service_pb2.UploadBlobRequest(sha256=ref.sha256, total_size=11)
    assert bytes(wire.upload_chunk_from_bytes(status_query.SerializeToString()).data) == b""
