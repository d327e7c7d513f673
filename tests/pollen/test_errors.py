import json
from pathlib import Path

import pytest
import yaml

from pollen import errors
from pollen._generated.pollen.v1 import error_pb2
from pollen.errors import ErrorCode, PollenError, Retry, StatusCode, make_error

ROOT = Path(__file__).resolve().parents[2]


def test_error_codes_match_the_wire_enum() -> None:
    wire = {
        name.removeprefix("ERROR_CODE_"): number
        for name, number in error_pb2.ErrorCode.items()
        if number != 0
    }
    assert wire == {code.name: code.value for code in ErrorCode}


def test_error_table_covers_every_code_exactly_once() -> None:
    table = yaml.safe_load((ROOT / "spec" / "errors.yaml").read_text())
    assert list(table["codes"]) == [code.name for code in ErrorCode]
    assert set(errors.ERROR_TABLE) == set(ErrorCode)


def test_generated_copy_of_the_table_is_the_yaml() -> None:
    yaml_data = yaml.safe_load((ROOT / "spec" / "errors.yaml").read_text())
    json_data = json.loads((ROOT / "pollen" / "_generated" / "errors.json").read_text())
    assert json_data == yaml_data


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_its_own_exception_class(code: ErrorCode) -> None:
    cls = errors.error_class(code)
    assert cls is not PollenError
    assert cls.code is code
    err = make_error(code, "boom", field="a.b")
    assert isinstance(err, cls)
    assert err.message == "boom"
    assert str(err) == f"{code.name}: boom (at a.b)"


@pytest.mark.parametrize(
    ("cls", "status", "retry"),
    [
        (errors.VersionUnsupported, StatusCode.FAILED_PRECONDITION, Retry.NO),
        (errors.SessionUnknown, StatusCode.NOT_FOUND, Retry.AFTER_HANDSHAKE),
        (errors.Unavailable, StatusCode.UNAVAILABLE, Retry.YES),
        (errors.BlobDigestMismatch, StatusCode.DATA_LOSS, Retry.YES),
        (errors.LimitExceeded, StatusCode.RESOURCE_EXHAUSTED, Retry.NO),
        (errors.TaskNotAssigned, StatusCode.PERMISSION_DENIED, Retry.NO),
        (errors.ShapeInvalid, StatusCode.INVALID_ARGUMENT, Retry.NO),
    ],
)
def test_errors_carry_status_and_retryability_from_the_table(
    cls: type[PollenError], status: StatusCode, retry: Retry
) -> None:
    err = cls()
    assert err.grpc_status is status
    assert err.retry is retry
    assert err.retryable is (retry is Retry.YES)
    assert err.message == errors.ERROR_TABLE[cls.code].meaning


def test_client_only_codes_have_no_grpc_status_of_their_own() -> None:
    assert errors.ERROR_TABLE[ErrorCode.APP_ERROR].grpc_status is None
    assert errors.AppError().grpc_status is StatusCode.INTERNAL


def test_retry_for_bare_grpc_status() -> None:
    assert errors.retry_for_status(StatusCode.UNAVAILABLE) is Retry.YES
    assert errors.retry_for_status(StatusCode.DEADLINE_EXCEEDED) is Retry.YES
    assert errors.retry_for_status(StatusCode.RESOURCE_EXHAUSTED) is Retry.NO
    assert errors.retry_for_status(StatusCode.INVALID_ARGUMENT) is Retry.NO


def test_retry_override_is_kept_for_unknown_codes() -> None:
    err = errors.InternalError("from the future", retry=Retry.NO)
    assert not err.retryable
    assert errors.InternalError("plain").retryable
