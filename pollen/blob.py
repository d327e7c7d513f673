"""Content-addressed blobs: digests, chunking and sans-IO reassembly.

A blob is an immutable byte string named by its SHA-256. Large tensor payloads travel as
blobs, downloaded as a stream of chunks from an offset and uploaded as append-only chunks,
so a transfer can resume where it broke off and a resent chunk is harmless.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pollen.errors import (
    BlobDigestMismatch,
    BlobIncomplete,
    InvalidArgument,
    LimitExceeded,
)

SHA256_SIZE = 32

#: Anything exposing a contiguous byte buffer (Python 3.11 has no collections.abc.BytesLike).
BytesLike = bytes | bytearray | memoryview

# Below this size a thread hop costs more than hashing on the caller's thread.
_PARALLEL_MIN_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class BlobRef:
    """A reference to a blob: its SHA-256 digest and its size in bytes."""

    sha256: bytes
    size: int

    def check(self) -> BlobRef:
        """Return self if the reference is well formed, else raise InvalidArgument.

        Not done at construction: a received tensor keeps its reference as it came, so that
        decoding reports its problems in the spec's check order (PLN-TEN-008, step 7).
        """
        if len(self.sha256) != SHA256_SIZE:
            raise InvalidArgument(
                f"a blob digest is {SHA256_SIZE} bytes, got {len(self.sha256)}", field="sha256"
            )
        if self.size < 0:
            raise InvalidArgument(f"blob size must be >= 0, got {self.size}", field="size")
        return self

    @property
    def hex(self) -> str:
        return self.sha256.hex()


def blob_digest(data: BytesLike) -> bytes:
    """SHA-256 of a blob's bytes."""
    return hashlib.sha256(data).digest()


def blob_ref(data: BytesLike) -> BlobRef:
    """The reference naming `data`."""
    view = memoryview(data)
    return BlobRef(sha256=blob_digest(view), size=view.nbytes).check()


def blob_refs(blobs: Sequence[BytesLike], *, max_workers: int = 2) -> list[BlobRef]:
    """References for many blobs, hashed in parallel.

    hashlib releases the GIL while hashing large buffers, so a small thread pool hashes a
    model's tensors on several cores at once; order is preserved.
    """
    views = [memoryview(b) for b in blobs]
    if max_workers <= 1 or sum(v.nbytes for v in views) < _PARALLEL_MIN_BYTES:
        return [blob_ref(v) for v in views]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(blob_ref, views))


def iter_chunks(
    data: BytesLike, chunk_size: int, *, offset: int = 0
) -> Iterator[tuple[int, memoryview]]:
    """Yield (offset, chunk) views of `data` from `offset` on, each at most chunk_size bytes.

    Views share memory with `data`: nothing is copied. An empty blob yields one empty chunk
    so that a receiver still learns its size.
    """
    if chunk_size <= 0:
        raise InvalidArgument(f"chunk size must be > 0, got {chunk_size}", field="chunk_size")
    view = memoryview(data).cast("B")
    if not 0 <= offset <= view.nbytes:
        raise InvalidArgument(
            f"offset {offset} is outside the blob of {view.nbytes} bytes", field="offset"
        )
    if view.nbytes == 0:
        yield 0, view
        return
    for start in range(offset, view.nbytes, chunk_size):
        yield start, view[start : start + chunk_size]


class ChunkOutcome(enum.Enum):
    """What the assembler did with one chunk."""

    #: The chunk started at the committed size and was appended.
    APPENDED = "appended"
    #: The chunk lies entirely within bytes already held; nothing changed (a resend).
    DUPLICATE = "duplicate"
    #: The chunk starts past the committed size or straddles it; nothing was written.
    REJECTED = "rejected"


class BlobAssembler:
    """Reassembles a blob from chunks, append-only, and checks it against its digest.

    This is the receiving half of both transfer directions: a client downloading a blob and
    a server accepting an upload. Chunks are written only at the committed size, so a chunk
    that arrives early or twice changes nothing and the sender resumes from
    `committed_size`. The digest is computed incrementally as chunks are appended, so
    `finish` costs no second pass over the data.
    """

    def __init__(
        self, *, sha256: bytes, total_size: int, max_blob_bytes: int | None = None
    ) -> None:
        self.ref = BlobRef(sha256=bytes(sha256), size=total_size).check()
        if max_blob_bytes is not None and total_size > max_blob_bytes:
            # Checked before allocating: a peer cannot make us reserve memory it may never send.
            raise LimitExceeded(
                f"blob of {total_size} bytes exceeds the limit of {max_blob_bytes}",
                field="total_size",
            )
        # Allocated on the first partial chunk: a blob that arrives in one chunk is kept as
        # that chunk, without a copy.
        self._buffer: np.ndarray | None = None
        self._whole: memoryview | None = None
        self._hash = hashlib.sha256()
        self._committed = 0

    @property
    def committed_size(self) -> int:
        """Number of leading bytes of the blob held so far."""
        return self._committed

    @property
    def complete(self) -> bool:
        return self._committed == self.ref.size

    def feed(self, offset: int, data: BytesLike) -> ChunkOutcome:
        """Offer one chunk that starts at `offset`."""
        chunk = memoryview(data).cast("B")
        end = offset + chunk.nbytes
        if offset < 0 or end > self.ref.size:
            raise InvalidArgument(
                f"chunk [{offset}, {end}) lies outside the blob of {self.ref.size} bytes",
                field="offset",
            )
        if end <= self._committed:
            return ChunkOutcome.DUPLICATE
        if offset != self._committed:
            return ChunkOutcome.REJECTED
        if offset == 0 and end == self.ref.size:
            self._whole = chunk
        else:
            if self._buffer is None:
                # np.empty skips zero-filling, and numpy asks the kernel for huge pages on
                # large buffers, which makes copying chunks in several times faster.
                self._buffer = np.empty(self.ref.size, dtype=np.uint8)
            self._buffer[offset:end] = np.frombuffer(chunk, dtype=np.uint8)
        self._hash.update(chunk)
        self._committed = end
        return ChunkOutcome.APPENDED

    def finish(self, *, writable: bool = False) -> memoryview:
        """The whole blob, once every byte is held and the digest matches.

        With `writable`, a blob assembled from several chunks comes back writable: the
        caller takes over the assembler's buffer (an application can then own arrays
        decoded from it without a copy). A blob that arrived whole is a view of that
        chunk and stays read-only.
        """
        if not self.complete:
            raise BlobIncomplete(
                f"blob {self.ref.hex} holds {self._committed} of {self.ref.size} bytes"
            )
        if self._hash.digest() != self.ref.sha256:
            raise BlobDigestMismatch(
                f"blob bytes hash to {self._hash.hexdigest()}, expected {self.ref.hex}"
            )
        if self._whole is not None:
            return self._whole.toreadonly()
        if self._buffer is None:  # the empty blob
            return memoryview(b"")
        whole = memoryview(self._buffer.data)
        return whole if writable else whole.toreadonly()
