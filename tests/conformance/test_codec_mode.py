"""Codec mode checks itself: the Python core answers every vector, a broken encoder fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conformance.codec_runner import vectors

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).resolve().parent / "broken_clients.py"


def _run(tmp_path: Path, *command: str, run: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    args = [sys.executable, "-m", "pollen_cli", "conformance", "codec"]
    args += ["--report-dir", str(tmp_path)]
    for pattern in run:
        args += ["--run", pattern]
    done = subprocess.run(
        [*args, "--", *command],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return done.returncode, json.loads((tmp_path / "report.json").read_text())


def test_the_python_core_passes_every_vector(tmp_path: Path) -> None:
    status, report = _run(tmp_path, sys.executable, "-m", "reference_client.conformance_codec")
    assert status == 0
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    assert len(outcomes) == sum(1 for _ in vectors())
    assert set(outcomes.values()) == {"PASS"}


def test_a_big_endian_raw_encoder_fails_exactly_the_vectors_it_changes(tmp_path: Path) -> None:
    status, report = _run(
        tmp_path,
        sys.executable,
        str(BROKEN),
        "big-endian-tensors",
        "codec",
        run=("codec/tensorencode/raw/*", "codec/tensordecode/raw/*"),
    )
    assert status == 1
    failing = {c["name"] for c in report["cases"] if c["outcome"] == "FAIL"}
    changed: set[str] = set()
    for vector in vectors():
        test, group = vector.test, vector.group
        if group["type"] != "TensorEncode" or group["codec"] != "raw":
            continue
        data = bytes.fromhex(vector.request["inputHex"])
        width = {"int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2, "int32": 4, "uint32": 4}
        width |= {"float32": 4, "int64": 8, "uint64": 8, "float64": 8}
        size = width.get(test["dtype"], 1)
        swapped = b"".join(data[i : i + size][::-1] for i in range(0, len(data), size))
        if swapped != data:
            changed.add(vector.case.name)
    assert changed
    assert failing == changed
