"""Heartbeats for the task in progress, sent from a background thread.

While the application works on a task, the client must start a request of the session at
least every `heartbeat_interval_ms`, counted from the start of its previous one
(PLN-SES-007). This thread sends a Heartbeat carrying the task's id every half interval
(PLN-SES-008) and reports what it learns through events: the server no longer wants the
task (`task_active` false, PLN-SES-011) or the session is gone (SESSION_UNKNOWN). Any
other failure is ignored and the next heartbeat comes on time, which is also how a
retryable failure is retried (PLN-SES-012).
"""

from __future__ import annotations

import logging
import threading
import time

from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.errors import ErrorCode
from reference_client.errors import CallError, Stopped
from reference_client.transport import Transport

log = logging.getLogger(__name__)


class Heartbeater:
    """Sends Heartbeats for one task of one session until closed."""

    def __init__(
        self,
        transport: Transport,
        *,
        session_id: str,
        task_id: str,
        interval_s: float,
        last_request_at: float,
    ) -> None:
        self._transport = transport
        self._request = federation_service_pb2.HeartbeatRequest(
            session_id=session_id, task_id=task_id
        )
        self._period_s = interval_s / 2
        # A heartbeat that takes longer than a period is late anyway (PLN-SES-024).
        self._timeout_s = self._period_s
        self._next_at = last_request_at + self._period_s
        self.session_lost = threading.Event()
        self.task_inactive = threading.Event()
        self.sent = 0
        self.failed = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pollen-heartbeat", daemon=True)
        self._thread.start()

    @property
    def news(self) -> bool:
        """Whether the heartbeats learned something that ends the work."""
        return self.session_lost.is_set() or self.task_inactive.is_set()

    def close(self) -> None:
        """Stop sending (a heartbeat in flight finishes on its own)."""
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(max(self._next_at - time.monotonic(), 0)):
            started = time.monotonic()
            self._next_at = started + self._period_s
            try:
                reply = self._transport.call("Heartbeat", self._request, timeout=self._timeout_s)
            except Stopped:
                return
            except CallError as err:
                if err.code is ErrorCode.SESSION_UNKNOWN:
                    self.session_lost.set()
                    return
                self.failed += 1
                log.debug(
                    "heartbeat failed (%s); the next one is due in %.1f s", err, self._period_s
                )
                continue
            self.sent += 1
            if not reply.task_active:
                self.task_inactive.set()
                return
