"""The child process of test_crash.py: runs one run's rounds in a loop until it is killed.

Each round takes a client update through a chunked upload (resumed after a restart), puts
the new model's tensors and commits the round, the way the round engine does. Every byte
is a function of the round number, so the parent can check what it finds after a kill.
Usage: python crash_worker.py STATE_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from pollen.blob import blob_ref
from pollen.dtypes import Dtype
from pollen.tensors import EncodedTensor
from reference_server.store import RoundRecord, Store

RUN = "crash-run"
PARAMETER_SIZES = (60_000, 10_000, 8)
UPDATE_SIZE = 40_000
CHUNK = 4_096
OWNER = "node-1"
# Bounds the loop even if no kill ever comes.
MAX_ROUNDS = 5_000


def parameter(round: int, index: int) -> bytes:
    return np.random.default_rng([round, index]).bytes(PARAMETER_SIZES[index])


def update(round: int) -> bytes:
    return np.random.default_rng([round, 1000]).bytes(UPDATE_SIZE)


def _upload_update(store: Store, round: int) -> EncodedTensor:
    data = update(round)
    ref = blob_ref(data)
    upload = store.blobs.upload(OWNER, ref, max_blob_bytes=1 << 30)
    while upload.committed_size < ref.size:
        offset = upload.committed_size
        upload.append(offset, data[offset : offset + CHUNK])
    if not upload.complete:
        upload.finish()
    return EncodedTensor(dtype=Dtype.UINT8, shape=(ref.size,), codec="raw", payload=b"", blob=ref)


def main(state_dir: Path) -> None:
    with Store(state_dir) as store:
        store.state.begin_run(RUN, "config", time.time())
        last = store.state.last_round(RUN)
        round = 0 if last is None else last.round + 1
        print(f"ready {round}", flush=True)
        while round < MAX_ROUNDS:
            (update_record,) = store.put_tensors([_upload_update(store, round)])
            parameters = store.put_tensors(
                [
                    EncodedTensor(
                        dtype=Dtype.UINT8, shape=(size,), codec="raw", payload=parameter(round, i)
                    )
                    for i, size in enumerate(PARAMETER_SIZES)
                ]
            )
            store.state.commit_round(
                RoundRecord(
                    run_id=RUN,
                    round=round,
                    parameters=parameters,
                    strategy_state={"update": update_record},
                    metrics={"round": round},
                    history={"pid": 0},
                    committed_at=time.time(),
                )
            )
            round += 1


if __name__ == "__main__":
    main(Path(sys.argv[1]))
