"""Encoding arrays into tensors and decoding received tensors with the spec's check order.

`decode_tensor` applies the fixed decode check order of spec chapter 8, so that every
invalid tensor fails with exactly one typed error, and it decides everything about sizes
from the shape and the payload's length before it allocates the decoded array. Blob
payloads are fetched and verified elsewhere; by the time a tensor gets here, its payload
is bytes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from pollen.blob import BlobRef
from pollen.codecs import CODECS, Codec, Payload, get_codec
from pollen.dtypes import Dtype
from pollen.errors import (
    CodecDataInvalid,
    CodecUnsupported,
    DtypeUnsupported,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    TensorValueInvalid,
)
from pollen.limits import Limits, check_shape

_T = TypeVar("_T")

#: The codec an empty Tensor.codec means (PLN-TEN-003).
DEFAULT_CODEC = "raw"
_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, kw_only=True)
class EncodedTensor:
    """A tensor as it travels: dtype, shape, codec id, encoded payload, informative name.

    Nothing is validated here, so that a received tensor can be built as it came and
    `decode_tensor` reports its problems in the spec's order.
    """

    dtype: Dtype
    shape: tuple[int, ...]
    codec: str
    payload: bytes | memoryview
    name: str = ""
    #: Set when the payload travels as a blob: `payload` is then empty until the receiver
    #: has fetched and verified the blob and replaced it (dataclasses.replace).
    blob: BlobRef | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))


def _prefix(exc: PollenError, field: str) -> None:
    """Make an error's `field` a path from `field` (errors are raised relative to a tensor)."""
    if field:
        exc.field = f"{field}.{exc.field}" if exc.field else field


def decode_tensor(
    tensor: EncodedTensor,
    *,
    limits: Limits = _DEFAULT_LIMITS,
    codecs: Collection[str] | None = None,
    dtypes: Collection[Dtype] | None = None,
    field: str = "",
) -> npt.NDArray[Any]:
    """Decode a received tensor, checking it in the spec's order (steps 1-6, 8, 9).

    `codecs` and `dtypes` are the allowed sets (the session's negotiated ones; None allows
    everything this implementation knows). `field` prefixes the `field` of errors, for
    example "parameters[3]". The result is read-only when it is a view of a bytes payload.
    """
    try:
        return _decode(tensor, limits, codecs, dtypes)
    except PollenError as exc:
        _prefix(exc, field)
        raise


def check_tensor(
    tensor: EncodedTensor,
    *,
    limits: Limits = _DEFAULT_LIMITS,
    codecs: Collection[str] | None = None,
    dtypes: Collection[Dtype] | None = None,
    field: str = "",
) -> int:
    """Check a received tensor's header (steps 1-7) and return its element count.

    For a tensor whose payload is a blob this is everything that can be judged before
    fetching it, so a receiver never downloads the payload of a tensor it would refuse.
    """
    try:
        return _check(tensor, limits, codecs, dtypes)[2]
    except PollenError as exc:
        _prefix(exc, field)
        raise


def _check(
    tensor: EncodedTensor,
    limits: Limits,
    codecs: Collection[str] | None,
    dtypes: Collection[Dtype] | None,
) -> tuple[Dtype, Codec, int]:
    # 1 (a wire number that slipped in instead of a Dtype is still judged here, in order)
    dtype = tensor.dtype if isinstance(tensor.dtype, Dtype) else Dtype.from_wire(tensor.dtype)
    if dtypes is not None and dtype not in dtypes:
        raise DtypeUnsupported(f"dtype {dtype.name} is not among the allowed dtypes", field="dtype")
    # 2
    codec_id = tensor.codec or DEFAULT_CODEC
    if codecs is not None and codec_id not in codecs:
        raise CodecUnsupported(
            f"codec {codec_id!r} is not among the allowed codecs",
            field="codec",
            supported_codecs=sorted(c for c in codecs if c in CODECS),
        )
    codec = get_codec(codec_id)
    # 3
    if not codec.applies_to(dtype):
        raise CodecDataInvalid(f"codec {codec_id!r} does not apply to {dtype.name}", field="codec")
    # 4-6
    numel = check_shape(tensor.shape, dtype, limits)
    # 7
    if tensor.blob is not None:
        try:
            tensor.blob.check()
        except PollenError as exc:
            _prefix(exc, "blob")
            raise
        if tensor.blob.size > limits.max_blob_bytes:
            raise LimitExceeded(
                f"blob of {tensor.blob.size} bytes exceeds max_blob_bytes {limits.max_blob_bytes}",
                field="blob.size",
            )
    return dtype, codec, numel


def _decode(
    tensor: EncodedTensor,
    limits: Limits,
    codecs: Collection[str] | None,
    dtypes: Collection[Dtype] | None,
) -> npt.NDArray[Any]:
    dtype, codec, numel = _check(tensor, limits, codecs, dtypes)
    if tensor.blob is not None:
        raise InvalidArgument(
            "the payload is a blob: fetch it, then decode with the payload in place", field="blob"
        )
    # 8
    array = codec.decode(tensor.payload, dtype, tensor.shape, numel)
    # 9
    if dtype is Dtype.BOOL and numel and np.any(array.reshape(-1).view(np.uint8) > 1):
        raise TensorValueInvalid("BOOL elements must be 0x00 or 0x01", field="payload")
    return array


def decode_tensors(
    tensors: Sequence[EncodedTensor],
    *,
    limits: Limits = _DEFAULT_LIMITS,
    codecs: Collection[str] | None = None,
    dtypes: Collection[Dtype] | None = None,
    field: str = "tensors",
) -> list[npt.NDArray[Any]]:
    """Decode a tensor list in order; the list's length is checked first (PLN-TEN-011).

    An error from element i has a `field` like "tensors[i].shape" (`field` names the list).
    """
    if len(tensors) > limits.max_tensors:
        raise LimitExceeded(
            f"{len(tensors)} tensors exceed max_tensors {limits.max_tensors}", field=field
        )
    return [
        decode_tensor(tensor, limits=limits, codecs=codecs, dtypes=dtypes, field=f"{field}[{i}]")
        for i, tensor in enumerate(tensors)
    ]


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgument(f"a tensor name is text, got {type(name).__name__}", field="name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"the name is not valid Unicode: {exc.reason}", field="name"
        ) from None
    if size > _DEFAULT_LIMITS.max_name_bytes:
        raise InvalidArgument(
            f"the name is {size} bytes of UTF-8, over {_DEFAULT_LIMITS.max_name_bytes}",
            field="name",
        )
    return name


def encode_tensor(
    array: npt.ArrayLike, *, codec: str = DEFAULT_CODEC, name: str = "", k: int | None = None
) -> EncodedTensor:
    """Encode an array (or anything np.asarray takes) with a codec.

    `k` is the topk codec's parameter (the number of elements kept). Raises
    DTYPE_UNSUPPORTED for arrays the protocol cannot carry, CODEC_UNSUPPORTED for unknown
    codecs, CODEC_DATA_INVALID for a codec that does not apply to the dtype,
    TENSOR_VALUE_INVALID for values the codec refuses, INVALID_ARGUMENT for bad
    parameters or names. With the raw codec the payload may share the array's memory.
    """
    _check_name(name)
    try:
        values = np.asarray(array)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"not an array: {exc}", field="values") from None
    dtype = Dtype.from_numpy(values.dtype)
    chosen = get_codec(codec or DEFAULT_CODEC)
    if not chosen.applies_to(dtype):
        raise CodecDataInvalid(f"codec {chosen.id!r} does not apply to {dtype.name}", field="codec")
    payload = chosen.encode(values) if k is None else chosen.encode(values, k=k)
    return EncodedTensor(
        dtype=dtype, shape=values.shape, codec=chosen.id, payload=payload, name=name
    )


def _one_each(values: Sequence[_T], count: int, what: str) -> list[_T]:
    items = list(values)
    if len(items) != count:
        raise InvalidArgument(f"{len(items)} {what} given for {count} tensors", field=what)
    return items


def encode_tensors(
    arrays: Iterable[npt.ArrayLike],
    *,
    codec: str | Sequence[str] = DEFAULT_CODEC,
    names: Sequence[str] | None = None,
    k: int | Sequence[int | None] | None = None,
    limits: Limits | None = None,
    field: str = "tensors",
) -> list[EncodedTensor]:
    """Encode a list of arrays, in order.

    `codec` and `k` are either one value for every array or a sequence with one per array;
    `names` has one name per array. With `limits` (the receiver's), the list and each
    tensor are checked against them too, since a sender must not send what the receiver
    refuses. An error about array i has a `field` like "tensors[i].codec".
    """
    items = list(arrays)
    count = len(items)
    if limits is not None and count > limits.max_tensors:
        raise LimitExceeded(f"{count} tensors exceed max_tensors {limits.max_tensors}", field=field)
    codec_ids = [codec] * count if isinstance(codec, str) else _one_each(codec, count, "codec")
    ks = [k] * count if k is None or isinstance(k, int) else _one_each(k, count, "k")
    if isinstance(names, str):
        raise InvalidArgument("names is a sequence of names, not one name", field="names")
    labels = [""] * count if names is None else _one_each(names, count, "names")
    encoded = []
    for i, array in enumerate(items):
        try:
            tensor = encode_tensor(array, codec=codec_ids[i], name=labels[i], k=ks[i])
            if limits is not None:
                check_shape(tensor.shape, tensor.dtype, limits)
        except PollenError as exc:
            _prefix(exc, f"{field}[{i}]")
            raise
        encoded.append(tensor)
    return encoded


__all__ = [
    "DEFAULT_CODEC",
    "EncodedTensor",
    "Payload",
    "check_tensor",
    "decode_tensor",
    "decode_tensors",
    "encode_tensor",
    "encode_tensors",
]
