"""How the client's layers tell each other that a call failed or that it must stop."""

from __future__ import annotations

import re

from pollen.errors import (
    ErrorCode,
    InternalError,
    PollenError,
    Retry,
    StatusCode,
    Unavailable,
    retry_for_status,
)

# The gRPC library's own description of a failed TLS handshake (no typed error exists for
# it: the connection never carried a Pollen message).
_TLS_FAILURE = re.compile(r"(tls|ssl) handshake failed|certificate_verify_failed", re.IGNORECASE)


class CallError(Exception):
    """A failed RPC: its gRPC status and, when the trailer carried one, the typed error."""

    def __init__(
        self, method: str, status: StatusCode, details: str, error: PollenError | None
    ) -> None:
        self.method = method
        self.status = status
        self.details = details
        self.error = error
        super().__init__(str(self))

    @property
    def code(self) -> ErrorCode | None:
        return None if self.error is None else self.error.code

    @property
    def retry(self) -> Retry:
        """From the typed error's code (PLN-TRN-012), else the bare status (PLN-RTY-001)."""
        if self.error is not None:
            return self.error.retry
        return retry_for_status(self.status)

    @property
    def retryable(self) -> bool:
        return self.retry is Retry.YES

    @property
    def retry_after_ms(self) -> int:
        return 0 if self.error is None else max(self.error.retry_after_ms, 0)

    @property
    def tls_failure(self) -> bool:
        """Whether the connection failed in its TLS handshake (bad or untrusted certificate)."""
        return self.error is None and bool(_TLS_FAILURE.search(self.details))

    def as_pollen_error(self) -> PollenError:
        """A typed error for this failure, to report as a task's failure."""
        if self.error is not None:
            return self.error
        if self.status in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED):
            return Unavailable(f"{self.method} failed: {self.status.name}")
        return InternalError(f"{self.method} failed: {self.status.name}")

    def __str__(self) -> str:
        what = str(self.error) if self.error is not None else self.details
        return f"{self.method} failed with {self.status.name}: {what}"


class Stopped(Exception):
    """The client was asked to stop (stop(), SIGTERM) while it waited or called."""


class ConnectionLost(Exception):
    """A call kept failing with retryable errors until its retry budget ran out."""

    def __init__(self, last: CallError) -> None:
        super().__init__(f"connection lost: {last}")
        self.last = last


class Fatal(Exception):
    """An error the client cannot recover from: it leaves (when it can) and stops."""
