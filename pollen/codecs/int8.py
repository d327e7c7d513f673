"""The int8 codec: affine quantization of float tensors to signed bytes.

Payload: scale (binary64 LE), zero_point (int8), then one int8 per element. All encoder
arithmetic is binary64 with IEEE division and ties-to-even rounding, as the spec fixes it
(PLN-COD-026), so every conforming encoder writes the same bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.codecs._base import (
    UNSIGNED,
    Payload,
    byte_view,
    canonical,
    check_length,
    reject_params,
    shaped,
    source_dtype,
)
from pollen.codecs.cast import bfloat16_bits_to_float32, narrow_float64
from pollen.dtypes import FLOAT_DTYPES, Dtype
from pollen.errors import CodecDataInvalid, TensorValueInvalid

_HEADER = struct.Struct("<db")
# q for each byte value 0..255 read as int8, in byte order, for the decode lookup table.
_Q_BY_BYTE = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float64)


def to_float64(flat: npt.NDArray[Any], dtype: Dtype) -> npt.NDArray[np.float64]:
    """Exact binary64 values of a flat float array of `dtype.numpy`."""
    # Signalling NaNs raise "invalid" when widened; the caller refuses every NaN anyway.
    with np.errstate(invalid="ignore"):
        if dtype is Dtype.BFLOAT16:
            # Widened from the bits, so no library conversion is trusted.
            return bfloat16_bits_to_float32(flat.view(np.dtype("<u2"))).astype(np.float64)
        return flat.astype(np.float64, copy=False)


@dataclass(frozen=True)
class Int8Codec:
    """Affine int8 quantization, for the four float dtypes."""

    id: str = "int8"

    def applies_to(self, dtype: Dtype) -> bool:
        """FLOAT16, BFLOAT16, FLOAT32 and FLOAT64."""
        return dtype in FLOAT_DTYPES

    def encode(self, array: npt.NDArray[Any], **params: object) -> memoryview:
        """Quantize; TENSOR_VALUE_INVALID for NaN, infinity, or a scale that underflows."""
        reject_params(self.id, params)
        dtype = source_dtype(self, array)
        x = to_float64(canonical(array, dtype), dtype)
        if not np.isfinite(x).all():
            raise TensorValueInvalid("int8 cannot encode NaN or infinity", field="values")
        lo = min(0.0, float(x.min())) if x.size else 0.0
        hi = max(0.0, float(x.max())) if x.size else 0.0
        scale = 1.0 if hi == lo else (hi - lo) / 255
        if scale == 0.0:
            raise TensorValueInvalid(
                "int8 scale (hi - lo) / 255 underflows to zero for these values", field="values"
            )
        if math.isinf(scale):
            # hi - lo overflowed: the formula would write a scale every decoder refuses.
            raise TensorValueInvalid(
                "int8 scale is infinite: the values span more than the binary64 range",
                field="values",
            )
        # Python's round() is ties-to-even on binary64, like np.rint below.
        zero_point = min(max(-128 - round(lo / scale), -128), 127)
        with np.errstate(over="ignore"):
            q = x / scale
        np.rint(q, out=q)
        q += zero_point
        np.clip(q, -128, 127, out=q)
        out = np.empty(_HEADER.size + x.size, dtype=np.uint8)
        out[: _HEADER.size] = np.frombuffer(_HEADER.pack(scale, zero_point), dtype=np.uint8)
        out[_HEADER.size :] = q.astype(np.int8).view(np.uint8)
        return out.data

    def decode(
        self, payload: Payload, dtype: Dtype, shape: tuple[int, ...], numel: int
    ) -> npt.NDArray[Any]:
        """y = (q - zero_point) x scale in binary64, rounded once to the tensor's dtype."""
        view = byte_view(payload)
        check_length(self.id, view.nbytes, _HEADER.size + numel)
        scale, zero_point = _HEADER.unpack_from(view)
        if not math.isfinite(scale) or scale < 0:
            raise CodecDataInvalid(f"int8 scale {scale!r} is not finite and >= 0", field="payload")
        if scale == 0:
            # The spec lets a decoder read this as zeros; refusing it is the SHOULD.
            raise CodecDataInvalid("int8 scale is zero", field="payload")
        # Every element is one of 256 values, so each is computed (and rounded) once.
        with np.errstate(over="ignore"):
            table = narrow_float64((_Q_BY_BYTE - zero_point) * scale, dtype)
        table_bits = table.view(UNSIGNED[dtype.itemsize])
        q = np.frombuffer(view, dtype=np.uint8, count=numel, offset=_HEADER.size)
        return shaped(table_bits[q].view(dtype.numpy), shape)


INT8 = Int8Codec()
