"""Crash points for the crash-resume tests.

`POLLEN_TEST_CRASH_AT=<name>[:<n>]` makes the server kill itself with SIGKILL the n-th time
(default: first) it passes the named point, so a test can prove that a restart at exactly
that moment resumes to a bit-identical final model. Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "POLLEN_TEST_CRASH_AT"
POINTS = frozenset(
    {
        "result_accepted",  # a fit result was validated and stored
        "before_aggregation",  # the last result is in, aggregation has not started
        "before_commit",  # the new model's blobs are written, the round is not committed
    }
)
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown crash point; known: {sorted(POINTS)}")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
