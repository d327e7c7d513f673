"""Codec mode of the conformance suite for the Python core (conformance/README.md).

    pollen conformance codec -- python -m reference_client.conformance_codec

Reads framed JSON requests (4-byte big-endian length, then UTF-8 JSON) from stdin until
EOF and answers each with one framed JSON response on stdout, using only the public core:
the wire decoder, the codecs, the blob assembler and the value decoder.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from pollen import wire
from pollen.blob import BlobAssembler
from pollen.dtypes import Dtype
from pollen.errors import PollenError
from pollen.limits import Limits
from pollen.tensors import encode_tensor

_LIMITS = {
    "maxMessageBytes": "max_message_bytes",
    "maxTensorBytes": "max_tensor_bytes",
    "maxTensors": "max_tensors",
    "maxRank": "max_rank",
    "maxBlobBytes": "max_blob_bytes",
    "maxMapEntries": "max_map_entries",
}


def _dtype(name: str) -> Dtype:
    return Dtype[name.upper()]


def _decode(request: Mapping[str, Any]) -> dict[str, Any]:
    limits = Limits(**{_LIMITS[k]: v for k, v in request.get("limits", {}).items()})
    codecs = frozenset(request["codecs"]) if "codecs" in request else None
    dtypes = frozenset(_dtype(n) for n in request["dtypes"]) if "dtypes" in request else None
    array = wire.decode_tensor_message(
        bytes.fromhex(request["inputHex"]), limits=limits, codecs=codecs, dtypes=dtypes
    )
    return {
        "dtype": Dtype.from_numpy(array.dtype).name.lower(),
        "shape": list(array.shape),
        "outputHex": array.tobytes().hex(),
    }


def _encode(request: Mapping[str, Any]) -> dict[str, Any]:
    dtype = _dtype(request["dtype"])
    data = bytes.fromhex(request["inputHex"])
    array = np.frombuffer(data, dtype=dtype.numpy).reshape(request["shape"])
    k = request.get("params", {}).get("k")
    encoded = encode_tensor(array, codec=request["groupCodec"], k=k)
    return {"outputHex": bytes(encoded.payload).hex()}


def _chunks(request: Mapping[str, Any]) -> dict[str, Any]:
    assembler = BlobAssembler(
        sha256=bytes.fromhex(request["blobSha256"]), total_size=request["totalSize"]
    )
    answers: list[dict[str, Any]] = []
    for chunk in request["chunks"]:
        answer: dict[str, Any] = {}
        try:
            answer["outcome"] = assembler.feed(
                chunk["offset"], bytes.fromhex(chunk["dataHex"])
            ).name.lower()
        except PollenError as exc:
            answer["error"] = exc.code.name
        answer["committedSize"] = assembler.committed_size
        answers.append(answer)
    try:
        blob = assembler.finish()
    except PollenError as exc:
        return {"result": "error", "error": exc.code.name, "chunks": answers}
    return {"chunks": answers, "outputHex": bytes(blob).hex()}


def _value(request: Mapping[str, Any]) -> dict[str, Any]:
    value = wire.value_from_proto_bytes(bytes.fromhex(request["inputHex"]))
    if isinstance(value, bool):
        return {"valueType": "bool", "value": value}
    if isinstance(value, int):
        return {"valueType": "int64", "value": str(value)}
    if isinstance(value, float):
        return {"valueType": "double", "value": struct.pack(">d", value).hex()}
    if isinstance(value, str):
        return {"valueType": "string", "value": value}
    return {"valueType": "bytes", "value": value.hex()}


_HANDLERS = {"TensorDecode": _decode, "TensorEncode": _encode, "ChunkSet": _chunks, "Value": _value}


def answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """The response to one request (never raises for a protocol error)."""
    handler = _HANDLERS.get(str(request.get("type")))
    if handler is None:
        return {"tcId": request.get("tcId"), "result": "skipped"}
    try:
        body = handler(request)
    except PollenError as exc:
        return {"tcId": request["tcId"], "result": "error", "error": exc.code.name}
    return {"tcId": request["tcId"], "result": "ok", **body}


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        (length,) = struct.unpack(">I", header)
        request = json.loads(stdin.read(length))
        body = json.dumps(answer(request)).encode()
        stdout.write(struct.pack(">I", len(body)) + body)
        stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
