"""The conformance model of spec Annex C, run by the reference client's normal loop.

    POLLEN_CONFORMANCE_SERVER=127.0.0.1:PORT POLLEN_CONFORMANCE_INSECURE=1 \\
        POLLEN_CONFORMANCE_NODE_ID=n1 python -m reference_client.conformance

`pollen conformance client -- python -m reference_client.conformance` runs it once per case.
Every answer is a pure function of the instruction and the current parameters, so the
harness can judge it exactly; nothing here knows which case runs (PLN-CNF-002).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from pollen.client import Client, EvaluateResult, FitResult, QueryResult
from pollen.values import Config, ConfigValue
from reference_client.runner import ReferenceClient

MODEL_NAME = "pollen-conformance/1"
log = logging.getLogger("reference_client.conformance")

Arrays = Sequence[npt.NDArray[Any]]


class ConformanceAppError(RuntimeError):
    """The failure `conformance.fail` asks for (PLN-CNF-011)."""


def initial_parameters() -> list[npt.NDArray[Any]]:
    """The model's parameters before any fit (PLN-CNF-018)."""
    return [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([-1, 0, 1], dtype=np.int64),
    ]


def _int(config: Config, key: str, default: int) -> int:
    value = config.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _echo(config: Config) -> dict[str, ConfigValue]:
    return {k: v for k, v in config.items() if k.startswith("echo.")}


def add_step(array: npt.NDArray[Any], step: int) -> npt.NDArray[Any]:
    """`array + step` in the array's own dtype (PLN-CNF-013)."""
    result: npt.NDArray[Any]
    if array.dtype == np.bool_:
        result = np.logical_xor(array, bool(step % 2))
    elif array.dtype.kind in "iu":
        bits = array.dtype.itemsize * 8
        # Two's-complement wrap: reduce the step first so numpy never sees an overflow.
        wrapped = np.array(step % (1 << bits), dtype=f"u{array.dtype.itemsize}")
        result = (array.view(wrapped.dtype) + wrapped).view(array.dtype)
    else:
        result = (array + np.array(step).astype(array.dtype)).astype(array.dtype)
    return result


class ConformanceModel(Client):
    """Annex C's model: fit adds (i + 1) x delta, evaluate sums, query echoes."""

    def __init__(self) -> None:
        self.current: list[npt.NDArray[Any]] = initial_parameters()

    def _enter(self, method: str, config: Config) -> None:
        sleep_ms = _int(config, "conformance.sleep_ms", 0)
        if sleep_ms > 0:
            time.sleep(sleep_ms / 1000)
        if config.get("conformance.fail") == method:
            raise ConformanceAppError(f"{method} failed on request (conformance.fail)")

    def _metrics(self, config: Config, count: int) -> dict[str, ConfigValue]:
        return {**_echo(config), "conformance.tensors": count}

    def fit(self, parameters: Arrays, config: Config) -> FitResult:
        self._enter("fit", config)
        delta = _int(config, "conformance.delta", 1)
        result = [self.transform(a, (i + 1) * delta) for i, a in enumerate(parameters)]
        if config.get("conformance.break") == "fit":
            result = result[:-1]
        else:
            self.current = result
        return FitResult(
            parameters=result,
            num_examples=_int(config, "conformance.num_examples", 1),
            metrics=self._metrics(config, len(parameters)),
        )

    def transform(self, array: npt.NDArray[Any], step: int) -> npt.NDArray[Any]:
        return add_step(array, step)

    def evaluate(self, parameters: Arrays, config: Config) -> EvaluateResult:
        self._enter("evaluate", config)
        loss = 0.0
        for array in parameters:
            for x in np.asarray(array).reshape(-1).astype(np.float64).tolist():
                loss += x
        return EvaluateResult(
            loss=loss,
            num_examples=_int(config, "conformance.num_examples", 1),
            metrics=self._metrics(config, len(parameters)),
        )

    def query(self, config: Config, inputs: Arrays) -> QueryResult:
        self._enter("query", config)
        return QueryResult(
            metrics=self._metrics(config, len(inputs)),
            tensors=list(inputs),
            num_examples=_int(config, "conformance.num_examples", 0),
        )

    def get_parameters(self, config: Config) -> Arrays:
        self._enter("get_parameters", config)
        return list(self.current)

    def get_properties(self, config: Config) -> Mapping[str, ConfigValue]:
        self._enter("get_properties", config)
        return {**_echo(config), "conformance.model": MODEL_NAME}


def client_from_env(model: Client, env: Mapping[str, str]) -> ReferenceClient:
    """A reference client configured by Annex C's environment variables."""
    server = env.get("POLLEN_CONFORMANCE_SERVER", "")
    root_cert = env.get("POLLEN_CONFORMANCE_ROOT_CERT") or None
    insecure = env.get("POLLEN_CONFORMANCE_INSECURE") == "1"
    if insecure == (root_cert is not None):
        raise ValueError(
            "set exactly one of POLLEN_CONFORMANCE_ROOT_CERT and POLLEN_CONFORMANCE_INSECURE=1"
        )
    return ReferenceClient(
        model,
        server=server,
        node_id=env.get("POLLEN_CONFORMANCE_NODE_ID") or None,
        root_cert=root_cert,
        insecure=insecure,
    )


def main(model: Client | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [{env.get('POLLEN_CONFORMANCE_CASE', '-')}] "
        "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        runner = client_from_env(model if model is not None else ConformanceModel(), env)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = runner.stop_event

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # PLN-CNF-006: SIGTERM ends the program through the client's own stop path.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
