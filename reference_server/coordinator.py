"""The coordinator: drives the round engine with sessions, storage and strategies.

The gRPC service is a thin shell around this class: every RPC becomes one method call,
every failure a typed PollenError. The coordinator owns the sessions, runs the engine's
actions (aggregation, commits) and keeps server memory O(model): results are written to
the blob store as they arrive and read back one at a time, in a fixed order, when the
strategy aggregates them.

Everything runs on one asyncio loop; CPU-heavy work (hashing, decoding, aggregation) goes
to worker threads, and the engine is only ever touched from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pollen.blob import BlobRef
from pollen.dispatch import reply_tensors
from pollen.dtypes import Dtype
from pollen.errors import (
    BlobDigestMismatch,
    BlobIncomplete,
    BlobNotFound,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    ResultMismatch,
    SessionUnknown,
    Unauthenticated,
    UpdateRejected,
)
from pollen.handshake import (
    FEATURE_QUERY,
    Capabilities,
    check_node_id,
    chunk_size,
    negotiate,
    select_version,
)
from pollen.limits import Limits
from pollen.messages import (
    EvaluateInstruction,
    FailureReply,
    FitInstruction,
    FitReply,
    GetParametersReply,
    HandshakeRequest,
    HandshakeResponse,
    QueryReply,
    Reply,
    Task,
    TaskResult,
)
from pollen.tensors import EncodedTensor, check_tensor, decode_tensor, encode_tensor
from pollen.values import ConfigValue
from pollen.version import PROTOCOL_VERSION
from reference_server.config import Config
from reference_server.downloads import DownloadFrames
from reference_server.engine import (
    AcceptedResult,
    Action,
    AggregatePhase,
    CommitRound,
    Engine,
    PhaseClosed,
    PhaseKind,
    RunEnded,
    TasksReady,
)
from reference_server.faults import crash_point
from reference_server.memory import release_free_memory
from reference_server.reduction import CentralEvaluation, check_reply, reduce_phase
from reference_server.store import Store
from reference_server.store.records import RoundRecord, TensorRecord
from reference_server.strategies.base import (
    Strategy,
)

log = logging.getLogger("pollen.server")

AGENT = "pollen-reference-server/0.1.0"


def load_callable(spec: str) -> CentralEvaluation:
    """Import "module:function" (the central evaluation hook of the config)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidArgument(f"expected module:function, got {spec!r}")
    function = getattr(importlib.import_module(module_name), attr)
    if not callable(function):
        raise InvalidArgument(f"{spec} is not callable")
    return function  # type: ignore[no-any-return]


@dataclass(kw_only=True)
class Session:
    session_id: str
    node_id: str
    capabilities: Capabilities
    last_seen: float
    polls: int = 0
    #: The certificate that opened the session, when node ids are bound to certificates.
    peer: Peer | None = None


@dataclass(frozen=True, kw_only=True)
class Peer:
    """A caller's transport identity: its certificate and the names it holds."""

    certificate: bytes
    names: frozenset[str]

    def names_node(self, node_id: str) -> bool:
        return node_id in self.names or f"{NODE_URI_PREFIX}{node_id}" in self.names


#: A certificate names a node by this URI in its subject alternative names (or by a DNS name).
NODE_URI_PREFIX = "urn:pollen:node:"


@dataclass(kw_only=True)
class _RoundNotes:
    """What a round accumulates for its commit record and its log line."""

    started: float
    phase_started: float | None = None
    metrics: dict[str, ConfigValue] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    state: dict[str, np.ndarray] | None = None
    output: tuple[EncodedTensor, ...] | None = None


def _arrays(store: Store, tensors: Sequence[EncodedTensor]) -> list[np.ndarray]:
    """Decode stored tensors (blob references) into arrays backed by the blob files."""
    return [decode_tensor(t) for t in store.load_tensors([_record(t) for t in tensors])]


def _record(tensor: EncodedTensor) -> TensorRecord:
    if tensor.blob is None:
        raise InvalidArgument("only stored tensors (blob references) have a record")
    return TensorRecord(
        dtype=tensor.dtype, shape=tensor.shape, codec=tensor.codec, blob=tensor.blob
    )


class Coordinator:
    """One run of the reference server."""

    def __init__(
        self,
        config: Config,
        store: Store,
        strategy: Strategy,
        *,
        central_evaluation: CentralEvaluation | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.strategy = strategy
        self.central_evaluation = central_evaluation
        self.clock = clock
        server = config.server
        self.limits = Limits(max_message_bytes=server.max_message_bytes)
        self._validation = config.validation.config(config.query)
        self.capabilities = Capabilities(
            codecs=("raw", "zstd", "float16", "bfloat16", "int8", "topk"),
            dtypes=frozenset(Dtype),
            limits=self.limits,
            features=frozenset({FEATURE_QUERY}),
        )
        self.sessions: dict[str, Session] = {}
        self._node_session: dict[str, str] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self._engine: Engine | None = None
        self._strategy_state: dict[str, np.ndarray] = {}
        self._global_cache: tuple[tuple[EncodedTensor, ...], list[np.ndarray]] | None = None
        self._downloads = DownloadFrames(store.blobs.read)
        self._notes: _RoundNotes | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        #: Set when the server begins to stop: new calls get UNAVAILABLE (PLN-TRN-023).
        self.draining = False
        # Results are checked two at a time: each check maps a whole update, so an
        # unbounded number of concurrent checks would make memory grow with the clients.
        self._checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pollen-check")
        self.finished = asyncio.Event()
        self.ended: RunEnded | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "start() first"
        return self._engine

    async def start(self) -> None:
        """Load or create the run and resume it after its last committed round."""
        now = self.clock()
        plan = self.config.plan()
        run = self.store.state.begin_run(plan.run_id, self.config.digest, time.time())
        last = self.store.state.last_round(plan.run_id)
        parameters: tuple[EncodedTensor, ...] | None = None
        next_round = 1 if plan.analytics else 0
        if last is not None:
            next_round = last.round + 1
            if not plan.analytics:
                parameters = tuple(r.to_encoded() for r in last.parameters)
            stored_state = [last.strategy_state[k] for k in sorted(last.strategy_state)]
            arrays = _arrays(self.store, [s.to_encoded() for s in stored_state])
            self._strategy_state = {
                k: np.array(a) for k, a in zip(sorted(last.strategy_state), arrays, strict=True)
            }
            log.info("resuming run %s after committed round %d", plan.run_id, last.round)
        elif self.config.run.initial_model and not plan.analytics:
            await self._commit_initial_model(plan.run_id)
            await self.start()
            return
        finished = run.status != "running"
        self._engine = Engine(
            plan,
            now=now,
            next_round=next_round,
            parameters=parameters,
            finished=finished,
            fit_config=self.strategy.fit_config,
            epoch=secrets.token_hex(4),
        )
        if self._engine.ended is not None:
            self.ended = self._engine.ended
            self.finished.set()
        self._notes = _RoundNotes(started=now)
        self._ticker = asyncio.create_task(self._tick_loop(), name="pollen-engine-ticker")

    async def _commit_initial_model(self, run_id: str) -> None:
        with np.load(self.config.run.initial_model, allow_pickle=False) as data:
            arrays = [data[k] for k in sorted(data.files, key=_npz_order)]
        encoded = [encode_tensor(a) for a in arrays]
        records = await asyncio.to_thread(self.store.put_tensors, encoded)
        state = self.strategy.initial_state(arrays)
        self.store.state.commit_round(
            RoundRecord(
                run_id=run_id,
                round=0,
                parameters=records,
                strategy_state=self._put_state(state),
                metrics={},
                history={"source": self.config.run.initial_model},
                committed_at=time.time(),
            )
        )

    async def close(self) -> None:
        if self._ticker is not None:
            # The flag ends the loop even when Python 3.11's wait_for swallows the cancel
            # (its inner wait finished in the same loop iteration), which hung close().
            self._closing = True
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self._checks.shutdown(wait=True, cancel_futures=True)
        for event in self._wakeups.values():
            event.set()

    # --- sessions ----------------------------------------------------------------------

    def _session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionUnknown("unknown or expired session; handshake again", field="session_id")
        session.last_seen = self.clock()
        return session

    def begin_drain(self) -> None:
        """Refuse new calls from now on and end the held polls with empty answers."""
        self.draining = True
        for event in self._wakeups.values():
            event.set()

    def check_caller(self, session_id: str, peer: Peer | None) -> None:
        """With bound node ids, a session's calls must come from the certificate that opened
        it (PLN-SEC-009); an unknown session is left to the call's own checks."""
        session = self.sessions.get(session_id)
        if not self.config.server.bind_node_ids or session is None:
            return
        if peer is None or session.peer is None or peer.certificate != session.peer.certificate:
            raise Unauthenticated(
                "the session was opened with another client certificate", field="session_id"
            )

    async def handshake(
        self, request: HandshakeRequest, *, peer: Peer | None = None
    ) -> HandshakeResponse:
        version = select_version(request.versions, (PROTOCOL_VERSION,))
        node_id = check_node_id(request.node_id)
        server = self.config.server
        if server.bind_node_ids and (peer is None or not peer.names_node(node_id)):
            raise Unauthenticated(
                f"the client certificate does not name node {node_id!r}", field="node_id"
            )
        caps = negotiate(request.capabilities, self.capabilities)
        size = chunk_size(
            server.chunk_size_bytes, client=request.capabilities.limits, server=self.limits
        )
        old = self._node_session.pop(node_id, None)
        if old is not None:
            self.sessions.pop(old, None)  # a new session of the node replaces the old one
            # Wake a PollTask held by the old session: it ends with SESSION_UNKNOWN (PLN-HS-032).
            if (held := self._wakeups.get(node_id)) is not None:
                held.set()
        session_id = secrets.token_hex(16)
        now = self.clock()
        self.sessions[session_id] = Session(
            session_id=session_id,
            node_id=node_id,
            capabilities=dataclasses.replace(caps, limits=request.capabilities.limits),
            last_seen=now,
            peer=peer,
        )
        self._node_session[node_id] = session_id
        self._wakeups.setdefault(node_id, asyncio.Event())
        log.info(
            "node %s connected (%s, codecs %s)",
            node_id,
            request.agent or "unknown agent",
            ",".join(caps.codecs),
        )
        await self._run(self.engine.connect(node_id, now, query=FEATURE_QUERY in caps.features))
        return HandshakeResponse(
            version=version,
            session_id=session_id,
            capabilities=caps,
            heartbeat_interval_ms=round(server.heartbeat_interval_s * 1000),
            max_poll_wait_ms=round(server.max_poll_wait_s * 1000),
            session_timeout_ms=round(server.session_timeout_s * 1000),
            chunk_size_bytes=size,
            agent=AGENT,
        )

    async def leave(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return  # a Leave is safe to repeat
        self._node_session.pop(session.node_id, None)
        log.info("node %s left (%s)", session.node_id, reason)
        await self._run(self.engine.disconnect(session.node_id, self.clock(), reason=reason))

    def heartbeat(self, session_id: str, task_id: str) -> bool:
        session = self._session(session_id)
        return self.engine.is_open(task_id, session.node_id)

    # --- tasks -------------------------------------------------------------------------

    async def poll(self, session_id: str, wait_ms: int) -> Task | None:
        session = self._session(session_id)
        wait = min(wait_ms / 1000, self.config.server.max_poll_wait_s)
        deadline = self.clock() + wait
        event = self._wakeups.setdefault(session.node_id, asyncio.Event())
        session.polls += 1
        try:
            while True:
                if self.sessions.get(session_id) is not session:
                    raise SessionUnknown("the session was replaced or expired", field="session_id")
                if self.draining:
                    return None
                event.clear()
                task = self.engine.next_task(session.node_id, self.clock())
                if task is not None:
                    return await self._wire_task(task)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return None
        finally:
            session.polls -= 1
            session.last_seen = self.clock()

    async def _wire_task(self, task: Task) -> Task:
        """Inline the small tensors of the global model; large ones stay blob references."""
        ins = task.instruction
        if not isinstance(ins, FitInstruction | EvaluateInstruction):
            return task
        limit = self.config.server.inline_limit_bytes
        tensors = []
        for tensor in ins.parameters:
            if tensor.blob is not None and tensor.blob.size <= limit:
                payload = await asyncio.to_thread(self.store.blobs.read, tensor.blob)
                tensors.append(dataclasses.replace(tensor, payload=bytes(payload), blob=None))
            else:
                tensors.append(tensor)
        return dataclasses.replace(
            task, instruction=dataclasses.replace(ins, parameters=tuple(tensors))
        )

    async def submit(self, session_id: str, result: TaskResult) -> bool:
        """Accept a result; returns True when it was a duplicate. Raises the typed error."""
        session = self._session(session_id)
        try:
            fresh = self.engine.check_result(session.node_id, result)
        except ResultMismatch as exc:
            # The task closes as rejected (PLN-TSK-028, step 7); a no-op when it was closed.
            await self._run(self.engine.reject(result.task_id, exc, self.clock()))
            raise
        if not fresh:
            return True
        try:
            accepted = await self._store_result(session, result)
        except UpdateRejected as exc:
            await self._run(self.engine.reject(result.task_id, exc, self.clock()))
            raise
        except (BlobIncomplete, BlobNotFound):
            raise  # the task stays open: upload the blob, then submit again
        except PollenError as exc:
            # A malformed tensor is as bad as a malformed update: the task is rejected.
            await self._run(self.engine.reject(result.task_id, exc, self.clock()))
            raise
        if self.engine.is_open(result.task_id, session.node_id):
            crash_point("result_accepted")
        await self._run(self.engine.accept(accepted, self.clock()))
        return False

    async def _store_result(self, session: Session, result: TaskResult) -> AcceptedResult:
        reply = result.reply
        accepted = AcceptedResult(task_id=result.task_id, node_id=session.node_id, reply=reply)
        if isinstance(reply, FailureReply):
            return accepted
        caps = session.capabilities
        tensors: tuple[EncodedTensor, ...] = ()
        if isinstance(reply, FitReply | GetParametersReply):
            tensors = reply.parameters
        elif isinstance(reply, QueryReply):
            tensors = reply.tensors
        stored = await asyncio.get_running_loop().run_in_executor(
            self._checks, self._validate_and_store, reply, tensors, caps
        )
        if isinstance(reply, FitReply | GetParametersReply):
            reply = dataclasses.replace(reply, parameters=stored)
        elif isinstance(reply, QueryReply):
            reply = dataclasses.replace(reply, tensors=stored)
        return dataclasses.replace(accepted, reply=reply)

    def _validate_and_store(
        self, reply: Reply, tensors: tuple[EncodedTensor, ...], caps: Capabilities
    ) -> tuple[EncodedTensor, ...]:
        """Check a result fully, then write its payloads as blobs (worker thread)."""
        path = f"result.{reply_tensors(reply)[0]}"  # result.get_parameters.parameters...
        if len(tensors) > self.limits.max_tensors:
            raise LimitExceeded(f"{len(tensors)} tensors exceed max_tensors", field=path)
        resolved = []
        for i, tensor in enumerate(tensors):
            where = f"{path}[{i}]"
            check_tensor(
                tensor, limits=self.limits, codecs=caps.codecs, dtypes=caps.dtypes, field=where
            )
            if tensor.blob is None:
                resolved.append(tensor)
                continue
            if not self.store.blobs.has(tensor.blob):
                if self.store.blobs.stored_size(tensor.blob) is not None:
                    # Held under this digest with another size (PLN-BLB-025).
                    raise BlobDigestMismatch(
                        f"blob {tensor.blob.hex} has another size", field=where
                    )
                raise BlobIncomplete(f"blob {tensor.blob.hex} is not uploaded", field=where)
            payload = self.store.blobs.read(tensor.blob)
            resolved.append(dataclasses.replace(tensor, payload=payload, blob=None))
        arrays = [
            decode_tensor(t, limits=self.limits, field=f"{path}[{i}]")
            for i, t in enumerate(resolved)
        ]
        check_reply(reply, arrays, reference=self._global_arrays, validation=self._validation)
        del arrays
        # Uploaded tensors are stored already; only inline payloads need writing.
        stored = []
        for original, payload_tensor in zip(tensors, resolved, strict=True):
            if original.blob is not None:
                stored.append(original)
            else:
                stored.append(self.store.put_tensors([payload_tensor])[0].to_encoded())
        return tuple(stored)

    def _global_arrays(self) -> list[np.ndarray]:
        parameters = self.engine.parameters or ()
        cached = self._global_cache
        if cached is None or cached[0] != parameters:
            self._global_cache = (parameters, _arrays(self.store, parameters))
        assert self._global_cache is not None
        return self._global_cache[1]

    # --- blobs -------------------------------------------------------------------------

    def download(self, session_id: str, sha256: bytes, offset: int) -> Iterator[bytes]:
        """The blob from `offset` as serialized DownloadBlobResponse messages."""
        session = self._session(session_id)
        ref = BlobRef(sha256=sha256, size=0)
        try:
            ref.check()
        except PollenError as exc:
            exc.field = "sha256"
            raise
        stored = self._known_blob(sha256)
        if stored is None:
            raise BlobNotFound(f"no blob {sha256.hex()}", field="sha256")
        if offset > stored.size:
            raise InvalidArgument(
                f"offset {offset} is past the blob's {stored.size} bytes", field="offset"
            )
        chunk = chunk_size(
            self.config.server.chunk_size_bytes,
            client=session.capabilities.limits,
            server=self.limits,
        )
        self._downloads.retain(
            {t.blob.sha256 for t in self.engine.parameters or () if t.blob is not None}
        )
        return self._downloads.stream(stored, chunk, offset)

    def _known_blob(self, sha256: bytes) -> BlobRef | None:
        for tensor in self.engine.parameters or ():
            if tensor.blob is not None and tensor.blob.sha256 == sha256:
                return tensor.blob
        return None

    async def upload(
        self, session_id: str, ref: BlobRef, offset: int, data: memoryview
    ) -> tuple[int, bool]:
        session = self._session(session_id)
        ref.check()
        # The checks of PLN-BLB-016, in its order; steps 3 and 6 are the store's.
        if ref.size > self.limits.max_blob_bytes:
            raise LimitExceeded(
                f"blob of {ref.size} bytes exceeds max_blob_bytes", field="total_size"
            )
        if len(data) > self.config.server.chunk_size_bytes:
            raise LimitExceeded("chunk larger than chunk_size_bytes", field="data")
        if offset + len(data) > ref.size:
            raise InvalidArgument("the chunk ends past total_size", field="offset")
        upload = self.store.blobs.upload(
            session.node_id, ref, max_blob_bytes=self.limits.max_blob_bytes
        )
        if upload.complete:
            return ref.size, True
        if len(data):
            await asyncio.to_thread(upload.append, offset, data)
        if upload.committed_size == ref.size:
            await asyncio.to_thread(upload.finish, durable=False)
            return ref.size, True
        return upload.committed_size, False

    # --- engine actions ----------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while not self._closing:
            now = self.clock()
            await self._run(self.engine.tick(now))
            await self._expire_sessions(now)
            wake = self.engine.next_wakeup()
            delay = min(1.0, max(0.01, (wake - now) if wake is not None else 1.0))
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), delay)

    async def _expire_sessions(self, now: float) -> None:
        timeout = self.config.server.session_timeout_s
        for session in list(self.sessions.values()):
            if session.polls == 0 and now - session.last_seen > timeout:
                log.warning("node %s timed out after %.0f s of silence", session.node_id, timeout)
                await self.leave(session.session_id, "SESSION_TIMEOUT")

    async def _run(self, actions: list[Action]) -> None:
        """Carry out engine actions in order, including the ones they lead to."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, TasksReady):
                if self._notes is not None and self._notes.phase_started is None:
                    self._notes.phase_started = self.clock()
                for node in action.node_ids:
                    self._wakeups.setdefault(node, asyncio.Event()).set()
            elif isinstance(action, PhaseClosed):
                self._note_phase(action)
            elif isinstance(action, AggregatePhase):
                crash_point("before_aggregation")
                queue += await self._aggregate(action)
            elif isinstance(action, CommitRound):
                queue += await self._commit(action)
            elif isinstance(action, RunEnded):
                self.ended = action
                self.store.state.set_status(
                    self.config.run.id, action.status, action.reason, time.time()
                )
                log.log(
                    logging.INFO if action.status == "finished" else logging.ERROR,
                    "run %s %s: %s",
                    self.config.run.id,
                    action.status,
                    action.reason,
                )
                self.finished.set()
                for event in self._wakeups.values():
                    event.set()
        self._kick.set()

    def _note_phase(self, action: PhaseClosed) -> None:
        notes = self._notes
        if notes is None:
            return
        notes.history[f"{action.kind.value}_attempt_{action.attempt}"] = {
            "accepted": action.accepted,
            "failures": dict(action.failures),
            "duration_s": round(action.duration_s, 3),
            "event": action.event,
        }

    async def _aggregate(self, action: AggregatePhase) -> list[Action]:
        notes = self._notes or _RoundNotes(started=self.clock())
        self._notes = notes
        started = self.clock()
        # The phase's transfer buffers are free now; give them back before aggregation
        # allocates its own, so the two do not add up in the peak.
        release_free_memory()
        try:
            parameters = await asyncio.to_thread(self._aggregate_sync, action, notes)
        except PollenError as exc:
            log.error("aggregation of round %d failed: %s", action.round, exc)
            return self.engine.aggregation_failed(str(exc))
        notes.history[f"{action.kind.value}_aggregation_s"] = round(self.clock() - started, 3)
        return self.engine.aggregated(self.clock(), parameters=parameters)

    def _aggregate_sync(
        self, action: AggregatePhase, notes: _RoundNotes
    ) -> tuple[EncodedTensor, ...] | None:
        reduced = reduce_phase(
            action,
            strategy=self.strategy,
            state=self._strategy_state,
            current=self._global_arrays,
            load=lambda tensors: _arrays(self.store, tensors),
            query_reduce=self.config.query.reduce,
            query_tensors=self.config.query.tensors,
            central_evaluation=self.central_evaluation,
        )
        notes.metrics.update(reduced.metrics)
        notes.history.update(reduced.history)
        if reduced.state is not None:
            notes.state = dict(reduced.state)
        if action.kind is PhaseKind.INITIALIZE:
            self._strategy_state = dict(notes.state or {})
            # The client's tensors are stored already: the model is those very blobs.
            reply = action.results[0].reply
            assert isinstance(reply, GetParametersReply)
            return reply.parameters
        if reduced.outputs is not None:
            notes.output = tuple(
                r.to_encoded()
                for r in self.store.put_tensors([encode_tensor(t) for t in reduced.outputs])
            )
        if reduced.parameters is None:
            return None
        records = self.store.put_tensors([encode_tensor(a) for a in reduced.parameters])
        return tuple(r.to_encoded() for r in records)

    def _put_state(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorRecord]:
        names = sorted(state)
        records = self.store.put_tensors(
            [encode_tensor(np.ascontiguousarray(state[n])) for n in names]
        )
        return dict(zip(names, records, strict=True))

    async def _commit(self, action: CommitRound) -> list[Action]:
        notes = self._notes or _RoundNotes(started=self.clock())
        if notes.state is not None:
            self._strategy_state = notes.state
        state = await asyncio.to_thread(self._put_state, self._strategy_state)
        outputs = notes.output if self.config.plan().analytics else self.engine.parameters
        record = RoundRecord(
            run_id=self.config.run.id,
            round=action.round,
            parameters=tuple(_record(t) for t in outputs or ()),
            strategy_state=state,
            metrics=dict(notes.metrics),
            history=dict(
                notes.history,
                duration_s=round(self.clock() - (notes.phase_started or notes.started), 3),
            ),
            committed_at=time.time(),
        )
        crash_point("before_commit")
        await asyncio.to_thread(self.store.state.commit_round, record)
        self._log_round(record)
        self._notes = _RoundNotes(started=self.clock())
        release_free_memory()  # aggregation's temporaries, before the next round's transfers
        return self.engine.committed(self.clock())

    def _log_round(self, record: RoundRecord) -> None:
        parts = [f"round {record.round}/{self.config.run.rounds}"]
        for key, value in record.history.items():
            if isinstance(value, dict) and "accepted" in value:
                failures = (
                    ", ".join(f"{n} {k}" for k, n in value["failures"].items()) or "no failures"
                )
                phase = key.split("_attempt")[0]
                parts.append(
                    f"{phase}: {value['accepted']} accepted, {failures} "
                    f"({value['duration_s']:.2f} s)"
                )
        # Zero failure counts are noise in a log line (they stay in the record).
        shown = {k: v for k, v in record.metrics.items() if not ("num_failures" in k and v == 0)}
        metrics = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(shown.items())
            if not isinstance(v, bytes)
        )
        parts.append(f"round took {record.history.get('duration_s', 0):.2f} s")
        if metrics:
            parts.append(metrics)
        log.info(" | ".join(parts))


def _npz_order(name: str) -> tuple[int, str]:
    # np.savez names positional arrays arr_0, arr_1, ...; keep their numeric order.
    prefix, _, number = name.rpartition("_")
    return (int(number), name) if prefix == "arr" and number.isdigit() else (1 << 30, name)
