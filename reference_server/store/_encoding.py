"""Exact text encodings of the record fields that SQLite has no column type for.

Metrics must come back with their exact type and bits (pollen.values): SQLite turns NaN
into NULL and has no bool, so each value is stored as a tagged JSON entry, floats as the
hex of their IEEE 754 bits. History is plain JSON, as documented on RoundRecord.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping

from pollen.errors import InvalidArgument, entry_path
from pollen.values import ConfigValue, check_value


def metrics_to_text(metrics: Mapping[str, ConfigValue]) -> str:
    """Encode metrics as a JSON list of [tag, key, value], keeping their order."""
    entries: list[list[object]] = []
    for key, raw in metrics.items():
        if not isinstance(key, str):
            raise InvalidArgument(
                f"metric keys are text, got {type(key).__name__}", field="metrics"
            )
        value = check_value(raw, field=entry_path("metrics", key))
        if isinstance(value, bool):
            entries.append(["b", key, value])
        elif isinstance(value, int):
            entries.append(["i", key, value])
        elif isinstance(value, float):
            entries.append(["f", key, struct.pack("<d", value).hex()])
        elif isinstance(value, str):
            entries.append(["s", key, value])
        else:
            entries.append(["y", key, value.hex()])
    return json.dumps(entries)


def metrics_from_text(text: str) -> dict[str, ConfigValue]:
    metrics: dict[str, ConfigValue] = {}
    for tag, key, value in json.loads(text):
        if tag == "f":
            metrics[key] = struct.unpack("<d", bytes.fromhex(value))[0]
        elif tag == "y":
            metrics[key] = bytes.fromhex(value)
        else:
            metrics[key] = value
    return metrics


def history_to_text(history: Mapping[str, object]) -> str:
    if not isinstance(history, Mapping):
        raise InvalidArgument(
            f"history is a mapping, got {type(history).__name__}", field="history"
        )
    try:
        return json.dumps(dict(history))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"history is not JSON-serializable: {exc}", field="history") from None


def history_from_text(text: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(text)
    return loaded


def check_time(value: float, field: str) -> float:
    """A timestamp: finite, since SQLite would store NaN as NULL."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number, got {value!r}", field=field)
    return float(value)
