"""The byte-level formats under a TF checkpoint: varints, protobuf wire format, CRC32C.

Written by hand so that ``protobuf`` is not needed. CRC32C comes from ``google_crc32c`` (a
dependency) when its C extension loads; otherwise from a numpy fallback here.
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


def _byte_table() -> np.ndarray:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return np.array(table, dtype=np.uint32)


_TABLE = _byte_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_CHUNK = 64  # bytes each lane of the numpy fallback walks
_SMALL = 1 << 14  # below this, the plain table loop is faster than the numpy lanes


def _raw_crc_loop(state: int, data: bytes | memoryview) -> int:
    """The CRC register after feeding ``data`` (no pre/post inversion), a byte at a time."""
    table = _TABLE_LIST
    for byte in bytes(data):
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def _apply(images: list[int], value: int) -> int:
    """A GF(2)-linear map on 32-bit registers (given by the images of its basis vectors)."""
    out, bit = 0, 0
    while value:
        if value & 1:
            out ^= images[bit]
        value >>= 1
        bit += 1
    return out


def _compose(outer: list[int], inner: list[int]) -> list[int]:
    return [_apply(outer, image) for image in inner]


def _zeros_map(count: int) -> list[int]:
    """The map "feed ``count`` zero bytes" on the CRC register, by repeated squaring."""
    step = [_raw_crc_loop(1 << bit, b"\x00") for bit in range(32)]
    result = [1 << bit for bit in range(32)]
    while count:
        if count & 1:
            result = _compose(step, result)
        step = _compose(step, step)
        count >>= 1
    return result


def _map_tables(images: list[int]) -> np.ndarray:
    """A linear map as four 256-entry tables, one per byte of the register."""
    tables = np.zeros((4, 256), dtype=np.uint32)
    for part in range(4):
        for value in range(1, 256):
            low = value & -value
            tables[part, value] = tables[part, value ^ low] ^ images[8 * part + low.bit_length() - 1]
    return tables


def _apply_tables(tables: np.ndarray, registers: np.ndarray) -> np.ndarray:
    return (tables[0][registers & 0xFF] ^ tables[1][(registers >> 8) & 0xFF]
            ^ tables[2][(registers >> 16) & 0xFF] ^ tables[3][registers >> 24])


def _raw_crc_numpy(data: bytes | memoryview) -> int:
    """The CRC register from 0 after ``data``: many 64-byte lanes in parallel with numpy, then
    combined pairwise (crc(A+B) = zeros_map(len B)(crc A) ^ crc B). Zero bytes in front of the
    data do not change a register that starts at 0, which pads the lanes to whole pairs."""
    raw = np.frombuffer(data, dtype=np.uint8)
    lanes = -(-len(raw) // _CHUNK)
    padded = np.zeros(lanes * _CHUNK, dtype=np.uint8)
    padded[len(padded) - len(raw) :] = raw
    columns = padded.reshape(lanes, _CHUNK).T.copy()
    registers = np.zeros(lanes, dtype=np.uint32)
    for column in columns:
        registers = np.take(_TABLE, (registers ^ column) & 0xFF) ^ (registers >> 8)
    step = _zeros_map(_CHUNK)
    while len(registers) > 1:
        if len(registers) % 2:
            registers = np.concatenate([np.zeros(1, np.uint32), registers])
        registers = _apply_tables(_map_tables(step), registers[0::2]) ^ registers[1::2]
        step = _compose(step, step)
    return int(registers[0])


def crc32c_fallback(data: bytes | memoryview) -> int:
    """CRC-32C of ``data`` without ``google_crc32c``."""
    if len(data) < _SMALL:
        return _raw_crc_loop(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    start = _apply(_zeros_map(len(data)), 0xFFFFFFFF)
    return start ^ _raw_crc_numpy(data) ^ 0xFFFFFFFF


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
