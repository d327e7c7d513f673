"""Server-mode scenarios played over mutual TLS: node binding and TLS versions."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings

from conformance.client_runner import TlsFiles
from conformance.server_play import (
    NODES,
    PB,
    Play,
    fed_rpc,
    hello_request,
    poll_once,
)
from pollen.errors import ErrorCode


async def node_binding(play: Play, step: str) -> None:
    """Mutual TLS with bound node ids: a Handshake for a node the certificate does not name
    is UNAUTHENTICATED, after the malformed-node check and before the capability checks."""
    a = play.peer("conformance-a")
    for what, request, code, rid in (
        (
            "a node the certificate does not name",
            hello_request("conformance-b"),
            ErrorCode.UNAUTHENTICATED,
            "PLN-HS-029",
        ),
        (
            "an unnamed node and no raw codec",
            hello_request("conformance-b", codecs=("zstd",)),
            ErrorCode.UNAUTHENTICATED,
            "PLN-HS-033",
        ),
        (
            "a malformed node id",
            hello_request("bad node"),
            ErrorCode.INVALID_ARGUMENT,
            "PLN-HS-033",
        ),
    ):
        play.expect_error(
            f"{step}: {what}",
            await a.call(fed_rpc("Handshake"), request),
            code,
            rid,
            path="node_id",
        )
    # The same refusal is the credentials check of PLN-SEC-007: a call after the TLS handshake.
    refused = await a.call(fed_rpc("Handshake"), hello_request("conformance-c"))
    play.expect_error(step, refused, ErrorCode.UNAUTHENTICATED, "PLN-SEC-007")
    session = (await play.handshake(a, "conformance-a", step)).session_id
    reply, _ = await poll_once(a, session, 0)
    play.check(
        reply.data is not None,
        step,
        "the bound node's session serves its calls",
        f"{reply.status.name} {reply.code}",
        "PLN-CNF-033",
    )


async def session_binding(play: Play, step: str) -> None:
    """A session's calls from a connection with another node's certificate are refused."""
    a, b = play.peer("conformance-a"), play.peer("conformance-b")
    sa = (await play.handshake(a, "conformance-a", step)).session_id
    for rpc, request in (
        ("PollTask", PB.PollTaskRequest(session_id=sa, wait_ms=0)),
        ("Heartbeat", PB.HeartbeatRequest(session_id=sa)),
        ("Leave", PB.LeaveRequest(session_id=sa)),
    ):
        play.expect_error(
            f"{step}: {rpc} with a's session over b's certificate",
            await b.call(fed_rpc(rpc), request.SerializeToString()),
            ErrorCode.UNAUTHENTICATED,
            "PLN-SEC-009",
        )
    reply, _ = await poll_once(a, sa, 0)
    play.check(
        reply.data is not None,
        step,
        "a's session unharmed by the refused calls",
        f"{reply.status.name} {reply.code}",
        "PLN-SEC-009",
    )


def _tls_version(
    address: str, tls: TlsFiles, *, highest: ssl.TLSVersion | None = None
) -> str | None:
    """The TLS version a handshake with the server settles on, or None when it fails.

    Plain `ssl`, not gRPC: gRPC's stack offers only TLS 1.2 and later, so it cannot be the
    old peer PLN-SEC-003 needs. The socket is closed right after the TLS handshake.
    """
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(tls.ca)
    context.load_cert_chain(*tls.clients[NODES[0]])
    context.set_alpn_protocols(["h2"])
    if highest is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the old versions be offered at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = highest
    try:
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as wrapped,
        ):
            return wrapped.version()
    except (OSError, ssl.SSLError):
        return None


async def tls_versions(play: Play, step: str) -> None:
    """No TLS below 1.2; TLS 1.2 itself still works."""
    assert play.tls is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.TLSVersion.TLSv1_1
    got = await asyncio.to_thread(_tls_version, play.address, play.tls, highest=old)
    play.check(got is None, step, "no TLS handshake at TLS 1.1", str(got), "PLN-SEC-003")
    got = await asyncio.to_thread(
        _tls_version, play.address, play.tls, highest=ssl.TLSVersion.TLSv1_2
    )
    play.check(got == "TLSv1.2", step, "a TLS handshake at TLS 1.2", str(got), "PLN-SEC-003")


async def tls_13(play: Play, step: str) -> None:
    assert play.tls is not None
    got = await asyncio.to_thread(_tls_version, play.address, play.tls)
    play.check(got == "TLSv1.3", step, "TLS 1.3 when the peer offers it", str(got), "PLN-SEC-004")
