"""Tests of scripts/spec_tool.py: extraction, lint, rendering, and the real spec's freshness."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import spec_tool  # noqa: E402


def _parse(text: str, name: str = "x.md") -> spec_tool.Extraction:
    return spec_tool.parse_spec({name: text})


# --- extraction ----------------------------------------------------------------------------

LEVELS_SPEC = """\
# Title

## Things to do

[PLN-ABC-001] A client MUST send **bold** `code_name` and [a link](other.md).
[PLN-ABC-002] A server SHOULD NOT wait. [PLN-ABC-003] It is OPTIONAL to log.

- [PLN-ABC-004] A peer SHALL NOT crash.
- [PLN-ABC-005] Caching is NOT RECOMMENDED.

### More

[PLN-ABD-001] A field is REQUIRED. [PLN-ABD-002] A peer MAY retry, but it MUST wait first.
[PLN-ABD-003] A peer SHOULD log. [PLN-ABD-004] Servers SHALL answer.
[PLN-ABD-005] A reply is RECOMMENDED. [PLN-ABD-006] Peers MUST NOT loop.
"""


def test_extracts_ids_levels_text_and_sections() -> None:
    result = _parse(LEVELS_SPEC)
    assert result.problems == []
    by_id = {r.id: r for r in result.requirements}
    assert [r.id for r in result.requirements] == sorted(by_id)
    assert {k: r.level for k, r in by_id.items()} == {
        "PLN-ABC-001": "MUST",
        "PLN-ABC-002": "SHOULD",
        "PLN-ABC-003": "MAY",
        "PLN-ABC-004": "MUST",
        "PLN-ABC-005": "SHOULD",
        "PLN-ABD-001": "MUST",
        "PLN-ABD-002": "MAY",  # the first key word decides
        "PLN-ABD-003": "SHOULD",
        "PLN-ABD-004": "MUST",
        "PLN-ABD-005": "SHOULD",
        "PLN-ABD-006": "MUST",
    }
    assert by_id["PLN-ABC-001"].text == "A client MUST send bold code_name and a link."
    assert by_id["PLN-ABC-002"].text == "A server SHOULD NOT wait."
    assert by_id["PLN-ABC-001"].section == "x.md > Things to do"
    assert by_id["PLN-ABD-001"].section == "x.md > More"


def test_colon_sentence_takes_in_the_following_list() -> None:
    text = (
        "[PLN-ABC-001] A server MUST check, in order:\n\n"
        "1. the `session_id`;\n2. the task,\n   which spans two lines.\n\n"
        "Afterwards, prose.\n\n- an unrelated item\n"
    )
    result = _parse(text)
    assert result.problems == []
    (req,) = result.requirements
    assert req.text == (
        "A server MUST check, in order: (1) the session_id; (2) the task, which spans two lines."
    )


def test_code_fences_code_spans_and_lower_case_are_not_requirements() -> None:
    text = (
        "Words like `MUST` and `[PLN-ABC-001]` in code are examples.\n\n"
        "```\nA client MUST do nothing here.\n```\n\n"
        "A client must, should and may do things in lower case.\n\n"
        "<!-- BEGIN GENERATED: errors -->\n| MUST | inside |\n<!-- END GENERATED: errors -->\n"
    )
    result = _parse(text)
    assert result.problems == []
    assert result.requirements == []


def test_sentences_split_at_sentence_ends_only() -> None:
    text = "Version 1.6 of `a. B` stays. [PLN-ABC-001] Next (see x). `Code` starts? Yes!"
    assert spec_tool.split_sentences(text) == [
        "Version 1.6 of `a. B` stays.",
        "[PLN-ABC-001] Next (see x).",
        "`Code` starts?",
        "Yes!",
    ]


def test_requirements_json_is_sorted_and_deterministic() -> None:
    reqs = _parse(LEVELS_SPEC).requirements
    first = spec_tool.requirements_json(list(reversed(reqs)))
    assert first == spec_tool.requirements_json(reqs)
    data = json.loads(first)
    assert data["version"] == 1
    assert [r["id"] for r in data["requirements"]] == sorted(r.id for r in reqs)
    assert set(data["requirements"][0]) == {"id", "level", "text", "section"}
    assert first.endswith("}\n")


# --- lint ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A client MUST do x.", "has no requirement id"),
        ("| `a` | A peer MUST do x |", "has no requirement id"),
        ("## Peers MAY do this", "has no requirement id"),
        ("[PLN-AB-01] A client MUST do x.", "malformed requirement id [PLN-AB-01]"),
        ("[PLN-abc-001] A client MUST do x.", "malformed requirement id"),
        ("[PLN-ABC-001] A client does x.", "PLN-ABC-001] is on a sentence without a key word"),
        ("A client [PLN-ABC-001] MUST do x.", "does not start its sentence"),
        ("[PLN-ABC-001] [PLN-ABC-002] A client MUST do x.", "several ids"),
        ("[PLN-ABC-001] A client MUST see PLN-ABC-009.", "unknown requirement PLN-ABC-009"),
    ],
)
def test_lint_reports_each_problem(text: str, message: str) -> None:
    problems = _parse(f"# T\n\n{text}\n").problems
    assert len(problems) == 1, problems
    assert message in problems[0]
    assert problems[0].startswith("x.md:3")


def test_lint_reports_duplicate_ids_across_files() -> None:
    result = spec_tool.parse_spec(
        {
            "a.md": "# A\n\n[PLN-ABC-001] A client MUST do x.\n",
            "b.md": "# B\n\n[PLN-ABC-001] A server MUST do y.\n",
        }
    )
    assert result.problems == ["duplicate requirement id PLN-ABC-001 in a.md > A and b.md > B"]


# --- rendering -----------------------------------------------------------------------------


def test_render_fills_regions_and_is_idempotent() -> None:
    blocks = {"errors": "| a | b |\n|---|---|\n| 1 | 2 |"}
    text = (
        "Intro.\n\n<!-- BEGIN GENERATED: errors -->\nstale\n<!-- END GENERATED: errors -->\nEnd.\n"
    )
    once, used, problems = spec_tool.render_text(text, blocks)
    assert (used, problems) == (["errors"], [])
    assert "stale" not in once
    assert "<!-- BEGIN GENERATED: errors -->\n\n| a | b |" in once
    assert "| 1 | 2 |\n\n<!-- END GENERATED: errors -->\nEnd.\n" in once
    assert spec_tool.render_text(once, blocks)[0] == once


def test_render_reports_unknown_unclosed_and_normative_blocks() -> None:
    _, _, problems = spec_tool.render_text(
        "<!-- BEGIN GENERATED: nope -->\n<!-- END GENERATED: nope -->\n", {}
    )
    assert problems == ["unknown generated block 'nope'"]
    _, _, problems = spec_tool.render_text("<!-- BEGIN GENERATED: errors -->\n", {"errors": "x"})
    assert problems == ["generated block 'errors' has no END marker"]
    _, _, problems = spec_tool.render_text(
        "<!-- BEGIN GENERATED: errors -->\n<!-- END GENERATED: errors -->\n",
        {"errors": "A peer MUST retry."},
    )
    assert problems == ["generated block 'errors' holds the key word MUST"]


def _real_blocks() -> dict[str, str]:
    return spec_tool.build_blocks(
        (ROOT / "spec" / "errors.yaml").read_text("utf-8"),
        (ROOT / "spec" / "state_machines.yaml").read_text("utf-8"),
        (ROOT / "proto" / "pollen" / "v1" / "error.proto").read_text("utf-8"),
    )


def test_blocks_render_the_yaml_tables() -> None:
    blocks = _real_blocks()
    assert set(blocks) == {
        "errors",
        "bare-status-retry",
        "task-submit-replies",
        "state-machine:client_session",
        "state-machine:server_round",
        "state-machine:task",
    }
    assert (
        "| `SESSION_UNKNOWN` | 5 | `NOT_FOUND` | `after-handshake` | server |" in blocks["errors"]
    )
    assert "| `APP_ERROR` | 23 | none (task failure only) | `no` | client |" in blocks["errors"]
    assert blocks["bare-status-retry"].endswith("| any other status | `no` |")
    assert "| `cancelled` | `STALE_ROUND` |" in blocks["task-submit-replies"]
    session = blocks["state-machine:client_session"]
    assert "| `disconnected` (initial) |" in session
    assert "| `closed` (terminal) |" in session
    assert "| `handshaking` | `handshake_rejected` | `closed` |" in session
    assert "| `expired` (terminal) | The deadline" in blocks["state-machine:task"]


def test_error_table_is_checked_against_the_proto_enum() -> None:
    errors = (ROOT / "spec" / "errors.yaml").read_text("utf-8")
    proto = "ERROR_CODE_UNSPECIFIED = 0;\nERROR_CODE_INTERNAL = 1;\nERROR_CODE_NEW = 99;\n"
    problems = spec_tool.table_problems(errors, proto)
    assert "error code NEW is in error.proto but not in errors.yaml" in problems
    assert "error code APP_ERROR is in errors.yaml but not in error.proto" in problems
    assert "error code INTERNAL is in errors.yaml but not in error.proto" not in problems


# --- the driver on a scratch tree and on the real spec ------------------------------------


def _scratch_root(tmp_path: Path) -> Path:
    (tmp_path / "spec").mkdir()
    (tmp_path / "proto" / "pollen" / "v1").mkdir(parents=True)
    for name in ("errors.yaml", "state_machines.yaml"):
        shutil.copy(ROOT / "spec" / name, tmp_path / "spec" / name)
    shutil.copy(
        ROOT / "proto" / "pollen" / "v1" / "error.proto",
        tmp_path / "proto" / "pollen" / "v1" / "error.proto",
    )
    markers = "\n".join(
        f"<!-- BEGIN GENERATED: {n} -->\n<!-- END GENERATED: {n} -->\n" for n in _real_blocks()
    )
    (tmp_path / "spec" / "a.md").write_text(
        f"# A\n\n[PLN-ABC-001] A client MUST do x.\n\n{markers}", "utf-8"
    )
    return tmp_path


def test_run_writes_then_checks_clean(tmp_path: Path) -> None:
    root = _scratch_root(tmp_path)
    stale = spec_tool.run(root, check=True)
    assert "a.md: generated tables are stale" in stale
    assert "requirements.json is stale" in stale
    assert not (root / "spec" / "requirements.json").exists()

    assert spec_tool.run(root, check=False) == []
    assert spec_tool.run(root, check=True) == []
    assert spec_tool.main(["--check", "--root", str(root)]) == 0
    data = json.loads((root / "spec" / "requirements.json").read_text("utf-8"))
    assert data["requirements"] == [
        {"id": "PLN-ABC-001", "level": "MUST", "text": "A client MUST do x.", "section": "a.md > A"}
    ]

    page = root / "spec" / "a.md"
    page.write_text(page.read_text("utf-8").replace("`NOT_FOUND`", "`OK`", 1), "utf-8")
    assert spec_tool.run(root, check=True) == ["a.md: generated tables are stale"]
    assert spec_tool.main(["--check", "--root", str(root)]) == 1


def test_run_reports_missing_blocks_and_lint_problems(tmp_path: Path) -> None:
    root = _scratch_root(tmp_path)
    (root / "spec" / "a.md").write_text("# A\n\nA client MUST do x.\n", "utf-8")
    problems = spec_tool.run(root, check=False)
    assert "generated block 'errors' appears 0 times" in problems
    assert any("has no requirement id" in p for p in problems)
    assert spec_tool.main(["--root", str(root)]) == 1


def test_the_real_spec_is_fresh_and_lint_clean() -> None:
    assert spec_tool.run(ROOT, check=True) == []


def test_the_real_requirements_are_well_formed() -> None:
    data = json.loads((ROOT / "spec" / "requirements.json").read_text("utf-8"))
    reqs = data["requirements"]
    assert 150 <= len(reqs) <= 400
    assert len({r["id"] for r in reqs}) == len(reqs)
    assert {r["level"] for r in reqs} == {"MUST", "SHOULD", "MAY"}
    for req in reqs:
        words = [word for word, level in spec_tool.LEVELS.items() if level == req["level"]]
        assert any(word in req["text"] for word in words), req
        assert req["id"] not in req["text"]
        assert req["section"].split(" > ")[0].endswith(".md")
