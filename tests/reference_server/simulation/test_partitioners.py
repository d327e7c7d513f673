"""Partitioners: every sample dealt once, seeded, and skewed the way each one promises."""

import numpy as np
import pytest

from reference_server.simulation.partitioners import dirichlet, iid, quantity_skew, shards

LABELS = np.repeat(np.arange(10), 100)  # 1,000 samples, 10 balanced classes


def _covers(parts: tuple[np.ndarray, ...], samples: int) -> None:
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(samples)), "a sample is lost or repeated"
    assert all(p.dtype == np.int64 for p in parts)


def _classes_per_client(parts: tuple[np.ndarray, ...]) -> list[int]:
    return [len(np.unique(LABELS[p])) for p in parts]


def test_iid_is_a_balanced_seeded_split() -> None:
    parts = iid(1003, 10, seed=1)
    _covers(parts, 1003)
    assert {len(p) for p in parts} == {100, 101}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(1003, 10, seed=1), strict=True))
    assert not np.array_equal(parts[0], iid(1003, 10, seed=2)[0])


def test_dirichlet_alpha_controls_label_skew() -> None:
    skewed = dirichlet(LABELS, 20, alpha=0.1, seed=0)
    even = dirichlet(LABELS, 20, alpha=100.0, seed=0)
    _covers(skewed, len(LABELS))
    _covers(even, len(LABELS))
    assert np.mean(_classes_per_client(skewed)) < 5
    assert min(_classes_per_client(even)) == 10
    assert min(len(p) for p in skewed) >= 1
    again = dirichlet(LABELS, 20, alpha=0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))


def test_dirichlet_guarantees_the_minimum_or_says_why() -> None:
    parts = dirichlet(LABELS, 50, alpha=0.5, seed=3, min_samples=5)
    assert min(len(p) for p in parts) >= 5
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet(LABELS, 5, alpha=0.0)
    with pytest.raises(ValueError, match="no Dirichlet"):
        dirichlet(LABELS, 100, alpha=0.001, min_samples=10, max_tries=3)


def test_shards_give_most_clients_two_classes() -> None:
    parts = shards(LABELS, 50, shards_per_client=2, seed=0)
    _covers(parts, len(LABELS))
    classes = _classes_per_client(parts)
    # 100 shards of 10 samples over 10 sorted classes: no shard straddles two classes.
    assert max(classes) <= 2
    assert {len(p) for p in parts} == {20}


def test_quantity_skew_keeps_everyone_and_varies_sizes() -> None:
    parts = quantity_skew(1000, 20, alpha=0.5, seed=0)
    _covers(parts, 1000)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 1
    assert max(sizes) > 5 * min(sizes)


@pytest.mark.parametrize("call", [lambda: iid(5, 10), lambda: shards(LABELS[:10], 10)])
def test_too_few_samples_are_refused(call: object) -> None:
    with pytest.raises(ValueError, match="cannot give"):
        call()  # type: ignore[operator]
