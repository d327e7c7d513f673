from __future__ import annotations

from reference_server.config import parse_config
from reference_server.server import channel_options


def _options(**server: object) -> dict[str, int]:
    config = parse_config("[server]\ninsecure = true\n", overrides={"server": server})
    return dict(channel_options(config))


def test_the_grpc_receive_limit_never_drops_below_the_handshake_default() -> None:
    small = _options(max_message_bytes=64 * 1024, chunk_size_bytes=16 * 1024)
    assert small["grpc.max_receive_message_length"] == 4 * 1024 * 1024
    assert small["grpc.max_send_message_length"] == 64 * 1024
    large = _options(max_message_bytes=64 * 1024 * 1024)
    assert large["grpc.max_receive_message_length"] == 64 * 1024 * 1024
