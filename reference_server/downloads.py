"""Blob downloads as serialized DownloadBlobResponse messages.

Every sampled client downloads the same global model, so its blobs are framed into
messages once per round and chunk size and the same bytes objects are handed to every
stream: gRPC still copies each message into its buffers, but nothing else does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pollen import wire
from pollen.blob import BlobRef, iter_chunks


class DownloadFrames:
    """Framed chunks of the blobs currently served, built on first request."""

    def __init__(self, read: Callable[[BlobRef], memoryview]) -> None:
        self._read = read
        self._frames: dict[tuple[bytes, int], list[bytes]] = {}

    def retain(self, blobs: set[bytes]) -> None:
        """Forget the frames of every blob whose digest is not in `blobs`."""
        for key in [key for key in self._frames if key[0] not in blobs]:
            del self._frames[key]

    def stream(self, blob: BlobRef, chunk: int, offset: int) -> Iterator[bytes]:
        """The blob from `offset` (0 <= offset <= size) in messages of `chunk` bytes."""
        if offset == blob.size:
            # Nothing left: one empty chunk says so (PLN-BLB-008).
            return iter([_frame(blob, offset, b"")])
        if offset % chunk == 0:
            return iter(self._framed(blob, chunk)[offset // chunk :])
        # A resume from inside a chunk: frame this stream's own chunks as they go.
        pieces = iter_chunks(self._read(blob), chunk, offset=offset)
        return (_frame(blob, start, data) for start, data in pieces)

    def _framed(self, blob: BlobRef, chunk: int) -> list[bytes]:
        frames = self._frames.get((blob.sha256, chunk))
        if frames is None:
            pieces = iter_chunks(self._read(blob), chunk)
            frames = [_frame(blob, start, data) for start, data in pieces]
            self._frames[(blob.sha256, chunk)] = frames
        return frames


def _frame(blob: BlobRef, offset: int, data: memoryview | bytes) -> bytes:
    return wire.download_chunk_to_bytes(offset=offset, data=data, total_size=blob.size)
