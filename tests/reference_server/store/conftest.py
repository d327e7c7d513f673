"""Shared fixtures of the store tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reference_server.store import BlobStore, StateStore, Store

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "state")


@pytest.fixture
def state(tmp_path: Path, blobs: BlobStore) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.db", blobs=blobs) as opened:
        yield opened


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state") as opened:
        yield opened


@pytest.fixture
def child_env() -> Callable[[], dict[str, str]]:
    """The environment of a child Python that imports this checkout."""

    def make() -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    return make
