"""kill -9 at random moments: the store always reopens at a fully committed round.

A child process (crash_worker.py) runs rounds in a loop, each with a chunked upload, blob
puts and a round commit, and is SIGKILLed after a seeded random delay, then restarted on
the same directory, 20 times. After each kill the parent opens the store and checks that
every committed round is whole and every complete-looking blob holds its bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from pollen.blob import blob_ref
from reference_server.store import RUNNING, Store

WORKER_PATH = Path(__file__).with_name("crash_worker.py")
KILLS = 20


def _load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_worker", WORKER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_and_kill(state_dir: Path, delay: float, env: dict[str, str]) -> int:
    """Start the worker, let it work for `delay` seconds, SIGKILL it; the round it began at."""
    child = subprocess.Popen(
        [sys.executable, str(WORKER_PATH), str(state_dir)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the worker did not start in time"
        line = child.stdout.readline().split()
        assert line[:1] == ["ready"], line
        time.sleep(delay)
        assert child.poll() is None, "the worker ended before it was killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return int(line[1])


def _check_blob_files(root: Path, verified: set[str]) -> None:
    """Every file named like a complete blob holds exactly the bytes of that name."""
    for path in sorted((root / "blobs").glob("*/*")):
        if path.name.startswith("."):
            assert path.name.endswith(".tmp"), path  # a put that was killed midway
            continue
        if path.name not in verified:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest == path.name, f"half-written or damaged blob {path}"
            verified.add(path.name)


def _check_store(state_dir: Path, worker: ModuleType, verified: set[str]) -> int:
    """Open the store after a kill and check it; the number of committed rounds."""
    with Store(state_dir) as store:
        db = store.state._db
        assert db is not None
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = store.state.load_run(worker.RUN)
        rounds = store.state.rounds(worker.RUN)
        if run is None:  # killed before the first begin_run committed
            assert rounds == []
            return 0
        assert run.status == RUNNING
        assert [r.round for r in rounds] == list(range(len(rounds))), "no gap, no duplicate"
        assert run.last_round == max(len(rounds) - 1, 0)
        for record in rounds:
            for tensor in (*record.parameters, *record.strategy_state.values()):
                assert store.blobs.has(tensor.blob), (record.round, tensor)
        last = store.state.last_round(worker.RUN)
        if last is not None:
            assert last == rounds[-1]
            payloads = [bytes(t.payload) for t in store.load_tensors(last.parameters)]
            expected = [worker.parameter(last.round, i) for i in range(len(payloads))]
            assert payloads == expected, f"round {last.round} does not hold its model"
            update = store.load_tensors([last.strategy_state["update"]])[0]
            assert bytes(update.payload) == worker.update(last.round)
            assert last.metrics == {"round": last.round}
        _check_blob_files(state_dir, verified)
        # The only upload that can be partial is the one of the round in progress, and it
        # holds a prefix of that update: never bytes the worker did not send.
        in_progress = worker.update(len(rounds))
        for part in (state_dir / "uploads").glob("*/*.part"):
            assert part.name == f"{blob_ref(in_progress).hex}.{len(in_progress)}.part", part
            held = part.read_bytes()
            assert held == in_progress[: len(held)]
        return len(rounds)


def test_kill_9_at_random_moments_never_leaves_a_partial_round(
    tmp_path: Path, child_env: Callable[[], dict[str, str]]
) -> None:
    worker = _load_worker()
    state_dir = tmp_path / "state"
    rng = random.Random(20240607)
    verified: set[str] = set()
    committed = 0
    resumed_at = []
    for _ in range(KILLS):
        started = _run_and_kill(state_dir, rng.uniform(0.0, 0.12), child_env())
        assert started == committed, "the worker resumes right after the last committed round"
        resumed_at.append(started)
        found = _check_store(state_dir, worker, verified)
        assert found >= committed, "a committed round was lost"
        committed = found
    # The kills landed while rounds were being made, not only before the first (loose
    # bounds: a fast machine commits about 15 rounds per run, a slow one far fewer).
    assert committed >= KILLS // 4, f"only {committed} rounds in {KILLS} runs"
    assert len(set(resumed_at)) > KILLS // 4
