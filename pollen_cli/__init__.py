"""The `pollen` command: one entry point for the server, the client and the tools.

Subcommands import their package only when chosen, so `pollen client` does not load the
server and the other way round.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

COMMANDS = {
    "server": ("reference_server.cli", "run a federated training or analytics job"),
    "client": ("reference_client.cli", "run a client application against a server"),
    "conformance": ("conformance.cli", "check a client, server or codec against protocol v1"),
    "simulate": (
        "reference_server.simulation.cli",
        "simulate many clients on one machine (or Ray)",
    ),
}

# Optional packages some commands import, and the extra that installs each.
EXTRAS = {"yaml": "conformance", "cryptography": "conformance"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pollen",
        description="Pollen: federated learning over a language-neutral protocol.",
        epilog="Run `pollen COMMAND --help` for the options of a command.",
    )
    parser.add_argument(
        "command",
        choices=sorted(COMMANDS),
        help="; ".join(f"{name}: {text}" for name, (_, text) in sorted(COMMANDS.items())),
    )
    if not args or args[0] not in COMMANDS:
        parser.parse_args(args[:1] or ["--help"])
        return 2
    module_name = COMMANDS[args[0]][0]
    try:
        module = __import__(module_name, fromlist=["main"])
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(exc.name or "")
        if extra is None:
            raise
        print(
            f"pollen {args[0]}: needs {exc.name}: pip install 'pollen-fl[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return int(module.main(args[1:], prog=f"pollen {args[0]}"))
