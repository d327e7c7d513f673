import pytest

from pollen import wire
from pollen._generated.pollen.v1 import blob_service_pb2
from pollen.blob import blob_ref
from pollen.errors import InvalidArgument


def test_download_chunks_round_trip_zero_copy() -> None:
    chunk = bytes(range(256)) * 10
    data = wire.download_chunk_to_bytes(offset=4096, data=chunk, total_size=10_000)
    upb = blob_service_pb2.DownloadBlobResponse.FromString(data)
    assert (upb.offset, upb.data, upb.total_size) == (4096, chunk, 10_000)
    parsed = wire.download_chunk_from_bytes(data)
    assert (parsed.offset, bytes(parsed.data), parsed.total_size) == (4096, chunk, 10_000)
    assert parsed.data.obj is data


def test_upload_chunks_round_trip_and_validate_digest() -> None:
    ref = blob_ref(b"hello world")
    chunk = wire.UploadChunk(session_id="s1", blob=ref, offset=6, data=memoryview(b"world"))
    data = wire.upload_chunk_to_bytes(chunk)
    upb = blob_service_pb2.UploadBlobRequest.FromString(data)
    assert (upb.session_id, upb.sha256, upb.total_size, upb.offset, upb.data) == (
        "s1", ref.sha256, 11, 6, b"world",
    )  # fmt: skip
    back = wire.upload_chunk_from_bytes(data)
    assert (back.session_id, back.blob, back.offset, bytes(back.data)) == ("s1", ref, 6, b"world")
    bad = blob_service_pb2.UploadBlobRequest(sha256=b"x", total_size=1).SerializeToString()
    with pytest.raises(InvalidArgument, match="32 bytes"):
        wire.upload_chunk_from_bytes(bad)
    status_query = blob_service_pb2.UploadBlobRequest(sha256=ref.sha256, total_size=11)
    assert bytes(wire.upload_chunk_from_bytes(status_query.SerializeToString()).data) == b""
