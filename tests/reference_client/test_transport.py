"""Failed calls become typed errors: from the trailer when it parses, else the status."""

from typing import Any

import grpc
import pytest

from pollen._generated.pollen.v1 import error_pb2
from pollen.errors import (
    ErrorCode,
    Retry,
    SessionUnknown,
    StatusCode,
    Unavailable,
    VersionUnsupported,
)
from pollen.services import ERROR_TRAILER
from pollen.version import ProtocolVersion
from pollen.wire import error_to_proto
from reference_client import ClientOptions, RetryPolicy
from reference_client.errors import CallError
from reference_client.transport import Security, channel_options, to_call_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailer: Any = ()) -> None:
        self._code, self._details, self._trailer = code, details, trailer

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailer


def _typed(error: Any) -> tuple[tuple[str, bytes], ...]:
    return ((ERROR_TRAILER, error_to_proto(error).SerializeToString()),)


def test_the_trailer_decides_when_present() -> None:
    error = VersionUnsupported("old", supported_versions=[ProtocolVersion(2, 1)])
    failed = to_call_error(
        "Handshake", FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "x", _typed(error))
    )
    assert failed.code is ErrorCode.VERSION_UNSUPPORTED
    assert failed.retry is Retry.NO
    assert failed.error is not None
    assert failed.error.supported_versions == (ProtocolVersion(2, 1),)
    # UNAVAILABLE from the table is retryable and carries retry_after_ms.
    busy = to_call_error(
        "PollTask",
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "", _typed(Unavailable(retry_after_ms=250))),
    )
    assert busy.retryable
    assert busy.retry_after_ms == 250
    gone = to_call_error(
        "PollTask", FakeRpcError(grpc.StatusCode.NOT_FOUND, "", _typed(SessionUnknown()))
    )
    assert gone.retry is Retry.AFTER_HANDSHAKE


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.ABORTED, True),
        (grpc.StatusCode.CANCELLED, True),  # not caused by the client (PLN-RTY-013)
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.INTERNAL, False),
    ],
)
def test_bare_statuses_follow_the_table(status: grpc.StatusCode, retryable: bool) -> None:
    failed = to_call_error("PollTask", FakeRpcError(status, "from a proxy"))
    assert failed.error is None
    assert failed.retryable is retryable


def test_an_unparseable_trailer_counts_as_absent() -> None:
    failed = to_call_error(
        "PollTask", FakeRpcError(grpc.StatusCode.UNAVAILABLE, "", ((ERROR_TRAILER, b"\xff\xff"),))
    )
    assert failed.error is None
    assert failed.retryable


def test_unspecified_reads_as_internal_and_unknown_codes_follow_retryable() -> None:
    unspecified = error_pb2.Error(message="?").SerializeToString()
    failed = to_call_error(
        "PollTask", FakeRpcError(grpc.StatusCode.INTERNAL, "", ((ERROR_TRAILER, unspecified),))
    )
    assert failed.code is ErrorCode.INTERNAL
    assert failed.retryable  # INTERNAL is retryable by the table (PLN-ERR-002)
    future = error_pb2.Error(code=999, retryable=False).SerializeToString()  # type: ignore[arg-type]
    failed = to_call_error(
        "PollTask", FakeRpcError(grpc.StatusCode.INTERNAL, "", ((ERROR_TRAILER, future),))
    )
    assert not failed.retryable  # PLN-ERR-004


def test_tls_failures_are_recognised() -> None:
    details = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Tls handshake failed (TSI_PROTOCOL_FAILURE): CERTIFICATE_VERIFY_FAILED"
    )
    assert CallError("Handshake", StatusCode.UNAVAILABLE, details, None).tls_failure
    refused = "failed to connect to all addresses; Connection refused"
    assert not CallError("Handshake", StatusCode.UNAVAILABLE, refused, None).tls_failure


def test_failures_become_task_errors() -> None:
    assert (
        CallError("DownloadBlob", StatusCode.UNAVAILABLE, "", None).as_pollen_error().code
        is ErrorCode.UNAVAILABLE
    )
    assert (
        CallError("DownloadBlob", StatusCode.PERMISSION_DENIED, "", None).as_pollen_error().code
        is ErrorCode.INTERNAL
    )


def test_security_settings() -> None:
    with pytest.raises(ValueError, match="plaintext"):
        Security(insecure=True, root_cert=b"x")
    with pytest.raises(ValueError, match="key"):
        Security(client_cert=b"x")
    assert Security(insecure=True).credentials() is None
    assert Security().credentials() is not None  # TLS with the system's roots by default


def test_channel_options_follow_the_limits_and_keepalive_rules() -> None:
    options = dict(
        channel_options(
            send_limit=1 << 40, receive_limit=1 << 20, options=ClientOptions(), policy=RetryPolicy()
        )
    )
    assert options["grpc.max_send_message_length"] == (1 << 31) - 1
    assert options["grpc.max_receive_message_length"] == 1 << 20
    assert options["grpc.keepalive_time_ms"] >= 300_000  # PLN-TRN-021
    assert options["grpc.enable_retries"] == 0
