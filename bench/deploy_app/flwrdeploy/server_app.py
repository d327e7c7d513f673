"""ServerApp: Message-API FedAvg over every SuperNode, timed per round.

Appends one JSON line per round and a final line to the run-config `out-file` (the driver,
bench/bench_deploy.py, reads it). Round = configure_train start -> aggregate_train end,
with fraction_evaluate = 0, the same definition as the legacy path and as Pollen's.
"""

import json
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


def _model(params: int, arrays: int) -> list[np.ndarray]:
    # Same values as bench/_common.py's model(); the FAB carries only this package.
    rng = np.random.default_rng(0)
    per = params // arrays
    sizes = [per] * (arrays - 1) + [params - per * (arrays - 1)]
    return [
        rng.standard_normal(s, dtype=np.float32).reshape(-1, 100 if s % 100 == 0 else 1)
        for s in sizes
    ]


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = str(cfg["out-file"])
    params, arrays = int(cfg["num-params"]), int(cfg["num-arrays"])
    rounds, nodes, timeout = int(cfg["num-rounds"]), int(cfg["min-nodes"]), float(cfg["timeout"])
    started: dict[int, float] = {}

    def emit(**fields: Any) -> None:
        with open(out, "a") as f:
            f.write(json.dumps(fields) + "\n")

    class TimedFedAvg(FedAvg):
        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            started[server_round] = time.time()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, Any]:
            replies = list(replies)
            result = super().aggregate_train(server_round, replies)
            emit(
                event="round",
                round=server_round,
                round_s=round(time.time() - started[server_round], 4),
                results=sum(not m.has_error() for m in replies),
                failures=[str(m.error)[:300] for m in replies if m.has_error()],
            )
            return result

    try:
        # Like the legacy path and Pollen, start round 1 only once every node is connected,
        # so that no side counts process start-up in its round times.
        deadline = time.time() + timeout
        while len(list(grid.get_node_ids())) < nodes:
            if time.time() > deadline:
                raise TimeoutError(f"fewer than {nodes} SuperNodes after {timeout} s")
            time.sleep(0.2)
        initial = _model(params, arrays)
        expected = [a.ravel()[:1000] + np.float32(0.01 * rounds) for a in initial]
        strategy = TimedFedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=nodes,
            min_evaluate_nodes=0,
            min_available_nodes=nodes,
        )
        t0 = time.time()
        result = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=rounds, timeout=timeout
        )
        final = result.arrays.to_numpy_ndarrays()
        correct = all(
            np.allclose(got.ravel()[:1000], want, atol=1e-4)
            for got, want in zip(final, expected, strict=True)
        )
        emit(event="done", ok=True, correct=correct, wall_s=round(time.time() - t0, 3))
    except Exception:
        emit(event="done", ok=False, error=traceback.format_exc()[-4000:])
        print(traceback.format_exc(), file=sys.stderr)
        raise
