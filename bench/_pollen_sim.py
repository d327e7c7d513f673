"""One Pollen simulation run of the benchmark workload; prints one JSON line.

    .venv/bin/python bench/_pollen_sim.py --clients 1000 [--params 100000] [--rounds 3]
        [--engine in-process|ray]

Every virtual client is sampled every round; fit returns the received parameters + 0.01
(no training), so the time measured is the framework's own: dispatch, encoding,
validation and FedAvg. Launched in a fresh process by bench_simulation.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

T0 = float(os.environ.get("BENCH_T0", time.time()))

import _common  # noqa: E402
import numpy as np  # noqa: E402

from pollen.client import Client, FitResult  # noqa: E402
from pollen.values import Config  # noqa: E402
from reference_server.simulation import (  # noqa: E402
    Executor,
    InProcessExecutor,
    RayExecutor,
    RayOptions,
    RoundReport,
    SimulationApp,
    SimulationConfig,
    simulate,
)

STEP = np.float32(0.01)


class PlusClient(Client):
    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> FitResult:
        return FitResult(parameters=[p + STEP for p in parameters], num_examples=1)


def plus_client(index: int) -> Client:
    return PlusClient()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--arrays", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", choices=["in-process", "ray"], default="in-process")
    args = ap.parse_args()
    model = _common.model(args.params, args.arrays)
    app = SimulationApp(client_factory=plus_client, initial_parameters=model)
    started = time.time()
    executor: Executor
    if args.engine == "ray":
        executor = RayExecutor(
            plus_client,
            RayOptions(init_args={"_node_ip_address": "127.0.0.1", "log_to_driver": False}),
        )
    else:
        executor = InProcessExecutor(plus_client)
    ready = time.time()
    rounds: list[RoundReport] = []
    try:
        result = simulate(
            app,
            SimulationConfig(clients=args.clients, rounds=args.rounds),
            executor=executor,
            on_round=rounds.append,
        )
    finally:
        executor.close()
    expected = [m + STEP * args.rounds for m in model]
    correct = all(
        np.allclose(a, e, atol=1e-4) for a, e in zip(result.parameters, expected, strict=True)
    )
    record: dict[str, Any] = {
        "bench": "simulation_inner",
        "impl": f"pollen-{args.engine}",
        "clients": args.clients,
        "params": args.params,
        "rounds": args.rounds,
        "round_s": [round(r.duration_s, 4) for r in rounds],
        "replies": [r.phases["fit_attempt_1"]["accepted"] for r in rounds],
        "startup_s": round(ready - T0, 3),
        "engine_start_s": round(ready - started, 3),
        "self_peak_rss_mb": round(result.peak_rss_bytes / 1e6, 1),
        "correct": correct,
    }
    print(json.dumps(record), flush=True)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
