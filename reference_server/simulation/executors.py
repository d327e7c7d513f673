"""Where virtual clients run: in this process (the default) or on a Ray cluster.

An executor gets one instruction and the nodes sampled for it, builds each node's client
with the user's factory, runs the instruction through the same dispatch as a deployed
client (`pollen.dispatch.run_instruction`) and yields the replies. A client exists only
while its task runs, so an idle virtual client costs nothing but its node id.

Replies may come back in any order; the round engine keeps accepted results in node
order, so the aggregate does not depend on the executor or on scheduling.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pollen.client import Client
from pollen.dispatch import (
    SessionTerms,
    app_failure,
    reply_tensors,
    run_instruction,
    with_reply_tensors,
)
from pollen.messages import Instruction, Reply

log = logging.getLogger("pollen.simulation")

#: Builds the client of virtual client `index` (0 to clients - 1); called once per task.
ClientFactory = Callable[[int], Client]

#: Simulated sessions negotiate nothing: the raw codec, every dtype, the spec's limits.
TERMS = SessionTerms()


def node_id(index: int, clients: int) -> str:
    """The engine's node id of client `index`: zero-padded, so string order is index order."""
    return f"client-{index:0{len(str(max(clients - 1, 0)))}d}"


def client_index(node: str) -> int:
    return int(node.rpartition("-")[2])


def run_client(factory: ClientFactory, node: str, instruction: Instruction) -> Reply:
    """Build the node's client, run one instruction, drop the client. Never raises."""
    try:
        client = factory(client_index(node))
    except Exception as exc:
        log.exception("the client factory failed for %s", node)
        return app_failure(exc, "client_factory")
    return run_instruction(
        client,
        instruction,
        TERMS,
        on_error=lambda exc: log.error("%s failed", node, exc_info=exc),
    )


class Executor(Protocol):
    """Runs one phase's instruction on a set of virtual clients."""

    @property
    def name(self) -> str: ...

    def run(self, instruction: Instruction, nodes: Sequence[str]) -> Iterator[tuple[str, Reply]]:
        """Yield (node, reply) for every node, in any order."""
        ...

    def close(self) -> None:
        """Release what the executor holds (worker processes, a cluster connection)."""
        ...


class InProcessExecutor:
    """Runs clients one after another in this process: no dependency, any OS."""

    name = "in-process"

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory

    def run(self, instruction: Instruction, nodes: Sequence[str]) -> Iterator[tuple[str, Reply]]:
        for node in nodes:
            yield node, run_client(self._factory, node, instruction)

    def close(self) -> None:
        pass


Payloads = list[npt.NDArray[np.uint8]]


def _detach(reply: Reply) -> tuple[Reply, Payloads]:
    """The reply without its tensor payloads, and the payloads as numpy byte arrays.

    Ray stores numpy arrays out of band and hands the driver read-only views of its
    object store: results reach the driver without being copied into its heap.
    """
    _, tensors = reply_tensors(reply)
    if not tensors:
        return reply, []
    payloads = [np.frombuffer(t.payload, dtype=np.uint8) for t in tensors]
    bare = with_reply_tensors(reply, [dataclasses.replace(t, payload=b"") for t in tensors])
    return bare, payloads


def _attach(reply: Reply, payloads: Payloads) -> Reply:
    if not payloads:
        return reply
    _, tensors = reply_tensors(reply)
    return with_reply_tensors(
        reply,
        [dataclasses.replace(t, payload=p.data) for t, p in zip(tensors, payloads, strict=True)],
    )


def _run_batch(
    factory: ClientFactory, instruction: Instruction, nodes: Sequence[str]
) -> list[tuple[str, Reply, Payloads]]:
    return [(node, *_detach(run_client(factory, node, instruction))) for node in nodes]


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """How the Ray executor joins a cluster and what each client may use."""

    #: Address of an existing cluster ("auto", "ray://host:10001"); None starts a local one.
    address: str | None = None
    #: Resources one client task reserves; fractions share a device among clients.
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: Clients run per Ray task; 0 picks about four batches per CPU of the cluster.
    batch_size: int = 0
    #: Further keyword arguments of ray.init (ignored when Ray is already initialized).
    init_args: dict[str, Any] = field(default_factory=dict)


class RayExecutor:
    """Runs clients as Ray tasks, on this machine or a cluster.

    The instruction (with the global model) is put in Ray's object store once per phase
    and every task reads it from there; clients run in batches so that one Ray task's
    scheduling cost is shared by several clients.
    """

    name = "ray"

    def __init__(self, factory: ClientFactory, options: RayOptions | None = None) -> None:
        try:
            import ray  # noqa: PLC0415  (an optional extra: pip install 'pollen-fl[simulation]')
        except ImportError as exc:
            raise RuntimeError(
                "the ray engine needs Ray: pip install 'pollen-fl[simulation]'"
            ) from exc
        # Typed as Any: Ray's own annotations are partial, and it is optional here.
        self._ray: Any = ray
        self.options = options or RayOptions()
        if not ray.is_initialized():
            init_args: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": True,
                "configure_logging": False,
                **self.options.init_args,
            }
            ray.init(address=self.options.address, **init_args)
            self._owns_ray = True
        else:
            self._owns_ray = False
        self._task = ray.remote(_run_batch).options(
            num_cpus=self.options.num_cpus, num_gpus=self.options.num_gpus
        )
        self._factory = ray.put(factory)

    def _batch_size(self, count: int) -> int:
        if self.options.batch_size > 0:
            return self.options.batch_size
        cpus = float(self._ray.cluster_resources().get("CPU", 1.0))
        slots = max(1, int(cpus / max(self.options.num_cpus, 1e-3)))
        return max(1, math.ceil(count / (4 * slots)))

    def run(self, instruction: Instruction, nodes: Sequence[str]) -> Iterator[tuple[str, Reply]]:
        ray = self._ray
        shared = ray.put(instruction)
        size = self._batch_size(len(nodes))
        pending = [
            self._task.remote(self._factory, shared, list(nodes[i : i + size]))
            for i in range(0, len(nodes), size)
        ]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for node, reply, payloads in ray.get(done[0]):
                yield node, _attach(reply, payloads)

    def close(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()


__all__ = [
    "TERMS",
    "ClientFactory",
    "Executor",
    "InProcessExecutor",
    "RayExecutor",
    "RayOptions",
    "client_index",
    "node_id",
    "run_client",
]
