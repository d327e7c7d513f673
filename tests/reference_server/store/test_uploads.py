"""Resumable uploads: BlobAssembler's append rules, written through to files that outlive
the server process, verified by streaming at the end."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from pollen.blob import BlobAssembler, BlobRef, ChunkOutcome, blob_ref
from pollen.dtypes import Dtype
from pollen.errors import (
    BlobDigestMismatch,
    BlobIncomplete,
    InvalidArgument,
    LimitExceeded,
    PollenError,
)
from reference_server.store import BlobStore

DATA = random.Random(7).randbytes(1000)
LIMIT = 1 << 30

# (offset, start, end): offer DATA[start:end] at offset. The sequences of test_blob.py and
# the edge cases around them.
SEQUENCES: dict[str, list[tuple[int, int, int]]] = {
    "in order": [(i, i, i + 100) for i in range(0, 1000, 100)],
    "resends and gaps": [
        (0, 0, 100),
        (200, 200, 300),  # early: rejected
        (0, 0, 100),  # resend: duplicate
        (50, 50, 150),  # straddles the committed size: rejected
        (100, 100, 200),
        (200, 200, 300),  # the early chunk, resent at the right time
        (150, 150, 200),  # inside what is held: duplicate
        (300, 300, 1000),
    ],
    "past the end": [(0, 0, 500), (990, 0, 20), (1000, 0, 1), (-1, 0, 1), (500, 500, 1000)],
    "empty chunks": [(0, 0, 0), (5, 0, 0), (0, 0, 10), (10, 0, 0), (11, 0, 0), (10, 10, 1000)],
    "one chunk": [(0, 0, 1000), (0, 0, 1000)],
    "after the end": [(0, 0, 1000), (1000, 0, 0), (999, 999, 1000)],
}


def _outcome(step: object) -> object:
    try:
        return step()  # type: ignore[operator]
    except PollenError as exc:
        return type(exc)


def _replay(blobs: BlobStore, steps: Sequence[tuple[int, int, int]], data: bytes) -> None:
    """Offer the same chunks to a BlobAssembler and an Upload; they must agree at each step."""
    ref = blob_ref(data)
    assembler = BlobAssembler(sha256=ref.sha256, total_size=ref.size)
    upload = blobs.upload("node", ref, max_blob_bytes=LIMIT)
    for offset, start, end in steps:
        chunk = data[start:end]
        expected = _outcome(lambda: assembler.feed(offset, chunk))  # noqa: B023
        got = _outcome(lambda: upload.append(offset, chunk))  # noqa: B023
        assert got == expected, (offset, start, end)
        assert upload.committed_size == assembler.committed_size
    if assembler.complete:
        assert upload.finish() == ref
        assert bytes(blobs.read(ref)) == bytes(assembler.finish())


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_appends_follow_the_blob_assembler(tmp_path: Path, name: str) -> None:
    _replay(BlobStore(tmp_path), SEQUENCES[name], DATA)


def test_the_outcomes_are_the_expected_ones(tmp_path: Path) -> None:
    # The parity test above would pass if both were wrong in the same way.
    upload = BlobStore(tmp_path).upload("node", blob_ref(DATA), max_blob_bytes=LIMIT)
    outcomes = [upload.append(o, DATA[s:e]) for o, s, e in SEQUENCES["resends and gaps"]]
    a, d, r = ChunkOutcome.APPENDED, ChunkOutcome.DUPLICATE, ChunkOutcome.REJECTED
    assert outcomes == [a, r, d, r, a, a, d, a]
    with pytest.raises(InvalidArgument, match="outside the blob"):
        upload.append(990, DATA[:20])


def test_the_empty_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    _replay(blobs, [(0, 0, 0)], b"")
    assert blobs.has(blob_ref(b""))
    wrong = BlobRef(sha256=hashlib.sha256(b"x").digest(), size=0)
    upload = blobs.upload("node", wrong, max_blob_bytes=LIMIT)
    with pytest.raises(BlobDigestMismatch):
        upload.finish()


def test_a_digest_mismatch_resets_the_upload_to_zero(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blob_ref(DATA)
    upload = blobs.upload("node", ref, max_blob_bytes=LIMIT)
    corrupt = bytearray(DATA)
    corrupt[500] ^= 1
    assert upload.append(0, corrupt[:600]) is ChunkOutcome.APPENDED
    assert upload.append(600, corrupt[600:]) is ChunkOutcome.APPENDED
    assert upload.committed_size == 1000
    assert not upload.complete, "never complete before the digest matched"
    with pytest.raises(BlobDigestMismatch, match="starts again from offset 0"):
        upload.finish()
    assert upload.committed_size == 0
    assert not blobs.has(ref)
    assert not list((tmp_path / "uploads").rglob("*.part")), "the bad bytes are gone"
    assert upload.append(0, DATA) is ChunkOutcome.APPENDED
    assert upload.finish() == ref
    assert blobs.upload("node", ref, max_blob_bytes=LIMIT).complete
    assert blobs.read(ref) == DATA


def test_finish_needs_every_byte(tmp_path: Path) -> None:
    upload = BlobStore(tmp_path).upload("node", blob_ref(DATA), max_blob_bytes=LIMIT)
    upload.append(0, DATA[:999])
    with pytest.raises(BlobIncomplete, match="999 of 1000"):
        upload.finish()
    assert upload.committed_size == 999


def test_a_stored_blob_is_complete_at_once(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blobs.put(DATA)
    upload = blobs.upload("node", ref, max_blob_bytes=LIMIT)
    assert upload.complete
    assert upload.committed_size == 1000
    assert upload.append(0, DATA[:100]) is ChunkOutcome.DUPLICATE
    assert upload.finish() == ref
    assert not list((tmp_path / "uploads").rglob("*")), "nothing was written"


def test_an_upload_resumes_in_a_new_process(tmp_path: Path) -> None:
    ref = blob_ref(DATA)
    first = BlobStore(tmp_path).upload("node", ref, max_blob_bytes=LIMIT)
    first.append(0, DATA[:400])
    # A restarted server: a new BlobStore on the same directory, nothing kept in memory.
    resumed = BlobStore(tmp_path).upload("node", ref, max_blob_bytes=LIMIT)
    assert resumed.committed_size == 400
    assert resumed.append(0, DATA[:400]) is ChunkOutcome.DUPLICATE
    assert resumed.append(500, DATA[500:]) is ChunkOutcome.REJECTED
    assert resumed.append(400, DATA[400:]) is ChunkOutcome.APPENDED
    assert resumed.finish() == ref
    assert BlobStore(tmp_path).read(ref) == DATA


def test_nodes_upload_apart(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blob_ref(DATA)
    alice = blobs.upload("alice", ref, max_blob_bytes=LIMIT)
    bob = blobs.upload("bob/../..", ref, max_blob_bytes=LIMIT)  # any id is a safe key
    alice.append(0, DATA[:300])
    assert bob.committed_size == 0
    assert bob.append(300, DATA[300:400]) is ChunkOutcome.REJECTED
    bob.append(0, DATA[:100])
    assert blobs.discard_uploads("alice") == 1
    assert alice.committed_size == 0
    assert bob.committed_size == 100
    assert blobs.discard_uploads("nobody") == 0
    assert all(p.is_relative_to(tmp_path / "uploads") for p in tmp_path.rglob("*.part"))


def test_another_total_size_for_an_upload_in_progress_is_refused(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blob_ref(DATA)
    blobs.upload("node", ref, max_blob_bytes=LIMIT).append(0, DATA[:10])
    other = BlobRef(sha256=ref.sha256, size=2000)
    with pytest.raises(InvalidArgument, match="total_size 1000 is in progress") as caught:
        blobs.upload("node", other, max_blob_bytes=LIMIT)
    assert caught.value.field == "total_size"
    blobs.upload("another node", other, max_blob_bytes=LIMIT)  # its own uploads only


def test_limits_and_malformed_refs(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(LimitExceeded, match="exceeds max_blob_bytes 999"):
        blobs.upload("node", blob_ref(DATA), max_blob_bytes=999)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        blobs.upload("node", BlobRef(sha256=b"x", size=1), max_blob_bytes=LIMIT)


def test_racing_resends_of_one_chunk_append_it_once(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blob_ref(DATA)
    outcomes: list[ChunkOutcome] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        upload = blobs.upload("node", ref, max_blob_bytes=LIMIT)
        barrier.wait(timeout=10)
        outcomes.append(upload.append(0, DATA[:500]))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(o.value for o in outcomes) == ["appended"] + ["duplicate"] * 7
    assert blobs.upload("node", ref, max_blob_bytes=LIMIT).committed_size == 500


def test_finishing_a_large_upload_streams_it(tmp_path: Path) -> None:
    size = 64 << 20
    piece = 1 << 20
    digest = hashlib.sha256()
    rng = np.random.default_rng(0)
    pieces = [rng.bytes(piece) for _ in range(4)]  # 4 distinct MiB, repeated
    for i in range(size // piece):
        digest.update(pieces[i % 4])
    ref = BlobRef(sha256=digest.digest(), size=size)
    blobs = BlobStore(tmp_path)
    upload = blobs.upload("node", ref, max_blob_bytes=LIMIT)
    for i in range(size // piece):
        assert upload.append(i * piece, pieces[i % 4]) is ChunkOutcome.APPENDED
    tracemalloc.start()
    try:
        assert upload.finish() == ref
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size // 16, f"finish allocated {peak} bytes for a {size}-byte blob"
    assert blobs.has(ref)
    assert blobs.verify(ref)


def test_a_chunk_that_fails_midway_is_not_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reference_server.store import uploads

    upload = BlobStore(tmp_path).upload("node", blob_ref(DATA), max_blob_bytes=LIMIT)
    upload.append(0, DATA[:100])

    def disk_full(fd: int, data: memoryview, offset: int) -> None:
        os.pwrite(fd, data[: data.nbytes // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads, "pwrite_all", disk_full)
    with pytest.raises(OSError, match="No space"):
        upload.append(100, DATA[100:300])
    assert upload.committed_size == 100, "half a chunk is not a committed chunk"
    monkeypatch.undo()
    assert upload.append(100, DATA[100:]) is ChunkOutcome.APPENDED
    assert upload.finish() == blob_ref(DATA)


def test_non_durable_uploads_become_durable_when_a_commit_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from reference_server.store import Store, _files, blobs, uploads
    from reference_server.store.records import RoundRecord, TensorRecord

    store = Store(tmp_path / "state")
    ref = blob_ref(DATA)
    synced: list[str] = []

    def recording(real: Callable[[Path], None]) -> Callable[[Path], None]:
        def fsync_file(path: Path) -> None:
            synced.append(Path(path).name)
            real(path)

        return fsync_file

    real = _files.fsync_file
    monkeypatch.setattr(uploads, "fsync_file", recording(real))
    monkeypatch.setattr(blobs, "fsync_file", recording(real))
    upload = store.blobs.upload("node", ref, max_blob_bytes=LIMIT)
    upload.append(0, DATA)
    assert upload.finish(durable=False) == ref
    assert synced == [], "a client's update is not fsynced on arrival"
    assert store.blobs.has(ref)
    store.state.begin_run("run", "digest", time.time())
    tensor = TensorRecord(dtype=Dtype.UINT8, shape=(len(DATA),), codec="raw", blob=ref)
    store.state.commit_round(
        RoundRecord(run_id="run", round=1, parameters=(tensor,), committed_at=time.time())
    )
    assert synced == [ref.hex], "the commit makes the blob it names durable first"
    store.close()
