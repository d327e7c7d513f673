"""Conformance cases as data: loading the YAML catalog, and selecting cases by pattern.

A case file holds `cases:`, a list of mappings. The fields every case has are checked here;
its `steps` are kept as plain data and interpreted by the harness of its role, which
rejects a step it does not know before anything runs.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CASES_DIR = Path(__file__).resolve().parent / "cases"
REQUIREMENTS = Path(__file__).resolve().parent.parent / "spec" / "requirements.json"
LEVELS = ("MUST", "SHOULD", "MAY")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)+$")
_REQUIREMENT = re.compile(r"^PLN-[A-Z]{2,4}-[0-9]{3}$")
_CASE_KEYS = {
    "name", "title", "level", "requirements", "requires", "handshake", "steps", "timeout_s",
}  # fmt: skip


class CaseError(Exception):
    """A case file that does not follow the catalog's format."""


@dataclass(frozen=True, kw_only=True)
class Case:
    """One scripted scenario; `name` is stable forever and never reused."""

    name: str
    role: str
    title: str
    level: str
    requirements: tuple[str, ...]
    #: Capabilities the program under test must advertise (`codec:zstd`, `dtype:bfloat16`,
    #: `feature:query`); the case is skipped otherwise.
    requires: tuple[str, ...] = ()
    handshake: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[Mapping[str, Any], ...] = ()
    timeout_s: float = 30.0
    source: str = ""


def _case(raw: object, *, role: str, source: str, known: frozenset[str]) -> Case:
    if not isinstance(raw, dict):
        raise CaseError(f"{source}: a case is a mapping, got {type(raw).__name__}")
    where = f"{source}: case {raw.get('name', '?')!r}"
    extra = set(raw) - _CASE_KEYS
    if extra:
        raise CaseError(f"{where}: unknown keys {sorted(extra)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise CaseError(f"{where}: name must be path-like (area/what[/more]), lower case")
    level = raw.get("level")
    if level not in LEVELS:
        raise CaseError(f"{where}: level must be one of {LEVELS}")
    requirements = tuple(raw.get("requirements") or ())
    if not requirements:
        raise CaseError(f"{where}: requirements must name at least one id")
    for rid in requirements:
        if not isinstance(rid, str) or not _REQUIREMENT.match(rid):
            raise CaseError(f"{where}: {rid!r} is not a requirement id")
        if known and rid not in known:
            raise CaseError(f"{where}: {rid} is not in spec/requirements.json")
    steps = raw.get("steps") or []
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise CaseError(f"{where}: steps must be a list of mappings")
    return Case(
        name=name,
        role=role,
        title=str(raw.get("title", "")),
        level=level,
        requirements=requirements,
        requires=tuple(str(r) for r in raw.get("requires") or ()),
        handshake=dict(raw.get("handshake") or {}),
        steps=tuple(steps),
        timeout_s=float(raw.get("timeout_s", 30.0)),
        source=source,
    )


def requirement_texts(path: Path = REQUIREMENTS) -> dict[str, Mapping[str, str]]:
    """Requirement id -> its entry (level, text, section) in spec/requirements.json."""
    data = json.loads(path.read_text())
    return {r["id"]: r for r in data["requirements"]}


def load_cases(role: str, directory: Path = CASES_DIR) -> tuple[Case, ...]:
    """Every case of `role` ("client" or "server"), sorted by name; names are unique."""
    known = frozenset(requirement_texts()) if REQUIREMENTS.exists() else frozenset()
    cases: list[Case] = []
    folder = directory / role
    for path in sorted(folder.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if not isinstance(document, dict) or not isinstance(document.get("cases"), list):
            raise CaseError(f"{path.name}: expected a mapping with a `cases` list")
        source = str(path.relative_to(directory))
        cases.extend(_case(raw, role=role, source=source, known=known) for raw in document["cases"])
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CaseError(f"duplicate case names: {duplicates}")
    return tuple(sorted(cases, key=lambda c: c.name))


# --- patterns ---------------------------------------------------------------------------------


def _component(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "^" + "".join("[^/]*" if ch == "*" else re.escape(ch) for ch in pattern) + "$"
    )


def matches(pattern: str, name: str) -> bool:
    """Whether a case name matches a glob: `*` stands within one name component, and a
    component `**` for any number of components (none included)."""
    wanted = pattern.strip("/").split("/")
    parts = name.split("/")

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(wanted):
            return j == len(parts)
        if wanted[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return (
            j < len(parts) and bool(_component(wanted[i]).match(parts[j])) and match(i + 1, j + 1)
        )

    return match(0, 0)


def select(cases: Iterable[Case], patterns: Sequence[str]) -> tuple[Case, ...]:
    """The cases matching any of `patterns` (all when there is none)."""
    if not patterns:
        return tuple(cases)
    return tuple(c for c in cases if any(matches(p, c.name) for p in patterns))


@dataclass(frozen=True, kw_only=True)
class KnownFailing:
    """One entry of a known-failing list: a pattern, and the line it came from."""

    pattern: str
    line: int
    note: str = ""


def read_known_failing(path: Path) -> tuple[KnownFailing, ...]:
    """Patterns, one a line; `#` starts a comment (keep the reason and an issue link there)."""
    entries: list[KnownFailing] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text, _, note = line.partition("#")
        text = text.strip()
        if text:
            entries.append(KnownFailing(pattern=text, line=number, note=note.strip()))
    return tuple(entries)
