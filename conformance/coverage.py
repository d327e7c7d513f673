"""The build check that every MUST requirement is covered: by a case, by the golden
vectors, or by an entry of the reviewed exemption list that says why not yet.

    pollen conformance coverage        # exit 1 when a MUST id is uncovered or an entry is stale

An exemption is a debt, not a pass: the check prints how many there are, refuses an
exemption for an id that a case or vector now covers (the list must shrink as coverage
grows), and refuses one without a reason.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from conformance.cases import CASES_DIR, CaseError, load_cases, requirement_texts

VECTOR_MAP = CASES_DIR / "vectors.yaml"
EXEMPTIONS = CASES_DIR / "exemptions.yaml"
MANIFEST = Path(__file__).resolve().parent / "vectors" / "manifest.json"
ROLES = ("client", "server")


@dataclass(frozen=True, kw_only=True)
class Coverage:
    musts: frozenset[str]
    by_cases: frozenset[str]
    by_vectors: frozenset[str]
    exempt: Mapping[str, str]
    problems: tuple[str, ...]

    @property
    def covered(self) -> frozenset[str]:
        return self.by_cases | self.by_vectors


def vector_requirements(path: Path = VECTOR_MAP, manifest: Path = MANIFEST) -> frozenset[str]:
    """Ids the golden vectors check; every mapped group must exist in the manifest."""
    groups = yaml.safe_load(path.read_text())["groups"]
    present = {(g["type"], g.get("codec")) for g in json.loads(manifest.read_text())["testGroups"]}
    ids: set[str] = set()
    for group in groups:
        key = (group["type"], group.get("codec"))
        if key not in present:
            raise CaseError(f"{path.name}: no vector group {key} in the manifest")
        ids.update(group["requirements"])
    return frozenset(ids)


def read_exemptions(path: Path = EXEMPTIONS) -> dict[str, str]:
    document = yaml.safe_load(path.read_text()) or {}
    entries = document.get("exemptions") or {}
    if not isinstance(entries, dict):
        raise CaseError(f"{path.name}: `exemptions` maps requirement ids to reasons")
    return {str(k): str(v or "").strip() for k, v in entries.items()}


def measure() -> Coverage:
    texts = requirement_texts()
    musts = frozenset(r for r, entry in texts.items() if entry["level"] == "MUST")
    by_cases = frozenset(
        rid for role in ROLES for case in load_cases(role) for rid in case.requirements
    )
    by_vectors = vector_requirements()
    exempt = read_exemptions()
    problems = [
        f"{VECTOR_MAP.name}: {rid} is not in spec/requirements.json"
        for rid in sorted(by_vectors - set(texts))
    ]
    for rid, reason in sorted(exempt.items()):
        if rid not in musts:
            problems.append(f"exemption {rid}: not a MUST requirement of the spec")
        elif rid in by_cases | by_vectors:
            problems.append(f"exemption {rid}: now covered; remove it from {EXEMPTIONS.name}")
        elif not reason:
            problems.append(f"exemption {rid}: give the reason it cannot be covered yet")
    problems.extend(
        f"{rid} (MUST) has no case, no vector and no exemption"
        for rid in sorted(musts - by_cases - by_vectors - set(exempt))
    )
    return Coverage(
        musts=musts,
        by_cases=by_cases,
        by_vectors=by_vectors,
        exempt=exempt,
        problems=tuple(problems),
    )


def main() -> int:
    coverage = measure()
    for problem in coverage.problems:
        print(f"error: {problem}", file=sys.stderr)
    covered = coverage.covered & coverage.musts
    texts = requirement_texts()
    shoulds = {r for r, e in texts.items() if e["level"] == "SHOULD"}
    areas = Counter(rid.split("-")[1] for rid in coverage.exempt)
    print(
        f"MUST requirements: {len(coverage.musts)}; covered {len(covered)} "
        f"({len(coverage.by_cases & coverage.musts)} by cases, "
        f"{len((coverage.by_vectors - coverage.by_cases) & coverage.musts)} by vectors only); "
        f"exempt {len(coverage.exempt)} ({', '.join(f'{a} {n}' for a, n in sorted(areas.items()))})"
    )
    print(f"SHOULD requirements: {len(shoulds)}; covered {len(shoulds & coverage.covered)}")
    return 1 if coverage.problems else 0


if __name__ == "__main__":
    sys.exit(main())
