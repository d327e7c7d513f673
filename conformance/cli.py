"""`pollen conformance`: run the conformance suite against a program, or list its cases.

    pollen conformance client [--report-dir DIR] [--known-failing FILE] [--run PATTERN]
                              [--strict] [--jobs N] -- CMD ARGS...
    pollen conformance codec [--report-dir DIR] [--known-failing FILE] [--run PATTERN]
                             [--strict] -- CMD ARGS...
    pollen conformance server [--report-dir DIR] [--known-failing FILE] [--run PATTERN]
                              [--strict] [--jobs N] -- CMD ARGS...
    pollen conformance list [--role client|server]
    pollen conformance coverage

Exit status: 0 the program conforms, 1 a conformance failure (or a stale known-failing
entry), 2 a harness or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from conformance import coverage, server_runner
from conformance.cases import (
    CaseError,
    KnownFailing,
    load_cases,
    matches,
    read_known_failing,
    requirement_texts,
    select,
)
from conformance.client_runner import (
    DEFAULT_GRACE_S,
    CaseResult,
    RunOptions,
    play_all,
    validate,
)
from conformance.codec_runner import play_vectors, vectors
from conformance.model import ModelError
from conformance.report import EXIT_HARNESS, judge, write_reports

PROG = "pollen conformance"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Check that a Pollen implementation in any language speaks protocol v1.",
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    client = sub.add_parser(
        "client",
        help="judge a client program: CMD runs once per case (see conformance/README.md)",
    )
    client.add_argument("--report-dir", type=Path, default=Path("conformance-report"))
    client.add_argument(
        "--known-failing",
        type=Path,
        help="file of case-name patterns expected to fail, one a line (# comments)",
    )
    client.add_argument(
        "--run", action="append", default=[], metavar="PATTERN", help="only matching cases"
    )
    client.add_argument(
        "--strict", action="store_true", help="SHOULD and MAY failures fail the run"
    )
    client.add_argument("--jobs", type=int, default=4, help="cases run at once (default 4)")
    client.add_argument(
        "--grace-ms",
        type=int,
        default=int(DEFAULT_GRACE_S * 1000),
        help="spare time on every upper time bound (default %(default)s)",
    )
    client.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    server = sub.add_parser(
        "server",
        help="judge a server program: CMD is started once per case (Annex C.5)",
    )
    server.add_argument("--report-dir", type=Path, default=Path("conformance-report"))
    server.add_argument("--known-failing", type=Path)
    server.add_argument("--run", action="append", default=[], metavar="PATTERN")
    server.add_argument("--strict", action="store_true")
    server.add_argument("--jobs", type=int, default=3)
    server.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    codec = sub.add_parser(
        "codec",
        help="judge a codec program: CMD reads the golden vectors as framed JSON on stdin",
    )
    codec.add_argument("--report-dir", type=Path, default=Path("conformance-report"))
    codec.add_argument("--known-failing", type=Path)
    codec.add_argument("--run", action="append", default=[], metavar="PATTERN")
    codec.add_argument("--strict", action="store_true")
    codec.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    listing = sub.add_parser("list", help="print the cases and the requirement ids they cover")
    listing.add_argument("--role", default="client", choices=["client", "server"])
    sub.add_parser("coverage", help="check that every MUST requirement has a case or exemption")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.mode == "list":
            return _list(args.role)
        if args.mode == "coverage":
            return coverage.main()
        if args.mode == "server":
            return _server(args, parser)
        if args.mode == "codec":
            return _codec(args, parser)
        return _client(args, parser)
    except (CaseError, ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_HARNESS


def _list(role: str) -> int:
    for case in load_cases(role):
        requires = f"  requires {', '.join(case.requires)}" if case.requires else ""
        print(f"{case.name:<48} {case.level:<6} {' '.join(case.requirements)}{requires}")
    return 0


def _command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("give the program to test after --, for example: -- ./my-client")
    return command


def _report(
    args: argparse.Namespace,
    mode: str,
    command: Sequence[str],
    results: Sequence[CaseResult],
    *,
    known: Sequence[KnownFailing],
    started: float,
) -> int:
    """Judge the results, write the reports, print the summary; the run's exit status."""
    summary = judge(results, known, strict=args.strict)
    text = write_reports(
        args.report_dir,
        summary,
        mode=mode,
        command=command,
        texts=requirement_texts(),
        wall_s=time.monotonic() - started,
    )
    print(text, end="")
    return summary.exit_status


def _server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = _command(args, parser)
    cases = select(load_cases("server"), args.run)
    if not cases:
        print("error: no case matches --run", file=sys.stderr)
        return EXIT_HARNESS
    for case in cases:
        server_runner.validate(case)
    known = read_known_failing(args.known_failing) if args.known_failing else ()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pollen-conformance-") as scratch:
        results = asyncio.run(server_runner.play_all(cases, command, Path(scratch), jobs=args.jobs))
    return _report(args, "server", command, results, known=known, started=started)


def _codec(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = _command(args, parser)
    chosen = [
        v for v in vectors() if not args.run or any(matches(p, v.case.name) for p in args.run)
    ]
    if not chosen:
        print("error: no vector matches --run", file=sys.stderr)
        return EXIT_HARNESS
    known = read_known_failing(args.known_failing) if args.known_failing else ()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pollen-conformance-") as scratch:
        results = asyncio.run(play_vectors(chosen, command, Path(scratch)))
    return _report(args, "codec", command, results, known=known, started=started)


def _client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = _command(args, parser)
    cases = select(load_cases("client"), args.run)
    if not cases:
        print("error: no case matches --run", file=sys.stderr)
        return EXIT_HARNESS
    for case in cases:
        validate(case)
    known = read_known_failing(args.known_failing) if args.known_failing else ()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pollen-conformance-") as scratch:
        workdir = Path(scratch)
        tls = None
        if any("tls" in c.handshake for c in cases):
            # Only runs with TLS cases need `cryptography` (a heavy import).
            from conformance.tls import make_tls_files  # noqa: PLC0415

            tls = make_tls_files(workdir)
        options = RunOptions(
            command=tuple(command),
            workdir=workdir,
            jobs=args.jobs,
            grace_s=args.grace_ms / 1000,
            tls=tls,
        )
        results = asyncio.run(play_all(cases, options))
    return _report(args, "client", command, results, known=known, started=started)


if __name__ == "__main__":
    sys.exit(main())
