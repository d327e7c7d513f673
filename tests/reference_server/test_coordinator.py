"""The coordinator's protocol rules, driven in-process (no gRPC, no clock waits)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from pollen._generated.pollen.v1 import blob_service_pb2
from pollen.blob import BlobRef
from pollen.errors import (
    BlobDigestMismatch,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    ResultMismatch,
    SessionUnknown,
    TensorSizeMismatch,
    Unauthenticated,
    UpdateRejected,
)
from pollen.handshake import Capabilities
from pollen.messages import EvaluateReply, FitInstruction, FitReply, HandshakeRequest, TaskResult
from pollen.tensors import encode_tensor
from pollen.version import PROTOCOL_VERSION
from reference_server.config import parse_config
from reference_server.coordinator import Coordinator, Peer
from reference_server.service import _upload_parser
from reference_server.store import Store
from reference_server.strategies.registry import make_strategy

MODEL = [np.zeros(3, dtype=np.float32), np.zeros(5000, dtype=np.float32)]


@asynccontextmanager
async def _coordinator(tmp_path: Path) -> AsyncIterator[Coordinator]:
    model = tmp_path / "model.npz"
    np.savez(model, *MODEL)
    config = parse_config(
        f'[server]\ninsecure = true\nstate_dir = "{tmp_path / "state"}"\n'
        "chunk_size_bytes = 65536\nmax_poll_wait_s = 1.0\n"
        f'[run]\nrounds = 2\nmin_available_clients = 2\ninitial_model = "{model}"\n'
        "[fit]\nmin_clients = 2\nmin_results = 1\n"
    )
    store = Store(tmp_path / "state")
    coordinator = Coordinator(config, store, make_strategy("fedavg", {}))
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.close()
        store.close()


async def _two_tasks(coordinator: Coordinator) -> tuple[tuple[str, str], tuple[str, str]]:
    """Sessions a and b, each with its round 1 fit task handed out: (session, task_id)."""
    pairs = [(await coordinator.handshake(_hello(n))).session_id for n in ("node-a", "node-b")]
    tasks = []
    for session in pairs:
        task = await coordinator.poll(session, 1000)
        assert task is not None
        assert isinstance(task.instruction, FitInstruction)
        tasks.append(task.task_id)
    return (pairs[0], tasks[0]), (pairs[1], tasks[1])


def _fit(task_id: str, arrays: list[np.ndarray], examples: int = 1) -> TaskResult:
    tensors = tuple(encode_tensor(a) for a in arrays)
    return TaskResult(task_id=task_id, reply=FitReply(parameters=tensors, num_examples=examples))


def _run(scenario: Callable[[Coordinator], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        async with _coordinator(tmp_path) as coordinator:
            await asyncio.wait_for(scenario(coordinator), timeout=60)

    asyncio.run(main())


def _hello(node: str) -> HandshakeRequest:
    return HandshakeRequest(versions=(PROTOCOL_VERSION,), node_id=node, capabilities=Capabilities())


def test_a_new_handshake_ends_the_poll_held_by_the_replaced_session(tmp_path: Path) -> None:
    # PLN-HS-032: the held PollTask ends with SESSION_UNKNOWN, not with an empty answer when
    # its wait runs out (the wait here is far longer than the test is allowed to take).
    model = tmp_path / "model.npz"
    np.savez(model, np.zeros(3, dtype=np.float32))
    config = parse_config(
        f'[server]\ninsecure = true\nstate_dir = "{tmp_path / "state"}"\nmax_poll_wait_s = 600.0\n'
        f'[run]\nrounds = 1\nmin_available_clients = 2\ninitial_model = "{model}"\n'
        "[fit]\nmin_clients = 2\n"
    )

    async def scenario() -> None:
        store = Store(tmp_path / "state")
        coordinator = Coordinator(config, store, make_strategy("fedavg", {}))
        await coordinator.start()
        try:
            first = await coordinator.handshake(_hello("node-a"))
            held = asyncio.ensure_future(coordinator.poll(first.session_id, 600_000))
            for _ in range(100):  # let the poll reach its wait
                await asyncio.sleep(0)
            assert not held.done()
            await coordinator.handshake(_hello("node-a"))
            with pytest.raises(SessionUnknown):
                await asyncio.wait_for(held, timeout=30)
        finally:
            await coordinator.close()
            store.close()

    asyncio.run(scenario())


def test_upload_checks_follow_the_order_of_the_spec(tmp_path: Path) -> None:
    # PLN-BLB-016: a chunk longer than chunk_size_bytes is LIMIT_EXCEEDED (step 4), before a
    # chunk that ends past total_size (step 5); the session comes before the digest's length.
    async def scenario(coordinator: Coordinator) -> None:
        session = (await coordinator.handshake(_hello("node-a"))).session_id
        ref = BlobRef(sha256=hashlib.sha256(b"x").digest(), size=10)
        with pytest.raises(LimitExceeded) as too_long:
            await coordinator.upload(session, ref, 5, memoryview(b"\0" * 65537))
        assert too_long.value.field == "data"
        with pytest.raises(InvalidArgument):
            await coordinator.upload(session, ref, 8, memoryview(b"abcd"))
        raw = blob_service_pb2.UploadBlobRequest(
            session_id="gone", sha256=b"short", total_size=1
        ).SerializeToString()
        with pytest.raises(SessionUnknown):
            _upload_parser(coordinator)(raw)

    _run(scenario, tmp_path)


def test_a_blob_held_with_another_size_is_a_digest_mismatch_that_rejects(tmp_path: Path) -> None:
    # PLN-BLB-025: not BLOB_INCOMPLETE (which would leave the task open), and the task closes.
    async def scenario(coordinator: Coordinator) -> None:
        (session, task_id), _ = await _two_tasks(coordinator)
        data = np.ones(5000, dtype=np.float32).tobytes()[:-4]
        ref = BlobRef(sha256=hashlib.sha256(data).digest(), size=len(data))
        assert await coordinator.upload(session, ref, 0, memoryview(data)) == (len(data), True)
        result = _fit(task_id, MODEL)
        assert isinstance(result.reply, FitReply)
        big = dataclasses.replace(
            result.reply.parameters[1], payload=b"", blob=dataclasses.replace(ref, size=20000)
        )
        reply = dataclasses.replace(result.reply, parameters=(result.reply.parameters[0], big))
        with pytest.raises(BlobDigestMismatch) as mismatch:
            await coordinator.submit(session, dataclasses.replace(result, reply=reply))
        assert mismatch.value.field == "result.fit.parameters[1]"
        with pytest.raises(UpdateRejected):
            await coordinator.submit(session, _fit(task_id, MODEL))

    _run(scenario, tmp_path)


def test_errors_name_the_fields_of_the_protos_and_a_mismatch_rejects(tmp_path: Path) -> None:
    # Error.field uses protobuf names (12-errors.md): parameters, not tensors. A result of the
    # wrong kind closes its task as rejected (PLN-TSK-028, step 7).
    async def scenario(coordinator: Coordinator) -> None:
        (sa, ta), (sb, tb) = await _two_tasks(coordinator)
        result = _fit(ta, MODEL)
        assert isinstance(result.reply, FitReply)
        short = dataclasses.replace(
            result.reply.parameters[1], payload=bytes(result.reply.parameters[1].payload)[:-4]
        )
        reply = dataclasses.replace(result.reply, parameters=(result.reply.parameters[0], short))
        with pytest.raises(TensorSizeMismatch) as size:
            await coordinator.submit(sa, dataclasses.replace(result, reply=reply))
        assert size.value.field.startswith("result.fit.parameters[1]")
        with pytest.raises(UpdateRejected) as zero:
            await coordinator.submit(sb, _fit(tb, MODEL, examples=0))
        assert zero.value.field == "result.fit.num_examples"

    _run(scenario, tmp_path)


def test_a_result_of_the_wrong_kind_closes_the_task(tmp_path: Path) -> None:
    async def scenario(coordinator: Coordinator) -> None:
        (sa, ta), _ = await _two_tasks(coordinator)
        wrong = TaskResult(task_id=ta, reply=EvaluateReply(loss=1.0, num_examples=1))
        with pytest.raises(ResultMismatch):
            await coordinator.submit(sa, wrong)
        with pytest.raises(PollenError) as later:
            await coordinator.submit(sa, _fit(ta, MODEL))
        assert isinstance(later.value, UpdateRejected)

    _run(scenario, tmp_path)


def test_too_many_tensors_is_a_limit_checked_before_any_tensor(tmp_path: Path) -> None:
    # PLN-TEN-011: the list's length against max_tensors first, with LIMIT_EXCEEDED.
    async def scenario(coordinator: Coordinator) -> None:
        (sa, ta), _ = await _two_tasks(coordinator)
        many = [np.zeros(1, np.float32)] * (coordinator.limits.max_tensors + 1)
        with pytest.raises(LimitExceeded) as error:
            await coordinator.submit(sa, _fit(ta, many))
        assert error.value.field == "result.fit.parameters"

    _run(scenario, tmp_path)


def test_bound_node_ids_need_a_certificate_naming_the_node(tmp_path: Path) -> None:
    model = tmp_path / "model.npz"
    np.savez(model, np.zeros(3, dtype=np.float32))
    config = parse_config(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
        'client_ca = "ca.pem"\nbind_node_ids = true\n'
        f'[run]\nrounds = 1\nmin_available_clients = 2\ninitial_model = "{model}"\n'
        "[fit]\nmin_clients = 2\n"
    )
    cert_a = Peer(certificate=b"A", names=frozenset({"urn:pollen:node:node-a"}))
    cert_b = Peer(certificate=b"B", names=frozenset({"node-b"}))  # a DNS name works too

    async def scenario() -> None:
        store = Store(tmp_path / "state")
        coordinator = Coordinator(config, store, make_strategy("fedavg", {}))
        await coordinator.start()
        try:
            for peer in (None, cert_b):
                with pytest.raises(Unauthenticated) as refused:
                    await coordinator.handshake(_hello("node-a"), peer=peer)
                assert refused.value.field == "node_id"
            assert coordinator.sessions == {}  # a refused Handshake opens nothing
            session = (await coordinator.handshake(_hello("node-a"), peer=cert_a)).session_id
            await coordinator.handshake(_hello("node-b"), peer=cert_b)
            coordinator.check_caller(session, cert_a)
            for other in (cert_b, None):
                with pytest.raises(Unauthenticated):
                    coordinator.check_caller(session, other)
            coordinator.check_caller("no-such-session", cert_b)  # left to SESSION_UNKNOWN
        finally:
            await coordinator.close()
            store.close()

    asyncio.run(scenario())


def test_draining_ends_held_polls_with_an_empty_answer(tmp_path: Path) -> None:
    async def scenario(coordinator: Coordinator) -> None:
        session = (await coordinator.handshake(_hello("node-a"))).session_id
        held = asyncio.ensure_future(coordinator.poll(session, 600_000))
        for _ in range(100):  # let the poll reach its wait
            await asyncio.sleep(0)
        assert not held.done()
        coordinator.begin_drain()
        # Well before the poll's own wait (max_poll_wait_s = 1 s here) would end it.
        assert await asyncio.wait_for(held, timeout=0.5) is None
        assert coordinator.draining

    _run(scenario, tmp_path)
