"""The float16 and bfloat16 cast codecs, and correctly rounded float narrowing.

Both codecs apply to FLOAT32 and FLOAT64 tensors and send two bytes per element. Encoding
rounds each source value once, to nearest with ties to even (PLN-COD-013, PLN-COD-017).

numpy converts binary32 and binary64 to binary16 directly with one correct rounding, so
float16 uses it. bfloat16 is rounded here on the integer bits instead: libraries that
convert binary64 to bfloat16 usually go through binary32 and round twice, and integer
arithmetic does not depend on the floating-point environment (flush-to-zero modes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.codecs._base import (
    Payload,
    byte_view,
    canonical,
    check_length,
    reject_params,
    shaped,
    source_dtype,
)
from pollen.dtypes import Dtype

U16 = npt.NDArray[np.uint16]

_F16_NAN = 0x7E00
_BF16_NAN = 0x7FC0
_BF16_INF = 0x7F80
_F64_MAGNITUDE = np.uint64(0x7FFF_FFFF_FFFF_FFFF)
_F64_INF = np.uint64(0x7FF0_0000_0000_0000)
_F64_MANTISSA = np.uint64((1 << 52) - 1)
_F64_IMPLICIT = np.uint64(1 << 52)
# Binary64 bits of the smallest normal bfloat16 (2^-126).
_BF16_MIN_NORMAL = np.uint64((1023 - 126) << 52)
# Subtracting this from a binary64 magnitude whose exponent is in bfloat16's normal range
# rebiases the exponent field (1023 -> 127) in place, leaving the mantissa below it.
_REBIAS = np.uint64((1023 - 127) << 52)
# Binary64 mantissa bits below bfloat16's 7.
_DROP = np.uint64(52 - 7)
_ONE = np.uint64(1)
# Elements per step of the bfloat16 rounding: the temporaries then stay in cache.
_CHUNK = 1 << 16


def _round_shift(
    value: npt.NDArray[np.uint64], shift: np.uint64 | npt.NDArray[np.uint64]
) -> npt.NDArray[np.uint64]:
    """value / 2^shift rounded to nearest, ties to even (1 <= shift <= 63, value < 2^63).

    Adding half-minus-one plus the lowest kept bit and truncating rounds ties to even: a tie
    carries into the kept bits exactly when the kept value is odd.
    """
    half_minus_one = (_ONE << (shift - _ONE)) - _ONE
    rounded: npt.NDArray[np.uint64] = (value + half_minus_one + ((value >> shift) & _ONE)) >> shift
    return rounded


def _float64_chunk_to_bfloat16(bits: npt.NDArray[np.uint64]) -> U16:
    magnitude = bits & _F64_MAGNITUDE
    normal = magnitude >= _BF16_MIN_NORMAL
    # Computed for every element; the ones outside the normal range are replaced below
    # (their rebiased value wraps around, harmlessly, in unsigned arithmetic).
    rounded = _round_shift(magnitude - _REBIAS, _DROP)
    # A carry out of the largest finite value, or any larger exponent, is infinity.
    np.minimum(rounded, _BF16_INF, out=rounded)
    if not normal.all():
        small = np.flatnonzero(~normal)
        tiny = magnitude[small]
        exponent = tiny >> np.uint64(52)
        significand = np.where(exponent != 0, (tiny & _F64_MANTISSA) | _F64_IMPLICIT, tiny)
        # Subnormal results count in units of 2^-133: shift the 53-bit significand (worth
        # 2^(exponent - 1075)) down by 942 - exponent; 63 already rounds everything to 0.
        shift = np.minimum(np.uint64(942) - np.maximum(exponent, _ONE), np.uint64(63))
        rounded[small] = _round_shift(significand, shift)
    rounded[magnitude > _F64_INF] = _BF16_NAN
    sign = (bits >> 48) & 0x8000
    return (rounded | sign).astype(np.uint16)


def float64_to_bfloat16_bits(values: npt.NDArray[Any]) -> U16:
    """bfloat16 bits of binary64 values, each rounded once to nearest, ties to even.

    Overflow gives infinity, subnormal results are kept, and every NaN becomes 0x7FC0 with
    its sign. `values` is a flat array of dtype "<f8".
    """
    bits = values.view(np.dtype("<u8"))
    out = np.empty(bits.shape, dtype=np.uint16)
    for start in range(0, bits.size, _CHUNK):
        out[start : start + _CHUNK] = _float64_chunk_to_bfloat16(bits[start : start + _CHUNK])
    return out


def float32_to_bfloat16_bits(values: npt.NDArray[Any]) -> U16:
    """bfloat16 bits of binary32 values, rounded to nearest, ties to even (NaN -> 0x7FC0).

    `values` is a flat array of dtype "<f4".
    """
    bits = values.view(np.dtype("<u4"))
    out = np.empty(bits.shape, dtype=np.uint16)
    for start in range(0, bits.size, _CHUNK):
        chunk = bits[start : start + _CHUNK]
        # The same tie-to-even carry trick as _round_shift, for a fixed shift of 16. Only
        # NaNs can wrap around, and they are replaced.
        rounded = (chunk + (0x7FFF + ((chunk >> 16) & 1))) >> 16
        nan = (chunk & 0x7FFF_FFFF) > 0x7F80_0000
        rounded[nan] = (chunk[nan] >> 16) & 0x8000 | _BF16_NAN
        out[start : start + _CHUNK] = rounded
    return out


def float_to_float16_bits(values: npt.NDArray[Any]) -> U16:
    """binary16 bits of binary32 or binary64 values, rounded once (NaN -> 0x7E00 | sign)."""
    with np.errstate(over="ignore", invalid="ignore"):
        bits = values.astype(np.dtype("<f2")).view(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        bits[nan] = np.where(np.signbit(values[nan]), 0x8000 | _F16_NAN, _F16_NAN)
    return bits


def bfloat16_bits_to_float32(bits: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """The binary32 values of bfloat16 bits (exact: the bits are the upper half)."""
    return (bits.astype(np.dtype("<u4")) << 16).view(np.dtype("<f4"))


def narrow_float64(values: npt.NDArray[np.float64], dtype: Dtype) -> npt.NDArray[Any]:
    """binary64 values converted to a float dtype with one rounding to nearest, ties to even.

    Returns a flat array of `dtype.numpy`.
    """
    if dtype is Dtype.FLOAT64:
        return values.astype(dtype.numpy, copy=False)
    if dtype is Dtype.BFLOAT16:
        return float64_to_bfloat16_bits(values.astype("<f8", copy=False)).view(dtype.numpy)
    # numpy's binary64 -> binary32 and -> binary16 conversions are single IEEE roundings.
    with np.errstate(over="ignore", under="ignore"):
        return values.astype(dtype.numpy)


@dataclass(frozen=True)
class _CastCodec:
    """Shared shape of the two cast codecs: two bytes per element."""

    id: str

    def applies_to(self, dtype: Dtype) -> bool:
        """FLOAT32 and FLOAT64 only."""
        return dtype in (Dtype.FLOAT32, Dtype.FLOAT64)

    def _narrow(self, flat: npt.NDArray[Any], dtype: Dtype) -> U16:
        raise NotImplementedError

    def _widen(self, bits: npt.NDArray[Any], dtype: Dtype) -> npt.NDArray[Any]:
        raise NotImplementedError

    def encode(self, array: npt.NDArray[Any], **params: object) -> memoryview:
        """numel little-endian 16-bit values, each rounded once from its source value."""
        reject_params(self.id, params)
        dtype = source_dtype(self, array)
        bits = self._narrow(canonical(array, dtype), dtype)
        return bits.astype(np.dtype("<u2"), copy=False).view(np.uint8).data

    def decode(
        self, payload: Payload, dtype: Dtype, shape: tuple[int, ...], numel: int
    ) -> npt.NDArray[Any]:
        """Exact widening to the tensor's dtype; TENSOR_SIZE_MISMATCH for a wrong length."""
        view = byte_view(payload)
        check_length(self.id, view.nbytes, numel * 2)
        bits = np.frombuffer(view, dtype=np.dtype("<u2"))
        # Signalling NaNs raise "invalid" when widened; they still become NaNs of their sign.
        with np.errstate(invalid="ignore"):
            return shaped(self._widen(bits, dtype).astype(dtype.numpy, copy=False), shape)


@dataclass(frozen=True)
class Float16Codec(_CastCodec):
    """IEEE binary16."""

    id: str = "float16"

    def _narrow(self, flat: npt.NDArray[Any], dtype: Dtype) -> U16:
        return float_to_float16_bits(flat)

    def _widen(self, bits: npt.NDArray[Any], dtype: Dtype) -> npt.NDArray[Any]:
        # binary16 -> binary32/64 is exact, and numpy keeps the sign of NaNs.
        return bits.view(np.dtype("<f2")).astype(dtype.numpy)


@dataclass(frozen=True)
class BFloat16Codec(_CastCodec):
    """bfloat16: the upper 16 bits of a binary32."""

    id: str = "bfloat16"

    def _narrow(self, flat: npt.NDArray[Any], dtype: Dtype) -> U16:
        if dtype is Dtype.FLOAT32:
            return float32_to_bfloat16_bits(flat)
        return float64_to_bfloat16_bits(flat)

    def _widen(self, bits: npt.NDArray[Any], dtype: Dtype) -> npt.NDArray[Any]:
        # binary32 -> binary64 is exact; a NaN stays a NaN of the same sign.
        return bfloat16_bits_to_float32(bits)


FLOAT16 = Float16Codec()
BFLOAT16 = BFloat16Codec()
