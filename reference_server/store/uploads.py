"""One node's partial upload of one blob, kept in a file so that it survives a restart.

The part file is the whole state: its size is the committed size. Nothing about an upload
lives only in memory, so an `Upload` is cheap to make per request, two `Upload` objects for
the same part agree, and a server restarted after kill -9 resumes every upload where its
file ends. Appends follow pollen.blob.BlobAssembler exactly (PLN-BLB-018); the digest is
checked at `finish` by streaming the file (PLN-BLB-019), so memory does not grow with the
blob size.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pollen.blob import BlobRef, BytesLike, ChunkOutcome
from pollen.errors import BlobDigestMismatch, BlobIncomplete, InvalidArgument
from reference_server.store._files import (
    ensure_dir,
    fsync_dir,
    fsync_file,
    hash_file,
    pwrite_all,
    size_or_none,
)


class Upload:
    """A partial upload by `owner` of the blob `ref`; made by BlobStore.upload."""

    def __init__(
        self, *, owner: str, ref: BlobRef, part: Path, final: Path, lock: threading.Lock
    ) -> None:
        self.owner = owner
        self.ref = ref
        self._part = part
        self._final = final
        # Shared by every Upload of the same part in this process: a resend racing the
        # original must see the size the other left, not the one before it.
        self._lock = lock

    @property
    def complete(self) -> bool:
        """Whether the verified blob is in the store (never true before its digest matched)."""
        return size_or_none(self._final) == self.ref.size

    @property
    def committed_size(self) -> int:
        """Leading bytes of the blob held: the whole blob once complete, else the part's size."""
        if self.complete:
            return self.ref.size
        return size_or_none(self._part) or 0

    def append(self, offset: int, data: BytesLike) -> ChunkOutcome:
        """Offer one chunk that starts at `offset` (the BlobAssembler.feed rules).

        Written through to the part file but not fsynced: the committed size is the file's
        size, so it can never exceed what the file holds, and bytes a power loss garbles are
        caught by the digest check at `finish`, which sends the client back to 0.
        """
        chunk = memoryview(data).cast("B")
        end = offset + chunk.nbytes
        if offset < 0 or end > self.ref.size:
            raise InvalidArgument(
                f"chunk [{offset}, {end}) lies outside the blob of {self.ref.size} bytes",
                field="offset",
            )
        with self._lock:
            committed = self.committed_size
            if end <= committed:
                return ChunkOutcome.DUPLICATE
            if offset != committed:
                return ChunkOutcome.REJECTED
            ensure_dir(self._part.parent)
            fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    pwrite_all(fd, chunk, offset)
                except OSError:
                    # A partly written chunk (disk full) must not count as committed.
                    os.ftruncate(fd, committed)
                    raise
            finally:
                os.close(fd)
            return ChunkOutcome.APPENDED

    def finish(self, *, durable: bool = True) -> BlobRef:
        """Verify the whole upload and move it into the store; the ref of the stored blob.

        With `durable=False` the blob is not fsynced: a server stores client updates that
        way, because an uncommitted round is redone after a crash and a commit makes the
        blobs it names durable (`StateStore.commit_round`).

        On a digest mismatch the part is deleted, so the committed size is back to 0, and
        BlobDigestMismatch is raised (PLN-BLB-019).
        """
        with self._lock:
            if self.complete:
                # Already stored (by this owner earlier, or anyone: dedup); a part left by
                # a crash between the rename and here is garbage.
                self._part.unlink(missing_ok=True)
                return self.ref
            committed = size_or_none(self._part) or 0
            if committed != self.ref.size:
                raise BlobIncomplete(
                    f"blob {self.ref.hex} holds {committed} of {self.ref.size} bytes",
                    field="offset",
                )
            if self.ref.size == 0:
                # The empty blob has no chunk to create its part file.
                ensure_dir(self._part.parent)
                self._part.touch()
            digest, _ = hash_file(self._part)
            if digest != self.ref.sha256:
                self._part.unlink(missing_ok=True)
                raise BlobDigestMismatch(
                    f"uploaded bytes hash to {digest.hex()}, expected {self.ref.hex}; "
                    "the upload starts again from offset 0",
                    field="sha256",
                )
            if durable:
                # The bytes must be on disk before the rename makes them a complete blob.
                fsync_file(self._part)
            ensure_dir(self._final.parent)
            os.replace(self._part, self._final)
            if durable:
                fsync_dir(self._final.parent)
            return self.ref
