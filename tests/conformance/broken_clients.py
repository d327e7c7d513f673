"""Deliberately broken programs under test: the reference conformance client with one bug.

    python tests/conformance/broken_clients.py VARIANT          # client mode
    python tests/conformance/broken_clients.py VARIANT codec    # codec mode

Each variant patches one behaviour the suite must catch; the self-checks assert that the
suite fails exactly the cases that behaviour breaks and passes the others.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402


def big_endian_tensors() -> None:
    """The SDK's raw encoder writes elements big-endian (the canonical order is little)."""
    from pollen.codecs.raw import RawCodec

    def encode(self: RawCodec, array: npt.NDArray[Any], **params: object) -> memoryview:
        return np.ascontiguousarray(array).byteswap().view(np.uint8).data

    RawCodec.encode = encode  # type: ignore[method-assign]


def ignore_deadlines() -> None:
    """The SDK forgets a task's deadline and finishes late work anyway."""
    from reference_client import session

    begin = session.Session._begin_work

    def begin_work(self: session.Session, task: Any, received_at: float) -> None:
        begin(self, task, received_at)
        if self.work is not None:
            self.work.deadline_at = None

    session.Session._begin_work = begin_work  # type: ignore[method-assign]


def retry_everything() -> None:
    """The SDK retries every failed call, the non-retryable ones included."""
    from reference_client.errors import CallError

    CallError.retryable = property(lambda self: True)  # type: ignore[method-assign,assignment]


def backoff_carried_over() -> None:
    """After a reconnect instruction the SDK goes on with the retry sequence of the case's two
    earlier PollTask failures instead of starting afresh (PLN-CTL-004)."""
    from reference_client import session

    on_control = session.Session._on_control

    def carried(self: session.Session, instruction: Any, received_at: float) -> None:
        on_control(self, instruction, received_at)
        self.backoff.failures = 2

    session.Session._on_control = carried  # type: ignore[method-assign]


def no_backoff() -> None:
    """The SDK retries after 50 ms instead of the spec's backoff."""
    from reference_client import runner
    from reference_client.backoff import RetryPolicy

    original = runner.ReferenceClient.__init__

    def init(self: runner.ReferenceClient, *args: Any, **kwargs: Any) -> None:
        kwargs["retry"] = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.05)
        original(self, *args, **kwargs)

    runner.ReferenceClient.__init__ = init  # type: ignore[method-assign]


def cancelled_fatal() -> None:
    """The SDK follows the bare-status table without CANCELLED: a server that stops with a
    long poll in flight kills the client (PLN-RTY-013)."""
    from pollen.errors import Retry, StatusCode
    from reference_client import errors

    original = errors.retry_for_status  # type: ignore[attr-defined]

    def retry_for_status(status: StatusCode) -> Retry:
        return Retry.NO if status is StatusCode.CANCELLED else original(status)

    errors.retry_for_status = retry_for_status  # type: ignore[attr-defined]


def rerun_redelivered() -> None:
    """The SDK forgets a result once it is sent and runs a task delivered again a second
    time (PLN-TSK-015)."""
    from reference_client import session

    begin = session.Session._begin_work

    def begin_work(self: session.Session, task: Any, received_at: float) -> None:
        self.answered.pop(task.task_id, None)
        begin(self, task, received_at)

    session.Session._begin_work = begin_work  # type: ignore[method-assign]


def _patch_zstd(encode: Any) -> None:
    """Replace the SDK's zstd encoder by `encode(canonical bytes) -> payload`."""
    from pollen.codecs._base import canonical
    from pollen.codecs.zstd import ZstdCodec
    from pollen.dtypes import Dtype

    def patched(self: ZstdCodec, array: npt.NDArray[Any], **params: object) -> bytes:
        flat = canonical(array, Dtype.from_numpy(array.dtype))
        return bytes(encode(bytes(flat.view(np.uint8).data)))

    ZstdCodec.encode = patched  # type: ignore[method-assign]


def zstd_two_frames() -> None:
    """The SDK's zstd encoder writes the two halves of the content as two frames (decoders
    that read across frames still get the content back)."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3, write_content_size=True)
    _patch_zstd(
        lambda data: (
            compressor.compress(data[: len(data) // 2])
            + compressor.compress(data[len(data) // 2 :])
        )
    )


def zstd_dictionary_id() -> None:
    """The SDK's zstd encoder writes a dictionary id (42) into the frame header."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3, write_content_size=True)

    def encode(data: bytes) -> bytes:
        frame = compressor.compress(data)
        descriptor = frame[4]
        at = 5 if descriptor & 0x20 else 6  # after the window descriptor, if any
        assert descriptor & 0x03 == 0
        return frame[:4] + bytes([descriptor | 0x01]) + frame[5:at] + b"\x2a" + frame[at:]

    _patch_zstd(encode)


def zstd_no_content_size() -> None:
    """The SDK's zstd encoder leaves the content size out of the frame header (a SHOULD)."""
    import zstandard

    _patch_zstd(zstandard.ZstdCompressor(level=3, write_content_size=False).compress)


VARIANTS = {
    "big-endian-tensors": big_endian_tensors,
    "ignore-deadlines": ignore_deadlines,
    "retry-everything": retry_everything,
    "no-backoff": no_backoff,
    "backoff-carried-over": backoff_carried_over,
    "cancelled-fatal": cancelled_fatal,
    "rerun-redelivered": rerun_redelivered,
    "zstd-two-frames": zstd_two_frames,
    "zstd-dictionary-id": zstd_dictionary_id,
    "zstd-no-content-size": zstd_no_content_size,
}

if __name__ == "__main__":
    VARIANTS[sys.argv[1]]()
    if len(sys.argv) > 2 and sys.argv[2] == "codec":
        from reference_client.conformance_codec import serve

        serve(sys.stdin.buffer, sys.stdout.buffer)
        sys.exit(0)
    from reference_client.conformance import main

    sys.exit(main())
