"""Render, lint and extract the Pollen specification under spec/.

    python scripts/spec_tool.py          # render the generated tables, write requirements.json
    python scripts/spec_tool.py --check  # write nothing; exit 1 if anything is stale or wrong

Render: the text between `<!-- BEGIN GENERATED: NAME -->` and `<!-- END GENERATED: NAME -->`
in spec/*.md is rebuilt from spec/errors.yaml, spec/state_machines.yaml and the ErrorCode
numbers in proto/pollen/v1/error.proto. NAME is `errors`, `bare-status-retry`,
`task-submit-replies` or `state-machine:MACHINE`; each appears exactly once in the spec.

Lint: every sentence holding an RFC 2119 key word in capitals starts with exactly one
requirement id `[PLN-AREA-NNN]`; ids are well formed and unique; an id always comes with a
key word. Code (fenced blocks and inline spans) is not prose, and generated tables may hold
no key word at all.

Extract: spec/requirements.json lists every requirement (id, level, text, section), sorted by
id. The level is the sentence's first key word, folded to MUST, SHOULD or MAY. A sentence
that ends with a colon takes in the list items that follow it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

_KEYWORD = re.compile(
    r"\b(NOT RECOMMENDED|MUST NOT|SHALL NOT|SHOULD NOT|MUST|REQUIRED|SHALL|SHOULD"
    r"|RECOMMENDED|MAY|OPTIONAL)\b"
)
LEVELS = {
    "MUST": "MUST",
    "MUST NOT": "MUST",
    "REQUIRED": "MUST",
    "SHALL": "MUST",
    "SHALL NOT": "MUST",
    "SHOULD": "SHOULD",
    "SHOULD NOT": "SHOULD",
    "RECOMMENDED": "SHOULD",
    "NOT RECOMMENDED": "SHOULD",
    "MAY": "MAY",
    "OPTIONAL": "MAY",
}
_ID = re.compile(r"\[PLN-[A-Z]{2,4}-[0-9]{3}\]")
_ANY_ID = re.compile(r"\[PLN-[^\]\s]*\]")
_REFERENCE = re.compile(r"(?<!\[)\bPLN-[A-Z]{2,4}-[0-9]{3}\b(?!\])")
_CODE = re.compile(r"(`+)(.+?)\1")
_SENTENCE_END = re.compile(r"[.!?][)\]\"'*_`]*\s+(?=[A-Z\[(*_`\"'])")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")
_GENERATED = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w:.-]+) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)
_BEGIN = re.compile(r"<!-- BEGIN GENERATED: ([\w:.-]+) -->")


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One normative sentence of the spec."""

    id: str
    level: str
    text: str
    section: str


@dataclass(frozen=True, kw_only=True)
class Block:
    """A paragraph, list item or table row of prose, with where it starts."""

    text: str
    line: int
    heading: str
    is_item: bool


@dataclass(kw_only=True)
class Extraction:
    """What parsing the spec found: its requirements and every lint problem."""

    requirements: list[Requirement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _mask_code(text: str) -> str:
    # Same length as the input, so positions found in the mask slice the original.
    return _CODE.sub(lambda m: m.group(1) + "x" * len(m.group(2)) + m.group(1), text)


def plain(markdown: str) -> str:
    """Markdown inline text as plain text: no ids, links, code marks or emphasis."""
    parts: list[str] = []
    last = 0
    for match in _CODE.finditer(markdown):
        parts.append(_strip_marks(markdown[last : match.start()]))
        parts.append(match.group(2))
        last = match.end()
    parts.append(_strip_marks(markdown[last:]))
    return " ".join("".join(parts).split())


def _strip_marks(text: str) -> str:
    text = _ANY_ID.sub("", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at `.`, `!` or `?` followed by a sentence start."""
    masked = _mask_code(text)
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(masked):
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def iter_blocks(text: str) -> Iterator[Block]:
    """Prose blocks of a Markdown file; code fences, comments and generated tables skipped."""
    heading = ""
    lines: list[str] = []
    first = 0
    is_item = False
    skip_until: str | None = None

    def flush() -> Iterator[Block]:
        if lines:
            yield Block(text=" ".join(lines), line=first, heading=heading, is_item=is_item)
        lines.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if skip_until is not None:
            if stripped.startswith(skip_until):
                skip_until = None
            continue
        if stripped.startswith(("```", "~~~")):
            yield from flush()
            skip_until = stripped[:3]
            continue
        begin = _BEGIN.match(stripped)
        if begin:
            yield from flush()
            skip_until = f"<!-- END GENERATED: {begin.group(1)} -->"
            continue
        if not stripped or stripped.startswith("<!--"):
            yield from flush()
            continue
        if stripped.startswith("#"):
            yield from flush()
            heading = plain(stripped.lstrip("#"))
            yield Block(text=heading, line=number, heading=heading, is_item=False)
            continue
        if stripped.startswith("|"):
            yield from flush()
            if not re.fullmatch(r"[|:\-\s]+", stripped):
                yield Block(text=stripped, line=number, heading=heading, is_item=False)
            continue
        stripped = stripped.removeprefix(">").strip()
        item = _ITEM.match(stripped)
        if item:
            yield from flush()
            stripped = stripped[item.end() :]
        if not lines:
            first, is_item = number, bool(item)
        lines.append(stripped)
    yield from flush()


def _keyword(text: str) -> re.Match[str] | None:
    return _KEYWORD.search(_mask_code(text))


def parse_file(name: str, text: str, out: Extraction) -> None:
    """Add the requirements and lint problems of one spec file to `out`."""
    open_req: dict[str, str] | None = None  # a requirement ending in ":" takes in list items
    items = 0
    for block in iter_blocks(text):
        where = f"{name}:{block.line}"
        if (
            open_req is not None
            and block.is_item
            and not _ANY_ID.search(_mask_code(block.text))
            and _keyword(block.text) is None
        ):
            items += 1
            open_req["text"] += f" ({items}) {plain(block.text)}"
            continue
        if open_req is not None:
            out.requirements.append(Requirement(**open_req))
            open_req = None
        section = f"{name} > {block.heading}" if block.heading else name
        sentences = split_sentences(block.text)
        for index, sentence in enumerate(sentences):
            ids = _ANY_ID.findall(_mask_code(sentence))  # an id inside code is an example
            keyword = _keyword(sentence)
            bad = [i for i in ids if not _ID.fullmatch(i)]
            if bad:
                out.problems.append(f"{where}: malformed requirement id {bad[0]}")
                continue
            if keyword is None:
                if ids:
                    out.problems.append(f"{where}: {ids[0]} is on a sentence without a key word")
                continue
            if not ids:
                out.problems.append(
                    f"{where}: sentence with {keyword.group(1)} has no requirement id: "
                    f"{plain(sentence)[:80]!r}"
                )
                continue
            if len(ids) > 1:
                out.problems.append(f"{where}: one sentence holds several ids: {', '.join(ids)}")
                continue
            if not sentence.startswith(ids[0]):
                out.problems.append(f"{where}: {ids[0]} does not start its sentence")
                continue
            req = {
                "id": ids[0][1:-1],
                "level": LEVELS[keyword.group(1)],
                "text": plain(sentence),
                "section": section,
            }
            if index == len(sentences) - 1 and sentence.endswith(":"):
                open_req, items = req, 0
            else:
                out.requirements.append(Requirement(**req))
    if open_req is not None:
        out.requirements.append(Requirement(**open_req))


def parse_spec(files: Mapping[str, str]) -> Extraction:
    """Parse every spec file (name -> Markdown); ids must be unique across all of them."""
    out = Extraction()
    for name in sorted(files):
        parse_file(name, files[name], out)
    seen: dict[str, str] = {}
    for req in out.requirements:
        if req.id in seen:
            out.problems.append(
                f"duplicate requirement id {req.id} in {seen[req.id]} and {req.section}"
            )
        seen.setdefault(req.id, req.section)
    for name in sorted(files):
        for number, line in enumerate(files[name].splitlines(), start=1):
            for ref in _REFERENCE.findall(_mask_code(line)):
                if ref not in seen:
                    out.problems.append(f"{name}:{number}: reference to unknown requirement {ref}")
    out.requirements.sort(key=lambda r: r.id)
    return out


def requirements_json(requirements: list[Requirement]) -> str:
    """The bytes of spec/requirements.json."""
    data = {
        "version": 1,
        "requirements": [
            {"id": r.id, "level": r.level, "text": r.text, "section": r.section}
            for r in sorted(requirements, key=lambda r: r.id)
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- generated tables ----------------------------------------------------------------------


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_errors(errors: Mapping[str, Any], numbers: Mapping[str, int]) -> str:
    """The error table, ordered by wire number."""
    rows = []
    for code, row in sorted(errors["codes"].items(), key=lambda kv: numbers.get(kv[0], 0)):
        status = row["grpc_status"]
        rows.append(
            [
                f"`{code}`",
                str(numbers.get(code, "?")),
                f"`{status}`" if status else "none (task failure only)",
                f"`{row['retry']}`",
                row["raised_by"],
                row["meaning"],
            ]
        )
    return _table(["Code", "Number", "gRPC status", "Retry", "Raised by", "Meaning"], rows)


def render_bare_status(errors: Mapping[str, Any]) -> str:
    """Retryability of failed RPCs that carry no typed error."""
    rows = [[f"`{s}`", f"`{r}`"] for s, r in errors["grpc_status_without_error"].items()]
    rows.append(["any other status", "`no`"])
    return _table(["gRPC status", "Retry"], rows)


def render_submit_replies(machines: Mapping[str, Any]) -> str:
    """The reply of each closed task state to a later SubmitResult."""
    states = machines["machines"]["task"]["states"]
    rows = [
        [f"`{name}`", f"`{state['submit_reply']}`", state["description"]]
        for name, state in states.items()
        if "submit_reply" in state
    ]
    return _table(["Task state", "Reply", "Meaning"], rows)


def render_machine(machine: Mapping[str, Any]) -> str:
    """States, events and transitions of one state machine."""
    states: Mapping[str, Any] = machine["states"]
    replies = any("submit_reply" in s for s in states.values())
    state_rows = []
    for name, state in states.items():
        marks = [
            m
            for m, on in (
                ("initial", name == machine["initial"]),
                ("terminal", state.get("terminal", False)),
            )
            if on
        ]
        label = f"`{name}`" + (f" ({', '.join(marks)})" if marks else "")
        row = [label, state["description"]]
        if replies:
            reply = state.get("submit_reply")
            row.append(f"`{reply}`" if reply else "")
        state_rows.append(row)
    header = ["State", "Description"] + (["Reply to SubmitResult"] if replies else [])
    events = [[f"`{e}`", text] for e, text in machine["events"].items()]
    moves = [
        [f"`{state}`", f"`{event}`", f"`{target}`"]
        for state, table in machine["transitions"].items()
        for event, target in (table or {}).items()
    ]
    return "\n\n".join(
        [
            textwrap.fill(" ".join(machine["description"].split()), width=96),
            _table(header, state_rows),
            _table(["Event", "Meaning"], events),
            _table(["State", "Event", "Next state"], moves),
        ]
    )


def error_numbers(proto: str) -> dict[str, int]:
    """ErrorCode names (without prefix) to wire numbers, read from error.proto."""
    return {m[0]: int(m[1]) for m in re.findall(r"ERROR_CODE_(\w+)\s*=\s*(\d+);", proto)}


def build_blocks(errors_yaml: str, machines_yaml: str, error_proto: str) -> dict[str, str]:
    """Every generated block, by name."""
    errors = yaml.safe_load(errors_yaml)
    machines = yaml.safe_load(machines_yaml)
    blocks = {
        "errors": render_errors(errors, error_numbers(error_proto)),
        "bare-status-retry": render_bare_status(errors),
        "task-submit-replies": render_submit_replies(machines),
    }
    for name, machine in machines["machines"].items():
        blocks[f"state-machine:{name}"] = render_machine(machine)
    return blocks


def table_problems(errors_yaml: str, error_proto: str) -> list[str]:
    """Disagreements between the error table and the ErrorCode enum."""
    table = set(yaml.safe_load(errors_yaml)["codes"])
    enum = set(error_numbers(error_proto)) - {"UNSPECIFIED"}
    return [
        f"error code {c} is in error.proto but not in errors.yaml" for c in sorted(enum - table)
    ] + [f"error code {c} is in errors.yaml but not in error.proto" for c in sorted(table - enum)]


def render_text(text: str, blocks: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """Fill the generated regions of one file: (new text, block names used, problems)."""
    used: list[str] = []
    problems: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        used.append(name)
        if name not in blocks:
            problems.append(f"unknown generated block {name!r}")
            return match.group(0)
        return f"{match.group(1)}\n{blocks[name]}\n\n{match.group(4)}"

    result = _GENERATED.sub(fill, text)
    unclosed = set(_BEGIN.findall(text)) - set(used)
    problems += [f"generated block {n!r} has no END marker" for n in sorted(unclosed)]
    for name, body in blocks.items():
        if name in used and (kw := _keyword(body)):
            problems.append(f"generated block {name!r} holds the key word {kw.group(1)}")
    return result, used, problems


# --- driver --------------------------------------------------------------------------------


def run(root: Path, *, check: bool) -> list[str]:
    """Render and extract the spec under `root`; write unless `check`. Returns problems."""
    spec = root / "spec"
    errors_yaml = (spec / "errors.yaml").read_text("utf-8")
    error_proto = (root / "proto" / "pollen" / "v1" / "error.proto").read_text("utf-8")
    machines_yaml = (spec / "state_machines.yaml").read_text("utf-8")
    blocks = build_blocks(errors_yaml, machines_yaml, error_proto)
    problems = table_problems(errors_yaml, error_proto)
    rendered: dict[str, str] = {}
    uses: dict[str, list[str]] = {}
    for path in sorted(spec.glob("*.md")):
        old = path.read_text("utf-8")
        new, used, found = render_text(old, blocks)
        problems += [f"{path.name}: {p}" for p in found]
        for name in used:
            uses.setdefault(name, []).append(path.name)
        rendered[path.name] = new
        if new != old:
            if check:
                problems.append(f"{path.name}: generated tables are stale")
            else:
                path.write_text(new, "utf-8")
    for name in sorted(blocks):
        if len(uses.get(name, [])) != 1:
            problems.append(f"generated block {name!r} appears {len(uses.get(name, []))} times")
    extraction = parse_spec(rendered)
    problems += extraction.problems
    target = spec / "requirements.json"
    data = requirements_json(extraction.requirements)
    if not target.exists() or target.read_text("utf-8") != data:
        if check:
            problems.append("requirements.json is stale")
        else:
            target.write_text(data, "utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render, lint and extract the Pollen spec.")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problems = run(args.root, check=args.check)
    for problem in problems:
        print(f"spec_tool: {problem}", file=sys.stderr)
    if problems and args.check:
        print("spec_tool: run `python scripts/spec_tool.py` and fix the rest", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
