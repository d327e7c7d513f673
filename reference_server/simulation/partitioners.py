"""Seeded ways to split one dataset among virtual clients.

Each partitioner returns one array of sample indices per client (sorted, int64); every
sample goes to exactly one client, and the same arguments always give the same split.
They take labels or a sample count, never the data, so they work for any dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Partition = tuple[npt.NDArray[np.int64], ...]


def _check(samples: int, clients: int) -> None:
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    if samples < clients:
        raise ValueError(f"{samples} samples cannot give each of {clients} clients one")


def _finish(parts: Sequence[npt.ArrayLike]) -> Partition:
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def iid(samples: int, clients: int, *, seed: int = 0) -> Partition:
    """A uniform random split into parts whose sizes differ by at most one."""
    _check(samples, clients)
    order = np.random.default_rng(seed).permutation(samples)
    return _finish(np.array_split(order, clients))


def dirichlet(
    labels: npt.ArrayLike,
    clients: int,
    *,
    alpha: float,
    seed: int = 0,
    min_samples: int = 1,
    max_tries: int = 100,
) -> Partition:
    """Label skew: each class is shared among clients in Dirichlet(alpha) proportions.

    Small alpha gives each client few classes; large alpha approaches IID. Draws are
    repeated (same generator, so still seeded) until every client has `min_samples`.
    """
    y = np.asarray(labels).reshape(-1)
    _check(len(y), clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_samples * clients > len(y):
        raise ValueError(f"{len(y)} samples cannot give {clients} clients {min_samples} each")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(clients)]
        for label in classes:
            members = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        merged = [np.concatenate(p) for p in parts]
        if min(len(p) for p in merged) >= min_samples:
            return _finish(merged)
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split in {max_tries} draws gave every client "
        f"{min_samples} samples; raise alpha or lower clients"
    )


def shards(
    labels: npt.ArrayLike, clients: int, *, shards_per_client: int = 2, seed: int = 0
) -> Partition:
    """Pathological non-IID (McMahan et al.): sort by label, cut equal shards, deal them out.

    With two shards per client, most clients see only one or two classes.
    """
    y = np.asarray(labels).reshape(-1)
    count = clients * shards_per_client
    _check(len(y), count)
    rng = np.random.default_rng(seed)
    # A stable sort keeps the split independent of the sort algorithm's tie order.
    by_label = np.argsort(y, kind="stable")
    pieces = np.array_split(by_label, count)
    dealt = rng.permutation(count).reshape(clients, shards_per_client)
    return _finish([np.concatenate([pieces[s] for s in row]) for row in dealt])


def quantity_skew(samples: int, clients: int, *, alpha: float = 1.0, seed: int = 0) -> Partition:
    """IID content, unequal sizes: client shares are Dirichlet(alpha), each at least one."""
    _check(samples, clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(samples)
    shares = rng.dirichlet(np.full(clients, alpha))
    # One sample each first, the rest by share, so no client is empty.
    sizes = 1 + np.floor(shares * (samples - clients)).astype(np.int64)
    sizes[np.argmax(shares)] += samples - int(sizes.sum())
    return _finish(np.split(order, np.cumsum(sizes)[:-1]))


__all__ = ["Partition", "dirichlet", "iid", "quantity_skew", "shards"]
