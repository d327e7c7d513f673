"""The scenarios of server mode, by the names the cases' steps use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from conformance.server_play import Play
from conformance.server_scenarios.blobs import blobs, partial_uploads, uploads
from conformance.server_scenarios.rounds import (
    deadline_grace,
    dropout,
    evaluate_phases,
    malformed_results,
    query_phases,
    rejections,
    restart,
    resubmits,
    task_deadline,
    task_machine,
    training,
)
from conformance.server_scenarios.security import (
    node_binding,
    session_binding,
    tls_13,
    tls_versions,
)
from conformance.server_scenarios.sessions import (
    declared_limits,
    draining,
    handshake_errors,
    handshake_negotiation,
    heartbeats,
    long_poll,
    recommended,
    services,
    session_replace,
    sessions,
)

SCENARIOS: dict[str, Callable[[Play, str], Awaitable[None]]] = {
    "handshake_negotiation": handshake_negotiation,
    "handshake_errors": handshake_errors,
    "sessions": sessions,
    "long_poll": long_poll,
    "training": training,
    "blobs": blobs,
    "heartbeats": heartbeats,
    "resubmits": resubmits,
    "dropout": dropout,
    "task_deadline": task_deadline,
    "rejections": rejections,
    "malformed_results": malformed_results,
    "session_replace": session_replace,
    "uploads": uploads,
    "services": services,
    "restart": restart,
    "evaluate_phases": evaluate_phases,
    "query_phases": query_phases,
    "declared_limits": declared_limits,
    "recommended": recommended,
    "partial_uploads": partial_uploads,
    "deadline_grace": deadline_grace,
    "task_machine": task_machine,
    "draining": draining,
    "node_binding": node_binding,
    "tls_versions": tls_versions,
    "tls_13": tls_13,
    "session_binding": session_binding,
}
#: Scenarios played over mutual TLS, each peer presenting the certificate of its node.
MUTUAL_TLS = frozenset({"node_binding", "session_binding", "tls_versions", "tls_13"})
#: The Annex C.5 configuration a scenario needs, when it is not `train`.
CONFIGURATION = {
    "evaluate_phases": "evaluate",
    "query_phases": "analytics",
    "task_machine": "evaluate",
}
