from __future__ import annotations

from pollen import wire
from pollen.blob import BlobRef, blob_ref
from reference_server.downloads import DownloadFrames

DATA = bytes(range(256)) * 4 + b"tail"  # 1028 bytes: the last chunk is short


def _frames(reads: list[BlobRef]) -> tuple[DownloadFrames, BlobRef]:
    ref = blob_ref(DATA)

    def read(blob: BlobRef) -> memoryview:
        reads.append(blob)
        return memoryview(DATA)

    return DownloadFrames(read), ref


def _decoded(messages: list[bytes]) -> list[tuple[int, bytes, int]]:
    chunks = [wire.download_chunk_from_bytes(m) for m in messages]
    return [(c.offset, bytes(c.data), c.total_size) for c in chunks]


def test_a_stream_from_a_chunk_boundary_is_the_shared_frames_and_framed_once() -> None:
    reads: list[BlobRef] = []
    frames, ref = _frames(reads)
    whole = list(frames.stream(ref, 256, 0))
    again = list(frames.stream(ref, 256, 512))
    assert _decoded(whole) == [(o, DATA[o : o + 256], len(DATA)) for o in range(0, 1028, 256)]
    assert again == whole[2:]
    assert all(a is b for a, b in zip(again, whole[2:], strict=True))
    assert reads == [ref]


def test_a_resume_inside_a_chunk_is_framed_from_that_offset() -> None:
    frames, ref = _frames([])
    assert _decoded(list(frames.stream(ref, 256, 700))) == [
        (700, DATA[700:956], 1028),
        (956, DATA[956:], 1028),
    ]


def test_at_the_end_one_empty_chunk_is_sent() -> None:
    frames, ref = _frames([])
    assert _decoded(list(frames.stream(ref, 256, len(DATA)))) == [(1028, b"", 1028)]


def test_retain_forgets_blobs_no_longer_served() -> None:
    reads: list[BlobRef] = []
    frames, ref = _frames(reads)
    list(frames.stream(ref, 256, 0))
    frames.retain({ref.sha256})
    list(frames.stream(ref, 256, 0))
    assert reads == [ref]
    frames.retain(set())
    list(frames.stream(ref, 256, 0))
    assert reads == [ref, ref]
