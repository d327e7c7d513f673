"""Write, or check, the golden test vectors of Pollen protocol v1.

    python -m conformance.vectors.generate           # (re)write the vector tree
    python -m conformance.vectors.generate --check   # exit 1 if regeneration would differ

Independence: every expected output below is computed from first principles (integer and
Fraction arithmetic for floating-point rounding, the int8 formulas of the spec written out
in plain Python, a sort-based top-k, hand-built protobuf and Zstandard bytes). Nothing here
calls the code under test (pollen.codecs, pollen.tensors, pollen.wire, pollen.blob), or the
vectors would only check that the code agrees with itself. Third-party libraries are used
only to double-check the hand-built inputs: the generated protobuf classes parse every
well-formed message, and `zstandard` decompresses every frame (valid ones must give the
content, invalid ones must fail).

Determinism: pseudo-random data comes from SHA-256 in counter mode with fixed seeds, frames
with real compressed blocks are frozen hex constants, JSON is written with sorted keys, and
file names derive from the stable tcId. Test ids are allocated in blocks of 100 per group
(TensorDecode 101-899, TensorEncode 1101-1699, ChunkSet 2101-, Value 3101-); add new tests
at the end of their group so that existing ids never change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

from pollen._generated.pollen.v1 import tensor_pb2, value_pb2

GENERATOR_VERSION = "1.0"
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "manifest.schema.json"
VECTOR_DIR = Path(__file__).resolve().parent
# Directories whose whole content the generator owns (extra files there are an error).
DATA_DIRS = ("tensor_decode", "tensor_encode", "chunk_set", "value")

Json = dict[str, Any]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Error code names of the wire enum pollen.v1.ErrorCode (spec/errors.yaml).
ERROR_CODES = (
    "INTERNAL",
    "VERSION_UNSUPPORTED",
    "CAPABILITY_MISMATCH",
    "INVALID_ARGUMENT",
    "SESSION_UNKNOWN",
    "TASK_UNKNOWN",
    "TASK_NOT_ASSIGNED",
    "TASK_EXPIRED",
    "STALE_ROUND",
    "RESULT_MISMATCH",
    "UPDATE_REJECTED",
    "DTYPE_UNSUPPORTED",
    "CODEC_UNSUPPORTED",
    "CODEC_DATA_INVALID",
    "TENSOR_SIZE_MISMATCH",
    "SHAPE_INVALID",
    "TENSOR_VALUE_INVALID",
    "LIMIT_EXCEEDED",
    "BLOB_NOT_FOUND",
    "BLOB_DIGEST_MISMATCH",
    "BLOB_INCOMPLETE",
    "UNSUPPORTED_INSTRUCTION",
    "APP_ERROR",
    "UNAVAILABLE",
    "UNAUTHENTICATED",
)

CODEC_IDS = ("raw", "zstd", "float16", "bfloat16", "int8", "topk")

# Flag -> explanation (the manifest's "notes"). Every flag used must be here, and every flag
# here must be used.
NOTES: dict[str, str] = {
    "BoolValueInvalid": "A BOOL element is neither 0x00 nor 0x01 (check order step 9).",
    "CheckOrder": "The input has several defects; the expected error is the one the fixed "
    "check order (of decoding, or of finishing a blob) reaches first.",
    "Clamp": "A quantized value falls outside [-128, 127] before clamping.",
    "CodecNotApplicable": "The codec does not apply to the tensor's dtype (check order step 3).",
    "CorruptChunk": "A chunk's bytes differ from the blob's, so the final digest does not match.",
    "DecompressionBomb": "A small frame declares far more output than the tensor needs; the "
    "decoder must stop at expected + 1 bytes instead of allocating it all.",
    "DoubleRounding": "The correctly rounded result differs from the one obtained by rounding "
    "twice (for example binary64 -> binary32 -> binary16); exactly one rounding is required.",
    "DuplicateChunk": "A chunk lying entirely within the committed bytes arrives again and "
    "is ignored.",
    "EmptyBlob": "A blob of zero bytes.",
    "EmptyCodecId": "The codec id is the empty string, which means raw.",
    "EmptyTensor": "A shape with an extent 0: no elements, empty canonical bytes.",
    "HighRank": "A shape with many dimensions, at or above the default max_rank 32.",
    "UnrepresentableEmpty": "An empty tensor whose nonzero extents multiply past 2^63 - 1: "
    "valid, but a receiver whose array type cannot represent it may refuse it with "
    "LIMIT_EXCEEDED (PLN-TEN-015).",
    "HugeDeclaredShape": "The declared shape implies gigabytes or more; the decision must be "
    "made from the shape and the payload length, without allocating the tensor.",
    "Infinity": "Positive or negative infinity.",
    "LargeNumel": "numel is 2^32 or more, where the topk index width switches from 4 to 8 "
    "bytes; decided without allocating the tensor.",
    "LimitOverride": "The test sets effective receiver limits (the 'limits' field).",
    "MalformedMessage": "The input is not a well-formed protobuf message.",
    "MissingChunk": "A chunk never arrives.",
    "NaNPayload": "NaN values with non-default payload bits, which must be kept exactly.",
    "NaNSignOnly": "The expected output holds NaNs whose payload bits the spec leaves "
    "unspecified: an element that is NaN in the expected bytes matches any NaN with the same "
    "sign bit; every other element must match bit for bit.",
    "NegativeExtent": "A shape extent is negative.",
    "NegativeZero": "The value -0.0, whose sign bit must be kept.",
    "NotNegotiated": "The test restricts the allowed dtypes or codecs (the 'dtypes' and "
    "'codecs' fields), as a session's negotiation would.",
    "Overflow": "A value whose magnitude rounds above the largest finite value of the target "
    "format, giving an infinity.",
    "PartialOverlap": "A chunk starts inside the committed bytes but ends after them; it is not "
    "written.",
    "ProtobufDefaultWritten": "A proto3 field is written explicitly with its default value.",
    "ProtobufLastWins": "A non-repeated field (or a oneof) occurs several times; the last "
    "occurrence wins.",
    "ProtobufNonMinimalVarint": "A varint is written with redundant continuation bytes, "
    "which protobuf parsers accept.",
    "ProtobufUnknownFields": "The message has fields this version does not define; they must "
    "be ignored.",
    "ProtobufUnpacked": "The repeated int64 shape is written unpacked (one tag per element) "
    "or in several runs; parsers must accept and concatenate them.",
    "RandomData": "Pseudo-random data from a fixed seed.",
    "ReorderedChunks": "A later chunk arrives before an earlier one; it is not written, and "
    "the sender resends it.",
    "RoundingTie": "A value exactly halfway between two representable results; ties go to "
    "the even one.",
    "Scalar": "Shape [] (one element).",
    "ShapeOverflow": "numel or numel x itemsize exceeds 2^63 - 1 (a naive 64-bit product "
    "would wrap around, often to 0).",
    "SignallingNaN": "A signalling NaN (quiet bit clear).",
    "Subnormal": "Subnormal (denormal) numbers, which must not be flushed to zero.",
    "TensorName": "The informative name field is set; it must not change the result.",
    "TopkTie": "Elements of equal magnitude compete for the last kept places; the smaller "
    "flat index wins.",
    "Truncated": "The input is cut short.",
    "Overlong": "The input is longer than it must be.",
    "Underflow": "A nonzero value that rounds to zero in the target format.",
    "UnknownCodec": "The codec id is not one of the registered ids (ids are exact, "
    "lowercase byte strings).",
    "UnknownDtype": "The dtype is UNSPECIFIED (0) or a number this version does not define.",
    "UnsetPayload": "The payload oneof is unset, which means empty inline data.",
    "WrongDigest": "The declared SHA-256 does not match the bytes.",
    "ChunkPastEnd": "A chunk ends past the blob's total size (INVALID_ARGUMENT; nothing "
    "written, the assembler stays usable).",
    "ZeroScale": "An int8 payload with scale 0: decoders SHOULD reject it and MAY decode it "
    "to zeros.",
    "ZstdChecksum": "The frame carries a content checksum (low 32 bits of XXH64).",
    "ZstdCompressedBlock": "The frame holds real compressed blocks (a frozen encoder output).",
    "ZstdDictionary": "The frame header carries a dictionary id, which the codec forbids.",
    "ZstdEncoderChoice": "zstd output is the encoder's choice, so the test has no expected "
    "payload: the payload passes when it is exactly one Zstandard frame and nothing else "
    "(no skippable frame either), carries no dictionary id (an id field holding 0 is allowed), "
    "records no content size other than the input's length, and decompresses to the input "
    "(PLN-COD-007); SHOULD checks: the frame header records the content size (PLN-COD-008), "
    "and its window is not larger than both 128 MiB and the content size (PLN-COD-009).",
    "ZstdLargeWindow": "The frame's window exceeds both 128 MiB and the content size; "
    "decoders MAY reject it.",
    "ZstdMultiBlock": "The frame content is split across several blocks.",
    "ZstdNoContentSize": "The frame header does not record the content size.",
    "ZstdReserved": "A reserved bit or block type is used.",
    "ZstdRleBlock": "The frame holds RLE blocks.",
    "ZstdSkippableFrame": "A skippable frame, which is not a valid zstd payload here.",
    "ZstdTrailingData": "Bytes follow the end of the frame.",
    "Int64Extreme": "The smallest or largest int64, or a value beyond 2^53 that a binary64 "
    "number cannot hold.",
    "AstralPlane": "Unicode characters outside the Basic Multilingual Plane (4-byte UTF-8, "
    "surrogate pairs in UTF-16).",
    "NulBytes": "Embedded NUL (0x00) bytes or characters.",
    "InvalidUtf8": "A string field holds bytes that are not valid UTF-8.",
    "NoMemberSet": "A Value with no known member of the oneof set.",
}


# --- deterministic pseudo-random bytes ----------------------------------------------------


class Drbg:
    """SHA-256 in counter mode: the same bytes on every machine and every library version."""

    def __init__(self, seed: str) -> None:
        self._seed = seed.encode("utf-8")
        self._counter = 0

    def take(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            block = self._seed + self._counter.to_bytes(8, "little")
            out += hashlib.sha256(block).digest()
            self._counter += 1
        return bytes(out[:n])

    def below(self, n: int) -> int:
        """An integer in [0, n) (the modulo bias is irrelevant for test data)."""
        return int.from_bytes(self.take(8), "little") % n


# --- dtypes and canonical bytes -----------------------------------------------------------


class DtypeInfo(NamedTuple):
    wire: int
    itemsize: int
    code: str  # struct code of one element


DTYPES: dict[str, DtypeInfo] = {
    "bool": DtypeInfo(1, 1, "B"),
    "int8": DtypeInfo(2, 1, "b"),
    "int16": DtypeInfo(3, 2, "h"),
    "int32": DtypeInfo(4, 4, "i"),
    "int64": DtypeInfo(5, 8, "q"),
    "uint8": DtypeInfo(6, 1, "B"),
    "uint16": DtypeInfo(7, 2, "H"),
    "uint32": DtypeInfo(8, 4, "I"),
    "uint64": DtypeInfo(9, 8, "Q"),
    "float16": DtypeInfo(10, 2, "e"),
    "bfloat16": DtypeInfo(11, 2, "H"),  # values are given as their 16 bits
    "float32": DtypeInfo(12, 4, "f"),
    "float64": DtypeInfo(13, 8, "d"),
}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
UNSIGNED_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}


def pack(dtype: str, values: Sequence[Any]) -> bytes:
    """Canonical bytes of `values` (bfloat16 values are bit patterns)."""
    return struct.pack(f"<{len(values)}{DTYPES[dtype].code}", *values)


def pack_bits(dtype: str, bits: Sequence[int]) -> bytes:
    """Canonical bytes of elements given as unsigned bit patterns."""
    size = DTYPES[dtype].itemsize
    return struct.pack(f"<{len(bits)}{UNSIGNED_CODE[size]}", *bits)


def unpack_bits(dtype: str, data: bytes) -> list[int]:
    size = DTYPES[dtype].itemsize
    return list(struct.unpack(f"<{len(data) // size}{UNSIGNED_CODE[size]}", data))


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def f64_bits(x: float) -> int:
    return int.from_bytes(struct.pack("<d", x), "little")


def f64_from_bits(bits: int) -> float:
    value: float = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    return value


def f32_from_bits(bits: int) -> float:
    value: float = struct.unpack("<f", bits.to_bytes(4, "little"))[0]
    return value


# --- binary floating point from first principles ------------------------------------------


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE 754 binary interchange format (bfloat16 is one with 8 exponent bits)."""

    exp_bits: int
    man_bits: int

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def emax(self) -> int:
        return self.bias

    @property
    def exp_mask(self) -> int:
        return ((1 << self.exp_bits) - 1) << self.man_bits

    @property
    def man_mask(self) -> int:
        return (1 << self.man_bits) - 1

    @property
    def quiet_bit(self) -> int:
        return 1 << (self.man_bits - 1)

    def sign_bit(self, sign: int) -> int:
        return sign << (self.width - 1)


FORMATS = {
    "float16": FloatFormat(5, 10),
    "bfloat16": FloatFormat(8, 7),
    "float32": FloatFormat(8, 23),
    "float64": FloatFormat(11, 52),
}


class Real(NamedTuple):
    """A floating-point datum: kind "finite", "inf" or "nan", a sign bit and, for finite
    numbers, the exact magnitude."""

    kind: str
    sign: int
    mag: Fraction


def unpack_real(fmt: FloatFormat, bits: int) -> Real:
    sign = bits >> (fmt.width - 1)
    exp_field = (bits & fmt.exp_mask) >> fmt.man_bits
    man = bits & fmt.man_mask
    if exp_field == (1 << fmt.exp_bits) - 1:
        return Real("nan" if man else "inf", sign, Fraction(0))
    if exp_field == 0:
        return Real("finite", sign, Fraction(man) * Fraction(2) ** (fmt.emin - fmt.man_bits))
    significand = (1 << fmt.man_bits) | man
    return Real(
        "finite", sign, Fraction(significand) * Fraction(2) ** (exp_field - fmt.bias - fmt.man_bits)
    )


def real_of_float(x: float) -> Real:
    """The exact value of a Python float (binary64)."""
    return unpack_real(FORMATS["float64"], f64_bits(x))


def floor_log2(x: Fraction) -> int:
    """The e with 2^e <= x < 2^(e+1), for x > 0."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1
    return e


def round_half_even(x: Fraction) -> int:
    floor = x.numerator // x.denominator
    rest = x - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


def round_real(fmt: FloatFormat, value: Real) -> int:
    """Bits of `value` rounded once to `fmt`: to nearest, ties to even, overflow to
    infinity, subnormals kept. NaNs are the caller's business (codecs differ)."""
    assert value.kind != "nan"
    sign = fmt.sign_bit(value.sign)
    if value.kind == "inf":
        return sign | fmt.exp_mask
    if value.mag == 0:
        return sign
    e = max(floor_log2(value.mag), fmt.emin)
    m = round_half_even(value.mag / Fraction(2) ** (e - fmt.man_bits))
    if m == 1 << (fmt.man_bits + 1):  # rounding carried into the next binade
        m >>= 1
        e += 1
    if e > fmt.emax:
        return sign | fmt.exp_mask
    if m < 1 << fmt.man_bits:  # subnormal: the exponent field is 0
        return sign | m
    return sign | ((e + fmt.bias) << fmt.man_bits) | (m - (1 << fmt.man_bits))


def widen(src: str, dst: str, bits: int) -> int:
    """Exact widening of one element; a NaN becomes a quiet NaN of the same sign."""
    sfmt, dfmt = FORMATS[src], FORMATS[dst]
    value = unpack_real(sfmt, bits)
    if value.kind == "nan":
        payload = (bits & sfmt.man_mask) << (dfmt.man_bits - sfmt.man_bits)
        return dfmt.sign_bit(value.sign) | dfmt.exp_mask | dfmt.quiet_bit | payload
    out = round_real(dfmt, value)
    assert unpack_real(dfmt, out) == value, "widening must be exact"
    return out


def narrow_cast(src: str, dst: str, bits: int, nan_bits: int) -> int:
    """The float16/bfloat16 codec's encoding of one element: one rounding, and every NaN
    becomes `nan_bits` with the NaN's sign."""
    value = unpack_real(FORMATS[src], bits)
    if value.kind == "nan":
        return FORMATS[dst].sign_bit(value.sign) | nan_bits
    return round_real(FORMATS[dst], value)


def check_float16_with_struct(src: str, bits: int, out: int) -> None:
    """Second opinion on a float16 rounding from CPython's own binary16 packer, which
    rounds a binary64 value to nearest-even directly (binary32 sources widen exactly)."""
    value = unpack_real(FORMATS[src], bits)
    if value.kind != "finite":
        return
    x = f64_from_bits(widen(src, "float64", bits)) if src != "float64" else f64_from_bits(bits)
    try:
        packed = int.from_bytes(struct.pack("<e", x), "little")
    except OverflowError:
        assert out & 0x7FFF == 0x7C00, f"struct overflowed but rounding gave {out:#06x}"
        return
    assert packed == out, f"float16 rounding disagrees with struct: {packed:#06x} != {out:#06x}"


def check_bfloat16_with_bit_trick(bits32: int, out: int) -> None:
    """Second opinion on a binary32 -> bfloat16 rounding: the classic integer formula."""
    if unpack_real(FORMATS["float32"], bits32).kind == "nan":
        return
    rounded = (bits32 + 0x7FFF + ((bits32 >> 16) & 1)) >> 16
    assert rounded == out, f"bfloat16 rounding disagrees: {rounded:#06x} != {out:#06x}"


def to_float(dtype: str, bits: int) -> float:
    """The exact binary64 value of one floating-point element."""
    if dtype == "float64":
        return f64_from_bits(bits)
    return f64_from_bits(widen(dtype, "float64", bits))


def from_float(dtype: str, x: float) -> int:
    """One rounding of a binary64 value to `dtype` (the int8 codec's decode conversion)."""
    value = real_of_float(x)
    assert value.kind != "nan"
    return round_real(FORMATS[dtype], value)


# --- protobuf wire format by hand ---------------------------------------------------------

WT_VARINT, WT_I64, WT_LEN, WT_SGROUP, WT_EGROUP, WT_I32 = 0, 1, 2, 3, 4, 5


def varint(n: int) -> bytes:
    """Minimal varint; negative int64 values are their 64-bit two's complement (10 bytes)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def padded_varint(n: int, length: int) -> bytes:
    """A non-minimal varint of exactly `length` bytes (redundant continuation bytes)."""
    minimal = varint(n)
    assert len(minimal) <= length
    body = bytearray(minimal)
    body[-1] |= 0x80
    body += b"\x80" * (length - len(minimal) - 1) + b"\x00"
    return bytes(body)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def pb_varint(number: int, value: int) -> bytes:
    return key(number, WT_VARINT) + varint(value)


def pb_bytes(number: int, data: bytes) -> bytes:
    return key(number, WT_LEN) + varint(len(data)) + data


def pb_packed(number: int, values: Sequence[int]) -> bytes:
    return pb_bytes(number, b"".join(varint(v) for v in values))


# Field numbers of pollen.v1.Tensor and pollen.v1.Value (proto/pollen/v1/*.proto).
T_DTYPE, T_SHAPE, T_CODEC, T_INLINE, T_BLOB, T_NAME = 1, 2, 3, 4, 5, 6
V_BOOL, V_INT, V_DOUBLE, V_STRING, V_BYTES = 1, 2, 3, 4, 5


def tensor_msg(
    dtype: str | int | None,
    shape: Sequence[int],
    codec: str = "",
    payload: bytes | None = b"",
    name: str = "",
) -> bytes:
    """A pollen.v1.Tensor as a proto3 encoder writes it: fields in number order, defaults
    omitted, shape packed, inline_data written whenever set (oneof members always are)."""
    wire = DTYPES[dtype].wire if isinstance(dtype, str) else dtype
    out = b""
    if wire:
        out += pb_varint(T_DTYPE, wire)
    if shape:
        out += pb_packed(T_SHAPE, shape)
    if codec:
        out += pb_bytes(T_CODEC, codec.encode("utf-8"))
    if payload is not None:
        out += pb_bytes(T_INLINE, payload)
    if name:
        out += pb_bytes(T_NAME, name.encode("utf-8"))
    return out


# --- Zstandard frames by hand (RFC 8878) ----------------------------------------------------

ZSTD_MAGIC = bytes.fromhex("28b52ffd")  # 0xFD2FB528 little-endian
SKIPPABLE_MAGIC = bytes.fromhex("502a4d18")  # 0x184D2A50 little-endian


def raw_block(data: bytes, *, last: bool) -> bytes:
    header = len(data) << 3 | 0 << 1 | int(last)
    return header.to_bytes(3, "little") + data


def rle_block(byte: int, count: int, *, last: bool) -> bytes:
    header = count << 3 | 1 << 1 | int(last)
    return header.to_bytes(3, "little") + bytes([byte])


def zstd_header(
    content_size: int | None,
    *,
    single_segment: bool = True,
    fcs_bytes: int | None = None,
    window_log: int = 10,
    checksum: bool = False,
    dict_id: bytes = b"",
    reserved_bit: bool = False,
) -> bytes:
    """Magic number and frame header. Without single_segment a window descriptor (mantissa
    0) is written; the Frame_Content_Size field has the smallest size that can hold the
    value unless `fcs_bytes` forces one."""
    if fcs_bytes is None:
        if content_size is None:
            fcs_bytes = 0
        elif single_segment and content_size < 256:
            fcs_bytes = 1
        elif 256 <= content_size < 65536 + 256:
            fcs_bytes = 2
        elif content_size < 1 << 32:
            fcs_bytes = 4
        else:
            fcs_bytes = 8
    assert (fcs_bytes == 0) == (content_size is None)
    assert fcs_bytes != 1 or single_segment, "a 1-byte size field needs single_segment"
    fcs_flag = {0: 0, 1: 0, 2: 1, 4: 2, 8: 3}[fcs_bytes]
    did_flag = {0: 0, 1: 1, 2: 2, 4: 3}[len(dict_id)]
    descriptor = (
        fcs_flag << 6
        | int(single_segment) << 5
        | int(reserved_bit) << 3
        | int(checksum) << 2
        | did_flag
    )
    out = ZSTD_MAGIC + bytes([descriptor])
    if not single_segment:
        out += bytes([(window_log - 10) << 3])
    out += dict_id
    if content_size is not None:
        stored = content_size - 256 if fcs_bytes == 2 else content_size
        out += stored.to_bytes(fcs_bytes, "little")
    return out


def zstd_raw_frame(content: bytes, **header: Any) -> bytes:
    """One frame holding `content` in a single raw block (a checksum must be appended by
    the caller when the header announces one)."""
    return zstd_header(len(content), **header) + raw_block(content, last=True)


def skippable_frame(data: bytes) -> bytes:
    return SKIPPABLE_MAGIC + len(data).to_bytes(4, "little") + data


# Frames with real compressed blocks, produced once with python-zstandard 0.25.0 (libzstd
# 1.5.7) and frozen so that the vectors do not depend on the installed version. The
# generator checks that each still decompresses to the content it was made from.
FROZEN_ZSTD_LEVEL3 = bytes.fromhex(  # float32 [64], x_i = i % 8; level 3, content size
    "28b52ffd600000450100e80000803f0000004000004040000080400000a0400000c0400000e040"
    "000300d7a1080c7aaca00d"
)
FROZEN_ZSTD_NO_SIZE = bytes.fromhex(  # int16 [128], x_i = i // 16 - 4; no content size
    "28b52ffd0000e5000040fcfffdfe000102030800a011d05cae61a0118003680e342cd1b501"
)
FROZEN_ZSTD_CHECKSUM = bytes.fromhex(  # float64 [32], x_i = 1.5 * (i % 4); level 19, checksum
    "28b52ffd640000e500009800f83f000000000000084000000000000012400200ba4351e10042e7d9a317"
)
# Low 32 bits of XXH64(seed 0) of float32 [1.0, -2.5] = 00 00 80 3F 00 00 20 C0, as libzstd
# wrote it (little-endian). The xxhash package is not a dependency, so the value is frozen;
# zstandard verifies it below.
FROZEN_XXH64_LOW32_F32_1_M2_5 = bytes.fromhex("7b46b512")
# Offset, in FROZEN_ZSTD_LEVEL3, of the Symbol_Compression_Modes byte of its sequences
# section, whose two low bits are reserved and must be zero.
FROZEN_LEVEL3_MODES_OFFSET = 41


def frozen_contents() -> dict[bytes, bytes]:
    return {
        FROZEN_ZSTD_LEVEL3: pack("float32", [float(i % 8) for i in range(64)]),
        FROZEN_ZSTD_NO_SIZE: pack("int16", [i // 16 - 4 for i in range(128)]),
        FROZEN_ZSTD_CHECKSUM: pack("float64", [1.5 * (i % 4) for i in range(32)]),
    }


def libzstd(frame: bytes) -> tuple[str, bytes]:
    """What libzstd (through python-zstandard) makes of a payload: ("ok", content) for one
    complete frame and nothing after it, else ("error" | "incomplete" | "trailing", output).
    Used only to double-check hand-built frames, never to compute an expected output."""
    import zstandard  # noqa: PLC0415 - a cross-check only; the vectors do not depend on it

    decoder = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = decoder.decompress(frame)
    except zstandard.ZstdError:
        return "error", b""
    if not decoder.eof:
        return "incomplete", out
    if decoder.unused_data:
        return "trailing", out
    return "ok", out


# --- the vector tree under construction ---------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_safe_int(n: int) -> bool:
    """Whether a JSON number holding `n` survives a parser that uses binary64 numbers."""
    return abs(n) <= 1 << 53 or (abs(n) & (abs(n) - 1)) == 0


@dataclass
class Vectors:
    """Every file of the tree (relative path -> bytes) and the manifest's test groups."""

    files: dict[str, bytes] = field(default_factory=dict)
    groups: list[Json] = field(default_factory=list)

    def file(self, path: str, data: bytes) -> Json:
        assert path not in self.files, path
        self.files[path] = data
        return {"file": path, "sha256": sha256_hex(data)}


class Group:
    """One test group; tcIds are base + 1, base + 2, ... (at most 99 tests)."""

    def __init__(
        self, vectors: Vectors, kind: str, base: int, directory: str, params: Json
    ) -> None:
        self.vectors = vectors
        self.base = base
        self.directory = directory
        self.tests: list[Json] = []
        vectors.groups.append({"type": kind, **params, "tests": self.tests})

    def start(
        self, slug: str, comment: str, flags: Iterable[str], error: str | None, valid: bool
    ) -> tuple[Json, str]:
        """Open a test; returns it and the file stem for its data files."""
        tc_id = self.base + len(self.tests) + 1
        assert tc_id < self.base + 100, f"group {self.base} is full"
        assert slug.replace("-", "").isalnum(), slug
        assert slug.islower(), slug
        flag_list = sorted(set(flags))
        for flag in flag_list:
            assert flag in NOTES, f"flag {flag} has no note"
        assert error is None or error in ERROR_CODES, error
        assert error is not None or valid
        result = "valid" if error is None else "acceptable" if valid else "invalid"
        assert result != "acceptable" or flag_list, "acceptable tests say why in flags"
        test: Json = {"tcId": tc_id, "comment": comment, "result": result, "flags": flag_list}
        if error is not None:
            test["error"] = error
        self.tests.append(test)
        return test, f"{self.directory}/{tc_id:04d}-{slug}"


class DecodeGroup(Group):
    def __init__(self, vectors: Vectors, base: int, codec: str, description: str) -> None:
        params = {"codec": codec, "description": description}
        super().__init__(vectors, "TensorDecode", base, "tensor_decode", params)

    def add(
        self,
        slug: str,
        comment: str,
        message: bytes,
        *,
        dtype: str | None,
        codec: str,
        shape: Sequence[int] | None = None,
        expected: bytes | None = None,
        error: str | None = None,
        flags: Iterable[str] = (),
        limits: Json | None = None,
        codecs: Sequence[str] | None = None,
        dtypes: Sequence[str] | None = None,
    ) -> None:
        """`dtype` and `codec` are what the message carries (after last-wins), for filtering:
        dtype None when it is UNSPECIFIED or unknown."""
        flags = set(flags)
        if limits is not None:
            flags.add("LimitOverride")
        if codecs is not None or dtypes is not None:
            flags.add("NotNegotiated")
        test, stem = self.start(slug, comment, flags, error, expected is not None)
        test["input"] = self.vectors.file(stem + ".bin", message)
        test["dtype"] = dtype
        test["codec"] = codec
        if limits is not None:
            test["limits"] = limits
        if codecs is not None:
            test["codecs"] = sorted(codecs)
        if dtypes is not None:
            test["dtypes"] = sorted(dtypes)
        if expected is not None:
            assert dtype is not None
            assert shape is not None
            assert len(expected) == numel(shape) * DTYPES[dtype].itemsize
            assert all(json_safe_int(n) for n in shape)
            test["shape"] = list(shape)
            test["expected"] = self.vectors.file(stem + ".raw", expected)
        check_tensor_message(message, dtype, codec, shape, malformed="MalformedMessage" in flags)


def check_tensor_message(
    message: bytes, dtype: str | None, codec: str, shape: Sequence[int] | None, *, malformed: bool
) -> None:
    """Double-check a hand-built Tensor with the generated protobuf classes."""
    try:
        msg = tensor_pb2.Tensor.FromString(message)
    except Exception:  # protobuf's DecodeError (its module has no type stubs here)
        assert malformed, f"{message.hex()} does not parse"
        return
    assert not malformed, f"{message.hex()} parses but is flagged malformed"
    if dtype is None:
        assert msg.dtype not in {info.wire for info in DTYPES.values()}
    else:
        assert msg.dtype == DTYPES[dtype].wire
    assert msg.codec == codec, (msg.codec, codec)
    if shape is not None:
        assert list(msg.shape) == list(shape)


class EncodeGroup(Group):
    def __init__(self, vectors: Vectors, base: int, codec: str, description: str) -> None:
        params = {"codec": codec, "description": description}
        super().__init__(vectors, "TensorEncode", base, "tensor_encode", params)

    def add(
        self,
        slug: str,
        comment: str,
        *,
        dtype: str,
        shape: Sequence[int],
        canonical: bytes,
        payload: bytes | None = None,
        error: str | None = None,
        k: int | None = None,
        flags: Iterable[str] = (),
        by_property: bool = False,
    ) -> None:
        """`by_property`: no expected payload, the output is judged by property (zstd: flag
        ZstdEncoderChoice; codec_runner.py and vectors/README.md say how)."""
        assert len(canonical) == numel(shape) * DTYPES[dtype].itemsize
        if by_property:
            flags = {*flags, "ZstdEncoderChoice"}
        test, stem = self.start(slug, comment, flags, error, payload is not None or by_property)
        test["dtype"] = dtype
        test["shape"] = list(shape)
        test["input"] = self.vectors.file(stem + ".raw", canonical)
        if k is not None:
            test["params"] = {"k": k}
        if payload is not None:
            test["expected"] = self.vectors.file(stem + ".bin", payload)


class Chunk(NamedTuple):
    offset: int
    data: bytes
    outcome: str  # "appended" | "duplicate" | "rejected" | an error code name


class ChunkGroup(Group):
    def __init__(self, vectors: Vectors, base: int) -> None:
        params = {"description": "Blob reassembly from chunks (sans-IO assembler)."}
        super().__init__(vectors, "ChunkSet", base, "chunk_set", params)

    def add(
        self,
        slug: str,
        comment: str,
        *,
        blob: bytes,
        chunks: Sequence[Chunk],
        error: str | None = None,
        sha256: bytes | None = None,
        flags: Iterable[str] = (),
    ) -> None:
        """`blob` is the true content; `sha256` overrides the declared digest."""
        declared = sha256 if sha256 is not None else hashlib.sha256(blob).digest()
        test, stem = self.start(slug, comment, flags, error, error is None)
        test["blobSha256"] = declared.hex()
        test["totalSize"] = len(blob)
        held = bytearray()
        entries = []
        for index, chunk in enumerate(chunks):
            outcome = assemble_step(held, len(blob), chunk.offset, chunk.data)
            assert outcome == chunk.outcome, (slug, index, outcome, chunk.outcome)
            entry: Json = {"offset": chunk.offset}
            if len(chunk.data) <= 64:
                entry["dataHex"] = chunk.data.hex()
            else:
                entry["dataFile"] = self.vectors.file(f"{stem}-chunk{index}.bin", chunk.data)
            if outcome in ERROR_CODES:
                entry["error"] = outcome
            else:
                entry["outcome"] = outcome
            entry["committedSize"] = len(held)
            entries.append(entry)
        test["chunks"] = entries
        final = assemble_finish(bytes(held), len(blob), declared)
        assert final == error, (slug, final, error)
        if error is None:
            test["expected"] = self.vectors.file(stem + ".bin", bytes(held))


def assemble_step(held: bytearray, total: int, offset: int, data: bytes) -> str:
    """The chunk-set rules of the design notes, written out: the reference the chunk
    vectors are checked against."""
    end = offset + len(data)
    if end > total:
        return "INVALID_ARGUMENT"
    if offset == len(held):
        held += data
        return "appended"
    if offset < len(held) and end <= len(held):
        return "duplicate"
    return "rejected"


def assemble_finish(held: bytes, total: int, sha256: bytes) -> str | None:
    if len(held) != total:
        return "BLOB_INCOMPLETE"
    if hashlib.sha256(held).digest() != sha256:
        return "BLOB_DIGEST_MISMATCH"
    return None


class ValueGroup(Group):
    def __init__(self, vectors: Vectors, base: int) -> None:
        params = {"description": "Serialized pollen.v1.Value messages."}
        super().__init__(vectors, "Value", base, "value", params)

    def add(
        self,
        slug: str,
        comment: str,
        message: bytes,
        *,
        value: bool | int | float | str | bytes | None = None,
        bits: int | None = None,
        error: str | None = None,
        flags: Iterable[str] = (),
    ) -> None:
        """A valid test gives `value` (or, for a double, its 64 `bits`)."""
        valid = value is not None or bits is not None
        test, stem = self.start(slug, comment, flags, error, valid)
        test["input"] = self.vectors.file(stem + ".bin", message)
        if bits is not None:
            test["valueType"] = "double"
            test["value"] = f"{bits:016x}"
        elif isinstance(value, bool):
            test["valueType"] = "bool"
            test["value"] = value
        elif isinstance(value, int):
            assert INT64_MIN <= value <= INT64_MAX
            test["valueType"] = "int64"
            test["value"] = str(value)
        elif isinstance(value, str):
            test["valueType"] = "string"
            test["value"] = value
            test["utf8Hex"] = value.encode("utf-8").hex()
        elif isinstance(value, bytes):
            test["valueType"] = "bytes"
            test["value"] = value.hex()
        else:
            assert value is None, "give doubles as bits"
        check_value_message(message, test)


def check_value_message(message: bytes, test: Json) -> None:
    """Double-check a hand-built Value with the generated protobuf classes."""
    try:
        msg = value_pb2.Value.FromString(message)
    except Exception:  # protobuf's DecodeError
        assert test["result"] == "invalid"
        return
    member = msg.WhichOneof("kind")
    if test["result"] == "invalid":
        assert member is None, message.hex()
        return
    kind = test["valueType"]
    assert (
        member
        == {
            "bool": "bool_value",
            "int64": "int_value",
            "double": "double_value",
            "string": "string_value",
            "bytes": "bytes_value",
        }[kind]
    )
    got = getattr(msg, member)
    if kind == "double":
        assert f"{f64_bits(got):016x}" == test["value"]
    elif kind == "int64":
        assert str(got) == test["value"]
    elif kind == "bytes":
        assert got.hex() == test["value"]
    else:
        assert got == test["value"]


# --- TensorDecode: the message and its header fields --------------------------------------

F32_PAIR = pack("float32", [1.0, -2.5])  # 00 00 80 3F 00 00 20 C0, the spec's example


def decode_header_group(v: Vectors) -> None:
    g = DecodeGroup(
        v,
        100,
        "raw",
        "Tensor message parsing and check order steps 1-3 (dtype, codec id, applicability).",
    )
    ok: Json = {"dtype": "float32", "shape": [2], "expected": F32_PAIR}
    body = pb_packed(T_SHAPE, [2]) + pb_bytes(T_CODEC, b"raw") + pb_bytes(T_INLINE, F32_PAIR)

    g.add(
        "dtype-unspecified-omitted",
        "dtype field absent, so DTYPE_UNSPECIFIED (0); payload otherwise a valid float32 [2]",
        tensor_msg(None, [2], "raw", F32_PAIR),
        dtype=None,
        codec="raw",
        error="DTYPE_UNSUPPORTED",
        flags=["UnknownDtype"],
    )
    g.add(
        "dtype-zero-written",
        "dtype 0 written explicitly on the wire (08 00) is still UNSPECIFIED",
        pb_varint(T_DTYPE, 0) + body,
        dtype=None,
        codec="raw",
        error="DTYPE_UNSUPPORTED",
        flags=["UnknownDtype", "ProtobufDefaultWritten"],
    )
    for number, why in ((99, "an unknown enum number"),):
        g.add(
            f"dtype-{number}",
            f"dtype {number}: {why}; proto3 keeps the open enum value and the receiver rejects it",
            tensor_msg(number, [2], "raw", F32_PAIR),
            dtype=None,
            codec="raw",
            error="DTYPE_UNSUPPORTED",
            flags=["UnknownDtype"],
        )
    g.add(
        "dtype-negative",
        "dtype -1 (a 10-byte varint, as proto3 writes negative enum values)",
        tensor_msg(-1, [2], "raw", F32_PAIR),
        dtype=None,
        codec="raw",
        error="DTYPE_UNSUPPORTED",
        flags=["UnknownDtype"],
    )
    g.add(
        "dtype-and-codec-unknown",
        'dtype 0 and codec "x-unknown": step 1 (dtype) comes before step 2 (codec)',
        tensor_msg(None, [2], "x-unknown", F32_PAIR),
        dtype=None,
        codec="x-unknown",
        error="DTYPE_UNSUPPORTED",
        flags=["UnknownDtype", "UnknownCodec", "CheckOrder"],
    )
    g.add(
        "dtype-not-negotiated",
        "a valid float32 tensor, but the allowed dtypes are only float64 and int64",
        tensor_msg("float32", [2], "raw", F32_PAIR),
        dtype="float32",
        codec="raw",
        error="DTYPE_UNSUPPORTED",
        dtypes=["float64", "int64"],
    )
    g.add(
        "dtype-negotiated",
        "the same float32 tensor with float32 among the allowed dtypes",
        tensor_msg("float32", [2], "raw", F32_PAIR),
        codec="raw",
        dtypes=["float32"],
        **ok,
    )
    for slug, codec_id, why in (
        ("codec-unknown", "x-unknown", "an unregistered id"),
        ("codec-uppercase", "RAW", "ids are exact lowercase strings"),
        ("codec-embedded-nul", "raw\x00", "a NUL after raw (not a C string terminator)"),
    ):
        g.add(
            slug,
            f"codec {codec_id!r}: {why}",
            tensor_msg("float32", [2], codec_id, F32_PAIR),
            dtype="float32",
            codec=codec_id,
            error="CODEC_UNSUPPORTED",
            flags=["UnknownCodec"],
        )
    g.add(
        "codec-not-negotiated",
        "a valid zstd tensor, but the allowed codecs are only raw",
        tensor_msg("float32", [2], "zstd", zstd_raw_frame(F32_PAIR)),
        dtype="float32",
        codec="zstd",
        error="CODEC_UNSUPPORTED",
        codecs=["raw"],
    )
    g.add(
        "codec-empty-raw-not-negotiated",
        'codec "" means raw, and raw is not in the allowed codecs (only zstd)',
        tensor_msg("float32", [2], "", F32_PAIR),
        dtype="float32",
        codec="",
        error="CODEC_UNSUPPORTED",
        codecs=["zstd"],
        flags=["EmptyCodecId"],
    )
    g.add(
        "codec-empty",
        'codec field absent (""), which means raw',
        tensor_msg("float32", [2], "", F32_PAIR),
        codec="",
        flags=["EmptyCodecId"],
        **ok,
    )
    g.add(
        "codec-empty-written",
        'codec "" written explicitly on the wire (1A 00), which means raw',
        pb_varint(T_DTYPE, 12)
        + pb_packed(T_SHAPE, [2])
        + pb_bytes(T_CODEC, b"")
        + pb_bytes(T_INLINE, F32_PAIR),
        codec="",
        flags=["EmptyCodecId", "ProtobufDefaultWritten"],
        **ok,
    )
    g.add(
        "codec-unknown-before-shape",
        "unknown codec and a negative extent: step 2 (codec) comes before step 5 (shape)",
        tensor_msg("float32", [-1], "x-unknown", b""),
        dtype="float32",
        codec="x-unknown",
        error="CODEC_UNSUPPORTED",
        flags=["UnknownCodec", "NegativeExtent", "CheckOrder"],
    )
    g.add(
        "codec-not-applicable-before-rank",
        "float16 codec on an INT32 tensor of rank 33: step 3 (applicability) comes before "
        "step 4 (rank)",
        tensor_msg("int32", [1] * 33, "float16", b"\x00\x00"),
        dtype="int32",
        codec="float16",
        error="CODEC_DATA_INVALID",
        flags=["CodecNotApplicable", "HighRank", "CheckOrder"],
    )
    g.add(
        "payload-unset-empty",
        "no payload field at all, float32 [0]: unset means empty inline data, which fits",
        tensor_msg("float32", [0], "raw", None),
        dtype="float32",
        codec="raw",
        shape=[0],
        expected=b"",
        flags=["UnsetPayload", "EmptyTensor"],
    )
    g.add(
        "payload-unset-nonempty",
        "no payload field, float32 [2]: unset means 0 bytes, 8 are needed",
        tensor_msg("float32", [2], "raw", None),
        dtype="float32",
        codec="raw",
        error="TENSOR_SIZE_MISMATCH",
        flags=["UnsetPayload"],
    )
    unknown = (
        pb_varint(7, 42)
        + key(8, WT_I64)
        + bytes(range(8))
        + key(9, WT_I32)
        + b"\xff\xff\xff\xff"
        + pb_bytes(1000, b"future field")
        + pb_varint(536870911, 1)  # the largest field number
    )
    g.add(
        "unknown-fields-after",
        "unknown fields 7 (varint), 8 (fixed64), 9 (fixed32), 1000 (bytes) and 536870911 "
        "after the known ones; they are ignored",
        tensor_msg("float32", [2], "raw", F32_PAIR) + unknown,
        codec="raw",
        flags=["ProtobufUnknownFields"],
        **ok,
    )
    g.add(
        "unknown-fields-interleaved",
        "unknown fields before, between and after the known fields",
        pb_bytes(100, b"x")
        + pb_varint(T_DTYPE, 12)
        + pb_varint(101, 5)
        + pb_packed(T_SHAPE, [2])
        + key(102, WT_I64)
        + bytes(8)
        + pb_bytes(T_CODEC, b"raw")
        + pb_bytes(T_INLINE, F32_PAIR)
        + pb_bytes(103, b""),
        codec="raw",
        flags=["ProtobufUnknownFields"],
        **ok,
    )
    g.add(
        "unknown-field-group",
        "an unknown field 20 in the deprecated group wire type (start 0xA3 01, one nested "
        "varint, end 0xA4 01); parsers skip it",
        tensor_msg("float32", [2], "raw", F32_PAIR)
        + key(20, WT_SGROUP)
        + pb_varint(1, 7)
        + key(20, WT_EGROUP),
        codec="raw",
        flags=["ProtobufUnknownFields"],
        **ok,
    )
    shape_unpacked = b"".join(pb_varint(T_SHAPE, n) for n in (2, 3))
    i32_2x3 = pack("int32", [0, 1, 2, 3, 4, 5])
    g.add(
        "shape-unpacked",
        "shape [2, 3] written unpacked (tag 0x10 per element), valid in proto3",
        pb_varint(T_DTYPE, 4) + shape_unpacked + pb_bytes(T_INLINE, i32_2x3),
        dtype="int32",
        codec="",
        shape=[2, 3],
        expected=i32_2x3,
        flags=["ProtobufUnpacked"],
    )
    g.add(
        "shape-packed-then-unpacked",
        "shape [2, 1, 3]: a packed run [2, 1] then an unpacked 3; parsers concatenate",
        pb_varint(T_DTYPE, 4)
        + pb_packed(T_SHAPE, [2, 1])
        + pb_varint(T_SHAPE, 3)
        + pb_bytes(T_INLINE, i32_2x3),
        dtype="int32",
        codec="",
        shape=[2, 1, 3],
        expected=i32_2x3,
        flags=["ProtobufUnpacked"],
    )
    g.add(
        "dtype-last-wins",
        "dtype written twice, FLOAT64 then FLOAT32: the last wins, so 8 bytes are float32 [2]",
        pb_varint(T_DTYPE, 13) + pb_varint(T_DTYPE, 12) + body,
        codec="raw",
        flags=["ProtobufLastWins"],
        **ok,
    )
    g.add(
        "codec-last-wins",
        'codec written twice, "x-unknown" then "raw": the last wins',
        pb_varint(T_DTYPE, 12)
        + pb_packed(T_SHAPE, [2])
        + pb_bytes(T_CODEC, b"x-unknown")
        + pb_bytes(T_CODEC, b"raw")
        + pb_bytes(T_INLINE, F32_PAIR),
        codec="raw",
        flags=["ProtobufLastWins"],
        **ok,
    )
    g.add(
        "inline-data-last-wins",
        "inline_data written twice, 3 bytes then the 8 right ones: the last wins",
        pb_varint(T_DTYPE, 12)
        + pb_packed(T_SHAPE, [2])
        + pb_bytes(T_INLINE, b"\xde\xad\xbe")
        + pb_bytes(T_INLINE, F32_PAIR),
        codec="",
        flags=["ProtobufLastWins"],
        **ok,
    )
    g.add(
        "name-too-long",
        "a 300-byte name (over the 256-byte sender limit): receivers must not reject it",
        tensor_msg("float32", [2], "raw", F32_PAIR, name="n" * 300),
        codec="raw",
        flags=["TensorName"],
        **ok,
    )
    g.add(
        "non-minimal-varints",
        "dtype 12 as the 3-byte varint 8C 80 00, and the shape and payload lengths padded "
        "to 2 bytes",
        key(T_DTYPE, WT_VARINT)
        + padded_varint(12, 3)
        + key(T_SHAPE, WT_LEN)
        + padded_varint(1, 2)
        + varint(2)
        + key(T_INLINE, WT_LEN)
        + padded_varint(8, 2)
        + F32_PAIR,
        codec="",
        flags=["ProtobufNonMinimalVarint"],
        **ok,
    )
    g.add(
        "malformed-truncated-field",
        "inline_data declares 8 bytes and the message ends after 7",
        tensor_msg("float32", [2], "raw", F32_PAIR)[:-1],
        dtype=None,
        codec="raw",
        error="INVALID_ARGUMENT",
        flags=["MalformedMessage", "Truncated"],
    )
    g.add(
        "malformed-wire-type-7",
        "a field key with the undefined wire type 7 after a valid message",
        tensor_msg("float32", [2], "raw", F32_PAIR) + bytes([7 << 3 | 7, 0]),
        dtype=None,
        codec="raw",
        error="INVALID_ARGUMENT",
        flags=["MalformedMessage"],
    )
    g.add(
        "malformed-varint-too-long",
        "the dtype varint runs to 11 bytes (at most 10 are allowed)",
        key(T_DTYPE, WT_VARINT) + b"\x8c" + b"\x80" * 9 + b"\x00" + body,
        dtype=None,
        codec="raw",
        error="INVALID_ARGUMENT",
        flags=["MalformedMessage", "ProtobufNonMinimalVarint"],
    )


# --- TensorDecode: shapes and limits (check order steps 4-6) ----------------------------------


def decode_shape_group(v: Vectors) -> None:
    g = DecodeGroup(
        v, 200, "raw", "Shapes, rank and size limits (check order steps 4-6), with raw payloads."
    )

    def valid(
        slug: str, comment: str, dtype: str, shape: list[int], data: bytes, **kw: Any
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "raw", data),
            dtype=dtype,
            codec="raw",
            shape=shape,
            expected=data,
            **kw,
        )

    def invalid(
        slug: str, comment: str, dtype: str, shape: list[int], data: bytes, *, error: str, **kw: Any
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "raw", data),
            dtype=dtype,
            codec="raw",
            error=error,
            **kw,
        )

    valid(
        "scalar-float32",
        "shape [] is a scalar: one element",
        "float32",
        [],
        pack("float32", [3.5]),
        flags=["Scalar"],
    )
    invalid(
        "scalar-empty-payload",
        "a scalar needs itemsize bytes, the payload is empty",
        "float32",
        [],
        b"",
        error="TENSOR_SIZE_MISMATCH",
        flags=["Scalar"],
    )
    valid(
        "empty-1d",
        "shape [0]: no elements, empty payload",
        "float32",
        [0],
        b"",
        flags=["EmptyTensor"],
    )
    valid(
        "empty-3-0-5",
        "shape [3, 0, 5]: a zero extent in the middle",
        "float64",
        [3, 0, 5],
        b"",
        flags=["EmptyTensor"],
    )
    for dtype in ("bool", "bfloat16"):
        valid(f"empty-{dtype}", f"{dtype} shape [0, 4]", dtype, [0, 4], b"", flags=["EmptyTensor"])
    invalid(
        "empty-with-bytes",
        "shape [0] but 4 payload bytes",
        "float32",
        [0],
        bytes(4),
        error="TENSOR_SIZE_MISMATCH",
        flags=["EmptyTensor", "Overlong"],
    )
    rank8 = [2, 1, 2, 1, 2, 1, 2, 1]
    valid(
        "rank-8",
        "float32 of rank 8, shape [2,1,2,1,2,1,2,1]",
        "float32",
        rank8,
        pack("float32", [float(i) for i in range(16)]),
        flags=["HighRank"],
    )
    rank32 = [1] * 30 + [2, 3]
    valid(
        "rank-32",
        "int16 of rank 32 (the default max_rank): thirty 1s, then 2 and 3",
        "int16",
        rank32,
        pack("int16", [-3, -2, -1, 0, 1, 2]),
        flags=["HighRank"],
    )
    invalid(
        "rank-33",
        "rank 33 exceeds the default max_rank 32",
        "float32",
        [1] * 33,
        pack("float32", [1.0]),
        error="LIMIT_EXCEEDED",
        flags=["HighRank"],
    )
    invalid(
        "rank-33-negative-extent",
        "rank 33 with a negative extent: step 4 (rank) comes before step 5 (shape)",
        "float32",
        [1] * 32 + [-1],
        b"",
        error="LIMIT_EXCEEDED",
        flags=["HighRank", "NegativeExtent", "CheckOrder"],
    )
    invalid(
        "rank-over-override",
        "rank 3 with max_rank 2",
        "uint8",
        [1, 1, 2],
        b"\x01\x02",
        error="LIMIT_EXCEEDED",
        limits={"maxRank": 2},
    )
    invalid(
        "negative-extent",
        "shape [-1]",
        "float32",
        [-1],
        b"",
        error="SHAPE_INVALID",
        flags=["NegativeExtent"],
    )
    invalid(
        "negative-next-to-zero",
        "shape [-1, 0]: negative even though the 0 makes numel 0 (spec example)",
        "float32",
        [-1, 0],
        b"",
        error="SHAPE_INVALID",
        flags=["NegativeExtent", "EmptyTensor"],
    )
    invalid(
        "two-negatives",
        "shape [-2, -3]: the product is +6 and the 24-byte payload matches it, but extents are "
        "negative",
        "float32",
        [-2, -3],
        bytes(24),
        error="SHAPE_INVALID",
        flags=["NegativeExtent"],
    )
    invalid(
        "int64-min-extent",
        "shape [-2^63]",
        "uint8",
        [INT64_MIN],
        b"",
        error="SHAPE_INVALID",
        flags=["NegativeExtent"],
    )
    overflow = ["ShapeOverflow", "HugeDeclaredShape"]
    invalid(
        "numel-2-64-int64",
        "int64 [2^62, 4]: numel 2^64 (a wrapping product gives 0)",
        "int64",
        [1 << 62, 4],
        b"",
        error="SHAPE_INVALID",
        flags=overflow,
    )
    invalid(
        "numel-2-64-uint8",
        "uint8 [2^32, 2^32]: numel 2^64 (a wrapping product gives 0)",
        "uint8",
        [1 << 32, 1 << 32],
        b"",
        error="SHAPE_INVALID",
        flags=overflow,
    )
    invalid(
        "numel-3x2-62",
        "float32 [3, 2^62]: numel 3 x 2^62 > 2^63 - 1",
        "float32",
        [3, 1 << 62],
        b"",
        error="SHAPE_INVALID",
        flags=overflow,
    )
    invalid(
        "bytes-2-64",
        "float64 [2^61]: numel fits, numel x 8 = 2^64 does not (spec example)",
        "float64",
        [1 << 61],
        b"",
        error="SHAPE_INVALID",
        flags=overflow,
    )
    invalid(
        "bytes-2-63",
        "float64 [2^60]: numel x 8 = 2^63, one more than 2^63 - 1",
        "float64",
        [1 << 60],
        b"",
        error="SHAPE_INVALID",
        flags=overflow,
    )
    invalid(
        "bytes-2-63-minus-1",
        "uint8 [2^63 - 1]: passes step 5 exactly, fails step 6 (max_tensor_bytes 2^34)",
        "uint8",
        [INT64_MAX],
        b"",
        error="LIMIT_EXCEEDED",
        flags=["HugeDeclaredShape"],
    )
    invalid(
        "overflow-before-limit",
        "float64 [2^61] with max_tensor_bytes 8: step 5 comes before step 6",
        "float64",
        [1 << 61],
        b"",
        error="SHAPE_INVALID",
        flags=[*overflow, "CheckOrder"],
        limits={"maxTensorBytes": 8},
    )
    invalid(
        "tensor-8gib-limit-4gib",
        "float32 [2^31] is 8 GiB, over max_tensor_bytes 4 GiB (spec example)",
        "float32",
        [1 << 31],
        b"",
        error="LIMIT_EXCEEDED",
        flags=["HugeDeclaredShape"],
        limits={"maxTensorBytes": 1 << 32},
    )
    invalid(
        "tensor-at-default-limit",
        "float32 [2^32] is exactly 2^34 bytes, the default limit, so it passes step 6; the empty "
        "payload then fails step 8",
        "float32",
        [1 << 32],
        b"",
        error="TENSOR_SIZE_MISMATCH",
        flags=["HugeDeclaredShape", "Truncated"],
    )
    invalid(
        "tensor-over-default-limit",
        "float32 [2^32 + 1] is 4 bytes over the default 2^34",
        "float32",
        [(1 << 32) + 1],
        b"",
        error="LIMIT_EXCEEDED",
        flags=["HugeDeclaredShape"],
    )
    valid(
        "at-small-limit",
        "float32 [4] is 16 bytes, max_tensor_bytes 16",
        "float32",
        [4],
        pack("float32", [1.0, 2.0, 3.0, 4.0]),
        limits={"maxTensorBytes": 16},
    )
    invalid(
        "over-small-limit",
        "float32 [5] is 20 bytes, max_tensor_bytes 16 (the payload is complete)",
        "float32",
        [5],
        pack("float32", [1.0] * 5),
        error="LIMIT_EXCEEDED",
        limits={"maxTensorBytes": 16},
    )
    invalid(
        "limit-before-length",
        "float32 [3] with 5 payload bytes and max_tensor_bytes 8: step 6 comes before step 8",
        "float32",
        [3],
        bytes(5),
        error="LIMIT_EXCEEDED",
        flags=["CheckOrder", "Truncated"],
        limits={"maxTensorBytes": 8},
    )
    huge_empty = ["EmptyTensor", "HugeDeclaredShape"]
    # Valid by the shape rules, but some array libraries (numpy among them) cannot build an
    # empty array whose nonzero extents overflow, so a receiver may refuse it (PLN-TEN-015).
    valid(
        "zero-then-huge",
        "float32 [0, 2^62, 2^62]: a zero extent, so no elements, whatever the others (spec "
        "example); receivers whose arrays cannot hold it may refuse it",
        "float32",
        [0, 1 << 62, 1 << 62],
        b"",
        error="LIMIT_EXCEEDED",
        flags=[*huge_empty, "UnrepresentableEmpty"],
    )
    valid(
        "huge-then-zero",
        "int64 [2^62, 4, 0]: the zero comes last; multiplying first would overflow; receivers "
        "whose arrays cannot hold it may refuse it",
        "int64",
        [1 << 62, 4, 0],
        b"",
        error="LIMIT_EXCEEDED",
        flags=[*huge_empty, "UnrepresentableEmpty"],
    )
    valid(
        "huge-around-zero",
        "float32 [2^40, 0, 2^20]",
        "float32",
        [1 << 40, 0, 1 << 20],
        b"",
        flags=huge_empty,
    )
    invalid(
        "zero-then-huge-with-bytes",
        "float32 [0, 2^62, 2^62] with 4 payload bytes",
        "float32",
        [0, 1 << 62, 1 << 62],
        bytes(4),
        error="TENSOR_SIZE_MISMATCH",
        flags=[*huge_empty, "Overlong"],
    )


# --- TensorDecode: raw ------------------------------------------------------------------------

# One tensor per dtype with its edge values, used by the raw decode and encode groups.
DTYPE_SAMPLES: dict[str, tuple[list[int], bytes, str]] = {
    "bool": ([2, 2], pack("bool", [1, 0, 0, 1]), "true, false, false, true"),
    "int8": ([6], pack("int8", [-128, -1, 0, 1, 127, 42]), "-128, -1, 0, 1, 127, 42"),
    "int16": ([6], pack("int16", [-32768, -2, 0, 1, 32767, 258]), "-32768, -2, 0, 1, 32767, 258"),
    "int32": (
        [2, 3],
        pack("int32", [-(2**31), -1, 0, 1, 2**31 - 1, 0x01020304]),
        "int32 min, -1, 0, 1, max, 0x01020304",
    ),
    "int64": (
        [5],
        pack("int64", [INT64_MIN, -1, 0, 2**53 + 1, INT64_MAX]),
        "int64 min, -1, 0, 2^53 + 1, max",
    ),
    "uint8": ([5], pack("uint8", [0, 1, 127, 128, 255]), "0, 1, 127, 128, 255"),
    "uint16": ([4], pack("uint16", [0, 1, 0x8000, 0xFFFF]), "0, 1, 2^15, 2^16 - 1"),
    "uint32": ([4], pack("uint32", [0, 1, 0x80000000, 0xFFFFFFFF]), "0, 1, 2^31, 2^32 - 1"),
    "uint64": ([4], pack("uint64", [0, 1, 1 << 63, (1 << 64) - 1]), "0, 1, 2^63, 2^64 - 1"),
    "float16": (
        [2, 2],
        pack_bits("float16", [0x3C00, 0xC100, 0x7BFF, 0x3555]),
        "1.0, -2.5, 65504 (max), 0.333 (3555)",
    ),
    "bfloat16": (
        [2, 2],
        pack_bits("bfloat16", [0x3F80, 0xC020, 0x7F7F, 0x3EAB]),
        "1.0, -2.5, max (7F7F), 0.334 (3EAB)",
    ),
    "float32": (
        [2, 2],
        pack("float32", [1.0, -2.5, 3.4028234663852886e38, 0.1]),
        "1.0, -2.5, max, 0.1",
    ),
    "float64": (
        [2, 2],
        pack("float64", [1.0, -2.5, 1.7976931348623157e308, 0.1]),
        "1.0, -2.5, max, 0.1",
    ),
}

# Special values per float dtype, as bit patterns: (NaNs with payloads, infinities and
# zeros, subnormals).
SPECIAL_NANS = {
    "float16": [0x7E00, 0xFE00, 0x7C01, 0x7E01, 0x7FFF, 0xFC01],
    "bfloat16": [0x7FC0, 0xFFC0, 0x7F81, 0x7FC1, 0x7FFF, 0xFF81],
    "float32": [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FC00001, 0x7FFFFFFF, 0xFF812345],
    "float64": [
        0x7FF8000000000000,
        0xFFF8000000000000,
        0x7FF0000000000001,
        0x7FF8000000000001,
        0x7FFFFFFFFFFFFFFF,
        0xFFF0000000012345,
    ],
}
NAN_WORDS = (
    "quiet +NaN, quiet -NaN, signalling NaN (payload 1), quiet NaN (payload 1), all-ones NaN, "
    "negative signalling NaN"
)


SPECIAL_WORDS = (
    "+inf, -inf, +0.0, -0.0, smallest and largest subnormal, both negated, smallest normal"
)
SPECIAL_FLAGS = ["Infinity", "NegativeZero", "Subnormal"]


def special_values(dtype: str) -> list[int]:
    """Bits of the non-NaN special values of a float dtype (SPECIAL_WORDS)."""
    fmt = FORMATS[dtype]
    neg = fmt.sign_bit(1)
    inf_zero = [fmt.exp_mask, neg | fmt.exp_mask, 0, neg]
    subnormals = [1, fmt.man_mask, neg | 1, neg | fmt.man_mask, 1 << fmt.man_bits]
    return inf_zero + subnormals


def decode_raw_group(v: Vectors) -> None:
    g = DecodeGroup(v, 300, "raw", "raw codec: the payload is the canonical bytes, every dtype.")
    rng = Drbg("tensor-decode-raw")

    def valid(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        data: bytes,
        *,
        flags: Sequence[str] = (),
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "raw", data),
            dtype=dtype,
            codec="raw",
            shape=shape,
            expected=data,
            flags=flags,
        )

    def invalid(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        data: bytes,
        *,
        error: str,
        flags: Sequence[str],
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "raw", data),
            dtype=dtype,
            codec="raw",
            error=error,
            flags=flags,
        )

    for dtype, (shape, data, words) in DTYPE_SAMPLES.items():
        valid(f"{dtype}-values", f"{dtype} {shape}: {words}", dtype, shape, data)
    for dtype in FLOAT_DTYPES:
        valid(
            f"{dtype}-nans",
            f"{dtype} [6] NaNs kept bit for bit: {NAN_WORDS}",
            dtype,
            [6],
            pack_bits(dtype, SPECIAL_NANS[dtype]),
            flags=["NaNPayload", "SignallingNaN"],
        )
        valid(
            f"{dtype}-specials",
            f"{dtype} [9]: {SPECIAL_WORDS}",
            dtype,
            [9],
            pack_bits(dtype, special_values(dtype)),
            flags=SPECIAL_FLAGS,
        )
    for dtype in ("uint64", "float32", "float64"):
        data = rng.take(3 * 5 * DTYPES[dtype].itemsize)
        valid(
            f"{dtype}-random",
            f"{dtype} [3, 5] of random bytes (any bit pattern, NaNs included, is kept)",
            dtype,
            [3, 5],
            data,
            flags=["RandomData"],
        )
    valid(
        "bool-random",
        "bool [4, 8] of random 0x00/0x01 bytes",
        "bool",
        [4, 8],
        bytes(b & 1 for b in rng.take(32)),
        flags=["RandomData"],
    )
    invalid(
        "bool-02",
        "bool [2] holding 01 02: 0x02 is not a bool (spec example)",
        "bool",
        [2],
        b"\x01\x02",
        error="TENSOR_VALUE_INVALID",
        flags=["BoolValueInvalid"],
    )
    invalid(
        "bool-ff",
        "bool scalar 0xFF",
        "bool",
        [],
        b"\xff",
        error="TENSOR_VALUE_INVALID",
        flags=["BoolValueInvalid", "Scalar"],
    )
    invalid(
        "bool-80-last",
        "bool [3, 3] with 0x80 as the last element",
        "bool",
        [3, 3],
        bytes([1, 0] * 4) + b"\x80",
        error="TENSOR_VALUE_INVALID",
        flags=["BoolValueInvalid"],
    )
    invalid(
        "bool-bad-and-short",
        "bool [3] holding 02 02: the length check (step 8) comes before the value check (step 9)",
        "bool",
        [3],
        b"\x02\x02",
        error="TENSOR_SIZE_MISMATCH",
        flags=["BoolValueInvalid", "CheckOrder", "Truncated"],
    )
    invalid(
        "float32-short",
        "float32 [2] with 7 payload bytes (spec example)",
        "float32",
        [2],
        F32_PAIR[:7],
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    invalid(
        "float32-long",
        "float32 [2] with 9 payload bytes",
        "float32",
        [2],
        F32_PAIR + b"\x00",
        error="TENSOR_SIZE_MISMATCH",
        flags=["Overlong"],
    )
    invalid(
        "int64-short",
        "int64 [3] with 16 payload bytes (one element missing)",
        "int64",
        [3],
        pack("int64", [1, 2]),
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    invalid(
        "float64-half",
        "float64 scalar with 4 payload bytes",
        "float64",
        [],
        pack("float32", [1.0]),
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated", "Scalar"],
    )
    invalid(
        "float16-as-float32",
        "float16 [2] carrying 8 bytes (the float32 canonical bytes by mistake)",
        "float16",
        [2],
        F32_PAIR,
        error="TENSOR_SIZE_MISMATCH",
        flags=["Overlong"],
    )


# --- TensorDecode: zstd -----------------------------------------------------------------------


def decode_zstd_group(v: Vectors) -> None:  # noqa: PLR0915 - a flat list of vectors
    g = DecodeGroup(
        v,
        400,
        "zstd",
        "zstd codec: exactly one Zstandard frame whose content is the canonical bytes. Frames "
        "are built by hand from raw and RLE blocks, or frozen encoder output.",
    )

    def add(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        frame: bytes,
        *,
        content: bytes | None = None,
        error: str | None = None,
        flags: Sequence[str] = (),
        lib: str | None = "ok",
    ) -> None:
        """`lib` is what libzstd must make of the frame (a double check; None skips it)."""
        if lib is not None:
            status, out = libzstd(frame)
            assert status == lib, (slug, status, lib)
            if content is not None and error is None:
                assert out == content, slug
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "zstd", frame),
            dtype=dtype,
            codec="zstd",
            shape=shape if content is not None else None,
            expected=content,
            error=error,
            flags=flags,
        )

    frame = zstd_raw_frame(F32_PAIR)
    assert frame.hex() == "28b52ffd20084100000000803f000020c0"  # the spec's example
    add(
        "spec-example",
        "float32 [1.0, -2.5]: single segment, 1-byte content size, one raw block (spec example)",
        "float32",
        [2],
        frame,
        content=F32_PAIR,
    )
    f64_40 = pack("float64", [i * 0.5 - 7.0 for i in range(40)])
    add(
        "size-field-2-bytes",
        "float64 [40] (320 bytes): 2-byte Frame_Content_Size (stored as size - 256)",
        "float64",
        [40],
        zstd_raw_frame(f64_40),
        content=f64_40,
    )
    add(
        "size-field-8-bytes",
        "float32 [2] with an 8-byte Frame_Content_Size field",
        "float32",
        [2],
        zstd_raw_frame(F32_PAIR, fcs_bytes=8),
        content=F32_PAIR,
    )
    no_size = zstd_header(None, single_segment=False)
    add(
        "no-content-size",
        "float32 [2]: no content size in the header (1 KiB window descriptor); the decoder "
        "bounds the output",
        "float32",
        [2],
        no_size + raw_block(F32_PAIR, last=True),
        content=F32_PAIR,
        flags=["ZstdNoContentSize"],
    )
    f32_750 = pack("float32", [float(i % 97) - 48.0 for i in range(750)])
    blocks = (
        raw_block(f32_750[:1024], last=False)
        + raw_block(f32_750[1024:2048], last=False)
        + raw_block(f32_750[2048:], last=True)
    )
    add(
        "multi-block-no-size",
        "float32 [750] (3000 bytes) in three raw blocks of at most 1 KiB (the window), no "
        "content size",
        "float32",
        [750],
        no_size + blocks,
        content=f32_750,
        flags=["ZstdMultiBlock", "ZstdNoContentSize"],
    )
    i16_150 = pack("int16", [i * 211 - 15000 for i in range(150)])
    add(
        "window-and-size",
        "int16 [150]: a window descriptor (not single segment) and a 2-byte content size",
        "int16",
        [150],
        zstd_raw_frame(i16_150, single_segment=False),
        content=i16_150,
    )
    add(
        "rle-block",
        "uint8 [1000] all 0x07 as one RLE block",
        "uint8",
        [1000],
        zstd_header(1000) + rle_block(7, 1000, last=True),
        content=b"\x07" * 1000,
        flags=["ZstdRleBlock"],
    )
    i32_64 = pack("int32", [0] * 32 + list(range(1, 33)))
    rle_raw = rle_block(0, 128, last=False) + raw_block(i32_64[128:], last=True)
    add(
        "rle-then-raw",
        "int32 [64]: 32 zeros as an RLE block of 128 bytes, then 1..32 in a raw block",
        "int32",
        [64],
        zstd_header(256) + rle_raw,
        content=i32_64,
        flags=["ZstdRleBlock", "ZstdMultiBlock"],
    )
    with_checksum = zstd_raw_frame(F32_PAIR, checksum=True) + FROZEN_XXH64_LOW32_F32_1_M2_5
    add(
        "checksum",
        "float32 [1.0, -2.5] with a correct content checksum (7B 46 B5 12)",
        "float32",
        [2],
        with_checksum,
        content=F32_PAIR,
        flags=["ZstdChecksum"],
    )
    contents = frozen_contents()
    add(
        "compressed-level3",
        "float32 [64], x_i = i % 8, compressed at level 3 (frozen libzstd output)",
        "float32",
        [64],
        FROZEN_ZSTD_LEVEL3,
        content=contents[FROZEN_ZSTD_LEVEL3],
        flags=["ZstdCompressedBlock"],
    )
    add(
        "compressed-no-size",
        "int16 [8, 16], x = i // 16 - 4, compressed without content size (frozen)",
        "int16",
        [8, 16],
        FROZEN_ZSTD_NO_SIZE,
        content=contents[FROZEN_ZSTD_NO_SIZE],
        flags=["ZstdCompressedBlock", "ZstdNoContentSize"],
    )
    add(
        "compressed-checksum",
        "float64 [4, 8], x = 1.5 * (i % 4), level 19 with a checksum (frozen)",
        "float64",
        [4, 8],
        FROZEN_ZSTD_CHECKSUM,
        content=contents[FROZEN_ZSTD_CHECKSUM],
        flags=["ZstdCompressedBlock", "ZstdChecksum"],
    )
    add(
        "empty-frame",
        "float32 [0]: content size 0 and one empty raw block",
        "float32",
        [0],
        zstd_raw_frame(b""),
        content=b"",
        flags=["EmptyTensor"],
    )
    bools = b"\x01\x00\x01\x01\x00"
    add("bool", "bool [5] through zstd", "bool", [5], zstd_raw_frame(bools), content=bools)
    specials = pack_bits(
        "float64", [*SPECIAL_NANS["float64"][:3], 0x8000000000000000, 0x7FF0000000000000, 1]
    )
    add(
        "float64-specials",
        "float64 [6]: quiet NaN, -NaN, signalling NaN, -0.0, +inf, smallest subnormal, kept bit "
        "for bit",
        "float64",
        [6],
        zstd_raw_frame(specials),
        content=specials,
        flags=["NaNPayload", "SignallingNaN", "NegativeZero", "Infinity", "Subnormal"],
    )
    window_27 = zstd_header(None, single_segment=False, window_log=27)
    add(
        "window-128mib",
        "no content size and a 128 MiB window (the largest a decoder must accept); the content "
        "is 8 bytes",
        "float32",
        [2],
        window_27 + raw_block(F32_PAIR, last=True),
        content=F32_PAIR,
        flags=["ZstdNoContentSize"],
    )
    window_41 = zstd_header(None, single_segment=False, window_log=41)
    add(
        "window-2tib",
        "no content size and a 2 TiB window (exponent 31): over both 128 MiB and the content "
        "size, so a decoder MAY reject it; one that accepts it gives float32 [1.0, -2.5]",
        "float32",
        [2],
        window_41 + raw_block(F32_PAIR, last=True),
        content=F32_PAIR,
        error="CODEC_DATA_INVALID",
        flags=["ZstdLargeWindow", "ZstdNoContentSize"],
        lib="error",
    )
    add(
        "bool-02",
        "bool [3] whose decompressed content is 01 02 00: step 9 applies after decompression",
        "bool",
        [3],
        zstd_raw_frame(b"\x01\x02\x00"),
        error="TENSOR_VALUE_INVALID",
        flags=["BoolValueInvalid"],
    )
    f32_3 = pack("float32", [1.0, -2.5, 4.0])
    add(
        "size-larger",
        "float32 [2] (8 bytes), the frame holds and declares 12",
        "float32",
        [2],
        zstd_raw_frame(f32_3),
        error="TENSOR_SIZE_MISMATCH",
        flags=["Overlong"],
    )
    add(
        "size-smaller",
        "float32 [2] (8 bytes), the frame holds and declares 4",
        "float32",
        [2],
        zstd_raw_frame(F32_PAIR[:4]),
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    huge_size = zstd_header(1 << 40, fcs_bytes=8) + raw_block(F32_PAIR, last=True)
    add(
        "size-declared-1tib",
        "float32 [2]: the header declares 2^40 content bytes (the block holds 8); decided from "
        "the header, before decompressing",
        "float32",
        [2],
        huge_size,
        error="TENSOR_SIZE_MISMATCH",
        flags=["DecompressionBomb", "CheckOrder"],
        lib="error",
    )
    add(
        "no-size-short",
        "float32 [2], no content size, the frame holds 4 bytes",
        "float32",
        [2],
        no_size + raw_block(F32_PAIR[:4], last=True),
        error="TENSOR_SIZE_MISMATCH",
        flags=["ZstdNoContentSize", "Truncated"],
    )
    add(
        "no-size-long",
        "float32 [2], no content size, the frame holds 12 bytes",
        "float32",
        [2],
        no_size + raw_block(f32_3, last=True),
        error="TENSOR_SIZE_MISMATCH",
        flags=["ZstdNoContentSize", "Overlong"],
    )
    bomb = zstd_header(None, single_segment=False, window_log=17)
    bomb += b"".join(rle_block(0, 1 << 17, last=False) for _ in range(63)) + rle_block(
        0, 1 << 17, last=True
    )
    add(
        "no-size-bomb",
        "float32 [2], no content size, 64 RLE blocks of 128 KiB (8 MiB from 200 bytes): stop at "
        "9 bytes of output",
        "float32",
        [2],
        bomb,
        error="TENSOR_SIZE_MISMATCH",
        flags=["ZstdNoContentSize", "ZstdRleBlock", "DecompressionBomb", "Overlong"],
    )
    add(
        "truncated-block",
        "the raw block declares 8 bytes, 4 follow",
        "float32",
        [2],
        frame[:-4],
        error="CODEC_DATA_INVALID",
        flags=["Truncated"],
        lib="incomplete",
    )
    add(
        "truncated-header",
        "magic number and a descriptor announcing a 1-byte content size, then nothing",
        "float32",
        [2],
        frame[:5],
        error="CODEC_DATA_INVALID",
        flags=["Truncated"],
        lib="incomplete",
    )
    add(
        "truncated-compressed",
        "the frozen level-3 frame without its last 3 bytes",
        "float32",
        [64],
        FROZEN_ZSTD_LEVEL3[:-3],
        error="CODEC_DATA_INVALID",
        flags=["Truncated", "ZstdCompressedBlock"],
        lib="incomplete",
    )
    add(
        "empty-payload",
        "float32 [2] with an empty payload: not a frame",
        "float32",
        [2],
        b"",
        error="CODEC_DATA_INVALID",
        flags=["Truncated"],
        lib="incomplete",
    )
    add(
        "empty-payload-empty-tensor",
        "float32 [0] with an empty payload: still not a frame (zstd always needs one)",
        "float32",
        [0],
        b"",
        error="CODEC_DATA_INVALID",
        flags=["Truncated", "EmptyTensor"],
        lib="incomplete",
    )
    add(
        "bad-magic",
        "magic number 28 B5 2F FE",
        "float32",
        [2],
        bytes.fromhex("28b52ffe") + frame[4:],
        error="CODEC_DATA_INVALID",
        lib="error",
    )
    add(
        "trailing-garbage",
        "a valid frame followed by 01 02 03",
        "float32",
        [2],
        frame + b"\x01\x02\x03",
        error="CODEC_DATA_INVALID",
        flags=["ZstdTrailingData"],
        lib="trailing",
    )
    add(
        "two-frames",
        "a valid frame followed by a second (empty) frame: exactly one frame is allowed",
        "float32",
        [2],
        frame + zstd_raw_frame(b""),
        error="CODEC_DATA_INVALID",
        flags=["ZstdTrailingData"],
        lib="trailing",
    )
    skippable = skippable_frame(b"\xde\xad\xbe\xef")
    add(
        "skippable-only",
        "a skippable frame (magic 0x184D2A50) with 4 bytes of user data",
        "float32",
        [2],
        skippable,
        error="CODEC_DATA_INVALID",
        flags=["ZstdSkippableFrame"],
        lib=None,
    )
    add(
        "skippable-then-frame",
        "a skippable frame, then a valid frame",
        "float32",
        [2],
        skippable + frame,
        error="CODEC_DATA_INVALID",
        flags=["ZstdSkippableFrame"],
        lib=None,
    )
    bad_checksum = with_checksum[:-1] + bytes([with_checksum[-1] ^ 0x01])
    add(
        "checksum-corrupt",
        "a checksummed frame whose checksum has one bit flipped",
        "float32",
        [2],
        bad_checksum,
        error="CODEC_DATA_INVALID",
        flags=["ZstdChecksum"],
        lib="error",
    )
    add(
        "dictionary-id-1",
        "a 1-byte dictionary id (0x2A) in the header; content size and block are right",
        "float32",
        [2],
        zstd_raw_frame(F32_PAIR, dict_id=b"\x2a"),
        error="CODEC_DATA_INVALID",
        flags=["ZstdDictionary"],
        lib="error",
    )
    add(
        "dictionary-and-size",
        "a dictionary id and a content size of 12 for float32 [2]: the size check comes first",
        "float32",
        [2],
        zstd_raw_frame(f32_3, dict_id=b"\x2a"),
        error="TENSOR_SIZE_MISMATCH",
        flags=["ZstdDictionary", "CheckOrder", "Overlong"],
        lib="error",
    )
    add(
        "reserved-bit",
        "the reserved bit 3 of the frame header descriptor is set",
        "float32",
        [2],
        zstd_raw_frame(F32_PAIR, reserved_bit=True),
        error="CODEC_DATA_INVALID",
        flags=["ZstdReserved"],
        lib="error",
    )
    reserved_block = zstd_header(8) + (8 << 3 | 3 << 1 | 1).to_bytes(3, "little") + F32_PAIR
    add(
        "reserved-block-type",
        "a block of the reserved type 3",
        "float32",
        [2],
        reserved_block,
        error="CODEC_DATA_INVALID",
        flags=["ZstdReserved"],
        lib="error",
    )
    corrupt = bytearray(FROZEN_ZSTD_LEVEL3)
    corrupt[FROZEN_LEVEL3_MODES_OFFSET] ^= 0x01
    add(
        "corrupt-compressed",
        "the frozen level-3 frame with the reserved bits of its Symbol_Compression_Modes byte set",
        "float32",
        [64],
        bytes(corrupt),
        error="CODEC_DATA_INVALID",
        flags=["ZstdCompressedBlock", "ZstdReserved"],
        lib="error",
    )


# --- TensorDecode: float16 and bfloat16 ---------------------------------------------------------

CAST_ORDINARY = {
    "float16": (
        [0x3C00, 0xC000, 0x3800, 0x7BFF, 0xFBFF, 0x2E66],
        "1, -2, 0.5, 65504, -65504, 0.0999755859375",
    ),
    "bfloat16": (
        [0x3F80, 0xC000, 0x3F00, 0x7F7F, 0xFF7F, 0x3DCD],
        "1, -2, 0.5, max, -max, 0.10009765625",
    ),
}
CAST_NANS = {
    "float16": [0x7E00, 0xFE00, 0x7C01, 0x7FFF],
    "bfloat16": [0x7FC0, 0xFFC0, 0x7F81, 0x7FFF],
}


def random_non_nan(rng: Drbg, dtype: str, count: int) -> list[int]:
    fmt = FORMATS[dtype]
    out: list[int] = []
    while len(out) < count:
        bits = int.from_bytes(rng.take(fmt.width // 8), "little")
        if unpack_real(fmt, bits).kind != "nan":
            out.append(bits)
    return out


def decode_cast_group(v: Vectors, base: int, codec: str) -> None:
    g = DecodeGroup(
        v,
        base,
        codec,
        f"{codec} codec: numel x 2 bytes of {codec}, widened exactly to FLOAT32 or FLOAT64.",
    )
    rng = Drbg(f"tensor-decode-{codec}")
    ordinary, words = CAST_ORDINARY[codec]
    cases: list[tuple[str, str, list[int], list[str]]] = [
        ("values", words, ordinary, []),
        ("specials", SPECIAL_WORDS, special_values(codec), SPECIAL_FLAGS),
        (
            "nans",
            "quiet NaN, -NaN, signalling NaN, all-ones NaN: each decodes to a NaN of the same sign",
            CAST_NANS[codec],
            ["NaNSignOnly", "SignallingNaN"],
        ),
        ("random", "24 random non-NaN values", random_non_nan(rng, codec, 24), ["RandomData"]),
    ]
    for target in ("float32", "float64"):
        for name, comment, bits, flags in cases:
            shape = [len(bits)] if name != "random" else [4, 6]
            g.add(
                f"{target}-{name}",
                f"{target} {shape} from {codec}: {comment}",
                tensor_msg(target, shape, codec, pack_bits(codec, bits)),
                dtype=target,
                codec=codec,
                shape=shape,
                expected=pack_bits(target, [widen(codec, target, b) for b in bits]),
                flags=flags,
            )
    g.add(
        "empty",
        f"float32 [0] from an empty {codec} payload",
        tensor_msg("float32", [0], codec, b""),
        dtype="float32",
        codec=codec,
        shape=[0],
        expected=b"",
        flags=["EmptyTensor"],
    )
    one = ordinary[2]
    g.add(
        "scalar",
        f"float64 scalar 0.5 from {codec}",
        tensor_msg("float64", [], codec, pack_bits(codec, [one])),
        dtype="float64",
        codec=codec,
        shape=[],
        expected=pack_bits("float64", [widen(codec, "float64", one)]),
        flags=["Scalar"],
    )
    for dtype in ("float16", "bfloat16", "int32"):
        g.add(
            f"not-for-{dtype}",
            f"{codec} codec on a {dtype.upper()} tensor (only FLOAT32 and FLOAT64 apply)",
            tensor_msg(dtype, [2], codec, pack_bits(codec, ordinary[:2])),
            dtype=dtype,
            codec=codec,
            error="CODEC_DATA_INVALID",
            flags=["CodecNotApplicable"],
        )
    pair = pack_bits(codec, ordinary[:2])
    for slug, comment, dtype, shape, payload, flag in (
        ("short", "float32 [2] with 3 payload bytes", "float32", [2], pair[:3], "Truncated"),
        ("long", "float32 [2] with 6 payload bytes", "float32", [2], pair + pair[:2], "Overlong"),
        (
            "float32-bytes",
            "float32 [2] carrying the 8 float32 canonical bytes instead of 4",
            "float32",
            [2],
            F32_PAIR,
            "Overlong",
        ),
    ):
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, codec, payload),
            dtype=dtype,
            codec=codec,
            error="TENSOR_SIZE_MISMATCH",
            flags=[flag],
        )


# --- TensorDecode: int8 -----------------------------------------------------------------------


def int8_payload(scale: float, zero_point: int, q: Sequence[int]) -> bytes:
    return struct.pack("<db", scale, zero_point) + struct.pack(f"<{len(q)}b", *q)


def int8_decoded(dtype: str, scale: float, zero_point: int, q: Sequence[int]) -> bytes:
    """The spec's decode: y = (q - zero_point) * scale in binary64 (a Python float
    multiplication), then one rounding to the dtype."""
    ys = [float(qi - zero_point) * scale for qi in q]
    if dtype == "float64":
        return pack("float64", ys)
    return pack_bits(dtype, [from_float(dtype, y) for y in ys])


def decode_int8_group(v: Vectors) -> None:
    g = DecodeGroup(
        v,
        700,
        "int8",
        "int8 codec: [scale f64][zero_point i8][q i8 x numel]; y = (q - zero_point) x scale in "
        "binary64, rounded once to the dtype.",
    )

    def valid(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        scale: float,
        *,
        zero_point: int,
        q: list[int],
        flags: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "int8", int8_payload(scale, zero_point, q)),
            dtype=dtype,
            codec="int8",
            shape=shape,
            expected=int8_decoded(dtype, scale, zero_point, q),
            error=error,
            flags=flags,
        )

    def invalid(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        payload: bytes,
        *,
        error: str,
        flags: Sequence[str],
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "int8", payload),
            dtype=dtype,
            codec="int8",
            error=error,
            flags=flags,
        )

    spec_scale, spec_q = 3 / 255, [-128, -43, -1, 127]
    assert f64_bits(spec_scale) == 0x3F88181818181818
    assert int8_payload(spec_scale, -43, spec_q).hex() == "181818181818883fd580d5ff7f"
    assert int8_decoded("float32", spec_scale, -43, spec_q)[8:12] == (0x3EFCFCFD).to_bytes(
        4, "little"
    )
    for dtype in ("float32", "float16", "bfloat16"):
        valid(
            f"spec-{dtype}",
            f"{dtype} [4] from the spec's example payload (scale 3/255, zero_point -43, q -128 "
            "-43 -1 127)",
            dtype,
            [4],
            spec_scale,
            zero_point=-43,
            q=spec_q,
        )
    valid(
        "all-zero",
        "float32 [2] from the spec's all-zero payload (scale 1.0, zero_point -128)",
        "float32",
        [2],
        1.0,
        zero_point=-128,
        q=[-128, -128],
    )
    valid(
        "zero-point-positive",
        "float64 [4]: scale 0.5, zero_point 100, q -128 0 100 127",
        "float64",
        [4],
        0.5,
        zero_point=100,
        q=[-128, 0, 100, 127],
    )
    valid(
        "empty",
        "float32 [0]: a 9-byte payload (scale 1.0, zero_point -128) and no q",
        "float32",
        [0],
        1.0,
        zero_point=-128,
        q=[],
        flags=["EmptyTensor"],
    )
    valid(
        "scalar",
        "float32 scalar: scale 0.25, zero_point 0, q -7 gives -1.75",
        "float32",
        [],
        0.25,
        zero_point=0,
        q=[-7],
        flags=["Scalar"],
    )
    scale16 = 1 + 2**-11 + 2**-40  # exact in binary64
    scale_bf = 1 + 2**-8 + 2**-40
    assert f64_bits(scale16) == 0x3FF0020000001000  # the spec's 00 10 00 00 00 02 F0 3F
    valid(
        "double-rounding-float16",
        "float16 [3]: scale 1 + 2^-11 + 2^-40, q 1 -1 2: one rounding gives 3C01 BC01 4001, via "
        "float32 it would be 3C00 BC00 4000",
        "float16",
        [3],
        scale16,
        zero_point=0,
        q=[1, -1, 2],
        flags=["DoubleRounding"],
    )
    valid(
        "double-rounding-bfloat16",
        "bfloat16 [3]: scale 1 + 2^-8 + 2^-40, q 1 -1 2: one rounding gives 3F81 BF81 4001, via "
        "float32 it would be 3F80 BF80 4000",
        "bfloat16",
        [3],
        scale_bf,
        zero_point=0,
        q=[1, -1, 2],
        flags=["DoubleRounding"],
    )
    valid(
        "tie-float16",
        "float16 [2]: scale 1 + 2^-11, q 1 -1: y is halfway between two float16 values and "
        "rounds to even (3C00 BC00)",
        "float16",
        [2],
        1 + 2**-11,
        zero_point=0,
        q=[1, -1],
        flags=["RoundingTie"],
    )
    valid(
        "overflow-float16",
        "float16 [3]: scale 1000, zero_point -128, q 127 -128 -28: 255000 and 100000 overflow to "
        "+inf",
        "float16",
        [3],
        1000.0,
        zero_point=-128,
        q=[127, -128, -28],
        flags=["Overflow", "Infinity"],
    )
    valid(
        "overflow-binary64",
        "float64 [2]: scale 1e308, zero_point -128, q 127 -128: 255 x 1e308 overflows binary64 "
        "to +inf",
        "float64",
        [2],
        1e308,
        zero_point=-128,
        q=[127, -128],
        flags=["Overflow", "Infinity"],
    )
    valid(
        "subnormal-scale",
        "float64 [4]: scale 2^-1074 (smallest subnormal), q 1 2 -3 127",
        "float64",
        [4],
        5e-324,
        zero_point=0,
        q=[1, 2, -3, 127],
        flags=["Subnormal"],
    )
    valid(
        "subnormal-float32",
        "float32 [4]: scale 2^-140, q 1 3 -1 100: float32 subnormal results",
        "float32",
        [4],
        2.0**-140,
        zero_point=0,
        q=[1, 3, -1, 100],
        flags=["Subnormal"],
    )
    valid(
        "rounding-float32",
        "float32 [5]: scale 0.1, q 1 3 7 -7 127: binary64 products rounded once to float32",
        "float32",
        [5],
        0.1,
        zero_point=0,
        q=[1, 3, 7, -7, 127],
    )
    zero_scale = ["ZeroScale"]
    valid(
        "zero-scale",
        "float32 [3]: scale +0.0, zero_point -5, q -5 0 10: decoders SHOULD reject; one that "
        "decodes gives +0.0 everywhere",
        "float32",
        [3],
        0.0,
        zero_point=-5,
        q=[-5, 0, 10],
        flags=zero_scale,
        error="CODEC_DATA_INVALID",
    )
    valid(
        "negative-zero-scale",
        "float32 [3]: scale -0.0, zero_point 5, q -5 0 4 (all below zero_point): SHOULD reject; "
        "decoding gives +0.0 everywhere",
        "float32",
        [3],
        -0.0,
        zero_point=5,
        q=[-5, 0, 4],
        flags=[*zero_scale, "NegativeZero"],
        error="CODEC_DATA_INVALID",
    )
    for slug, bits, what, flags in (
        ("scale-nan", 0x7FF8000000000000, "a quiet NaN", []),
        ("scale-signalling-nan", 0x7FF0000000000001, "a signalling NaN", ["SignallingNaN"]),
        ("scale-inf", 0x7FF0000000000000, "+inf", ["Infinity"]),
        ("scale-negative", 0xBFF0000000000000, "-1.0", []),
    ):
        invalid(
            slug,
            f"float32 [2] with scale {what}",
            "float32",
            [2],
            int8_payload(f64_from_bits(bits), 0, [1, 2]),
            error="CODEC_DATA_INVALID",
            flags=flags,
        )
    good = int8_payload(0.5, 0, [1, 2])
    invalid(
        "only-scale",
        "float32 [2] with an 8-byte payload (scale only)",
        "float32",
        [2],
        good[:8],
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    invalid(
        "one-q-missing",
        "float32 [2] with 10 payload bytes (one q missing)",
        "float32",
        [2],
        good[:-1],
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    invalid(
        "one-q-extra",
        "float32 [2] with 12 payload bytes (one q too many)",
        "float32",
        [2],
        good + b"\x03",
        error="TENSOR_SIZE_MISMATCH",
        flags=["Overlong"],
    )
    invalid(
        "empty-payload",
        "float32 [0] with an empty payload: the 9-byte header is required",
        "float32",
        [0],
        b"",
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated", "EmptyTensor"],
    )
    invalid(
        "nan-scale-and-short",
        "scale NaN and one q missing: the length check comes first",
        "float32",
        [2],
        int8_payload(math.nan, 0, [1]),
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated", "CheckOrder"],
    )
    for dtype in ("int32", "bool"):
        invalid(
            f"not-for-{dtype}",
            f"int8 codec on a {dtype.upper()} tensor (only the float dtypes apply)",
            dtype,
            [2],
            good,
            error="CODEC_DATA_INVALID",
            flags=["CodecNotApplicable"],
        )


# --- TensorDecode: topk -----------------------------------------------------------------------


def topk_payload(k: int, indices: Sequence[int], values: bytes, width: int = 4) -> bytes:
    code = {4: "I", 8: "Q"}[width]
    return struct.pack("<Q", k) + struct.pack(f"<{len(indices)}{code}", *indices) + values


def topk_decoded(dtype: str, count: int, indices: Sequence[int], values: bytes) -> bytes:
    """+0.0 everywhere except at the indices, which hold the stored values bit for bit."""
    size = DTYPES[dtype].itemsize
    out = bytearray(count * size)  # all-zero bytes are +0.0 in every float format
    for n, index in enumerate(indices):
        out[index * size : (index + 1) * size] = values[n * size : (n + 1) * size]
    return bytes(out)


SPEC_TOPK = [0.5, -3.0, 2.0, -2.0, 1.0]


def decode_topk_group(v: Vectors) -> None:
    g = DecodeGroup(
        v,
        800,
        "topk",
        "topk codec: [k u64][k indices, u32 when numel <= 2^32 else u64][k values]; every other "
        "element is +0.0.",
    )

    def valid(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        k: int,
        *,
        indices: list[int],
        values: bytes,
        flags: Sequence[str] = (),
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "topk", topk_payload(k, indices, values)),
            dtype=dtype,
            codec="topk",
            shape=shape,
            expected=topk_decoded(dtype, numel(shape), indices, values),
            flags=flags,
        )

    def invalid(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        payload: bytes,
        *,
        error: str,
        flags: Sequence[str] = (),
    ) -> None:
        g.add(
            slug,
            comment,
            tensor_msg(dtype, shape, "topk", payload),
            dtype=dtype,
            codec="topk",
            error=error,
            flags=flags,
        )

    spec = topk_payload(2, [1, 2], pack("float32", [-3.0, 2.0]))
    assert spec.hex() == "0200000000000000" + "0100000002000000" + "000040c000000040"
    valid(
        "spec-float32",
        "float32 [5], k 2, indices 1 2, values -3.0 2.0 (spec example): [0, -3, 2, 0, 0]",
        "float32",
        [5],
        2,
        indices=[1, 2],
        values=pack("float32", [-3.0, 2.0]),
    )
    valid(
        "float64",
        "float64 [5], k 2, indices 1 2, values -3.0 2.0",
        "float64",
        [5],
        2,
        indices=[1, 2],
        values=pack("float64", [-3.0, 2.0]),
    )
    valid(
        "float16",
        "float16 [5], k 2, indices 1 2, values -3.0 2.0 (C200 4000)",
        "float16",
        [5],
        2,
        indices=[1, 2],
        values=pack_bits("float16", [0xC200, 0x4000]),
    )
    valid(
        "bfloat16",
        "bfloat16 [5], k 2, indices 1 2, values -3.0 2.0 (C040 4000)",
        "bfloat16",
        [5],
        2,
        indices=[1, 2],
        values=pack_bits("bfloat16", [0xC040, 0x4000]),
    )
    valid(
        "k-zero",
        "float32 [4], k 0: the payload is 8 zero bytes and every element is +0.0",
        "float32",
        [4],
        0,
        indices=[],
        values=b"",
    )
    valid(
        "k-all",
        "float64 [3], k 3 = numel: every element stored",
        "float64",
        [3],
        3,
        indices=[0, 1, 2],
        values=pack("float64", [1.5, -0.25, 8.0]),
    )
    valid(
        "two-dims",
        "float32 [2, 3], k 2, flat indices 1 and 5 (C order: [0][1] and [1][2])",
        "float32",
        [2, 3],
        2,
        indices=[1, 5],
        values=pack("float32", [7.0, -9.0]),
    )
    valid(
        "scalar",
        "float32 scalar, k 1, index 0, value -7.5",
        "float32",
        [],
        1,
        indices=[0],
        values=pack("float32", [-7.5]),
        flags=["Scalar"],
    )
    valid(
        "scalar-k-zero",
        "float16 scalar, k 0: +0.0",
        "float16",
        [],
        0,
        indices=[],
        values=b"",
        flags=["Scalar"],
    )
    valid(
        "empty",
        "float32 [0], k 0",
        "float32",
        [0],
        0,
        indices=[],
        values=b"",
        flags=["EmptyTensor"],
    )
    nan_values = pack_bits("float32", [0x7FC00123, 0x80000000, 0xFF800000, 0x00000001])
    valid(
        "float32-specials",
        "float32 [6], k 4 at 0 2 4 5: NaN with payload 0x123, -0.0, -inf, smallest subnormal, "
        "copied bit for bit",
        "float32",
        [6],
        4,
        indices=[0, 2, 4, 5],
        values=nan_values,
        flags=["NaNPayload", "NegativeZero", "Infinity", "Subnormal"],
    )
    valid(
        "float64-signalling-nan",
        "float64 [3], k 1 at index 2: a signalling NaN copied bit for bit",
        "float64",
        [3],
        1,
        indices=[2],
        values=pack_bits("float64", [0x7FF0000000000001]),
        flags=["NaNPayload", "SignallingNaN"],
    )
    values2 = pack("float32", [-3.0, 2.0])
    invalid(
        "payload-7-bytes",
        "float32 [5] with a 7-byte payload (shorter than k)",
        "float32",
        [5],
        spec[:7],
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    invalid(
        "k-over-numel",
        "float32 [5], k 6 with six indices and values present",
        "float32",
        [5],
        topk_payload(6, list(range(6)), pack("float32", [1.0] * 6)),
        error="CODEC_DATA_INVALID",
    )
    invalid(
        "k-over-numel-short",
        "float32 [5], k 6 and nothing after k: k > numel (step 2) comes before the length (step 3)",
        "float32",
        [5],
        topk_payload(6, [], b""),
        error="CODEC_DATA_INVALID",
        flags=["CheckOrder", "Truncated"],
    )
    invalid(
        "k-max-uint64",
        "float32 [5], k 2^64 - 1: must not overflow the length computation",
        "float32",
        [5],
        topk_payload((1 << 64) - 1, [], b""),
        error="CODEC_DATA_INVALID",
        flags=["Truncated"],
    )
    invalid(
        "k-one-empty-tensor",
        "float32 [0], k 1",
        "float32",
        [0],
        topk_payload(1, [0], pack("float32", [1.0])),
        error="CODEC_DATA_INVALID",
        flags=["EmptyTensor"],
    )
    invalid(
        "one-byte-short",
        "float32 [5], k 2, the last value byte missing",
        "float32",
        [5],
        spec[:-1],
        error="TENSOR_SIZE_MISMATCH",
        flags=["Truncated"],
    )
    invalid(
        "one-byte-long",
        "float32 [5], k 2, one byte too many",
        "float32",
        [5],
        spec + b"\x00",
        error="TENSOR_SIZE_MISMATCH",
        flags=["Overlong"],
    )
    invalid(
        "wrong-index-width",
        "float32 [5], k 2 with 8-byte indices (numel <= 2^32 needs 4-byte indices)",
        "float32",
        [5],
        topk_payload(2, [1, 2], values2, width=8),
        error="TENSOR_SIZE_MISMATCH",
        flags=["Overlong"],
    )
    invalid(
        "indices-descending",
        "float32 [5], indices 2 then 1",
        "float32",
        [5],
        topk_payload(2, [2, 1], values2),
        error="CODEC_DATA_INVALID",
    )
    invalid(
        "indices-duplicate",
        "float32 [5], indices 1 then 1",
        "float32",
        [5],
        topk_payload(2, [1, 1], values2),
        error="CODEC_DATA_INVALID",
    )
    invalid(
        "index-equals-numel",
        "float32 [5], indices 1 then 5",
        "float32",
        [5],
        topk_payload(2, [1, 5], values2),
        error="CODEC_DATA_INVALID",
    )
    big = ["LargeNumel", "HugeDeclaredShape"]
    f16_pair = pack_bits("float16", [0x3C00, 0x4000])
    n32 = 1 << 32
    invalid(
        "numel-2-32-width-4",
        "float16 [2^32] (8 GiB): 4-byte indices apply (numel <= 2^32), so the length fits and "
        "the descending indices 5, 3 are the error",
        "float16",
        [n32],
        topk_payload(2, [5, 3], f16_pair),
        error="CODEC_DATA_INVALID",
        flags=big,
    )
    invalid(
        "numel-2-32-width-8",
        "float16 [2^32] with 8-byte indices: wrong width, wrong length",
        "float16",
        [n32],
        topk_payload(2, [3, 5], f16_pair, width=8),
        error="TENSOR_SIZE_MISMATCH",
        flags=[*big, "Overlong"],
    )
    invalid(
        "numel-over-2-32-width-4",
        "float16 [2^32 + 1] with 4-byte indices: 8-byte indices apply, so the length is wrong",
        "float16",
        [n32 + 1],
        topk_payload(2, [3, 5], f16_pair),
        error="TENSOR_SIZE_MISMATCH",
        flags=[*big, "Truncated"],
    )
    invalid(
        "numel-over-2-32-index-range",
        "float16 [2^32 + 1] with 8-byte indices 3 and 2^32 + 1 (= numel)",
        "float16",
        [n32 + 1],
        topk_payload(2, [3, n32 + 1], f16_pair, width=8),
        error="CODEC_DATA_INVALID",
        flags=big,
    )
    for dtype in ("int32", "bool"):
        invalid(
            f"not-for-{dtype}",
            f"topk codec on a {dtype.upper()} tensor (only the float dtypes apply)",
            dtype,
            [5],
            topk_payload(1, [0], bytes(DTYPES[dtype].itemsize)),
            error="CODEC_DATA_INVALID",
            flags=["CodecNotApplicable"],
        )


# --- TensorEncode ---------------------------------------------------------------------------


def encode_zstd_group(v: Vectors) -> None:
    """Inputs for the zstd encoder, judged by property: the empty tensor, the spec's example,
    every dtype, a compressible tensor of 640 KiB (several blocks, a 4-byte content size)
    and incompressible random bytes (raw blocks past the 128 KiB block limit)."""
    g = EncodeGroup(
        v,
        1600,
        "zstd",
        "zstd encoding: exactly one frame, no dictionary, content = the canonical bytes "
        "(judged by property, not byte for byte).",
    )
    g.add(
        "empty",
        "float32 [3, 0]: one frame with empty content",
        dtype="float32",
        shape=[3, 0],
        canonical=b"",
        flags=["EmptyTensor"],
        by_property=True,
    )
    g.add(
        "spec-example",
        "float32 [2] = 1.0, -2.5 (the example of spec 09-codecs.md)",
        dtype="float32",
        shape=[2],
        canonical=F32_PAIR,
        by_property=True,
    )
    for dtype, (shape, data, words) in DTYPE_SAMPLES.items():
        g.add(
            f"{dtype}-values",
            f"{dtype} {shape}: {words}",
            dtype=dtype,
            shape=shape,
            canonical=data,
            by_property=True,
        )
    scalar = pack_bits("float64", [0x8000000000000000])
    g.add(
        "scalar-negative-zero",
        "float64 scalar -0.0",
        dtype="float64",
        shape=[],
        canonical=scalar,
        flags=["Scalar", "NegativeZero"],
        by_property=True,
    )
    # Sizes past the 128 KiB block limit but small enough to keep the repository light.
    big = pack("float32", [float(i % 1024) for i in range(5 * 32768)])
    g.add(
        "compressible-640kib",
        "float32 [5, 32768], x_i = i mod 1024: 640 KiB that compress well (a 4-byte content "
        "size, several blocks)",
        dtype="float32",
        shape=[5, 32768],
        canonical=big,
        by_property=True,
    )
    noise = Drbg("tensor-encode-zstd").take(140_000)
    g.add(
        "incompressible-random",
        "uint8 [140000] of pseudo-random bytes: incompressible, more than one 128 KiB block",
        dtype="uint8",
        shape=[140_000],
        canonical=noise,
        flags=["RandomData"],
        by_property=True,
    )


def f32_bits_of(x: float) -> int:
    """Bits of the binary32 nearest to x (CPython rounds a double to float once)."""
    return int.from_bytes(struct.pack("<f", x), "little")


def cast_encode(src: str, codec: str, bits: Sequence[int]) -> bytes:
    """The float16/bfloat16 codec's payload for elements of `src` given as bits."""
    nan = {"float16": 0x7E00, "bfloat16": 0x7FC0}[codec]
    out = []
    for b in bits:
        r = narrow_cast(src, codec, b, nan)
        if codec == "float16":
            check_float16_with_struct(src, b, r)
        elif src == "float32":
            check_bfloat16_with_bit_trick(b, r)
        out.append(r)
    return pack_bits(codec, out)


def via_float32(codec: str, x: float) -> int:
    """The wrong, twice-rounded result (binary64 -> binary32 -> codec), to prove that a
    DoubleRounding vector really separates the two methods."""
    return round_real(
        FORMATS[codec],
        unpack_real(FORMATS["float32"], round_real(FORMATS["float32"], real_of_float(x))),
    )


def random_floats(rng: Drbg, dtype: str, count: int, emin: int, emax: int) -> list[int]:
    """Bits of normal numbers with random sign, exponent in [emin, emax] and mantissa."""
    fmt = FORMATS[dtype]
    out = []
    for _ in range(count):
        sign = rng.below(2)
        exponent = emin + rng.below(emax - emin + 1)
        mantissa = rng.below(1 << fmt.man_bits)
        out.append(fmt.sign_bit(sign) | (exponent + fmt.bias) << fmt.man_bits | mantissa)
    return out


def encode_raw_group(v: Vectors) -> None:
    g = EncodeGroup(v, 1100, "raw", "raw encoding: the payload is the canonical bytes.")
    for dtype, (shape, data, words) in DTYPE_SAMPLES.items():
        g.add(
            f"{dtype}-values",
            f"{dtype} {shape}: {words}",
            dtype=dtype,
            shape=shape,
            canonical=data,
            payload=data,
        )
    for dtype in ("float32", "float64"):
        nans = pack_bits(dtype, SPECIAL_NANS[dtype])
        g.add(
            f"{dtype}-nans",
            f"{dtype} [6] NaNs kept bit for bit: {NAN_WORDS}",
            dtype=dtype,
            shape=[6],
            canonical=nans,
            payload=nans,
            flags=["NaNPayload", "SignallingNaN"],
        )
    g.add(
        "empty",
        "float32 [3, 0]: empty payload",
        dtype="float32",
        shape=[3, 0],
        canonical=b"",
        payload=b"",
        flags=["EmptyTensor"],
    )
    scalar = pack_bits("float64", [0x8000000000000000])
    g.add(
        "scalar-negative-zero",
        "float64 scalar -0.0",
        dtype="float64",
        shape=[],
        canonical=scalar,
        payload=scalar,
        flags=["Scalar", "NegativeZero"],
    )


def encode_cast_group(
    v: Vectors,
    base: int,
    codec: str,
    cases: Sequence[tuple[str, str, str, list[int], list[str]]],
    random_range: tuple[int, int],
) -> None:
    """One group per narrowing codec; each case is (slug, comment, source dtype, source
    bits, flags). Random cases are appended for both source dtypes."""
    g = EncodeGroup(
        v,
        base,
        codec,
        f"{codec} encoding: one round-to-nearest-even per element, directly from the source value.",
    )
    rng = Drbg(f"tensor-encode-{codec}")
    for slug, comment, src, bits, flags in cases:
        if "DoubleRounding" in flags:
            for b in bits:
                x = f64_from_bits(b)
                assert via_float32(codec, x) != narrow_cast(src, codec, b, 0), (slug, x)
        g.add(
            slug,
            f"{src} {[len(bits)]}: {comment}",
            dtype=src,
            shape=[len(bits)],
            canonical=pack_bits(src, bits),
            payload=cast_encode(src, codec, bits),
            flags=flags,
        )
    for src in ("float32", "float64"):
        emin, emax = max(random_range[0], FORMATS[src].emin), random_range[1]
        bits = random_floats(rng, src, 32, emin, emax)
        g.add(
            f"{src}-random",
            f"{src} [4, 8]: random values with exponents {emin}..{emax} and random mantissas",
            dtype=src,
            shape=[4, 8],
            canonical=pack_bits(src, bits),
            payload=cast_encode(src, codec, bits),
            flags=["RandomData"],
        )
    g.add(
        "empty",
        "float32 [0]: empty payload",
        dtype="float32",
        shape=[0],
        canonical=b"",
        payload=b"",
        flags=["EmptyTensor"],
    )
    neg_zero = [0x8000000000000000]
    g.add(
        "scalar-negative-zero",
        "float64 scalar -0.0 keeps its sign",
        dtype="float64",
        shape=[],
        canonical=pack_bits("float64", neg_zero),
        payload=cast_encode("float64", codec, neg_zero),
        flags=["Scalar", "NegativeZero"],
    )


def b32(*xs: float) -> list[int]:
    return [f32_bits_of(x) for x in xs]


def b64(*xs: float) -> list[int]:
    return [f64_bits(x) for x in xs]


def encode_float16_group(v: Vectors) -> None:
    inf = math.inf
    spec = b32(65504.0, 65519.99, 65520.0)
    assert cast_encode("float32", "float16", spec).hex() == "ff7bff7b007c"
    spec_sub = b64(2.0**-24, 2.0**-25, 3 * 2.0**-26)
    assert cast_encode("float64", "float16", spec_sub).hex() == "010000000100"
    cases = [
        (
            "spec-overflow",
            "65504, 65519.99, 65520 -> 7BFF 7BFF 7C00: 65520 is the tie to 65536 and rounds to "
            "even, which is +inf (spec example)",
            "float32",
            spec,
            ["Overflow", "RoundingTie"],
        ),
        (
            "spec-nan",
            "NaN with bits FFC00001 -> FE00: sign kept, payload replaced (spec example)",
            "float32",
            [0xFFC00001],
            ["NaNPayload"],
        ),
        (
            "ties",
            "1 + 2^-11, 1 + 3 x 2^-11, -(1 + 2^-11), 2^-25, 3 x 2^-25: halfway cases go to the "
            "even neighbour (3C00 3C02 BC00 0000 0002)",
            "float32",
            b32(1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 2**-25, 3 * 2**-25),
            ["RoundingTie", "Subnormal"],
        ),
        (
            "inf-zero",
            "+inf, -inf, +0.0, -0.0",
            "float32",
            b32(inf, -inf, 0.0, -0.0),
            ["Infinity", "NegativeZero"],
        ),
        (
            "underflow",
            "2^-26, -2^-26, 2^-149, -2^-25 -> 0000 8000 0000 8000 (zeros keep the sign)",
            "float32",
            b32(2**-26, -(2**-26), 2**-149, -(2**-25)),
            ["Underflow", "RoundingTie", "NegativeZero"],
        ),
        (
            "subnormals",
            "2^-24, 1023 x 2^-24, -2^-24, 1023.5 x 2^-24 -> 0001 03FF 8001 0400 (no flush to "
            "zero; the tie rounds up to the smallest normal)",
            "float32",
            b32(2**-24, 1023 * 2**-24, -(2**-24), 1023.5 * 2**-24),
            ["Subnormal", "RoundingTie"],
        ),
        (
            "nans",
            "NaNs 7F800001 (signalling), 7FFFFFFF, FFC00000, 7FC00000 -> 7E00 7E00 FE00 7E00",
            "float32",
            [0x7F800001, 0x7FFFFFFF, 0xFFC00000, 0x7FC00000],
            ["NaNPayload", "SignallingNaN"],
        ),
        (
            "spec-subnormals",
            "2^-24, 2^-25, 3 x 2^-26 -> 0001 0000 0001: 2^-25 is a tie and rounds to even (spec "
            "example)",
            "float64",
            spec_sub,
            ["Subnormal", "RoundingTie"],
        ),
        (
            "spec-double-rounding",
            "1 + 2^-11 + 2^-40 -> 3C01; through binary32 it would wrongly be 3C00 (spec example)",
            "float64",
            b64(1 + 2**-11 + 2**-40),
            ["DoubleRounding"],
        ),
        (
            "double-rounding-below-tie",
            "1 + 3 x 2^-11 - 2^-40 -> 3C01 (through binary32 it becomes the tie 1 + 3 x 2^-11 "
            "and rounds to 3C02)",
            "float64",
            b64(1 + 3 * 2**-11 - 2**-40),
            ["DoubleRounding"],
        ),
        (
            "double-rounding-overflow",
            "65520 - 2^-30 -> 7BFF (through binary32 it becomes 65520 and overflows to 7C00)",
            "float64",
            b64(65520 - 2**-30),
            ["DoubleRounding", "Overflow"],
        ),
        (
            "double-rounding-subnormal",
            "2^-25 + 2^-60 -> 0001 (through binary32 it becomes the tie 2^-25 and rounds to 0000)",
            "float64",
            b64(2**-25 + 2**-60),
            ["DoubleRounding", "Subnormal"],
        ),
        (
            "float64-overflow",
            "1e300, -1e300, 65520, 65519.99999999999 -> 7C00 FC00 7C00 7BFF",
            "float64",
            b64(1e300, -1e300, 65520.0, 65519.99999999999),
            ["Overflow", "Infinity"],
        ),
        (
            "float64-underflow",
            "2^-1074, -2^-1074, 2^-26 -> 0000 8000 0000",
            "float64",
            b64(5e-324, -5e-324, 2**-26),
            ["Underflow", "NegativeZero", "Subnormal"],
        ),
        (
            "float64-nans",
            "NaNs 7FF0000000000001 (signalling), FFF8000000000001, 7FF8000000000000 -> 7E00 FE00 "
            "7E00",
            "float64",
            [0x7FF0000000000001, 0xFFF8000000000001, 0x7FF8000000000000],
            ["NaNPayload", "SignallingNaN"],
        ),
    ]
    encode_cast_group(v, 1200, "float16", cases, (-27, 16))


def encode_bfloat16_group(v: Vectors) -> None:
    inf = math.inf
    assert cast_encode("float32", "bfloat16", [0x3F808000, 0x3F818000]).hex() == "803f823f"
    assert cast_encode("float32", "bfloat16", [0x7F7F7FFF, 0x7F7F8000]).hex() == "7f7f807f"
    top = (2 - 2**-8 - 2**-40) * 2.0**127
    cases = [
        ("spec-exact", "1.0, -2.5 -> 3F80 C020 (spec example)", "float32", b32(1.0, -2.5), []),
        (
            "spec-ties",
            "3F808000, 3F818000, BF808000: ties round to even (3F80 3F82 BF80; the first two are "
            "the spec example)",
            "float32",
            [0x3F808000, 0x3F818000, 0xBF808000],
            ["RoundingTie"],
        ),
        (
            "spec-overflow",
            "7F7F7FFF -> 7F7F, 7F7F8000 -> 7F80: the tie above the largest finite bfloat16 "
            "rounds to +inf (spec example)",
            "float32",
            [0x7F7F7FFF, 0x7F7F8000],
            ["Overflow", "RoundingTie"],
        ),
        (
            "inf-zero",
            "+inf, -inf, +0.0, -0.0",
            "float32",
            b32(inf, -inf, 0.0, -0.0),
            ["Infinity", "NegativeZero"],
        ),
        (
            "subnormals",
            "00010000 -> 0001, 00008000 -> 0000 (tie), 00018000 -> 0002 (tie), 00000001 -> 0000, "
            "80000001 -> 8000, 007FFFFF -> 0080",
            "float32",
            [0x00010000, 0x00008000, 0x00018000, 0x00000001, 0x80000001, 0x007FFFFF],
            ["Subnormal", "RoundingTie", "Underflow", "NegativeZero"],
        ),
        (
            "nans",
            "NaNs 7F800001 (signalling), FFFFFFFF, 7FC00000, FF800001 -> 7FC0 FFC0 7FC0 FFC0",
            "float32",
            [0x7F800001, 0xFFFFFFFF, 0x7FC00000, 0xFF800001],
            ["NaNPayload", "SignallingNaN"],
        ),
        (
            "spec-double-rounding",
            "1 + 2^-8 + 2^-40 -> 3F81; through binary32 with ordinary rounding it would be 3F80 "
            "(spec example)",
            "float64",
            b64(1 + 2**-8 + 2**-40),
            ["DoubleRounding"],
        ),
        (
            "double-rounding-below-tie",
            "1 + 3 x 2^-8 - 2^-40 -> 3F81 (through binary32 it becomes a tie and rounds to 3F82)",
            "float64",
            b64(1 + 3 * 2**-8 - 2**-40),
            ["DoubleRounding"],
        ),
        (
            "double-rounding-overflow",
            "(2 - 2^-8 - 2^-40) x 2^127 -> 7F7F (through binary32 it becomes the tie below 2^128 "
            "and overflows to 7F80)",
            "float64",
            b64(top),
            ["DoubleRounding", "Overflow"],
        ),
        (
            "double-rounding-subnormal",
            "2^-134 + 2^-160 -> 0001 (through binary32 it becomes the tie 2^-134 and rounds to "
            "0000)",
            "float64",
            b64(2**-134 + 2**-160),
            ["DoubleRounding", "Subnormal"],
        ),
        (
            "float64-overflow",
            "3.5e38, -1e300, 1e39 (beyond binary32) -> 7F80 FF80 7F80",
            "float64",
            b64(3.5e38, -1e300, 1e39),
            ["Overflow", "Infinity"],
        ),
        (
            "float64-underflow",
            "2^-1074, -1e-300 -> 0000 8000",
            "float64",
            b64(5e-324, -1e-300),
            ["Underflow", "NegativeZero"],
        ),
        (
            "float64-nans",
            "NaNs 7FF0000000000001 (signalling), FFF8000000000001 -> 7FC0 FFC0",
            "float64",
            [0x7FF0000000000001, 0xFFF8000000000001],
            ["NaNPayload", "SignallingNaN"],
        ),
    ]
    encode_cast_group(v, 1300, "bfloat16", cases, (-136, 127))


def int8_encode(xs: Sequence[float]) -> bytes | None:
    """The spec's int8 encoder in plain binary64 Python floats; None means the encoder
    must refuse (TENSOR_VALUE_INVALID). round() on a float rounds half to even, exactly."""
    if not all(math.isfinite(x) for x in xs):
        return None
    lo = min([0.0, *xs])
    hi = max([0.0, *xs])
    scale = 1.0 if hi == lo else (hi - lo) / 255
    if scale == 0.0:
        return None
    zero_point = min(max(-128 - round(lo / scale), -128), 127)
    q = [min(max(round(x / scale) + zero_point, -128), 127) for x in xs]
    return int8_payload(scale, zero_point, q)


def encode_int8_group(v: Vectors) -> None:
    g = EncodeGroup(
        v, 1400, "int8", "int8 encoding: the spec's affine quantization formulas in binary64."
    )
    rng = Drbg("tensor-encode-int8")

    def add(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        bits: list[int],
        *,
        flags: Sequence[str] = (),
    ) -> None:
        xs = [to_float(dtype, b) for b in bits]
        payload = int8_encode(xs)
        error = "TENSOR_VALUE_INVALID" if payload is None else None
        g.add(
            slug,
            comment,
            dtype=dtype,
            shape=shape,
            canonical=pack_bits(dtype, bits),
            payload=payload,
            error=error,
            flags=flags,
        )

    spec = b32(-1.0, 0.0, 0.5, 2.0)
    assert int8_encode([-1.0, 0.0, 0.5, 2.0]) == bytes.fromhex("181818181818883fd580d5ff7f")
    assert int8_encode([0.0, 0.0]) == bytes.fromhex("000000000000f03f808080")
    add(
        "spec",
        "float32 [-1, 0, 0.5, 2]: scale 3/255, zero_point -43, q -128 -43 -1 127; 42.5 is a tie "
        "and rounds to 42 (spec example)",
        "float32",
        [4],
        spec,
        flags=["RoundingTie"],
    )
    add(
        "spec-all-zero",
        "float32 [0, 0]: hi == lo, so scale 1.0 and zero_point -128 (spec example)",
        "float32",
        [2],
        b32(0.0, 0.0),
    )
    add(
        "empty",
        "float32 [0]: lo = hi = 0, so the 9-byte header (scale 1.0, zero_point -128) and no q",
        "float32",
        [0],
        [],
        flags=["EmptyTensor"],
    )
    add(
        "positive",
        "float32 [1, 2, 3, 4]: lo = 0, zero_point -128",
        "float32",
        [4],
        b32(1.0, 2.0, 3.0, 4.0),
    )
    add(
        "negative",
        "float64 [-1, -2, -3]: hi = 0, zero_point 127",
        "float64",
        [3],
        b64(-1.0, -2.0, -3.0),
    )
    add(
        "ties",
        "float64 [-100, 155, 0.5, 1.5, 2.5, -0.5, -1.5]: scale exactly 1.0, so every x / scale "
        "of the form n + 0.5 is a tie (to even)",
        "float64",
        [7],
        b64(-100.0, 155.0, 0.5, 1.5, 2.5, -0.5, -1.5),
        flags=["RoundingTie"],
    )
    clamp_xs = [-1.5, 253.5, 0.0]
    assert round(253.5) + (-128 - round(-1.5)) == 128  # the clamp really fires
    add(
        "clamp",
        "float64 [-1.5, 253.5, 0]: scale 1.0, zero_point -126; 253.5 rounds to 254, and 254 - "
        "126 = 128 clamps to 127",
        "float64",
        [3],
        b64(*clamp_xs),
        flags=["Clamp", "RoundingTie"],
    )
    add(
        "float16-source",
        "float16 [-1, 0, 0.5, 2] (BC00 0000 3800 4000): the same payload as the float32 example",
        "float16",
        [4],
        [0xBC00, 0x0000, 0x3800, 0x4000],
    )
    add(
        "bfloat16-source",
        "bfloat16 [-1, 0, 0.5, 2] (BF80 0000 3F00 4000)",
        "bfloat16",
        [4],
        [0xBF80, 0x0000, 0x3F00, 0x4000],
    )
    add(
        "negative-zero",
        "float32 [-0.0, 0.0]: all zero, scale 1.0, zero_point -128",
        "float32",
        [2],
        b32(-0.0, 0.0),
        flags=["NegativeZero"],
    )
    add("scalar", "float32 scalar 3.0", "float32", [], b32(3.0), flags=["Scalar"])
    add(
        "float32-random",
        "float32 [3, 5] random values with exponents -4..3",
        "float32",
        [3, 5],
        random_floats(rng, "float32", 15, -4, 3),
        flags=["RandomData"],
    )
    add(
        "float64-random",
        "float64 [3, 5] random values with exponents -4..3 and full 52-bit mantissas",
        "float64",
        [3, 5],
        random_floats(rng, "float64", 15, -4, 3),
        flags=["RandomData"],
    )
    add(
        "subnormal-scale",
        "float64 [0, 255 x 2^-1074]: scale is exactly 2^-1074, subnormal but not zero",
        "float64",
        [2],
        b64(0.0, 255 * 5e-324),
        flags=["Subnormal"],
    )
    add(
        "nan",
        "float32 [1, NaN]: the encoder must refuse NaN",
        "float32",
        [2],
        [0x3F800000, 0x7FC00000],
    )
    add(
        "inf",
        "float64 [+inf, 1]: the encoder must refuse infinities",
        "float64",
        [2],
        b64(math.inf, 1.0),
        flags=["Infinity"],
    )
    add(
        "float16-negative-inf",
        "float16 [1, -inf]: refused",
        "float16",
        [2],
        [0x3C00, 0xFC00],
        flags=["Infinity"],
    )
    add(
        "scale-underflow",
        "float64 [2^-1074, 0]: (hi - lo) / 255 underflows to 0, which the encoder must refuse",
        "float64",
        [2],
        b64(5e-324, 0.0),
        flags=["Underflow", "Subnormal"],
    )


def topk_encode(dtype: str, canonical: bytes, k: int) -> bytes | None:
    """Keep the k elements of largest magnitude, ties to the smaller flat index, written in
    index order; None when a NaN makes the encoder refuse."""
    bits = unpack_bits(dtype, canonical)
    values = [to_float(dtype, b) for b in bits]
    if any(math.isnan(x) for x in values):
        return None
    order = sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))
    kept = sorted(order[:k])
    width = 4 if len(values) <= 1 << 32 else 8
    size = DTYPES[dtype].itemsize
    kept_values = b"".join(canonical[i * size : (i + 1) * size] for i in kept)
    return topk_payload(k, kept, kept_values, width)


def encode_topk_group(v: Vectors) -> None:
    g = EncodeGroup(
        v, 1500, "topk", "topk encoding: the k largest magnitudes, ties to the smaller index."
    )
    rng = Drbg("tensor-encode-topk")

    def add(
        slug: str,
        comment: str,
        dtype: str,
        shape: list[int],
        bits: list[int],
        *,
        k: int,
        flags: Sequence[str] = (),
    ) -> None:
        canonical = pack_bits(dtype, bits)
        payload = topk_encode(dtype, canonical, k)
        error = "TENSOR_VALUE_INVALID" if payload is None else None
        g.add(
            slug,
            comment,
            dtype=dtype,
            shape=shape,
            canonical=canonical,
            payload=payload,
            error=error,
            k=k,
            flags=flags,
        )

    spec = b32(*SPEC_TOPK)
    assert topk_encode("float32", pack_bits("float32", spec), 2) == topk_payload(
        2, [1, 2], pack("float32", [-3.0, 2.0])
    )
    inf = math.inf
    add(
        "spec",
        "float32 [0.5, -3, 2, -2, 1], k 2: -3 first, then 2 and -2 tie and index 2 wins (spec "
        "example)",
        "float32",
        [5],
        spec,
        k=2,
        flags=["TopkTie"],
    )
    add(
        "all-tied",
        "float32 [1, -1, 1, -1], k 2: all magnitudes equal, indices 0 and 1 win",
        "float32",
        [4],
        b32(1.0, -1.0, 1.0, -1.0),
        k=2,
        flags=["TopkTie"],
    )
    add(
        "k-zero",
        "float32 [3], k 0: the payload is k = 0 alone",
        "float32",
        [3],
        b32(1.0, 2.0, 3.0),
        k=0,
    )
    add("k-all", "float64 [3], k 3 = numel: all indices", "float64", [3], b64(-0.25, 8.0, 1.5), k=3)
    add(
        "inf-k1",
        "float32 [1, -inf, 3, +inf], k 1: both infinities are largest, the smaller index (1) wins",
        "float32",
        [4],
        b32(1.0, -inf, 3.0, inf),
        k=1,
        flags=["Infinity", "TopkTie"],
    )
    add(
        "inf-k3",
        "float32 [1, -inf, 3, +inf], k 3: indices 1, 2, 3",
        "float32",
        [4],
        b32(1.0, -inf, 3.0, inf),
        k=3,
        flags=["Infinity"],
    )
    add(
        "negative-zero",
        "float32 [0.0, -0.0, 0.0], k 2: |-0.0| = 0 ties with +0.0; indices 0 and 1, values +0.0 "
        "and -0.0 (bits kept)",
        "float32",
        [3],
        b32(0.0, -0.0, 0.0),
        k=2,
        flags=["NegativeZero", "TopkTie"],
    )
    add(
        "subnormal",
        "float64 [0.0, 2^-1074, -0.0], k 1: the subnormal is larger than zero",
        "float64",
        [3],
        b64(0.0, 5e-324, -0.0),
        k=1,
        flags=["Subnormal"],
    )
    add(
        "float16-source",
        "float16 [0.5, -3, 2, -2, 1] (3800 C200 4000 C000 3C00), k 2",
        "float16",
        [5],
        [0x3800, 0xC200, 0x4000, 0xC000, 0x3C00],
        k=2,
        flags=["TopkTie"],
    )
    add(
        "bfloat16-source",
        "bfloat16 [0.5, -3, 2, -2, 1] (3F00 C040 4000 C000 3F80), k 2",
        "bfloat16",
        [5],
        [0x3F00, 0xC040, 0x4000, 0xC000, 0x3F80],
        k=2,
        flags=["TopkTie"],
    )
    add(
        "two-dims",
        "float32 [2, 3], k 3: flat C-order indices",
        "float32",
        [2, 3],
        b32(0.1, -5.0, 0.2, 4.0, -0.3, 6.0),
        k=3,
    )
    add("scalar", "float32 scalar -7.5, k 1", "float32", [], b32(-7.5), k=1, flags=["Scalar"])
    add(
        "scalar-k-zero", "float32 scalar -7.5, k 0", "float32", [], b32(-7.5), k=0, flags=["Scalar"]
    )
    small_ints = [float(rng.below(7) - 3) for _ in range(100)]
    add(
        "random-ties",
        "float32 [100] of random integers in -3..3, k 10: many ties, broken by index",
        "float32",
        [100],
        b32(*small_ints),
        k=10,
        flags=["RandomData", "TopkTie"],
    )
    add(
        "random-float64",
        "float64 [50] random values, k 7",
        "float64",
        [50],
        random_floats(rng, "float64", 50, -10, 10),
        k=7,
        flags=["RandomData"],
    )
    add("empty", "float32 [0], k 0", "float32", [0], [], k=0, flags=["EmptyTensor"])
    add(
        "nan",
        "float32 [1, NaN, 3], k 1: the encoder must refuse NaN",
        "float32",
        [3],
        [0x3F800000, 0x7FC00000, 0x40400000],
        k=1,
    )
    add(
        "nan-k-zero",
        "float32 [NaN, 1], k 0: refused even though nothing would be kept",
        "float32",
        [2],
        [0x7FC00000, 0x3F800000],
        k=0,
    )
    add(
        "float64-signalling-nan",
        "float64 [5, signalling NaN], k 1: refused",
        "float64",
        [2],
        [f64_bits(5.0), 0x7FF0000000000001],
        k=1,
        flags=["SignallingNaN"],
    )


# --- ChunkSet -----------------------------------------------------------------------------


def chunk_set_group(v: Vectors) -> None:
    g = ChunkGroup(v, 2100)
    rng = Drbg("chunk-set")
    blob = rng.take(40)
    c0, c1, c2 = (0, blob[:16]), (16, blob[16:32]), (32, blob[32:])

    def a(chunk: tuple[int, bytes]) -> Chunk:
        return Chunk(chunk[0], chunk[1], "appended")

    def d(chunk: tuple[int, bytes]) -> Chunk:
        return Chunk(chunk[0], chunk[1], "duplicate")

    def r(chunk: tuple[int, bytes]) -> Chunk:
        return Chunk(chunk[0], chunk[1], "rejected")

    def e(chunk: tuple[int, bytes]) -> Chunk:
        return Chunk(chunk[0], chunk[1], "INVALID_ARGUMENT")

    g.add(
        "in-order",
        "40 bytes in chunks of 16, 16, 8, in order",
        blob=blob,
        chunks=[a(c0), a(c1), a(c2)],
    )
    g.add("single-chunk", "the whole blob in one chunk", blob=blob, chunks=[a((0, blob))])
    g.add(
        "missing-last",
        "the last chunk never arrives: 32 of 40 bytes",
        blob=blob,
        chunks=[a(c0), a(c1)],
        error="BLOB_INCOMPLETE",
        flags=["MissingChunk"],
    )
    g.add(
        "missing-middle",
        "the middle chunk never arrives, so the last one (offset 32 > 16) is not written",
        blob=blob,
        chunks=[a(c0), r(c2)],
        error="BLOB_INCOMPLETE",
        flags=["MissingChunk"],
    )
    g.add(
        "no-chunks",
        "no chunk at all for a 40-byte blob",
        blob=blob,
        chunks=[],
        error="BLOB_INCOMPLETE",
        flags=["MissingChunk"],
    )
    g.add(
        "duplicate",
        "the middle chunk arrives twice; the second copy is ignored",
        blob=blob,
        chunks=[a(c0), a(c1), d(c1), a(c2)],
        flags=["DuplicateChunk"],
    )
    g.add(
        "resend-whole",
        "the whole blob is resent as one chunk after completion",
        blob=blob,
        chunks=[a(c0), a(c1), a(c2), d((0, blob))],
        flags=["DuplicateChunk"],
    )
    g.add(
        "duplicate-inner-range",
        "a chunk [4, 8) inside the committed bytes is a duplicate",
        blob=blob,
        chunks=[a(c0), a(c1), d((4, blob[4:8])), a(c2)],
        flags=["DuplicateChunk"],
    )
    other = bytes(b ^ 0xFF for b in blob[:16])
    g.add(
        "duplicate-different-bytes",
        "a resend of [0, 16) with different bytes: within the committed bytes, so ignored "
        "without comparing",
        blob=blob,
        chunks=[a(c0), d((0, other)), a(c1), a(c2)],
        flags=["DuplicateChunk"],
    )
    g.add(
        "reordered",
        "the last chunk arrives before the middle one: not written, resent after it",
        blob=blob,
        chunks=[a(c0), r(c2), a(c1), a(c2)],
        flags=["ReorderedChunks"],
    )
    g.add(
        "reordered-start",
        "the middle chunk arrives first: not written, then everything in order",
        blob=blob,
        chunks=[r(c1), a(c0), a(c1), a(c2)],
        flags=["ReorderedChunks"],
    )
    g.add(
        "partial-overlap",
        "a chunk [8, 24) straddles the committed size 16: not written",
        blob=blob,
        chunks=[a(c0), r((8, blob[8:24])), a(c1), a(c2)],
        flags=["PartialOverlap"],
    )
    corrupt = bytes([blob[16] ^ 0x01]) + blob[17:32]
    g.add(
        "corrupt-chunk",
        "the middle chunk has one bit flipped: all 40 bytes arrive, the digest differs",
        blob=blob,
        chunks=[a(c0), a((16, corrupt)), a(c2)],
        error="BLOB_DIGEST_MISMATCH",
        flags=["CorruptChunk"],
    )
    g.add(
        "wrong-digest",
        "the right bytes, but the declared SHA-256 is that of another blob",
        blob=blob,
        chunks=[a(c0), a(c1), a(c2)],
        sha256=hashlib.sha256(b"another blob").digest(),
        error="BLOB_DIGEST_MISMATCH",
        flags=["WrongDigest"],
    )
    g.add(
        "corrupt-and-missing",
        "a corrupt first chunk and a missing last chunk: incompleteness is reported before the "
        "digest",
        blob=blob,
        chunks=[a((0, other)), a(c1)],
        error="BLOB_INCOMPLETE",
        flags=["CorruptChunk", "MissingChunk", "CheckOrder"],
    )
    g.add(
        "empty-blob",
        "a blob of 0 bytes (SHA-256 e3b0c442...) with no chunk is complete",
        blob=b"",
        chunks=[],
        flags=["EmptyBlob"],
    )
    g.add(
        "empty-blob-wrong-digest",
        "a 0-byte blob declared with an all-zero digest",
        blob=b"",
        chunks=[],
        sha256=bytes(32),
        error="BLOB_DIGEST_MISMATCH",
        flags=["EmptyBlob", "WrongDigest"],
    )
    g.add(
        "empty-blob-past-end",
        "a 1-byte chunk for a 0-byte blob",
        blob=b"",
        chunks=[e((0, b"\x00"))],
        flags=["EmptyBlob", "ChunkPastEnd"],
    )
    g.add(
        "past-end",
        "a 9-byte chunk at offset 32 of a 40-byte blob ends past it; then the right chunk",
        blob=blob,
        chunks=[a(c0), a(c1), e((32, c2[1] + b"\x00")), a(c2)],
        flags=["ChunkPastEnd"],
    )
    g.add(
        "past-end-far",
        "a chunk at offset 100 of a 40-byte blob is an error, not merely a gap",
        blob=blob,
        chunks=[a(c0), e((100, b"x")), a(c1), a(c2)],
        flags=["ChunkPastEnd"],
    )
    g.add(
        "past-end-at-committed",
        "a 41-byte chunk at offset 0 (the committed size) of a 40-byte blob is an error, not an "
        "append",
        blob=blob,
        chunks=[e((0, blob + b"\x00")), a(c0), a(c1), a(c2)],
        flags=["ChunkPastEnd"],
    )
    g.add(
        "past-end-after-complete",
        "a 41-byte resend after completion is an error, not a duplicate",
        blob=blob,
        chunks=[a(c0), a(c1), a(c2), e((0, blob + b"\x00"))],
        flags=["ChunkPastEnd", "DuplicateChunk"],
    )
    big = Drbg("chunk-set-large").take(10000)
    parts = [(0, big[:4096]), (4096, big[4096:8192]), (8192, big[8192:])]
    g.add(
        "large",
        "10000 bytes in chunks of 4096 (data in files), the second one twice",
        blob=big,
        chunks=[a(parts[0]), a(parts[1]), d(parts[1]), a(parts[2])],
        flags=["DuplicateChunk"],
    )


# --- Value ---------------------------------------------------------------------------------


def value_group(v: Vectors) -> None:
    g = ValueGroup(v, 3100)
    g.add("bool-true", "bool_value true", pb_varint(V_BOOL, 1), value=True)
    g.add(
        "bool-false",
        "bool_value false written explicitly (08 00): a set member, delivered as false, not as 0",
        pb_varint(V_BOOL, 0),
        value=False,
        flags=["ProtobufDefaultWritten"],
    )
    g.add(
        "int-zero",
        "int_value 0 written explicitly (10 00): an integer, not a bool",
        pb_varint(V_INT, 0),
        value=0,
        flags=["ProtobufDefaultWritten"],
    )
    g.add(
        "int-one", "int_value 1: an integer, never delivered as true", pb_varint(V_INT, 1), value=1
    )
    g.add("int-minus-one", "int_value -1 (a 10-byte varint)", pb_varint(V_INT, -1), value=-1)
    g.add(
        "int-min",
        "int_value -2^63",
        pb_varint(V_INT, INT64_MIN),
        value=INT64_MIN,
        flags=["Int64Extreme"],
    )
    g.add(
        "int-max",
        "int_value 2^63 - 1",
        pb_varint(V_INT, INT64_MAX),
        value=INT64_MAX,
        flags=["Int64Extreme"],
    )
    g.add(
        "int-2-53-plus-1",
        "int_value 2^53 + 1, which a binary64 number would round to 2^53",
        pb_varint(V_INT, 2**53 + 1),
        value=2**53 + 1,
        flags=["Int64Extreme"],
    )
    g.add(
        "int-non-minimal",
        "int_value 5 as a 4-byte varint 85 80 80 00",
        key(V_INT, WT_VARINT) + padded_varint(5, 4),
        value=5,
        flags=["ProtobufNonMinimalVarint"],
    )
    doubles = [
        ("zero", 0x0000000000000000, "+0.0 written explicitly", ["ProtobufDefaultWritten"]),
        ("negative-zero", 0x8000000000000000, "-0.0", ["NegativeZero"]),
        ("one", 0x3FF0000000000000, "1.0", []),
        (
            "smallest-subnormal",
            0x0000000000000001,
            "2^-1074, the smallest subnormal",
            ["Subnormal"],
        ),
        ("inf", 0x7FF0000000000000, "+inf", ["Infinity"]),
        ("negative-inf", 0xFFF0000000000000, "-inf", ["Infinity"]),
        ("nan", 0x7FF8000000000000, "the default quiet NaN", []),
        ("nan-payload", 0x7FF80000DEADBEEF, "a quiet NaN with payload DEADBEEF", ["NaNPayload"]),
        ("nan-signalling", 0x7FF0000000000001, "a signalling NaN", ["NaNPayload", "SignallingNaN"]),
        ("nan-negative", 0xFFF8000000000001, "a negative quiet NaN with payload 1", ["NaNPayload"]),
    ]
    for slug, bits, what, flags in doubles:
        message = key(V_DOUBLE, WT_I64) + bits.to_bytes(8, "little")
        g.add(
            f"double-{slug}",
            f"double_value {what}, bits {bits:016X} kept exactly",
            message,
            bits=bits,
            flags=flags,
        )
    strings = [
        ("empty", "", "the empty string, written explicitly", ["ProtobufDefaultWritten"]),
        ("ascii", "hello", "ASCII text", []),
        ("bmp", "\u00e9\u20ac\u4e2d", "2- and 3-byte UTF-8: e-acute, euro sign, CJK", []),
        ("astral", "\U0001f600\U0001d11e", "U+1F600 and U+1D11E (4-byte UTF-8)", ["AstralPlane"]),
        ("nul", "a\x00b", "an embedded U+0000", ["NulBytes"]),
        ("max-code-point", "\U0010ffff", "U+10FFFF, the largest code point", ["AstralPlane"]),
        (
            "not-normalized",
            "\ufeffe\u0301",
            "a BOM then e + combining acute: kept, never normalized",
            [],
        ),
    ]
    for slug, text, what, flags in strings:
        g.add(
            f"string-{slug}",
            f"string_value: {what}",
            pb_bytes(V_STRING, text.encode("utf-8")),
            value=text,
            flags=flags,
        )
    blobs = [
        ("empty", b"", "empty bytes, written explicitly", ["ProtobufDefaultWritten"]),
        ("nul", b"\x00\x00\x01\x00", "bytes with NULs", ["NulBytes"]),
        ("all-values", bytes(range(256)), "all 256 byte values", ["NulBytes"]),
        (
            "not-utf8",
            b"\xff\xc0\x80\xed\xa0\x80",
            "bytes that are not UTF-8 (fine for bytes_value)",
            [],
        ),
    ]
    for slug, data, what, flags in blobs:
        g.add(
            f"bytes-{slug}",
            f"bytes_value: {what}",
            pb_bytes(V_BYTES, data),
            value=data,
            flags=flags,
        )
    g.add(
        "oneof-last-wins",
        'int_value 5 then string_value "x": the last member set wins',
        pb_varint(V_INT, 5) + pb_bytes(V_STRING, b"x"),
        value="x",
        flags=["ProtobufLastWins"],
    )
    g.add(
        "oneof-last-wins-bool",
        "int_value 1 then bool_value false: a bool false",
        pb_varint(V_INT, 1) + pb_varint(V_BOOL, 0),
        value=False,
        flags=["ProtobufLastWins"],
    )
    g.add(
        "member-twice",
        "int_value 1 then int_value 2: the last wins",
        pb_varint(V_INT, 1) + pb_varint(V_INT, 2),
        value=2,
        flags=["ProtobufLastWins"],
    )
    g.add(
        "unknown-field",
        "an unknown field 9 next to int_value 7 is ignored",
        pb_varint(9, 1) + pb_varint(V_INT, 7),
        value=7,
        flags=["ProtobufUnknownFields"],
    )
    g.add(
        "empty-message",
        "no member set (an empty message)",
        b"",
        error="INVALID_ARGUMENT",
        flags=["NoMemberSet"],
    )
    g.add(
        "only-unknown-member",
        "only an unknown field 6 (a member from a later version)",
        pb_varint(6, 1),
        error="INVALID_ARGUMENT",
        flags=["NoMemberSet", "ProtobufUnknownFields"],
    )
    bad_utf8 = [
        ("ff", b"\xff", "the byte FF"),
        ("overlong-nul", b"\xc0\x80", "C0 80, an overlong encoding of U+0000"),
        ("surrogate", b"\xed\xa0\x80", "ED A0 80, the surrogate U+D800"),
        ("truncated", b"a\xe2\x82", "a 3-byte sequence cut after 2 bytes"),
        ("too-large", b"\xf4\x90\x80\x80", "F4 90 80 80, beyond U+10FFFF"),
    ]
    for slug, data, what in bad_utf8:
        g.add(
            f"string-invalid-{slug}",
            f"string_value with invalid UTF-8: {what}",
            pb_bytes(V_STRING, data),
            error="INVALID_ARGUMENT",
            flags=["InvalidUtf8"],
        )
    g.add(
        "truncated",
        "string_value declares 5 bytes and 2 follow",
        key(V_STRING, WT_LEN) + b"\x05ab",
        error="INVALID_ARGUMENT",
        flags=["MalformedMessage", "Truncated"],
    )


# --- manifest, schema, files --------------------------------------------------------------------


def manifest_schema() -> Json:
    """JSON Schema (draft 2020-12) of manifest.json."""
    hex_bytes = {"type": "string", "pattern": "^([0-9a-f]{2})*$"}
    file_ref = {
        "type": "object",
        "required": ["file", "sha256"],
        "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "pattern": "^[a-z_]+/[0-9]{4}-[a-z0-9-]+\\.(bin|raw)$"},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
    }
    common = {
        "tcId": {"type": "integer", "minimum": 1},
        "comment": {"type": "string", "minLength": 1},
        "result": {"enum": ["valid", "invalid", "acceptable"]},
        "flags": {"type": "array", "items": {"$ref": "#/$defs/flag"}, "uniqueItems": True},
        "error": {"$ref": "#/$defs/errorCode"},
    }
    required_common = ["tcId", "comment", "result", "flags"]

    def rules(output: list[str]) -> list[Json]:
        """valid: the outputs and no error; invalid: an error and no outputs; acceptable:
        both the error and the outputs."""
        return [
            {
                "if": {"properties": {"result": {"const": "valid"}}},
                "then": {"required": output, "not": {"required": ["error"]}},
            },
            {
                "if": {"properties": {"result": {"const": "invalid"}}},
                "then": {
                    "required": ["error"],
                    "not": {"anyOf": [{"required": [o]} for o in output]},
                },
            },
            {
                "if": {"properties": {"result": {"const": "acceptable"}}},
                "then": {"required": ["error", *output], "properties": {"flags": {"minItems": 1}}},
            },
        ]

    def group(kind: str, test: Json, extra: Json) -> Json:
        return {
            "type": "object",
            "required": ["type", "description", "tests", *extra],
            "additionalProperties": False,
            "properties": {
                "type": {"const": kind},
                "description": {"type": "string"},
                "tests": {"type": "array", "items": test},
                **extra,
            },
        }

    limit = {"type": "integer", "minimum": 1}
    decode_test = {
        "type": "object",
        "required": [*required_common, "input", "dtype", "codec"],
        "additionalProperties": False,
        "properties": {
            **common,
            "input": {"$ref": "#/$defs/fileRef"},
            "dtype": {"oneOf": [{"$ref": "#/$defs/dtype"}, {"type": "null"}]},
            "codec": {"type": "string"},
            "limits": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": dict.fromkeys(
                    (
                        "maxMessageBytes",
                        "maxTensorBytes",
                        "maxTensors",
                        "maxRank",
                        "maxBlobBytes",
                        "maxMapEntries",
                    ),
                    limit,
                ),
            },
            "codecs": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "dtypes": {"type": "array", "items": {"$ref": "#/$defs/dtype"}, "uniqueItems": True},
            "shape": {"$ref": "#/$defs/shape"},
            "expected": {"$ref": "#/$defs/fileRef"},
        },
        "allOf": rules(["shape", "expected"]),
    }
    encode_test = {
        "type": "object",
        "required": [*required_common, "dtype", "shape", "input"],
        "additionalProperties": False,
        "properties": {
            **common,
            "dtype": {"$ref": "#/$defs/dtype"},
            "shape": {"$ref": "#/$defs/shape"},
            "input": {"$ref": "#/$defs/fileRef"},
            "params": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"k": {"type": "integer", "minimum": 0}},
            },
            "expected": {"$ref": "#/$defs/fileRef"},
        },
        "allOf": rules(["expected"]),
    }
    # zstd output is the encoder's choice: no expected payload, judged by property.
    zstd_encode_test = {
        "type": "object",
        "required": [*required_common, "dtype", "shape", "input"],
        "additionalProperties": False,
        "properties": {
            **common,
            "result": {"const": "valid"},
            "flags": {
                "type": "array",
                "items": {"$ref": "#/$defs/flag"},
                "uniqueItems": True,
                "contains": {"const": "ZstdEncoderChoice"},
            },
            "dtype": {"$ref": "#/$defs/dtype"},
            "shape": {"$ref": "#/$defs/shape"},
            "input": {"$ref": "#/$defs/fileRef"},
        },
        "not": {"required": ["error"]},
    }
    chunk = {
        "type": "object",
        "required": ["offset", "committedSize"],
        "additionalProperties": False,
        "properties": {
            "offset": {"type": "integer", "minimum": 0},
            "dataHex": hex_bytes,
            "dataFile": {"$ref": "#/$defs/fileRef"},
            "outcome": {"enum": ["appended", "duplicate", "rejected"]},
            "error": {"$ref": "#/$defs/errorCode"},
            "committedSize": {"type": "integer", "minimum": 0},
        },
        "allOf": [
            {"oneOf": [{"required": ["dataHex"]}, {"required": ["dataFile"]}]},
            {"oneOf": [{"required": ["outcome"]}, {"required": ["error"]}]},
        ],
    }
    chunk_test = {
        "type": "object",
        "required": [*required_common, "blobSha256", "totalSize", "chunks"],
        "additionalProperties": False,
        "properties": {
            **common,
            "blobSha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "totalSize": {"type": "integer", "minimum": 0},
            "chunks": {"type": "array", "items": chunk},
            "expected": {"$ref": "#/$defs/fileRef"},
        },
        "allOf": rules(["expected"]),
    }
    value_kinds = {
        "bool": {"type": "boolean"},
        "int64": {"type": "string", "pattern": "^-?(0|[1-9][0-9]*)$"},
        "double": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "string": {"type": "string"},
        "bytes": hex_bytes,
    }
    value_test = {
        "type": "object",
        "required": [*required_common, "input"],
        "additionalProperties": False,
        "properties": {
            **common,
            "input": {"$ref": "#/$defs/fileRef"},
            "valueType": {"enum": list(value_kinds)},
            "value": {},
            "utf8Hex": hex_bytes,
        },
        "allOf": [
            *rules(["valueType", "value"]),
            *(
                {
                    "if": {"required": ["valueType"], "properties": {"valueType": {"const": kind}}},
                    "then": {"properties": {"value": schema}},
                }
                for kind, schema in value_kinds.items()
            ),
            {
                "if": {"required": ["valueType"], "properties": {"valueType": {"const": "string"}}},
                "then": {"required": ["utf8Hex"]},
                "else": {"not": {"required": ["utf8Hex"]}},
            },
        ],
    }
    codec_param = {"codec": {"$ref": "#/$defs/codec"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pollen.dev/conformance/vectors/manifest.schema.json",
        "title": "Pollen protocol v1 golden test vectors",
        "type": "object",
        "required": ["schema", "generatorVersion", "numberOfTests", "notes", "testGroups"],
        "additionalProperties": False,
        "properties": {
            "schema": {"const": SCHEMA_FILE},
            "generatorVersion": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+$"},
            "numberOfTests": {"type": "integer", "minimum": 0},
            "notes": {
                "type": "object",
                "propertyNames": {"$ref": "#/$defs/flag"},
                "additionalProperties": {"type": "string", "minLength": 1},
            },
            "testGroups": {
                "type": "array",
                "items": {
                    "oneOf": [
                        group("TensorDecode", decode_test, codec_param),
                        group(
                            "TensorEncode",
                            encode_test,
                            {"codec": {"$ref": "#/$defs/codec", "not": {"const": "zstd"}}},
                        ),
                        group("TensorEncode", zstd_encode_test, {"codec": {"const": "zstd"}}),
                        group("ChunkSet", chunk_test, {}),
                        group("Value", value_test, {}),
                    ]
                },
            },
        },
        "$defs": {
            "fileRef": file_ref,
            "flag": {"enum": sorted(NOTES)},
            "errorCode": {"enum": list(ERROR_CODES)},
            "dtype": {"enum": list(DTYPES)},
            "codec": {"enum": list(CODEC_IDS)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
    }


def to_json(value: Any, indent: int = 0) -> str:
    """JSON with sorted keys, two-space indentation, ASCII only, and arrays of scalars kept
    on one line (shapes and flags stay readable)."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {to_json(value[k], indent + 1)}" for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return "[" + ", ".join(json.dumps(item) for item in value) + "]"
        items = [pad + to_json(item, indent + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, ensure_ascii=True)


def build() -> dict[str, bytes]:
    """The whole vector tree: relative path -> content."""
    v = Vectors()
    decode_header_group(v)
    decode_shape_group(v)
    decode_raw_group(v)
    decode_zstd_group(v)
    decode_cast_group(v, 500, "float16")
    decode_cast_group(v, 600, "bfloat16")
    decode_int8_group(v)
    decode_topk_group(v)
    encode_raw_group(v)
    encode_float16_group(v)
    encode_bfloat16_group(v)
    encode_int8_group(v)
    encode_topk_group(v)
    encode_zstd_group(v)
    chunk_set_group(v)
    value_group(v)
    for frame, content in frozen_contents().items():
        assert libzstd(frame) == ("ok", content), "a frozen zstd frame no longer decompresses"

    tests = [test for group in v.groups for test in group["tests"]]
    ids = [test["tcId"] for test in tests]
    assert len(ids) == len(set(ids)), "tcIds must be unique"
    used = {flag for test in tests for flag in test["flags"]}
    assert used == set(NOTES), (
        f"unused notes {set(NOTES) - used}, unnoted flags {used - set(NOTES)}"
    )
    manifest = {
        "schema": SCHEMA_FILE,
        "generatorVersion": GENERATOR_VERSION,
        "numberOfTests": len(tests),
        "notes": NOTES,
        "testGroups": v.groups,
    }
    files = dict(v.files)
    files[MANIFEST_FILE] = (to_json(manifest) + "\n").encode("ascii")
    files[SCHEMA_FILE] = (to_json(manifest_schema()) + "\n").encode("ascii")
    return files


def existing_files(directory: Path) -> dict[str, bytes]:
    """The generator-owned files now in `directory`."""
    found: dict[str, bytes] = {}
    for name in (MANIFEST_FILE, SCHEMA_FILE):
        if (directory / name).is_file():
            found[name] = (directory / name).read_bytes()
    for sub in DATA_DIRS:
        root = directory / sub
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    found[path.relative_to(directory).as_posix()] = path.read_bytes()
    return found


def check(directory: Path = VECTOR_DIR) -> list[str]:
    """Differences between the tree in `directory` and a fresh generation; empty when
    regeneration would be byte-identical."""
    wanted = build()
    have = existing_files(directory)
    problems = [f"missing: {p}" for p in sorted(wanted.keys() - have.keys())]
    problems += [f"extra: {p}" for p in sorted(have.keys() - wanted.keys())]
    problems += [
        f"differs: {p}" for p in sorted(wanted.keys() & have.keys()) if wanted[p] != have[p]
    ]
    return problems


def write(directory: Path = VECTOR_DIR) -> int:
    """Write the tree, removing stale generated files; returns the number of tests."""
    wanted = build()
    for stale in existing_files(directory).keys() - wanted.keys():
        (directory / stale).unlink()
    for relative, content in wanted.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
    manifest = json.loads(wanted[MANIFEST_FILE])
    count: int = manifest["numberOfTests"]
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="verify the tree instead of writing it"
    )
    parser.add_argument("--dir", type=Path, default=VECTOR_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dir)
        if problems:
            print("golden vectors are out of date; run python -m conformance.vectors.generate")
            for line in problems:
                print(f"  {line}")
            return 1
        print("golden vectors are up to date")
        return 0
    count = write(args.dir)
    print(f"wrote {count} tests to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
