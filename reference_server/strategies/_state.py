"""Per-tensor strategy state: one float64 array per global tensor, named "<slot>.<index>".

The names are plain strings and the values plain arrays, so the server can persist a
state as named arrays and read back the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pollen.errors import InvalidArgument
from reference_server.strategies.base import StrategyState


def fresh(parameters: Sequence[np.ndarray], slots: Mapping[str, float]) -> dict[str, np.ndarray]:
    """A state with, for each slot, a float64 array per tensor filled with its value."""
    return {
        key(slot, index): np.full(tensor.shape, fill, dtype=np.float64)
        for slot, fill in slots.items()
        for index, tensor in enumerate(parameters)
    }


def key(slot: str, index: int) -> str:
    """The state name of `slot` for tensor `index`."""
    return f"{slot}.{index}"


def read(
    state: StrategyState, parameters: Sequence[np.ndarray], slots: Sequence[str]
) -> dict[str, list[np.ndarray]]:
    """Check that `state` holds exactly the slots' arrays for `parameters` and return them.

    The arrays are returned as they are; callers compute new arrays and never write into
    these, so the caller's state is not changed.
    """
    expected = {key(slot, index) for slot in slots for index in range(len(parameters))}
    if set(state) != expected:
        missing = sorted(expected - set(state))
        extra = sorted(set(state) - expected)
        raise InvalidArgument(
            f"strategy state does not match the model: missing {missing}, unexpected {extra}; "
            "start from the strategy's initial_state",
            field="state",
        )
    found: dict[str, list[np.ndarray]] = {}
    for slot in slots:
        arrays = []
        for index, tensor in enumerate(parameters):
            array = np.asarray(state[key(slot, index)])
            if array.shape != tensor.shape or array.dtype != np.float64:
                raise InvalidArgument(
                    f"state {key(slot, index)!r} is {array.dtype}{list(array.shape)}, "
                    f"expected float64{list(tensor.shape)}",
                    field="state",
                )
            arrays.append(array)
        found[slot] = arrays
    return found
