"""Tensor codecs and their registry.

Each codec turns a tensor's canonical bytes into a payload and back (spec chapter 9). Ids
are exact lowercase strings; `get_codec` is where an unknown id becomes CODEC_UNSUPPORTED.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pollen.codecs._base import Codec, Payload
from pollen.codecs.cast import BFLOAT16, FLOAT16
from pollen.codecs.int8 import INT8
from pollen.codecs.raw import RAW
from pollen.codecs.topk import TOPK
from pollen.codecs.zstd import ZSTD
from pollen.errors import CodecUnsupported

__all__ = ["CODECS", "Codec", "Payload", "get_codec"]

#: Every codec this implementation knows, by id.
CODECS: Mapping[str, Codec] = MappingProxyType(
    {codec.id: codec for codec in (RAW, ZSTD, FLOAT16, BFLOAT16, INT8, TOPK)}
)


def get_codec(codec_id: str) -> Codec:
    """The codec with this exact id; CODEC_UNSUPPORTED for any other string."""
    try:
        return CODECS[codec_id]
    except (KeyError, TypeError):
        raise CodecUnsupported(
            f"unknown codec {codec_id!r}", field="codec", supported_codecs=CODECS
        ) from None
