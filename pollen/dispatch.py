"""Running a `Client` on one instruction and building the reply, without any I/O.

Every driver of a `Client` (the reference client over gRPC, the simulation engine in
process) does the same thing with a task: decode the instruction's tensors under the
session's terms, call the matching `Client` method, check what the application returned
and encode it as a `Reply`. This module is that step, shared.

Nothing the application does makes it raise: an instruction the application does not
implement becomes an UNSUPPORTED_INSTRUCTION failure (PLN-TSK-025), an exception or a
malformed result becomes an APP_ERROR failure (PLN-TSK-026, PLN-FIT-004), and a tensor
that does not decode becomes a failure with the tensor's own error code and field
(PLN-TSK-027). The session goes on after each of them.

Fetching blob payloads is I/O and stays with the driver: `check_instruction` judges every
tensor header first (so nothing refused is ever downloaded), `blob_refs` lists what to
fetch, and `with_payloads` puts the verified bytes in place before `decode_instruction`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.blob import BlobRef, BytesLike
from pollen.client import Client, EvaluateResult, FitResult, QueryResult
from pollen.codecs import CODECS
from pollen.dtypes import Dtype
from pollen.errors import (
    AppError,
    DtypeUnsupported,
    InvalidArgument,
    LimitExceeded,
    PollenError,
    UnsupportedInstruction,
)
from pollen.handshake import RAW_CODEC, Capabilities
from pollen.limits import Limits
from pollen.messages import (
    CONTROL_INSTRUCTIONS,
    EvaluateInstruction,
    EvaluateReply,
    FailureReply,
    FitInstruction,
    FitReply,
    GetParametersInstruction,
    GetParametersReply,
    GetPropertiesInstruction,
    GetPropertiesReply,
    Instruction,
    QueryInstruction,
    QueryReply,
    Reply,
    Tensors,
    UnknownInstruction,
    Values,
)
from pollen.tensors import EncodedTensor, check_tensor, decode_tensors, encode_tensors
from pollen.values import check_config

Arrays = tuple[npt.NDArray[Any], ...]
#: Called with an exception the application raised, for example to log its traceback.
ErrorHook = Callable[[BaseException], None]

#: Longest Error.message this module writes (the spec recommends 1024 bytes at most).
MAX_ERROR_MESSAGE_BYTES = 1024

#: The Client method each work instruction calls.
METHOD_FOR: Mapping[type[Instruction], str] = {
    FitInstruction: "fit",
    EvaluateInstruction: "evaluate",
    QueryInstruction: "query",
    GetParametersInstruction: "get_parameters",
    GetPropertiesInstruction: "get_properties",
}


@dataclass(frozen=True, kw_only=True)
class SessionTerms:
    """What a session agreed on, as far as decoding and encoding tensors goes.

    `codecs`, `dtypes` and `features` are the negotiated ones (the handshake response).
    `receive_limits` are the limits this side declared, which bound what it decodes;
    `send_limits` are the peer's, which bound what it sends. `result_codec` is the codec
    configured for result tensors: used where it was negotiated and applies to the
    tensor's dtype, `raw` otherwise (lossy codecs only when configured, PLN-HS-019).
    """

    codecs: tuple[str, ...] = (RAW_CODEC,)
    dtypes: frozenset[Dtype] = field(default_factory=lambda: frozenset(Dtype))
    features: frozenset[str] = frozenset()
    receive_limits: Limits = field(default_factory=Limits)
    send_limits: Limits = field(default_factory=Limits)
    result_codec: str = RAW_CODEC

    @classmethod
    def from_handshake(
        cls, offered: Capabilities, accepted: Capabilities, *, result_codec: str = RAW_CODEC
    ) -> SessionTerms:
        """Terms from what this side offered and what the peer's response accepted."""
        return cls(
            codecs=accepted.codecs,
            dtypes=accepted.dtypes,
            features=accepted.features,
            receive_limits=offered.limits,
            send_limits=accepted.limits,
            result_codec=result_codec,
        )

    def codec_for(self, dtype: Dtype) -> str:
        """The codec a result tensor of `dtype` is sent with."""
        codec = self.result_codec
        if codec in self.codecs and codec in CODECS and CODECS[codec].applies_to(dtype):
            return codec
        return RAW_CODEC


@dataclass(frozen=True, kw_only=True)
class DecodedInstruction:
    """A work instruction with its tensors decoded, ready for the application."""

    instruction: Instruction
    #: `parameters` of fit and evaluate, `inputs` of query, empty otherwise; in order.
    tensors: Arrays = ()
    config: Values = field(default_factory=dict)


# --- tensors of an instruction ---------------------------------------------------------


def tensor_list(instruction: Instruction) -> tuple[str, Tensors]:
    """The instruction's tensor list and its field path, for example "fit.parameters"."""
    if isinstance(instruction, FitInstruction):
        return "fit.parameters", instruction.parameters
    if isinstance(instruction, EvaluateInstruction):
        return "evaluate.parameters", instruction.parameters
    if isinstance(instruction, QueryInstruction):
        return "query.inputs", instruction.inputs
    return "", ()


def check_instruction(instruction: Instruction, terms: SessionTerms) -> None:
    """Check the tensor list's length and every tensor header (check order steps 1 to 7).

    Raises the first problem as a PollenError whose `field` names it (for example
    "fit.parameters[2].shape"). A driver calls this before it downloads any blob, so it
    never fetches a payload it would refuse (PLN-BLB-011).
    """
    path, tensors = tensor_list(instruction)
    limits = terms.receive_limits
    if len(tensors) > limits.max_tensors:
        raise LimitExceeded(
            f"{len(tensors)} tensors exceed max_tensors {limits.max_tensors}", field=path
        )
    codecs = frozenset(terms.codecs)
    for i, tensor in enumerate(tensors):
        check_tensor(
            tensor, limits=limits, codecs=codecs, dtypes=terms.dtypes, field=f"{path}[{i}]"
        )


def blob_refs(instruction: Instruction) -> list[tuple[str, BlobRef]]:
    """(field path, reference) of every blob payload of the instruction, once per digest."""
    path, tensors = tensor_list(instruction)
    seen: dict[bytes, tuple[str, BlobRef]] = {}
    for i, tensor in enumerate(tensors):
        if tensor.blob is not None and tensor.blob.sha256 not in seen:
            seen[tensor.blob.sha256] = (f"{path}[{i}].blob", tensor.blob)
    return list(seen.values())


def with_payloads(instruction: Instruction, payloads: Mapping[bytes, BytesLike]) -> Instruction:
    """The instruction with each blob tensor's verified bytes (by digest) put in place."""
    _, tensors = tensor_list(instruction)
    if not any(t.blob is not None for t in tensors):
        return instruction
    filled = tuple(
        t
        if t.blob is None
        else dataclasses.replace(t, payload=memoryview(payloads[t.blob.sha256]), blob=None)
        for t in tensors
    )
    if isinstance(instruction, QueryInstruction):
        return dataclasses.replace(instruction, inputs=filled)
    assert isinstance(instruction, FitInstruction | EvaluateInstruction)
    return dataclasses.replace(instruction, parameters=filled)


def decode_instruction(instruction: Instruction, terms: SessionTerms) -> DecodedInstruction:
    """Decode the instruction's tensors with the session's terms (the whole check order).

    Raises the first problem as a PollenError with the failing tensor's field. Blob
    payloads must already be in place (`with_payloads`).
    """
    path, tensors = tensor_list(instruction)
    arrays: list[npt.NDArray[Any]] = []
    if path:
        arrays = decode_tensors(
            tensors,
            limits=terms.receive_limits,
            codecs=frozenset(terms.codecs),
            dtypes=terms.dtypes,
            field=path,
        )
        # Applications own their inputs: hand them writable arrays, not read-only views of
        # the received payloads (one copy per task, small next to the transfer itself).
        arrays = [a if a.flags.writeable else a.copy() for a in arrays]
    config: Values = dict(getattr(instruction, "config", {}))
    return DecodedInstruction(instruction=instruction, tensors=tuple(arrays), config=config)


# --- running the application -------------------------------------------------------------


def failure(error: PollenError) -> FailureReply:
    """A failure reply carrying `error`."""
    return FailureReply(error=error)


def app_failure(exc: BaseException, method: str) -> FailureReply:
    """The APP_ERROR reply for an exception of the application's `method`.

    The message names the exception's type and, only for the typed errors pollen itself
    raises (about a malformed result), their text: an arbitrary exception's text may quote
    local data, which must not leave the node (PLN-ERR-006).
    """
    if isinstance(exc, PollenError):
        text = f"{method}: {exc}"
    else:
        text = f"{method} raised {type(exc).__qualname__}"
    return FailureReply(error=AppError(_truncate(text)))


def run_instruction(
    client: Client,
    instruction: Instruction,
    terms: SessionTerms,
    *,
    on_error: ErrorHook | None = None,
) -> Reply:
    """Decode an instruction whose payloads are all in hand, run it, and build the reply."""
    try:
        decoded = decode_instruction(instruction, terms)
    except PollenError as exc:
        return failure(exc)
    return execute(client, decoded, terms, on_error=on_error)


def execute(
    client: Client,
    decoded: DecodedInstruction,
    terms: SessionTerms,
    *,
    on_error: ErrorHook | None = None,
) -> Reply:
    """Call the Client method for the instruction and encode its result. Never raises.

    `on_error` sees every exception the application raised (to log its traceback).
    """
    instruction = decoded.instruction
    if isinstance(instruction, UnknownInstruction):
        return failure(UnsupportedInstruction("the task's instruction is unknown to this client"))
    if isinstance(instruction, CONTROL_INSTRUCTIONS):
        return failure(
            UnsupportedInstruction("control instructions are answered by leaving the session")
        )
    method = METHOD_FOR[type(instruction)]
    try:
        return _RUNNERS[type(instruction)](client, decoded, terms)
    except UnsupportedInstruction as exc:
        return failure(UnsupportedInstruction(_truncate(exc.message)))
    except Exception as exc:
        if on_error is not None:
            on_error(exc)
        return app_failure(exc, method)


def _fit(client: Client, decoded: DecodedInstruction, terms: SessionTerms) -> Reply:
    result = client.fit(list(decoded.tensors), dict(decoded.config))
    _expect(result, FitResult, "fit")
    _check_like(result.parameters, decoded.tensors, "parameters")
    return FitReply(
        parameters=_encode(result.parameters, terms, "parameters"),
        num_examples=int(result.num_examples),
        metrics=_values(result.metrics, terms, "metrics"),
    )


def _evaluate(client: Client, decoded: DecodedInstruction, terms: SessionTerms) -> Reply:
    result = client.evaluate(list(decoded.tensors), dict(decoded.config))
    _expect(result, EvaluateResult, "evaluate")
    return EvaluateReply(
        loss=float(result.loss),
        num_examples=int(result.num_examples),
        metrics=_values(result.metrics, terms, "metrics"),
    )


def _query(client: Client, decoded: DecodedInstruction, terms: SessionTerms) -> Reply:
    result = client.query(dict(decoded.config), list(decoded.tensors))
    _expect(result, QueryResult, "query")
    return QueryReply(
        metrics=_values(result.metrics, terms, "metrics"),
        tensors=_encode(result.tensors, terms, "tensors"),
        num_examples=int(result.num_examples),
    )


def _get_parameters(client: Client, decoded: DecodedInstruction, terms: SessionTerms) -> Reply:
    parameters: object = client.get_parameters(dict(decoded.config))
    if isinstance(parameters, np.ndarray) or not isinstance(parameters, Sequence):
        raise InvalidArgument(
            f"get_parameters returns a sequence of arrays, not {type(parameters).__name__}",
            field="parameters",
        )
    return GetParametersReply(parameters=_encode(parameters, terms, "parameters"))


def _get_properties(client: Client, decoded: DecodedInstruction, terms: SessionTerms) -> Reply:
    try:
        properties = client.get_properties(dict(decoded.config))
    except UnsupportedInstruction:
        # PLN-PRP-001: a client never refuses get_properties; none defined is an empty map.
        properties = {}
    if not isinstance(properties, Mapping):
        raise InvalidArgument(
            f"get_properties returns a mapping, not {type(properties).__name__}",
            field="properties",
        )
    return GetPropertiesReply(properties=_values(properties, terms, "properties"))


_Runner = Callable[[Client, DecodedInstruction, SessionTerms], Reply]
_RUNNERS: Mapping[type[Instruction], _Runner] = {
    FitInstruction: _fit,
    EvaluateInstruction: _evaluate,
    QueryInstruction: _query,
    GetParametersInstruction: _get_parameters,
    GetPropertiesInstruction: _get_properties,
}


def _expect(result: object, kind: type, method: str) -> None:
    if not isinstance(result, kind):
        raise InvalidArgument(
            f"{method} returned {type(result).__name__}, not {kind.__name__}", field="result"
        )


def _check_like(returned: Sequence[npt.NDArray[Any]], received: Arrays, field_name: str) -> None:
    """PLN-FIT-001: one tensor per instruction tensor, each of the same dtype and shape."""
    if len(returned) != len(received):
        raise InvalidArgument(
            f"{len(returned)} tensors returned for {len(received)} received", field=field_name
        )
    for i, (out, into) in enumerate(zip(returned, received, strict=True)):
        array = np.asarray(out)
        if Dtype.from_numpy(array.dtype) is not Dtype.from_numpy(into.dtype):
            raise InvalidArgument(
                f"dtype {array.dtype} differs from the received {into.dtype}",
                field=f"{field_name}[{i}]",
            )
        if array.shape != into.shape:
            raise InvalidArgument(
                f"shape {list(array.shape)} differs from the received {list(into.shape)}",
                field=f"{field_name}[{i}]",
            )


def _encode(arrays: Sequence[Any], terms: SessionTerms, field_name: str) -> Tensors:
    """Encode result arrays for the peer: negotiated dtypes only, within its limits."""
    values = [np.asarray(a) for a in arrays]
    codecs = []
    for i, array in enumerate(values):
        dtype = Dtype.from_numpy(array.dtype)
        if dtype not in terms.dtypes:
            raise DtypeUnsupported(
                f"dtype {dtype.name} was not negotiated for this session",
                field=f"{field_name}[{i}]",
            )
        codecs.append(terms.codec_for(dtype))
    encoded = encode_tensors(values, codec=codecs, limits=terms.send_limits, field=field_name)
    # A raw payload may be a view of the application's own array, which the application
    # is free to change later (a framework updating its weights in place); the reply may be
    # kept and sent again, so it owns its bytes.
    return tuple(_owned(t) for t in encoded)


def _owned(tensor: EncodedTensor) -> EncodedTensor:
    if isinstance(tensor.payload, bytes):
        return tensor
    return dataclasses.replace(tensor, payload=bytes(tensor.payload))


def _values(values: Mapping[str, Any], terms: SessionTerms, field_name: str) -> Values:
    return check_config(values, max_entries=terms.send_limits.max_map_entries, field=field_name)


def _truncate(text: str, limit: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "..."


def reply_tensors(reply: Reply) -> tuple[str, Tensors]:
    """The reply's tensor list and its field path within a TaskResult."""
    if isinstance(reply, FitReply):
        return "fit.parameters", reply.parameters
    if isinstance(reply, QueryReply):
        return "query.tensors", reply.tensors
    if isinstance(reply, GetParametersReply):
        return "get_parameters.parameters", reply.parameters
    return "", ()


def with_reply_tensors(reply: Reply, tensors: Collection[EncodedTensor]) -> Reply:
    """The reply with its tensor list replaced (for example by blob references)."""
    items = tuple(tensors)
    if isinstance(reply, FitReply | GetParametersReply):
        return dataclasses.replace(reply, parameters=items)
    if isinstance(reply, QueryReply):
        return dataclasses.replace(reply, tensors=items)
    if items:
        raise InvalidArgument(f"a {type(reply).__name__} carries no tensors")
    return reply


__all__ = [
    "METHOD_FOR",
    "DecodedInstruction",
    "ErrorHook",
    "SessionTerms",
    "app_failure",
    "blob_refs",
    "check_instruction",
    "decode_instruction",
    "execute",
    "failure",
    "reply_tensors",
    "run_instruction",
    "tensor_list",
    "with_payloads",
    "with_reply_tensors",
]
