"""The reference server under Annex C.5's conformance configuration.

    POLLEN_CONFORMANCE_ADDRESS=127.0.0.1:PORT POLLEN_CONFORMANCE_STATE_DIR=DIR \\
        POLLEN_CONFORMANCE_CONFIGURATION=train POLLEN_CONFORMANCE_INSECURE=1 \\
        python -m reference_server.conformance

(or POLLEN_CONFORMANCE_CERT, _KEY and _CLIENT_CA instead of _INSECURE: mutual TLS with node
ids bound to client certificates)

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


#: Annex C.5's configurations, by the name POLLEN_CONFORMANCE_CONFIGURATION gives.
CONFIGURATIONS = ("train", "evaluate", "analytics")


def config_text(
    address: str,
    state_dir: Path,
    model: Path,
    *,
    insecure: bool,
    configuration: str = "train",
    tls: tuple[str, str, str] | None = None,
) -> str:
    """The server's TOML for a configuration; `tls`: (cert, key, client CA) for mutual TLS
    with node ids bound to client certificates."""
    phase = """
fraction = 1.0
min_clients = 2
min_results = 1
timeout_s = 10.0
config = { "conformance.delta" = 1 }
"""
    if configuration == "analytics":
        run = 'kind = "analytics"'
        phases = f'[query]{phase}reduce = {{ count = "sum" }}\nshapes = [[4]]\n'
    else:
        run = f'initial_model = "{model}"'
        phases = f"[fit]{phase}"
        if configuration == "evaluate":
            phases += f"\n[evaluate]{phase}"
    transport = ""
    if tls is not None:
        cert, key, client_ca = tls
        transport = (
            f'tls_cert = "{cert}"\ntls_key = "{key}"\nclient_ca = "{client_ca}"\n'
            "bind_node_ids = true\n"
        )
    return f"""
[server]
address = "{address}"
state_dir = "{state_dir}"
insecure = {"true" if insecure else "false"}
{transport}max_poll_wait_s = 2.0
heartbeat_interval_s = 1.0
session_timeout_s = 4.0
shutdown_grace_s = 2.0

[run]
id = "conformance"
rounds = 2
min_available_clients = 2
start_timeout_s = 60.0
on_quorum_missed = "fail"
{run}

{phases}
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
    configuration = env.get("POLLEN_CONFORMANCE_CONFIGURATION", "train")
    if configuration not in CONFIGURATIONS:
        print(f"error: POLLEN_CONFORMANCE_CONFIGURATION must be one of {', '.join(CONFIGURATIONS)}")
        return 2
    tls = tuple(env.get(f"POLLEN_CONFORMANCE_{name}", "") for name in ("CERT", "KEY", "CLIENT_CA"))
    if any(tls) and (insecure or not all(tls)):
        print(
            "error: set POLLEN_CONFORMANCE_CERT, _KEY and _CLIENT_CA together, "
            "without POLLEN_CONFORMANCE_INSECURE"
        )
        return 2
    text = config_text(
        address,
        state_dir / "state",
        model,
        insecure=insecure,
        configuration=configuration,
        tls=(tls[0], tls[1], tls[2]) if all(tls) else None,
    )
    try:
        config = parse_config(text)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
