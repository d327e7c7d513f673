"""Typed values and config maps <-> pollen.v1.Value and map<string, Value>."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from google.protobuf.message import DecodeError

from pollen._generated.pollen.v1 import value_pb2
from pollen.errors import (
    InvalidArgument,
    LimitExceeded,
    entry_path,
)
from pollen.values import ConfigValue, check_key, check_value


def value_to_proto(value: ConfigValue, out: value_pb2.Value | None = None) -> value_pb2.Value:
    """Encode one typed value."""
    msg = out if out is not None else value_pb2.Value()
    checked = check_value(value)
    if isinstance(checked, bool):
        msg.bool_value = checked
    elif isinstance(checked, int):
        msg.int_value = checked
    elif isinstance(checked, float):
        msg.double_value = checked
    elif isinstance(checked, str):
        msg.string_value = checked
    else:
        msg.bytes_value = checked
    return msg


def value_from_proto(msg: value_pb2.Value, *, field: str = "value") -> ConfigValue:
    """Decode one typed value; a Value with no member set is invalid."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("a Value must have exactly one member set", field=field)
    value: ConfigValue = getattr(msg, kind)
    return value


def value_from_proto_bytes(data: bytes, *, field: str = "value") -> ConfigValue:
    """Parse and decode a serialized pollen.v1.Value (used by the golden vectors)."""
    msg = value_pb2.Value()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed Value message: {exc}", field=field) from None
    return value_from_proto(msg, field=field)


def config_to_proto(
    config: Mapping[str, object] | None, out: MutableMapping[str, value_pb2.Value]
) -> None:
    """Fill a protobuf map<string, Value> from a mapping."""
    for key, value in (config or {}).items():
        value_to_proto(check_value(value, field=entry_path("", key)), out[check_key(key)])


def config_from_proto(
    entries: Mapping[str, value_pb2.Value], *, max_entries: int, field: str = "config"
) -> dict[str, ConfigValue]:
    """Decode a protobuf map<string, Value>, enforcing the entry limit and key rules."""
    if len(entries) > max_entries:
        raise LimitExceeded(
            f"{len(entries)} entries exceed the limit of {max_entries}", field=field
        )
    return {
        check_key(key, field=field): value_from_proto(value, field=entry_path(field, key))
        for key, value in entries.items()
    }
