"""Retry delays: exponential backoff with jitter and a cap (spec chapter 12, "Backoff").

With the spec's defaults the delay before retry n (from 1) is

    base(n)  = min(initial * multiplier^(n-1), max_delay)
    delay(n) = base(n) * U(1 - jitter, 1 + jitter)
    wait(n)  = max(delay(n), retry_after_ms of the failure, when set)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: The spec's parameters (PLN-RTY-008); PLN-RTY-007 makes 0.8 * base(n) of these a floor.
SPEC_INITIAL_DELAY_S = 1.0
SPEC_MULTIPLIER = 1.6
SPEC_JITTER = 0.2
SPEC_MAX_DELAY_S = 120.0


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a client spaces and bounds its retries.

    The defaults are the spec's. Smaller delays break PLN-RTY-007 (a retry must not come
    earlier than 0.8 * base(n) of the defaults) and are meant for tests and simulations.
    """

    initial_delay_s: float = SPEC_INITIAL_DELAY_S
    multiplier: float = SPEC_MULTIPLIER
    #: Relative jitter: each delay is drawn uniformly within +-jitter of its base.
    jitter: float = SPEC_JITTER
    max_delay_s: float = SPEC_MAX_DELAY_S
    #: Attempts one call gets before the connection counts as lost and the client opens
    #: a new one and handshakes again (PLN-RTY-011).
    attempts_per_call: int = 8
    #: Consecutive failed TLS handshakes (a certificate the client does not trust, for
    #: example) after which the client gives up: retrying cannot fix a configuration.
    tls_failure_attempts: int = 3

    def __post_init__(self) -> None:
        if not self.initial_delay_s > 0:
            raise ValueError(f"initial_delay_s must be > 0, got {self.initial_delay_s}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if not self.max_delay_s >= self.initial_delay_s:
            raise ValueError("max_delay_s must be >= initial_delay_s")
        if self.attempts_per_call < 1 or self.tls_failure_attempts < 1:
            raise ValueError("attempt counts must be >= 1")

    def base(self, n: int) -> float:
        """The delay before retry `n` (from 1) before jitter, in seconds."""
        if n < 1:
            raise ValueError(f"retries count from 1, got {n}")
        # Stop multiplying once past the cap, so a long outage cannot overflow a float.
        delay = self.initial_delay_s
        for _ in range(n - 1):
            delay *= self.multiplier
            if delay >= self.max_delay_s:
                return self.max_delay_s
        return min(delay, self.max_delay_s)

    def delay(self, n: int, *, retry_after_ms: int = 0, rng: random.Random | None = None) -> float:
        """The wait before retry `n`, jittered, and never shorter than `retry_after_ms`."""
        draw = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return max(self.base(n) * draw, max(retry_after_ms, 0) / 1000)

    @property
    def below_spec(self) -> bool:
        """Whether some delay may come earlier than PLN-RTY-007 allows."""
        spec = RetryPolicy()
        return any(
            self.base(n) * (1 - self.jitter) < spec.base(n) * (1 - SPEC_JITTER)
            for n in range(1, 16)
        )


class Backoff:
    """One retry sequence: consecutive failures counted from 1 (PLN-RTY-010).

    `failed` returns the wait before the next attempt; `succeeded` restarts the sequence.
    """

    def __init__(self, policy: RetryPolicy, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.failures = 0

    def failed(self, *, retry_after_ms: int = 0) -> float:
        """Count one failure and return the delay before the retry it calls for."""
        self.failures += 1
        return self.policy.delay(self.failures, retry_after_ms=retry_after_ms, rng=self._rng)

    def succeeded(self) -> None:
        self.failures = 0
