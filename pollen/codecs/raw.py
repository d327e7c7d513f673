"""The raw codec: the payload is the canonical bytes themselves.

Both directions avoid copying on little-endian hosts: encoding a C-contiguous little-endian
array returns a view of its memory, and decoding returns a (read-only, for a bytes payload)
array over the payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.codecs._base import Payload, byte_view, canonical, check_length, reject_params, shaped
from pollen.dtypes import Dtype


@dataclass(frozen=True)
class RawCodec:
    """Canonical bytes, for every dtype."""

    id: str = "raw"

    def applies_to(self, dtype: Dtype) -> bool:
        """Every dtype."""
        return True

    def encode(self, array: npt.NDArray[Any], **params: object) -> memoryview:
        """A byte view of `array` (copied only to fix byte order or layout).

        The view shares the array's memory: changing the array afterwards changes the
        payload, so do not mutate it until the payload has been sent.
        """
        reject_params(self.id, params)
        flat = canonical(array, Dtype.from_numpy(array.dtype))
        return flat.view(np.uint8).data

    def decode(
        self, payload: Payload, dtype: Dtype, shape: tuple[int, ...], numel: int
    ) -> npt.NDArray[Any]:
        """An array over the payload's memory; TENSOR_SIZE_MISMATCH for a wrong length."""
        view = byte_view(payload)
        check_length(self.id, view.nbytes, numel * dtype.itemsize)
        return shaped(np.frombuffer(view, dtype=dtype.numpy), shape)


RAW = RawCodec()
