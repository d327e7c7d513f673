"""The zstd codec: exactly one Zstandard frame (RFC 8878) holding the canonical bytes.

Decoding reads the frame header and walks the block headers before decompressing
anything, so that the sizes are checked against the tensor first and a frame with trailing
bytes, a dictionary, a reserved bit or a truncated block is refused without running the
decompressor. Decompression itself never produces more than `expected + 1` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

from pollen.codecs._base import Payload, byte_view, canonical, reject_params, shaped
from pollen.dtypes import Dtype
from pollen.errors import CodecDataInvalid, TensorSizeMismatch

_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # low 4 bits vary: 0x184D2A50 to 0x184D2A5F
_MAX_SMALL_WINDOW = 1 << 27  # 128 MiB: the largest window every decoder must accept
_LIBZSTD_MAX_WINDOW = 1 << 31  # the largest window libzstd decodes on 64-bit hosts
# Output is grown in steps of at most this many bytes when the frame has no content size,
# so memory follows what decompression produces rather than what the tensor declares.
_GROWTH_STEP = 1 << 24
_BLOCK_RLE = 1
_BLOCK_RESERVED = 3


@dataclass(frozen=True, kw_only=True)
class FrameHeader:
    """The fields of a Zstandard frame header that decoding depends on."""

    content_size: int | None
    window_size: int
    dictionary_id: int
    has_checksum: bool
    size: int


def _invalid(reason: str) -> CodecDataInvalid:
    return CodecDataInvalid(f"zstd payload {reason}", field="payload")


def parse_frame_header(data: memoryview) -> FrameHeader:
    """Parse the header of the frame that `data` must start with (RFC 8878, 3.1.1.1).

    Raises CODEC_DATA_INVALID for anything but a Zstandard frame header: too short, wrong
    magic number, a skippable frame, or the reserved descriptor bit set.
    """
    if len(data) < 5:
        raise _invalid("is too short for a Zstandard frame header")
    magic = int.from_bytes(data[:4], "little")
    if magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
        raise _invalid("is a skippable frame, not a Zstandard data frame")
    if magic != _MAGIC:
        raise _invalid(f"does not start with the Zstandard magic number (got {magic:#010x})")
    descriptor = data[4]
    if descriptor & 0x08:
        raise _invalid("sets the reserved bit of the frame header descriptor")
    single_segment = bool(descriptor & 0x20)
    dictionary_id_size = (0, 1, 2, 4)[descriptor & 0x03]
    content_size_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    pos = 5
    window_size = 0
    if not single_segment:
        if len(data) < pos + 1:
            raise _invalid("ends inside the frame header")
        exponent, mantissa = data[pos] >> 3, data[pos] & 0x07
        base = 1 << (10 + exponent)
        window_size = base + (base >> 3) * mantissa
        pos += 1
    end = pos + dictionary_id_size + content_size_size
    if len(data) < end:
        raise _invalid("ends inside the frame header")
    dictionary_id = int.from_bytes(data[pos : pos + dictionary_id_size], "little")
    pos += dictionary_id_size
    declared = int.from_bytes(data[pos:end], "little")
    if content_size_size == 2:
        declared += 256  # the 2-byte field is offset (RFC 8878, 3.1.1.1.4)
    if single_segment:
        window_size = declared
    return FrameHeader(
        content_size=declared if content_size_size else None,
        window_size=window_size,
        dictionary_id=dictionary_id,
        has_checksum=bool(descriptor & 0x04),
        size=end,
    )


def frame_end(data: memoryview, header: FrameHeader) -> int:
    """The offset just past the frame, found by walking its block headers.

    Raises CODEC_DATA_INVALID for a reserved block type or a frame cut short. The cost is
    proportional to the number of blocks, hence to the payload's length.
    """
    pos = header.size
    size = len(data)
    while True:
        if pos + 3 > size:
            raise _invalid("ends inside a block header")
        block = int.from_bytes(data[pos : pos + 3], "little")
        block_type = (block >> 1) & 0x03
        if block_type == _BLOCK_RESERVED:
            raise _invalid("uses the reserved block type")
        pos += 3 + (1 if block_type == _BLOCK_RLE else block >> 3)
        if pos > size:
            raise _invalid("ends inside a block")
        if block & 0x01:
            break
    if header.has_checksum:
        pos += 4
        if pos > size:
            raise _invalid("ends inside the content checksum")
    return pos


@dataclass(frozen=True)
class ZstdCodec:
    """One Zstandard frame, for every dtype; `level` is the encoder's compression level."""

    id: str = "zstd"
    level: int = 3

    def applies_to(self, dtype: Dtype) -> bool:
        """Every dtype."""
        return True

    def encode(self, array: npt.NDArray[Any], **params: object) -> bytes:
        """One frame that records the content size and uses no dictionary."""
        reject_params(self.id, params)
        flat = canonical(array, Dtype.from_numpy(array.dtype))
        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return compressor.compress(flat.view(np.uint8).data)

    def decode(
        self, payload: Payload, dtype: Dtype, shape: tuple[int, ...], numel: int
    ) -> npt.NDArray[Any]:
        """Decompress with the spec's checks (PLN-COD-010), in the spec's order."""
        data = byte_view(payload)
        expected = numel * dtype.itemsize
        header = parse_frame_header(data)
        if header.content_size is not None and header.content_size != expected:
            raise TensorSizeMismatch(
                f"zstd frame declares {header.content_size} content bytes, {expected} expected",
                field="payload",
            )
        if header.dictionary_id:
            raise _invalid(f"names dictionary {header.dictionary_id}; none is allowed")
        if header.window_size > max(_MAX_SMALL_WINDOW, expected):
            raise _invalid(
                f"needs a {header.window_size}-byte window, over both 128 MiB and the "
                f"{expected}-byte content"
            )
        end = frame_end(data, header)
        if end != len(data):
            raise _invalid(f"has {len(data) - end} bytes after the end of the frame")
        try:
            if header.content_size:
                # The size is checked, so this allocates exactly the expected bytes, and
                # libzstd decodes the whole frame in one pass, needing no window buffer.
                content: bytes | bytearray = zstandard.ZstdDecompressor().decompress(data)
            else:
                content = _bounded_decompress(data, header.window_size, expected)
        except zstandard.ZstdError as exc:
            raise _invalid(f"does not decompress: {exc}") from None
        if len(content) != expected:
            held = f"more than {expected}" if len(content) > expected else str(len(content))
            raise TensorSizeMismatch(
                f"zstd frame holds {held} content bytes, {expected} expected", field="payload"
            )
        return shaped(np.frombuffer(content, dtype=dtype.numpy), shape)


def _bounded_decompress(data: memoryview, window_size: int, expected: int) -> bytearray:
    """Decompress one frame, stopping once it yields `expected + 1` bytes.

    Streaming needs a window buffer, which libzstd caps at 2 GiB.
    """
    if window_size > _LIBZSTD_MAX_WINDOW:
        raise _invalid(f"needs a {window_size}-byte window, beyond what libzstd decodes")
    decompressor = zstandard.ZstdDecompressor(max_window_size=max(_MAX_SMALL_WINDOW, window_size))
    out = bytearray()
    with decompressor.stream_reader(data, read_across_frames=False, closefd=False) as reader:
        step = min(expected + 1, 1 << 16)
        while len(out) <= expected:
            chunk = reader.read(min(step, expected + 1 - len(out)))
            if not chunk:
                break
            out += chunk
            step = min(step * 2, _GROWTH_STEP)
    return out


ZSTD = ZstdCodec()
