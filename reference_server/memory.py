"""Handing freed heap memory back to the operating system between the phases of a round.

A round's transfers allocate and free hundreds of megabytes of message buffers in several
threads; glibc keeps what they free in per-thread arenas, so without a trim the memory of
one phase stays resident under the next one and the peak grows with the number of clients.
`malloc_trim` returns those free pages; elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; whether anything was given back (False off glibc)."""
    return bool(_TRIM(0)) if _TRIM is not None else False
