"""Codec mode checks itself: the Python core answers every vector, a broken encoder fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.codec_runner import (
    vectors,
    zstd_content_size_problem,
    zstd_encode_problem,
    zstd_window_problem,
)
from conformance.vectors.generate import raw_block, skippable_frame, zstd_header, zstd_raw_frame

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).resolve().parent / "broken_clients.py"


def _run(tmp_path: Path, *command: str, run: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    args = [sys.executable, "-m", "pollen_cli", "conformance", "codec"]
    args += ["--report-dir", str(tmp_path)]
    for pattern in run:
        args += ["--run", pattern]
    done = subprocess.run(
        [*args, "--", *command],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return done.returncode, json.loads((tmp_path / "report.json").read_text())


def test_the_python_core_passes_every_vector(tmp_path: Path) -> None:
    status, report = _run(tmp_path, sys.executable, "-m", "reference_client.conformance_codec")
    assert status == 0
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    assert len(outcomes) == sum(1 for _ in vectors())
    assert set(outcomes.values()) == {"PASS"}


def test_a_program_that_never_answers_is_a_setup_error_reported_at_once(tmp_path: Path) -> None:
    status, report = _run(tmp_path, sys.executable, "-c", "import sys; sys.exit(3)")
    assert status == 2  # a harness-side error: the command is wrong, not the codecs
    outcomes = [c["outcome"] for c in report["cases"]]
    assert len(outcomes) == sum(1 for _ in vectors())
    assert outcomes[:2] == ["FAIL", "FAIL"]  # restarted twice before giving up
    assert set(outcomes[2:]) == {"ERROR"}
    assert "never answered" in report["cases"][-1]["note"]


def test_a_big_endian_raw_encoder_fails_exactly_the_vectors_it_changes(tmp_path: Path) -> None:
    status, report = _run(
        tmp_path,
        sys.executable,
        str(BROKEN),
        "big-endian-tensors",
        "codec",
        run=("codec/tensorencode/raw/*", "codec/tensordecode/raw/*"),
    )
    assert status == 1
    failing = {c["name"] for c in report["cases"] if c["outcome"] == "FAIL"}
    changed: set[str] = set()
    for vector in vectors():
        test, group = vector.test, vector.group
        if group["type"] != "TensorEncode" or group["codec"] != "raw":
            continue
        data = bytes.fromhex(vector.request["inputHex"])
        width = {"int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2, "int32": 4, "uint32": 4}
        width |= {"float32": 4, "int64": 8, "uint64": 8, "float64": 8}
        size = width.get(test["dtype"], 1)
        swapped = b"".join(data[i : i + size][::-1] for i in range(0, len(data), size))
        if swapped != data:
            changed.add(vector.case.name)
    assert changed
    assert failing == changed


def _zstd_encode_cases(level: str) -> set[str]:
    return {
        v.case.name
        for v in vectors()
        if v.group["type"] == "TensorEncode"
        and v.group["codec"] == "zstd"
        and v.case.level == level
    }


def test_zstd_encode_vectors_cover_must_and_should_separately() -> None:
    musts, shoulds = _zstd_encode_cases("MUST"), _zstd_encode_cases("SHOULD")
    assert len(musts) >= 15
    assert shoulds == {f"{n}/{check}" for n in musts for check in ("content-size", "window")}
    requirements = {v.case.name: v.case.requirements for v in vectors()}
    assert {requirements[n] for n in musts} == {("PLN-COD-007",)}
    assert {requirements[n] for n in shoulds} == {("PLN-COD-008",), ("PLN-COD-009",)}


@pytest.mark.parametrize("variant", ["zstd-two-frames", "zstd-dictionary-id"])
def test_a_broken_zstd_encoder_fails_exactly_the_zstd_encode_vectors(
    tmp_path: Path, variant: str
) -> None:
    status, report = _run(
        tmp_path,
        sys.executable,
        str(BROKEN),
        variant,
        "codec",
        run=("codec/tensorencode/zstd/**", "codec/tensordecode/zstd/*"),
    )
    assert status == 1
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    failing = {name for name, outcome in outcomes.items() if outcome == "FAIL"}
    assert failing == _zstd_encode_cases("MUST")
    assert {outcomes[name] for name in _zstd_encode_cases("SHOULD")} == {"PASS"}
    want = "exactly one Zstandard frame" if variant == "zstd-two-frames" else "no dictionary"
    for case in report["cases"]:
        if case["outcome"] == "FAIL":
            assert [f["expected"].startswith(want) for f in case["failures"]] == [True]


def test_a_zstd_encoder_without_content_size_warns_on_exactly_the_content_size_checks(
    tmp_path: Path,
) -> None:
    status, report = _run(
        tmp_path,
        sys.executable,
        str(BROKEN),
        "zstd-no-content-size",
        "codec",
        run=("codec/tensorencode/zstd/**",),
    )
    assert status == 0  # a SHOULD: a warning unless --strict
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    warned = {name for name, outcome in outcomes.items() if outcome == "WARN"}
    assert warned == {n for n in _zstd_encode_cases("SHOULD") if n.endswith("/content-size")}
    assert {o for n, o in outcomes.items() if n not in warned} == {"PASS"}


F32_PAIR = bytes.fromhex("0000803f000020c0")


@pytest.mark.parametrize(
    ("payload", "expected", "actual"),
    [
        (b"", "exactly one Zstandard frame", "an empty payload"),
        (zstd_raw_frame(F32_PAIR) * 2, "exactly one Zstandard frame and", "a second Zstandard"),
        (zstd_raw_frame(F32_PAIR) + skippable_frame(b"x"), "exactly one", "a skippable frame"),
        (skippable_frame(b"x") + zstd_raw_frame(F32_PAIR), "exactly one", "a skippable frame"),
        (zstd_raw_frame(F32_PAIR) + b"\0", "exactly one", "trailing data"),
        (zstd_raw_frame(F32_PAIR)[:-1], "exactly one", "a block cut short"),
        (zstd_raw_frame(F32_PAIR, dict_id=b"\x2a"), "no dictionary", "dictionary id 42"),
        (
            zstd_raw_frame(F32_PAIR, fcs_bytes=4, single_segment=False).replace(
                b"\x08\x00\x00\x00", b"\x09\x00\x00\x00", 1
            ),
            "content size 8",
            "content size 9",
        ),
        (zstd_raw_frame(F32_PAIR[::-1]), "content = the 8 canonical bytes", "8 bytes that differ"),
    ],
)
def test_the_zstd_judge_names_the_first_problem(payload: bytes, expected: str, actual: str) -> None:
    problem = zstd_encode_problem(payload, F32_PAIR)
    assert problem is not None
    assert problem[0].startswith(expected)
    assert problem[1].startswith(actual)


def test_the_zstd_judge_accepts_one_plain_frame_in_any_form() -> None:
    for frame in (
        zstd_raw_frame(F32_PAIR),
        zstd_raw_frame(F32_PAIR, dict_id=b"\0\0"),  # a Dictionary_ID field of 0: no dictionary
        zstd_header(None, single_segment=False) + raw_block(F32_PAIR, last=True),
    ):
        assert zstd_encode_problem(frame, F32_PAIR) is None
        assert zstd_window_problem(frame, F32_PAIR) is None
    assert zstd_encode_problem(zstd_raw_frame(b""), b"") is None


def test_the_zstd_should_checks_read_the_frame_header() -> None:
    no_size = zstd_header(None, single_segment=False) + raw_block(F32_PAIR, last=True)
    assert zstd_content_size_problem(no_size, F32_PAIR) == (
        "a Frame_Content_Size field in the frame header",
        "none",
    )
    assert zstd_content_size_problem(zstd_raw_frame(F32_PAIR), F32_PAIR) is None
    # 256 MiB is larger than both 128 MiB and the content size; 128 MiB is not.
    huge = zstd_header(None, single_segment=False, window_log=28) + raw_block(F32_PAIR, last=True)
    assert zstd_window_problem(huge, F32_PAIR) == (
        "a window of at most 128 MiB or the 8-byte content",
        f"{1 << 28} bytes",
    )
    fine = zstd_header(None, single_segment=False, window_log=27) + raw_block(F32_PAIR, last=True)
    assert zstd_window_problem(fine, F32_PAIR) is None
    assert zstd_window_problem(b"", F32_PAIR) is not None
