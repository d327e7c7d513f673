import pytest

from pollen.codecs import CODECS, get_codec
from pollen.dtypes import Dtype
from pollen.errors import CodecUnsupported

FLOATS = {Dtype.FLOAT16, Dtype.BFLOAT16, Dtype.FLOAT32, Dtype.FLOAT64}

# The registry table of spec chapter 9.
APPLIES_TO = {
    "raw": set(Dtype),
    "zstd": set(Dtype),
    "float16": {Dtype.FLOAT32, Dtype.FLOAT64},
    "bfloat16": {Dtype.FLOAT32, Dtype.FLOAT64},
    "int8": FLOATS,
    "topk": FLOATS,
}


def test_registry_matches_the_spec_table() -> None:
    assert set(CODECS) == set(APPLIES_TO)
    for codec_id, codec in CODECS.items():
        assert codec.id == codec_id
        assert {d for d in Dtype if codec.applies_to(d)} == APPLIES_TO[codec_id]


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        CODECS["mine"] = CODECS["raw"]  # type: ignore[index]


@pytest.mark.parametrize("codec_id", list(APPLIES_TO))
def test_get_codec_finds_every_id(codec_id: str) -> None:
    assert get_codec(codec_id) is CODECS[codec_id]


@pytest.mark.parametrize("codec_id", ["RAW", "Zstd", "raw\x00", " raw", "", "x-unknown", "gzip"])
def test_ids_are_exact_strings(codec_id: str) -> None:
    with pytest.raises(CodecUnsupported) as info:
        get_codec(codec_id)
    assert info.value.field == "codec"
    assert set(info.value.supported_codecs) == set(APPLIES_TO)
