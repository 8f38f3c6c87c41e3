"""Read and set ``metadata_props`` of a serialized ONNX model without the ``onnx`` package.

The runtime install has onnxruntime but not ``onnx``; ``edgevision adopt`` must still write its metadata
there. An ONNX file is one protobuf ``ModelProto`` message, and protobuf's wire format lets a message be
edited at its top level without a schema: every field is ``tag, [length], value``; a repeated field is
its entries concatenated in any order. `with_metadata` copies every top-level field unchanged (the
graph byte for byte) except the ``metadata_props`` entries (field 14, ``StringStringEntryProto`` of
``key`` = 1 and ``value`` = 2) whose key it replaces, then appends the new entries.

Only the top level and the small messages named here are parsed; groups (wire types 3 and 4, unused
by ONNX) are refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["ProtoError", "metadata_props", "opset", "with_metadata"]

_METADATA_PROPS = 14
_OPSET_IMPORT = 8
_KEY, _VALUE = 1, 2
_DOMAIN, _VERSION = 1, 2


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    """The varint at ``data[i:]`` and the index after it."""
    result = shift = 0
    while True:
        if i >= len(data):
            raise ProtoError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(data: memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """Top-level fields: ``(number, wire type, start of the tag, start of the value, end)``."""
    i = 0
    while i < len(data):
        start = i
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        value = i
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, value = _varint(data, i)
            i = value + n
        elif wire == 5:
            i += 4
        else:
            raise ProtoError(f"field {number} has wire type {wire} (groups are not used by ONNX)")
        if i > len(data) or number == 0:
            raise ProtoError(f"field {number} runs past the end of the message" if number else "field number 0")
        yield number, wire, start, value, i


def _strings(entry: memoryview) -> dict[int, str]:
    """The length-delimited fields of a small message, decoded as UTF-8 (last one wins, as protobuf)."""
    out: dict[int, str] = {}
    for number, wire, _, value, end in _fields(entry):
        if wire == 2:
            out[number] = bytes(entry[value:end]).decode("utf-8", errors="replace")
    return out


def metadata_props(model: bytes) -> dict[str, str]:
    """``{key: value}`` of a serialized ``ModelProto``'s ``metadata_props``.

    Raises:
        ProtoError: malformed bytes.
    """
    data = memoryview(model)
    props: dict[str, str] = {}
    for number, wire, _, value, end in _fields(data):
        if number == _METADATA_PROPS and wire == 2:
            s = _strings(data[value:end])
            props[s.get(_KEY, "")] = s.get(_VALUE, "")
    return props


def opset(model: bytes) -> int | None:
    """The opset version of the default domain (``""`` or ``ai.onnx``), or None when not declared."""
    data = memoryview(model)
    for number, wire, _, value, end in _fields(data):
        if number == _OPSET_IMPORT and wire == 2:
            entry = data[value:end]
            domain = _strings(entry).get(_DOMAIN, "")
            version = next((_varint(entry, v)[0] for n, w, _, v, _ in _fields(entry) if n == _VERSION and w == 0), None)
            if domain in ("", "ai.onnx") and version is not None:
                return int(version)
    return None


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def with_metadata(model: bytes, entries: Mapping[str, str]) -> bytes:
    """A copy of a serialized ``ModelProto`` whose ``metadata_props`` hold ``entries`` (replacing entries of the
    same keys; every other field, other entries included, is copied byte for byte).

    Raises:
        ProtoError: malformed bytes.
    """
    data = memoryview(model)
    parts: list[bytes | memoryview] = []
    for number, wire, start, value, end in _fields(data):
        if number == _METADATA_PROPS and wire == 2 and _strings(data[value:end]).get(_KEY, "") in entries:
            continue
        parts.append(data[start:end])
    for key, text in entries.items():
        parts.append(_len_field(_METADATA_PROPS, _len_field(_KEY, key.encode()) + _len_field(_VALUE, text.encode())))
    return b"".join(parts)
