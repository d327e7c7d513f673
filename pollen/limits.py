"""Receive limits and the shape checks of the tensor decode check order.

A peer declares the limits it enforces on what it receives; on the wire a field of 0 means
the default. `check_shape` applies steps 4 to 6 of the decode check order (rank, shape,
decoded size), deciding from the shape alone so that nothing is allocated for a tensor
whose declared size is already unacceptable.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, SupportsIndex

from pollen.errors import LimitExceeded, ShapeInvalid

if TYPE_CHECKING:
    from pollen.dtypes import Dtype

#: The largest int64, which bounds every count and byte size of a tensor.
INT64_MAX = (1 << 63) - 1

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

# Largest value each negotiated field can carry (its width in pollen.v1.Limits).
_WIRE_MAX = {
    "max_message_bytes": _UINT64_MAX,
    "max_tensor_bytes": _UINT64_MAX,
    "max_tensors": _UINT32_MAX,
    "max_rank": _UINT32_MAX,
    "max_blob_bytes": _UINT64_MAX,
    "max_map_entries": _UINT32_MAX,
}

#: The fields of pollen.v1.Limits, in wire order.
WIRE_FIELDS = tuple(_WIRE_MAX)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Limits a receiver enforces; the defaults are the spec's.

    The first six are negotiated in the handshake; names and map keys have fixed limits.
    Every value is a real limit (at least 1): the wire's "0 means default" is resolved by
    `merged` / `from_wire`, never stored here.
    """

    max_message_bytes: int = 4 * 1024 * 1024
    max_tensor_bytes: int = 1 << 34
    max_tensors: int = 65536
    max_rank: int = 32
    max_blob_bytes: int = 1 << 35
    max_map_entries: int = 1024
    max_name_bytes: int = 256
    max_key_bytes: int = 256

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Limits.{item.name} must be an int, got {value!r}")
            if not 1 <= value <= _WIRE_MAX.get(item.name, INT64_MAX):
                raise ValueError(f"Limits.{item.name} is out of range: {value}")

    def merged(self, wire: Mapping[str, int]) -> Limits:
        """A copy with the nonzero values of `wire` (pollen.v1.Limits fields) applied.

        A value of 0 keeps this object's value, so `Limits().merged(msg_fields)` reads a
        received message with the spec's "0 means the default" rule.
        """
        unknown = set(wire) - set(WIRE_FIELDS)
        if unknown:
            raise ValueError(f"not pollen.v1.Limits fields: {sorted(unknown)}")
        return replace(self, **{name: value for name, value in wire.items() if value != 0})

    @classmethod
    def from_wire(cls, wire: Mapping[str, int]) -> Limits:
        """Limits from received pollen.v1.Limits field values (0 means the default)."""
        return cls().merged(wire)

    def to_wire(self) -> dict[str, int]:
        """The negotiated fields, as values for a pollen.v1.Limits message."""
        return {name: getattr(self, name) for name in WIRE_FIELDS}


def check_shape(shape: Sequence[SupportsIndex], dtype: Dtype, limits: Limits) -> int:
    """Steps 4-6 of the decode check order; returns numel.

    Extents may be any integers (numpy's included); anything else is SHAPE_INVALID.

    4. LIMIT_EXCEEDED: more extents than `limits.max_rank`.
    5. SHAPE_INVALID: a negative extent (even next to a 0); or, when no extent is 0, numel
       or numel x itemsize above 2^63 - 1.
    6. LIMIT_EXCEEDED: numel x itemsize above `limits.max_tensor_bytes`.
    """
    if len(shape) > limits.max_rank:
        raise LimitExceeded(f"rank {len(shape)} exceeds max_rank {limits.max_rank}", field="shape")
    extents = [_extent(axis, extent) for axis, extent in enumerate(shape)]
    if 0 in extents:
        # Empty whatever the other extents are, so they must not be multiplied.
        return 0
    numel = 1
    for extent in extents:
        numel *= extent
        # Stop as soon as the product is too large, so it never grows unboundedly.
        if numel > INT64_MAX:
            raise ShapeInvalid(f"shape {extents} has more than 2^63 - 1 elements", field="shape")
    nbytes = numel * dtype.itemsize
    if nbytes > INT64_MAX:
        raise ShapeInvalid(
            f"shape {extents} of {dtype.name} is more than 2^63 - 1 bytes", field="shape"
        )
    if nbytes > limits.max_tensor_bytes:
        raise LimitExceeded(
            f"the tensor is {nbytes} bytes, over max_tensor_bytes {limits.max_tensor_bytes}",
            field="shape",
        )
    return numel


def _extent(axis: int, extent: object) -> int:
    # A plain int is the common case, and isinstance against the SupportsIndex protocol
    # costs microseconds per call: per tensor per client, that dominated a simulation.
    if type(extent) is int:
        value = extent
    elif isinstance(extent, bool) or not isinstance(extent, SupportsIndex):
        raise ShapeInvalid(f"extent {axis} is not an integer: {extent!r}", field="shape")
    else:
        value = operator.index(extent)
    # Extents travel as int64, so a larger one cannot describe a wire tensor.
    if not 0 <= value <= INT64_MAX:
        raise ShapeInvalid(f"extent {axis} is out of range: {value}", field="shape")
    return value
