"""Verdicts and reports: known-failing lists, report.json, junit.xml and the text summary.

Outcomes of a case: PASS; FAIL (a MUST case, or a SHOULD case under --strict); WARN (a
SHOULD or MAY case that failed without --strict, or a MUST case whose every failure cites a
SHOULD or MAY requirement); SKIP (a capability the program does not
advertise); ERROR (the harness could not play the case); XFAIL (failed, and listed as known
failing); XPASS (listed, but passed: the list is stale, which fails the run).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.cases import (
    LEVELS,
    REQUIREMENTS,
    KnownFailing,
    matches,
    requirement_texts,
)
from conformance.client_runner import CaseResult

REPORT_SCHEMA = "pollen.conformance.report/1"
EXIT_PASS, EXIT_FAIL, EXIT_HARNESS = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class Verdict:
    result: CaseResult
    outcome: str
    known_failing: str = ""


@dataclass(frozen=True, kw_only=True)
class Summary:
    verdicts: tuple[Verdict, ...]
    unmatched: tuple[KnownFailing, ...]
    strict: bool

    @property
    def counts(self) -> Counter[str]:
        return Counter(v.outcome for v in self.verdicts)

    @property
    def exit_status(self) -> int:
        counts = self.counts
        if counts["ERROR"]:
            return EXIT_HARNESS
        if counts["FAIL"] or counts["XPASS"] or self.unmatched:
            return EXIT_FAIL
        return EXIT_PASS

    @property
    def result(self) -> str:
        return {EXIT_PASS: "PASSED", EXIT_FAIL: "FAILED", EXIT_HARNESS: "ERROR"}[self.exit_status]


def judge(results: Sequence[CaseResult], known: Sequence[KnownFailing], *, strict: bool) -> Summary:
    """Apply levels, --strict and the known-failing list to raw case results."""
    used: set[int] = set()
    verdicts: list[Verdict] = []
    texts = requirement_texts() if REQUIREMENTS.exists() else {}
    levels = {rid: entry["level"] for rid, entry in texts.items()}
    for result in results:
        entry = next((k for k in known if matches(k.pattern, result.case.name)), None)
        if entry is not None:
            used.add(id(entry))
        outcome = result.outcome
        if outcome == "FAIL" and _severity(result, levels) != "MUST" and not strict:
            outcome = "WARN"
        if entry is not None:
            if outcome in ("FAIL", "WARN"):
                outcome = "XFAIL"
            elif outcome == "PASS":
                outcome = "XPASS"
        verdicts.append(
            Verdict(result=result, outcome=outcome, known_failing=entry.pattern if entry else "")
        )
    unmatched = tuple(k for k in known if id(k) not in used)
    return Summary(verdicts=tuple(verdicts), unmatched=unmatched, strict=strict)


def _severity(result: CaseResult, levels: Mapping[str, str]) -> str:
    """A failure weighs what the requirement it breaks weighs: a MUST case whose failures
    all cite SHOULD or MAY requirements (a timing recommendation, say) only warns."""
    cited = [f.requirement for f in result.failures]
    if cited and all(levels.get(r) in ("SHOULD", "MAY") for r in cited):
        return "SHOULD"
    return result.case.level


def _case_json(verdict: Verdict, texts: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    result = verdict.result
    case = result.case
    return {
        "name": case.name,
        "title": case.title,
        "level": case.level,
        "requirements": list(case.requirements),
        "requirement_text": {r: texts[r]["text"] for r in case.requirements if r in texts},
        "outcome": verdict.outcome,
        "known_failing_match": verdict.known_failing or None,
        "duration_ms": round(result.duration_s * 1000),
        "note": result.note,
        "failures": [
            {
                "step": f.step,
                "requirement": f.requirement,
                "expected": f.expected,
                "actual": f.actual,
            }
            for f in result.failures
        ],
        "program": {"exit_status": result.exit_status, "output_tail": result.output_tail},
        "transcript": [e.to_json() for e in result.transcript],
    }


def report_json(
    summary: Summary,
    *,
    mode: str,
    command: Sequence[str],
    texts: Mapping[str, Mapping[str, str]],
    wall_s: float,
) -> dict[str, Any]:
    by_level: dict[str, dict[str, int]] = {}
    for level in LEVELS:
        counts = Counter(v.outcome for v in summary.verdicts if v.result.case.level == level)
        by_level[level] = {"total": sum(counts.values()), **dict(sorted(counts.items()))}
    covered = sorted({r for v in summary.verdicts for r in v.result.case.requirements})
    failed = sorted(
        {
            f.requirement or r
            for v in summary.verdicts
            if v.outcome in ("FAIL", "WARN", "XFAIL")
            for f in v.result.failures
            for r in v.result.case.requirements[:1]
        }
    )
    return {
        "schema": REPORT_SCHEMA,
        "suite": {"name": "pollen-conformance", "mode": mode, "protocol": "1.0"},
        "program": {"command": list(command)},
        "options": {"strict": summary.strict},
        "summary": {
            "result": summary.result,
            "exit_status": summary.exit_status,
            "wall_s": round(wall_s, 2),
            "total": len(summary.verdicts),
            **dict(sorted(summary.counts.items())),
            "by_level": by_level,
            "requirements": {"covered": len(covered), "failed": failed},
            "known_failing_unmatched": [k.pattern for k in summary.unmatched],
        },
        "cases": [_case_json(v, texts) for v in summary.verdicts],
    }


def junit_xml(summary: Summary, *, mode: str) -> bytes:
    suites = ET.Element("testsuites", name=f"pollen-conformance-{mode}")
    areas: dict[str, ET.Element] = {}
    for verdict in summary.verdicts:
        case = verdict.result.case
        area = case.name.split("/")[0]
        suite = areas.get(area)
        if suite is None:
            suite = areas[area] = ET.SubElement(suites, "testsuite", name=area)
        element = ET.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{mode}.{area}",
            name=case.name,
            time=f"{verdict.result.duration_s:.3f}",
        )
        detail = "\n".join(
            f"{f.step}: expected {f.expected}; got {f.actual} [{f.requirement}]"
            for f in verdict.result.failures
        )
        if verdict.outcome in ("FAIL", "XPASS"):
            message = (
                "listed as known failing, but passed"
                if verdict.outcome == "XPASS"
                else (verdict.result.failures[0].expected if verdict.result.failures else "failed")
            )
            ET.SubElement(element, "failure", type=case.level, message=message).text = detail
        elif verdict.outcome == "ERROR":
            ET.SubElement(element, "error", message=verdict.result.note).text = detail
        elif verdict.outcome in ("SKIP", "XFAIL"):
            why = verdict.result.note or f"known failing: {verdict.known_failing}"
            ET.SubElement(element, "skipped", message=why)
        out = f"level {case.level}; requirements {', '.join(case.requirements)}"
        if verdict.outcome == "WARN":
            out += f"\nWARNING {case.level} case failed (--strict makes it fail)\n{detail}"
        ET.SubElement(element, "system-out").text = out
    for suite in areas.values():
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
        suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    document: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return document


def text_summary(summary: Summary, *, mode: str, wall_s: float) -> str:
    lines = [f"pollen conformance {mode}: {len(summary.verdicts)} cases in {wall_s:.1f} s"]
    for verdict in summary.verdicts:
        if verdict.outcome in ("PASS", "SKIP"):
            continue
        case = verdict.result.case
        lines.append(
            f"{verdict.outcome:<6} {case.name}  [{case.level} {', '.join(case.requirements)}]"
        )
        if verdict.outcome == "XPASS":
            lines.append(f"       listed as known failing ({verdict.known_failing}) but passed")
        if verdict.result.note and verdict.outcome == "ERROR":
            lines.append(f"       {verdict.result.note}")
        for failure in verdict.result.failures[:5]:
            tag = f" [{failure.requirement}]" if failure.requirement else ""
            lines.append(
                f"       {failure.step}: expected {failure.expected}; got {failure.actual}{tag}"
            )
    for level in LEVELS:
        counts = Counter(v.outcome for v in summary.verdicts if v.result.case.level == level)
        if counts:
            detail = ", ".join(f"{n} {o.lower()}" for o, n in sorted(counts.items()))
            lines.append(f"{level:<6} {sum(counts.values())} cases: {detail}")
    lines.extend(
        f"STALE  known-failing entry {entry.pattern!r} (line {entry.line}) matches no case"
        for entry in summary.unmatched
    )
    lines.append(f"RESULT: {summary.result}")
    return "\n".join(lines) + "\n"


def write_reports(
    folder: Path,
    summary: Summary,
    *,
    mode: str,
    command: Sequence[str],
    texts: Mapping[str, Mapping[str, str]],
    wall_s: float,
) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    document = report_json(summary, mode=mode, command=command, texts=texts, wall_s=wall_s)
    (folder / "report.json").write_text(json.dumps(document, indent=1, default=repr) + "\n")
    (folder / "junit.xml").write_bytes(junit_xml(summary, mode=mode))
    text = text_summary(summary, mode=mode, wall_s=wall_s)
    (folder / "summary.txt").write_text(text)
    return text
