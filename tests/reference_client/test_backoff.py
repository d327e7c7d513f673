import random

import pytest

from reference_client.backoff import Backoff, RetryPolicy


def test_spec_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.initial_delay_s, policy.multiplier, policy.jitter, policy.max_delay_s) == (
        1.0,
        1.6,
        0.2,
        120.0,
    )
    assert not policy.below_spec
    # The spec's worked figures: 0.8-1.2 s, 1.28-1.92 s, 2.05-3.07 s, then 96-144 s.
    assert [round(policy.base(n), 3) for n in (1, 2, 3)] == [1.0, 1.6, 2.56]
    assert policy.base(12) == 120.0
    assert policy.base(10_000) == 120.0  # no overflow however long the outage


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11, 12, 30])
def test_each_delay_stays_within_its_jitter_bounds(n: int) -> None:
    policy = RetryPolicy()
    rng = random.Random(n)
    base = policy.base(n)
    delays = [policy.delay(n, rng=rng) for _ in range(500)]
    assert all(0.8 * base <= d <= 1.2 * base for d in delays)
    assert max(delays) - min(delays) > 0.2 * base  # drawn afresh each time (PLN-RTY-009)


def test_retry_after_sets_a_floor() -> None:
    policy = RetryPolicy()
    assert policy.delay(1, retry_after_ms=5000) == 5.0
    assert 0.8 <= policy.delay(1, retry_after_ms=10) <= 1.2


def test_a_sequence_grows_until_a_success_restarts_it() -> None:
    backoff = Backoff(RetryPolicy(jitter=0.0))
    assert [backoff.failed() for _ in range(3)] == pytest.approx([1.0, 1.6, 2.56])
    backoff.succeeded()
    assert backoff.failed() == pytest.approx(1.0)


def test_shrunk_policies_are_allowed_but_flagged() -> None:
    fast = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.1)
    assert fast.below_spec
    assert fast.base(10) == 0.1
    assert RetryPolicy(initial_delay_s=2.0, max_delay_s=300).below_spec is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay_s": 0},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"max_delay_s": 0.5},
        {"attempts_per_call": 0},
        {"tls_failure_attempts": 0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_are_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.jitter = 0.5  # type: ignore[misc]
