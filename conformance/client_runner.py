"""Client mode: play each case's script against a fresh process of the program under test.

For every case the runner starts a scripted server on 127.0.0.1 (a free port), starts the
command with Annex C's environment, walks the script step by step and judges what reaches
the wire. The verdict never depends on the program's own output. Every wait is bounded and
every process is ended by its process group when the case is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from conformance.cases import Case
from conformance.model import (
    Expected,
    ModelError,
    Oracle,
    canonical,
    dtype_named,
    make_array,
    make_config,
    same_value,
)
from conformance.scripted_server import (
    Blob,
    Event,
    Fault,
    Offer,
    ScriptedServer,
    result_summary,
    status_named,
    task_summary,
)
from pollen._generated.pollen.v1 import (
    error_pb2,
    federation_service_pb2,
    task_pb2,
    tensor_pb2,
    value_pb2,
)
from pollen.dtypes import Dtype
from pollen.errors import ERROR_TABLE, ErrorCode, PollenError
from pollen.tensors import decode_tensor
from pollen.values import ConfigValue
from pollen.wire import tensor_from_proto, value_from_proto

#: Seconds a case waits for the program's first Handshake (it may be slow to start).
START_TIMEOUT_S = 20.0
#: Spare time allowed on every upper time bound, for a loaded machine.
DEFAULT_GRACE_S = 0.5
NODE_ID = "conformance-node-1"


@dataclass(frozen=True, kw_only=True)
class Failure:
    """One check that did not hold: where, what was expected, what happened."""

    step: str
    expected: str
    actual: str
    requirement: str = ""


@dataclass(frozen=True, kw_only=True)
class CaseResult:
    """The verdict on one case, before any known-failing list is applied."""

    case: Case
    outcome: str  # PASS, FAIL, SKIP, ERROR
    failures: tuple[Failure, ...] = ()
    duration_s: float = 0.0
    exit_status: int | None = None
    output_tail: str = ""
    transcript: tuple[Event, ...] = ()
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files for TLS cases: the server's pair, its CA, and an unrelated CA."""

    server_cert: Path
    server_key: Path
    ca: Path
    other_ca: Path
    #: node id -> (certificate, key) of a client certificate naming that node.
    clients: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    command: tuple[str, ...]
    workdir: Path
    jobs: int = 4
    grace_s: float = DEFAULT_GRACE_S
    tls: TlsFiles | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class CaseFailed(Exception):
    """Ends a case early: a check failed that later steps depend on."""


class _Play:
    """One case in progress: its server, its process and the checks made so far."""

    def __init__(self, case: Case, options: RunOptions) -> None:
        self.case = case
        self.options = options
        self.started = time.monotonic()
        self.failures: list[Failure] = []
        self.oracle = Oracle()
        self.task_count = 0
        self.cursor = 0  # events before this index were judged by earlier steps
        self.marks: dict[str, int] = {}  # rpc -> index of the event list when a fault was set
        self.proc: asyncio.subprocess.Process | None = None
        self.exit_status: int | None = None
        self.ended = False  # the program was told to stop (shutdown) or must stop
        self.last_task: tuple[Offer, str, list[Any], dict[str, ConfigValue]] | None = None
        #: Raw SubmitResult requests judged so far, by task id (PLN-TSK-015).
        self.submitted: dict[str, bytes] = {}
        use_tls = "tls" in case.handshake or any("tls" in s for s in case.steps)
        self.tls = options.tls if use_tls else None
        credentials = None
        if self.tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.server_key.read_bytes(), self.tls.server_cert.read_bytes())]
            )
        self.server = ScriptedServer(
            handshake=case.handshake, credentials=credentials, clock=self.clock
        )
        self.log_path = options.workdir / (case.name.replace("/", "__") + ".log")

    def clock(self) -> float:
        return time.monotonic() - self.started

    def fail(self, step: str, expected: str, actual: str, requirement: str = "") -> None:
        self.failures.append(
            Failure(step=step, expected=expected, actual=actual, requirement=requirement)
        )

    @property
    def grace(self) -> float:
        return self.options.grace_s

    # --- the program -------------------------------------------------------------------------

    async def spawn(self, *, root_cert: Path | None = None) -> None:
        env = {
            **os.environ,
            **self.options.env,
            "POLLEN_CONFORMANCE_SERVER": f"127.0.0.1:{self.server.port}",
            "POLLEN_CONFORMANCE_NODE_ID": NODE_ID,
            "POLLEN_CONFORMANCE_CASE": self.case.name,
        }
        env.pop("POLLEN_CONFORMANCE_ROOT_CERT", None)
        env.pop("POLLEN_CONFORMANCE_INSECURE", None)
        if self.tls is not None:
            env["POLLEN_CONFORMANCE_ROOT_CERT"] = str(root_cert or self.tls.ca)
        else:
            env["POLLEN_CONFORMANCE_INSECURE"] = "1"
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.options.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        await self.server.note("--", "process", f"started pid {self.proc.pid}")

    async def wait_exit(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            status = await asyncio.wait_for(self.proc.wait(), timeout=timeout)
        except TimeoutError:
            return None
        if self.exit_status is None:
            self.exit_status = status
            await self.server.note("--", "process", f"exited with status {status}")
        return status

    async def kill(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            if proc is not None and self.exit_status is None:
                self.exit_status = proc.returncode
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=wait)
                return

    def output_tail(self, limit: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace")

    # --- waiting on the wire -------------------------------------------------------------

    async def next_event(
        self, predicate: Callable[[Event], bool], timeout: float
    ) -> tuple[int, Event] | None:
        found = await self.server.wait_event(predicate, start=self.cursor, timeout=timeout)
        if found is not None:
            self.cursor = found[0] + 1
        return found

    def events_since(self, start: int) -> list[Event]:
        return self.server.events[start:]

    async def quiet(self, seconds: float) -> None:
        # A fixed observation window: the program must not do something during it.
        await asyncio.sleep(seconds)

    # --- the script ----------------------------------------------------------------------

    async def run(self) -> None:
        await self.server.start()
        await self.spawn(root_cert=self._root_cert_override())
        steps = list(self.case.steps)
        expects_handshake = not any("expect_no_handshake" in s for s in steps)
        if expects_handshake:
            await self._first_handshake()
            if self._skip_reason():
                return
        for index, step in enumerate(steps):
            await self.step(f"step {index + 1}", step)
        if not self.ended:
            await self.step("final shutdown", {"shutdown": {}})
        self._check_deadlines()

    def _check_deadlines(self) -> None:
        for call in self.server.calls:
            rpc, left, wait_ms = call.rpc, call.left, call.wait_ms
            if left is None or left > 24 * 3600:
                self.fail("every call", f"{rpc} with a deadline", "no deadline", "PLN-TRN-014")
                return
            negotiated = self.server.negotiated
            cap = negotiated.max_poll_wait_ms if negotiated else 0
            wait = min(wait_ms, cap) / 1000
            # `left` is measured on arrival, so it is already shorter than what was set.
            if rpc == "PollTask" and left <= wait - 0.05:
                self.fail(
                    "every call",
                    f"a PollTask deadline longer than its wait of {wait:.2f} s",
                    f"{left:.2f} s left on arrival",
                    "PLN-TRN-015",
                )
                return

    def _root_cert_override(self) -> Path | None:
        if self.tls is not None and self.case.handshake.get("tls") == "untrusted":
            return self.tls.other_ca
        return None

    async def _first_handshake(self) -> None:
        looking = asyncio.ensure_future(
            self.next_event(
                lambda e: e.rpc == "Handshake" and e.direction == "c>s", START_TIMEOUT_S
            )
        )
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        # A program that exits before its Handshake (a wrong command, a crash at start) fails
        # at once rather than after the whole start timeout.
        await asyncio.wait({looking, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not looking.done():
            # A Handshake sent just before the exit still counts.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(looking), timeout=0.5)
        exited.cancel()
        found = None
        if looking.done():
            found = looking.result()
        else:
            looking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await looking
        if found is None:
            status = self.proc.returncode
            self.fail(
                "handshake",
                "a Handshake as the first call",
                "none: the program "
                + (
                    f"was still running after {START_TIMEOUT_S:.0f} s"
                    if status is None
                    else f"exited with status {status} first (see its output)"
                ),
                "PLN-HS-001",
            )
            raise CaseFailed
        earlier = [e for e in self.server.events[: found[0]] if e.direction == "c>s"]
        if earlier:
            self.fail(
                "handshake", "a Handshake as the first call", earlier[0].summary, "PLN-HS-001"
            )
        self._check_handshake(found[1])

    def _check_handshake(self, event: Event) -> None:
        request = event.data["request"]
        majors = [v.major for v in request.versions]
        if 1 not in majors:
            self.fail("handshake", "versions include major 1", str(majors), "PLN-HS-002")
        if len(majors) != len(set(majors)):
            self.fail("handshake", "one entry per major version", str(majors), "PLN-HS-002")
        if "raw" not in request.capabilities.codecs:
            self.fail(
                "handshake",
                'codecs include "raw"',
                str(list(request.capabilities.codecs)),
                "PLN-HS-004",
            )
        if request.node_id != NODE_ID:
            self.fail("handshake", f"node_id {NODE_ID!r}", repr(request.node_id), "PLN-CNF-004")

    def _skip_reason(self) -> str:
        offered = self.server.offered
        if offered is None:
            return ""
        have = {f"codec:{c}" for c in offered.capabilities.codecs}
        have |= {f"feature:{f}" for f in offered.capabilities.features}
        have |= {
            f"dtype:{tensor_pb2.Dtype.Name(d).removeprefix('DTYPE_').lower()}"
            for d in offered.capabilities.dtypes
        }
        missing = [r for r in self.case.requires if r not in have]
        return f"not advertised: {', '.join(missing)}" if missing else ""

    async def step(self, where: str, step: Mapping[str, Any]) -> None:
        kinds = [k for k in _STEPS if k in step]
        if len(kinds) != 1:
            raise ModelError(
                f"{where}: a step has exactly one of {sorted(_STEPS)}, got {sorted(step)}"
            )
        await _STEPS[kinds[0]](self, where, step)

    # --- tasks -----------------------------------------------------------------------------

    def _build_task(
        self, where: str, step: Mapping[str, Any]
    ) -> tuple[Offer, str, list[Any], dict[str, ConfigValue]]:
        body = step["task"]
        if body.get("again"):
            # The previous task once more, same id and same bytes (PLN-TSK-015).
            if self.last_task is None:
                raise ModelError(f"{where}: `again` needs an earlier task step")
            return self.last_task
        built = self._build_new_task(where, body)
        self.last_task = built
        return built

    def _build_new_task(
        self, where: str, body: Mapping[str, Any]
    ) -> tuple[Offer, str, list[Any], dict[str, ConfigValue]]:
        self.task_count += 1
        task_id = str(body.get("id", f"task-{self.task_count}"))
        task = task_pb2.Task(task_id=task_id, run_id="conformance", round=self.task_count)
        if "deadline_ms" in body:
            task.deadline_ms = int(body["deadline_ms"])
        if "raw_task_hex" in body:
            # A Task whose bytes the case spells out (unknown members, odd encodings).
            data = task.SerializeToString() + bytes.fromhex(body["raw_task_hex"])
            return Offer(task_id=task_id, data=data, summary=f"task {task_id}: raw"), "raw", [], {}
        kinds = [k for k in _INSTRUCTIONS if k in body]
        if len(kinds) != 1:
            raise ModelError(f"{where}: a task has exactly one instruction")
        kind = kinds[0]
        spec = body[kind] or {}
        config = make_config(spec.get("config"))
        for n in range(int(spec.get("filler_entries", 0))):
            config[f"filler.{n:05d}"] = n
        arrays = [
            None if t.get("virtual_blob") else make_array(t)
            for t in spec.get("parameters", spec.get("inputs", []))
        ]
        instruction = getattr(task, kind)
        if kind in ("reconnect", "shutdown"):
            instruction.CopyFrom(_INSTRUCTIONS[kind](**spec))
        else:
            instruction.SetInParent()
            for key, value in config.items():
                instruction.config[key].CopyFrom(_value(value))
            field_name = {"fit": "parameters", "evaluate": "parameters", "query": "inputs"}.get(
                kind
            )
            if field_name:
                target = getattr(instruction, field_name)
                for i, (array, tspec) in enumerate(
                    zip(arrays, spec.get("parameters", spec.get("inputs", [])), strict=True)
                ):
                    target.append(self._tensor(array, tspec, i))
                # Tiny valid tensors after the listed ones, to go past max_tensors
                # (PLN-TEN-011); only for tasks whose expected answer is a failure.
                for _ in range(int(spec.get("filler_tensors", 0))):
                    target.add(
                        dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1], codec="raw"
                    ).inline_data = b"\0\0\0\0"
        summary = f"task {task_id}: {task_summary(task)}"
        data = task.SerializeToString()
        if "config_order" in spec:
            data = _with_config_order(task, kind, [str(k) for k in spec["config_order"]])
        return (
            Offer(task_id=task_id, data=data, summary=summary),
            kind,
            arrays,
            config,
        )

    def _tensor(self, array: Any, spec: Mapping[str, Any], index: int) -> tensor_pb2.Tensor:
        if array is None:
            # A header whose blob is never served: the program must refuse it from its
            # size alone, before any download (PLN-BLB-011, PLN-SEC-013).
            dtype = dtype_named(str(spec["dtype"]))
            shape = [int(n) for n in spec["shape"]]
            virtual = tensor_pb2.Tensor(shape=shape, codec="raw", name=f"t{index}")
            virtual.dtype = dtype.value  # type: ignore[assignment]
            virtual.blob.sha256 = hashlib.sha256(b"never served").digest()
            virtual.blob.size = int(np.prod(shape, dtype=object)) * dtype.itemsize
            return virtual
        dtype = Dtype.from_numpy(array.dtype)
        payload = canonical(array)
        tensor = tensor_pb2.Tensor(
            dtype=dtype.value,  # type: ignore[arg-type]
            shape=list(array.shape),
            codec=str(spec.get("codec", "raw")),
            name=str(spec.get("name", f"t{index}")),
        )
        if "wire_dtype" in spec:
            tensor.dtype = int(spec["wire_dtype"])  # type: ignore[assignment]
        payload = payload[: len(payload) - int(spec.get("truncate", 0))]
        if spec.get("as_blob"):
            digest = hashlib.sha256(payload).digest()
            self.server.blobs[digest] = Blob(
                data=payload,
                break_downloads=int(spec.get("break_downloads", 0)),
                corrupt_downloads=int(spec.get("corrupt_downloads", 0)),
                wrong_total_downloads=int(spec.get("wrong_total_size", 0)),
                gap_downloads=int(spec.get("gap_downloads", 0)),
            )
            tensor.blob.sha256 = digest
            tensor.blob.size = len(payload)
        else:
            tensor.inline_data = payload
        return tensor

    async def task_step(self, where: str, step: Mapping[str, Any]) -> None:
        offer, kind, arrays, config = self._build_task(where, step)
        # The judging keys may sit beside `task:` or inside it; inside reads better in
        # one-line (flow) YAML.
        step = {**step["task"], **step}
        expect = step.get("expect", "result")
        within = float(step.get("within_ms", 15000)) / 1000
        start = len(self.server.events)
        await self.server.offer(offer)
        delivered = await self.next_event(
            lambda e: (
                e.direction == "s>c"
                and e.rpc == "PollTask"
                and e.data.get("task_id") == offer.task_id
            ),
            within,
        )
        if delivered is None:
            self.fail(where, f"a PollTask that takes task {offer.task_id}", "none came")
            raise CaseFailed
        if isinstance(expect, Mapping) and "no_result_ms" in expect:
            await self.quiet(float(expect["no_result_ms"]) / 1000)
            sent = [
                e
                for e in self.events_since(start)
                if e.rpc == "SubmitResult"
                and e.direction == "c>s"
                and e.data.get("task_id") == offer.task_id
            ]
            if sent:
                self.fail(
                    where,
                    f"no result for {offer.task_id} (its deadline passed)",
                    sent[0].summary,
                    "PLN-TSK-018",
                )
            return
        counting = isinstance(expect, Mapping) and "submits" in expect
        found = await self.next_event(
            lambda e: (
                e.direction == "c>s"
                and e.rpc == "SubmitResult"
                and e.data.get("task_id") == offer.task_id
                and (counting or "request" in e.data)
            ),
            within,
        )
        if found is None:
            self.fail(
                where,
                f"a SubmitResult for {offer.task_id} within {within:.1f} s",
                "none came",
                "PLN-TSK-022",
            )
            raise CaseFailed
        event = found[1]
        polls = [
            e
            for e in self.server.events[delivered[0] + 1 : found[0]]
            if e.rpc == "PollTask" and e.direction == "c>s"
        ]
        if polls and not counting:
            self.fail(
                where,
                f"no PollTask while task {offer.task_id} is unanswered",
                polls[0].summary,
                "PLN-GEN-004",
            )
        if counting:
            await self.quiet(float(expect.get("quiet_ms", 2500)) / 1000)
            count = sum(
                1
                for e in self.events_since(start)
                if e.rpc == "SubmitResult"
                and e.direction == "c>s"
                and e.data.get("task_id") == offer.task_id
            )
            if count != int(expect["submits"]):
                self.fail(
                    where,
                    f"{expect['submits']} SubmitResult call(s) for {offer.task_id}",
                    f"{count}",
                    str(expect.get("requirement", "PLN-RTY-003")),
                )
            return
        result: task_pb2.TaskResult = event.data["request"].result
        if "answer_within_ms" in step:
            self._judge_redelivery(where, offer.task_id, delivered[1], event, step)
        self.submitted[offer.task_id] = event.data["request"].result.SerializeToString()
        for duplicate in duplicate_map_keys(event.data["raw"], SUBMIT_REQUEST):
            self.fail(where, "no map with two entries for one key", duplicate, "PLN-VAL-009")
        limit = self._receive_limit()
        if len(event.data["raw"]) > limit:
            self.fail(
                where,
                f"a SubmitResult of at most {limit} bytes (the server's limit)",
                f"{len(event.data['raw'])} bytes",
                "PLN-LIM-002",
            )
        if isinstance(expect, Mapping) and "failure" in expect:
            self._judge_failure(where, result, str(expect["failure"]))
        elif expect == "result":
            self._judge_result(where, kind, result, arrays, config)
        if step.get("heartbeats"):
            self._judge_liveness(where, delivered[0], found[0])

    def _judge_redelivery(
        self, where: str, task_id: str, delivered: Event, event: Event, step: Mapping[str, Any]
    ) -> None:
        # A task delivered again while its result is held: that result, not a second run,
        # which the case makes slow with conformance.sleep_ms (PLN-TSK-015).
        took = event.t - delivered.t
        limit = float(step["answer_within_ms"]) / 1000
        if took > limit + self.grace:
            self.fail(
                where,
                f"the held result of {task_id} within {limit:.2f} s (no rerun)",
                f"{took:.3f} s",
                "PLN-TSK-015",
            )
        before = self.submitted.get(task_id)
        now = event.data["request"].result.SerializeToString()
        if before is not None and before != now:
            self.fail(
                where,
                f"the same result as submitted before for {task_id}",
                result_summary(event.data["request"].result),
                "PLN-TSK-015",
            )

    def _judge_failure(self, where: str, result: task_pb2.TaskResult, code: str) -> None:
        outcome = result.WhichOneof("outcome")
        if outcome != "failure":
            self.fail(
                where,
                f"a failure with {code}",
                result_summary(result),
                _FAILURE_REQUIREMENT.get(code, "PLN-TSK-026"),
            )
            return
        got = error_pb2.ErrorCode.Name(result.failure.code).removeprefix("ERROR_CODE_")
        if got != code:
            self.fail(
                where, f"failure code {code}", got, _FAILURE_REQUIREMENT.get(code, "PLN-TSK-026")
            )
            return
        retryable = ERROR_TABLE[ErrorCode[code]].retry.name == "YES"
        if result.failure.retryable != retryable:
            self.fail(
                where,
                f"Error.retryable {retryable} for {code}",
                str(result.failure.retryable),
                "PLN-ERR-003",
            )

    def _judge_result(
        self,
        where: str,
        kind: str,
        result: task_pb2.TaskResult,
        arrays: list[Any],
        config: dict[str, ConfigValue],
    ) -> None:
        expected = self.oracle.expect(kind, arrays, config)
        outcome = result.WhichOneof("outcome")
        if outcome != kind:
            self.fail(where, f"a {kind} result", result_summary(result), "PLN-TSK-023")
            return
        body = getattr(result, kind)
        self._compare(where, body, expected)

    def _compare(self, where: str, body: Any, expected: Expected) -> None:
        if expected.tensors is not None:
            name = "parameters" if hasattr(body, "parameters") else "tensors"
            self._compare_tensors(where, list(getattr(body, name)), expected.tensors)
        if expected.num_examples is not None and body.num_examples != expected.num_examples:
            self.fail(
                where,
                f"num_examples {expected.num_examples}",
                str(body.num_examples),
                "PLN-CNF-014",
            )
        if expected.loss is not None and not same_value(float(body.loss), expected.loss):
            self.fail(where, f"loss {expected.loss!r}", repr(body.loss), "PLN-CNF-016")
        if expected.metrics is not None:
            self._compare_map(where, "metrics", body.metrics, expected.metrics)
        if expected.properties is not None:
            self._compare_map(where, "properties", body.properties, expected.properties)

    def _compare_map(
        self, where: str, name: str, got: Any, want: Mapping[str, ConfigValue]
    ) -> None:
        try:
            decoded = {k: value_from_proto(v) for k, v in got.items()}
        except PollenError as exc:
            self.fail(where, f"decodable {name}", str(exc), "PLN-VAL-001")
            return
        for key, value in want.items():
            if key not in decoded:
                self.fail(where, f"{name}[{key!r}] = {value!r}", "missing", "PLN-TSK-035")
            elif not same_value(decoded[key], value):
                self.fail(
                    where,
                    f"{name}[{key!r}] = {type(value).__name__} {value!r}",
                    f"{type(decoded[key]).__name__} {decoded[key]!r}",
                    "PLN-TSK-035",
                )
        extra = sorted(set(decoded) - set(want))
        if extra:
            self.fail(
                where, f"{name} with keys {sorted(want)}", f"extra keys {extra}", "PLN-CNF-012"
            )

    def _compare_tensors(
        self, where: str, got: list[tensor_pb2.Tensor], want: tuple[Any, ...]
    ) -> None:
        if len(got) != len(want):
            self.fail(where, f"{len(want)} tensors", str(len(got)), "PLN-FIT-001")
            return
        for i, (message, array) in enumerate(zip(got, want, strict=True)):
            label = f"tensor {i}"
            if message.codec in _LOSSY:
                self.fail(
                    where,
                    f"{label}: no lossy codec the run did not ask for",
                    message.codec,
                    "PLN-HS-019",
                )
                continue
            if len(message.name.encode()) > 256:
                self.fail(
                    where,
                    f"{label}: a name of at most 256 bytes",
                    f"{len(message.name.encode())} bytes",
                    "PLN-TEN-005",
                )
            try:
                tensor = tensor_from_proto(message, field=label)
                if tensor.blob is not None:
                    blob = self.server.blobs.get(tensor.blob.sha256)
                    if blob is None:
                        self.fail(
                            where,
                            f"{label}: an uploaded blob",
                            "the blob it references was never completed",
                            "PLN-TSK-024",
                        )
                        continue
                    if tensor.blob.size != len(blob.data):
                        self.fail(
                            where,
                            f"{label}: BlobRef.size {len(blob.data)}",
                            str(tensor.blob.size),
                            "PLN-BLB-001",
                        )
                    tensor = _with_payload(tensor, blob.data)
                decoded = decode_tensor(tensor, codecs=self._codecs())
            except PollenError as exc:
                self.fail(where, f"{label}: a decodable tensor", str(exc), "PLN-HS-017")
                continue
            want_dtype = Dtype.from_numpy(array.dtype)
            if tensor.dtype is not want_dtype or tuple(tensor.shape) != array.shape:
                self.fail(
                    where,
                    f"{label}: {want_dtype.name} {list(array.shape)}",
                    f"{tensor.dtype.name} {list(tensor.shape)}",
                    "PLN-FIT-001",
                )
                continue
            if canonical(decoded) != canonical(array):
                self.fail(where, f"{label}: {_preview(array)}", _preview(decoded), "PLN-CNF-013")

    def _receive_limit(self) -> int:
        negotiated = self.server.negotiated
        declared = negotiated.capabilities.limits.max_message_bytes if negotiated else 0
        return declared or 4 * 1024 * 1024

    def _codecs(self) -> tuple[str, ...]:
        negotiated = self.server.negotiated
        return tuple(negotiated.capabilities.codecs) if negotiated else ("raw",)

    def _judge_liveness(self, where: str, start: int, end: int) -> None:
        negotiated = self.server.negotiated
        assert negotiated is not None
        interval = negotiated.heartbeat_interval_ms / 1000
        times = [self.server.events[start].t] + [
            e.t for e in self.server.events[start + 1 : end + 1] if e.direction == "c>s"
        ]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if gaps and max(gaps) > interval + self.grace:
            self.fail(
                where,
                f"a request at least every {interval:.1f} s while working",
                f"a gap of {max(gaps):.2f} s",
                "PLN-SES-007",
            )

    # --- other steps ---------------------------------------------------------------------

    async def fail_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["fail"]
        raw_code = spec.get("code")
        # A name from the table, UNSPECIFIED (0), or a number no version defines yet.
        code: ErrorCode | int | None
        if raw_code is None:
            code = None
        elif raw_code == "UNSPECIFIED":
            code = 0
        elif isinstance(raw_code, int):
            code = raw_code
        else:
            code = ErrorCode[raw_code]
        status = spec.get("status")
        if status is None:
            if not isinstance(code, ErrorCode):
                raise ModelError(f"{where}: a fail step with code {raw_code!r} needs a status")
            number = ERROR_TABLE[code].grpc_status
            status = next(s.name for s in grpc.StatusCode if s.value[0] == int(number or 13))
        self.marks[str(spec["rpc"])] = len(self.server.events)
        self.server.faults.append(
            Fault(
                rpc=str(spec["rpc"]),
                times=int(spec.get("times", 1)),
                status=status_named(str(status)),
                code=code,
                retry_after_ms=int(spec.get("retry_after_ms", 0)),
                retryable=spec.get("retryable"),
                message=str(spec.get("message", "")),
            )
        )

    async def gaps_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["check_gaps"]
        rpc = str(spec["rpc"])
        calls = self._calls_since_mark(rpc)
        minimums = [float(x) / 1000 for x in spec.get("min_ms", [])]
        maximums = [float(x) / 1000 for x in spec.get("max_ms", [])]
        if like := spec.get("max_like"):
            # Bounds from the program's own earlier retries (of like["rpc"]), so a client
            # configured with longer delays than the defaults (PLN-RTY-008) is judged fairly:
            # two draws of the same delay differ by 1.2 / 0.8 = 1.5x at most.
            earlier = [b - a for a, b in itertools.pairwise(self._calls_since_mark(like["rpc"]))]
            retries = int(like.get("retries", len(minimums)))
            maximums = [gap * float(like.get("factor", 1.5)) for gap in earlier[:retries]]
        need = max(len(minimums), len(maximums)) + 1
        if len(calls) < need:
            self.fail(
                where,
                f"{need} {rpc} calls (retries)",
                f"{len(calls)}",
                spec.get("requirement", "PLN-RTY-005"),
            )
            return
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        for n, low in enumerate(minimums):
            # The failure reached the program no earlier than the server sent it: a gap
            # measured here can only be longer than the program's own wait.
            if gaps[n] < low - 0.02:
                self.fail(
                    where,
                    f"retry {n + 1} of {rpc} no earlier than {low:.2f} s after the failure",
                    f"{gaps[n]:.3f} s",
                    spec.get("requirement", "PLN-RTY-007"),
                )
        for n, high in enumerate(maximums):
            if gaps[n] > high + self.grace:
                self.fail(
                    where,
                    f"retry {n + 1} of {rpc} within {high:.2f} s",
                    f"{gaps[n]:.3f} s",
                    spec.get("max_requirement", "PLN-RTY-008"),
                )

    def _calls_since_mark(self, rpc: str) -> list[float]:
        """When `rpc` was called since the last fault step for it."""
        since = self.marks.get(rpc, 0)
        return [e.t for e in self.server.events[since:] if e.rpc == rpc and e.direction == "c>s"]

    async def drop_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["drop"] or {}
        await self.server.note("--", "connection", "server stopped (script)")
        await self.server.stop()
        if spec.get("forget_sessions"):
            self.server.forget_sessions()
        await asyncio.sleep(float(spec.get("down_ms", 500)) / 1000)
        await self.server.start()
        await self.server.note("--", "connection", "server listening again")

    async def reconnect_step(self, where: str, step: Mapping[str, Any]) -> None:
        delay = float((step["reconnect"] or {}).get("delay_ms", 1000)) / 1000
        offer = self._control_offer(
            "reconnect", task_pb2.ReconnectInstruction(delay_ms=int(delay * 1000))
        )
        await self.server.offer(offer)
        sent = await self.next_event(
            lambda e: e.direction == "s>c" and e.data.get("task_id") == offer.task_id, 15
        )
        if sent is None:
            self.fail(where, "the reconnect instruction taken by a PollTask", "no poll came")
            raise CaseFailed
        leave = await self.next_event(lambda e: e.rpc == "Leave", 5 + self.grace)
        if leave is None:
            self.fail(where, "Leave with reason RECONNECT_INSTRUCTION", "no Leave", "PLN-CTL-002")
        elif leave[1].data["reason"] != "LEAVE_REASON_RECONNECT_INSTRUCTION":
            self.fail(
                where,
                "Leave with reason RECONNECT_INSTRUCTION",
                leave[1].data["reason"],
                "PLN-CTL-002",
            )
        left_session = leave[1].data.get("session_id") if leave else None
        latest = delay + 5 + self.grace
        mark = self.cursor
        # The timing rules are about the first Handshake sent, failed by the script or not.
        first = await self.next_event(
            lambda e: e.rpc == "Handshake" and e.direction == "c>s", latest + 1
        )
        self.cursor = mark
        hello = await self.next_event(
            # The first Handshake the server answers; ones failed by the script come before.
            lambda e: e.rpc == "Handshake" and e.direction == "c>s" and "request" in e.data,
            latest + 30,
        )
        submitted = [
            e
            for e in self.server.events
            if e.rpc == "SubmitResult" and e.data.get("task_id") == offer.task_id
        ]
        if submitted:
            self.fail(
                where,
                "no TaskResult for a reconnect instruction",
                submitted[0].summary,
                "PLN-CTL-002",
            )
        if first is None:
            self.fail(where, f"a new Handshake within {latest:.1f} s", "none", "PLN-CTL-003")
            raise CaseFailed
        if hello is None:
            self.fail(where, "a new session after the reconnect", "no Handshake", "PLN-CTL-002")
            raise CaseFailed
        waited = first[1].t - sent[1].t
        if waited < delay - 0.02:
            self.fail(
                where,
                f"the next Handshake no earlier than {delay:.2f} s after the instruction",
                f"{waited:.3f} s",
                "PLN-CTL-002",
            )
        if waited > latest:
            self.fail(
                where, f"the next Handshake within {latest:.2f} s", f"{waited:.3f} s", "PLN-CTL-003"
            )
        self._check_handshake(hello[1])
        if left_session:
            await asyncio.sleep(0.3)
            reused = [
                e
                for e in self.server.events[leave[0] + 1 :]  # type: ignore[index]
                if "request" in e.data
                and getattr(e.data["request"], "session_id", None) == left_session
            ]
            if reused:
                self.fail(
                    where,
                    "no request with the session id after its Leave",
                    reused[0].summary,
                    "PLN-SES-020",
                )

    def _control_offer(self, kind: str, body: Any) -> Offer:
        self.task_count += 1
        task_id = f"task-{self.task_count}"
        task = task_pb2.Task(task_id=task_id, run_id="conformance", round=self.task_count)
        getattr(task, kind).CopyFrom(body)
        return Offer(
            task_id=task_id, data=task.SerializeToString(), summary=f"task {task_id}: {kind}"
        )

    async def shutdown_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["shutdown"] or {}
        self.ended = True
        offer = self._control_offer(
            "shutdown", task_pb2.ShutdownInstruction(reason="conformance case over")
        )
        await self.server.offer(offer)
        sent = await self.next_event(
            lambda e: e.direction == "s>c" and e.data.get("task_id") == offer.task_id, 15
        )
        if sent is None:
            self.fail(where, "the shutdown instruction taken by a PollTask", "no poll came")
            raise CaseFailed
        leave = await self.next_event(lambda e: e.rpc == "Leave", 5 + self.grace)
        if leave is None:
            self.fail(where, "Leave with reason SHUTDOWN_INSTRUCTION", "no Leave", "PLN-CTL-005")
        elif leave[1].data["reason"] != "LEAVE_REASON_SHUTDOWN_INSTRUCTION":
            self.fail(
                where,
                "Leave with reason SHUTDOWN_INSTRUCTION",
                leave[1].data["reason"],
                "PLN-CTL-005",
            )
        status = await self.wait_exit(float(spec.get("exit_within_ms", 10000)) / 1000)
        leaves = [e for e in self.server.events[sent[0] :] if e.rpc == "Leave"]
        if len(leaves) > 1:
            self.fail(
                where, "one Leave, never retried", f"{len(leaves)} Leave calls", "PLN-SES-019"
            )
        after = leave[0] + 1 if leave else sent[0] + 1
        later = [e for e in self.server.events[after:] if e.direction == "c>s"]
        if later:
            self.fail(
                where,
                "no request after the Leave that answers a shutdown",
                later[0].summary,
                "PLN-CTL-005",
            )
        if status is None:
            self.fail(
                where,
                "the program exits after a shutdown instruction",
                "still running",
                "PLN-CNF-005",
            )
        elif status != 0:
            self.fail(
                where, "exit status 0 after a shutdown instruction", str(status), "PLN-CTL-006"
            )

    async def exit_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["expect_exit"]
        self.ended = True
        status = await self.wait_exit(float(spec.get("within_ms", 10000)) / 1000)
        requirement = str(spec.get("requirement", "PLN-CNF-005"))
        if status is None:
            self.fail(
                where,
                f"the program exits within {spec.get('within_ms', 10000)} ms",
                "still running",
                requirement,
            )
        elif spec.get("status") == "nonzero" and status == 0:
            self.fail(where, "a nonzero exit status", "0", requirement)
        elif isinstance(spec.get("status"), int) and status != spec["status"]:
            self.fail(where, f"exit status {spec['status']}", str(status), requirement)

    async def count_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["expect_calls"]
        await self.quiet(float(spec.get("during_ms", 0)) / 1000)
        rpc = str(spec["rpc"])
        calls = [e for e in self.server.events if e.rpc == rpc and e.direction == "c>s"]
        if "reason" in spec:  # Leave calls with this reason only
            calls = [c for c in calls if c.data.get("reason") == f"LEAVE_REASON_{spec['reason']}"]
        count = len(calls)
        if "max" in spec and count > int(spec["max"]):
            self.fail(
                where,
                f"at most {spec['max']} {rpc} call(s)",
                str(count),
                str(spec.get("requirement", "")),
            )
        if "min" in spec and count < int(spec["min"]):
            self.fail(
                where,
                f"at least {spec['min']} {rpc} call(s)",
                str(count),
                str(spec.get("requirement", "")),
            )

    async def no_handshake_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["expect_no_handshake"]
        self.ended = True
        await self.quiet(float(spec.get("during_ms", 3000)) / 1000)
        seen = [e for e in self.server.events if e.rpc == "Handshake"]
        if seen:
            self.fail(
                where,
                "no Handshake reaches a server the program must not trust",
                seen[0].summary,
                str(spec.get("requirement", "PLN-SEC-005")),
            )

    async def sigterm_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["sigterm"] or {}
        self.ended = True
        assert self.proc is not None
        mark = len(self.server.events)
        await self.server.note("--", "process", "SIGTERM sent (script)")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        status = await self.wait_exit(float(spec.get("within_ms", 5000)) / 1000)
        if status is None:
            self.fail(where, "the program stops after SIGTERM", "still running", "PLN-CNF-006")
        leaves = [e for e in self.server.events[mark:] if e.rpc == "Leave"]
        if not leaves or leaves[0].data["reason"] != "LEAVE_REASON_CLIENT_STOPPING":
            got = leaves[0].data["reason"] if leaves else "no Leave"
            self.fail(
                where, "Leave with reason CLIENT_STOPPING before it exits", got, "PLN-SES-017"
            )

    async def wait_step(self, where: str, step: Mapping[str, Any]) -> None:
        await asyncio.sleep(float(step["wait_ms"]) / 1000)

    async def handshake_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["expect_handshake"] or {}
        within = float(spec.get("within_ms", 10000)) / 1000
        found = await self.next_event(
            lambda e: e.rpc == "Handshake" and e.direction == "c>s", within + self.grace
        )
        if found is None:
            self.fail(
                where,
                f"a new Handshake within {within:.1f} s",
                "none",
                str(spec.get("requirement", "PLN-SES-013")),
            )
            raise CaseFailed
        self._check_handshake(found[1])
        if found[1].data["request"].node_id != NODE_ID:
            self.fail(where, "the same node_id", found[1].data["request"].node_id, "PLN-HS-028")

    async def download_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["check_downloads"]
        offsets = [
            e.data.get("offset")
            for e in self.server.events
            if e.rpc == "DownloadBlob" and e.direction == "c>s"
        ]
        want = [int(x) for x in spec["offsets"]]
        if offsets[: len(want)] != want:
            self.fail(
                where,
                f"DownloadBlob offsets {want}",
                str(offsets),
                str(spec.get("requirement", "PLN-BLB-013")),
            )

    async def upload_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["upload_breaks"]
        self.server.upload_breaks = int(spec.get("times", 1))

    async def corrupt_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["upload_corrupt"]
        self.server.upload_corruptions = int(spec.get("times", 1))

    async def restart_step(self, where: str, step: Mapping[str, Any]) -> None:
        spec = step["check_upload_restart"] or {}
        events = self.server.events
        failed = [
            i
            for i, e in enumerate(events)
            if e.rpc == "UploadBlob" and "BLOB_DIGEST_MISMATCH" in e.summary
        ]
        if not failed:
            self.fail(where, "an upload that ended in BLOB_DIGEST_MISMATCH", "none", "PLN-BLB-024")
            return
        after = [
            e for e in events[failed[0] + 1 :] if e.rpc == "UploadBlob" and e.direction == "c>s"
        ]
        first = after[0].data.get("offset") if after else None
        self.check_eq(
            where,
            "the upload restarted at offset 0",
            first,
            0,
            str(spec.get("requirement", "PLN-BLB-024")),
        )

    async def declared_limits_step(self, where: str, step: Mapping[str, Any]) -> None:
        # The receive limits the program declared in its Handshake (0: the default) are the
        # ones it keeps: a task at each is answered, one just above is refused (PLN-HS-006).
        offered = self.server.offered
        if offered is None:
            raise ModelError(f"{where}: no Handshake seen")
        limits = offered.capabilities.limits
        entries = limits.max_map_entries or DEFAULT_MAX_MAP_ENTRIES
        rank = limits.max_rank or DEFAULT_MAX_RANK
        if entries > 4096 or rank > 64:
            self.fail(where, "declared limits the harness can probe", f"{entries}, {rank}")
            return
        probes: list[tuple[str, dict[str, Any], Any]] = [
            (f"max_map_entries {entries}", {"filler_entries": entries}, "result"),
            (
                f"max_map_entries {entries} + 1",
                {"filler_entries": entries + 1},
                {"failure": "LIMIT_EXCEEDED"},
            ),
            (f"max_rank {rank}", {"shape": [1] * rank}, "result"),
            (f"max_rank {rank} + 1", {"shape": [1] * (rank + 1)}, {"failure": "LIMIT_EXCEEDED"}),
        ]
        for label, spec, expect in probes:
            shape = spec.pop("shape", [2])
            body = {"parameters": [{"dtype": "float32", "shape": shape}], **spec}
            await self.task_step(f"{where} ({label})", {"task": {"fit": body}, "expect": expect})

    async def transport_step(self, where: str, step: Mapping[str, Any]) -> None:
        """Recommendations on the transport, judged over every call so far (SHOULD cases)."""
        spec = step["check_transport"] or {}
        calls = self.server.calls
        negotiated = self.server.negotiated
        assert negotiated is not None
        if spec.get("poll_margin"):
            for call in calls:
                wait = min(call.wait_ms, negotiated.max_poll_wait_ms) / 1000
                if call.rpc == "PollTask" and call.left is not None and call.left < wait + 4.9:
                    self.fail(
                        where,
                        f"a PollTask deadline at least 5 s past its wait of {wait:.2f} s",
                        f"{call.left:.2f} s left on arrival",
                        "PLN-TRN-016",
                    )
                    break
        if spec.get("one_connection"):
            peers = sorted({call.peer for call in calls})
            if len(peers) > 1:
                self.fail(where, "every call over one connection", ", ".join(peers), "PLN-TRN-004")
        if spec.get("new_connection_after_reconnect"):
            leave = next((i for i, c in enumerate(calls) if c.rpc == "Leave"), None)
            hello = next((c for c in calls[(leave or 0) + 1 :] if c.rpc == "Handshake"), None)
            if leave is None or hello is None:
                self.fail(where, "a Leave, then a Handshake", "not both", "PLN-CTL-009")
            elif hello.peer == calls[leave].peer:
                self.fail(
                    where,
                    "the Handshake after a reconnect over a new connection",
                    f"the old one ({hello.peer})",
                    "PLN-CTL-009",
                )

    async def heartbeat_step(self, where: str, step: Mapping[str, Any]) -> None:
        """Heartbeats of the last task: its task_id, every half interval, short deadlines."""
        negotiated = self.server.negotiated
        assert negotiated is not None
        half = negotiated.heartbeat_interval_ms / 2000
        beats = [e for e in self.server.events if e.rpc == "Heartbeat" and e.direction == "c>s"]
        if not beats:
            self.fail(where, "Heartbeats while working", "none", "PLN-SES-008")
            return
        task_id = beats[-1].data["request"].task_id
        if not task_id:
            self.fail(where, "a Heartbeat naming the task in progress", "no task_id", "PLN-SES-008")
        times = [e.t for e in beats if e.data["request"].task_id == task_id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if gaps and max(gaps) > half + self.grace:
            self.fail(
                where,
                f"a Heartbeat every {half:.2f} s (half the interval)",
                f"a gap of {max(gaps):.2f} s",
                "PLN-SES-024",
            )
        lefts = [c.left for c in self.server.calls if c.rpc == "Heartbeat" and c.left is not None]
        if lefts and max(lefts) > half + 0.05:
            self.fail(
                where,
                f"Heartbeat deadlines of {half:.2f} s at most",
                f"{max(lefts):.2f} s left on arrival",
                "PLN-SES-024",
            )

    async def in_flight_step(self, where: str, step: Mapping[str, Any]) -> None:
        for overlap in self.server.overlaps[:1]:
            self.fail(
                where,
                "at most one Handshake, PollTask, SubmitResult or Leave in flight",
                overlap,
                "PLN-GEN-005",
            )

    def check_eq(
        self, where: str, expected: str, got: object, want: object, requirement: str
    ) -> None:
        if got != want:
            self.fail(where, expected, repr(got), requirement)


_STEPS: dict[str, Callable[[_Play, str, Mapping[str, Any]], Any]] = {
    "task": _Play.task_step,
    "fail": _Play.fail_step,
    "check_gaps": _Play.gaps_step,
    "drop": _Play.drop_step,
    "reconnect": _Play.reconnect_step,
    "shutdown": _Play.shutdown_step,
    "expect_exit": _Play.exit_step,
    "expect_calls": _Play.count_step,
    "expect_no_handshake": _Play.no_handshake_step,
    "expect_handshake": _Play.handshake_step,
    "wait_ms": _Play.wait_step,
    "sigterm": _Play.sigterm_step,
    "upload_corrupt": _Play.corrupt_step,
    "check_upload_restart": _Play.restart_step,
    "check_downloads": _Play.download_step,
    "upload_breaks": _Play.upload_step,
    "check_in_flight": _Play.in_flight_step,
    "check_transport": _Play.transport_step,
    "check_heartbeats": _Play.heartbeat_step,
    "probe_declared_limits": _Play.declared_limits_step,
}

_INSTRUCTIONS: dict[str, Any] = {
    "fit": task_pb2.FitInstruction,
    "evaluate": task_pb2.EvaluateInstruction,
    "query": task_pb2.QueryInstruction,
    "get_parameters": task_pb2.GetParametersInstruction,
    "get_properties": task_pb2.GetPropertiesInstruction,
    "reconnect": task_pb2.ReconnectInstruction,
    "shutdown": task_pb2.ShutdownInstruction,
}

_LOSSY = frozenset({"float16", "bfloat16", "int8", "topk"})

_FAILURE_REQUIREMENT = {
    "APP_ERROR": "PLN-TSK-026",
    "UNSUPPORTED_INSTRUCTION": "PLN-TSK-025",
}


SUBMIT_REQUEST = federation_service_pb2.SubmitResultRequest.DESCRIPTOR
#: The defaults of a limit field of 0 (spec 13-limits.md, PLN-LIM-001).
DEFAULT_MAX_MAP_ENTRIES = 1024
DEFAULT_MAX_RANK = 32


def duplicate_map_keys(raw: bytes, descriptor: Any, path: str = "") -> list[str]:
    """Map keys that appear twice in one map of a serialized message (PLN-VAL-009).

    Parsed from the wire bytes, since protobuf libraries merge repeated keys silently."""
    out: list[str] = []
    seen: dict[str, set[bytes]] = {}
    # Occurrences of one singular message field merge into one message, as a parser does.
    singular: dict[int, bytearray] = {}
    for number, value in _wire_fields(raw):
        member = descriptor.fields_by_number.get(number)
        if member is None or not isinstance(value, bytes) or member.message_type is None:
            continue
        name = f"{path}{member.name}"
        if member.message_type.GetOptions().map_entry:
            key = next((v for n, v in _wire_fields(value) if n == 1), b"")
            key_bytes = key if isinstance(key, bytes) else str(key).encode()
            keys = seen.setdefault(name, set())
            if key_bytes in keys:
                out.append(f"{name}: key {key_bytes!r} twice")
            keys.add(key_bytes)
        elif member.is_repeated:
            out.extend(duplicate_map_keys(value, member.message_type, name + "."))
        else:
            singular.setdefault(number, bytearray()).extend(value)
    for number, merged in singular.items():
        member = descriptor.fields_by_number[number]
        out.extend(duplicate_map_keys(bytes(merged), member.message_type, f"{path}{member.name}."))
    return out


def _wire_fields(raw: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, varint or length-delimited bytes) of each field; fixed ones as ints."""
    fields: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = raw[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(raw):
        tag = varint()
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            fields.append((number, varint()))
        elif kind == 2:
            size = varint()
            fields.append((number, raw[i : i + size]))
            i += size
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            fields.append((number, int.from_bytes(raw[i : i + width], "little")))
            i += width
        else:
            raise ValueError(f"wire type {kind} is not used by Pollen")
    return fields


def _with_config_order(task: task_pb2.Task, kind: str, order: list[str]) -> bytes:
    """The task's bytes with its config entries in `order` (PLN-VAL-010): the instruction
    without config, then one more occurrence of it per entry, which parsers merge."""
    instruction = getattr(task, kind)
    if sorted(order) != sorted(instruction.config):
        raise ModelError(f"config_order {order} names other keys than {sorted(instruction.config)}")
    entries = {key: instruction.config[key] for key in order}
    bare = task_pb2.Task()
    bare.CopyFrom(task)
    getattr(bare, kind).ClearField("config")
    number = task_pb2.Task.DESCRIPTOR.fields_by_name[kind].number
    data = bare.SerializeToString()
    for key, value in entries.items():
        part = type(instruction)()
        part.config[key].CopyFrom(value)
        body = part.SerializeToString()
        data += _varint(number << 3 | 2) + _varint(len(body)) + body
    return data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _value(value: ConfigValue) -> value_pb2.Value:
    message = value_pb2.Value()
    if isinstance(value, bool):
        message.bool_value = value
    elif isinstance(value, int):
        message.int_value = value
    elif isinstance(value, float):
        message.double_value = value
    elif isinstance(value, str):
        message.string_value = value
    else:
        message.bytes_value = value
    return message


def _with_payload(tensor: Any, data: bytes) -> Any:
    return dataclasses.replace(tensor, payload=data, blob=None)


def _preview(array: Any, limit: int = 8) -> str:
    flat = np.asarray(array).reshape(-1)[:limit].tolist()
    more = "..." if np.asarray(array).size > limit else ""
    return f"{flat}{more}"


def validate(case: Case) -> None:
    """Raise ModelError when a case's steps cannot be played (checked before any run)."""
    for index, step in enumerate(case.steps):
        kinds = [k for k in _STEPS if k in step]
        if len(kinds) != 1:
            raise ModelError(
                f"{case.name} step {index + 1}: unknown or ambiguous step {sorted(step)}"
            )
        if kinds[0] == "task":
            body = step["task"]
            if "raw_task_hex" not in body and not body.get("again"):
                kind = [k for k in _INSTRUCTIONS if k in body]
                if len(kind) != 1:
                    raise ModelError(
                        f"{case.name} step {index + 1}: a task has exactly one instruction"
                    )
                spec = body[kind[0]] or {}
                for tensor in spec.get("parameters", spec.get("inputs", [])):
                    if not tensor.get("virtual_blob"):
                        make_array(tensor)
                make_config(spec.get("config"))


async def play(case: Case, options: RunOptions) -> CaseResult:
    """Run one case to its verdict; the process and server are gone when this returns."""
    run = _Play(case, options)
    outcome = "PASS"
    note = ""
    try:
        await asyncio.wait_for(run.run(), timeout=case.timeout_s)
        note = run._skip_reason()
        if note:
            outcome = "SKIP"
    except CaseFailed:
        pass
    except TimeoutError:
        run.fail("case", f"the case over within {case.timeout_s:.0f} s", "timed out")
    except Exception as exc:  # a harness defect or a bad case: never a verdict on the program
        outcome, note = "ERROR", f"{type(exc).__name__}: {exc}"
    finally:
        await run.kill()
        await run.server.stop()
    if run.failures and outcome != "ERROR":
        outcome = "FAIL"
    return CaseResult(
        case=case,
        outcome=outcome,
        failures=tuple(run.failures),
        duration_s=time.monotonic() - run.started,
        exit_status=run.exit_status,
        output_tail=run.output_tail(),
        transcript=tuple(run.server.events),
        note=note,
    )


async def play_all(cases: Sequence[Case], options: RunOptions) -> list[CaseResult]:
    """Run cases `options.jobs` at a time; results come back in the order of `cases`."""
    gate = asyncio.Semaphore(max(1, options.jobs))

    async def one(case: Case) -> CaseResult:
        async with gate:
            return await play(case, options)

    return list(await asyncio.gather(*(one(c) for c in cases)))
