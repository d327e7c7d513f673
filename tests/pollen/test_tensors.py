import dataclasses
import struct
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pollen.blob import BlobRef
from pollen.codecs import CODECS
from pollen.dtypes import FLOAT_DTYPES, Dtype
from pollen.errors import (
    CodecDataInvalid,
    CodecUnsupported,
    DtypeUnsupported,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    ShapeInvalid,
    TensorSizeMismatch,
    TensorValueInvalid,
)
from pollen.limits import Limits
from pollen.tensors import (
    EncodedTensor,
    check_tensor,
    decode_tensor,
    decode_tensors,
    encode_tensor,
    encode_tensors,
)


def tensor(
    dtype: Dtype = Dtype.FLOAT32,
    shape: tuple[int, ...] = (2,),
    codec: str = "raw",
    payload: bytes = b"\x00" * 8,
) -> EncodedTensor:
    return EncodedTensor(dtype=dtype, shape=shape, codec=codec, payload=payload)


# --- encode_tensor ---------------------------------------------------------------------------


def test_encode_tensor_fills_every_field() -> None:
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    encoded = encode_tensor(array, name="layer.0")
    assert (encoded.dtype, encoded.shape, encoded.codec, encoded.name) == (
        Dtype.INT16,
        (2, 3),
        "raw",
        "layer.0",
    )
    assert bytes(encoded.payload) == array.tobytes()
    assert np.shares_memory(np.frombuffer(encoded.payload, np.uint8), array)


def test_encode_tensor_takes_array_likes() -> None:
    assert encode_tensor(1.5).shape == ()
    assert encode_tensor(1.5).dtype is Dtype.FLOAT64
    assert encode_tensor([[1, 2]]).dtype is Dtype.INT64
    assert bytes(encode_tensor([True, False]).payload) == b"\x01\x00"


def test_empty_codec_means_raw() -> None:
    assert encode_tensor(np.zeros(2), codec="").codec == "raw"
    assert decode_tensor(tensor(codec="")).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("array", "codec", "k", "error", "field"),
    [
        (np.array([object()]), "raw", None, DtypeUnsupported, "dtype"),
        (np.zeros(2, np.complex64), "raw", None, DtypeUnsupported, "dtype"),
        (np.zeros(2), "RAW", None, CodecUnsupported, "codec"),
        (np.zeros(2, np.int32), "float16", None, CodecDataInvalid, "codec"),
        (np.zeros(2, np.int32), "topk", 1, CodecDataInvalid, "codec"),
        (np.zeros(2), "raw", 1, InvalidArgument, "k"),
        (np.zeros(2), "topk", None, InvalidArgument, "k"),
        (np.zeros(2), "topk", 3, InvalidArgument, "k"),
        (np.array([np.nan]), "int8", None, TensorValueInvalid, "values"),
        (np.array([np.nan]), "topk", 0, TensorValueInvalid, "values"),
    ],
)
def test_encode_tensor_errors(
    array: npt.NDArray[Any], codec: str, k: int | None, error: type[PollenError], field: str
) -> None:
    with pytest.raises(error) as info:
        encode_tensor(array, codec=codec, k=k)
    assert info.value.field == field


def test_encode_tensor_refuses_ragged_input() -> None:
    with pytest.raises(InvalidArgument):
        encode_tensor([[1, 2], [3]])


def test_names_are_limited_to_256_bytes_of_utf8() -> None:
    assert encode_tensor(np.zeros(1), name="\u00e9" * 128).name == "\u00e9" * 128
    for name in ["\u00e9" * 128 + "x", "x" * 257, "\ud800"]:
        with pytest.raises(InvalidArgument) as info:
            encode_tensor(np.zeros(1), name=name)
        assert info.value.field == "name"


def test_encoded_tensor_is_frozen_and_keyword_only() -> None:
    encoded = EncodedTensor(dtype=Dtype.INT8, shape=[3], codec="raw", payload=b"abc")  # type: ignore[arg-type]
    assert encoded.shape == (3,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        encoded.codec = "zstd"  # type: ignore[misc]
    with pytest.raises(TypeError):
        EncodedTensor(Dtype.INT8, (3,), "raw", b"abc")  # type: ignore[call-arg]


# --- round trips through every codec ---------------------------------------------------------

LOSSLESS = ["raw", "zstd"]


@given(
    dtype=st.sampled_from(list(Dtype)),
    codec=st.sampled_from(LOSSLESS),
    shape=st.lists(st.integers(min_value=0, max_value=4), max_size=3),
    data=st.data(),
)
def test_lossless_round_trips_are_bit_exact(
    dtype: Dtype, codec: str, shape: list[int], data: st.DataObject
) -> None:
    numel = int(np.prod(shape))
    if dtype is Dtype.BOOL:
        raw = bytes(data.draw(st.lists(st.sampled_from([0, 1]), min_size=numel, max_size=numel)))
    else:
        size = numel * dtype.itemsize
        raw = data.draw(st.binary(min_size=size, max_size=size))
    array = np.frombuffer(raw, dtype=dtype.numpy).reshape(shape)
    decoded = decode_tensor(encode_tensor(array, codec=codec))
    assert (decoded.dtype, decoded.shape) == (dtype.numpy, tuple(shape))
    assert decoded.tobytes() == raw


LOSSY = [
    (codec, dtype)
    for codec in ("float16", "bfloat16", "int8", "topk")
    for dtype in sorted(FLOAT_DTYPES, key=lambda d: d.value)
    if CODECS[codec].applies_to(dtype)
]


@pytest.mark.parametrize(("codec", "dtype"), LOSSY)
def test_lossy_codecs_round_trip_approximately(codec: str, dtype: Dtype) -> None:
    array = np.linspace(-2, 2, 12).reshape(3, 4).astype(dtype.numpy)
    k = 12 if codec == "topk" else None
    decoded = decode_tensor(encode_tensor(array, codec=codec, k=k))
    assert (decoded.dtype, decoded.shape) == (dtype.numpy, (3, 4))
    tolerance = {"float16": 1e-3, "bfloat16": 1e-2, "int8": 2e-2, "topk": 0.0}[codec]
    np.testing.assert_allclose(
        decoded.astype(np.float64), array.astype(np.float64), rtol=0, atol=tolerance
    )


# --- the decode check order ------------------------------------------------------------------

FLOAT32_2 = struct.pack("<2f", 1.0, -2.5)


@pytest.mark.parametrize(
    ("encoded", "kwargs", "error", "field"),
    [
        # 1: dtype
        (tensor(), {"dtypes": {Dtype.FLOAT64, Dtype.INT64}}, DtypeUnsupported, "dtype"),
        (tensor(codec="x-unknown"), {"dtypes": set()}, DtypeUnsupported, "dtype"),
        # 2: codec
        (tensor(codec="x-unknown"), {}, CodecUnsupported, "codec"),
        (tensor(codec="RAW"), {}, CodecUnsupported, "codec"),
        (tensor(codec="raw\x00"), {}, CodecUnsupported, "codec"),
        (tensor(codec="zstd"), {"codecs": {"raw"}}, CodecUnsupported, "codec"),
        (tensor(codec=""), {"codecs": {"zstd"}}, CodecUnsupported, "codec"),
        (tensor(codec="x-unknown", shape=(-1,)), {}, CodecUnsupported, "codec"),
        # 3: applicability
        (tensor(Dtype.INT32, (1,) * 33, "float16"), {}, CodecDataInvalid, "codec"),
        (tensor(Dtype.BOOL, codec="int8"), {}, CodecDataInvalid, "codec"),
        (tensor(Dtype.FLOAT16, codec="bfloat16"), {}, CodecDataInvalid, "codec"),
        # 4: rank
        (tensor(shape=(1,) * 33), {}, LimitExceeded, "shape"),
        (tensor(shape=(1,) * 32 + (-1,)), {}, LimitExceeded, "shape"),
        (tensor(Dtype.UINT8, (1, 1, 1)), {"limits": Limits(max_rank=2)}, LimitExceeded, "shape"),
        # 5: shape
        (tensor(shape=(-1, 0), payload=b""), {}, ShapeInvalid, "shape"),
        (tensor(shape=(-2, -3), payload=bytes(24)), {}, ShapeInvalid, "shape"),
        (tensor(Dtype.INT64, (2**62, 4)), {}, ShapeInvalid, "shape"),
        (tensor(Dtype.FLOAT64, (2**61,)), {}, ShapeInvalid, "shape"),
        (
            tensor(Dtype.FLOAT64, (2**61,)),
            {"limits": Limits(max_tensor_bytes=8)},
            ShapeInvalid,
            "shape",
        ),
        # 6: decoded size
        (tensor(Dtype.UINT8, (2**63 - 1,)), {}, LimitExceeded, "shape"),
        (
            tensor(shape=(2**31,)),
            {"limits": Limits(max_tensor_bytes=2**32)},
            LimitExceeded,
            "shape",
        ),
        (tensor(shape=(2**32 + 1,)), {}, LimitExceeded, "shape"),
        (
            tensor(shape=(3,), payload=bytes(5)),
            {"limits": Limits(max_tensor_bytes=8)},
            LimitExceeded,
            "shape",
        ),
        # 8: payload
        (tensor(shape=(2**32,), payload=b""), {}, TensorSizeMismatch, "payload"),
        (tensor(payload=bytes(7)), {}, TensorSizeMismatch, "payload"),
        (tensor(shape=(), payload=b""), {}, TensorSizeMismatch, "payload"),
        (tensor(shape=(0,), payload=bytes(4)), {}, TensorSizeMismatch, "payload"),
        (tensor(codec="zstd", payload=b""), {}, CodecDataInvalid, "payload"),
        (
            tensor(codec="int8", payload=struct.pack("<db2b", -1.0, 0, 0, 0)),
            {},
            CodecDataInvalid,
            "payload",
        ),
        # 9: BOOL values
        (tensor(Dtype.BOOL, payload=b"\x01\x02"), {}, TensorValueInvalid, "payload"),
        (
            tensor(Dtype.BOOL, (3,), "zstd", zstandard.compress(b"\x01\x02\x00")),
            {},
            TensorValueInvalid,
            "payload",
        ),
    ],
)
def test_check_order(
    encoded: EncodedTensor, kwargs: dict[str, Any], error: type[PollenError], field: str
) -> None:
    with pytest.raises(error) as info:
        decode_tensor(encoded, **kwargs)
    assert type(info.value) is error
    assert info.value.field == field


@pytest.mark.parametrize(
    ("encoded", "kwargs"),
    [
        (tensor(payload=FLOAT32_2), {"dtypes": {Dtype.FLOAT32}}),
        (tensor(payload=FLOAT32_2, codec=""), {"codecs": {"raw"}}),
        (tensor(Dtype.INT16, (1,) * 30 + (1, 2), payload=bytes(4)), {}),
        (tensor(shape=(4,), payload=bytes(16)), {"limits": Limits(max_tensor_bytes=16)}),
        (tensor(shape=(0, 5), payload=b""), {}),
        (tensor(Dtype.BOOL, (2, 2), payload=b"\x01\x00\x00\x01"), {}),
    ],
)
def test_valid_tensors_at_the_edges(encoded: EncodedTensor, kwargs: dict[str, Any]) -> None:
    decoded = decode_tensor(encoded, **kwargs)
    assert decoded.shape == encoded.shape
    assert decoded.dtype == encoded.dtype.numpy
    assert decoded.tobytes() == bytes(encoded.payload)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_payloads_may_be_views_into_a_larger_buffer(codec: str) -> None:
    """The wire layer hands over memoryview slices of the received message."""
    array = np.array([[0.5, -3.0], [2.0, 1.0]], dtype=np.float32)
    encoded = encode_tensor(array, codec=codec, k=4 if codec == "topk" else None)
    message = b"header" + bytes(encoded.payload) + b"trailer"
    view = memoryview(message)[6 : 6 + len(bytes(encoded.payload))]
    received = dataclasses.replace(encoded, payload=view)
    np.testing.assert_allclose(decode_tensor(received), array, atol=2e-2)


@pytest.mark.parametrize("number", [0, 14])
def test_a_bad_wire_dtype_number_fails_first(number: int) -> None:
    bad = EncodedTensor(dtype=number, shape=(-1,), codec="nope", payload=b"")  # type: ignore[arg-type]
    with pytest.raises(DtypeUnsupported) as info:
        decode_tensor(bad, field="t")
    assert info.value.field == "t.dtype"


def test_raw_decode_is_zero_copy_and_read_only() -> None:
    payload = struct.pack("<4d", 1, 2, 3, 4)
    decoded = decode_tensor(tensor(Dtype.FLOAT64, (2, 2), payload=payload))
    assert np.shares_memory(decoded, np.frombuffer(payload, dtype=np.uint8))
    assert not decoded.flags.writeable


def test_empty_shapes_numpy_cannot_hold_are_this_implementations_limit() -> None:
    with pytest.raises(LimitExceeded, match="numpy") as info:
        decode_tensor(tensor(shape=(0, 2**62, 2**62), payload=b""))
    assert info.value.field == "shape"


def _huge_payloads() -> list[tuple[str, bytes, type[PollenError]]]:
    return [
        ("raw", bytes(16), TensorSizeMismatch),
        ("zstd", zstandard.ZstdCompressor().compress(bytes(16)), TensorSizeMismatch),
        (
            "zstd",
            zstandard.ZstdCompressor(write_content_size=False).compress(bytes(16)),
            TensorSizeMismatch,
        ),
        ("float16", bytes(16), TensorSizeMismatch),
        ("bfloat16", bytes(16), TensorSizeMismatch),
        ("int8", struct.pack("<db", 1.0, 0) + bytes(16), TensorSizeMismatch),
        ("topk", bytes(7), TensorSizeMismatch),
        ("topk", struct.pack("<Q2Q2f", 2, 9, 3, 1.0, 2.0), CodecDataInvalid),
    ]


@pytest.mark.parametrize(("codec", "payload", "error"), _huge_payloads())
def test_validation_happens_before_allocation(
    codec: str, payload: bytes, error: type[PollenError]
) -> None:
    """A shape of 2^40 elements (4 TiB) under limits that allow it, with a short payload:
    the error is the size or structure error, never a MemoryError or a 4 TiB array."""
    huge = tensor(Dtype.FLOAT32, (2**20, 2**20), codec, payload)
    with pytest.raises(error):
        decode_tensor(huge, limits=Limits(max_tensor_bytes=2**62))


def test_field_prefix() -> None:
    with pytest.raises(ShapeInvalid) as info:
        decode_tensor(tensor(shape=(-1,)), field="result.fit.parameters[3]")
    assert info.value.field == "result.fit.parameters[3].shape"


# --- lists ----------------------------------------------------------------------------------------


def test_decode_tensors_in_order() -> None:
    arrays: list[npt.NDArray[Any]] = [np.arange(3, dtype=np.int8), np.ones((2, 2)), np.array(True)]
    decoded = decode_tensors(encode_tensors(arrays))
    assert [a.tolist() for a in decoded] == [a.tolist() for a in arrays]


def test_decode_tensors_checks_the_count_before_any_tensor() -> None:
    bad = tensor(dtype=Dtype.FLOAT32, shape=(-1,))
    with pytest.raises(LimitExceeded) as info:
        decode_tensors([bad, bad, bad], limits=Limits(max_tensors=2), field="parameters")
    assert info.value.field == "parameters"
    assert decode_tensors([tensor(), tensor()], limits=Limits(max_tensors=2))


def test_decode_tensors_reports_the_first_bad_tensor() -> None:
    tensors = [tensor(payload=FLOAT32_2), tensor(codec="nope"), tensor(shape=(-1,))]
    with pytest.raises(CodecUnsupported) as info:
        decode_tensors(tensors, field="parameters")
    assert info.value.field == "parameters[1].codec"
    with pytest.raises(DtypeUnsupported) as dtype_info:
        decode_tensors(tensors, dtypes={Dtype.INT8})
    assert dtype_info.value.field == "tensors[0].dtype"


def test_encode_tensors_per_tensor_codecs_and_k() -> None:
    arrays: list[npt.NDArray[Any]] = [np.arange(4, dtype=np.float32), np.arange(3, dtype=np.int64)]
    encoded = encode_tensors(arrays, codec=["topk", "zstd"], k=[2, None], names=["w", "b"])
    assert [(t.codec, t.name) for t in encoded] == [("topk", "w"), ("zstd", "b")]
    decoded = decode_tensors(encoded)
    assert decoded[0].tolist() == [0.0, 0.0, 2.0, 3.0]
    assert decoded[1].tolist() == [0, 1, 2]
    assert [t.codec for t in encode_tensors(arrays, codec="zstd")] == ["zstd", "zstd"]


def test_encode_tensors_errors_name_the_element() -> None:
    arrays: list[npt.NDArray[Any]] = [np.zeros(2), np.zeros(2, np.int32)]
    with pytest.raises(CodecDataInvalid) as info:
        encode_tensors(arrays, codec="float16", field="parameters")
    assert info.value.field == "parameters[1].codec"


@pytest.mark.parametrize(
    "kwargs",
    [{"codec": ["raw"]}, {"k": [1, 2, 3]}, {"names": ["a"]}, {"names": "ab"}],
)
def test_encode_tensors_needs_one_setting_per_tensor(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        encode_tensors([np.zeros(2), np.zeros(2)], **kwargs)


def test_encode_tensors_respects_the_receivers_limits() -> None:
    arrays = [np.zeros(4, np.float32)] * 3
    with pytest.raises(LimitExceeded) as info:
        encode_tensors(arrays, limits=Limits(max_tensors=2))
    assert info.value.field == "tensors"
    with pytest.raises(LimitExceeded) as size_info:
        encode_tensors(arrays, limits=Limits(max_tensor_bytes=15))
    assert size_info.value.field == "tensors[0].shape"
    assert len(encode_tensors(arrays, limits=Limits(max_tensors=3, max_tensor_bytes=16))) == 3


def test_bfloat16_arrays_travel_as_bfloat16() -> None:
    array = np.array([1.0, -2.5, 3.0], dtype=ml_dtypes.bfloat16)
    encoded = encode_tensor(array, codec="zstd")
    assert encoded.dtype is Dtype.BFLOAT16
    decoded = decode_tensor(encoded)
    assert decoded.dtype == np.dtype(ml_dtypes.bfloat16)
    assert decoded.view("<u2").tolist() == [0x3F80, 0xC020, 0x4040]


def test_blob_tensors_are_checked_at_step_7_before_fetching() -> None:
    header = EncodedTensor(dtype=Dtype.FLOAT32, shape=(4,), codec="raw", payload=b"")
    good = dataclasses.replace(header, blob=BlobRef(sha256=bytes(32), size=16))
    assert check_tensor(good) == 4
    short = dataclasses.replace(header, blob=BlobRef(sha256=b"x", size=16))
    with pytest.raises(InvalidArgument, match="32 bytes") as info:
        check_tensor(short, field="parameters[0]")
    assert info.value.field == "parameters[0].blob.sha256"
    # Earlier steps win over a malformed reference.
    with pytest.raises(CodecUnsupported):
        check_tensor(dataclasses.replace(short, codec="x-unknown"))
    with pytest.raises(LimitExceeded):
        check_tensor(good, limits=Limits(max_blob_bytes=15))
    with pytest.raises(InvalidArgument, match="fetch it"):
        decode_tensor(good)
