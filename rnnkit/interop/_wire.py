"""The byte-level formats under a TF checkpoint: varints, protobuf wire format, CRC32C.

Just what the tensor-bundle reader needs, written by hand so that neither ``protobuf`` nor a
CRC package is required (``google_crc32c`` is used when installed: it is much faster).
"""

from __future__ import annotations

from typing import Iterator

try:  # optional accelerator
    import google_crc32c as _fast_crc32c  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _fast_crc32c = None


class FormatError(ValueError):
    """Bytes that are not what the format says."""


def read_varint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at ``position``: ``(value, next position)``."""
    result, shift = 0, 0
    while True:
        if position >= len(data):
            raise FormatError("a varint runs past the end of its buffer")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise FormatError("a varint is longer than 10 bytes")


def proto_fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of a serialized protobuf message: ints for varint,
    fixed32 and fixed64 fields, bytes for length-delimited ones."""
    position = 0
    while position < len(data):
        key, position = read_varint(data, position)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, position = read_varint(data, position)
        elif wire == 1:
            value, position = int.from_bytes(data[position : position + 8], "little"), position + 8
        elif wire == 2:
            length, position = read_varint(data, position)
            if position + length > len(data):
                raise FormatError("a length-delimited field runs past the end of its message")
            value, position = bytes(data[position : position + length]), position + length
        elif wire == 5:
            value, position = int.from_bytes(data[position : position + 4], "little"), position + 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        if position > len(data):
            raise FormatError("a field runs past the end of its message")
        yield number, wire, value


def signed64(value: int) -> int:
    """A varint-encoded int64 (negative numbers arrive as 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    if _fast_crc32c is not None:
        return int(_fast_crc32c.value(bytes(data)))
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """TF/LevelDB store CRCs masked: rotated right by 15 bits plus 0xa282ead8."""
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
