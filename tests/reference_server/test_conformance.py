"""Annex C.5's configurations as the reference server runs them."""

from pathlib import Path

import pytest

from reference_server.config import parse_config
from reference_server.conformance import CONFIGURATIONS, config_text, main


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_each_configuration_is_a_valid_two_round_run(name: str, tmp_path: Path) -> None:
    config = parse_config(
        config_text("127.0.0.1:1", tmp_path, tmp_path / "m.npz", insecure=True, configuration=name)
    )
    assert config.run.rounds == 2
    assert config.run.on_quorum_missed == "fail"
    assert (config.run.kind == "analytics") == (name == "analytics")
    assert (config.evaluate is not None) == (name == "evaluate")
    phase = config.query if name == "analytics" else config.fit
    assert (phase.min_clients, phase.min_results, phase.timeout_s) == (2, 1, 10.0)
    assert config.query.shapes == ([[4]] if name == "analytics" else [])


def test_an_unknown_configuration_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "POLLEN_CONFORMANCE_ADDRESS": "127.0.0.1:1",
        "POLLEN_CONFORMANCE_STATE_DIR": str(tmp_path),
        "POLLEN_CONFORMANCE_CONFIGURATION": "query",
    }
    assert main(env) == 2
    assert "train, evaluate, analytics" in capsys.readouterr().out


def test_tls_files_come_together_and_without_insecure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "POLLEN_CONFORMANCE_ADDRESS": "127.0.0.1:1",
        "POLLEN_CONFORMANCE_STATE_DIR": str(tmp_path),
    }
    assert main({**base, "POLLEN_CONFORMANCE_CERT": "c.pem"}) == 2
    full = {f"POLLEN_CONFORMANCE_{n}": "x.pem" for n in ("CERT", "KEY", "CLIENT_CA")}
    assert main({**base, **full, "POLLEN_CONFORMANCE_INSECURE": "1"}) == 2
    assert "together" in capsys.readouterr().out


def test_mutual_tls_binds_node_ids(tmp_path: Path) -> None:
    text = config_text(
        "127.0.0.1:1", tmp_path, tmp_path / "m.npz", insecure=False, tls=("c", "k", "ca")
    )
    server = parse_config(text).server
    assert (server.client_ca, server.bind_node_ids, server.insecure) == ("ca", True, False)
