"""Durable server state: run and round records in SQLite, tensor payloads as blob files.

`Store(state_dir)` is the whole interface the round engine and the gRPC service use:
`store.state` (StateStore) holds runs and committed rounds, `store.blobs` (BlobStore) the
content-addressed payloads and partial uploads. A round is made durable in two steps:
the caller puts its tensors' blobs (`put_tensors`, each blob fsynced and renamed into
place), then commits the round's record in one transaction. A server killed at any point
restarts on the same directory and finds exactly the rounds committed before the kill,
each with all its blobs.

Layout of a state directory: `lock` (see _lock.py), `state.db` (+ its WAL files),
`blobs/`, `uploads/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from pollen.blob import BlobRef
from pollen.errors import BlobDigestMismatch, BlobNotFound
from pollen.tensors import EncodedTensor
from reference_server.store import _lock
from reference_server.store._files import ensure_dir
from reference_server.store.blobs import BlobStore, GcStats
from reference_server.store.errors import (
    ConfigDigestMismatch,
    RoundOutOfOrder,
    RunNotFound,
    RunNotRunning,
    SchemaTooNew,
    StateCorrupt,
    StoreError,
    StoreLocked,
)
from reference_server.store.records import (
    FAILED,
    FINISHED,
    RUN_STATUSES,
    RUNNING,
    STOPPED,
    RoundRecord,
    RunRecord,
    TensorRecord,
)
from reference_server.store.state import StateStore
from reference_server.store.uploads import Upload


class Store:
    """A state directory, held by this process alone until `close`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        ensure_dir(self.state_dir)
        self._lock_fd: int | None = _lock.acquire(self.state_dir)
        try:
            self.blobs = BlobStore(self.state_dir)
            self.state = StateStore(self.state_dir / "state.db", blobs=self.blobs)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the database and release the directory. Closing twice is harmless."""
        state: StateStore | None = getattr(self, "state", None)
        if state is not None:
            state.close()
        if self._lock_fd is not None:
            _lock.release(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def put_tensors(self, encoded: Sequence[EncodedTensor]) -> tuple[TensorRecord, ...]:
        """Store each tensor's payload as a durable blob; the records naming them.

        A tensor that already travels by reference (blob set, payload empty, as an uploaded
        update) must name a stored blob; it is not copied.
        """
        records = []
        for index, tensor in enumerate(encoded):
            payload = memoryview(tensor.payload)
            if tensor.blob is not None and payload.nbytes == 0:
                if not self.blobs.has(tensor.blob):
                    raise BlobNotFound(
                        f"blob {tensor.blob.hex} is not stored", field=f"tensors[{index}].blob"
                    )
                ref = tensor.blob
            else:
                ref = self.blobs.put(payload)
                if tensor.blob is not None and tensor.blob != ref:
                    raise BlobDigestMismatch(
                        f"the payload is blob {ref.hex} of {ref.size} bytes, but the tensor "
                        f"names {tensor.blob.hex} of {tensor.blob.size}",
                        field=f"tensors[{index}].blob",
                    )
            records.append(
                TensorRecord(
                    dtype=tensor.dtype,
                    shape=tensor.shape,
                    codec=tensor.codec,
                    blob=ref,
                    name=tensor.name,
                )
            )
        return tuple(records)

    def load_tensors(self, records: Iterable[TensorRecord]) -> list[EncodedTensor]:
        """The tensors with their payloads in place (read-only views), ready to decode."""
        return [
            EncodedTensor(
                dtype=record.dtype,
                shape=record.shape,
                codec=record.codec,
                payload=self.blobs.read(record.blob),
                name=record.name,
            )
            for record in records
        ]

    def gc(
        self,
        *,
        also_keep: Iterable[BlobRef] = (),
        max_upload_age_s: float,
        min_blob_age_s: float = 0.0,
        now: float | None = None,
    ) -> GcStats:
        """Delete blobs that no committed round names and that are not in `also_keep`.

        `also_keep` is for blobs the engine uses outside committed rounds, such as those of
        the open tasks (PLN-BLB-026). See BlobStore.gc for the ages.
        """
        keep = self.state.referenced_blobs() | set(also_keep)
        return self.blobs.gc(
            keep, max_upload_age_s=max_upload_age_s, min_blob_age_s=min_blob_age_s, now=now
        )


__all__ = [
    "FAILED",
    "FINISHED",
    "RUNNING",
    "RUN_STATUSES",
    "STOPPED",
    "BlobStore",
    "ConfigDigestMismatch",
    "GcStats",
    "RoundOutOfOrder",
    "RoundRecord",
    "RunNotFound",
    "RunNotRunning",
    "RunRecord",
    "SchemaTooNew",
    "StateCorrupt",
    "StateStore",
    "Store",
    "StoreError",
    "StoreLocked",
    "TensorRecord",
    "Upload",
]
