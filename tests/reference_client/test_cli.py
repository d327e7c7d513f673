"""`python -m reference_client` in a subprocess, loading apps, and node identity."""

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pollen.client import Client
from pollen.errors import InvalidArgument
from reference_client import AppLoadError, load_app
from reference_client.cli import build_parser
from reference_client.identity import resolve_node_id
from tests.reference_client.fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[2]
APP = textwrap.dedent(
    """
    from pollen.client import Client, FitResult

    class App(Client):
        def fit(self, parameters, config):
            return FitResult(parameters=parameters, num_examples=1)

    instance = App()

    def make():
        return App()

    not_a_client = 42
    """
)


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; each is killed by its pid if it is still running."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reference_client", *args]


def test_help_documents_every_option() -> None:
    done = subprocess.run(
        _cli("--help"), capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 0
    for option in build_parser()._option_string_actions:
        assert option in done.stdout
    for word in ("MODULE:ATTR", "HOST:PORT", "SIGTERM", "mutual TLS", "plaintext"):
        assert word in done.stdout


def test_bad_arguments_exit_with_status_2(app_file: Path) -> None:
    done = subprocess.run(
        _cli("--app", f"{app_file}:nope", "--server", "127.0.0.1:1", "--insecure"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "no attribute" in done.stderr


def test_sigterm_while_idle_leaves_and_exits_0(
    server: FakeServer, app_file: Path, tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    node_file = tmp_path / "node-id"
    process = subprocess.Popen(
        _cli(
            "--app",
            f"{app_file}:App",
            "--server",
            server.address,
            "--insecure",
            "--node-id-file",
            str(node_file),
            "--log-level",
            "debug",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spawn.append(process)
    server.wait_calls("PollTask", timeout=30)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    leave = server.calls_of("Leave")[-1].request
    assert leave.reason == 1  # CLIENT_STOPPING
    assert server.calls_of("Handshake")[0].request.node_id == node_file.read_text().strip()
    assert "plaintext" in stderr  # the operator is told (PLN-SEC-001)


@pytest.mark.parametrize("attribute", ["App", "instance", "make"])
def test_load_app_from_a_file(app_file: Path, attribute: str) -> None:
    assert isinstance(load_app(f"{app_file}:{attribute}"), Client)


def test_load_app_from_a_module(app_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(app_file.parent))
    assert isinstance(load_app("my_app:make"), Client)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_colon", "MODULE:ATTRIBUTE"),
        ("missing_module_xyz:App", "no module"),
        ("{file}:missing", "no attribute"),
        ("{file}:not_a_client", "not a pollen.Client"),
        ("/no/such/file.py:App", "no such file"),
    ],
)
def test_load_app_errors(app_file: Path, reference: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        load_app(reference.format(file=app_file))


def test_node_id_is_explicit_or_generated_once_and_kept(tmp_path: Path) -> None:
    assert resolve_node_id("node-7") == "node-7"
    path = tmp_path / "sub" / "node-id"
    first = resolve_node_id(node_id_file=path)
    assert path.read_text().strip() == first
    assert resolve_node_id(node_id_file=path) == first  # a restart keeps it
    with pytest.raises(InvalidArgument):
        resolve_node_id("bad id with spaces")
    with pytest.raises(ValueError, match="not both"):
        resolve_node_id("a", path)
    assert resolve_node_id() != resolve_node_id()


def test_the_pollen_command_can_host_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from reference_client.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--help"], prog="pollen client")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pollen client")
    assert "pollen client --app" in out  # the examples too
