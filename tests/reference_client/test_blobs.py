"""Blob payloads: resumable, verified downloads and uploads, over real gRPC."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.errors import BlobDigestMismatch, ErrorCode, StatusCode
from pollen.limits import Limits
from pollen.messages import FailureReply, FitReply
from reference_client import ClientOptions
from tests.reference_client.apps import Trainer
from tests.reference_client.fakeserver import (
    FakeServer,
    Running,
    fit_task,
    result_arrays,
    shutdown,
)

CHUNK = 1024


def test_a_broken_download_resumes_from_the_bytes_held(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(chunk_size_bytes=CHUNK)
    params: list[npt.NDArray[Any]] = [np.arange(2560, dtype=np.float32), np.arange(4)]
    server.add_task(fit_task("t1", params, server=server))
    first = next(iter(server.blobs))
    server.break_downloads[first] = 4  # the first stream breaks after 4 chunks
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    downloads = [c.request for c in server.calls_of("DownloadBlob") if c.request.sha256 == first]
    assert [d.offset for d in downloads] == [0, 4 * CHUNK]  # PLN-BLB-013
    got = result_arrays(server, "t1")
    np.testing.assert_array_equal(got[0], params[0] + 1)
    np.testing.assert_array_equal(got[1], params[1] + 1)


def test_a_blob_that_fails_verification_is_fetched_again_then_reported(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(chunk_size_bytes=CHUNK)
    app = Trainer()
    server.add_task(fit_task("t1", [np.arange(600, dtype=np.float32)], server=server))
    sha = next(iter(server.blobs))
    server.blobs[sha] = bytes(len(server.blobs[sha]))  # same size, wrong bytes
    server.add_task(shutdown())
    assert start(app, server.address).join() == 0
    downloads = server.calls_of("DownloadBlob")
    assert [d.request.offset for d in downloads] == [0, 0, 0]  # from 0 each time
    reply = server.results["t1"].reply
    assert isinstance(reply, FailureReply)
    assert reply.error.code is ErrorCode.BLOB_DIGEST_MISMATCH
    assert reply.error.field == "fit.parameters[0].blob"
    assert app.fits == 0  # nothing unverified reaches the application


def test_a_chunk_over_the_session_chunk_size_is_a_digest_mismatch(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    # PLN-BLB-030: the server declared CHUNK but sends 2 x CHUNK per chunk.
    server = make_server(chunk_size_bytes=CHUNK, download_chunk_bytes=2 * CHUNK)
    app = Trainer()
    server.add_task(fit_task("t1", [np.arange(600, dtype=np.float32)], server=server))
    server.add_task(shutdown())
    assert start(app, server.address).join() == 0
    assert [d.request.offset for d in server.calls_of("DownloadBlob")] == [0, 0, 0]
    reply = server.results["t1"].reply
    assert isinstance(reply, FailureReply)
    assert reply.error.code is ErrorCode.BLOB_DIGEST_MISMATCH
    assert app.fits == 0


def test_a_blob_over_the_client_limit_is_refused_before_downloading(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(fit_task("t1", [np.zeros(1000, dtype=np.float32)], server=server))
    server.add_task(shutdown())
    options = ClientOptions(limits=Limits(max_blob_bytes=3999))
    assert start(Trainer(), server.address, options=options).join() == 0
    assert server.calls_of("DownloadBlob") == []  # PLN-BLB-011
    reply = server.results["t1"].reply
    assert isinstance(reply, FailureReply)
    assert reply.error.code is ErrorCode.LIMIT_EXCEEDED
    assert reply.error.field == "fit.parameters[0].blob.size"


def test_a_missing_blob_is_the_tasks_failure(
    server: FakeServer, start: Callable[..., Running]
) -> None:
    server.add_task(fit_task("t1", [np.zeros(8, dtype=np.float32)], server=server))
    server.blobs.clear()
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    reply = server.results["t1"].reply
    assert isinstance(reply, FailureReply)
    assert reply.error.code is ErrorCode.BLOB_NOT_FOUND
    assert len(server.calls_of("DownloadBlob")) == 1  # not retryable


def test_a_large_result_is_uploaded_as_a_blob_and_resumed_after_a_failure(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(max_message_bytes=64 * 1024, chunk_size_bytes=16 * 1024)
    params: list[npt.NDArray[Any]] = [np.arange(40_000, dtype=np.float32), np.ones(3)]
    server.add_task(fit_task("t1", params))
    server.fail("UploadBlob", StatusCode.UNAVAILABLE, after=3)  # the 4th chunk fails once
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0

    uploads = [c.request for c in server.calls_of("UploadBlob")]
    offsets = [(u.offset, len(u.data)) for u in uploads]
    committed = 3 * 16 * 1024
    assert offsets[:4] == [(0, 16384), (16384, 16384), (32768, 16384), (committed, 16384)]
    assert offsets[4] == (0, 0)  # a status query first when resuming (PLN-BLB-023)
    assert offsets[5] == (committed, 16384)  # then on from the committed size
    assert sum(n for _, n in offsets) == 160_000 + 16384  # one chunk sent twice, no more

    submit = server.calls_of("SubmitResult")[0].request
    assert submit.ByteSize() <= 64 * 1024
    tensors = submit.result.fit.parameters
    assert tensors[0].WhichOneof("payload") == "blob"
    assert tensors[1].WhichOneof("payload") == "inline_data"  # small ones stay inline
    got = result_arrays(server, "t1")
    assert isinstance(server.results["t1"].reply, FitReply)
    np.testing.assert_array_equal(got[0], params[0] + 1)
    np.testing.assert_array_equal(got[1], params[1] + 1)


def test_an_upload_refused_as_a_digest_mismatch_starts_again_from_zero(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(max_message_bytes=64 * 1024, chunk_size_bytes=16 * 1024)
    params = [np.arange(20_000, dtype=np.float32)]
    server.add_task(fit_task("t1", params))
    server.fail("UploadBlob", BlobDigestMismatch("corrupted in transit"), after=2)
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    offsets = [c.request.offset for c in server.calls_of("UploadBlob")]
    assert offsets[:4] == [0, 16384, 32768, 0]  # PLN-BLB-024
    np.testing.assert_array_equal(result_arrays(server, "t1")[0], params[0] + 1)


def test_a_result_whose_blob_went_missing_is_uploaded_again(
    make_server: Callable[..., FakeServer], start: Callable[..., Running]
) -> None:
    server = make_server(max_message_bytes=64 * 1024, chunk_size_bytes=16 * 1024)
    server.add_task(fit_task("t1", [np.arange(20_000, dtype=np.float32)]))
    dropped = {"done": False}
    original = server.blobs

    class Forgetful(dict[bytes, bytes]):
        def __contains__(self, key: object) -> bool:
            # The first submission finds no blob, as after a server restart.
            if not dropped["done"] and len(server.calls_of("SubmitResult")) == 1:
                dropped["done"] = True
                return False
            return super().__contains__(key)

    server.blobs = Forgetful(original)
    server.add_task(shutdown())
    assert start(Trainer(), server.address).join() == 0
    assert len(server.calls_of("SubmitResult")) == 2
    methods = server.methods()
    first, second = (i for i, m in enumerate(methods) if m == "SubmitResult")
    assert "UploadBlob" in methods[first:second]  # PLN-TSK-033
    assert isinstance(server.results["t1"].reply, FitReply)
