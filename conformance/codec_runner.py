"""Codec mode: the golden vectors, played through a program's stdin and stdout.

The program under test reads requests from stdin and writes one response per request to
stdout, each a frame: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
A request is a vector of conformance/vectors/manifest.json made self-contained (its files
inlined as hex); the harness judges the response exactly as vectors/README.md says. A
program that crashes or stalls is started again for the next vector, and the vector it was
on is an ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.cases import Case
from conformance.client_runner import CaseResult, Failure
from conformance.coverage import MANIFEST, VECTOR_MAP

VECTORS = MANIFEST.parent
#: Seconds a program may take to answer one request.
REQUEST_TIMEOUT_S = 10.0
#: Groups of codecs every implementation must implement: skipping them is a failure.
MANDATORY_CODECS = frozenset({"raw", None})
_ITEMSIZE = {
    "bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
}  # fmt: skip
_NAN_MASKS = {
    "float16": (0x7C00, 0x03FF),
    "bfloat16": (0x7F80, 0x007F),
    "float32": (0x7F800000, 0x007FFFFF),
    "float64": (0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
}


@dataclass(frozen=True, kw_only=True)
class Vector:
    """One request to send and what judging its answer needs."""

    case: Case
    group: Mapping[str, Any]
    test: Mapping[str, Any]
    request: Mapping[str, Any]


def _read(ref: Mapping[str, str]) -> bytes:
    return (VECTORS / ref["file"]).read_bytes()


def _group_requirements() -> dict[tuple[str, str | None], tuple[str, ...]]:
    groups = yaml.safe_load(VECTOR_MAP.read_text())["groups"]
    return {(g["type"], g.get("codec")): tuple(g["requirements"]) for g in groups}


def _request(group: Mapping[str, Any], test: Mapping[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {"type": group["type"], "tcId": test["tcId"]}
    if "codec" in group:
        request["groupCodec"] = group["codec"]
    for key, value in test.items():
        if key in ("comment", "flags", "result", "error", "expected", "value", "valueType"):
            continue
        if key in ("shape", "utf8Hex") and group["type"] in ("TensorDecode", "Value"):
            continue  # what the program must find out itself
        if key == "input":
            request["inputHex"] = _read(value).hex()
        elif key == "chunks":
            request["chunks"] = [
                {
                    "offset": c["offset"],
                    "dataHex": c["dataHex"] if "dataHex" in c else _read(c["dataFile"]).hex(),
                }
                for c in value
            ]
        else:
            request[key] = value
    return request


def vectors() -> Iterator[Vector]:
    """Every vector of the manifest as a case named `codec/TYPE/CODEC/tcN`."""
    manifest = json.loads(MANIFEST.read_text())
    requirements = _group_requirements()
    for group in manifest["testGroups"]:
        kind, codec = group["type"], group.get("codec")
        ids = requirements.get((kind, codec), ())
        for test in group["tests"]:
            name = "/".join(
                ["codec", kind.lower(), *([codec] if codec else []), f"tc{test['tcId']}"]
            )
            case = Case(
                name=name,
                role="codec",
                title=test["comment"],
                level="MUST",
                requirements=ids or ("PLN-GEN-001",),
                source="vectors/manifest.json",
            )
            yield Vector(case=case, group=group, test=test, request=_request(group, test))


# --- judging ---------------------------------------------------------------------------------


def _same_bytes(actual: bytes, expected: bytes, dtype: str, *, nan_sign_only: bool) -> bool:
    if actual == expected or not nan_sign_only or dtype not in _NAN_MASKS:
        return actual == expected
    if len(actual) != len(expected):
        return False
    exp_mask, man_mask = _NAN_MASKS[dtype]
    size = _ITEMSIZE[dtype]
    sign = 1 << (8 * size - 1)
    for start in range(0, len(expected), size):
        got = int.from_bytes(actual[start : start + size], "little")
        want = int.from_bytes(expected[start : start + size], "little")
        if want & exp_mask == exp_mask and want & man_mask:
            if not (got & exp_mask == exp_mask and got & man_mask) or got & sign != want & sign:
                return False
        elif got != want:
            return False
    return True


def judge_answer(vector: Vector, answer: Mapping[str, Any]) -> tuple[str, list[Failure]]:
    """The outcome (PASS, FAIL, SKIP) of one answer, and what failed."""
    test, group = vector.test, vector.group
    where = f"tc{test['tcId']}"
    failures: list[Failure] = []

    def fail(expected: str, actual: str) -> tuple[str, list[Failure]]:
        failures.append(Failure(step=where, expected=expected, actual=actual))
        return "FAIL", failures

    result = answer.get("result")
    if result == "skipped":
        if group["type"] in ("ChunkSet", "Value") or group.get("codec") in MANDATORY_CODECS:
            return fail("an answer (raw, values and blobs are mandatory)", "skipped")
        return "SKIP", failures
    if result == "error":
        code = str(answer.get("error", ""))
        if test["result"] == "valid":
            return fail("success", f"error {code}")
        if code != test["error"]:
            return fail(f"error {test['error']}", f"error {code}")
        return "PASS", failures
    if result != "ok":
        return fail("result ok, error or skipped", repr(result))
    if test["result"] == "invalid":
        return fail(f"error {test['error']}", "success")
    if group["type"] == "ChunkSet":
        problem = _chunk_problem(test, answer)
        if problem:
            return fail(*problem)
    output = bytes.fromhex(str(answer.get("outputHex", "")))
    kind = group["type"]
    if kind == "TensorDecode":
        if answer.get("dtype") != test["dtype"] or list(answer.get("shape", [])) != test["shape"]:
            return fail(
                f"{test['dtype']} {test['shape']}", f"{answer.get('dtype')} {answer.get('shape')}"
            )
        nan_sign_only = "NaNSignOnly" in test["flags"]
        if not _same_bytes(
            output, _read(test["expected"]), test["dtype"], nan_sign_only=nan_sign_only
        ):
            return fail("the expected canonical bytes", f"{len(output)} other bytes")
    elif kind in ("TensorEncode", "ChunkSet"):
        if output != _read(test["expected"]):
            return fail("the expected bytes", f"{len(output)} other bytes")
    elif kind == "Value":
        want = (test["valueType"], test["value"])
        got = (answer.get("valueType"), answer.get("value"))
        if got != want:
            return fail(f"{want[0]} {want[1]!r}", f"{got[0]} {got[1]!r}")
    return "PASS", failures


def _chunk_problem(test: Mapping[str, Any], answer: Mapping[str, Any]) -> tuple[str, str] | None:
    got = list(answer.get("chunks", []))
    if len(got) != len(test["chunks"]):
        return f"{len(test['chunks'])} chunk answers", str(len(got))
    for i, (want, have) in enumerate(zip(test["chunks"], got, strict=True)):
        expected = want.get("error") or want.get("outcome")
        actual = have.get("error") or have.get("outcome")
        if expected != actual or want["committedSize"] != have.get("committedSize"):
            return (
                f"chunk {i}: {expected}, committed {want['committedSize']}",
                f"{actual}, committed {have.get('committedSize')}",
            )
    return None


# --- the program -----------------------------------------------------------------------------


class _Program:
    def __init__(self, command: Sequence[str], log: Path) -> None:
        self.command = tuple(command)
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def ask(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.proc is None or self.proc.returncode is not None:
            with self.log.open("ab") as log:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    env={**os.environ, "POLLEN_CONFORMANCE_MODE": "codec"},
                    start_new_session=True,
                )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        body = json.dumps(request).encode()
        self.proc.stdin.write(struct.pack(">I", len(body)) + body)
        await self.proc.stdin.drain()
        header = await self.proc.stdout.readexactly(4)
        (length,) = struct.unpack(">I", header)
        if length > 1 << 30:
            raise ValueError(f"a response frame of {length} bytes")
        answer = json.loads(await self.proc.stdout.readexactly(length))
        if not isinstance(answer, dict):
            raise ValueError("a response is a JSON object")
        return answer

    async def close(self, *, kill: bool = False) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if not kill and proc.stdin is not None and proc.returncode is None:
            proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(proc.wait(), timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return await asyncio.wait_for(proc.wait(), timeout=10)


async def play_vectors(
    chosen: Sequence[Vector], command: Sequence[str], workdir: Path
) -> list[CaseResult]:
    """Send every chosen vector, in order, to one program (restarted after a crash)."""
    program = _Program(command, workdir / "codec-program.log")
    results: list[CaseResult] = []
    try:
        for vector in chosen:
            started = time.monotonic()
            try:
                answer = await asyncio.wait_for(
                    program.ask(vector.request), timeout=REQUEST_TIMEOUT_S
                )
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                await program.close(kill=True)
                what = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
                results.append(
                    CaseResult(
                        case=vector.case,
                        outcome="FAIL",
                        failures=(Failure(step="request", expected="an answer", actual=what),),
                        duration_s=time.monotonic() - started,
                    )
                )
                continue
            if answer.get("tcId") != vector.test["tcId"]:
                outcome, failures = (
                    "FAIL",
                    [
                        Failure(
                            step="request",
                            expected=f"tcId {vector.test['tcId']}",
                            actual=str(answer.get("tcId")),
                        )
                    ],
                )
            else:
                outcome, failures = judge_answer(vector, answer)
            results.append(
                CaseResult(
                    case=vector.case,
                    outcome=outcome,
                    failures=tuple(failures),
                    duration_s=time.monotonic() - started,
                    note=str(answer.get("message", ""))[:300],
                )
            )
    finally:
        await program.close()
    return results
