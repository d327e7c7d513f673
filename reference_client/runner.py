"""The public entry point: run a `pollen.Client` against a server until it is told to stop."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from pollen.client import Client
from reference_client.backoff import RetryPolicy
from reference_client.config import ClientOptions
from reference_client.identity import resolve_node_id
from reference_client.session import Session
from reference_client.transport import Security

log = logging.getLogger("reference_client")

PathLike = str | os.PathLike[str]


class ReferenceClient:
    """Drives a `pollen.Client` over gRPC with every client behaviour the spec asks for.

    `run()` blocks until the server sends a shutdown instruction, `stop()` is called (or
    the `stop` event set), or an unrecoverable error happens, and returns an exit status:
    0 for a normal end, 1 otherwise. Configuration mistakes raise at construction.
    """

    def __init__(
        self,
        client: Client,
        *,
        server: str,
        node_id: str | None = None,
        node_id_file: PathLike | None = None,
        root_cert: PathLike | None = None,
        client_cert: PathLike | None = None,
        client_key: PathLike | None = None,
        insecure: bool = False,
        retry: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        options: ClientOptions | None = None,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"expected a pollen.Client, got {type(client).__name__}")
        if not server:
            raise ValueError("the server address (HOST:PORT) is required")
        self.security = Security.from_files(
            insecure=insecure,
            root_cert=_path(root_cert),
            client_cert=_path(client_cert),
            client_key=_path(client_key),
        )
        self.node_id = resolve_node_id(node_id, node_id_file)
        self.policy = retry if retry is not None else RetryPolicy()
        self.stop_event = stop if stop is not None else threading.Event()
        self.options = options if options is not None else ClientOptions()
        self.client = client
        self.server = server

    def run(self) -> int:
        if self.security.insecure:
            log.warning("plaintext connection to %s: no TLS (--insecure)", self.server)
        if self.policy.below_spec:
            log.warning("the retry policy waits less than the protocol allows (PLN-RTY-007)")
        session = Session(
            self.client,
            target=self.server,
            node_id=self.node_id,
            security=self.security,
            policy=self.policy,
            options=self.options,
            stop=self.stop_event,
        )
        log.info("node %s connecting to %s", self.node_id, self.server)
        status = session.run()
        log.info("node %s stopped (exit status %d)", self.node_id, status)
        return status

    def stop(self) -> None:
        """Ask a running client to leave its session and return (thread- and signal-safe)."""
        self.stop_event.set()


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def run(
    client: Client,
    *,
    server: str,
    node_id: str | None = None,
    node_id_file: PathLike | None = None,
    root_cert: PathLike | None = None,
    client_cert: PathLike | None = None,
    client_key: PathLike | None = None,
    insecure: bool = False,
    retry: RetryPolicy | None = None,
    stop: threading.Event | None = None,
    options: ClientOptions | None = None,
) -> int:
    """Run `client` against `server` ("HOST:PORT"); returns 0 after a normal end.

    TLS is on unless `insecure` is true: `root_cert` names the trusted CA (PEM; the
    system's roots when omitted), `client_cert` and `client_key` a certificate for mutual
    TLS. The node id is `node_id`, or kept in `node_id_file` (created on first use). Set
    the `stop` event to make the client leave its session and return.
    """
    return ReferenceClient(
        client,
        server=server,
        node_id=node_id,
        node_id_file=node_id_file,
        root_cert=root_cert,
        client_cert=client_cert,
        client_key=client_key,
        insecure=insecure,
        retry=retry,
        stop=stop,
        options=options,
    ).run()
