"""Version and capability negotiation: the pure decisions a handshake makes.

The server calls `negotiate` with what the client offered and what it supports itself;
both peers then act only on the negotiated capabilities, never on version numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pollen.dtypes import Dtype
from pollen.errors import CapabilityMismatch, InvalidArgument, VersionUnsupported
from pollen.limits import Limits
from pollen.version import PROTOCOL_VERSION, ProtocolVersion

#: The mandatory codec every peer implements.
RAW_CODEC = "raw"
#: Registered optional features of protocol 1.0.
FEATURE_QUERY = "query"
KNOWN_FEATURES = frozenset({FEATURE_QUERY})
#: Bytes of a blob chunk message that are not chunk data (session id, digest, offsets and
#: framing), kept free so that a full chunk never exceeds the peer's message limit.
CHUNK_OVERHEAD_BYTES = 1024

_NODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_node_id(node_id: str) -> str:
    """Validate a node id: 1 to 128 ASCII letters, digits, '.', '_', ':' or '-'."""
    if not _NODE_ID.fullmatch(node_id):
        raise InvalidArgument(
            "node_id must be 1 to 128 characters from [A-Za-z0-9._:-]", field="node_id"
        )
    return node_id


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a peer can do: codecs in preference order, dtypes, receive limits, features."""

    codecs: tuple[str, ...] = (RAW_CODEC,)
    dtypes: frozenset[Dtype] = field(default_factory=lambda: frozenset(Dtype))
    limits: Limits = field(default_factory=Limits)
    features: frozenset[str] = frozenset()


def select_version(
    offered: Iterable[ProtocolVersion],
    supported: Iterable[ProtocolVersion] = (PROTOCOL_VERSION,),
) -> ProtocolVersion:
    """Pick the session's version: the highest common major, at the lower of the minors.

    Each list holds one entry per major version with its highest minor (a peer that speaks
    1.3 speaks 1.0 to 1.3, since minors only add). No common major is VERSION_UNSUPPORTED,
    which lists what this side supports so the other can report it.
    """
    theirs: dict[int, int] = {}
    for version in offered:
        theirs[version.major] = max(version.minor, theirs.get(version.major, 0))
    if not theirs:
        raise InvalidArgument("the handshake must offer at least one version", field="versions")
    ours = {v.major: v.minor for v in supported}
    common = sorted(set(theirs) & set(ours))
    if not common:
        offered_text = ", ".join(f"{m}.{n}" for m, n in sorted(theirs.items()))
        supported_text = ", ".join(str(v) for v in supported)
        raise VersionUnsupported(
            f"offered {offered_text}; this server speaks {supported_text}",
            field="versions",
            supported_versions=tuple(ProtocolVersion(m, n) for m, n in sorted(ours.items())),
        )
    major = common[-1]
    return ProtocolVersion(major, min(theirs[major], ours[major]))


def negotiate(client: Capabilities, server: Capabilities) -> Capabilities:
    """The capabilities a session uses, decided by the server.

    Codecs keep the client's order of preference; dtypes and features are the common ones;
    limits are the server's, because they bound what the server will accept.
    """
    if RAW_CODEC not in client.codecs:
        raise CapabilityMismatch(
            "every client must support the raw codec", field="capabilities.codecs"
        )
    codecs = tuple(dict.fromkeys(c for c in client.codecs if c in server.codecs or c == RAW_CODEC))
    return Capabilities(
        codecs=codecs,
        dtypes=client.dtypes & server.dtypes,
        limits=server.limits,
        features=client.features & server.features,
    )


def chunk_size(configured: int, *, client: Limits, server: Limits) -> int:
    """Blob chunk size for a session: the configured size, shrunk to fit both peers."""
    ceiling = min(client.max_message_bytes, server.max_message_bytes) - CHUNK_OVERHEAD_BYTES
    if ceiling <= 0:
        raise CapabilityMismatch(
            f"a message limit of {min(client.max_message_bytes, server.max_message_bytes)} "
            f"bytes leaves no room for blob chunks",
            field="capabilities.limits.max_message_bytes",
        )
    return max(1, min(configured, ceiling))
