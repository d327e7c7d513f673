"""The judge's side of the conformance model (spec Annex C): inputs and exact answers.

This is written apart from the Python program under test (reference_client.conformance) on
purpose: integer steps are computed with Python integers and the loss element by element,
so a bug shared by both would have to be made twice.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.dtypes import Dtype
from pollen.values import ConfigValue

MODEL_NAME = "pollen-conformance/1"
Array = npt.NDArray[Any]

_DTYPES = {d.name.lower(): d for d in Dtype}
_SPECIAL_DOUBLES = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "-0.0": -0.0,
    "min_subnormal": 5e-324,
    "max": 1.7976931348623157e308,
}


class ModelError(ValueError):
    """A case describes a tensor or a value the model cannot build."""


def dtype_named(name: str) -> Dtype:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r}") from None


def _int_range(dtype: Dtype) -> tuple[int, int]:
    info = np.iinfo(dtype.numpy)
    return int(info.min), int(info.max)


def make_array(spec: Mapping[str, Any]) -> Array:
    """A tensor described in a case: `{dtype, shape, fill: ramp|extremes|special, start}`.

    `ramp` holds start, start+1, ... (wrapped into the dtype's range for integers, small
    integers for floats so that Annex C's sums stay exact); `extremes` holds the integer
    dtype's minimum and maximum among small values; `special` holds NaN, infinities, -0.0
    and a subnormal (floats only, for bit-exact echo checks).
    """
    dtype = dtype_named(str(spec["dtype"]))
    shape = tuple(int(n) for n in spec.get("shape", ()))
    count = math.prod(shape)
    fill = spec.get("fill", "ramp")
    start = int(spec.get("start", 0))
    if "values" in spec:
        values: list[Any] = list(spec["values"])
    elif dtype is Dtype.BOOL:
        values = [(start + i) % 2 == 1 for i in range(count)]
    elif fill == "ramp":
        values = [start + i for i in range(count)]
        if not dtype.is_float:
            low, high = _int_range(dtype)
            values = [low + (v - low) % (high - low + 1) for v in values]
    elif fill == "extremes" and not dtype.is_float:
        low, high = _int_range(dtype)
        ints = [low, high, low + 1, high - 1, 0, 1]
        values = [ints[i % len(ints)] for i in range(count)]
    elif fill == "special" and dtype.is_float:
        floats = [math.nan, math.inf, -math.inf, -0.0, 1.0, -2.5]
        values = [floats[i % len(floats)] for i in range(count)]
    else:
        raise ModelError(f"fill {fill!r} does not apply to {dtype.name}")
    if len(values) != count:
        raise ModelError(f"{len(values)} values for shape {list(shape)}")
    if dtype.is_float:
        return np.array(values, dtype=np.float64).astype(dtype.numpy).reshape(shape)
    return np.array(values, dtype=dtype.numpy).reshape(shape)


def make_value(raw: object) -> ConfigValue:
    """A typed config value from YAML: scalars as they are, or a tagged mapping
    `{bytes: HEX}`, `{double: nan|inf|-inf|-0.0|min_subnormal|max}`, `{double_bits: HEX}`."""
    if isinstance(raw, bool | int | float | str):
        return raw
    if isinstance(raw, dict) and len(raw) == 1:
        ((tag, body),) = raw.items()
        if tag == "bytes":
            return bytes.fromhex(str(body))
        if tag == "double" and str(body) in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[str(body)]
        if tag == "double_bits":
            return float(struct.unpack("<d", bytes.fromhex(str(body))[::-1])[0])
    raise ModelError(f"cannot build a config value from {raw!r}")


def make_config(raw: Mapping[str, Any] | None) -> dict[str, ConfigValue]:
    return {str(k): make_value(v) for k, v in (raw or {}).items()}


def same_value(a: ConfigValue, b: ConfigValue) -> bool:
    """Equal in type and bits (a double compares by its binary64 pattern)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def canonical(array: Array) -> bytes:
    """Little-endian, C-order bytes of an array (the wire's canonical bytes)."""
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


# --- the model's answers --------------------------------------------------------------------


def _int_option(config: Mapping[str, ConfigValue], key: str, default: int) -> int:
    value = config.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def stepped(array: Array, step: int) -> Array:
    """Annex C's fit transform of one element array (PLN-CNF-013)."""
    dtype = Dtype.from_numpy(array.dtype)
    if dtype is Dtype.BOOL:
        flipped: Array = array != bool(step % 2)
        return flipped
    if not dtype.is_float:
        low, high = _int_range(dtype)
        span = high - low + 1
        flat = [low + (int(x) + step - low) % span for x in array.reshape(-1).tolist()]
        return np.array(flat, dtype=dtype.numpy).reshape(array.shape)
    summed: Array = (array + np.array(step, dtype=np.float64).astype(dtype.numpy)).astype(
        dtype.numpy
    )
    return summed


@dataclass(frozen=True, kw_only=True)
class Expected:
    """What a conforming program must answer, field by field."""

    tensors: tuple[Array, ...] | None = None
    num_examples: int | None = None
    loss: float | None = None
    metrics: Mapping[str, ConfigValue] | None = None
    properties: Mapping[str, ConfigValue] | None = None


def echo_map(config: Mapping[str, ConfigValue]) -> dict[str, ConfigValue]:
    return {k: v for k, v in config.items() if k.startswith("echo.")}


class Oracle:
    """Tracks the model's current parameters across a case, as the program must."""

    def __init__(self) -> None:
        self.current: tuple[Array, ...] = (
            np.arange(6, dtype=np.float32).reshape(2, 3),
            np.array([-1, 0, 1], dtype=np.int64),
        )

    def expect(
        self, kind: str, arrays: Sequence[Array], config: Mapping[str, ConfigValue]
    ) -> Expected:
        """The answer to instruction `kind`; for fit it also moves the current parameters
        (call it only for an instruction the program is expected to complete)."""
        metrics = {**echo_map(config), "conformance.tensors": len(arrays)}
        if kind == "fit":
            delta = _int_option(config, "conformance.delta", 1)
            result = tuple(stepped(a, (i + 1) * delta) for i, a in enumerate(arrays))
            self.current = result
            examples = _int_option(config, "conformance.num_examples", 1)
            return Expected(tensors=result, num_examples=examples, metrics=metrics)
        if kind == "evaluate":
            loss = 0.0
            for array in arrays:
                for x in array.reshape(-1).tolist():
                    loss += float(x)
            examples = _int_option(config, "conformance.num_examples", 1)
            return Expected(loss=loss, num_examples=examples, metrics=metrics)
        if kind == "query":
            examples = _int_option(config, "conformance.num_examples", 0)
            return Expected(tensors=tuple(arrays), num_examples=examples, metrics=metrics)
        if kind == "get_parameters":
            return Expected(tensors=self.current)
        if kind == "get_properties":
            return Expected(properties={**echo_map(config), "conformance.model": MODEL_NAME})
        raise ModelError(f"the model has no answer for {kind!r}")
