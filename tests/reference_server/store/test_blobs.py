"""Complete blobs: content addressing, durable puts, reads, streaming and garbage collection."""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from pollen.blob import BlobRef, blob_ref
from pollen.errors import BlobDigestMismatch, BlobNotFound, InvalidArgument
from reference_server.store import BlobStore

DATA = random.Random(1).randbytes(5000)


def _file(root: Path, ref: BlobRef) -> Path:
    return root / "blobs" / ref.hex[:2] / ref.hex


def test_put_stores_the_blob_under_its_digest(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blobs.put(DATA)
    assert ref == BlobRef(sha256=hashlib.sha256(DATA).digest(), size=len(DATA))
    assert _file(tmp_path, ref).read_bytes() == DATA
    assert blobs.has(ref)
    assert blobs.size(ref) == len(DATA)
    assert blobs.verify(ref)
    assert not blobs.has(BlobRef(sha256=ref.sha256, size=len(DATA) - 1)), "sizes must match"
    assert not blobs.has(blob_ref(b"other"))
    assert [p.name for p in _file(tmp_path, ref).parent.iterdir()] == [ref.hex], "no temp left"


def test_put_of_a_stored_blob_writes_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blobs.put(DATA)
    path = _file(tmp_path, ref)
    inode = path.stat().st_ino
    os.utime(path, (1.0, 1.0))
    assert blobs.put(memoryview(DATA)) == ref
    assert path.stat().st_ino == inode, "the file was not rewritten"
    assert path.stat().st_mtime > 1.0, "its age was refreshed, so gc keeps it"


def test_put_replaces_a_damaged_file(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blob_ref(DATA)
    path = _file(tmp_path, ref)
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA[:10])
    assert not blobs.has(ref)
    blobs.put(DATA)
    assert path.read_bytes() == DATA


def test_put_fsyncs_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("rename", Path(src).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ref = blobs.put(DATA)
    temp = next(name for kind, name in events if kind == "rename")
    assert temp.startswith(f".{ref.hex}.")
    assert temp.endswith(".tmp")
    assert events[-3:] == [("fsync", temp), ("rename", temp), ("fsync", ref.hex[:2])]


def test_read_is_a_read_only_view_of_the_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blobs.put(DATA)
    view = blobs.read(ref)
    assert view.readonly
    assert view == DATA
    with pytest.raises(TypeError):
        view[0] = 0
    assert bytes(blobs.read(blobs.put(b""))) == b""


def test_reads_of_unknown_or_mis_sized_blobs_fail(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    unknown = blob_ref(b"unknown")
    for read in (
        lambda: blobs.read(unknown),
        lambda: blobs.size(unknown),
    ):
        with pytest.raises(BlobNotFound, match=unknown.hex):
            read()
    assert not blobs.verify(unknown)
    stored = blobs.put(DATA)
    wrong = BlobRef(sha256=stored.sha256, size=stored.size + 1)
    with pytest.raises(BlobDigestMismatch, match="5000 bytes, the ref says 5001"):
        blobs.read(wrong)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        blobs.has(BlobRef(sha256=b"short", size=1))


def test_gc_keeps_what_is_named_and_what_is_young(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    kept, dropped, young = blobs.put(b"kept"), blobs.put(b"dropped"), blobs.put(b"young")
    old = time.time() - 3600
    for ref in (kept, dropped):
        os.utime(_file(tmp_path, ref), (old, old))
    stale_temp = _file(tmp_path, kept).parent / f".{kept.hex}.0123.tmp"
    stale_temp.write_bytes(b"half")
    os.utime(stale_temp, (old, old))
    fresh_temp = _file(tmp_path, kept).parent / f".{kept.hex}.4567.tmp"
    fresh_temp.write_bytes(b"in progress")
    upload = blobs.upload("node", blob_ref(DATA), max_blob_bytes=1 << 20)
    upload.append(0, DATA[:10])

    stats = blobs.gc([kept], max_upload_age_s=600, min_blob_age_s=60)
    assert (stats.blobs_removed, stats.bytes_removed) == (1, len(b"dropped"))
    assert (stats.uploads_removed, stats.temp_files_removed) == (0, 1)
    assert blobs.has(kept)
    assert not blobs.has(dropped)
    assert blobs.has(young), "younger than min_blob_age_s"
    assert not stale_temp.exists()
    assert fresh_temp.exists()
    assert upload.committed_size == 10

    later = blobs.gc([kept], max_upload_age_s=600, now=time.time() + 601)
    assert (later.blobs_removed, later.uploads_removed, later.temp_files_removed) == (1, 1, 1)
    assert blobs.has(kept)
    assert not blobs.has(young)
    assert upload.committed_size == 0


def test_verify_reads_the_bytes_where_has_only_looks_at_the_size(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blobs.put(DATA)
    damaged = bytearray(DATA)
    damaged[1234] ^= 0x40
    _file(tmp_path, ref).write_bytes(damaged)
    assert blobs.has(ref)
    assert not blobs.verify(ref)
