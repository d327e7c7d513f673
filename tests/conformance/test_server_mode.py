"""Server mode checks itself against the reference server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KNOWN = Path(__file__).resolve().parent / "reference_server_known_failing.txt"


def test_the_reference_server_passes_every_case_but_its_listed_bugs(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "pollen_cli", "conformance", "server",
            "--report-dir", str(tmp_path), "--known-failing", str(KNOWN),
            "--", sys.executable, "-m", "reference_server.conformance",
        ],
        cwd=ROOT, capture_output=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    report = json.loads((tmp_path / "report.json").read_text())
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    listed = {line.split("#")[0].strip() for line in KNOWN.read_text().splitlines()} - {""}
    assert {n for n, o in outcomes.items() if o == "XFAIL"} == listed
    assert {o for n, o in outcomes.items() if n not in listed} == {"PASS"}
    assert len(outcomes) >= 6
