"""The state directory as a whole: layout, the single-process lock and the tensor helpers."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pollen.blob import blob_ref
from pollen.errors import BlobDigestMismatch, BlobNotFound
from pollen.tensors import decode_tensor, encode_tensors
from reference_server.store import RoundRecord, Store, StoreLocked

HOLD = """
import sys, time
from pathlib import Path
from reference_server.store import Store
store = Store(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""

TRY = """
import sys
from pathlib import Path
from reference_server.store import Store, StoreLocked
try:
    Store(Path(sys.argv[1]))
except StoreLocked as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def _wait_for_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the child did not answer in time"
    return process.stdout.readline().strip()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def test_layout(tmp_path: Path) -> None:
    with Store(tmp_path / "a" / "state") as store:
        names = sorted(p.name for p in (tmp_path / "a" / "state").iterdir())
        assert {"lock", "state.db", "blobs", "uploads"} <= set(names)
        assert store.blobs.root == tmp_path / "a" / "state"
        assert store.state.path == tmp_path / "a" / "state" / "state.db"


def test_a_second_store_in_this_process_is_refused(tmp_path: Path) -> None:
    first = Store(tmp_path)
    with pytest.raises(StoreLocked, match=f"{tmp_path} is in use") as caught:
        Store(tmp_path)
    assert caught.value.directory == tmp_path
    assert f"pid {os.getpid()}" in str(caught.value)
    first.close()
    first.close()
    Store(tmp_path).close()  # released by close


def test_a_second_server_process_is_refused(
    tmp_path: Path, child_env: Callable[[], dict[str, str]]
) -> None:
    with Store(tmp_path):
        done = subprocess.run(
            [sys.executable, "-c", TRY, str(tmp_path)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert f"state directory {tmp_path} is in use" in done.stdout
        assert f"pid {os.getpid()}" in done.stdout
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(tmp_path)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "opened"), done.stderr


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, child_env: Callable[[], dict[str, str]]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for_line(holder, 60) == "held"
        with pytest.raises(StoreLocked, match=f"pid {holder.pid}"):
            Store(tmp_path)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        _stop(holder)
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the lock with the process; allow it a moment
        try:
            Store(tmp_path).close()
            break
        except StoreLocked:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_tensors_round_trip_through_blobs(store: Store) -> None:
    arrays: list[np.ndarray] = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(7, dtype=np.int64),
    ]
    encoded = encode_tensors(arrays, codec=["zstd", "raw"], names=["w", "b"])
    records = store.put_tensors(encoded)
    assert [r.name for r in records] == ["w", "b"]
    assert [r.codec for r in records] == ["zstd", "raw"]
    assert all(store.blobs.has(r.blob) for r in records)
    store.state.begin_run("run", "cfg", 0.0)
    store.state.commit_round(
        RoundRecord(run_id="run", round=1, parameters=records, committed_at=1.0)
    )
    last = store.state.last_round("run")
    assert last is not None
    loaded = store.load_tensors(last.parameters)
    for tensor, array in zip(loaded, arrays, strict=True):
        assert isinstance(tensor.payload, memoryview)
        assert tensor.payload.readonly
        assert tensor.blob is None, "the payload is in place, ready to decode"
        decoded = decode_tensor(tensor)
        assert decoded.dtype == array.dtype
        np.testing.assert_array_equal(decoded, array)
    assert [t.name for t in loaded] == ["w", "b"]


def test_tensors_that_travel_by_reference_are_not_copied(store: Store) -> None:
    (record,) = store.put_tensors(encode_tensors([np.ones(4, dtype=np.float32)]))
    by_ref = record.to_encoded()
    assert store.put_tensors([by_ref]) == (record,)
    missing = blob_ref(b"never uploaded")
    with pytest.raises(BlobNotFound, match=missing.hex):
        store.put_tensors([replace(by_ref, blob=missing)])
    lying = encode_tensors([np.zeros(4, dtype=np.float32)])[0]
    with pytest.raises(BlobDigestMismatch, match="names"):
        store.put_tensors([replace(lying, blob=record.blob)])


def test_gc_keeps_committed_rounds_and_what_the_engine_names(store: Store) -> None:
    (committed,) = store.put_tensors(encode_tensors([np.ones(3)]))
    (open_task,) = store.put_tensors(encode_tensors([np.zeros(3)]))
    (garbage,) = store.put_tensors(encode_tensors([np.full(3, 2.0)]))
    store.state.begin_run("run", "cfg", 0.0)
    store.state.commit_round(
        RoundRecord(run_id="run", round=1, parameters=(committed,), committed_at=1.0)
    )
    stats = store.gc(also_keep=[open_task.blob], max_upload_age_s=60)
    assert stats.blobs_removed == 1
    assert store.blobs.has(committed.blob)
    assert store.blobs.has(open_task.blob)
    assert not store.blobs.has(garbage.blob)
