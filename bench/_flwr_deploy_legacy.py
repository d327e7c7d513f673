"""Incumbent side of the deployment benchmark, legacy gRPC path: server or client process.

Runs in the flwr virtual environment (bench/.venv-flwr), started by `bench_deploy.py`:

    python _flwr_deploy_legacy.py server --port P --clients 10 --params 10000000 --rounds 3
    python _flwr_deploy_legacy.py client --server 127.0.0.1:P

The server is `flwr.server.start_server` (gRPC bidirectional stream, deprecated since flwr
1.13 but still shipped in 1.42) with the legacy FedAvg, bound to 127.0.0.1; the client is
`flwr.client.start_client` with a NumPyClient whose fit returns parameters + 0.01 and one
example, like Pollen's benchmark client. The server prints one JSON line per round (round =
configure_fit start -> aggregate_fit end) and a final line with a correctness check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

# Keep Flower from phoning home before it is imported (there is no network here anyway).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import numpy as np
from _common import model  # this file's folder is on sys.path
from flwr.client import NumPyClient, start_client
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def server(args: argparse.Namespace) -> int:
    initial = model(args.params, args.arrays)
    expected = [a.ravel()[:1000] + np.float32(0.01 * args.rounds) for a in initial]
    parameters = ndarrays_to_parameters(initial)
    del initial  # the server keeps only the serialized model, as a real deployment would
    started: dict[int, float] = {}
    final: list[Any] = []

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            # Start the clock once every client is connected: Pollen's round clock also
            # starts only when min_available_clients are there, so neither side counts
            # process start-up and connection in round 1.
            client_manager.wait_for(self.min_available_clients, timeout=args.timeout)
            started[server_round] = time.time()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, results, failures)
            emit(
                event="round",
                round=server_round,
                round_s=round(time.time() - started[server_round], 4),
                results=len(results),
                failures=[repr(f)[:300] for f in failures],
            )
            final[:] = [out[0]]
            return out

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.clients,
        min_evaluate_clients=0,
        min_available_clients=args.clients,
        initial_parameters=parameters,
    )
    t0 = time.time()
    start_server(
        server_address=f"127.0.0.1:{args.port}",
        config=ServerConfig(num_rounds=args.rounds, round_timeout=args.timeout),
        strategy=strategy,
    )
    correct = bool(final) and all(
        np.allclose(got.ravel()[:1000], want, atol=1e-4)
        for got, want in zip(parameters_to_ndarrays(final[0]), expected, strict=True)
    )
    emit(event="done", wall_s=round(time.time() - t0, 3), correct=correct)
    return 0


def client(args: argparse.Namespace) -> int:
    class Bench(NumPyClient):
        def fit(self, parameters: list[Any], config: Any) -> tuple[list[Any], int, dict[str, Any]]:
            return [p + np.float32(0.01) for p in parameters], 1, {}

    start_client(
        server_address=args.server,
        client=Bench().to_client(),
        insecure=True,
        max_retries=30,
        max_wait_time=60,
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--clients", type=int, default=10)
    srv.add_argument("--params", type=int, default=10_000_000)
    srv.add_argument("--arrays", type=int, default=10)
    srv.add_argument("--rounds", type=int, default=3)
    srv.add_argument("--timeout", type=float, default=900)
    cli = sub.add_parser("client")
    cli.add_argument("--server", required=True)
    args = ap.parse_args()
    return server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
