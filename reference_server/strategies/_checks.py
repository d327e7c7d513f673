"""Validation of strategy configuration fields.

Strategy configs come straight from a user's TOML file, so every message names the field,
the allowed range and the value that was given.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from pollen.errors import InvalidArgument


def real(
    value: object,
    *,
    field: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
) -> float:
    """Return `value` as a finite float within the given bounds, or raise InvalidArgument.

    An int is accepted (TOML writes `eta = 1` as an integer); a bool is not, because
    `true` for a learning rate is a typo, not 1.0.
    """
    allowed = _range(gt=gt, ge=ge, lt=lt)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(
            f"{field} must be a number {allowed}, got {type(value).__name__} {value!r}",
            field=field,
        )
    number = float(value)
    if (
        not math.isfinite(number)
        or (gt is not None and not number > gt)
        or (ge is not None and not number >= ge)
        or (lt is not None and not number < lt)
    ):
        raise InvalidArgument(f"{field} must be a number {allowed}, got {value!r}", field=field)
    return number


def integer(value: object, *, field: str, ge: int) -> int:
    """Return `value` as an int >= `ge`, or raise InvalidArgument (floats and bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(
            f"{field} must be an integer >= {ge}, got {type(value).__name__} {value!r}",
            field=field,
        )
    if value < ge:
        raise InvalidArgument(f"{field} must be an integer >= {ge}, got {value}", field=field)
    return value


def choice(value: object, *, field: str, allowed: Collection[str]) -> str:
    """Return `value` if it is one of the `allowed` strings, or raise InvalidArgument."""
    if not isinstance(value, str) or value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise InvalidArgument(f"{field} must be one of {names}, got {value!r}", field=field)
    return value


def _range(*, gt: float | None, ge: float | None, lt: float | None) -> str:
    low = f"> {gt:g}" if gt is not None else f">= {ge:g}" if ge is not None else ""
    high = f"< {lt:g}" if lt is not None else ""
    if ge is not None and lt is not None:
        return f"in [{ge:g}, {lt:g})"
    if gt is not None and lt is not None:
        return f"in ({gt:g}, {lt:g})"
    return low or high or "(finite)"
