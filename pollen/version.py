"""Protocol versions and the version half of the handshake."""

from __future__ import annotations

from typing import NamedTuple


class ProtocolVersion(NamedTuple):
    """A protocol version: same major interoperates, a higher minor only adds options."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


#: The protocol version this implementation speaks (the highest minor of major 1).
PROTOCOL_VERSION = ProtocolVersion(1, 0)
