"""`python -m reference_client`: run a Pollen client application against a server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from reference_client.app import AppLoadError, load_app
from reference_client.runner import ReferenceClient

PROG = "python -m reference_client"
EXAMPLES = """\
examples:
  {prog} --app my_app:make_client --server fl.example.org:443 \\
      --root-cert ca.pem --node-id-file ~/.pollen/node-id
  {prog} --app ./client.py:MyClient --server 127.0.0.1:8080 --insecure

The client runs until the server sends a shutdown instruction (exit status 0), until it
receives SIGTERM or SIGINT (it leaves its session, exit status 0), or until an error it
cannot recover from (exit status 1). Bad arguments exit with status 2.
"""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a pollen.Client application as a node of a Pollen federation.",
        epilog=EXAMPLES.format(prog=prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--app",
        required=True,
        metavar="MODULE:ATTR",
        help="the application: a pollen.Client instance, subclass or zero-argument factory, "
        "as MODULE:ATTR (an importable module) or PATH/FILE.py:ATTR",
    )
    parser.add_argument(
        "--server", required=True, metavar="HOST:PORT", help="address of the Pollen server"
    )
    security = parser.add_mutually_exclusive_group()
    security.add_argument(
        "--insecure",
        action="store_true",
        help="connect in plaintext, without TLS (local development only)",
    )
    security.add_argument(
        "--root-cert",
        metavar="CA.pem",
        help="PEM file of the CA certificates trusted to sign the server's certificate "
        "(default: the system's trust store)",
    )
    parser.add_argument(
        "--cert", metavar="CERT.pem", help="client certificate (PEM) for mutual TLS; needs --key"
    )
    parser.add_argument(
        "--key", metavar="KEY.pem", help="private key (PEM) of --cert for mutual TLS"
    )
    identity = parser.add_mutually_exclusive_group()
    identity.add_argument(
        "--node-id",
        metavar="ID",
        help="the node's identity: 1 to 128 characters of A-Z a-z 0-9 . _ : -",
    )
    identity.add_argument(
        "--node-id-file",
        metavar="PATH",
        help="file holding the node's identity, created with a random one on first use so "
        "that restarts keep it (default without either option: a new id per process)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="logging threshold (default: INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the client CLI; `prog` names the command in messages (`pollen client`)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.insecure and args.cert:
        parser.error("--cert and --key need TLS; drop --insecure")
    stop = threading.Event()
    try:
        client = load_app(args.app)
        runner = ReferenceClient(
            client,
            server=args.server,
            node_id=args.node_id,
            node_id_file=args.node_id_file,
            root_cert=args.root_cert,
            client_cert=args.cert,
            client_key=args.key,
            insecure=args.insecure,
            stop=stop,
        )
    except (AppLoadError, OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _handle_signals(stop)
    return runner.run()


def _handle_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the client to leave and stop; a second one ends it at once."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        logging.getLogger("reference_client").info(
            "%s received: leaving", signal.Signals(signum).name
        )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
