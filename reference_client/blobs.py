"""Blob transfers through BlobService: resumable downloads and uploads.

A download asks for the bytes from the number it holds, so a broken stream resumes where
it stopped (PLN-BLB-013); the bytes are verified against the digest before any is decoded
(PLN-BLB-014), and a mismatch or a stream that breaks PLN-BLB-007 discards them and starts
again from 0 (PLN-BLB-012, PLN-BLB-015). An upload sends chunks in order, each from the
server's committed size; a resumed one asks for that size first (PLN-BLB-021 to 023), and
one refused as BLOB_DIGEST_MISMATCH starts again from 0 (PLN-BLB-024).

Retrying is the caller's business: a `RetryHook` receives each failed call and either
returns (after its backoff) to have it tried again or raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pollen.blob import BlobAssembler, BlobRef, BytesLike, blob_digest
from pollen.errors import BlobDigestMismatch, ErrorCode, InternalError, InvalidArgument
from pollen.wire import DownloadChunk, UploadChunk
from reference_client.errors import CallError
from reference_client.transport import Transport

log = logging.getLogger(__name__)

#: Called with a failed call: returns to retry it, raises to give up.
RetryHook = Callable[[CallError], None]
#: Called whenever a transfer makes progress (which restarts the call's retry budget).
ProgressHook = Callable[[], None]

# Replies to upload chunks that do not move the committed size forward before giving up.
_MAX_STALLS = 5


class _Broken(Exception):
    """A download stream that breaks PLN-BLB-007 (a gap, an overlap, a wrong size)."""


class BlobFetcher:
    """Downloads blobs, keeping partial ones so that a new attempt resumes them."""

    def __init__(
        self, transport: Transport, *, max_blob_bytes: int, timeout_s: float, attempts: int
    ) -> None:
        self._transport = transport
        self._max_blob_bytes = max_blob_bytes
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._partial: dict[bytes, BlobAssembler] = {}

    def held(self, ref: BlobRef) -> int:
        """Bytes of `ref` held from an earlier, unfinished download."""
        partial = self._partial.get(ref.sha256)
        return 0 if partial is None else partial.committed_size

    def forget(self) -> None:
        """Drop every partial download (their task is gone)."""
        self._partial.clear()

    def fetch(
        self,
        session_id: str,
        ref: BlobRef,
        *,
        retry: RetryHook,
        progress: ProgressHook,
        chunk_size: int = 0,
    ) -> memoryview:
        """The verified bytes of the blob `ref`.

        Raises what `retry` raises, or BlobDigestMismatch after `attempts` downloads whose
        bytes did not match the reference. A chunk larger than the session's `chunk_size`
        (0: not checked) counts as a mismatch (PLN-BLB-030).
        """
        mismatches = 0
        while True:
            assembler = self._partial.get(ref.sha256)
            if assembler is None:
                assembler = BlobAssembler(
                    sha256=ref.sha256, total_size=ref.size, max_blob_bytes=self._max_blob_bytes
                )
                self._partial[ref.sha256] = assembler
            try:
                if not assembler.complete:
                    self._stream(session_id, ref, assembler, progress, chunk_size)
                # Nothing else holds the buffer once the assembler is dropped below.
                data = assembler.finish(writable=True)
            except CallError as err:
                retry(err)
                continue
            except (_Broken, BlobDigestMismatch) as exc:
                del self._partial[ref.sha256]
                mismatches += 1
                log.warning("blob %s: %s (attempt %d)", ref.hex[:12], exc, mismatches)
                if mismatches >= self._attempts:
                    raise BlobDigestMismatch(
                        f"blob {ref.hex} failed verification {mismatches} times"
                    ) from None
                continue
            del self._partial[ref.sha256]
            return data

    def _stream(
        self,
        session_id: str,
        ref: BlobRef,
        assembler: BlobAssembler,
        progress: ProgressHook,
        chunk_size: int,
    ) -> None:
        offset = assembler.committed_size
        if offset:
            log.info("blob %s: resuming download at byte %d of %d", ref.hex[:12], offset, ref.size)
        chunks = self._transport.download(session_id, ref.sha256, offset, timeout=self._timeout_s)
        for chunk in chunks:
            if chunk_size and len(chunk.data) > chunk_size:
                raise _Broken(f"a chunk of {len(chunk.data)} bytes, above {chunk_size}")
            _take(assembler, chunk, ref)
            progress()
        if not assembler.complete:
            raise _Broken(f"the stream ended at byte {assembler.committed_size} of {ref.size}")


def _take(assembler: BlobAssembler, chunk: DownloadChunk, ref: BlobRef) -> None:
    if chunk.total_size != ref.size:
        raise _Broken(f"total_size {chunk.total_size} differs from the reference's {ref.size}")
    if chunk.offset != assembler.committed_size:
        raise _Broken(f"a chunk at {chunk.offset} where {assembler.committed_size} was due")
    if not chunk.data:
        raise _Broken(f"an empty chunk at {chunk.offset}")
    try:
        assembler.feed(chunk.offset, chunk.data)
    except InvalidArgument as exc:
        raise _Broken(str(exc)) from None


class BlobSender:
    """Uploads blobs, remembering which ones began (to resume) or completed."""

    def __init__(self, transport: Transport, *, timeout_s: float, attempts: int) -> None:
        self._transport = transport
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._started: set[bytes] = set()
        self._complete: set[bytes] = set()

    def is_complete(self, ref: BlobRef) -> bool:
        return ref.sha256 in self._complete

    def forget(self, refs: list[BlobRef]) -> None:
        """Count these blobs as not complete (the server said it does not hold them)."""
        for ref in refs:
            self._complete.discard(ref.sha256)

    def send(
        self,
        session_id: str,
        data: BytesLike,
        ref: BlobRef,
        *,
        chunk_size: int,
        retry: RetryHook,
        progress: ProgressHook,
    ) -> None:
        """Upload `data` (whose reference is `ref`) until the server holds all of it."""
        if ref.sha256 in self._complete:
            return
        view = memoryview(data).cast("B")
        # A blob whose upload began earlier (another session, a failed call) is resumed from
        # the size the server reports (PLN-BLB-023); a new one starts with its first chunk.
        query = ref.sha256 in self._started
        self._started.add(ref.sha256)
        offset = 0
        mismatches = stalls = 0
        while True:
            chunk = view[0:0] if query else view[offset : offset + chunk_size]
            sent_at = 0 if query else offset
            try:
                reply = self._transport.upload(
                    UploadChunk(session_id=session_id, blob=ref, offset=sent_at, data=chunk),
                    timeout=self._timeout_s,
                )
            except CallError as err:
                if err.code is ErrorCode.BLOB_DIGEST_MISMATCH:
                    if blob_digest(view) != ref.sha256:
                        raise InternalError("the bytes of a blob changed while uploading") from None
                    mismatches += 1
                    if mismatches >= self._attempts:
                        raise err.error or BlobDigestMismatch() from None
                    retry(err)
                    # The server reset the blob to 0 bytes: start again (PLN-BLB-024).
                    offset, query = 0, False
                    continue
                retry(err)
                query = True
                continue
            progress()
            if reply.complete:
                self._complete.add(ref.sha256)
                return
            committed = reply.committed_size
            if committed > ref.size:
                raise InternalError(
                    f"the server reports {committed} bytes of a {ref.size}-byte blob"
                )
            stalls = stalls + 1 if not query and committed <= offset else 0
            if stalls >= _MAX_STALLS:
                raise InternalError(f"the server does not take chunks at byte {offset}")
            if query and committed:
                log.info(
                    "blob %s: resuming upload at byte %d of %d", ref.hex[:12], committed, ref.size
                )
            offset, query = committed, False
