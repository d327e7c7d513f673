from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pollen.blob import blob_ref
from pollen.client import Client, EvaluateResult, FitResult, QueryResult
from pollen.dispatch import (
    SessionTerms,
    blob_refs,
    check_instruction,
    decode_instruction,
    execute,
    reply_tensors,
    run_instruction,
    with_payloads,
    with_reply_tensors,
)
from pollen.dtypes import Dtype
from pollen.errors import ErrorCode, LimitExceeded, UnsupportedInstruction
from pollen.handshake import Capabilities
from pollen.limits import Limits
from pollen.messages import (
    EvaluateInstruction,
    EvaluateReply,
    FailureReply,
    FitInstruction,
    FitReply,
    GetParametersInstruction,
    GetParametersReply,
    GetPropertiesInstruction,
    GetPropertiesReply,
    QueryInstruction,
    QueryReply,
    Reply,
    ShutdownInstruction,
    UnknownInstruction,
)
from pollen.tensors import EncodedTensor, decode_tensors, encode_tensor, encode_tensors
from pollen.values import Config, ConfigValue

Arrays = Sequence[npt.NDArray[Any]]
TERMS = SessionTerms()


class App(Client):
    def __init__(self) -> None:
        self.kept = np.zeros(3, dtype=np.float32)

    def fit(self, parameters: Arrays, config: Config) -> FitResult:
        scale = config.get("scale", 1)
        assert isinstance(scale, int)
        return FitResult(
            parameters=[p * scale for p in parameters], num_examples=5, metrics={"n": 1}
        )

    def evaluate(self, parameters: Arrays, config: Config) -> EvaluateResult:
        return EvaluateResult(loss=np.float32(0.5), num_examples=np.int64(4))  # type: ignore[arg-type]

    def query(self, config: Config, inputs: Arrays) -> QueryResult:
        return QueryResult(tensors=[np.array([len(inputs)], dtype=np.int64)], num_examples=0)

    def get_parameters(self, config: Config) -> Sequence[npt.NDArray[Any]]:
        return [self.kept]


def _fit(*arrays: npt.NDArray[Any], **config: ConfigValue) -> FitInstruction:
    return FitInstruction(parameters=tuple(encode_tensors(arrays)), config=dict(config))


def _failure(reply: Reply) -> FailureReply:
    assert isinstance(reply, FailureReply), reply
    return reply


def _decode(reply: Reply) -> list[npt.NDArray[Any]]:
    _, tensors = reply_tensors(reply)
    return decode_tensors(tensors)


def test_fit_runs_and_encodes_its_result() -> None:
    reply = run_instruction(App(), _fit(np.arange(4, dtype=np.float32), scale=3), TERMS)
    assert isinstance(reply, FitReply)
    assert reply.num_examples == 5
    assert reply.metrics == {"n": 1}
    np.testing.assert_array_equal(_decode(reply)[0], np.arange(4) * 3)


def test_every_work_instruction_reaches_its_method() -> None:
    app = App()
    evaluate = run_instruction(app, EvaluateInstruction(parameters=()), TERMS)
    assert evaluate == EvaluateReply(loss=0.5, num_examples=4)
    assert type(evaluate.num_examples) is int
    inputs = tuple(encode_tensors([np.zeros(2), np.zeros(1)]))
    query = run_instruction(app, QueryInstruction(inputs=inputs), TERMS)
    assert isinstance(query, QueryReply)
    assert _decode(query)[0].tolist() == [2]
    params = run_instruction(app, GetParametersInstruction(), TERMS)
    assert isinstance(params, GetParametersReply)
    assert _decode(params)[0].dtype == np.float32
    properties = run_instruction(app, GetPropertiesInstruction(), TERMS)
    assert properties == GetPropertiesReply(properties={})  # PLN-PRP-001


def test_result_payloads_do_not_alias_the_apps_arrays() -> None:
    app = App()
    reply = run_instruction(app, GetParametersInstruction(), TERMS)
    app.kept += 1  # a framework updating its weights in place
    assert _decode(reply)[0].tolist() == [0, 0, 0]


def test_unimplemented_unknown_and_control_instructions_are_unsupported() -> None:
    class Nothing(Client):
        def get_properties(self, config: Config) -> Mapping[str, ConfigValue]:
            raise UnsupportedInstruction("no")

    for instruction in (
        _fit(np.zeros(1)),
        EvaluateInstruction(parameters=()),
        QueryInstruction(),
        GetParametersInstruction(),
        UnknownInstruction(),
        ShutdownInstruction(),
    ):
        error = _failure(run_instruction(Nothing(), instruction, TERMS)).error
        assert error.code is ErrorCode.UNSUPPORTED_INSTRUCTION
    # get_properties is never refused (PLN-PRP-001).
    assert run_instruction(Nothing(), GetPropertiesInstruction(), TERMS) == GetPropertiesReply()


def test_app_exceptions_become_app_errors_without_their_text() -> None:
    class Crashing(Client):
        def fit(self, parameters: Arrays, config: Config) -> FitResult:
            raise KeyError("customer 42")

    seen: list[BaseException] = []
    error = _failure(
        run_instruction(Crashing(), _fit(np.zeros(1)), TERMS, on_error=seen.append)
    ).error
    assert error.code is ErrorCode.APP_ERROR
    assert "KeyError" in error.message
    assert "42" not in error.message
    assert isinstance(seen[0], KeyError)


class Returns(Client):
    def __init__(self, result: Any) -> None:
        self.result = result

    def fit(self, parameters: Arrays, config: Config) -> Any:
        return self.result(parameters) if callable(self.result) else self.result

    def get_parameters(self, config: Config) -> Any:
        return self.result

    def get_properties(self, config: Config) -> Any:
        return self.result


@pytest.mark.parametrize(
    ("result", "words"),
    [
        ({"parameters": []}, "not FitResult"),
        (lambda p: FitResult(parameters=[], num_examples=1), "1 received"),
        (lambda p: FitResult(parameters=[p[0].astype(np.float64)], num_examples=1), "dtype"),
        (lambda p: FitResult(parameters=[p[0].reshape(2, 1)], num_examples=1), "shape"),
        (lambda p: FitResult(parameters=p, num_examples=0), "num_examples"),  # from FitResult
    ],
)
def test_fit_results_that_break_the_rules_are_app_errors(result: Any, words: str) -> None:
    reply = run_instruction(Returns(result), _fit(np.zeros(2, dtype=np.float32)), TERMS)
    error = _failure(reply).error
    assert error.code is ErrorCode.APP_ERROR  # PLN-FIT-004
    assert words in error.message


def test_other_malformed_results_are_app_errors() -> None:
    for result, instruction in (
        (np.zeros(3), GetParametersInstruction()),
        ([np.zeros(2, dtype=np.complex64)], GetParametersInstruction()),
        ([1, 2], GetPropertiesInstruction()),
        ({"k": object()}, GetPropertiesInstruction()),
    ):
        error = _failure(run_instruction(Returns(result), instruction, TERMS)).error
        assert error.code is ErrorCode.APP_ERROR


def test_results_respect_the_negotiated_dtypes_and_the_peers_limits() -> None:
    only_ints = SessionTerms(dtypes=frozenset({Dtype.INT64}))
    error = _failure(run_instruction(Returns([np.zeros(1)]), GetParametersInstruction(), only_ints))
    assert "FLOAT64" in error.error.message
    small = SessionTerms(send_limits=Limits(max_tensor_bytes=16))
    reply = run_instruction(Returns([np.zeros(2)]), GetParametersInstruction(), small)
    assert isinstance(reply, GetParametersReply)
    reply = run_instruction(Returns([np.zeros(3)]), GetParametersInstruction(), small)
    assert "LIMIT_EXCEEDED" in _failure(reply).error.message


def test_the_result_codec_is_used_where_negotiated_and_applicable() -> None:
    arrays = [np.zeros(4, dtype=np.float32), np.array([True, False])]
    zstd = SessionTerms(codecs=("raw", "zstd"), result_codec="zstd")
    reply = run_instruction(Returns(arrays), GetParametersInstruction(), zstd)
    assert [t.codec for t in reply_tensors(reply)[1]] == ["zstd", "zstd"]
    half = SessionTerms(codecs=("raw", "float16"), result_codec="float16")
    reply = run_instruction(Returns(arrays), GetParametersInstruction(), half)
    assert [t.codec for t in reply_tensors(reply)[1]] == ["float16", "raw"]
    not_negotiated = SessionTerms(codecs=("raw",), result_codec="zstd")
    reply = run_instruction(Returns(arrays), GetParametersInstruction(), not_negotiated)
    assert [t.codec for t in reply_tensors(reply)[1]] == ["raw", "raw"]


def test_tensors_that_do_not_decode_fail_with_their_code_and_field() -> None:
    bad = EncodedTensor(dtype=Dtype.FLOAT32, shape=(2,), codec="raw", payload=b"\x00" * 7)
    error = _failure(
        run_instruction(App(), FitInstruction(parameters=(encode_tensor(np.zeros(1)), bad)), TERMS)
    ).error
    assert error.code is ErrorCode.TENSOR_SIZE_MISMATCH
    assert error.field == "fit.parameters[1].payload" or error.field.startswith("fit.parameters[1]")
    no_float = SessionTerms(dtypes=frozenset({Dtype.INT8}))
    error = _failure(run_instruction(App(), _fit(np.zeros(1)), no_float)).error
    assert error.code is ErrorCode.DTYPE_UNSUPPORTED
    assert error.field == "fit.parameters[0].dtype"
    zstd = EvaluateInstruction(parameters=(encode_tensor(np.zeros(1), codec="zstd"),))
    error = _failure(run_instruction(App(), zstd, TERMS)).error  # raw only negotiated
    assert error.code is ErrorCode.CODEC_UNSUPPORTED
    assert error.field == "evaluate.parameters[0].codec"
    few = SessionTerms(receive_limits=Limits(max_tensors=1))
    error = _failure(run_instruction(App(), _fit(np.zeros(1), np.zeros(1)), few)).error
    assert error.code is ErrorCode.LIMIT_EXCEEDED
    assert error.field == "fit.parameters"


def test_blob_payloads_are_checked_listed_and_filled_in() -> None:
    payload = bytes(encode_tensor(np.arange(3, dtype=np.float32)).payload)
    ref = blob_ref(payload)
    tensor = EncodedTensor(dtype=Dtype.FLOAT32, shape=(3,), codec="raw", payload=b"", blob=ref)
    instruction = FitInstruction(parameters=(tensor, tensor, encode_tensor(np.ones(1))))
    check_instruction(instruction, TERMS)
    assert blob_refs(instruction) == [("fit.parameters[0].blob", ref)]  # once per digest
    with pytest.raises(LimitExceeded) as refused:
        check_instruction(instruction, SessionTerms(receive_limits=Limits(max_blob_bytes=11)))
    assert refused.value.field == "fit.parameters[0].blob.size"
    filled = with_payloads(instruction, {ref.sha256: payload})
    decoded = decode_instruction(filled, TERMS)
    assert [a.tolist() for a in decoded.tensors] == [[0, 1, 2], [0, 1, 2], [1.0]]
    query = with_payloads(QueryInstruction(inputs=(tensor,)), {ref.sha256: payload})
    assert isinstance(query, QueryInstruction)
    assert query.inputs[0].blob is None


def test_terms_from_a_handshake() -> None:
    offered = Capabilities(codecs=("raw", "zstd"), limits=Limits(max_tensors=7))
    accepted = Capabilities(
        codecs=("raw",),
        dtypes=frozenset({Dtype.FLOAT32}),
        limits=Limits(max_tensors=9),
        features=frozenset({"query"}),
    )
    terms = SessionTerms.from_handshake(offered, accepted, result_codec="zstd")
    assert terms.receive_limits.max_tensors == 7
    assert terms.send_limits.max_tensors == 9
    assert terms.codecs == ("raw",)
    assert terms.features == {"query"}
    assert terms.codec_for(Dtype.FLOAT32) == "raw"


def test_long_messages_are_cut() -> None:
    class Loud(Client):
        def fit(self, parameters: Arrays, config: Config) -> FitResult:
            raise UnsupportedInstruction("x" * 5000)

    error = _failure(run_instruction(Loud(), _fit(np.zeros(1)), TERMS)).error
    assert len(error.message.encode()) <= 1024


def test_reply_tensors_can_be_swapped() -> None:
    reply = FitReply(parameters=(encode_tensor(np.zeros(1)),), num_examples=1)
    swapped = with_reply_tensors(reply, [])
    assert reply_tensors(swapped) == ("fit.parameters", ())
    assert with_reply_tensors(EvaluateReply(loss=0, num_examples=1), []) == EvaluateReply(
        loss=0, num_examples=1
    )


def test_execute_never_raises_for_a_decoded_instruction() -> None:
    decoded = decode_instruction(_fit(np.zeros(2, dtype=np.float32)), TERMS)
    assert isinstance(execute(App(), decoded, TERMS), FitReply)


def test_apps_receive_writable_arrays() -> None:
    class InPlace(Client):
        def fit(self, parameters: Sequence[npt.NDArray[Any]], config: Config) -> FitResult:
            for array in parameters:
                np.add(array, 1, out=array)  # the usual in-place update of a training loop
            return FitResult(parameters=parameters, num_examples=1)

    reply = run_instruction(InPlace(), _fit(np.zeros(3, dtype=np.float32)), TERMS)
    assert isinstance(reply, FitReply)
    np.testing.assert_array_equal(_decode(reply)[0], np.ones(3))
