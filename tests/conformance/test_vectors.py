"""The golden test vectors: up to date, well-formed, and passed by the Python core.

The core's modules are imported inside the tests that use them, so that the checks of the
vectors themselves run even while a core module is missing or broken.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.vectors import generate

VECTORS = generate.VECTOR_DIR
MANIFEST: dict[str, Any] = json.loads((VECTORS / generate.MANIFEST_FILE).read_text("ascii"))
SCHEMA: dict[str, Any] = json.loads((VECTORS / generate.SCHEMA_FILE).read_text("ascii"))

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "bool": np.dtype(np.bool_),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
# Exponent and mantissa masks of the float dtypes, to find NaNs in canonical bytes.
NAN_MASKS = {
    "float16": (0x7C00, 0x03FF),
    "bfloat16": (0x7F80, 0x007F),
    "float32": (0x7F800000, 0x007FFFFF),
    "float64": (0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
}
LIMIT_FIELDS = {
    "maxMessageBytes": "max_message_bytes",
    "maxTensorBytes": "max_tensor_bytes",
    "maxTensors": "max_tensors",
    "maxRank": "max_rank",
    "maxBlobBytes": "max_blob_bytes",
    "maxMapEntries": "max_map_entries",
}
INT64_MAX = (1 << 63) - 1


def read(ref: dict[str, str]) -> bytes:
    return (VECTORS / ref["file"]).read_bytes()


def cases(kind: str) -> list[Any]:
    """pytest params (group, test) for every test of the groups of one type."""
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}")
        for group in MANIFEST["testGroups"]
        if group["type"] == kind
        for test in group["tests"]
    ]


def same_canonical_bytes(
    actual: bytes, expected: bytes, dtype: str, *, nan_sign_only: bool
) -> bool:
    """Bit-for-bit equality, except that with `nan_sign_only` an expected NaN matches any
    NaN of the same sign (the manifest note NaNSignOnly)."""
    if not nan_sign_only or actual == expected:
        return actual == expected
    if len(actual) != len(expected):
        return False
    exp_mask, man_mask = NAN_MASKS[dtype]
    size = NUMPY_DTYPES[dtype].itemsize
    sign = 1 << (8 * size - 1)

    def is_nan(bits: int) -> bool:
        return bits & exp_mask == exp_mask and bits & man_mask != 0

    for start in range(0, len(expected), size):
        got = int.from_bytes(actual[start : start + size], "little")
        want = int.from_bytes(expected[start : start + size], "little")
        if is_nan(want):
            if not is_nan(got) or got & sign != want & sign:
                return False
        elif got != want:
            return False
    return True


def expect_error(test: dict[str, Any], exc: Exception) -> None:
    from pollen.errors import PollenError

    if not isinstance(exc, PollenError):
        raise exc
    assert test["result"] in ("invalid", "acceptable"), f"unexpected error {exc}"
    assert exc.code.name == test["error"], f"got {exc.code.name}, expected {test['error']}"


def file_refs(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if set(node) == {"file", "sha256"}:
            yield node
        for value in node.values():
            yield from file_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from file_refs(item)


# --- the vectors themselves --------------------------------------------------------------


def test_regeneration_is_byte_identical() -> None:
    assert generate.check() == []


def test_check_reports_a_changed_file(tmp_path: Path) -> None:
    generate.write(tmp_path)
    assert generate.check(tmp_path) == []
    victim = next(iter(file_refs(MANIFEST)))["file"]
    (tmp_path / victim).write_bytes(b"changed")
    (tmp_path / "value" / "9999-stray.bin").write_bytes(b"")
    (tmp_path / generate.SCHEMA_FILE).unlink()
    assert generate.check(tmp_path) == [
        f"missing: {generate.SCHEMA_FILE}",
        "extra: value/9999-stray.bin",
        f"differs: {victim}",
    ]
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 1


def test_manifest_matches_its_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(MANIFEST)


def test_schema_rejects_a_valid_test_without_expected_output() -> None:
    broken = json.loads(json.dumps(MANIFEST))
    first_valid = next(
        test
        for group in broken["testGroups"]
        for test in group["tests"]
        if test["result"] == "valid"
    )
    del first_valid["expected"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(broken)


def test_every_file_matches_its_digest_and_is_referenced() -> None:
    refs = list(file_refs(MANIFEST))
    for ref in refs:
        assert hashlib.sha256(read(ref)).hexdigest() == ref["sha256"], ref["file"]
    on_disk = {
        path.relative_to(VECTORS).as_posix()
        for sub in generate.DATA_DIRS
        for path in (VECTORS / sub).rglob("*")
        if path.is_file()
    }
    assert on_disk == {ref["file"] for ref in refs}


def test_manifest_bookkeeping() -> None:
    from pollen.errors import ErrorCode

    tests = [test for group in MANIFEST["testGroups"] for test in group["tests"]]
    assert MANIFEST["numberOfTests"] == len(tests)
    assert MANIFEST["generatorVersion"] == generate.GENERATOR_VERSION
    ids = [test["tcId"] for test in tests]
    assert len(set(ids)) == len(ids)
    errors = {test["error"] for test in tests if "error" in test}
    errors |= {
        chunk["error"] for test in tests for chunk in test.get("chunks", []) if "error" in chunk
    }
    assert errors <= {code.name for code in ErrorCode}
    assert set(generate.ERROR_CODES) == {code.name for code in ErrorCode}
    assert {flag for test in tests for flag in test["flags"]} == set(MANIFEST["notes"])


# --- the generator's arithmetic, against independent implementations ----------------------


def f32(bits: int) -> np.ndarray[Any, Any]:
    return np.array([bits], dtype="<u4").view("<f4")


@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_float16_rounding_from_float32_matches_numpy(bits: int) -> None:
    value = f32(bits)
    if np.isnan(value[0]):
        return
    with np.errstate(over="ignore"):
        expected = int(value.astype("<f2").view("<u2")[0])
    assert generate.narrow_cast("float32", "float16", bits, 0x7E00) == expected


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_float16_rounding_from_float64_matches_numpy(bits: int) -> None:
    value = np.array([bits], dtype="<u8").view("<f8")
    if np.isnan(value[0]):
        return
    with np.errstate(over="ignore"):
        expected = int(value.astype("<f2").view("<u2")[0])
    assert generate.narrow_cast("float64", "float16", bits, 0x7E00) == expected


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_bfloat16_rounding_from_float64_matches_round_to_odd(bits: int) -> None:
    """The spec's hint: binary64 -> binary32 rounding to odd, then binary32 -> bfloat16."""
    x = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    if math.isnan(x) or math.isinf(x):
        return
    with np.errstate(over="ignore"):
        nearest = np.float32(x)
    if math.isinf(nearest) or abs(float(nearest)) > abs(x):
        nearest = np.nextafter(nearest, np.float32(0.0))  # toward zero
    odd_bits = int(np.array([nearest]).view("<u4")[0])
    if float(nearest) != x:
        odd_bits |= 1
    expected = int(f32(odd_bits).astype(ml_dtypes.bfloat16).view("<u2")[0])
    assert generate.narrow_cast("float64", "bfloat16", bits, 0x7FC0) == expected


# --- the Python core against every vector ---------------------------------------------------


@pytest.mark.parametrize(("group", "test"), cases("TensorDecode"))
def test_tensor_decode(group: dict[str, Any], test: dict[str, Any]) -> None:
    from pollen import wire
    from pollen.dtypes import Dtype
    from pollen.limits import Limits

    limits = Limits(**{LIMIT_FIELDS[k]: v for k, v in test.get("limits", {}).items()})
    codecs = frozenset(test["codecs"]) if "codecs" in test else None
    dtypes = frozenset(Dtype[name.upper()] for name in test["dtypes"]) if "dtypes" in test else None
    try:
        array = wire.decode_tensor_message(
            read(test["input"]), limits=limits, codecs=codecs, dtypes=dtypes
        )
    except Exception as exc:  # expect_error re-raises what is not a PollenError
        expect_error(test, exc)
        return
    assert test["result"] in ("valid", "acceptable"), f"decoded, expected {test['error']}"
    assert array.dtype == NUMPY_DTYPES[test["dtype"]]
    assert array.shape == tuple(test["shape"])
    nan_sign_only = "NaNSignOnly" in test["flags"]
    assert same_canonical_bytes(
        array.tobytes(), read(test["expected"]), test["dtype"], nan_sign_only=nan_sign_only
    ), group["description"]


@pytest.mark.parametrize(("group", "test"), cases("TensorEncode"))
def test_tensor_encode(group: dict[str, Any], test: dict[str, Any]) -> None:
    from pollen.tensors import encode_tensor

    dtype = NUMPY_DTYPES[test["dtype"]]
    array = np.frombuffer(read(test["input"]), dtype=dtype).reshape(test["shape"])
    k = test.get("params", {}).get("k")
    try:
        encoded = encode_tensor(array, codec=group["codec"], k=k)
    except Exception as exc:
        expect_error(test, exc)
        return
    assert test["result"] == "valid", f"encoded, expected {test['error']}"
    if "ZstdEncoderChoice" in test["flags"]:
        # No expected payload: judged by property, as codec mode does.
        from conformance import codec_runner

        payload, content = bytes(encoded.payload), read(test["input"])
        assert codec_runner.zstd_encode_problem(payload, content) is None
        assert codec_runner.zstd_content_size_problem(payload, content) is None
        assert codec_runner.zstd_window_problem(payload, content) is None
        return
    assert bytes(encoded.payload) == read(test["expected"])


@pytest.mark.parametrize(("group", "test"), cases("ChunkSet"))
def test_chunk_set(group: dict[str, Any], test: dict[str, Any]) -> None:
    from pollen.blob import BlobAssembler, ChunkOutcome
    from pollen.errors import PollenError

    assembler = BlobAssembler(
        sha256=bytes.fromhex(test["blobSha256"]), total_size=test["totalSize"]
    )
    for chunk in test["chunks"]:
        data = bytes.fromhex(chunk["dataHex"]) if "dataHex" in chunk else read(chunk["dataFile"])
        if "error" in chunk:
            with pytest.raises(PollenError) as info:
                assembler.feed(chunk["offset"], data)
            assert info.value.code.name == chunk["error"]
        else:
            assert assembler.feed(chunk["offset"], data) is ChunkOutcome[chunk["outcome"].upper()]
        assert assembler.committed_size == chunk["committedSize"]
    try:
        blob = assembler.finish()
    except Exception as exc:
        expect_error(test, exc)
        return
    assert test["result"] == "valid", f"finished, expected {test['error']}"
    assert bytes(blob) == read(test["expected"])


@pytest.mark.parametrize(("group", "test"), cases("Value"))
def test_value(group: dict[str, Any], test: dict[str, Any]) -> None:
    from pollen.wire import value_from_proto_bytes

    try:
        value = value_from_proto_bytes(read(test["input"]))
    except Exception as exc:
        expect_error(test, exc)
        return
    assert test["result"] == "valid", f"decoded {value!r}, expected {test['error']}"
    kind, expected = test["valueType"], test["value"]
    if kind == "bool":
        assert value is expected
    elif kind == "int64":
        assert type(value) is int
        assert value == int(expected)
    elif kind == "double":
        assert type(value) is float
        assert struct.pack("<d", value) == int(expected, 16).to_bytes(8, "little")
    elif kind == "string":
        assert type(value) is str
        assert value == expected
        assert value.encode("utf-8").hex() == test["utf8Hex"]
    else:
        assert type(value) is bytes
        assert value.hex() == expected
