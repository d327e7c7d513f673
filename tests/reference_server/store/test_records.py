"""Every record survives a round trip through the state database with the same value."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from pollen.blob import BlobRef
from pollen.dtypes import Dtype
from pollen.errors import InvalidArgument
from pollen.tensors import EncodedTensor
from reference_server.store import (
    FINISHED,
    RUNNING,
    BlobStore,
    RoundRecord,
    RunRecord,
    StateStore,
    TensorRecord,
)

NAN_PAYLOAD = struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]  # a NaN with payload


def _tensor(blobs: BlobStore, data: bytes, **fields: object) -> TensorRecord:
    values: dict[str, object] = {"dtype": Dtype.FLOAT32, "shape": (len(data) // 4,)}
    values.update(fields)
    return TensorRecord(
        dtype=values["dtype"],  # type: ignore[arg-type]
        shape=values["shape"],  # type: ignore[arg-type]
        codec=str(values.get("codec", "raw")),
        blob=blobs.put(data),
        name=str(values.get("name", "")),
    )


def test_tensor_record_travels_by_reference() -> None:
    ref = BlobRef(sha256=bytes(range(32)), size=24)
    record = TensorRecord(dtype=Dtype.INT16, shape=[3, 4], codec="zstd", blob=ref, name="w")  # type: ignore[arg-type]
    assert record.shape == (3, 4), "a list shape is frozen into a tuple"
    assert record.to_encoded() == EncodedTensor(
        dtype=Dtype.INT16, shape=(3, 4), codec="zstd", payload=b"", name="w", blob=ref
    )


def test_run_record_round_trip(state: StateStore) -> None:
    begun = state.begin_run("run-1", "cfg-digest", 1234.5)
    assert begun == RunRecord(
        run_id="run-1",
        config_digest="cfg-digest",
        created_at=1234.5,
        status=RUNNING,
        reason="",
        last_round=0,
    )
    assert state.load_run("run-1") == begun
    assert state.load_run("other") is None
    ended = state.set_status("run-1", FINISHED, "all 10 rounds done", 2000.0)
    assert ended == RunRecord(
        run_id="run-1",
        config_digest="cfg-digest",
        created_at=1234.5,
        status=FINISHED,
        reason="all 10 rounds done",
        last_round=0,
    )
    assert state.load_run("run-1") == ended
    assert state.begin_run("run-1", "cfg-digest", 9999.0) == ended, "an existing run is returned"


def test_round_record_round_trip_keeps_every_bit(state: StateStore, blobs: BlobStore) -> None:
    state.begin_run("run", "cfg", 0.0)
    record = RoundRecord(
        run_id="run",
        round=1,
        parameters=(
            _tensor(blobs, b"\x01" * 16, name="dense.kernel"),
            _tensor(blobs, b"", dtype=Dtype.BFLOAT16, shape=(0, 3), codec="zstd"),
            _tensor(blobs, b"\x02" * 8, dtype=Dtype.FLOAT64, shape=()),
        ),
        # Insertion order that is not sorted order, to see that order is kept.
        strategy_state={
            "z.0": _tensor(blobs, b"\x03" * 8, dtype=Dtype.FLOAT64, shape=(1,)),
            "a.0": _tensor(blobs, b"\x04" * 8, dtype=Dtype.INT64, shape=(1, 1)),
        },
        metrics={
            "accuracy": 0.875,
            "neg_zero": -0.0,
            "nan": NAN_PAYLOAD,
            "inf": -math.inf,
            "big": (1 << 63) - 1,
            "small": -(1 << 63),
            "flag": True,
            "text": "ünïcødé \x00 nul",
            "raw": b"\x00\xff\x00",
        },
        history={"participants": ["n1", "n2"], "failures": {"expired": 1}, "seconds": 1.5},
        committed_at=1700000000.25,
    )
    state.commit_round(record)
    (loaded,) = state.rounds("run")
    last = state.last_round("run")
    assert last is not None
    # (NaN != NaN, so the metrics are compared bit by bit below.)
    assert replace(last, metrics={}) == replace(loaded, metrics={})
    assert last.metrics.keys() == loaded.metrics.keys()
    assert loaded.parameters == record.parameters
    assert list(loaded.strategy_state.items()) == list(record.strategy_state.items())
    assert loaded.history == record.history
    assert loaded.committed_at == record.committed_at
    assert (loaded.run_id, loaded.round) == ("run", 1)
    # Exact types and bits, which == alone would not show (True == 1, 0.0 == -0.0, NaN).
    assert list(loaded.metrics) == list(record.metrics)
    for key, value in record.metrics.items():
        got = loaded.metrics[key]
        assert type(got) is type(value), key
        if isinstance(value, float):
            assert struct.pack("<d", got) == struct.pack("<d", value), key
        else:
            assert got == value, key


def test_numpy_metrics_are_stored_as_wire_values(state: StateStore, blobs: BlobStore) -> None:
    import numpy as np

    state.begin_run("run", "cfg", 0.0)
    metrics = {"loss": np.float32(0.5), "count": np.int64(7), "ok": np.bool_(True)}
    state.commit_round(
        RoundRecord(run_id="run", round=1, parameters=(), metrics=metrics, committed_at=1.0)  # type: ignore[arg-type]
    )
    loaded = state.rounds("run")[0].metrics
    assert loaded == {"loss": 0.5, "count": 7, "ok": True}
    assert [type(v) for v in loaded.values()] == [float, int, bool]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("history", {"bad": object()}),
        ("metrics", {"bad": [1, 2]}),
        ("committed_at", math.nan),
    ],
)
def test_unstorable_rounds_are_refused_before_anything_is_written(
    state: StateStore, field: str, value: object
) -> None:
    state.begin_run("run", "cfg", 0.0)
    values: dict[str, object] = {"run_id": "run", "round": 1, "parameters": (), "committed_at": 1.0}
    values[field] = value
    with pytest.raises(InvalidArgument):
        state.commit_round(RoundRecord(**values))  # type: ignore[arg-type]
    assert state.rounds("run") == []
    run = state.load_run("run")
    assert run is not None
    assert run.last_round == 0


def test_rounds_of_runs_are_kept_apart(tmp_path: Path, blobs: BlobStore) -> None:
    with StateStore(tmp_path / "s.db", blobs=blobs) as state:
        for run in ("a", "b"):
            state.begin_run(run, "cfg", 0.0)
        a = _tensor(blobs, b"a" * 4, shape=(1,))
        b = _tensor(blobs, b"b" * 4, shape=(1,))
        state.commit_round(RoundRecord(run_id="a", round=1, parameters=(a,), committed_at=1.0))
        state.commit_round(RoundRecord(run_id="b", round=1, parameters=(b,), committed_at=1.0))
        assert [r.parameters for r in state.rounds("a")] == [(a,)]
        assert [r.parameters for r in state.rounds("b")] == [(b,)]
        assert state.referenced_blobs() == {a.blob, b.blob}
    # And everything is still there after reopening the file.
    with StateStore(tmp_path / "s.db", blobs=blobs) as reopened:
        assert [r.parameters for r in reopened.rounds("a")] == [(a,)]
        assert reopened.last_round("missing") is None
