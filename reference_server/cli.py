"""`pollen server`: run the reference server from a TOML configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pollen.errors import PollenError
from reference_server.config import ConfigError, describe_options, load_config
from reference_server.server import serve
from reference_server.store.errors import StoreError

EXAMPLE = """\
example server.toml:
  [server]
  address = "0.0.0.0:8443"
  tls_cert = "server.pem"
  tls_key = "server.key"
  [run]
  rounds = 10
  min_available_clients = 10
  [fit]
  fraction = 0.5
  min_clients = 5
  min_results = 4
  timeout_s = 300
  config = { lr = 0.05, local_epochs = 1 }
  [strategy]
  name = "fedadam"
  eta = 0.01
"""


def main(argv: Sequence[str] | None = None, *, prog: str = "pollen server") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the Pollen reference server. State is durable: a restarted server "
        "resumes its run after the last committed round.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"configuration keys (TOML), with defaults:\n{describe_options()}\n\n{EXAMPLE}",
    )
    parser.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    parser.add_argument("--address", help="override [server] address (host:port)")
    parser.add_argument("--state-dir", help="override [server] state_dir")
    parser.add_argument(
        "--insecure", action="store_true", help="serve plaintext without TLS (not for production)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {
        key: value
        for key, value in {
            "address": args.address,
            "state_dir": args.state_dir,
            "insecure": True if args.insecure else None,
        }.items()
        if value is not None
    }
    try:
        config = load_config(args.config, overrides={"server": overrides})
        return asyncio.run(serve(config))
    except (ConfigError, StoreError, PollenError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
