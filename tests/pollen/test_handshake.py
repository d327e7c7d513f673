import pytest

from pollen.dtypes import Dtype
from pollen.errors import CapabilityMismatch, InvalidArgument, VersionUnsupported
from pollen.handshake import (
    CHUNK_OVERHEAD_BYTES,
    Capabilities,
    check_node_id,
    chunk_size,
    negotiate,
    select_version,
)
from pollen.limits import Limits
from pollen.version import PROTOCOL_VERSION
from pollen.version import ProtocolVersion as V


def test_same_version() -> None:
    assert select_version([V(1, 0)]) == V(1, 0) == PROTOCOL_VERSION


def test_minor_downgrade_to_the_lower_minor() -> None:
    assert select_version([V(1, 3)], [V(1, 1)]) == V(1, 1)
    assert select_version([V(1, 0)], [V(1, 4)]) == V(1, 0)


def test_highest_common_major_wins() -> None:
    assert select_version([V(1, 2), V(2, 0), V(3, 1)], [V(1, 5), V(2, 7)]) == V(2, 0)


def test_no_common_major_lists_what_is_supported() -> None:
    with pytest.raises(VersionUnsupported) as info:
        select_version([V(2, 0)], [V(1, 4)])
    assert info.value.supported_versions == (V(1, 4),)
    assert not info.value.retryable
    assert "offered 2.0" in info.value.message


def test_an_empty_offer_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        select_version([])


def test_negotiation_keeps_client_preference_and_intersects() -> None:
    client = Capabilities(
        codecs=("zstd", "topk", "raw"),
        dtypes=frozenset({Dtype.FLOAT32, Dtype.INT64, Dtype.BFLOAT16}),
        features=frozenset({"query", "x-experimental"}),
    )
    server = Capabilities(
        codecs=("raw", "int8", "zstd"),
        dtypes=frozenset({Dtype.FLOAT32, Dtype.INT64}),
        limits=Limits(max_message_bytes=1 << 24),
        features=frozenset({"query"}),
    )
    session = negotiate(client, server)
    assert session.codecs == ("zstd", "raw")
    assert session.dtypes == {Dtype.FLOAT32, Dtype.INT64}
    assert session.features == {"query"}
    assert session.limits == server.limits


def test_raw_is_mandatory() -> None:
    with pytest.raises(CapabilityMismatch, match="raw"):
        negotiate(Capabilities(codecs=("zstd",)), Capabilities())


@pytest.mark.parametrize("node_id", ["a", "node-1.site_2:gpu", "x" * 128])
def test_good_node_ids(node_id: str) -> None:
    assert check_node_id(node_id) == node_id


@pytest.mark.parametrize("node_id", ["", "x" * 129, "has space", "é", "a/b"])
def test_bad_node_ids(node_id: str) -> None:
    with pytest.raises(InvalidArgument, match="node_id"):
        check_node_id(node_id)


def test_chunk_size_fits_both_peers() -> None:
    small = Limits(max_message_bytes=1 << 20)
    big = Limits(max_message_bytes=1 << 26)
    assert chunk_size(4 << 20, client=small, server=big) == (1 << 20) - CHUNK_OVERHEAD_BYTES
    assert chunk_size(1 << 20, client=big, server=big) == 1 << 20
    with pytest.raises(CapabilityMismatch):
        chunk_size(1 << 20, client=Limits(max_message_bytes=512), server=big)
