"""The client's session loop, driven through the spec's `client_session` state machine.

One thread (the caller of `run`) makes every move of the machine and every call but the
heartbeats; the application runs on a worker thread (`worker.py`) and heartbeats on their
own (`heartbeat.py`). Each state has one method below; an event the table does not list
for the current state raises InvalidTransition, so the loop cannot drift from the spec.

What survives a lost session: the node id (PLN-HS-028), a result not yet acknowledged
(submitted first in the new session, PLN-SES-014), the work in progress (taken up again
when the server hands the same task out, PLN-SES-015) and the results recently answered
(a task delivered again is answered from them, PLN-TSK-015).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pollen._generated.pollen.v1 import federation_service_pb2
from pollen.client import Client
from pollen.dispatch import (
    METHOD_FOR,
    SessionTerms,
    blob_refs,
    check_instruction,
    failure,
    reply_tensors,
    run_instruction,
    with_payloads,
)
from pollen.errors import AppError, ErrorCode, PollenError, Retry
from pollen.handshake import CHUNK_OVERHEAD_BYTES, FEATURE_QUERY, RAW_CODEC, Capabilities
from pollen.messages import (
    HandshakeRequest,
    HandshakeResponse,
    Instruction,
    ReconnectInstruction,
    Reply,
    ShutdownInstruction,
    Task,
    UnknownInstruction,
)
from pollen.state import CLIENT_SESSION, StateMachine
from pollen.version import PROTOCOL_VERSION
from pollen.wire import (
    handshake_request_to_proto,
    handshake_response_from_proto,
    task_from_proto,
)
from reference_client.backoff import Backoff, RetryPolicy
from reference_client.blobs import BlobFetcher, BlobSender
from reference_client.config import ClientOptions
from reference_client.errors import CallError, ConnectionLost, Fatal, Stopped
from reference_client.heartbeat import Heartbeater
from reference_client.results import PendingResult, assign_blobs, plan_blobs, submit_request
from reference_client.transport import DEFAULT_MESSAGE_BYTES, Security, Transport
from reference_client.worker import AppWorker

log = logging.getLogger("reference_client")

LeaveReason = federation_service_pb2.LeaveReason


class _SessionLost(Exception):
    """A call failed with SESSION_UNKNOWN: handshake again, then go on (PLN-SES-013)."""


class _Abandon(Exception):
    """The work in progress is no longer wanted (task_active false, deadline passed)."""


@dataclass(kw_only=True)
class _Work:
    """A task being worked on; it outlives a lost session until handed out again or not."""

    task: Task
    received_at: float
    deadline_at: float | None
    instruction: Instruction | None = None  # with its blob payloads in place
    future: Any = None  # concurrent.futures.Future[Reply] once the application runs


class _Attempts:
    """The retry budget of one call (PLN-RTY-011) within the shared backoff sequence."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.count = 0

    def __call__(self, err: CallError) -> None:
        """Wait before retrying `err`'s call, or raise when it must not be retried."""
        if not err.retryable:
            raise err
        self.count += 1
        if self.count >= self._session.policy.attempts_per_call:
            raise ConnectionLost(err)
        delay = self._session.backoff.failed(retry_after_ms=err.retry_after_ms)
        self._session.event("retryable_error")
        log.info("%s; retrying in %.2f s", err, delay)
        self._session.sleep(delay)

    def progress(self) -> None:
        self.count = 0
        self._session.backoff.succeeded()


class Session:
    """Runs one `Client` against one server until shutdown, stop or a fatal error."""

    def __init__(
        self,
        client: Client,
        *,
        target: str,
        node_id: str,
        security: Security,
        policy: RetryPolicy,
        options: ClientOptions,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.policy = policy
        self.options = options
        self.stop = stop
        self.machine = StateMachine(CLIENT_SESSION)
        self.backoff = Backoff(policy)
        self.transport = Transport(target, security, stop=stop, options=options, policy=policy)
        self.fetcher = BlobFetcher(
            self.transport,
            max_blob_bytes=options.limits.max_blob_bytes,
            timeout_s=options.download_timeout_s,
            attempts=options.blob_attempts,
        )
        self.sender = BlobSender(
            self.transport, timeout_s=options.call_timeout_s, attempts=options.blob_attempts
        )
        self.worker = AppWorker()
        features = frozenset({FEATURE_QUERY}) if client.implements("query") else frozenset()
        self.offered = Capabilities(
            codecs=options.codecs, dtypes=options.dtypes, limits=options.limits, features=features
        )
        self.exit_status = 0
        self.session: HandshakeResponse | None = None
        self.terms = SessionTerms()
        self.pending: PendingResult | None = None
        self.answered: OrderedDict[str, PendingResult] = OrderedDict()
        self.work: _Work | None = None
        self.heartbeater: Heartbeater | None = None
        self._heartbeats_seen = 0
        self._not_before = 0.0  # monotonic time before which no connection attempt is made
        self._tls_failures = 0
        self._last_request_at = time.monotonic()
        self._leave: tuple[int, str, bool] = (LeaveReason.LEAVE_REASON_UNSPECIFIED, "", False)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the machine reaches `closed`; the exit status (0 for a normal end)."""
        handlers: dict[str, Callable[[], None]] = {
            "disconnected": self._disconnected,
            "handshaking": self._handshaking,
            "ready": self._ready,
            "polling": self._polling,
            "working": self._working,
            "submitting": self._submitting,
            "leaving": self._leaving,
        }
        try:
            while not self.machine.terminal:
                try:
                    if self.stop.is_set() and self.machine.state != "leaving":
                        raise Stopped
                    handlers[self.machine.state]()
                except Stopped:
                    self._on_stop()
                except Fatal as exc:
                    self._on_fatal(str(exc))
                except _SessionLost:
                    self._on_session_lost()
                except ConnectionLost as exc:
                    self._on_connection_lost(exc)
                except Exception as exc:  # a defect; end cleanly rather than hang
                    log.exception("unexpected error in state %s", self.machine.state)
                    if not self.machine.can_handle("fatal_error"):
                        self.exit_status = 1
                        break
                    self._on_fatal(f"internal error: {type(exc).__name__}")
        finally:
            self._close_heartbeater()
            self.transport.close()
        return self.exit_status

    def event(self, name: str) -> None:
        before = self.machine.state
        after = self.machine.handle(name)
        log.debug("session: %s --%s--> %s", before, name, after)

    def sleep(self, seconds: float) -> None:
        """Wait, unless asked to stop (then raise Stopped)."""
        if seconds > 0 and self.stop.wait(seconds):
            raise Stopped

    # --- states ----------------------------------------------------------------------------

    def _disconnected(self) -> None:
        self.sleep(self._take_delay())
        # A new connection for every connection attempt (PLN-RTY-011); before a session,
        # nothing larger than the default message size is sent (PLN-TRN-019).
        self.transport.connect(send_limit=DEFAULT_MESSAGE_BYTES)
        self.event("connect")

    def _handshaking(self) -> None:
        self.sleep(self._take_delay())
        request = handshake_request_to_proto(
            HandshakeRequest(
                versions=(PROTOCOL_VERSION,),
                node_id=self.node_id,
                capabilities=self.offered,
                agent=self.options.agent_string,
            )
        )
        attempts = _Attempts(self)
        while True:
            try:
                reply = self.transport.call(
                    "Handshake", request, timeout=self.options.handshake_timeout_s
                )
                break
            except CallError as err:
                self._note_tls(err)
                if not err.retryable:
                    self._handshake_rejected(err)
                    return
                attempts(err)
        self._tls_failures = 0
        self.event("handshake_accepted")
        self._open_session(reply)

    def _ready(self) -> None:
        if self.pending is not None:
            self.event("result_pending")
        else:
            self.event("poll_started")

    def _polling(self) -> None:
        assert self.session is not None
        wait_ms = self.session.max_poll_wait_ms
        request = federation_service_pb2.PollTaskRequest(
            session_id=self.session.session_id, wait_ms=wait_ms
        )
        started = time.monotonic()
        reply = self._call(
            "PollTask",
            request,
            timeout=wait_ms / 1000 + self.options.poll_deadline_margin_s,
            on_fail=self._fatal_poll_error,
        )
        received = time.monotonic()
        self._last_request_at = started
        if not reply.HasField("task"):
            self.event("poll_empty")
            self._drop_orphan_work("no longer handed out")
            return
        try:
            task = task_from_proto(reply.task, limits=self.options.limits)
        except PollenError as exc:
            # Maps or dtypes that do not decode are the task's failure (PLN-TSK-027).
            self._drop_orphan_work("replaced by another task")
            task = Task(task_id=reply.task.task_id, instruction=_UNDECODED)
            self.event("task_received")
            self._finish(task, failure(exc), received)
            return
        instruction = task.instruction
        if isinstance(instruction, ReconnectInstruction | ShutdownInstruction):
            self._drop_orphan_work("the server sent a control instruction")
            self._on_control(instruction, received)
            return
        self.event("task_received")
        self._begin_work(task, received)

    def _working(self) -> None:
        work = self.work
        assert work is not None
        assert self.session is not None
        try:
            if work.future is None:
                reply = self._prepare(work)
                if reply is not None:
                    self._close_heartbeater()
                    self._finish(work.task, reply, work.received_at)
                    return
                self._start_app(work)
            reply = self._await(work)
        except _Abandon as why:
            self._close_heartbeater()
            self._abandon(work, str(why))
            self.event("task_abandoned")
            return
        except BaseException:
            self._close_heartbeater()
            raise
        self._close_heartbeater()
        self._finish(work.task, reply, work.received_at)

    def _submitting(self) -> None:
        pending = self.pending
        assert pending is not None
        assert self.session is not None
        try:
            self._upload_blobs(pending)
        except PollenError as exc:
            # A blob that cannot be uploaded makes the result a failure (chapter 12).
            log.warning("task %s: result upload failed: %s", pending.task_id, exc)
            pending.replace_reply(failure(exc))
        request = submit_request(pending, self.session.session_id)
        limit = self.terms.send_limits.max_message_bytes
        if request.ByteSize() > limit:
            pending.replace_reply(
                failure(_app_error(f"the result does not fit in {limit} bytes, even with blobs"))
            )
            return
        try:
            response = self._call("SubmitResult", request, timeout=self.options.call_timeout_s)
        except CallError as err:
            missing = err.code in (ErrorCode.BLOB_NOT_FOUND, ErrorCode.BLOB_INCOMPLETE)
            if missing and pending.blobs and pending.blob_resubmits < self.options.blob_attempts:
                # Upload the result's blobs again (with a status query) and resubmit
                # (PLN-TSK-033); no event: the client stays in `submitting`.
                pending.blob_resubmits += 1
                self.sender.forget(list(pending.blobs.values()))
                return
            self.pending = None
            self.event("result_rejected")
            code = err.code.name if err.code else err.status.name
            self._log_task(pending, f"result refused ({code})")
            return
        self.pending = None
        self.event("result_accepted")
        self._keep_answered(pending)
        self._log_task(pending, "result accepted" + (" (duplicate)" if response.duplicate else ""))

    def _leaving(self) -> None:
        reason, message, reconnect = self._leave
        if self.session is not None:
            request = federation_service_pb2.LeaveRequest(
                session_id=self.session.session_id,
                reason=reason,  # type: ignore[arg-type]
                message=message,
            )
            try:
                # Best effort: once, a short deadline, never cancelled (PLN-SES-019).
                self.transport.call(
                    "Leave", request, timeout=self.options.leave_timeout_s, cancellable=False
                )
            except CallError as err:
                log.info("leave failed (ignored): %s", err)
        # A session id is never used again after its Leave (PLN-SES-020).
        self.session = None
        if reconnect:
            self.transport.disconnect()
            self.event("leave_done_reconnect")
        else:
            self.event("leave_done_stop")

    # --- handshake -------------------------------------------------------------------------

    def _note_tls(self, err: CallError) -> None:
        if not err.tls_failure:
            return
        self._tls_failures += 1
        log.error("TLS handshake with %s failed: %s", self.transport.target, err.details)
        if self._tls_failures >= self.policy.tls_failure_attempts:
            raise Fatal(
                f"the TLS handshake failed {self._tls_failures} times; check the server "
                "address and the trusted certificates"
            )

    def _handshake_rejected(self, err: CallError) -> None:
        if err.code is ErrorCode.VERSION_UNSUPPORTED and err.error is not None:
            # PLN-HS-010: report, stop, never handshake again with the same versions.
            supported = ", ".join(str(v) for v in err.error.supported_versions) or "none listed"
            log.error(
                "the server does not speak protocol %s (it speaks: %s); stopping",
                PROTOCOL_VERSION,
                supported,
            )
        else:
            log.error("handshake refused: %s; stopping", err)
        self.exit_status = 1
        self.event("handshake_rejected")

    def _open_session(self, message: federation_service_pb2.HandshakeResponse) -> None:
        try:
            response = handshake_response_from_proto(message)
        except PollenError as exc:
            self.session = _bare_session(message)
            raise Fatal(f"malformed handshake response: {exc}") from None
        self.session = response
        problem = _response_problem(response, self.offered)
        if problem:
            raise Fatal(problem)  # PLN-HS-011: leave with FATAL_ERROR and stop
        self.terms = SessionTerms.from_handshake(
            self.offered, response.capabilities, result_codec=self.options.result_codec
        )
        self.transport.fit_send_limit(response.capabilities.limits.max_message_bytes)
        log.info(
            "session open with %s (node %s, protocol %s, server %s)",
            self.transport.target,
            self.node_id,
            response.version,
            response.agent or "unnamed",
        )

    # --- work --------------------------------------------------------------------------------

    def _begin_work(self, task: Task, received_at: float) -> None:
        kept = self.answered.pop(task.task_id, None)
        if kept is not None:
            # Delivered again: answer with the result held, never run it twice (PLN-TSK-015).
            self._drop_orphan_work("replaced by another task")
            log.info("task %s delivered again: submitting its kept result", task.task_id)
            self.pending = kept
            self.event("work_finished")
            return
        if self.work is not None and self.work.task.task_id == task.task_id:
            log.info("task %s handed out again: resuming the work in progress", task.task_id)
        else:
            self._drop_orphan_work("replaced by another task")
            deadline = received_at + task.deadline_ms / 1000 if task.deadline_ms else None
            self.work = _Work(task=task, received_at=received_at, deadline_at=deadline)
            self.fetcher.forget()
        assert self.session is not None
        self._close_heartbeater()
        self.heartbeater = Heartbeater(
            self.transport,
            session_id=self.session.session_id,
            task_id=task.task_id,
            interval_s=self.session.heartbeat_interval_ms / 1000,
            last_request_at=self._last_request_at,
        )
        self._heartbeats_seen = 0

    def _prepare(self, work: _Work) -> Reply | None:
        """Check the tensors, then fetch the blobs; a failure reply, or None to go on."""
        assert self.session is not None
        instruction = work.task.instruction
        try:
            check_instruction(instruction, self.terms)  # before any download (PLN-BLB-011)
        except PollenError as exc:
            return failure(exc)
        payloads = {}
        for path, ref in blob_refs(instruction):
            attempts = _Attempts(self)

            def progress(attempts: _Attempts = attempts) -> None:
                attempts.progress()
                self._check_work(work)

            try:
                payloads[ref.sha256] = self.fetcher.fetch(
                    self.session.session_id,
                    ref,
                    retry=attempts,
                    progress=progress,
                    chunk_size=self.session.chunk_size_bytes,
                )
            except CallError as err:
                if err.retry is Retry.AFTER_HANDSHAKE:
                    raise _SessionLost from None
                return failure(_at(err.as_pollen_error(), path))
            except ConnectionLost as exc:
                return failure(_at(exc.last.as_pollen_error(), path))
            except PollenError as exc:
                return failure(_at(exc, path))
            self._check_work(work)
        work.instruction = with_payloads(instruction, payloads)
        return None

    def _start_app(self, work: _Work) -> None:
        instruction = work.instruction
        assert instruction is not None
        terms = self.terms
        task_id = work.task.task_id

        def on_error(exc: BaseException) -> None:
            log.warning("task %s: the application failed", task_id, exc_info=exc)

        def job() -> Reply:
            return run_instruction(self.client, instruction, terms, on_error=on_error)

        work.future = self.worker.submit(job, method=_instruction_name(instruction))

    def _await(self, work: _Work) -> Reply:
        while True:
            if self.stop.is_set():
                raise Stopped
            self._check_work(work)
            try:
                reply: Reply = work.future.result(timeout=0.05)
            except TimeoutError:
                continue
            return reply

    def _check_work(self, work: _Work) -> None:
        """Raise when the work must end: stop, lost session, unwanted task, deadline."""
        beat = self.heartbeater
        if beat is not None:
            for _ in range(beat.sent - self._heartbeats_seen):
                self.event("heartbeat_sent")
            self._heartbeats_seen = beat.sent
            if beat.session_lost.is_set():
                raise _SessionLost
            if beat.task_inactive.is_set():
                # PLN-SES-011: a result sent anyway would only be refused.
                raise _Abandon("the server no longer wants its result")
        if work.deadline_at is not None and time.monotonic() > work.deadline_at:
            raise _Abandon("its deadline passed")  # PLN-TSK-018: submit nothing

    def _finish(self, task: Task, reply: Reply, received_at: float) -> None:
        if self.work is not None and self.work.task.task_id == task.task_id:
            self.work = None
        self.pending = PendingResult(
            task=task, reply=reply, duration_s=time.monotonic() - received_at
        )
        self.event("work_finished")

    def _abandon(self, work: _Work, why: str) -> None:
        if work.future is not None:
            work.future.cancel()
        self.work = None
        log.warning(
            "task %s (%s): abandoned after %.2f s: %s",
            work.task.task_id,
            _instruction_name(work.task.instruction),
            time.monotonic() - work.received_at,
            why,
        )

    def _drop_orphan_work(self, why: str) -> None:
        """Forget work from a lost session that the new session did not hand out again."""
        if self.work is not None:
            self._abandon(self.work, why)

    def _close_heartbeater(self) -> None:
        if self.heartbeater is not None:
            self.heartbeater.close()
            self.heartbeater = None

    # --- results -----------------------------------------------------------------------------

    def _upload_blobs(self, pending: PendingResult) -> None:
        assert self.session is not None
        if pending.blobs is None:
            positions = plan_blobs(
                pending.reply,
                task_id=pending.task_id,
                session_id=self.session.session_id,
                max_message_bytes=self.terms.send_limits.max_message_bytes,
            )
            assign_blobs(pending, positions)
        assert pending.blobs is not None
        _, tensors = reply_tensors(pending.reply)
        for position, ref in pending.blobs.items():
            if ref.size > self.terms.send_limits.max_blob_bytes:
                raise _app_error(f"a result tensor of {ref.size} bytes exceeds max_blob_bytes")
            attempts = _Attempts(self)
            try:
                self.sender.send(
                    self.session.session_id,
                    tensors[position].payload,
                    ref,
                    chunk_size=self.session.chunk_size_bytes,
                    retry=attempts,
                    progress=attempts.progress,
                )
            except CallError as err:
                if err.retry is Retry.AFTER_HANDSHAKE:
                    raise _SessionLost from None
                raise err.as_pollen_error() from None

    def _keep_answered(self, pending: PendingResult) -> None:
        self.answered[pending.task_id] = pending
        while len(self.answered) > self.options.kept_results:
            self.answered.popitem(last=False)

    def _log_task(self, pending: PendingResult, what: str) -> None:
        task = pending.task
        where = f", run {task.run_id} round {task.round}" if task.run_id else ""
        log.info(
            "task %s (%s%s): %s in %.2f s; %s",
            task.task_id,
            pending.instruction,
            where,
            pending.outcome,
            pending.duration_s,
            what,
        )

    # --- control, stop, errors -----------------------------------------------------------

    def _on_control(self, instruction: Instruction, received_at: float) -> None:
        if isinstance(instruction, ReconnectInstruction):
            log.info("the server asks to reconnect in %d ms", instruction.delay_ms)
            self.event("reconnect_received")
            self._leave = (LeaveReason.LEAVE_REASON_RECONNECT_INSTRUCTION, "", True)
            # Not before delay_ms after the instruction arrived (PLN-CTL-002), with a fresh
            # backoff sequence (PLN-CTL-004).
            self._not_before = received_at + instruction.delay_ms / 1000
            self.backoff.succeeded()
        else:
            assert isinstance(instruction, ShutdownInstruction)
            log.info("the server asks to shut down: %s", instruction.reason or "no reason given")
            self.event("shutdown_received")
            self._leave = (LeaveReason.LEAVE_REASON_SHUTDOWN_INSTRUCTION, "", False)

    def _on_stop(self) -> None:
        self._close_heartbeater()
        state = self.machine.state
        log.info("stopping (%s)", state)
        if state in ("disconnected", "handshaking"):
            self.event("stop_requested")
            return
        self._flush_pending()
        self.event("stop_requested")
        self._leave = (LeaveReason.LEAVE_REASON_CLIENT_STOPPING, "", False)

    def _flush_pending(self) -> None:
        """Submit a held result once, quickly, before leaving (PLN-SES-017)."""
        pending = self.pending
        if pending is None or self.session is None:
            return
        # Only a result that needs no more uploads can be submitted quickly.
        if pending.blobs is None:
            if reply_tensors(pending.reply)[1]:
                return
        elif not all(self.sender.is_complete(ref) for ref in pending.blobs.values()):
            return
        request = submit_request(pending, self.session.session_id)
        try:
            self.transport.call(
                "SubmitResult", request, timeout=self.options.leave_timeout_s, cancellable=False
            )
        except CallError as err:
            log.info("task %s: last submission before stopping failed: %s", pending.task_id, err)
            return
        self.pending = None
        self._log_task(pending, "result accepted while stopping")

    def _on_fatal(self, message: str) -> None:
        self._close_heartbeater()
        log.error("fatal: %s", message)
        self.exit_status = 1
        leaving = self.machine.state not in ("disconnected", "handshaking")
        self.event("fatal_error")
        if leaving:
            self._leave = (LeaveReason.LEAVE_REASON_FATAL_ERROR, message[:1024], False)

    def _fatal_poll_error(self, err: CallError) -> None:
        # Non-retryable PollTask failures other than SESSION_UNKNOWN are fatal (chapter 12).
        raise Fatal(f"polling failed: {err}")

    def _on_session_lost(self) -> None:
        self._close_heartbeater()
        log.warning("the server no longer knows the session; handshaking again")
        self.session = None
        self.event("session_unknown")
        self._delay(self.backoff.failed())

    def _on_connection_lost(self, exc: ConnectionLost) -> None:
        self._close_heartbeater()
        delay = self.backoff.failed(retry_after_ms=exc.last.retry_after_ms)
        self._delay(delay)
        log.warning("%s; reconnecting in %.2f s", exc, delay)
        self.session = None
        self.transport.disconnect()
        self.event("connection_lost")

    def _delay(self, seconds: float) -> None:
        self._not_before = time.monotonic() + seconds

    def _take_delay(self) -> float:
        return max(self._not_before - time.monotonic(), 0.0)

    def _call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float,
        on_fail: Callable[[CallError], None] | None = None,
    ) -> Any:
        """A call retried by the rules: backoff on retryable errors, a new handshake on
        SESSION_UNKNOWN; other failures go to `on_fail`, or are raised."""
        attempts = _Attempts(self)
        while True:
            try:
                reply = self.transport.call(method, request, timeout=timeout)
            except CallError as err:
                if err.retry is Retry.AFTER_HANDSHAKE:
                    raise _SessionLost from None
                if not err.retryable:
                    if on_fail is not None:
                        on_fail(err)
                    raise
                attempts(err)
                continue
            attempts.progress()
            return reply


# --- helpers ---------------------------------------------------------------------------------

_UNDECODED = UnknownInstruction()


def _instruction_name(instruction: Instruction) -> str:
    return METHOD_FOR.get(type(instruction), "unknown")


def _at(error: PollenError, path: str) -> PollenError:
    if not error.field:
        error.field = path
    elif not error.field.startswith(path):
        error.field = f"{path}.{error.field}"
    return error


def _app_error(message: str) -> PollenError:
    return AppError(message)


def _printable(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in text)


def _response_problem(response: HandshakeResponse, offered: Capabilities) -> str | None:
    """Why a handshake response cannot be used, or None."""
    version = response.version
    if version.major != PROTOCOL_VERSION.major or version.minor > PROTOCOL_VERSION.minor:
        return f"the server chose protocol {version}, which this client did not offer"
    if not 1 <= len(response.session_id) <= 128 or not _printable(response.session_id):
        return "the server sent a malformed session id"
    for name in ("heartbeat_interval_ms", "max_poll_wait_ms", "session_timeout_ms"):
        if getattr(response, name) <= 0:
            return f"the server sent {name} 0"
    if RAW_CODEC not in response.capabilities.codecs:
        return "the server's codecs lack raw"
    ceiling = (
        min(offered.limits.max_message_bytes, response.capabilities.limits.max_message_bytes)
        - CHUNK_OVERHEAD_BYTES
    )
    if not 0 < response.chunk_size_bytes <= ceiling:
        return f"chunk_size_bytes {response.chunk_size_bytes} does not fit the message limits"
    return None


def _bare_session(message: federation_service_pb2.HandshakeResponse) -> HandshakeResponse:
    """Enough of an unusable response to send Leave with its session id."""
    return HandshakeResponse(
        version=PROTOCOL_VERSION,
        session_id=message.session_id,
        capabilities=Capabilities(),
        heartbeat_interval_ms=message.heartbeat_interval_ms,
        max_poll_wait_ms=message.max_poll_wait_ms,
        session_timeout_ms=message.session_timeout_ms,
        chunk_size_bytes=message.chunk_size_bytes,
    )
