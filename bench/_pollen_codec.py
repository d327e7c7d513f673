"""Pollen side of bench_codec.py; runs in the project's virtual environment.

One fresh process per (size, family) measures Pollen's path from a list of float32 arrays
to what goes on the wire and back, mirroring the incumbent's families in _flwr_codec.py:
  codec:   encode_tensor / decode_tensor with the raw codec (payload buffers, like flwr's
           Parameters of np.save bytes)
  message: whole serialized pollen.v1.Tensor messages (wire bytes), and back
  blob:    content-addressed blobs: SHA-256 of every tensor, chunked into serialized
           DownloadBlobResponse messages; back through the sans-IO assembler, which checks
           every blob's digest, then decoding
Prints one JSON object per measurement on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pollen import wire
from pollen.blob import BlobAssembler, blob_refs, iter_chunks
from pollen.handshake import CHUNK_OVERHEAD_BYTES
from pollen.limits import Limits
from pollen.tensors import EncodedTensor, decode_tensor, encode_tensor

CHUNK = Limits().max_message_bytes - CHUNK_OVERHEAD_BYTES


def model(params: int, arrays: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    per = params // arrays
    sizes = [per] * (arrays - 1) + [params - per * (arrays - 1)]
    return [
        rng.standard_normal(s, dtype=np.float32).reshape(-1, 100 if s % 100 == 0 else 1)
        for s in sizes
    ]


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


BlobWire = list[tuple[EncodedTensor, bytes, int, list[bytes]]]


def blob_encode(arrays: Sequence[np.ndarray], pool: ThreadPoolExecutor) -> BlobWire:
    encoded = [encode_tensor(a) for a in arrays]
    refs = blob_refs([e.payload for e in encoded])

    def frame(item: tuple[EncodedTensor, int]) -> list[bytes]:
        tensor, size = item
        return [
            wire.download_chunk_to_bytes(offset=offset, data=chunk, total_size=size)
            for offset, chunk in iter_chunks(tensor.payload, CHUNK)
        ]

    chunks = list(pool.map(frame, [(e, r.size) for e, r in zip(encoded, refs, strict=True)]))
    return [(e, r.sha256, r.size, c) for e, r, c in zip(encoded, refs, chunks, strict=True)]


def blob_decode(blobs: BlobWire, pool: ThreadPoolExecutor) -> list[np.ndarray]:
    def receive(item: tuple[EncodedTensor, bytes, int, list[bytes]]) -> np.ndarray:
        header, digest, size, chunks = item
        assembler = BlobAssembler(sha256=digest, total_size=size)
        for data in chunks:
            chunk = wire.download_chunk_from_bytes(data)
            assembler.feed(chunk.offset, chunk.data)
        tensor = EncodedTensor(
            dtype=header.dtype, shape=header.shape, codec=header.codec, payload=assembler.finish()
        )
        return decode_tensor(tensor)

    return list(pool.map(receive, blobs))


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
        with ThreadPoolExecutor(max_workers=2) as pool:
            blobs = blob_encode(arrays, pool)
            check(blob_decode(blobs, pool))
            emit(
                "encode",
                timed(lambda: blob_encode(arrays, pool), args.reps),
                chunks=sum(len(b[3]) for b in blobs),
                chunk_bytes=CHUNK,
            )
            emit("decode", timed(lambda: blob_decode(blobs, pool), args.reps))


if __name__ == "__main__":
    main()
