import hashlib
import os

import numpy as np
import pytest

from pollen.blob import (
    BlobAssembler,
    BlobRef,
    ChunkOutcome,
    blob_digest,
    blob_ref,
    blob_refs,
    iter_chunks,
)
from pollen.errors import BlobDigestMismatch, BlobIncomplete, InvalidArgument, LimitExceeded

DATA = os.urandom(1000)


def _assembler(data: bytes = DATA) -> BlobAssembler:
    return BlobAssembler(sha256=blob_digest(data), total_size=len(data))


def test_digest_is_sha256() -> None:
    assert blob_digest(DATA) == hashlib.sha256(DATA).digest()
    assert blob_ref(DATA) == BlobRef(sha256=hashlib.sha256(DATA).digest(), size=1000)


def test_parallel_refs_keep_order_and_match_serial() -> None:
    blobs = [np.full(300_000, i, dtype=np.float32) for i in range(6)]
    views = [memoryview(b.data) for b in blobs]
    assert blob_refs(views) == [blob_ref(v) for v in views]
    assert blob_refs(views, max_workers=1) == blob_refs(views)


def test_blob_ref_checks_digest_length() -> None:
    with pytest.raises(InvalidArgument, match="32 bytes"):
        BlobRef(sha256=b"short", size=1).check()
    with pytest.raises(InvalidArgument, match=">= 0"):
        BlobRef(sha256=bytes(32), size=-1).check()
    ref = BlobRef(sha256=bytes(32), size=0)
    assert ref.check() is ref


def test_chunks_are_views_covering_the_blob() -> None:
    chunks = list(iter_chunks(DATA, 300))
    assert [offset for offset, _ in chunks] == [0, 300, 600, 900]
    assert b"".join(bytes(c) for _, c in chunks) == DATA
    array = np.arange(10, dtype=np.uint8)
    _, first = next(iter_chunks(memoryview(array.data), 4))
    array[0] = 99
    assert first[0] == 99, "chunks must share memory with the blob"


def test_chunks_resume_from_an_offset() -> None:
    assert [o for o, _ in iter_chunks(DATA, 300, offset=450)] == [450, 750]
    assert list(iter_chunks(b"", 10)) == [(0, memoryview(b""))]
    with pytest.raises(InvalidArgument):
        list(iter_chunks(DATA, 0))
    with pytest.raises(InvalidArgument):
        list(iter_chunks(DATA, 10, offset=1001))


def test_in_order_chunks_assemble() -> None:
    asm = _assembler()
    for offset, chunk in iter_chunks(DATA, 128):
        assert asm.feed(offset, chunk) is ChunkOutcome.APPENDED
    assert asm.complete
    assert bytes(asm.finish()) == DATA


def test_resends_are_harmless_and_gaps_are_not_written() -> None:
    asm = _assembler()
    assert asm.feed(0, DATA[:100]) is ChunkOutcome.APPENDED
    assert asm.feed(200, DATA[200:300]) is ChunkOutcome.REJECTED
    assert asm.committed_size == 100
    assert asm.feed(0, DATA[:100]) is ChunkOutcome.DUPLICATE
    assert asm.feed(50, DATA[50:150]) is ChunkOutcome.REJECTED, "straddling chunks are refused"
    assert asm.feed(100, DATA[100:200]) is ChunkOutcome.APPENDED
    assert asm.feed(200, DATA[200:]) is ChunkOutcome.APPENDED
    assert bytes(asm.finish()) == DATA


def test_missing_bytes_and_corruption_are_detected() -> None:
    asm = _assembler()
    asm.feed(0, DATA[:999])
    with pytest.raises(BlobIncomplete, match="999 of 1000"):
        asm.finish()
    corrupt = bytearray(DATA)
    corrupt[500] ^= 1
    bad = _assembler()
    bad.feed(0, bytes(corrupt))
    with pytest.raises(BlobDigestMismatch):
        bad.finish()


def test_chunks_past_the_end_are_invalid() -> None:
    asm = _assembler()
    with pytest.raises(InvalidArgument, match="outside"):
        asm.feed(990, DATA[:20])
    assert asm.committed_size == 0


def test_size_limit_is_checked_before_allocating() -> None:
    with pytest.raises(LimitExceeded):
        BlobAssembler(sha256=bytes(32), total_size=1 << 60, max_blob_bytes=1 << 30)


def test_empty_blob() -> None:
    asm = _assembler(b"")
    assert asm.complete
    assert asm.feed(0, b"") is ChunkOutcome.DUPLICATE
    assert bytes(asm.finish()) == b""


def test_finished_blob_is_read_only() -> None:
    asm = _assembler()
    asm.feed(0, DATA)
    view = asm.finish()
    assert view.readonly


def test_a_blob_in_one_chunk_is_kept_without_a_copy() -> None:
    asm = _assembler()
    assert asm.feed(0, DATA) is ChunkOutcome.APPENDED
    assert asm.finish().obj is DATA


def test_a_blob_of_several_chunks_can_be_taken_over_writable() -> None:
    asm = _assembler()
    asm.feed(0, DATA[:7])
    asm.feed(7, DATA[7:])
    assert asm.finish().readonly
    taken = asm.finish(writable=True)
    assert not taken.readonly
    assert bytes(taken) == DATA
    whole = _assembler()
    whole.feed(0, DATA)
    assert whole.finish(writable=True).readonly, "a received chunk is never handed out writable"
