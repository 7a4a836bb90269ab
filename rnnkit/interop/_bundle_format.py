"""What the V1 and V2 checkpoint formats share: the sorted table (LevelDB's format), the shape,
slice and entry protos, the dtype table, OrderedCode slice keys, and the checks that a tensor's
slices cover it exactly.

Everything here treats the bytes as untrusted: malformed input raises ``FormatError``, and no
allocation is larger than a fixed multiple of the bytes read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._wire import FormatError, crc32c, last_int, located, parse_message, read_varint, signed64, unmask_crc

DTYPES: dict[int, Any] = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
    10: np.bool_, 14: "bfloat16", 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}
STRING = 7
BFLOAT16 = 14

_MAX_ELEMENTS = 1 << 59  # numpy's limit on any array's bytes, counting only non-zero dimensions
Extent = tuple[int, int | None]  # (start, length); length None: the whole dimension
Box = tuple[tuple[int, int], ...]  # per dimension (start, length), resolved against a shape


def check_numeric(dtype: int) -> None:
    """A ``FormatError`` unless ``dtype`` (a TF ``DataType`` number) is one the readers load."""
    if dtype == STRING:
        raise FormatError("a string tensor; only numeric tensors are read")
    if dtype not in DTYPES:
        raise FormatError(f"an unsupported dtype (DataType {dtype})")


def is_file(path: Path) -> bool:
    """``path.is_file()``, False (not an exception) for names the OS refuses (too long, NUL)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def itemsize(dtype: int) -> int:
    """Bytes per stored element of a numeric DataType in ``DTYPES``."""
    kind = DTYPES[dtype]
    return 2 if kind == "bfloat16" else np.dtype(kind).itemsize


def numpy_dtype(dtype: int) -> np.dtype:
    """The dtype of the arrays returned for a DataType (bfloat16 is widened to float32)."""
    kind = DTYPES[dtype]
    return np.dtype(np.float32 if kind == "bfloat16" else kind)


def element_count(shape: tuple[int, ...]) -> int:
    """The number of elements (a Python int: no overflow)."""
    count = 1
    for size in shape:
        count *= size
    return count


# ---------------------------------------------------------------------------------------------
# protos


def parse_shape(data: bytes) -> tuple[int, ...]:
    """A ``TensorShapeProto``: dimensions >= 0 and below 2^63, rank known."""
    fields = parse_message(data, {2: 2, 3: 0}, "TensorShapeProto")
    if last_int(fields, 3):
        raise FormatError("a tensor shape of unknown rank")
    dims = []
    for dim in fields.get(2, []):
        size = signed64(last_int(parse_message(dim, {1: 0}, "TensorShapeProto.Dim"), 1))  # type: ignore[arg-type]
        if size < 0:
            raise FormatError(f"a negative dimension ({size}) in a tensor shape")
        dims.append(size)
    if element_count(tuple(d for d in dims if d)) > _MAX_ELEMENTS:
        raise FormatError(f"a tensor shape {dims} too large for any array (numpy refuses it even when empty)")
    return tuple(dims)


def parse_slice(data: bytes) -> list[Extent]:
    """A ``TensorSliceProto``: per dimension (start, length or None for the whole dimension)."""
    extents: list[Extent] = []
    for extent in parse_message(data, {1: 2}, "TensorSliceProto").get(1, []):
        fields = parse_message(extent, {1: 0, 2: 0}, "TensorSliceProto.Extent")  # type: ignore[arg-type]
        start = signed64(last_int(fields, 1))
        length = signed64(last_int(fields, 2)) if 2 in fields else None
        extents.append((start, length))
    return extents


@dataclass
class BundleEntry:
    """One ``BundleEntryProto``: where a tensor's bytes are and what they hold."""

    dtype: int = 0
    shape: tuple[int, ...] = ()
    shard: int = 0
    offset: int = 0
    size: int = 0
    crc: int | None = None
    slices: list[list[Extent]] = field(default_factory=list)


_ENTRY_WIRES = {1: 0, 2: 2, 3: 0, 4: 0, 5: 0, 6: 5, 7: 2}


def parse_entry(data: bytes) -> BundleEntry:
    """A ``BundleEntryProto``, its numbers range-checked."""
    fields = parse_message(data, _ENTRY_WIRES, "BundleEntryProto")
    entry = BundleEntry(
        dtype=last_int(fields, 1), shard=signed64(last_int(fields, 3)),
        offset=signed64(last_int(fields, 4)), size=signed64(last_int(fields, 5)),
        crc=last_int(fields, 6) if 6 in fields else None,
    )
    if 2 in fields:
        entry.shape = parse_shape(fields[2][-1])  # type: ignore[arg-type]
    entry.slices = [parse_slice(s) for s in fields.get(7, [])]  # type: ignore[arg-type]
    for what, value in (("shard_id", entry.shard), ("offset", entry.offset), ("size", entry.size)):
        if value < 0:
            raise FormatError(f"a negative {what} ({value})")
    return entry


# ---------------------------------------------------------------------------------------------
# slices: OrderedCode keys, extents against shapes, exact coverage


def _ordered_string(key: bytes, position: int) -> tuple[bytes, int]:
    """An OrderedCode string: 0x00 -> 00 FF, 0xFF -> FF 00, terminated by 00 01."""
    out = bytearray()
    while position + 1 < len(key):
        byte, following = key[position], key[position + 1]
        if byte == 0x00 and following == 0x01:
            return bytes(out), position + 2
        if byte == 0x00 and following == 0xFF or byte == 0xFF and following == 0x00:
            out.append(byte)
            position += 2
        elif byte in (0x00, 0xFF):
            raise FormatError("a bad escape in a partitioned-variable key")
        else:
            out.append(byte)
            position += 1
    raise FormatError("an unterminated name in a partitioned-variable key")


def _ordered_unsigned(key: bytes, position: int) -> tuple[int, int]:
    """An OrderedCode unsigned number: a length byte (0-8), then big-endian bytes."""
    if position >= len(key) or key[position] > 8 or position + 1 + key[position] > len(key):
        raise FormatError("a malformed number in a partitioned-variable key")
    length = key[position]
    return int.from_bytes(key[position + 1 : position + 1 + length], "big"), position + 1 + length


def _ordered_signed(key: bytes, position: int) -> tuple[int, int]:
    """An OrderedCode signed number: n bytes whose first n+1 bits are n ones and a zero (for a
    negative number, all bits inverted), then 7n-1 bits of value."""
    if position >= len(key):
        raise FormatError("a partitioned-variable key ends inside a number")
    negative = not key[position] & 0x80
    flip = 0xFF if negative else 0x00
    length = 0
    for byte in key[position : position + 2]:
        ones = 8 - (~(byte ^ flip) & 0xFF).bit_length()  # leading one bits of the byte
        length += ones
        if ones < 8:
            break
    if length > 10 or position + length > len(key):
        raise FormatError("a malformed signed number in a partitioned-variable key")
    raw = int.from_bytes(bytes(b ^ flip for b in key[position : position + length]), "big")
    value = raw & ((1 << (7 * length - 1)) - 1)
    if value >= 1 << 63:
        raise FormatError("a signed number beyond int64 in a partitioned-variable key")
    return (~value if negative else value), position + length


def decode_slice_key(key: bytes) -> tuple[str, list[Extent]]:
    """A V2 slice key, OrderedCode (0, name, rank, start_0, length_0, ...): the variable's name
    and the slice (length -1 = the whole dimension)."""
    if not key.startswith(b"\x00"):
        raise FormatError("a partitioned-variable key not starting with 0x00")
    name, position = _ordered_string(key, 1)
    rank, position = _ordered_unsigned(key, position)
    if rank > len(key):
        raise FormatError(f"a partitioned-variable key claims rank {rank}")
    extents: list[Extent] = []
    for _ in range(rank):
        start, position = _ordered_signed(key, position)
        length, position = _ordered_signed(key, position)
        extents.append((start, None if length == -1 else length))
    if position != len(key):
        raise FormatError("trailing bytes after a partitioned-variable key")
    return utf8(name, "a partitioned variable's name"), extents


def utf8(name: bytes, what: str) -> str:
    """A name that must be UTF-8."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not UTF-8: {name!r}") from None


def resolve_extents(extents: list[Extent], shape: tuple[int, ...]) -> Box:
    """A slice against its tensor's shape: one extent per dimension (none at all means the whole
    tensor), starts and lengths >= 0, inside the shape."""
    if not extents:
        return tuple((0, size) for size in shape)
    if len(extents) != len(shape):
        raise FormatError(f"a slice with {len(extents)} dimensions of a tensor of shape {list(shape)}")
    box = []
    for (start, length), size in zip(extents, shape):
        if length is None:
            if start != 0:
                raise FormatError(f"a whole-dimension slice extent starting at {start}")
            length = size
        if start < 0 or length < 0 or start + length > size:
            raise FormatError(f"slice extent [{start}, {start}+{length}) outside a dimension of {size}")
        box.append((start, length))
    return tuple(box)


def box_index(box: Box) -> tuple[Any, ...]:
    """The numpy index of a box (ending in ``...``, so that a scalar's index gives a view)."""
    return tuple(slice(start, start + length) for start, length in box) + (Ellipsis,)


def box_shape(box: Box) -> tuple[int, ...]:
    """The shape of the part of the tensor a box covers."""
    return tuple(length for _, length in box)


def check_listed(listed: list[Box], stored: list[Box]) -> None:
    """The slices an entry (or the V1 metadata) lists are exactly the ones stored."""
    missing, extra = set(listed) - set(stored), set(stored) - set(listed)
    if missing:
        raise FormatError(f"no data for the listed slice {[list(b) for b in min(missing)]}")
    if extra:
        raise FormatError(f"data for a slice that is not listed: {[list(b) for b in min(extra)]}")


def check_coverage(shape: tuple[int, ...], boxes: list[Box]) -> None:
    """The slices cover the tensor exactly: no two the same, their element counts add up to the
    tensor's, and none overlaps another (so none is missing). The callers have checked that each
    slice's data is present, so the mask built here is bounded by the bytes read."""
    if len(set(boxes)) != len(boxes):
        raise FormatError("two slices with the same extent")
    covered = sum(element_count(box_shape(box)) for box in boxes)
    total = element_count(shape)
    if covered != total:
        raise FormatError(f"the slices hold {covered} elements, the shape {list(shape)} has {total}")
    mask = np.zeros(shape, dtype=np.bool_)
    for box in boxes:
        region = mask[box_index(box)]
        if region.any():
            raise FormatError(f"overlapping slices (at {[list(b) for b in box]})")
        region[...] = True


# ---------------------------------------------------------------------------------------------
# the sorted table (LevelDB's format, as TF writes it)

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5
# TF stores every 16th key whole and the others prefix-compressed, so the keys of a table it
# wrote add up to at most 16 times the file's size. Rebuilding far more key bytes than that is
# a crafted file's work and memory (a key extended by one byte per 3-byte entry), so refuse it.
_KEY_BYTES_PER_FILE_BYTE = 32


def _block(data: bytes, offset: int, size: int) -> memoryview:
    """A block's contents, its trailer checked (compression type, masked CRC32C)."""
    end = offset + size
    if end + _TRAILER > len(data) - _FOOTER:
        raise FormatError(f"the block at offset {offset} (size {size}) runs past the end of the file (truncated?)")
    kind = data[end]
    stored = int.from_bytes(data[end + 1 : end + 5], "little")
    if unmask_crc(stored) != crc32c(data[offset : end + 1]):
        raise FormatError(f"checksum mismatch in the block at offset {offset} (corrupt file)")
    if kind == 1:
        raise FormatError("snappy-compressed blocks (TF 1.1-era bundles) are not supported")
    if kind != 0:
        raise FormatError(f"unknown block compression type {kind}")
    return memoryview(data)[offset:end]


def _block_entries(block: memoryview, budget: list[int]) -> Iterator[tuple[bytes, memoryview]]:
    """A block's ``(key, value)`` pairs, keys rebuilt from their shared prefixes; ``budget``
    holds the key bytes still allowed."""
    if len(block) < 4:
        raise FormatError("a block too short for its restart array")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if restarts == 0 or limit < 0:
        raise FormatError(f"a block with {restarts} restart points in {len(block)} bytes")
    position, key = 0, b""
    while position < limit:
        shared, position = read_varint(block, position)
        unshared, position = read_varint(block, position)
        value_length, position = read_varint(block, position)
        if shared > len(key) or position + unshared + value_length > limit:
            raise FormatError("a table entry runs past its block")
        key = key[:shared] + bytes(block[position : position + unshared])
        budget[0] -= len(key)
        if budget[0] < 0:
            raise FormatError("the table's prefix-compressed keys expand to far more bytes than the file holds")
        position += unshared
        yield key, block[position : position + value_length]
        position += value_length


def _handle(data: bytes | memoryview, position: int = 0) -> tuple[int, int, int]:
    """A block handle (offset, size varints) at ``position``: ``(offset, size, next position)``."""
    offset, position = read_varint(data, position)
    size, position = read_varint(data, position)
    return offset, size, position


def _index_handles(data: bytes, budget: list[int]) -> list[tuple[bytes, int, int]]:
    """The index block's ``(separator key, data block offset, size)``, the blocks checked to be
    disjoint (each byte of the file is read as part of at most one block)."""
    footer = memoryview(data)[-_FOOTER:]
    if int.from_bytes(footer[40:48], "little") != _MAGIC:
        raise FormatError("bad magic number: not a TensorFlow checkpoint table")
    _, _, position = _handle(footer)  # the meta-index block: TF writes it empty and never reads it
    index_offset, index_size, position = _handle(footer, position)
    if position > 40:
        raise FormatError("the footer's block handles run into its magic number")
    handles: list[tuple[bytes, int, int]] = []
    for key, value in _block_entries(_block(data, index_offset, index_size), budget):
        offset, size, end = _handle(value)
        if end != len(value):
            raise FormatError(f"an index entry of {len(value)} bytes holding a {end}-byte block handle")
        if handles and key <= handles[-1][0]:
            raise FormatError(f"index keys out of order or repeated: {key!r} after {handles[-1][0]!r}")
        handles.append((key, offset, size))
    spans = sorted([(offset, size) for _, offset, size in handles] + [(index_offset, index_size)])
    for (offset, size), (following, _) in zip(spans, spans[1:]):
        if offset + size + _TRAILER > following:
            raise FormatError(f"the table's blocks at offsets {offset} and {following} overlap (or repeat)")
    return handles


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a sorted-table file, in order; keys strictly increasing, each
    block's keys within its index separator, work and memory linear in the file's size."""
    with located(str(path)):
        data = path.read_bytes()
        if len(data) < _FOOTER:
            raise FormatError("too short to be a checkpoint table (truncated?)")
        budget = [_KEY_BYTES_PER_FILE_BYTE * len(data)]
        entries: list[tuple[bytes, bytes]] = []
        previous: bytes | None = None  # the last key, then the last block's separator
        for separator, offset, size in _index_handles(data, budget):
            for key, value in _block_entries(_block(data, offset, size), budget):
                if previous is not None and key <= previous:
                    raise FormatError(f"table keys out of order or repeated: {key!r} after {previous!r}")
                if key > separator:
                    raise FormatError(f"key {key!r} beyond its block's index key {separator!r}")
                entries.append((key, bytes(value)))
                previous = key
            previous = separator
        return entries
