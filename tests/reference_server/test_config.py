import subprocess
import sys
from pathlib import Path

import pytest

from reference_server.config import ConfigError, describe_options, load_config, parse_config
from reference_server.engine import QuorumPolicy

GOOD = """
[server]
address = "127.0.0.1:0"
insecure = true
[run]
rounds = 5
seed = 7
on_quorum_missed = "retry"
[fit]
fraction = 0.5
min_clients = 4
min_results = 3
timeout_s = 120
config = { lr = 0.05, epochs = 2 }
[evaluate]
fraction = 0.2
min_clients = 2
[strategy]
name = "fedprox"
proximal_mu = 0.1
"""


def test_a_full_config_becomes_a_run_plan() -> None:
    config = parse_config(GOOD)
    plan = config.plan()
    assert (plan.rounds, plan.seed, plan.on_quorum_missed) == (5, 7, QuorumPolicy.RETRY)
    assert (plan.fit.fraction, plan.fit.min_results, plan.fit.timeout_s) == (0.5, 3, 120.0)
    assert plan.fit.config == {"lr": 0.05, "epochs": 2}
    assert plan.evaluate is not None
    assert plan.evaluate.fraction == 0.2
    assert config.strategy == {"name": "fedprox", "proximal_mu": 0.1}
    assert len(config.digest) == 64
    assert parse_config(GOOD).digest == config.digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fit]\nfraction = 1.5", r"\[fit\] fraction: must be in \(0, 1\], got 1.5"),
        ("[server]\ninsecure = true\nport = 1", r"unknown key\(s\) \['port'\]"),
        ("[run]\nrounds = 'three'", r"\[run\] rounds: expected int, got str"),
        ("[run]\nrounds = 0", r"rounds: must be > 0"),
        ("[server]\ninsecure = false", r"tls_cert and tls_key are required"),
        ("[fit]\nmin_clients = 1\nmin_results = 2", "min_results: cannot exceed min_clients"),
        ("[fitt]\n", r"unknown section\(s\) \['fitt'\]"),
        ("[run]\nkind = 'analytics'", r"\[query\] is required"),
        ("[run]\nid = 'has space'", "id: 1 to 64"),
        ("[server]\ninsecure = true\naddress = 'nohost'", "expected host:port"),
        ("rounds = ", "not valid TOML"),
        ("[server]\ninsecure = true\nbind_node_ids = true", "bind_node_ids: needs TLS"),
        ("[query]\nshapes = [4]", r"\[query\] shapes: expected list\[list\[int\]\]"),
        ("[query]\nshapes = [[4, -1]]", r"\[query\] shapes: dimensions must be >= 0"),
    ],
)
def test_every_bad_value_gets_a_clear_error(text: str, message: str) -> None:
    insecure = "" if "[server]" in text else "[server]\ninsecure = true\n"
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(insecure + text, source="server.toml")
    assert str(info.value).startswith("server.toml: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_help_documents_every_option() -> None:
    text = describe_options()
    keys = "address state_dir tls_cert client_ca rounds seed fraction min_results timeout_s"
    for key in [*keys.split(), "max_update_norm", "on_quorum_missed", "[strategy]"]:
        assert key in text
    done = subprocess.run(
        [sys.executable, "-m", "pollen_cli", "server", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "--config" in done.stdout
    assert "max_poll_wait_s" in done.stdout


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[fit]\nfraction = 2\n")
    done = subprocess.run(
        [sys.executable, "-m", "pollen_cli", "server", "--config", str(path), "--insecure"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "fraction: must be in (0, 1]" in done.stderr
