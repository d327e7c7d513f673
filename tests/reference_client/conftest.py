from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pollen.client import Client
from tests.reference_client.fakeserver import FakeServer, Running, Settings


@pytest.fixture
def make_server() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(*, port: int = 0, **settings: Any) -> FakeServer:
        server = FakeServer(Settings(**settings), port=port)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., FakeServer]) -> FakeServer:
    return make_server()


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Start reference clients on threads; each is stopped and joined at the end."""
    running: list[Running] = []

    def begin(client: Client, address: str, **kwargs: Any) -> Running:
        handle = Running(client, address, **kwargs)
        running.append(handle)
        return handle

    yield begin
    for handle in running:
        handle.stop.set()
    for handle in running:
        handle.thread.join(10)
