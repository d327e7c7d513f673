"""Production serving: TLS by default, mutual TLS, health, reflection, clean shutdown."""

import os
import signal
import subprocess
import sys
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.integration.harness import Processes, committed_rounds, toml, wait_all
from tests.support.certs import Authority

ONE_ROUND = {
    "run": {"rounds": 1, "min_available_clients": 2, "start_timeout_s": 60},
    "fit": {"min_clients": 2, "min_results": 2, "timeout_s": 60},
}


def test_the_server_refuses_to_start_without_tls(procs: Processes) -> None:
    path = procs.tmp / "server.toml"
    path.write_text(toml({"server": {"address": "127.0.0.1:0", "state_dir": str(procs.tmp / "s")}}))
    done = subprocess.run(
        [sys.executable, "-m", "pollen_cli", "server", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "tls_cert and tls_key are required; set insecure = true" in done.stderr
    server = procs.server(ONE_ROUND)
    assert "serving WITHOUT TLS" in server.text()
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_training_over_tls(procs: Processes, mutual: bool) -> None:
    ca = Authority()
    ca_file = procs.tmp / "ca.pem"
    ca_file.write_bytes(ca.pem)
    cert, key = ca.issue("localhost", server=True).write(procs.tmp, "server")
    server_section = {"insecure": False, "tls_cert": str(cert), "tls_key": str(key)}
    if mutual:
        server_section["client_ca"] = str(ca_file)
    server = procs.server({"server": server_section, **ONE_ROUND}, extra=())
    assert "(TLS)" in server.text()
    extra: tuple[str, ...] = ("--root-cert", str(ca_file))
    clients = []
    for node in ("a", "b"):
        node_extra = extra
        if mutual:
            client_cert, client_key = ca.issue(node, server=False).write(
                procs.tmp, f"client-{node}"
            )
            node_extra = (*extra, "--cert", str(client_cert), "--key", str(client_key))
        clients.append(procs.client(server.address, node, extra=node_extra))
    assert wait_all(clients, timeout=120) == [0, 0]
    assert server.proc.wait(timeout=60) == 0
    assert [r.round for r in committed_rounds(server.state_dir)] == [0, 1]


def test_mutual_tls_refuses_clients_without_a_certificate(procs: Processes) -> None:
    ca = Authority()
    ca_file = procs.tmp / "ca.pem"
    ca_file.write_bytes(ca.pem)
    cert, key = ca.issue("localhost", server=True).write(procs.tmp, "server")
    section = {
        "insecure": False,
        "tls_cert": str(cert),
        "tls_key": str(key),
        "client_ca": str(ca_file),
    }
    server = procs.server({"server": section, **ONE_ROUND}, extra=())
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    with grpc.secure_channel(server.address, credentials) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "connected" not in server.text()


def test_health_reflection_and_graceful_shutdown(procs: Processes) -> None:
    server = procs.server(ONE_ROUND)
    with grpc.insecure_channel(server.address) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pollen.v1.FederationService", "pollen.v1.BlobService"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"pollen.v1.FederationService", "pollen.v1.BlobService"} <= services
        assert "grpc.health.v1.Health" in services
        os.kill(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    assert "listening on" in server.text()
