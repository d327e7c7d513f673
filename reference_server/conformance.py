"""The reference server under Annex C.5's conformance configuration.

    POLLEN_CONFORMANCE_ADDRESS=127.0.0.1:PORT POLLEN_CONFORMANCE_STATE_DIR=DIR \\
        POLLEN_CONFORMANCE_INSECURE=1 python -m reference_server.conformance

`pollen conformance server -- python -m reference_server.conformance` starts it once per case.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reference_server.config import ConfigError, parse_config
from reference_server.server import serve


def initial_model() -> list[np.ndarray]:
    """Annex C.5's initial global model."""
    return [
        np.arange(4, dtype=np.float32),
        np.arange(20000, dtype=np.float32),
    ]


def config_text(address: str, state_dir: Path, model: Path, *, insecure: bool) -> str:
    return f"""
[server]
address = "{address}"
state_dir = "{state_dir}"
insecure = {"true" if insecure else "false"}
max_poll_wait_s = 2.0
heartbeat_interval_s = 1.0
session_timeout_s = 4.0
shutdown_grace_s = 2.0

[run]
id = "conformance"
rounds = 2
min_available_clients = 2
start_timeout_s = 60.0
on_quorum_missed = "fail"
initial_model = "{model}"

[fit]
fraction = 1.0
min_clients = 2
min_results = 1
timeout_s = 10.0
config = {{ "conformance.delta" = 1 }}

[strategy]
name = "fedavg"
"""


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    address = env.get("POLLEN_CONFORMANCE_ADDRESS", "")
    state_dir = Path(env.get("POLLEN_CONFORMANCE_STATE_DIR", ""))
    if not address or not state_dir.is_dir():
        print("error: set POLLEN_CONFORMANCE_ADDRESS and POLLEN_CONFORMANCE_STATE_DIR (a folder)")
        return 2
    model = state_dir / "conformance-initial-model.npz"
    np.savez(model, *initial_model())
    insecure = env.get("POLLEN_CONFORMANCE_INSECURE") == "1"
    try:
        config = parse_config(config_text(address, state_dir / "state", model, insecure=insecure))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
