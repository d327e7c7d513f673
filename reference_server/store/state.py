"""Runs and committed rounds in an embedded SQLite database.

Durability settings, and why:

- journal_mode=WAL: a commit appends to the write-ahead log and becomes visible only when
  its commit record is there, so a process killed at any instant leaves the database at
  its last commit, and readers never block the writer.
- synchronous=FULL: the log is fsynced at every commit, before the commit returns. With
  NORMAL it is synced only at checkpoints, and a power loss or OS crash can roll back the
  last commits; the server would then resume from a round older than one it already
  announced, and the blobs it fsynced would be ahead of the database. The price is one
  fsync per round commit, which is nothing beside a round's length (reliability goal D6).
- fullfsync=ON: on macOS, fsync does not flush the drive's cache; F_FULLFSYNC does.
  Other systems ignore it.

A round commit is one transaction: the round row, its tensor rows and the run's
last_round, all or nothing (PLN-RND-016). The tensors' blobs are written and fsynced
before it (the store checks that they are there), so a committed round never names a
missing or partial blob.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Protocol

from pollen.blob import BlobRef
from pollen.dtypes import Dtype
from pollen.errors import BlobNotFound, InvalidArgument
from reference_server.store._encoding import (
    check_time,
    history_from_text,
    history_to_text,
    metrics_from_text,
    metrics_to_text,
)
from reference_server.store._schema import SCHEMA_VERSION, TABLES
from reference_server.store.errors import (
    ConfigDigestMismatch,
    RoundOutOfOrder,
    RunNotFound,
    RunNotRunning,
    SchemaTooNew,
    StateCorrupt,
    StoreError,
)
from reference_server.store.records import (
    RUN_STATUSES,
    RUNNING,
    RoundRecord,
    RunRecord,
    TensorRecord,
)

_PARAMETERS = "parameters"
_STRATEGY_STATE = "strategy_state"
# Milliseconds a statement waits for a lock held by an outside reader (an operator's sqlite3
# shell) before failing; the server itself is the only writer.
_BUSY_TIMEOUT_MS = 10_000


class BlobPresence(Protocol):
    """What the state store needs of a blob store: making a stored blob durable."""

    def has(self, ref: BlobRef) -> bool: ...

    def ensure_durable(self, ref: BlobRef) -> None: ...


class StateStore:
    """The run and round records of a state directory.

    `blobs`, when given, is asked about every tensor of a round before the round is
    committed; Store always passes its BlobStore. Methods are safe to call from several
    threads (one connection, used under a lock).
    """

    def __init__(self, path: Path, *, blobs: BlobPresence | None = None) -> None:
        self.path = Path(path)
        self._blobs = blobs
        self._lock = threading.RLock()
        # Autocommit mode (isolation_level=None): transactions are opened explicitly below,
        # never implicitly by the sqlite3 module.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        try:
            self._configure()
            self._migrate()
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StateCorrupt(self.path, str(exc)) from exc
            raise

    # -- opening -------------------------------------------------------------------------

    def _configure(self) -> None:
        db = self._connection()
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # For example a file system without shared memory support: refuse rather than
            # run with weaker guarantees than documented.
            raise StoreError(f"state database {self.path}: cannot use WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA fullfsync=ON")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    def _migrate(self) -> None:
        with self._write() as db:
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "schema_version" not in tables:
                if tables:
                    raise StateCorrupt(
                        self.path,
                        f"holds tables {sorted(tables)} but no schema_version: "
                        "not a Pollen state database",
                    )
                for statement in TABLES:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            rows = db.execute("SELECT version FROM schema_version").fetchall()
            if len(rows) != 1 or not isinstance(rows[0][0], int):
                raise StateCorrupt(self.path, f"schema_version holds {rows!r}, not one version")
            found = rows[0][0]
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(self.path, found, SCHEMA_VERSION)
            if found < SCHEMA_VERSION:
                # No older schema has shipped yet; migrations go here when one has.
                raise StateCorrupt(self.path, f"unknown old schema version {found}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back when the block raises."""
        with self._lock:
            db = self._connection()
            # IMMEDIATE takes the write lock up front, so the checks made inside the
            # transaction still hold when it commits.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: several statements see the same committed state."""
        with self._lock:
            db = self._connection()
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"state database {self.path} is closed")
        return self._db

    def close(self) -> None:
        """Close the database; later calls fail with StoreError. Closing twice is harmless."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------

    def begin_run(self, run_id: str, config_digest: str, now: float) -> RunRecord:
        """Create the run, or return it as stored when it exists with the same config."""
        _check_text(run_id, "run_id", allow_empty=False)
        _check_text(config_digest, "config_digest", allow_empty=False)
        created = check_time(now, "now")
        with self._write() as db:
            existing = _load_run(db, run_id)
            if existing is None:
                db.execute(
                    "INSERT INTO runs (run_id, config_digest, created_at, status, reason,"
                    " last_round, updated_at) VALUES (?, ?, ?, ?, '', 0, ?)",
                    (run_id, config_digest, created, RUNNING, created),
                )
                return RunRecord(
                    run_id=run_id,
                    config_digest=config_digest,
                    created_at=created,
                    status=RUNNING,
                    reason="",
                    last_round=0,
                )
            if existing.config_digest != config_digest:
                raise ConfigDigestMismatch(run_id, existing.config_digest, config_digest)
            return existing

    def load_run(self, run_id: str) -> RunRecord | None:
        with self._read() as db:
            return _load_run(db, run_id)

    def set_status(self, run_id: str, status: str, reason: str, now: float) -> RunRecord:
        """Record a run's status and why; the updated run."""
        if status not in RUN_STATUSES:
            raise InvalidArgument(
                f"run status {status!r} is not one of {sorted(RUN_STATUSES)}", field="status"
            )
        _check_text(reason, "reason", allow_empty=True)
        moment = check_time(now, "now")
        with self._write() as db:
            updated = db.execute(
                "UPDATE runs SET status = ?, reason = ?, updated_at = ? WHERE run_id = ?",
                (status, reason, moment, run_id),
            ).rowcount
            if updated == 0:
                raise RunNotFound(run_id)
            run = _load_run(db, run_id)
            assert run is not None  # updated just now, inside this transaction
            return run

    # -- rounds --------------------------------------------------------------------------

    def commit_round(self, record: RoundRecord) -> None:
        """Commit a round atomically; it must follow the run's last committed round.

        Round r may be committed only when the run's last round is r - 1, except round 0
        (the run's starting point), which may be committed once, before any other round.
        Every tensor's blob must already be in the blob store.
        """
        metrics = metrics_to_text(record.metrics)
        history = history_to_text(record.history)
        committed_at = check_time(record.committed_at, "committed_at")
        if isinstance(record.round, bool) or not isinstance(record.round, int):
            raise InvalidArgument(f"round must be an int, got {record.round!r}", field="round")
        rows = _tensor_rows(record)
        with self._write() as db:
            run = _load_run(db, record.run_id)
            if run is None:
                raise RunNotFound(record.run_id)
            if run.status != RUNNING:
                raise RunNotRunning(record.run_id, run.status)
            self._check_order(db, record, run)
            self._check_blobs(record)
            db.execute(
                "INSERT INTO rounds (run_id, round, metrics, history, committed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (record.run_id, record.round, metrics, history, committed_at),
            )
            db.executemany(
                "INSERT INTO round_tensors (run_id, round, slot, position, key, name, dtype,"
                " shape, codec, sha256, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "UPDATE runs SET last_round = ?, updated_at = ? WHERE run_id = ?",
                (record.round, committed_at, record.run_id),
            )

    def _check_order(self, db: sqlite3.Connection, record: RoundRecord, run: RunRecord) -> None:
        if record.round == 0:
            any_round = db.execute(
                "SELECT 1 FROM rounds WHERE run_id = ? LIMIT 1", (record.run_id,)
            ).fetchone()
            if any_round is not None:
                raise RoundOutOfOrder(
                    record.run_id, 0, run.last_round, "round 0 comes before every other round"
                )
        elif record.round != run.last_round + 1:
            raise RoundOutOfOrder(record.run_id, record.round, run.last_round)

    def _check_blobs(self, record: RoundRecord) -> None:
        if self._blobs is None:
            return
        for field, tensor in record.tensors():
            if not self._blobs.has(tensor.blob):
                raise BlobNotFound(
                    f"blob {tensor.blob.hex} of {field} is not stored; "
                    "put every blob before committing the round that names it",
                    field=field,
                )
            # Uploads are stored without fsync (an uncommitted round is redone after a
            # crash anyway); a blob becomes durable when a commit first names it.
            self._blobs.ensure_durable(tensor.blob)

    def last_round(self, run_id: str) -> RoundRecord | None:
        """The run's last committed round (round 0 if only that), or None."""
        with self._read() as db:
            row = db.execute(
                "SELECT round, metrics, history, committed_at FROM rounds WHERE run_id = ?"
                " ORDER BY round DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            return None if row is None else _load_round(db, run_id, row)

    def rounds(self, run_id: str) -> list[RoundRecord]:
        """Every committed round of the run, in order."""
        with self._read() as db:
            rows = db.execute(
                "SELECT round, metrics, history, committed_at FROM rounds WHERE run_id = ?"
                " ORDER BY round",
                (run_id,),
            ).fetchall()
            return [_load_round(db, run_id, row) for row in rows]

    def referenced_blobs(self) -> set[BlobRef]:
        """Every blob a committed round of any run names: what garbage collection keeps."""
        with self._read() as db:
            return {
                BlobRef(sha256=sha256, size=size)
                for sha256, size in db.execute("SELECT DISTINCT sha256, size FROM round_tensors")
            }


def _check_text(value: object, field: str, *, allow_empty: bool) -> None:
    if not isinstance(value, str) or not (allow_empty or value):
        raise InvalidArgument(
            f"{field} must be {'' if allow_empty else 'non-empty '}text", field=field
        )


def _load_run(db: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = db.execute(
        "SELECT config_digest, created_at, status, reason, last_round FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    config_digest, created_at, status, reason, last_round = row
    return RunRecord(
        run_id=run_id,
        config_digest=config_digest,
        created_at=created_at,
        status=status,
        reason=reason,
        last_round=last_round,
    )


def _tensor_rows(record: RoundRecord) -> list[tuple[object, ...]]:
    head = (record.run_id, record.round)
    rows: list[tuple[object, ...]] = [
        (*head, _PARAMETERS, index, "", *_tensor_columns(tensor, f"parameters[{index}]"))
        for index, tensor in enumerate(record.parameters)
    ]
    for index, (key, tensor) in enumerate(record.strategy_state.items()):
        field = f"strategy_state[{key!r}]"
        _check_text(key, field, allow_empty=False)
        rows.append((*head, _STRATEGY_STATE, index, key, *_tensor_columns(tensor, field)))
    return rows


def _tensor_columns(tensor: TensorRecord, field: str) -> tuple[object, ...]:
    if not isinstance(tensor, TensorRecord):
        raise InvalidArgument(f"{field} is not a TensorRecord", field=field)
    if not isinstance(tensor.dtype, Dtype):
        raise InvalidArgument(f"{field}.dtype is not a Dtype", field=f"{field}.dtype")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in tensor.shape):
        raise InvalidArgument(
            f"{field}.shape {tensor.shape!r} is not sizes", field=f"{field}.shape"
        )
    _check_text(tensor.codec, f"{field}.codec", allow_empty=True)
    _check_text(tensor.name, f"{field}.name", allow_empty=True)
    ref = tensor.blob.check()
    shape = ",".join(str(d) for d in tensor.shape)
    return (tensor.name, tensor.dtype.value, shape, tensor.codec, ref.sha256, ref.size)


def _load_round(
    db: sqlite3.Connection, run_id: str, row: tuple[int, str, str, float]
) -> RoundRecord:
    round_, metrics, history, committed_at = row
    parameters: list[TensorRecord] = []
    state: dict[str, TensorRecord] = {}
    for slot, key, name, dtype, shape, codec, sha256, size in db.execute(
        "SELECT slot, key, name, dtype, shape, codec, sha256, size FROM round_tensors"
        " WHERE run_id = ? AND round = ? ORDER BY slot, position",
        (run_id, round_),
    ):
        tensor = TensorRecord(
            dtype=Dtype(dtype),
            shape=tuple(int(d) for d in shape.split(",")) if shape else (),
            codec=codec,
            blob=BlobRef(sha256=sha256, size=size),
            name=name,
        )
        if slot == _PARAMETERS:
            parameters.append(tensor)
        else:
            state[key] = tensor
    return RoundRecord(
        run_id=run_id,
        round=round_,
        parameters=tuple(parameters),
        strategy_state=state,
        metrics=metrics_from_text(metrics),
        history=history_from_text(history),
        committed_at=committed_at,
    )
