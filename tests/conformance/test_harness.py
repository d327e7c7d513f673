"""The harness's parts without processes: the catalog, patterns, verdicts, reports, oracle."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conformance import coverage
from conformance.cases import Case, CaseError, KnownFailing, load_cases, matches, select
from conformance.cli import main as cli_main
from conformance.client_runner import (
    SUBMIT_REQUEST,
    CaseResult,
    Failure,
    duplicate_map_keys,
    validate,
)
from conformance.model import Oracle, make_array, make_value, same_value, stepped
from conformance.report import judge, junit_xml, text_summary
from pollen.dtypes import Dtype
from reference_client.conformance import ConformanceModel


def _case(name: str, level: str = "MUST") -> Case:
    return Case(name=name, role="client", title="", level=level, requirements=("PLN-FIT-001",))


def _result(name: str, outcome: str, level: str = "MUST") -> CaseResult:
    failures = (Failure(step="step 1", expected="x", actual="y"),) if outcome == "FAIL" else ()
    return CaseResult(case=_case(name, level), outcome=outcome, failures=failures)


# --- catalog -----------------------------------------------------------------------------


def test_the_client_catalog_loads_and_every_case_can_be_played() -> None:
    cases = load_cases("client")
    assert len(cases) >= 40
    assert sum(1 for c in cases if c.level == "MUST") >= 40
    for case in cases:
        validate(case)
    dtypes = {c.name.rsplit("/", 1)[1] for c in cases if c.name.startswith("fit/dtype/")}
    assert dtypes == {d.name.lower() for d in Dtype}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cases:\n  - {name: fit, level: MUST, requirements: [PLN-FIT-001]}", "path-like"),
        ("cases:\n  - {name: a/b, level: MAYBE, requirements: [PLN-FIT-001]}", "level"),
        ("cases:\n  - {name: a/b, level: MUST, requirements: [PLN-XYZ-999]}", "not in spec"),
        ("cases:\n  - {name: a/b, level: MUST, requirements: []}", "at least one"),
        ("cases:\n  - {name: a/b, level: MUST, requirements: [PLN-FIT-001], when: 1}", "unknown"),
    ],
)
def test_malformed_case_files_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "bad.yaml").write_text(text)
    with pytest.raises(CaseError, match=problem):
        load_cases("client", tmp_path)


def test_duplicate_case_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "client").mkdir()
    entry = "  - {name: a/b, level: MUST, requirements: [PLN-FIT-001]}\n"
    (tmp_path / "client" / "one.yaml").write_text("cases:\n" + entry)
    (tmp_path / "client" / "two.yaml").write_text("cases:\n" + entry)
    with pytest.raises(CaseError, match="duplicate"):
        load_cases("client", tmp_path)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("fit/*", "fit/shape", True),
        ("fit/*", "fit/shape/scalar", False),
        ("fit/**", "fit/shape/scalar", True),
        ("fit/**", "fit", True),
        ("**/app-error", "query/app-error", True),
        ("**/app-error", "fit/app-error/reported", False),
        ("fit/dtype/int*", "fit/dtype/int16", True),
        ("fit/dtype/int*", "fit/dtype/uint16", False),
        ("fit/exact/float32", "fit/exact/float32", True),
    ],
)
def test_patterns(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_select_keeps_matching_cases_only() -> None:
    cases = (_case("a/b"), _case("a/c/d"), _case("e/f"))
    assert [c.name for c in select(cases, ["a/**"])] == ["a/b", "a/c/d"]
    assert select(cases, []) == cases


# --- verdicts ----------------------------------------------------------------------------


def test_a_listed_failure_is_expected_and_the_run_passes() -> None:
    summary = judge([_result("a/b", "FAIL")], [KnownFailing(pattern="a/*", line=1)], strict=False)
    assert [v.outcome for v in summary.verdicts] == ["XFAIL"]
    assert summary.exit_status == 0


def test_a_listed_case_that_passes_fails_the_run() -> None:
    summary = judge([_result("a/b", "PASS")], [KnownFailing(pattern="a/b", line=1)], strict=False)
    assert [v.outcome for v in summary.verdicts] == ["XPASS"]
    assert summary.exit_status == 1


def test_an_entry_matching_nothing_fails_the_run() -> None:
    known = [KnownFailing(pattern="nothing/here", line=3)]
    summary = judge([_result("a/b", "PASS")], known, strict=False)
    assert summary.unmatched == tuple(known)
    assert summary.exit_status == 1
    assert "STALE" in text_summary(summary, mode="client", wall_s=1.0)


def test_should_failures_warn_unless_strict() -> None:
    results = [_result("a/b", "FAIL", level="SHOULD")]
    assert judge(results, [], strict=False).exit_status == 0
    assert judge(results, [], strict=False).verdicts[0].outcome == "WARN"
    assert judge(results, [], strict=True).exit_status == 1


def test_a_must_case_failing_only_should_requirements_warns() -> None:
    def failing(*requirements: str) -> CaseResult:
        failures = tuple(
            Failure(step="step 1", expected="x", actual="y", requirement=r) for r in requirements
        )
        return CaseResult(case=_case("a/b"), outcome="FAIL", failures=failures)

    # PLN-CTL-003 is a SHOULD (a timing recommendation), PLN-CTL-002 a MUST.
    assert judge([failing("PLN-CTL-003")], [], strict=False).verdicts[0].outcome == "WARN"
    assert judge([failing("PLN-CTL-003")], [], strict=True).verdicts[0].outcome == "FAIL"
    mixed = judge([failing("PLN-CTL-003", "PLN-CTL-002")], [], strict=False)
    assert mixed.verdicts[0].outcome == "FAIL"
    assert judge([failing("")], [], strict=False).verdicts[0].outcome == "FAIL"


def test_must_failures_fail_and_harness_errors_win() -> None:
    assert judge([_result("a/b", "FAIL")], [], strict=False).exit_status == 1
    both = [_result("a/b", "FAIL"), _result("a/c", "ERROR")]
    assert judge(both, [], strict=False).exit_status == 2


def test_junit_marks_failures_and_known_failures() -> None:
    results = [_result("a/b", "FAIL"), _result("a/c", "FAIL"), _result("d/e", "PASS")]
    summary = judge(results, [KnownFailing(pattern="a/c", line=1)], strict=False)
    root = ET.fromstring(junit_xml(summary, mode="client"))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["a/b"].find("failure") is not None
    assert cases["a/c"].find("skipped") is not None
    assert cases["d/e"].find("failure") is None
    suite = next(s for s in root.iter("testsuite") if s.get("name") == "a")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "1")


# --- the model ---------------------------------------------------------------------------


def test_stepped_wraps_integers_and_flips_booleans() -> None:
    assert stepped(np.array([127, -128], dtype=np.int8), 1).tolist() == [-128, -127]
    top = np.iinfo(np.uint64).max
    assert stepped(np.array([top], dtype=np.uint64), 2).tolist() == [1]
    assert stepped(np.array([True, False]), 3).tolist() == [False, True]
    assert stepped(np.array([True, False]), 2).tolist() == [True, False]


def test_oracle_and_python_model_agree_for_every_dtype() -> None:
    model = ConformanceModel()
    oracle = Oracle()
    arrays = [
        make_array({"dtype": d.name.lower(), "shape": [2, 3], "fill": "extremes"})
        if not d.is_float and d is not Dtype.BOOL
        else make_array({"dtype": d.name.lower(), "shape": [2, 3], "start": -3})
        for d in Dtype
    ]
    config = {"conformance.delta": 5, "echo.k": -0.0}
    got = model.fit(arrays, config)
    want = oracle.expect("fit", arrays, config)
    assert want.tensors is not None
    for a, b in zip(got.parameters, want.tensors, strict=True):
        assert a.dtype == b.dtype
        assert a.tobytes() == b.tobytes()
    assert got.metrics == {"echo.k": -0.0, "conformance.tensors": len(arrays)}
    evaluated = oracle.expect("evaluate", arrays, {})
    assert evaluated.loss == model.evaluate(arrays, {}).loss


def test_typed_values_keep_their_bits() -> None:
    nan = make_value({"double_bits": "7ff8000000000123"})
    assert isinstance(nan, float)
    assert math.isnan(nan)
    assert not same_value(nan, math.nan)
    assert same_value(nan, make_value({"double_bits": "7ff8000000000123"}))
    assert not same_value(-0.0, 0.0)
    assert not same_value(1, True)
    assert make_value({"bytes": "00ff"}) == b"\x00\xff"


# --- coverage and the command line -------------------------------------------------------


def test_every_must_requirement_is_covered_or_exempt() -> None:
    measured = coverage.measure()
    assert measured.problems == ()
    assert len(measured.covered & measured.musts) >= 100


def test_an_exemption_for_a_covered_requirement_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coverage, "read_exemptions", lambda: {"PLN-FIT-001": "old reason"})
    problems = coverage.measure().problems
    assert any("PLN-FIT-001: now covered" in p for p in problems)


def test_list_prints_every_case_with_its_requirements(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(load_cases("client"))
    line = next(x for x in out if x.startswith("lifecycle/shutdown "))
    assert "MUST" in line
    assert "PLN-CTL-005" in line


def test_duplicate_map_keys_are_found_on_the_wire() -> None:
    # PLN-VAL-009: protobuf parsers merge a repeated key, so the harness reads the bytes.
    from pollen._generated.pollen.v1 import federation_service_pb2

    request = federation_service_pb2.SubmitResultRequest(session_id="s")
    request.result.task_id = "t"
    request.result.fit.metrics["a"].int_value = 1
    request.result.fit.metrics["b"].int_value = 2
    raw = request.SerializeToString()
    assert duplicate_map_keys(raw, SUBMIT_REQUEST) == []
    again = federation_service_pb2.SubmitResultRequest()
    again.result.fit.metrics["a"].int_value = 3
    # Two occurrences of the singular `result` merge: key "a" is then in one map twice.
    assert duplicate_map_keys(raw + again.SerializeToString(), SUBMIT_REQUEST) == [
        "result.fit.metrics: key b'a' twice"
    ]


def test_the_scripted_server_sees_overlapping_exclusive_calls() -> None:
    # PLN-GEN-005: a SubmitResult sent while a PollTask is held is an overlap; a Heartbeat
    # alongside is not, and neither are calls one after the other.
    import asyncio
    import time

    import grpc

    from conformance.scripted_server import ScriptedServer
    from pollen._generated.pollen.v1 import federation_service_pb2 as fs

    async def scenario() -> list[str]:
        server = ScriptedServer(handshake={}, credentials=None, clock=time.monotonic)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                def call(rpc: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
                    return channel.unary_unary(f"/pollen.v1.FederationService/{rpc}")

                hello = fs.HandshakeRequest(node_id="n")
                hello.versions.add(major=1)
                reply = fs.HandshakeResponse.FromString(
                    await call("Handshake")(hello.SerializeToString(), timeout=5)
                )
                session = reply.session_id
                poll = fs.PollTaskRequest(session_id=session, wait_ms=800).SerializeToString()
                beat = fs.HeartbeatRequest(session_id=session).SerializeToString()
                await call("PollTask")(poll, timeout=5)
                held = asyncio.ensure_future(call("PollTask")(poll, timeout=5))
                await asyncio.sleep(0.3)
                await call("Heartbeat")(beat, timeout=5)
                assert server.overlaps == []
                submit = fs.SubmitResultRequest(session_id=session)
                submit.result.task_id = "t"
                await call("SubmitResult")(submit.SerializeToString(), timeout=5)
                await held
        finally:
            await server.stop()
        return server.overlaps

    overlaps = asyncio.run(scenario())
    assert len(overlaps) == 1, overlaps
    assert overlaps[0].startswith("SubmitResult")
    assert "while PollTask in flight" in overlaps[0]
