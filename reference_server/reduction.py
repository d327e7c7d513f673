"""What a driver does with a result and with a finished phase, without any I/O.

Both drivers of the round engine (the gRPC coordinator and the simulation) must judge a
result and reduce a phase the same way, or a strategy prototyped in simulation would
behave differently once deployed. The steps that touch storage stay with the driver: it
hands in decoded arrays and a `load` function that turns a reply's tensors into arrays
(from blob files for the coordinator, from memory for the simulation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pollen.messages import EvaluateReply, FitReply, GetParametersReply, QueryReply, Reply
from pollen.tensors import EncodedTensor
from pollen.values import ConfigValue
from reference_server.analytics import QueryAnswer, reduce_answers
from reference_server.engine import AggregatePhase, PhaseKind
from reference_server.strategies.base import (
    EvaluateReport,
    FitUpdate,
    Strategy,
    StrategyState,
    aggregate_evaluate,
)
from reference_server.validation import (
    ValidationConfig,
    check_examples,
    check_metrics,
    validate_answer_tensors,
    validate_parameters,
)

#: Arrays of stored or in-memory tensors, in order.
Load = Callable[[Sequence[EncodedTensor]], list[np.ndarray]]
#: The optional central evaluation hook: (round, global model) -> (loss, metrics).
CentralEvaluation = Callable[[int, list[np.ndarray]], tuple[float, dict[str, ConfigValue]]]


def check_reply(
    reply: Reply,
    arrays: Sequence[np.ndarray],
    *,
    reference: Callable[[], Sequence[np.ndarray]],
    validation: ValidationConfig,
) -> None:
    """Raise UpdateRejected when a decoded result may not reach aggregation.

    `arrays` are the reply's decoded tensors; `reference` returns the global model and is
    only called for fit replies (the other kinds have nothing to compare it with).
    """
    if isinstance(reply, FitReply):
        check_examples(reply.num_examples, validation, field="result.fit.num_examples")
        check_metrics(reply.metrics, field="result.fit.metrics")
        validate_parameters(arrays, reference(), validation, field="result.fit.parameters")
    elif isinstance(reply, EvaluateReply):
        # Any loss is a measurement, NaN and infinities included (PLN-EVL-002); the phase's
        # mean loss leaves non-finite ones out and counts them.
        check_examples(reply.num_examples, validation, field="result.evaluate.num_examples")
        check_metrics(reply.metrics, field="result.evaluate.metrics")
    elif isinstance(reply, QueryReply):
        check_examples(reply.num_examples, validation, minimum=0, field="result.query.num_examples")
        check_metrics(reply.metrics, field="result.query.metrics")
        validate_answer_tensors(arrays, validation.query_shapes, field="result.query.tensors")


@dataclass(frozen=True, kw_only=True)
class Reduced:
    """What one phase's reduction gives the driver to store and record.

    `parameters` is the new global model (initialize and fit phases), `state` the new
    strategy state (None: unchanged), `outputs` the reduced tensors of an analytics phase.
    """

    parameters: tuple[np.ndarray, ...] | None = None
    state: StrategyState | None = None
    outputs: tuple[np.ndarray, ...] | None = None
    metrics: dict[str, ConfigValue] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)


def reduce_phase(
    action: AggregatePhase,
    *,
    strategy: Strategy,
    state: StrategyState,
    current: Callable[[], Sequence[np.ndarray]],
    load: Load,
    query_reduce: Mapping[str, str] | None = None,
    query_tensors: str = "sum",
    central_evaluation: CentralEvaluation | None = None,
) -> Reduced:
    """Reduce a phase whose collection ended with quorum.

    Fit updates are loaded one at a time, in the engine's fixed order, so a streaming
    strategy holds O(model) memory; `current` returns the global model of the round.
    """
    kind = action.kind
    if kind is PhaseKind.INITIALIZE:
        first = action.results[0]
        assert isinstance(first.reply, GetParametersReply)
        arrays = tuple(load(first.reply.parameters))
        return Reduced(
            parameters=arrays,
            state=dict(strategy.initial_state(arrays)),
            history={"initialized_from": first.node_id},
        )
    if kind is PhaseKind.EVALUATE:
        reports = []
        for result in action.results:
            assert isinstance(result.reply, EvaluateReply)
            reports.append(
                EvaluateReport(
                    node_id=result.node_id,
                    loss=result.reply.loss,
                    num_examples=result.reply.num_examples,
                    metrics=result.reply.metrics,
                )
            )
        loss, metrics = aggregate_evaluate(reports, action.failures)
        return Reduced(metrics={"eval_loss": loss, **{f"eval_{k}": v for k, v in metrics.items()}})
    if kind is PhaseKind.QUERY:
        answers = []
        for result in action.results:
            assert isinstance(result.reply, QueryReply)
            answers.append(
                QueryAnswer(
                    node_id=result.node_id,
                    metrics=result.reply.metrics,
                    tensors=tuple(load(result.reply.tensors)),
                    num_examples=result.reply.num_examples,
                )
            )
        outcome = reduce_answers(answers, dict(query_reduce or {}), query_tensors)
        return Reduced(outputs=tuple(outcome.tensors), metrics=dict(outcome.metrics))

    def updates() -> Iterator[FitUpdate]:
        for result in action.results:
            reply = result.reply
            assert isinstance(reply, FitReply)
            yield FitUpdate(
                node_id=result.node_id,
                parameters=tuple(load(reply.parameters)),
                num_examples=reply.num_examples,
                metrics=reply.metrics,
            )

    aggregate = strategy.aggregate_fit(
        round=action.round,
        parameters=current(),
        updates=updates(),
        failures=action.failures,
        state=state,
    )
    fit: dict[str, ConfigValue] = {f"fit_{k}": v for k, v in aggregate.metrics.items()}
    parameters = tuple(np.ascontiguousarray(a) for a in aggregate.parameters)
    if central_evaluation is not None:
        loss, central = central_evaluation(action.round, list(parameters))
        fit["central_loss"] = float(loss)
        fit.update({f"central_{k}": v for k, v in central.items()})
    return Reduced(parameters=parameters, state=dict(aggregate.state), metrics=fit)


__all__ = ["CentralEvaluation", "Load", "Reduced", "check_reply", "reduce_phase"]
