from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pollen.codecs.zstd import ZSTD, ZstdCodec, frame_end, parse_frame_header
from pollen.dtypes import Dtype
from pollen.errors import CodecDataInvalid, InvalidArgument, TensorSizeMismatch

MAGIC = bytes.fromhex("28b52ffd")
EIGHT = bytes.fromhex("0000803f000020c0")  # float32 [1.0, -2.5]


# --- hand-built frames (RFC 8878), so every defect is exactly the one intended -------------


def block(kind: str, data: bytes, *, last: bool = True, size: int | None = None) -> bytes:
    """A block: raw (data follows), rle (one byte repeated `size` times) or reserved."""
    block_type = {"raw": 0, "rle": 1, "reserved": 3}[kind]
    length = size if size is not None else len(data)
    return ((length << 3) | (block_type << 1) | int(last)).to_bytes(3, "little") + data


def frame(
    *blocks: bytes,
    content_size: int | None = None,
    single_segment: bool = False,
    window_exponent: int = 0,
    dictionary_id: int | None = None,
    checksum: bytes | None = None,
    descriptor_bits: int = 0,
) -> bytes:
    """Magic, frame header, blocks and optional checksum."""
    descriptor = descriptor_bits | (0x20 if single_segment else 0)
    header = b""
    if not single_segment:
        header += bytes([window_exponent << 3])
    if dictionary_id is not None:
        descriptor |= 1
        header += dictionary_id.to_bytes(1, "little")
    if content_size is not None:
        if single_segment and content_size < 256:
            header += content_size.to_bytes(1, "little")
        elif 256 <= content_size < 65536 + 256:
            descriptor |= 1 << 6
            header += (content_size - 256).to_bytes(2, "little")
        elif content_size < 2**32:
            descriptor |= 2 << 6
            header += content_size.to_bytes(4, "little")
        else:
            descriptor |= 3 << 6
            header += content_size.to_bytes(8, "little")
    if checksum is not None:
        descriptor |= 0x04
    return MAGIC + bytes([descriptor]) + header + b"".join(blocks) + (checksum or b"")


def decode(payload: bytes, dtype: Dtype = Dtype.FLOAT32, shape: tuple[int, ...] = (2,)) -> Any:
    return ZSTD.decode(payload, dtype, shape, int(np.prod(shape)))


def test_spec_example_frame_decodes() -> None:
    payload = bytes.fromhex("28b52ffd2008410000" + EIGHT.hex())
    assert decode(payload).tolist() == [1.0, -2.5]
    assert frame(block("raw", EIGHT), content_size=8, single_segment=True) == payload


@pytest.mark.parametrize(
    "payload",
    [
        frame(block("raw", EIGHT), content_size=8, single_segment=True),
        frame(block("raw", EIGHT), content_size=8),  # with a window descriptor
        frame(block("raw", EIGHT)),  # no content size
        frame(block("raw", EIGHT[:3], last=False), block("raw", EIGHT[3:])),
        frame(block("raw", b"", last=False), block("raw", EIGHT)),  # an empty block
        frame(block("raw", EIGHT), dictionary_id=0),  # a present but zero dictionary id
        frame(block("raw", EIGHT), content_size=8, window_exponent=17),  # 128 MiB window
        frame(block("raw", EIGHT), window_exponent=17),
        frame(block("raw", EIGHT), descriptor_bits=0x10),  # the unused bit is ignored
    ],
    ids=[
        "single-segment",
        "windowed",
        "no-content-size",
        "two-blocks",
        "empty-block",
        "dictionary-id-0",
        "window-128MiB",
        "window-128MiB-no-size",
        "unused-bit",
    ],
)
def test_valid_hand_built_frames(payload: bytes) -> None:
    assert decode(payload).tolist() == [1.0, -2.5]


def test_rle_and_compressed_blocks_decode() -> None:
    payload = frame(block("rle", b"\x07", size=5), content_size=5, single_segment=True)
    assert decode(payload, Dtype.UINT8, (5,)).tolist() == [7] * 5
    content = bytes(range(16)) * 64
    compressed = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(content)
    decoded = decode(compressed, Dtype.UINT8, (len(content),))
    assert decoded.tobytes() == content


def test_empty_tensor_needs_an_empty_frame() -> None:
    assert decode(ZSTD.encode(np.zeros(0, np.float32)), shape=(0,)).shape == (0,)
    with pytest.raises(CodecDataInvalid):
        decode(b"", shape=(0,))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "too short"),
        (MAGIC, "too short"),
        (bytes.fromhex("28b52ffe") + frame(block("raw", EIGHT))[4:], "magic"),
        (bytes.fromhex("502a4d18") + b"\x04\x00\x00\x00abcd", "skippable"),
        (bytes.fromhex("5f2a4d18") + b"\x00\x00\x00\x00" + frame(block("raw", EIGHT)), "skippable"),
        (frame(block("raw", EIGHT), descriptor_bits=0x08), "reserved bit"),
        (frame(block("reserved", b"")), "reserved block"),
        (MAGIC + b"\x20", "frame header"),  # a one-byte content size is announced
        (MAGIC + b"\x00", "frame header"),  # a window descriptor is announced
        (frame(block("raw", EIGHT))[:-4], "inside a block"),
        (frame(block("raw", EIGHT, last=False)), "block header"),
        (frame(block("raw", EIGHT), checksum=b"\x00\x00")[:-2] + b"\x00", "checksum"),
        (frame(block("raw", EIGHT)) + b"\x01\x02\x03", "after the end"),
        (frame(block("raw", EIGHT)) + frame(block("raw", b"")), "after the end"),
        (frame(block("raw", EIGHT), content_size=8, dictionary_id=0x2A), "dictionary"),
        (frame(block("raw", EIGHT), window_exponent=18), "window"),
        (frame(block("raw", EIGHT), window_exponent=31), "window"),
    ],
    ids=[
        "empty",
        "magic-only",
        "wrong-magic",
        "skippable",
        "skippable-then-frame",
        "reserved-descriptor-bit",
        "reserved-block-type",
        "truncated-content-size",
        "truncated-window",
        "truncated-block",
        "no-last-block",
        "truncated-checksum",
        "trailing-bytes",
        "second-frame",
        "dictionary",
        "window-256MiB",
        "window-2TiB",
    ],
)
def test_structural_defects_are_codec_data_invalid(payload: bytes, message: str) -> None:
    with pytest.raises(CodecDataInvalid, match=message) as info:
        decode(payload)
    assert info.value.field == "payload"


def test_a_large_window_is_fine_when_the_content_is_as_large() -> None:
    """The MAY-reject rule needs the window to exceed both 128 MiB and the content, so a
    256 MiB window passes for a 256 MiB tensor, and the short content is what fails."""
    payload = frame(block("raw", EIGHT), window_exponent=18)
    with pytest.raises(TensorSizeMismatch, match="holds 8 content bytes"):
        ZSTD.decode(payload, Dtype.UINT8, (2**28,), 2**28)


def test_checksum_mismatch_is_codec_data_invalid() -> None:
    good = zstandard.ZstdCompressor(write_checksum=True).compress(EIGHT)
    assert decode(good).tolist() == [1.0, -2.5]
    with pytest.raises(CodecDataInvalid, match="checksum"):
        decode(good[:-1] + bytes([good[-1] ^ 1]))


def test_corrupt_compressed_data_is_codec_data_invalid() -> None:
    content = bytes(range(32)) * 32
    good = zstandard.ZstdCompressor(level=3).compress(content)
    header = parse_frame_header(memoryview(good))
    corrupt = bytearray(good)
    corrupt[header.size + 3] ^= 0xC0  # a compressed block's first byte: reserved bits
    with pytest.raises(CodecDataInvalid):
        decode(bytes(corrupt), Dtype.UINT8, (len(content),))


def test_frames_that_contradict_their_own_content_size_are_corrupt() -> None:
    short = frame(block("raw", EIGHT[:4]), content_size=8, single_segment=True)
    long = frame(block("raw", EIGHT + EIGHT[:4]), content_size=8, single_segment=True)
    for payload in (short, long):
        with pytest.raises(CodecDataInvalid):
            decode(payload)


@pytest.mark.parametrize(
    "payload",
    [
        frame(block("raw", EIGHT + EIGHT[:4]), content_size=12, single_segment=True),
        frame(block("raw", EIGHT[:4]), content_size=4, single_segment=True),
        frame(block("raw", EIGHT[:4])),
        frame(block("raw", EIGHT + EIGHT[:4])),
        frame(block("raw", EIGHT), content_size=12, dictionary_id=0x2A),  # size first
        frame(block("raw", EIGHT), content_size=2**40),  # decided from the header
        frame(block("raw", EIGHT), content_size=12, window_exponent=31) + b"junk",
    ],
    ids=[
        "declares-and-holds-12",
        "declares-and-holds-4",
        "holds-4",
        "holds-12",
        "size-before-dictionary",
        "declares-2^40",
        "size-before-window-and-trailing",
    ],
)
def test_content_of_the_wrong_size_is_tensor_size_mismatch(payload: bytes) -> None:
    with pytest.raises(TensorSizeMismatch) as info:
        decode(payload)
    assert info.value.field == "payload"


def test_decompression_stops_one_byte_past_the_expected_size() -> None:
    # 64 RLE blocks of 128 KiB: 8 MiB of output from about 250 bytes, and no content size.
    blocks = [block("rle", b"\x01", size=128 * 1024, last=i == 63) for i in range(64)]
    bomb = frame(*blocks, window_exponent=7)
    with pytest.raises(TensorSizeMismatch, match="more than 8 content bytes"):
        decode(bomb)


def test_huge_declared_shapes_fail_without_allocating() -> None:
    """A 4 TiB tensor is refused from the header or from the little output there is."""
    numel = 2**40
    for payload in (
        frame(block("raw", EIGHT), content_size=8),
        frame(block("raw", EIGHT)),
    ):
        with pytest.raises(TensorSizeMismatch):
            ZSTD.decode(payload, Dtype.FLOAT32, (numel,), numel)


def test_parse_frame_header_reads_every_field() -> None:
    data = frame(block("raw", EIGHT), content_size=70000, window_exponent=3, dictionary_id=9)
    header = parse_frame_header(memoryview(data))
    assert (header.content_size, header.window_size, header.dictionary_id) == (70000, 8192, 9)
    assert not header.has_checksum
    assert header.size == 4 + 1 + 1 + 1 + 4
    assert frame_end(memoryview(data), header) == len(data)
    two_byte = parse_frame_header(memoryview(frame(block("raw", b""), content_size=300)))
    assert two_byte.content_size == 300
    mantissa = parse_frame_header(memoryview(MAGIC + b"\x00\x0b" + block("raw", b"")))
    assert mantissa.window_size == 2**11 + 3 * 2**8  # exponent 1, mantissa 3


def test_encode_writes_one_frame_with_its_content_size_and_no_dictionary() -> None:
    array = np.tile(np.arange(100, dtype=np.float64), 50)
    payload = ZSTD.encode(array)
    params = zstandard.get_frame_parameters(payload)
    assert params.content_size == array.nbytes
    assert params.dict_id == 0
    assert len(payload) < array.nbytes // 4, "repetitive data must actually compress"
    view = memoryview(payload)
    assert frame_end(view, parse_frame_header(view)) == len(payload)


def test_level_is_the_encoders_choice() -> None:
    array = np.tile(np.arange(1000, dtype=np.int32), 20)
    fast, strong = ZstdCodec(level=1).encode(array), ZstdCodec(level=19).encode(array)
    for payload in (fast, strong):
        assert decode(payload, Dtype.INT32, array.shape).tobytes() == array.tobytes()


def test_encode_takes_no_parameters() -> None:
    with pytest.raises(InvalidArgument):
        ZSTD.encode(np.zeros(2), k=1)


@given(dtype=st.sampled_from(list(Dtype)), data=st.data())
def test_round_trip_is_bit_exact(dtype: Dtype, data: st.DataObject) -> None:
    numel = data.draw(st.integers(min_value=0, max_value=64))
    if dtype is Dtype.BOOL:
        raw = bytes(data.draw(st.lists(st.sampled_from([0, 1]), min_size=numel, max_size=numel)))
    else:
        size = numel * dtype.itemsize
        raw = data.draw(st.binary(min_size=size, max_size=size))
    array = np.frombuffer(raw, dtype=dtype.numpy)
    decoded = decode(ZSTD.encode(array), dtype, (numel,))
    assert decoded.dtype == dtype.numpy
    assert decoded.tobytes() == raw
