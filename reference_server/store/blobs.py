"""Content-addressed blob files: the store's payload half.

Layout under `root`:

- `blobs/<first 2 hex>/<hex>`: complete, verified blobs named by their SHA-256. A name
  appears only by an atomic rename of a fully written and fsynced file, so a file with a
  blob's name holds that blob's bytes whenever it has the blob's size, even after kill -9.
- `blobs/<xx>/.<hex>.<token>.tmp`: a `put` in progress (or killed); gc removes old ones.
- `uploads/<owner key>/<hex>.<size>.part`: one node's partial upload (see uploads.py). The
  owner key is a hash of the node id, so any id is a safe file name and nodes never share
  (or reset) each other's parts (PLN-BLB-029); the size in the name lets an upload of the
  same digest under another total size be refused (PLN-BLB-016, step 6).

Blob files are never modified in place (only created by rename or deleted), which is what
makes it safe to hand out memory maps of them.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pollen.blob import BlobRef, BytesLike, blob_ref
from pollen.errors import BlobDigestMismatch, BlobNotFound, InvalidArgument, LimitExceeded
from reference_server.store._files import (
    ensure_dir,
    fsync_dir,
    fsync_file,
    hash_file,
    pwrite_all,
    size_or_none,
)
from reference_server.store.uploads import Upload

_BLOB_NAME = re.compile(r"[0-9a-f]{64}")
_PART_NAME = re.compile(r"(?P<hex>[0-9a-f]{64})\.(?P<size>\d+)\.part")


@dataclass(frozen=True, kw_only=True)
class GcStats:
    """What one garbage collection removed."""

    blobs_removed: int
    bytes_removed: int
    uploads_removed: int
    temp_files_removed: int


def owner_key(owner: str) -> str:
    """The directory name of an owner's uploads."""
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


class BlobStore:
    """Blobs as files under `root`; every method is safe to call from several threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        ensure_dir(self._blobs)
        ensure_dir(self._uploads)
        self._locks: weakref.WeakValueDictionary[Path, threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._locks_guard = threading.Lock()

    # -- complete blobs ------------------------------------------------------------------

    def _path(self, ref: BlobRef) -> Path:
        hex_ = ref.check().hex
        return self._blobs / hex_[:2] / hex_

    def has(self, ref: BlobRef) -> bool:
        """Whether the complete blob is stored (its file exists with the ref's size)."""
        return size_or_none(self._path(ref)) == ref.size

    def stored_size(self, ref: BlobRef) -> int | None:
        """The size of the complete blob with `ref`'s digest, whatever `ref.size` says."""
        return size_or_none(self._path(ref))

    def put(self, data: BytesLike) -> BlobRef:
        """Store `data` durably and return its ref; cheap when the blob is already stored."""
        view = memoryview(data).cast("B")
        ref = blob_ref(view)
        path = self._path(ref)
        if size_or_none(path) == ref.size:
            # Refresh its age, so that a gc running before the caller commits a record
            # naming it does not take it for garbage.
            os.utime(path)
            return ref
        ensure_dir(path.parent)
        temp = path.parent / f".{ref.hex}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                pwrite_all(fd, view, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return ref

    def ensure_durable(self, ref: BlobRef) -> None:
        """fsync a stored blob and its directory (cheap when it already is durable)."""
        path = self._path(ref)
        fsync_file(path)
        fsync_dir(path.parent)

    def size(self, ref: BlobRef) -> int:
        """The stored size of the blob with ref's digest (it may differ from `ref.size`)."""
        found = size_or_none(self._path(ref))
        if found is None:
            raise BlobNotFound(f"blob {ref.hex} is not stored", field="sha256")
        return found

    def _checked_size(self, ref: BlobRef) -> int:
        found = self.size(ref)
        if found != ref.size:
            # PLN-BLB-025: a blob whose size differs from the ref is a digest mismatch.
            raise BlobDigestMismatch(
                f"blob {ref.hex} is {found} bytes, the ref says {ref.size}", field="size"
            )
        return found

    def read(self, ref: BlobRef) -> memoryview:
        """The whole blob, read-only.

        A memory map, not a copy: the bytes stay in the page cache, shared by every reader,
        instead of in the server's heap once per caller.
        """
        self._checked_size(ref)
        try:
            file = self._path(ref).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {ref.hex} is not stored", field="sha256") from None
        with file:
            if ref.size == 0:
                return memoryview(b"")
            return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))

    def verify(self, ref: BlobRef) -> bool:
        """Whether the stored file hashes to the ref (reads the whole file, streaming)."""
        try:
            return hash_file(self._path(ref)) == (ref.sha256, ref.size)
        except FileNotFoundError:
            return False

    def _open(self, ref: BlobRef) -> int:
        try:
            return os.open(self._path(ref), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {ref.hex} is not stored", field="sha256") from None

    # -- uploads -------------------------------------------------------------------------

    def _lock_for(self, part: Path) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(part)
            if lock is None:
                lock = threading.Lock()
                self._locks[part] = lock
            return lock

    def upload(self, owner: str, ref: BlobRef, *, max_blob_bytes: int) -> Upload:
        """The partial upload by `owner` of `ref`: resumed from disk, or new.

        Raises in the order of PLN-BLB-016 (steps 2, 3 and 6). When the blob is already
        stored, the upload is complete at once and nothing is written (PLN-BLB-017).
        """
        ref.check()
        if ref.size > max_blob_bytes:
            raise LimitExceeded(
                f"blob of {ref.size} bytes exceeds max_blob_bytes {max_blob_bytes}",
                field="total_size",
            )
        folder = self._uploads / owner_key(owner)
        part = folder / f"{ref.hex}.{ref.size}.part"
        if folder.is_dir():
            for other in folder.glob(f"{ref.hex}.*.part"):
                if other != part:
                    raise InvalidArgument(
                        f"an upload of blob {ref.hex} with total_size "
                        f"{other.name.split('.')[1]} is in progress for this node",
                        field="total_size",
                    )
        lock = self._lock_for(part)
        with lock:
            held = size_or_none(part)
            if held is not None and held > ref.size:
                part.unlink()  # cannot come from appends; start the upload over
        return Upload(owner=owner, ref=ref, part=part, final=self._path(ref), lock=lock)

    def discard_uploads(self, owner: str) -> int:
        """Delete every partial upload of `owner`; the number deleted."""
        folder = self._uploads / owner_key(owner)
        count = 0
        for part in folder.glob("*.part") if folder.is_dir() else ():
            with self._lock_for(part):
                part.unlink(missing_ok=True)
            count += 1
        return count

    # -- garbage collection --------------------------------------------------------------

    def gc(
        self,
        keep: Iterable[BlobRef],
        *,
        max_upload_age_s: float,
        min_blob_age_s: float = 0.0,
        now: float | None = None,
    ) -> GcStats:
        """Delete blobs not in `keep`, and partial uploads and temp files gone stale.

        A partial upload (or a temp file of a `put` killed midway) is removed when its last
        write is more than `max_upload_age_s` old (PLN-BLB-028). A blob not in `keep` is
        removed when it is at least `min_blob_age_s` old: pass the session timeout so that
        an upload a node has completed but not yet referenced survives (PLN-BLB-027).
        """
        moment = time.time() if now is None else now
        keep_names = {ref.check().hex for ref in keep}
        blobs = bytes_removed = uploads = temps = 0
        for folder in _subdirs(self._blobs):
            for entry in _files(folder):
                stat = _stat(entry)
                if stat is None:
                    continue  # renamed or deleted meanwhile
                age = moment - stat.st_mtime
                if entry.name.endswith(".tmp"):
                    if age > max_upload_age_s:
                        temps += _unlink(entry)
                elif (
                    _BLOB_NAME.fullmatch(entry.name)
                    and entry.name not in keep_names
                    and age >= min_blob_age_s
                    and _unlink(entry)
                ):
                    blobs += 1
                    bytes_removed += stat.st_size
        for folder in _subdirs(self._uploads):
            for entry in _files(folder):
                if not _PART_NAME.fullmatch(entry.name):
                    continue
                # Under the part's lock, so that no append lands between the age check
                # and the deletion.
                with self._lock_for(entry):
                    stat = _stat(entry)
                    if stat is not None and moment - stat.st_mtime > max_upload_age_s:
                        uploads += _unlink(entry)
        return GcStats(
            blobs_removed=blobs,
            bytes_removed=bytes_removed,
            uploads_removed=uploads,
            temp_files_removed=temps,
        )


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir())


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file())


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> int:
    """Delete a file; 1 if this call deleted it, 0 if it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1
