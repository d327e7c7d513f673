"""Run and round bookkeeping: commit order, blob presence, configuration and schema checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pollen.blob import BlobRef, blob_ref
from pollen.dtypes import Dtype
from pollen.errors import BlobNotFound, InvalidArgument
from reference_server.store import (
    FAILED,
    RUNNING,
    STOPPED,
    BlobStore,
    ConfigDigestMismatch,
    RoundOutOfOrder,
    RoundRecord,
    RunNotFound,
    RunNotRunning,
    SchemaTooNew,
    StateCorrupt,
    StateStore,
    StoreError,
    TensorRecord,
)
from reference_server.store._schema import SCHEMA_VERSION


def _round(blobs: BlobStore, number: int, *, run_id: str = "run") -> RoundRecord:
    data = number.to_bytes(8, "little")
    tensor = TensorRecord(dtype=Dtype.INT64, shape=(1,), codec="raw", blob=blobs.put(data))
    return RoundRecord(run_id=run_id, round=number, parameters=(tensor,), committed_at=1.0)


def _last(state: StateStore, run_id: str = "run") -> int:
    run = state.load_run(run_id)
    assert run is not None
    return run.last_round


def test_rounds_commit_in_order_only(state: StateStore, blobs: BlobStore) -> None:
    state.begin_run("run", "cfg", 0.0)
    with pytest.raises(RoundOutOfOrder, match="next commit must be round 1"):
        state.commit_round(_round(blobs, 2))
    for number in (1, 2, 3):
        state.commit_round(_round(blobs, number))
        assert _last(state) == number
    for wrong in (3, 2, 5):
        with pytest.raises(RoundOutOfOrder, match="last committed round is 3"):
            state.commit_round(_round(blobs, wrong))
    assert [r.round for r in state.rounds("run")] == [1, 2, 3]
    last = state.last_round("run")
    assert last is not None
    assert last == _round(blobs, 3)


def test_round_zero_holds_the_starting_point_once(state: StateStore, blobs: BlobStore) -> None:
    state.begin_run("run", "cfg", 0.0)
    state.commit_round(_round(blobs, 0))
    assert _last(state) == 0, "round 0 is not a training round: round 1 comes next"
    last = state.last_round("run")
    assert last is not None
    assert last.round == 0
    with pytest.raises(RoundOutOfOrder, match="round 0 comes before every other round"):
        state.commit_round(_round(blobs, 0))
    state.commit_round(_round(blobs, 1))
    with pytest.raises(RoundOutOfOrder):
        state.commit_round(_round(blobs, 0))
    assert [r.round for r in state.rounds("run")] == [0, 1]


def test_round_zero_is_optional(state: StateStore, blobs: BlobStore) -> None:
    state.begin_run("run", "cfg", 0.0)
    state.commit_round(_round(blobs, 1))
    with pytest.raises(RoundOutOfOrder):
        state.commit_round(_round(blobs, 0))


def test_a_round_naming_a_missing_blob_is_not_committed(
    state: StateStore, blobs: BlobStore
) -> None:
    state.begin_run("run", "cfg", 0.0)
    stored = _round(blobs, 1)
    missing = TensorRecord(dtype=Dtype.UINT8, shape=(3,), codec="raw", blob=blob_ref(b"not stored"))
    # A wrong size for a stored digest is as good as missing.
    wrong_size = TensorRecord(
        dtype=Dtype.INT64,
        shape=(1,),
        codec="raw",
        blob=BlobRef(sha256=stored.parameters[0].blob.sha256, size=9),
    )
    for record, field in [
        (
            RoundRecord(
                run_id="run", round=1, parameters=(stored.parameters[0], missing), committed_at=1.0
            ),
            "parameters[1]",
        ),
        (
            RoundRecord(
                run_id="run",
                round=1,
                parameters=stored.parameters,
                strategy_state={"m.0": wrong_size},
                committed_at=1.0,
            ),
            "strategy_state['m.0']",
        ),
    ]:
        with pytest.raises(BlobNotFound, match="put every blob before committing") as caught:
            state.commit_round(record)
        assert caught.value.field == field
        assert state.rounds("run") == [], "nothing of the failed commit is visible"
        assert _last(state) == 0
    state.commit_round(stored)
    assert _last(state) == 1


def test_commits_need_a_running_run(state: StateStore, blobs: BlobStore) -> None:
    with pytest.raises(RunNotFound, match="begin_run"):
        state.commit_round(_round(blobs, 1, run_id="nope"))
    with pytest.raises(RunNotFound):
        state.set_status("nope", FAILED, "x", 1.0)
    state.begin_run("run", "cfg", 0.0)
    state.set_status("run", STOPPED, "operator stop", 1.0)
    with pytest.raises(RunNotRunning, match="is stopped"):
        state.commit_round(_round(blobs, 1))
    state.set_status("run", RUNNING, "", 2.0)
    state.commit_round(_round(blobs, 1))


def test_unknown_statuses_are_refused(state: StateStore) -> None:
    state.begin_run("run", "cfg", 0.0)
    with pytest.raises(InvalidArgument, match="not one of"):
        state.set_status("run", "paused", "", 1.0)
    run = state.load_run("run")
    assert run is not None
    assert run.status == RUNNING


def test_a_run_resumed_under_another_config_is_refused(state: StateStore) -> None:
    state.begin_run("run", "digest-a", 0.0)
    with pytest.raises(ConfigDigestMismatch, match="bit-identical resume") as caught:
        state.begin_run("run", "digest-b", 1.0)
    assert (caught.value.stored, caught.value.given) == ("digest-a", "digest-b")
    assert "digest-a" in str(caught.value)
    assert "digest-b" in str(caught.value)
    run = state.load_run("run")
    assert run is not None
    assert run.config_digest == "digest-a", "the stored run is unchanged"


@pytest.mark.parametrize(("run_id", "digest"), [("", "cfg"), ("run", ""), (3, "cfg")])
def test_run_ids_and_digests_are_non_empty_text(
    state: StateStore, run_id: object, digest: str
) -> None:
    with pytest.raises(InvalidArgument):
        state.begin_run(run_id, digest, 0.0)  # type: ignore[arg-type]


def test_durability_pragmas(state: StateStore) -> None:
    db = state._db
    assert db is not None
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2, "FULL, not NORMAL (goal D6)"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    StateStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()
    StateStore(tmp_path / "s.db").close()  # and it opens again


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(SchemaTooNew, match="run a newer server") as caught:
        StateStore(path)
    assert (caught.value.found, caught.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert str(path) in str(caught.value)


def test_foreign_databases_and_garbage_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    with pytest.raises(StateCorrupt, match="not a Pollen state database"):
        StateStore(foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateCorrupt, match=str(garbage)):
        StateStore(garbage)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "s.db")
    state.close()
    state.close()
    with pytest.raises(StoreError, match="closed"):
        state.load_run("run")


def test_store_errors_are_store_errors() -> None:
    for kind in (
        ConfigDigestMismatch,
        RoundOutOfOrder,
        RunNotFound,
        RunNotRunning,
        SchemaTooNew,
        StateCorrupt,
    ):
        assert issubclass(kind, StoreError)
