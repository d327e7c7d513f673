"""Server mode: scripted clients against a server under test (spec Annex C.5).

For every case the runner starts a fresh process of the server command with Annex C.5's
environment (a free port on 127.0.0.1 and an empty state folder), waits until it accepts
connections, and plays the case's scenarios as one or more clients. The scenarios are the
functions of `conformance.server_scenarios`, named by the cases' steps, written with the
scripted clients of `conformance.server_play`; the judge is what the server answers, with
which typed error, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from conformance.cases import Case
from conformance.client_runner import CaseFailed, CaseResult, Failure, TlsFiles
from conformance.server_play import (
    NODES,
    START_TIMEOUT_S,
    Play,
    client_credentials,
    open_channel,
)
from conformance.server_scenarios import CONFIGURATION, MUTUAL_TLS, SCENARIOS


def configuration(case: Case) -> str:
    return CONFIGURATION.get(str(case.steps[0]["scenario"]), "train") if case.steps else "train"


def validate(case: Case) -> None:
    for step in case.steps:
        if set(step) != {"scenario"} or step["scenario"] not in SCENARIOS:
            raise ValueError(
                f"{case.name}: a server step is {{scenario: one of {sorted(SCENARIOS)}}}"
            )
        if CONFIGURATION.get(step["scenario"], "train") != configuration(case):
            raise ValueError(f"{case.name}: its scenarios need different configurations")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ready(
    address: str, proc: asyncio.subprocess.Process, tls: TlsFiles | None = None
) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.returncode is None:
        async with open_channel(address, client_credentials(tls, "conformance-a")) as channel:
            with contextlib.suppress(asyncio.TimeoutError, grpc.aio.AioRpcError):
                await asyncio.wait_for(channel.channel_ready(), timeout=1.0)
                return True
        await asyncio.sleep(0.1)
    return False


def _environment(
    case: Case, address: str, state: Path, workdir: Path
) -> tuple[dict[str, str], TlsFiles | None]:
    """Annex C.5's variables for the case, and the TLS files of a mutual-TLS case."""
    env = {
        **os.environ,
        "POLLEN_CONFORMANCE_ADDRESS": address,
        "POLLEN_CONFORMANCE_STATE_DIR": str(state),
        "POLLEN_CONFORMANCE_CONFIGURATION": configuration(case),
        "POLLEN_CONFORMANCE_CASE": case.name,
    }
    if not any(step["scenario"] in MUTUAL_TLS for step in case.steps):
        env["POLLEN_CONFORMANCE_INSECURE"] = "1"
        return env, None
    from conformance.tls import make_tls_files  # noqa: PLC0415 - the conformance extra

    tls = make_tls_files(Path(tempfile.mkdtemp(prefix="tls-", dir=workdir)), clients=NODES)
    env["POLLEN_CONFORMANCE_CERT"] = str(tls.server_cert)
    env["POLLEN_CONFORMANCE_KEY"] = str(tls.server_key)
    env["POLLEN_CONFORMANCE_CLIENT_CA"] = str(tls.ca)
    return env, tls


async def play(case: Case, command: Sequence[str], workdir: Path) -> CaseResult:
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
    log_path = workdir / (case.name.replace("/", "__") + ".log")
    address = f"127.0.0.1:{_free_port()}"
    env, tls = _environment(case, address, state, workdir)

    async def launch() -> asyncio.subprocess.Process:
        with log_path.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    proc = await launch()
    run = Play(case, address, tls)

    async def crash_and_restart() -> bool:
        """SIGKILL the server (a crash), then start the same command on the same state."""
        nonlocal proc
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout=10.0)
        proc = await launch()
        return await _ready(address, proc, tls)

    run.restart = crash_and_restart

    def terminate() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    run.terminate = terminate
    outcome, note = "PASS", ""
    try:
        if not await _ready(address, proc, tls):
            outcome, note = (
                "ERROR",
                f"the server did not listen on {address} within {START_TIMEOUT_S:.0f} s",
            )
        else:
            for index, step in enumerate(case.steps):
                await asyncio.wait_for(
                    SCENARIOS[step["scenario"]](run, f"step {index + 1} ({step['scenario']})"),
                    timeout=case.timeout_s,
                )
    except CaseFailed:
        pass
    except TimeoutError:
        run.failures.append(
            Failure(step="case", expected=f"done within {case.timeout_s:.0f} s", actual="timed out")
        )
    except Exception as exc:  # a harness defect: never a verdict on the server
        outcome, note = "ERROR", f"{type(exc).__name__}: {exc}"
    finally:
        await run.close()
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            if proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=wait)
    if run.failures and outcome != "ERROR":
        outcome = "FAIL"
    tail = log_path.read_bytes()[-4000:].decode(errors="replace") if log_path.exists() else ""
    return CaseResult(
        case=case,
        outcome=outcome,
        failures=tuple(run.failures),
        duration_s=time.monotonic() - started,
        exit_status=proc.returncode,
        output_tail=tail,
        note=note,
    )


async def play_all(
    cases: Sequence[Case], command: Sequence[str], workdir: Path, *, jobs: int
) -> list[CaseResult]:
    gate = asyncio.Semaphore(max(1, jobs))

    async def one(case: Case) -> CaseResult:
        async with gate:
            return await play(case, command, workdir)

    return list(await asyncio.gather(*(one(c) for c in cases)))
