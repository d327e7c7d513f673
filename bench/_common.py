"""Helpers shared by the two sides of a side-by-side benchmark.

Both sides import this file from their own virtual environment, so it needs numpy only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def model(params: int, arrays: int) -> list[np.ndarray]:
    """`params` float32 values (seeded) in `arrays` 2-D arrays; the last takes the rest."""
    rng = np.random.default_rng(0)
    per = params // arrays
    sizes = [per] * (arrays - 1) + [params - per * (arrays - 1)]
    return [
        rng.standard_normal(s, dtype=np.float32).reshape(-1, 100 if s % 100 == 0 else 1)
        for s in sizes
    ]


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    """Durations of `reps` calls of `fn`, after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out
