"""Wire-level protobuf helpers for zero-copy payloads.

The upb runtime copies a `bytes` field both when it parses and every time the field is
read, which costs more than the rest of a model's decoding put together. So a payload field
is sliced out of the received buffer by hand as a zero-copy view, and only the small
remainder of the message is parsed with upb. Serializing does the converse: the payload is
appended to a header that upb wrote, which the encoding allows (fields come in any order).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from pollen.blob import BytesLike
from pollen.errors import InvalidArgument

_M = TypeVar("_M", bound=Message)


def read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def scan_top_level(data: memoryview) -> list[tuple[int, int, int, int]] | None:
    """Top-level fields of a serialized message as (number, wire type, start, end).

    `start:end` spans the whole field (tag included). Returns None for inputs the fast path
    does not handle (groups), which the caller then parses with upb alone; raises
    DecodeError for inputs that are not valid protobuf.
    """
    fields = []
    pos = 0
    size = len(data)
    while pos < size:
        start = pos
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire_type == 0:
            _, pos = read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            pos += length
        elif wire_type == 5:
            pos += 4
        elif wire_type in (3, 4):
            return None
        else:
            raise DecodeError(f"invalid wire type {wire_type}")
        if pos > size:
            raise DecodeError("truncated field")
        fields.append((number, wire_type, start, pos))
    return fields


def split_field(
    data: bytes, number: int, *, cleared_by: int | None = None
) -> tuple[bytes, memoryview | None] | None:
    """Cut a length-delimited field out of a serialized message without copying it.

    Returns the message's other fields (small, for upb to parse) and a view of the last
    occurrence of field `number` (protobuf's "last one wins"), or None for the view when the
    field is absent or a later occurrence of oneof sibling `cleared_by` replaced it. Returns
    None altogether for inputs the fast path leaves to upb (groups).
    """
    view = memoryview(data)
    fields = scan_top_level(view)
    if fields is None:
        return None
    payload: memoryview | None = None
    rest = bytearray()
    for field_number, wire_type, start, end in fields:
        if field_number == number and wire_type == 2:
            # The value follows the tag and the length prefix.
            payload = view[read_varint(view, read_varint(view, start)[1])[1] : end]
        else:
            if field_number == cleared_by:
                payload = None
            rest += view[start:end]
    return bytes(rest), payload


def frame_bytes_field(header: bytes, number: int, payload: BytesLike) -> bytes:
    """Append a length-delimited field to a serialized message, copying the payload once."""
    body = memoryview(payload).cast("B")
    tag = encode_varint(number << 3 | 2)
    return b"".join((header, tag, encode_varint(body.nbytes), body))


def parse_message(msg: _M, data: bytes, what: str, field: str) -> _M:
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"malformed {what} message: {exc}", field=field) from None
    return msg
