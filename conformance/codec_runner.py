"""Codec mode: the golden vectors, played through a program's stdin and stdout.

The program under test reads requests from stdin and writes one response per request to
stdout, each a frame: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
A request is a vector of conformance/vectors/manifest.json made self-contained (its files
inlined as hex); the harness judges the response exactly as vectors/README.md says. A
program that crashes or stalls is started again for the next vector, and the vector it was
on is an ERROR.

zstd encode requests cannot be compared byte for byte (the output is the encoder's choice):
the harness reads the payload's frame structure itself (RFC 8878) and decompresses it with
libzstd (python-zstandard), then judges it by property. A group's MUST requirements form
one case per vector; each lower-level requirement the group lists (SHOULD, MAY) is a case
of its own, `<vector case>/<check>`, judged from the same answer, so that its level shows
in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
import zstandard

from conformance.cases import Case, CaseError, requirement_texts
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
    """One request to send and what judging its answer needs. `check` names the one
    lower-level requirement this case judges (empty: the group's MUST requirements); cases
    of one vector share its request, which is sent once."""

    case: Case
    group: Mapping[str, Any]
    test: Mapping[str, Any]
    request: Mapping[str, Any]
    check: str = ""


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
    """Every vector of the manifest as a MUST case named `codec/TYPE/CODEC/tcN`, followed
    by one case `codec/TYPE/CODEC/tcN/CHECK` per SHOULD or MAY requirement of its group."""
    manifest = json.loads(MANIFEST.read_text())
    requirements = _group_requirements()
    levels = {rid: entry["level"] for rid, entry in requirement_texts().items()}
    for group in manifest["testGroups"]:
        kind, codec = group["type"], group.get("codec")
        ids = requirements.get((kind, codec), ())
        musts = tuple(r for r in ids if levels.get(r, "MUST") == "MUST")
        others = [r for r in ids if levels.get(r, "MUST") != "MUST"]
        for rid in others:
            if rid not in SEPARATE_CHECKS or SEPARATE_CHECKS[rid][0] != (kind, codec):
                raise CaseError(
                    f"vectors.yaml: codec mode has no check of {rid} for {kind} {codec}"
                )
        for test in group["tests"]:
            name = "/".join(
                ["codec", kind.lower(), *([codec] if codec else []), f"tc{test['tcId']}"]
            )
            request = _request(group, test)
            case = Case(
                name=name,
                role="codec",
                title=test["comment"],
                level="MUST",
                requirements=musts or ("PLN-GEN-001",),
                source="vectors/manifest.json",
            )
            yield Vector(case=case, group=group, test=test, request=request)
            for rid in others:
                _, slug, what, _ = SEPARATE_CHECKS[rid]
                case = Case(
                    name=f"{name}/{slug}",
                    role="codec",
                    title=f"{test['comment']}: {what}",
                    level=levels[rid],
                    requirements=(rid,),
                    source="vectors/manifest.json",
                )
                yield Vector(case=case, group=group, test=test, request=request, check=rid)


# --- zstd payloads, judged by property --------------------------------------------------------

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # the low 4 bits vary: 0x184D2A50 to 0x184D2A5F
#: PLN-COD-009: a window up to this size is fine whatever the content size.
ZSTD_SMALL_WINDOW = 128 << 20
#: The largest window libzstd decodes (on 64-bit hosts); the judge decompresses in one pass,
#: so a large declared window costs no memory.
_LIBZSTD_MAX_WINDOW = 1 << 31


class ZstdFrameError(ValueError):
    """The bytes at an offset are not one well-formed Zstandard frame."""


@dataclass(frozen=True, kw_only=True)
class ZstdFrame:
    """What the judge reads from a Zstandard frame (RFC 8878, section 3.1.1) by hand."""

    content_size: int | None  # None: the header has no Frame_Content_Size field
    window_size: int  # the content size for a single-segment frame
    dictionary_id: int | None  # None: the header has no Dictionary_ID field
    end: int  # the offset just past the frame, its checksum included


def read_zstd_frame(data: bytes, start: int = 0) -> ZstdFrame:
    """Parse the frame header at `start` and walk its block headers to the frame's end,
    without decompressing. Raises ZstdFrameError for a skippable frame, a wrong magic
    number, the reserved descriptor bit, the reserved block type or a frame cut short."""
    if len(data) - start < 5:
        raise ZstdFrameError(f"{len(data) - start} bytes, too short for a frame header")
    magic = int.from_bytes(data[start : start + 4], "little")
    if magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
        raise ZstdFrameError("a skippable frame")
    if magic != _ZSTD_MAGIC:
        raise ZstdFrameError(f"magic number {magic:#010x}, not a Zstandard frame")
    descriptor = data[start + 4]
    if descriptor & 0x08:
        raise ZstdFrameError("the reserved bit of the frame header descriptor set")
    single_segment = bool(descriptor & 0x20)
    did_size = (0, 1, 2, 4)[descriptor & 0x03]
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    pos = start + 5
    window = 0
    if not single_segment:
        if pos >= len(data):
            raise ZstdFrameError("a frame header cut short")
        exponent, mantissa = data[pos] >> 3, data[pos] & 0x07
        base = 1 << (10 + exponent)
        window = base + (base >> 3) * mantissa
        pos += 1
    if pos + did_size + fcs_size > len(data):
        raise ZstdFrameError("a frame header cut short")
    dictionary_id = int.from_bytes(data[pos : pos + did_size], "little") if did_size else None
    pos += did_size
    content_size = None
    if fcs_size:
        content_size = int.from_bytes(data[pos : pos + fcs_size], "little")
        content_size += 256 if fcs_size == 2 else 0  # the 2-byte field is offset by 256
        pos += fcs_size
    if single_segment:
        window = content_size or 0
    while True:
        if pos + 3 > len(data):
            raise ZstdFrameError("a block header cut short")
        block = int.from_bytes(data[pos : pos + 3], "little")
        block_type = (block >> 1) & 0x03
        if block_type == 3:
            raise ZstdFrameError("the reserved block type")
        pos += 3 + (1 if block_type == 1 else block >> 3)
        if pos > len(data):
            raise ZstdFrameError("a block cut short")
        if block & 0x01:
            break
    if descriptor & 0x04:
        pos += 4
        if pos > len(data):
            raise ZstdFrameError("a content checksum cut short")
    return ZstdFrame(
        content_size=content_size, window_size=window, dictionary_id=dictionary_id, end=pos
    )


def _after_frame(rest: bytes) -> str:
    magic = int.from_bytes(rest[:4], "little") if len(rest) >= 4 else None
    if magic == _ZSTD_MAGIC:
        what = "a second Zstandard frame"
    elif magic is not None and magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
        what = "a skippable frame"
    else:
        what = "trailing data"
    return f"{what} after the frame ({len(rest)} more bytes)"


def zstd_encode_problem(payload: bytes, content: bytes) -> tuple[str, str] | None:
    """PLN-COD-007: why `payload` is not exactly one Zstandard frame, without a dictionary,
    whose content is `content` (expected, actual); None when it is. A skippable frame counts
    as a frame (before or after the data frame it fails the check), a Dictionary_ID field
    holding 0 means no dictionary, and a recorded content size must be len(content)."""
    if not payload:
        return "exactly one Zstandard frame", "an empty payload"
    try:
        frame = read_zstd_frame(payload)
    except ZstdFrameError as exc:
        return "exactly one Zstandard frame", str(exc)
    if frame.end != len(payload):
        return "exactly one Zstandard frame and nothing after it", _after_frame(
            payload[frame.end :]
        )
    if frame.dictionary_id:
        return "no dictionary (no Dictionary_ID, or 0)", f"dictionary id {frame.dictionary_id}"
    if frame.content_size is not None and frame.content_size != len(content):
        return (
            f"content size {len(content)} (or none) in the frame header",
            f"content size {frame.content_size}",
        )
    try:
        decompressor = zstandard.ZstdDecompressor(max_window_size=_LIBZSTD_MAX_WINDOW)
        got = decompressor.decompress(payload, max_output_size=len(content) + 1)
    except zstandard.ZstdError as exc:
        return "a frame that libzstd decompresses", f"libzstd: {exc}"
    if got != content:
        differs = " that differ" if len(got) == len(content) else ""
        return f"content = the {len(content)} canonical bytes", f"{len(got)} bytes{differs}"
    return None


def _zstd_header(payload: bytes) -> tuple[ZstdFrame | None, tuple[str, str] | None]:
    try:
        return read_zstd_frame(payload), None
    except ZstdFrameError as exc:
        return None, ("a payload that starts with a Zstandard frame", str(exc))


def zstd_content_size_problem(payload: bytes, content: bytes) -> tuple[str, str] | None:
    """PLN-COD-008: the first frame's header records the content size."""
    frame, problem = _zstd_header(payload)
    if frame is not None and frame.content_size is None:
        return "a Frame_Content_Size field in the frame header", "none"
    return problem


def zstd_window_problem(payload: bytes, content: bytes) -> tuple[str, str] | None:
    """PLN-COD-009: the first frame's window is not larger than both 128 MiB and the
    content size."""
    frame, problem = _zstd_header(payload)
    if frame is not None and frame.window_size > max(ZSTD_SMALL_WINDOW, len(content)):
        return (
            f"a window of at most 128 MiB or the {len(content)}-byte content",
            f"{frame.window_size} bytes",
        )
    return problem


#: Lower-level requirements judged as cases of their own: id -> ((type, codec) of the
#: group, case name suffix, what the case checks, the check).
SEPARATE_CHECKS: dict[
    str,
    tuple[tuple[str, str | None], str, str, Callable[[bytes, bytes], tuple[str, str] | None]],
] = {
    "PLN-COD-008": (
        ("TensorEncode", "zstd"),
        "content-size",
        "the frame header records the content size",
        zstd_content_size_problem,
    ),
    "PLN-COD-009": (
        ("TensorEncode", "zstd"),
        "window",
        "the window is not larger than both 128 MiB and the content size",
        zstd_window_problem,
    ),
}


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
    if vector.check:
        if result != "ok":
            return fail("an encoded payload", f"{result} {answer.get('error', '')}".strip())
        check = SEPARATE_CHECKS[vector.check][3]
        output = bytes.fromhex(str(answer.get("outputHex", "")))
        problem = check(output, _read(test["input"]))
        return fail(*problem) if problem else ("PASS", failures)
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
    elif kind == "TensorEncode" and group.get("codec") == "zstd":
        problem = zstd_encode_problem(output, _read(test["input"]))
        if problem:
            return fail(*problem)
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


#: Requests lost in a row, before any answer, after which the program is given up.
NEVER_ANSWERED = 3


def _never_answered(rest: Sequence[Vector], got: str, log: Path) -> list[CaseResult]:
    tail = log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else ""
    note = f"the program never answered a request ({got}); harness-side: check the command"
    return [CaseResult(case=v.case, outcome="ERROR", note=note, output_tail=tail) for v in rest]


async def play_vectors(
    chosen: Sequence[Vector], command: Sequence[str], workdir: Path
) -> list[CaseResult]:
    """Send every chosen vector, in order, to one program (restarted after a crash)."""
    program = _Program(command, workdir / "codec-program.log")
    results: list[CaseResult] = []
    # The cases of one vector are adjacent and share its request: it is sent once.
    last: tuple[Mapping[str, Any], Mapping[str, Any] | str] | None = None
    answered, lost = False, 0
    try:
        for index, vector in enumerate(chosen):
            started = time.monotonic()
            if last is None or last[0] is not vector.request:
                try:
                    got: Mapping[str, Any] | str = await asyncio.wait_for(
                        program.ask(vector.request), timeout=REQUEST_TIMEOUT_S
                    )
                    answered = True
                except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    await program.close(kill=True)
                    got = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
                    lost += 1
                    if not answered and lost >= NEVER_ANSWERED:
                        # A program that cannot start (a wrong command, a missing module) is
                        # a setup problem: say so at once instead of restarting it per case.
                        results += _never_answered(chosen[index:], got, program.log)
                        break
                last = (vector.request, got)
            answer = last[1]
            if isinstance(answer, str):
                results.append(
                    CaseResult(
                        case=vector.case,
                        outcome="FAIL",
                        failures=(Failure(step="request", expected="an answer", actual=answer),),
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
