"""TLS and mutual TLS with certificates made at test time, and an untrusted server."""

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.reference_client.apps import Trainer
from tests.reference_client.fakeserver import FakeServer, Running, fit_task, shutdown
from tests.support.certs import Authority


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority()


def _serve(ca: Authority, *, mutual: bool) -> FakeServer:
    pair = ca.issue("pollen server", server=True)
    credentials = grpc.ssl_server_credentials(
        [(pair.key, pair.cert)],
        root_certificates=ca.pem if mutual else None,
        require_client_auth=mutual,
    )
    return FakeServer(credentials=credentials)


@pytest.fixture
def tls_server(ca: Authority) -> Iterator[FakeServer]:
    server = _serve(ca, mutual=False)
    yield server
    server.stop()


@pytest.fixture
def mtls_server(ca: Authority) -> Iterator[FakeServer]:
    server = _serve(ca, mutual=True)
    yield server
    server.stop()


def _join(client: Running) -> int:
    try:
        return client.join(timeout=15)
    finally:
        client.stop.set()


def test_tls_with_a_trusted_ca(ca: Authority, tls_server: FakeServer, tmp_path: Path) -> None:
    root = tmp_path / "ca.pem"
    root.write_bytes(ca.pem)
    tls_server.add_task(fit_task("t1", [np.ones(3, dtype=np.float32)]))
    tls_server.add_task(shutdown())
    client = Running(Trainer(), tls_server.address, root_cert=root)
    assert _join(client) == 0
    assert "t1" in tls_server.results


def test_mutual_tls_with_a_client_certificate(
    ca: Authority, mtls_server: FakeServer, tmp_path: Path
) -> None:
    root = tmp_path / "ca.pem"
    root.write_bytes(ca.pem)
    cert, key = ca.issue("node-1", server=False).write(tmp_path, "client")
    mtls_server.add_task(shutdown())
    client = Running(
        Trainer(), mtls_server.address, root_cert=root, client_cert=cert, client_key=key
    )
    assert _join(client) == 0
    assert mtls_server.methods() == ["Handshake", "PollTask", "Leave"]


def test_an_untrusted_server_ends_the_client_without_endless_retries(
    tls_server: FakeServer, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(Authority("somebody else").pem)
    started = time.monotonic()
    client = Running(Trainer(), tls_server.address, root_cert=other)
    assert _join(client) == 1
    assert time.monotonic() - started < 10
    assert tls_server.calls == []  # no request ever reached the server, nor fell back
