"""The byte-level formats under a TF checkpoint: varints, protobuf wire format, CRC32C.

Written by hand so that ``protobuf`` is not needed. CRC32C comes from ``google_crc32c`` (a
dependency) when its C extension loads; otherwise from a plain table loop here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

try:
    import google_crc32c as _google_crc32c  # type: ignore[import-not-found]

    _fast_crc32c = _google_crc32c if _google_crc32c.implementation == "c" else None
except ImportError:  # pragma: no cover - depends on the environment
    _fast_crc32c = None


class FormatError(ValueError):
    """Bytes that are not what the format says."""


@contextmanager
def located(where: str) -> Iterator[None]:
    """Prefix ``where`` (a file, or ``file: tensor``) to the FormatErrors raised inside, unless
    an inner ``located`` already named it."""
    try:
        yield
    except FormatError as error:
        message = str(error)
        if message.startswith(f"{where}: "):
            raise
        raise FormatError(f"{where}: {message}") from None


# ---------------------------------------------------------------------------------------------
# varints and protobuf fields

_UINT64_LIMIT = 1 << 64


def read_varint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """An unsigned LEB128 varint64 at ``position``: ``(value, next position)``."""
    result, shift = 0, 0
    while True:
        if position >= len(data):
            raise FormatError("a varint runs past the end of its buffer")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= _UINT64_LIMIT:
                raise FormatError("a varint overflows 64 bits")
            return result, position
        shift += 7
        if shift > 63:
            raise FormatError("a varint is longer than 10 bytes")


def proto_fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of a serialized protobuf message: ints for varint,
    fixed32 and fixed64 fields, bytes for length-delimited ones."""
    position, end = 0, len(data)
    while position < end:
        key, position = read_varint(data, position)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, position = read_varint(data, position)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if position + width > end:
                raise FormatError(f"a fixed{width * 8} field runs past the end of its message")
            value, position = int.from_bytes(data[position : position + width], "little"), position + width
        elif wire == 2:
            length, position = read_varint(data, position)
            if position + length > end:
                raise FormatError("a length-delimited field runs past the end of its message")
            value, position = bytes(data[position : position + length]), position + length
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        if number == 0:
            raise FormatError("a protobuf field numbered 0")
        yield number, wire, value


def parse_message(data: bytes, wires: dict[int, int], what: str) -> dict[int, list[int | bytes]]:
    """The fields of a message by number, each with the wire type ``wires`` expects (other
    field numbers are skipped, as protobuf does for unknown fields)."""
    fields: dict[int, list[int | bytes]] = {}
    for number, wire, value in proto_fields(data):
        if number not in wires:
            continue
        if wire != wires[number]:
            raise FormatError(f"{what} field {number} has wire type {wire}, expected {wires[number]}")
        fields.setdefault(number, []).append(value)
    return fields


def last_int(fields: dict[int, list[int | bytes]], number: int, default: int = 0) -> int:
    """A scalar int field (protobuf: the last occurrence wins)."""
    values = fields.get(number)
    return int(values[-1]) if values else default


def signed64(value: int) -> int:
    """A varint-encoded int64 (negative numbers arrive as 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def int32(value: int, what: str) -> int:
    """A varint-encoded int32 (negative ones are sign-extended to 64 bits), range-checked."""
    value = signed64(value)
    if not -(1 << 31) <= value < 1 << 31:
        raise FormatError(f"{what} is {value}, outside int32")
    return value


# ---------------------------------------------------------------------------------------------
# CRC32C


def _byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _byte_table()


def crc32c_fallback(data: bytes | memoryview) -> int:
    """CRC-32C of ``data`` without ``google_crc32c``'s C extension: a byte at a time (a few MB/s;
    ``google-crc32c`` is a dependency, so this runs only where its extension cannot load)."""
    crc, table = 0xFFFFFFFF, _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    if _fast_crc32c is not None:
        return int(_fast_crc32c.value(data))
    return crc32c_fallback(data)


def crc32c_of_array(array: np.ndarray, chunk: int = 1 << 22) -> int:
    """CRC-32C of a C-contiguous array's bytes. ``google_crc32c`` takes only ``bytes``, so the
    bytes are handed over a few MiB at a time (each copy stays in the CPU cache)."""
    view = memoryview(array.reshape(-1).view(np.uint8).data)
    if _fast_crc32c is None:
        return crc32c_fallback(view)
    crc = 0
    for start in range(0, len(view), chunk):
        crc = int(_fast_crc32c.extend(crc, bytes(view[start : start + chunk])))
    return crc


def unmask_crc(masked: int) -> int:
    """TF/LevelDB store CRCs masked: rotated right by 15 bits plus 0xa282ead8."""
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
