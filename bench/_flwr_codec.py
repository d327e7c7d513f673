"""Flower (flwr 1.42) side of bench_codec.py; runs inside the flwr virtual environment.

Measures, in one fresh process per (size, family), the incumbent's paths from a list of
float32 arrays to what it puts on the wire and back:
  legacy:  ndarrays_to_parameters / parameters_to_ndarrays (np.save bytes per array)
  message: the same plus the protobuf wrapping of its legacy gRPC path
           (parameters_to_proto + SerializeToString, and back)
  objects: ArrayRecord -> content-addressed, deflated objects with SHA-256 ids (what the
           1.42 Message API sends), and back
Prints one JSON object per measurement on stdout. Imports nothing from Pollen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
from _common import model, timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, required=True)
    ap.add_argument("--arrays", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--family", choices=["legacy", "message", "objects"], required=True)
    args = ap.parse_args()

    import flwr
    from flwr.app import ArrayRecord
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.serde import parameters_from_proto, parameters_to_proto
    from flwr.proto.transport_pb2 import Parameters as ParametersProto
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    arrays = model(args.params, args.arrays)
    nbytes = sum(a.nbytes for a in arrays)

    def emit(op: str, times: list[float]) -> None:
        print(
            json.dumps(
                {
                    "impl": "flwr",
                    "version": flwr.__version__,
                    "family": args.family,
                    "op": op,
                    "params": args.params,
                    "bytes": nbytes,
                    "reps": len(times),
                    "median_s": statistics.median(times),
                    "all_s": times,
                }
            ),
            flush=True,
        )

    def check(out: list[np.ndarray]) -> None:
        assert all(np.array_equal(a, b) for a, b in zip(arrays, out, strict=True))

    emit("np.copy", timed(lambda: [a.copy() for a in arrays], args.reps))
    if args.family == "legacy":
        params = ndarrays_to_parameters(arrays)
        check(parameters_to_ndarrays(params))
        emit("encode", timed(lambda: ndarrays_to_parameters(arrays), args.reps))
        emit("decode", timed(lambda: parameters_to_ndarrays(params), args.reps))
    elif args.family == "message":

        def encode() -> bytes:
            return parameters_to_proto(ndarrays_to_parameters(arrays)).SerializeToString()

        def decode(data: bytes) -> list[np.ndarray]:
            return parameters_to_ndarrays(parameters_from_proto(ParametersProto.FromString(data)))

        wire = encode()
        check(decode(wire))
        emit("encode", timed(encode, args.reps))
        emit("decode", timed(lambda: decode(wire), args.reps))
    else:

        def encode_objects() -> tuple[str, dict[str, bytes]]:
            record = ArrayRecord(arrays)
            objects = get_all_nested_objects(record)
            return record.object_id, {oid: obj.deflate() for oid, obj in objects.items()}

        def decode_objects(root: str, contents: dict[str, bytes]) -> list[np.ndarray]:
            record = inflate_object_from_contents(root, dict(contents), keep_object_contents=True)
            return record.to_numpy_ndarrays()

        root, contents = encode_objects()
        check(decode_objects(root, contents))
        emit("encode", timed(encode_objects, args.reps))
        emit("decode", timed(lambda: decode_objects(root, contents), args.reps))


if __name__ == "__main__":
    main()
