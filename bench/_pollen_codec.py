"""Pollen side of bench_codec.py; runs in the project's virtual environment.

One fresh process per (size, family) measures Pollen's path from a list of float32 arrays
to what goes on the wire and back, mirroring the incumbent's families in _flwr_codec.py:
  codec:   encode_tensor / decode_tensor with the raw codec (payload buffers, like flwr's
           Parameters of np.save bytes)
  message: whole serialized pollen.v1.Tensor messages (wire bytes), and back
  blob:    content-addressed blobs, like flwr's objects: encode = payloads, their SHA-256s
           and chunk views ready to serve; decode = chunks as delivered, reassembled and
           checked against their digests by the sans-IO assembler, then decoded. The
           per-transfer transport work (framing chunks into DownloadBlobResponse messages and
           parsing them) is measured separately as "frame" and "parse", as flwr's object
           path also stops before its transport messages
Prints one JSON object per measurement on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import model, timed

from pollen import wire
from pollen.blob import BlobAssembler, blob_refs, iter_chunks
from pollen.handshake import CHUNK_OVERHEAD_BYTES
from pollen.limits import Limits
from pollen.tensors import EncodedTensor, decode_tensor, encode_tensor

CHUNK = Limits().max_message_bytes - CHUNK_OVERHEAD_BYTES


# Per tensor: header, digest, size and its chunks as (offset, bytes-like).
Blobs = list[tuple[EncodedTensor, bytes, int, list[tuple[int, memoryview]]]]


def blob_encode(arrays: Sequence[np.ndarray]) -> Blobs:
    """Arrays -> content-addressed blobs ready to serve: payloads, SHA-256s, chunk views."""
    encoded = [encode_tensor(a) for a in arrays]
    refs = blob_refs([e.payload for e in encoded])
    return [
        (e, r.sha256, r.size, list(iter_chunks(e.payload, CHUNK)))
        for e, r in zip(encoded, refs, strict=True)
    ]


def blob_decode(
    received: list[tuple[EncodedTensor, bytes, int, list[tuple[int, bytes]]]],
    pool: ThreadPoolExecutor,
) -> list[np.ndarray]:
    """Chunks as a transport delivers them -> verified blobs -> arrays (2 threads)."""

    def receive(item: tuple[EncodedTensor, bytes, int, list[tuple[int, bytes]]]) -> np.ndarray:
        header, digest, size, chunks = item
        assembler = BlobAssembler(sha256=digest, total_size=size)
        for offset, data in chunks:
            assembler.feed(offset, data)
        tensor = EncodedTensor(
            dtype=header.dtype, shape=header.shape, codec=header.codec, payload=assembler.finish()
        )
        return decode_tensor(tensor)

    return list(pool.map(receive, received))


def frame(blobs: Blobs) -> list[list[bytes]]:
    """Transport work per transfer: chunk views -> serialized DownloadBlobResponse messages."""
    return [
        [wire.download_chunk_to_bytes(offset=o, data=c, total_size=size) for o, c in chunks]
        for _, _, size, chunks in blobs
    ]


def parse(messages: list[list[bytes]]) -> list[list[tuple[int, memoryview]]]:
    """Transport work per transfer: serialized messages -> chunk views (no copy)."""
    parsed = [[wire.download_chunk_from_bytes(m) for m in tensor] for tensor in messages]
    return [[(c.offset, c.data) for c in tensor] for tensor in parsed]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, required=True)
    ap.add_argument("--arrays", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--family", choices=["codec", "message", "blob"], required=True)
    args = ap.parse_args()
    arrays = model(args.params, args.arrays)
    nbytes = sum(a.nbytes for a in arrays)

    def emit(op: str, times: list[float], **extra: object) -> None:
        record = {
            "impl": "pollen", "family": args.family, "op": op, "params": args.params,
            "bytes": nbytes, "reps": len(times), "median_s": statistics.median(times),
            "all_s": times, **extra,
        }  # fmt: skip
        print(json.dumps(record), flush=True)

    def check(out: Sequence[np.ndarray]) -> None:
        assert all(np.array_equal(a, b) for a, b in zip(arrays, out, strict=True))

    emit("np.copy", timed(lambda: [a.copy() for a in arrays], args.reps))
    if args.family == "codec":
        encoded = [encode_tensor(a) for a in arrays]
        check([decode_tensor(e) for e in encoded])
        emit("encode", timed(lambda: [encode_tensor(a) for a in arrays], args.reps))
        emit("decode", timed(lambda: [decode_tensor(e) for e in encoded], args.reps))
    elif args.family == "message":
        messages = [wire.tensor_to_bytes(encode_tensor(a)) for a in arrays]
        check([wire.decode_tensor_message(m) for m in messages])
        emit(
            "encode",
            timed(lambda: [wire.tensor_to_bytes(encode_tensor(a)) for a in arrays], args.reps),
        )
        emit("decode", timed(lambda: [wire.decode_tensor_message(m) for m in messages], args.reps))
    else:
        blobs = blob_encode(arrays)
        # What the receiving side holds: each chunk as its own bytes object.
        received = [(e, d, n, [(o, bytes(c)) for o, c in ch]) for e, d, n, ch in blobs]
        with ThreadPoolExecutor(max_workers=2) as pool:
            check(blob_decode(received, pool))
            emit(
                "encode",
                timed(lambda: blob_encode(arrays), args.reps),
                chunks=sum(len(b[3]) for b in blobs),
                chunk_bytes=CHUNK,
            )
            emit("decode", timed(lambda: blob_decode(received, pool), args.reps))
        framed = frame(blobs)
        emit("frame", timed(lambda: frame(blobs), args.reps))
        emit("parse", timed(lambda: parse(framed), args.reps))


if __name__ == "__main__":
    main()
