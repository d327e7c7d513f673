"""Pollen: the sans-IO protocol core.

Wire types and their conversions, tensor codecs, validation, the protocol's state
machines, typed errors and the `Client` application interface. Nothing here does I/O or
imports gRPC: the reference server, the reference client and the simulation engine are
drivers built on top of it.
"""

from pollen.blob import BlobAssembler, BlobRef, ChunkOutcome, blob_ref
from pollen.client import Client, EvaluateResult, FitResult, QueryResult
from pollen.dtypes import Dtype
from pollen.errors import ErrorCode, PollenError, Retry, StatusCode
from pollen.handshake import Capabilities
from pollen.limits import Limits
from pollen.tensors import (
    EncodedTensor,
    decode_tensor,
    decode_tensors,
    encode_tensor,
    encode_tensors,
)
from pollen.values import Config, ConfigValue
from pollen.version import PROTOCOL_VERSION, ProtocolVersion

__all__ = [
    "PROTOCOL_VERSION",
    "BlobAssembler",
    "BlobRef",
    "Capabilities",
    "ChunkOutcome",
    "Client",
    "Config",
    "ConfigValue",
    "Dtype",
    "EncodedTensor",
    "ErrorCode",
    "EvaluateResult",
    "FitResult",
    "Limits",
    "PollenError",
    "ProtocolVersion",
    "QueryResult",
    "Retry",
    "StatusCode",
    "blob_ref",
    "decode_tensor",
    "decode_tensors",
    "encode_tensor",
    "encode_tensors",
]
