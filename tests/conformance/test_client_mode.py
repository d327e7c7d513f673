"""The suite checks itself: the reference client passes, broken clients fail what they should.

All runs start together (each a `pollen conformance client` process with its own cases) so
that the self-check costs about as long as its longest run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).resolve().parent / "broken_clients.py"
REFERENCE = (sys.executable, "-m", "reference_client.conformance")


@dataclass(frozen=True, kw_only=True)
class Run:
    name: str
    command: tuple[str, ...]
    patterns: tuple[str, ...]
    strict: bool = False


RUNS = (
    Run(name="reference", command=REFERENCE, patterns=()),
    Run(
        name="big-endian-tensors",
        command=(sys.executable, str(BROKEN), "big-endian-tensors"),
        patterns=(
            "fit/dtype/bool",
            "fit/dtype/uint8",
            "fit/dtype/int16",
            "fit/dtype/bfloat16",
            "fit/dtype/float64",
            "evaluate/exact",
            "get-parameters/initial",
        ),
    ),
    Run(
        name="ignore-deadlines",
        command=(sys.executable, str(BROKEN), "ignore-deadlines"),
        patterns=("deadline/**",),
        strict=True,
    ),
    Run(
        name="retry-everything",
        command=(sys.executable, str(BROKEN), "retry-everything"),
        patterns=(
            "handshake/version/major-unsupported",
            "errors/non-retryable/submit",
            "errors/session-unknown",
        ),
    ),
    Run(
        name="no-backoff",
        command=(sys.executable, str(BROKEN), "no-backoff"),
        patterns=("errors/retryable/**",),
    ),
    Run(
        name="cancelled-fatal",
        command=(sys.executable, str(BROKEN), "cancelled-fatal"),
        patterns=("errors/retryable/bare-*",),
    ),
    Run(
        name="rerun-redelivered",
        command=(sys.executable, str(BROKEN), "rerun-redelivered"),
        patterns=("lifecycle/redelivered-task",),
        strict=True,
    ),
    Run(
        name="exits-at-once",
        command=(sys.executable, "-c", "import sys; sys.exit(3)"),
        patterns=("fit/dtype/float32", "fit/dtype/int8"),
    ),
    Run(
        name="backoff-carried-over",
        command=(sys.executable, str(BROKEN), "backoff-carried-over"),
        patterns=("lifecycle/reconnect-fresh-backoff",),
    ),
)


@dataclass(frozen=True, kw_only=True)
class Finished:
    status: int
    output: str
    report: dict[str, Any]

    def outcomes(self) -> dict[str, str]:
        return {c["name"]: c["outcome"] for c in self.report["cases"]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Finished]]:
    base = tmp_path_factory.mktemp("conformance")
    empty = base / "known-failing.txt"
    empty.write_text("# nothing is known to fail\n")
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for run in RUNS:
            folder = base / run.name
            args = [sys.executable, "-m", "pollen_cli", "conformance", "client"]
            args += ["--report-dir", str(folder), "--known-failing", str(empty), "--jobs", "3"]
            args += ["--strict"] if run.strict else []
            for pattern in run.patterns:
                args += ["--run", pattern]
            args += ["--", *run.command]
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
            )  # fmt: skip
            started[run.name] = (proc, folder)
        results: dict[str, Finished] = {}
        for name, (proc, folder) in started.items():
            output, _ = proc.communicate(timeout=300)
            report_path = folder / "report.json"
            report = json.loads(report_path.read_text()) if report_path.exists() else {}
            results[name] = Finished(
                status=proc.returncode, output=output.decode(errors="replace"), report=report
            )
        yield results
    finally:
        for proc, _ in started.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


def test_the_reference_client_passes_every_must_and_should_case(
    finished: dict[str, Finished],
) -> None:
    run = finished["reference"]
    assert run.status == 0, run.output
    not_passed = {n: o for n, o in run.outcomes().items() if o not in ("PASS",)}
    assert not not_passed, run.output
    summary = run.report["summary"]
    assert summary["by_level"]["MUST"]["total"] >= 40
    assert summary["by_level"]["MUST"]["PASS"] == summary["by_level"]["MUST"]["total"]
    assert summary["by_level"]["SHOULD"].get("PASS", 0) == summary["by_level"]["SHOULD"]["total"]


def test_reports_carry_transcripts_and_junit(
    finished: dict[str, Finished],
) -> None:
    report = finished["reference"].report
    assert report["schema"] == "pollen.conformance.report/1"
    case = next(c for c in report["cases"] if c["name"] == "fit/exact/float32")
    rpcs = [e["rpc"] for e in case["transcript"] if e["dir"] == "c>s"]
    assert rpcs[0] == "Handshake"
    assert "SubmitResult" in rpcs
    assert case["requirement_text"]["PLN-CNF-013"].startswith("A fit handler MUST")


def _failing(run: Finished) -> set[str]:
    return {n for n, o in run.outcomes().items() if o == "FAIL"}


def test_big_endian_tensors_fail_every_multibyte_result(finished: dict[str, Finished]) -> None:
    run = finished["big-endian-tensors"]
    assert run.status == 1, run.output
    assert _failing(run) == {
        "fit/dtype/int16",
        "fit/dtype/bfloat16",
        "fit/dtype/float64",
        "get-parameters/initial",
    }
    assert run.outcomes()["fit/dtype/uint8"] == "PASS"
    assert run.outcomes()["evaluate/exact"] == "PASS"


def test_ignoring_deadlines_fails_the_deadline_case(finished: dict[str, Finished]) -> None:
    run = finished["ignore-deadlines"]
    assert run.status == 1, run.output
    assert _failing(run) == {"deadline/abandon"}
    case = next(c for c in run.report["cases"] if c["name"] == "deadline/abandon")
    assert {f["requirement"] for f in case["failures"]} == {"PLN-TSK-018"}


def test_retrying_non_retryable_errors_fails(finished: dict[str, Finished]) -> None:
    run = finished["retry-everything"]
    assert run.status == 1, run.output
    assert _failing(run) == {"handshake/version/major-unsupported", "errors/non-retryable/submit"}


def test_retrying_without_backoff_fails_the_timing_cases(finished: dict[str, Finished]) -> None:
    run = finished["no-backoff"]
    assert run.status == 1, run.output
    assert _failing(run) == {
        "errors/retryable/backoff",
        "errors/retryable/bare-status",
        "errors/retryable/bare-cancelled",
    }
    case = next(c for c in run.report["cases"] if c["name"] == "errors/retryable/backoff")
    assert "PLN-RTY-007" in {f["requirement"] for f in case["failures"]}


def test_rerunning_a_redelivered_task_fails_its_case(finished: dict[str, Finished]) -> None:
    # A SHOULD case (the client may have discarded the acknowledged result), run --strict.
    run = finished["rerun-redelivered"]
    assert run.status == 1, run.output
    assert run.outcomes() == {"lifecycle/redelivered-task": "FAIL"}
    case = run.report["cases"][0]
    assert {f["requirement"] for f in case["failures"]} == {"PLN-TSK-015"}


def test_a_program_that_exits_before_its_handshake_fails_at_once(
    finished: dict[str, Finished],
) -> None:
    run = finished["exits-at-once"]
    assert run.status == 1, run.output
    assert _failing(run) == {"fit/dtype/float32", "fit/dtype/int8"}
    for case in run.report["cases"]:
        (failure,) = case["failures"]
        assert "exited with status 3" in failure["actual"]
        assert case["duration_ms"] < 10_000  # not the 20 s start timeout


def test_a_backoff_that_goes_on_after_a_reconnect_fails(finished: dict[str, Finished]) -> None:
    run = finished["backoff-carried-over"]
    assert run.status == 1, run.output
    assert _failing(run) == {"lifecycle/reconnect-fresh-backoff"}
    case = run.report["cases"][0]
    assert {f["requirement"] for f in case["failures"]} == {"PLN-CTL-004"}


def test_a_fatal_bare_cancelled_fails_the_cancelled_case(finished: dict[str, Finished]) -> None:
    run = finished["cancelled-fatal"]
    assert run.status == 1, run.output
    assert _failing(run) == {"errors/retryable/bare-cancelled"}
