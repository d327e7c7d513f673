"""Typed configuration values, metrics and properties.

A value is one of bool, int (64-bit signed), float (binary64), str or bytes, and it crosses
the wire with its exact type and bits: int64 extremes, NaN payloads, -0.0, any Unicode text
and bytes with NULs all come back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pollen.errors import InvalidArgument, LimitExceeded, entry_path

ConfigValue = bool | int | float | str | bytes
Config = Mapping[str, ConfigValue]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
MAX_KEY_BYTES = 256
DEFAULT_MAX_ENTRIES = 1024


def check_value(value: object, *, field: str = "value") -> ConfigValue:
    """Return `value` as one of the five wire types, or raise InvalidArgument.

    numpy scalars are accepted and converted exactly (np.float32 widens to float, np.int64
    to int), because metrics computed with numpy are the common case.
    """
    # bool first: it is a subclass of int, and a flag must not arrive as 1.
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        number = int(value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise InvalidArgument(f"integer {number} does not fit in int64", field=field)
        return number
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"text is not valid Unicode: {exc.reason}", field=field) from None
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidArgument(
        f"unsupported value type {type(value).__name__}; use bool, int, float, str or bytes",
        field=field,
    )


def check_key(key: object, *, field: str = "key") -> str:
    """Validate a map key: 1 to 256 bytes of UTF-8."""
    if not isinstance(key, str):
        raise InvalidArgument(f"keys are text, got {type(key).__name__}", field=field)
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"key is not valid Unicode: {exc.reason}", field=field) from None
    if not 1 <= size <= MAX_KEY_BYTES:
        raise InvalidArgument(f"keys are 1 to {MAX_KEY_BYTES} bytes, got {size}", field=field)
    return key


def check_config(
    config: Mapping[str, object] | None,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    field: str = "config",
) -> dict[str, ConfigValue]:
    """Validate a whole map and return a plain dict of wire-typed values."""
    if not config:
        return {}
    if len(config) > max_entries:
        raise LimitExceeded(f"{len(config)} entries exceed the limit of {max_entries}", field=field)
    return {
        check_key(key, field=field): check_value(value, field=entry_path(field, key))
        for key, value in config.items()
    }
