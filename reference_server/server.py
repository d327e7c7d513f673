"""Serving: the grpc.aio server around a Coordinator, with TLS, health and reflection.

TLS is on unless the configuration says `insecure = true` (which is logged as a warning);
with `client_ca` set, clients must present a certificate (mutual TLS). On SIGTERM or
SIGINT the health service turns NOT_SERVING, in-flight calls get `shutdown_grace_s` to
finish, and the store is closed; every committed round is already durable, so a restart
resumes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pollen.limits import Limits
from pollen.services import SERVICES
from reference_server.config import Config, ConfigError
from reference_server.coordinator import Coordinator, load_callable
from reference_server.reduction import CentralEvaluation
from reference_server.service import generic_handlers
from reference_server.store import Store
from reference_server.strategies.registry import make_strategy

log = logging.getLogger("pollen.server")


def channel_options(config: Config) -> list[tuple[str, int]]:
    server = config.server
    # Handshakes of up to the default limit must get through before any limit is
    # negotiated (PLN-TRN-019); larger session messages get a typed LIMIT_EXCEEDED from
    # the service instead of gRPC's bare status.
    receive = max(server.max_message_bytes, Limits().max_message_bytes)
    return [
        ("grpc.max_receive_message_length", receive),
        ("grpc.max_send_message_length", server.max_message_bytes),
        ("grpc.max_concurrent_streams", 100),
        ("grpc.keepalive_time_ms", int(server.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.server_handshake_timeout_ms", 20_000),
    ]


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials, or None for an explicitly insecure server."""
    server = config.server
    if server.insecure:
        return None
    try:
        key = Path(server.tls_key).read_bytes()
        chain = Path(server.tls_cert).read_bytes()
        client_ca = Path(server.client_ca).read_bytes() if server.client_ca else None
    except OSError as exc:
        raise ConfigError(f"[server] cannot read TLS file {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def serve(
    config: Config,
    *,
    central_evaluation: CentralEvaluation | None = None,
    on_listening: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the configured job; returns 0 when it finished (or was stopped to resume later)."""
    strategy = make_strategy(
        str(config.strategy["name"]), {k: v for k, v in config.strategy.items() if k != "name"}
    )
    if central_evaluation is None and config.run.central_evaluation:
        central_evaluation = load_callable(config.run.central_evaluation)
    credentials = server_credentials(config)
    store = Store(Path(config.server.state_dir))
    coordinator = Coordinator(config, store, strategy, central_evaluation=central_evaluation)
    server = grpc.aio.server(options=channel_options(config))
    server.add_generic_rpc_handlers(generic_handlers(coordinator))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        *SERVICES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    if credentials is None:
        log.warning(
            "serving WITHOUT TLS (insecure = true): traffic and models are readable on the network"
        )
        port = server.add_insecure_port(config.server.address)
    else:
        port = server.add_secure_port(config.server.address, credentials)
    host = config.server.address.rpartition(":")[0]
    address = f"{host}:{port}"
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await coordinator.start()
        await server.start()
        for name in ["", *SERVICES]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("listening on %s (%s)", address, "TLS" if credentials else "plaintext")
        if on_listening is not None:
            on_listening(address)
        finished = asyncio.create_task(coordinator.finished.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if coordinator.finished.is_set() and not stop.is_set():
            # Give connected clients the shutdown instruction before closing.
            await _wait_for_clients(coordinator, config.server.shutdown_grace_s, stop)
        stopped.cancel()
        finished.cancel()
    finally:
        # Typed UNAVAILABLE for new calls while the ones in flight finish, before gRPC stops
        # taking calls at all (PLN-TRN-023): a call that gRPC accepted but no handler took
        # would otherwise end CANCELLED.
        coordinator.begin_drain()
        await health_servicer.enter_graceful_shutdown()
        if coordinator.sessions:  # someone may still call
            await asyncio.sleep(min(DRAIN_S, config.server.shutdown_grace_s))
        await server.stop(config.server.shutdown_grace_s)
        await coordinator.close()
        store.close()
    ended = coordinator.ended
    if ended is not None and ended.status == "failed":
        return 1
    return 0


#: How long a stopping server answers new calls with UNAVAILABLE before it closes.
DRAIN_S = 0.5


async def _wait_for_clients(coordinator: Coordinator, grace: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while coordinator.sessions and loop.time() < deadline and not stop.is_set():
        await asyncio.sleep(0.05)
