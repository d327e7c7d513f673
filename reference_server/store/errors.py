"""Errors of the state store itself, as opposed to the protocol's typed errors.

These never travel to a client: they mean the server cannot (or must not) go on with the
state directory it was given, and the operator reads their message. Protocol-level problems
with blobs (not found, digest mismatch, bad offsets, limits) raise pollen.errors types, so
the gRPC service can forward them as they are.
"""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of every store-level error."""


class StoreLocked(StoreError):
    """Another process (or another Store in this one) holds the state directory."""

    def __init__(self, directory: Path, holder: str = "") -> None:
        self.directory = directory
        self.holder = holder
        by = f" (held by {holder})" if holder else ""
        super().__init__(
            f"state directory {directory} is in use by another server process{by}; "
            "two servers must never share one state directory"
        )


class StateCorrupt(StoreError):
    """The state database cannot be read as a Pollen state database."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"state database {path}: {problem}")


class SchemaTooNew(StoreError):
    """The state database was written by a newer server with a newer schema."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"state database {path} has schema version {found}, but this server supports "
            f"up to {supported}; run a newer server (opening it here could corrupt it)"
        )


class RunNotFound(StoreError):
    """An operation names a run that was never begun."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} is not in the state database; call begin_run first")


class ConfigDigestMismatch(StoreError):
    """A run is being resumed under a configuration other than the one it started with."""

    def __init__(self, run_id: str, stored: str, given: str) -> None:
        self.run_id = run_id
        self.stored = stored
        self.given = given
        super().__init__(
            f"run {run_id!r} was started with configuration digest {stored}, but the server "
            f"now has {given}; resuming it under a changed configuration would silently break "
            "bit-identical resume. Restore the original configuration or start a new run id"
        )


class RoundOutOfOrder(StoreError):
    """A round commit does not directly follow the run's last committed round."""

    def __init__(self, run_id: str, round: int, last_round: int, detail: str = "") -> None:
        self.run_id = run_id
        self.round = round
        self.last_round = last_round
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"cannot commit round {round} of run {run_id!r}: its last committed round is "
            f"{last_round}, so the next commit must be round {last_round + 1}{extra}"
        )


class RunNotRunning(StoreError):
    """A round commit for a run that is finished, failed or stopped."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(
            f"run {run_id!r} is {status}: no round can be committed to it "
            "(set its status back to running first if it is meant to go on)"
        )
