from pollen import wire
from pollen._generated.pollen.v1 import error_pb2
from pollen.errors import (
    ErrorCode,
    InternalError,
    Retry,
    VersionUnsupported,
)
from pollen.version import ProtocolVersion


def test_errors_round_trip() -> None:
    err = VersionUnsupported(
        "nope", field="versions", supported_versions=[ProtocolVersion(1, 0)], retry_after_ms=5
    )
    data = wire.error_to_proto(err).SerializeToString()
    back = wire.error_from_bytes(data)
    assert isinstance(back, VersionUnsupported)
    assert (back.message, back.field, back.supported_versions, back.retry_after_ms) == (
        "nope",
        "versions",
        (ProtocolVersion(1, 0),),
        5,
    )
    assert error_pb2.Error.FromString(data).retryable is False


def test_unknown_error_codes_follow_the_senders_retry_flag() -> None:
    unknown: object = 999
    data = error_pb2.Error(code=unknown, message="new", retryable=True).SerializeToString()  # type: ignore[arg-type]
    back = wire.error_from_bytes(data)
    assert isinstance(back, InternalError)
    assert back.retry is Retry.YES
    assert "999" in back.message
    assert wire.error_from_bytes(b"\xff").code is ErrorCode.INTERNAL
