"""Flower (flwr 1.42) side of bench_simulation.py; runs inside the flwr virtual environment.

The same workload as _pollen_sim.py on the incumbent's recommended simulation path:
`flwr.simulation.run_simulation` (Ray backend, one CPU per virtual SuperNode), a Message
API ClientApp whose train returns the received arrays + 0.01, and the Message API FedAvg
sampling every node every round. A round is timed from configure_train (sampling) to the
end of aggregate_train. Prints one JSON line. Imports nothing from Pollen.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
from _common import model
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

STEP = np.float32(0.01)
ap = argparse.ArgumentParser()
ap.add_argument("--clients", type=int, default=100)
ap.add_argument("--params", type=int, default=100_000)
ap.add_argument("--arrays", type=int, default=10)
ap.add_argument("--rounds", type=int, default=3)
ARGS = ap.parse_args()
MARKS: dict[str, list[float]] = {"start": [], "end": [], "replies": []}
OUTCOME: dict[str, bool] = {}


class MarkedFedAvg(FedAvg):
    """FedAvg that notes when each round starts sampling and ends aggregating."""

    def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        MARKS["start"].append(time.time())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        replies = list(replies)
        MARKS["replies"].append(len(replies))
        result = super().aggregate_train(server_round, replies)
        MARKS["end"].append(time.time())
        return result


clients = ClientApp()


@clients.train()
def train(msg: Message, context: Context) -> Message:
    arrays = [a + STEP for a in msg.content["arrays"].to_numpy_ndarrays()]
    reply = RecordDict(
        {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content=reply, reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    start = model(ARGS.params, ARGS.arrays)
    strategy = MarkedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=ARGS.clients,
        min_available_nodes=ARGS.clients,
    )
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(start), num_rounds=ARGS.rounds, timeout=1800
    )
    final = result.arrays.to_numpy_ndarrays()
    OUTCOME["correct"] = all(
        np.allclose(a, s + STEP * ARGS.rounds, atol=1e-4) for a, s in zip(final, start, strict=True)
    )


if __name__ == "__main__":
    run_simulation(
        server_app=server,
        client_app=clients,
        num_supernodes=ARGS.clients,
        backend_config={
            "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
            # Loopback only, and no dashboard: the machine is shared.
            "init_args": {"_node_ip_address": "127.0.0.1", "include_dashboard": False},
        },
    )
    rounds = [end - start for start, end in zip(MARKS["start"], MARKS["end"], strict=False)]
    record = {
        "bench": "simulation_inner",
        "impl": "flwr-ray",
        "clients": ARGS.clients,
        "params": ARGS.params,
        "rounds": ARGS.rounds,
        "round_s": [round(r, 4) for r in rounds],
        "replies": MARKS["replies"],
        "startup_s": round(MARKS["start"][0] - T0, 3) if MARKS["start"] else None,
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
        "correct": OUTCOME.get("correct", False),
    }
    print(json.dumps(record), flush=True)
