"""Real processes for integration tests: a server and clients, on 127.0.0.1 port 0.

Every process starts in its own session and is registered with a `Processes` instance,
which kills any survivor by process group at the end of the test. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pollen.tensors import decode_tensor
from reference_server.store import Store

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps.py"
_LISTENING = re.compile(r"listening on (\S+)")


def toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML document from section -> key -> value (str, bool, int, float or flat dict)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    address: str
    log: Path
    state_dir: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"server log never matched {pattern!r}:\n{self.text()[-3000:]}")


class Processes:
    """Starts servers and clients and guarantees they are gone afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def _spawn(
        self, args: list[str], log: Path, env: Mapping[str, str] | None
    ) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env,
                start_new_session=True,
            )  # fmt: skip
        self.started.append(proc)
        return proc

    def server(
        self,
        config: Mapping[str, Mapping[str, Any]],
        *,
        name: str = "server",
        env: Mapping[str, str] | None = None,
        extra: tuple[str, ...] = ("--insecure",),
        wait: bool = True,
        state: str = "state",
    ) -> Server:
        state_dir = self.tmp / state
        sections = {k: dict(v) for k, v in config.items()}
        sections.setdefault("server", {})
        sections["server"] = {
            "address": "127.0.0.1:0",
            "state_dir": str(state_dir),
            **sections["server"],
        }
        path = self.tmp / f"{name}.toml"
        path.write_text(toml(sections))
        log = self.tmp / f"{name}.log"
        proc = self._spawn(
            [sys.executable, "-m", "pollen_cli", "server", "--config", str(path), *extra], log, env
        )
        server = Server(proc=proc, address="", log=log, state_dir=state_dir)
        if wait:
            server.address = server.wait_for(_LISTENING.pattern, timeout=60).group(1)
        return server

    def client(
        self,
        address: str,
        node_id: str,
        *,
        mode: str = "",
        extra: tuple[str, ...] = ("--insecure",),
        app: str = "make_client",
    ) -> subprocess.Popen[bytes]:
        log = self.tmp / f"client-{node_id}.log"
        args = [
            sys.executable, "-m", "pollen_cli", "client", "--app", f"{APPS}:{app}",
            "--server", address, "--node-id", node_id, *extra,
        ]  # fmt: skip
        return self._spawn(args, log, {"POLLEN_TEST_APP_MODE": mode, "POLLEN_TEST_NODE": node_id})

    def client_log(self, node_id: str) -> str:
        return (self.tmp / f"client-{node_id}.log").read_text(errors="replace")

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    return [p.wait(timeout=max(0.1, deadline - time.monotonic())) for p in procs]


def committed_rounds(state_dir: Path, run_id: str = "run") -> list[Any]:
    with Store(state_dir) as store:
        return store.state.rounds(run_id)


def final_model(state_dir: Path, run_id: str = "run") -> list[np.ndarray]:
    """The last committed model, as independent arrays (the store is closed afterwards)."""
    with Store(state_dir) as store:
        last = store.state.last_round(run_id)
        assert last is not None
        return [np.array(decode_tensor(t)) for t in store.load_tensors(last.parameters)]
