"""A minimal, independent writer of TensorFlow checkpoints (V2 tensor bundles and V1 files), for
tests.

Written from the format's description (shared/docs/interop.md §1), separately from the reader
in rnnkit/interop: its own varints, protobuf encoding, OrderedCode and bitwise CRC32C. It writes
what TF writes: an uncompressed sorted table with prefix-compressed keys, restart points, block
CRCs and the 48-byte footer; raw row-major tensor bytes in shard files; partitioned variables as
slices.

Protos are built as trees (``Message``: a list of ``(field number, value)``) and encoded last,
so that tests can change a field, drop it, repeat it or give it a wrong wire type, and still get
a file whose checksums are all valid. ``write_table`` takes a hook to rewrite the index block's
handles for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

DTYPE_NUMBERS = {
    np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.uint8): 4,
    np.dtype(np.int16): 5, np.dtype(np.int8): 6, np.dtype(np.int64): 9, np.dtype(np.bool_): 10,
    np.dtype(np.uint16): 17, np.dtype(np.float16): 19, np.dtype(np.uint32): 22, np.dtype(np.uint64): 23,
}
BFLOAT16 = 14
STRING = 7
MAGIC = 0xDB4775248B80FB57


# ---------------------------------------------------------------------------------------------
# protobuf encoding


@dataclass
class Fixed32:
    value: int


@dataclass
class Fixed64:
    value: int


@dataclass
class Raw:
    """A field written verbatim: this wire type, then these bytes (malformed on purpose)."""

    wire: int
    payload: bytes


Message = list  # of (field number, int | Fixed32 | Fixed64 | Raw | bytes | Message)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode(message: Message) -> bytes:
    out = bytearray()
    for number, value in message:
        if isinstance(value, Raw):
            out += varint((number << 3) | value.wire) + value.payload
        elif isinstance(value, bool | int):
            out += varint(number << 3) + varint(int(value))
        elif isinstance(value, Fixed32):
            out += varint((number << 3) | 5) + (value.value & 0xFFFFFFFF).to_bytes(4, "little")
        elif isinstance(value, Fixed64):
            out += varint((number << 3) | 1) + (value.value & (1 << 64) - 1).to_bytes(8, "little")
        else:
            data = value if isinstance(value, bytes) else encode(value)
            out += varint((number << 3) | 2) + varint(len(data)) + data
    return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return encode([(number, value)])


def field_bytes(number: int, data: bytes) -> bytes:
    return encode([(number, data)])


def field_fixed32(number: int, value: int) -> bytes:
    return encode([(number, Fixed32(value))])


def crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def crc32c_writer(data: bytes) -> int:
    """The writer's CRC32C: its own bitwise one, except for big tensors (benchmarks), where the
    bitwise loop would take minutes and google_crc32c does it."""
    if len(data) < 1 << 16:
        return crc32c_bitwise(data)
    import google_crc32c

    return int(google_crc32c.value(bytes(data)))


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# V2 protos and keys


def shape_tree(shape: tuple[int, ...]) -> Message:
    return [(2, [(1, size)]) for size in shape]


def shape_proto(shape: tuple[int, ...]) -> bytes:
    return encode(shape_tree(shape))


def slice_tree(extents: list[tuple[int, int | None]]) -> Message:
    """A TensorSliceProto; a length None is a whole dimension (an empty extent)."""
    return [(1, [(1, s), (2, n)] if n is not None else []) for s, n in extents]


def entry_tree(dtype: int, shape: tuple[int, ...], shard: int, offset: int, data: bytes | None,
               slices: list[list[tuple[int, int | None]]] | None = None, crc: bool = True) -> Message:
    tree: Message = [(1, dtype), (2, shape_tree(shape))]
    if shard:
        tree.append((3, shard))
    if offset:
        tree.append((4, offset))
    if data is not None:
        tree.append((5, len(data)))
        if crc:
            tree.append((6, Fixed32(masked(crc32c_writer(data)))))
    tree += [(7, slice_tree(extents)) for extents in slices or []]
    return tree


def entry_proto(dtype: int, shape: tuple[int, ...], shard: int, offset: int, data: bytes | None,
                slices: list[list[tuple[int, int | None]]] | None = None) -> bytes:
    return encode(entry_tree(dtype, shape, shard, offset, data, slices))


def header_tree(shards: int, big_endian: bool = False) -> Message:
    return [(1, shards)] + [(2, 1)] * big_endian + [(3, [(1, 1)])]


def ordered_signed(value: int) -> bytes:
    """OrderedCode's increasing signed number: n bytes, whose first n+1 bits are n ones and a
    zero (inverted for negative numbers), then 7n-1 bits of two's complement value."""
    magnitude = ~value if value < 0 else value
    length = next(n for n in range(1, 11) if magnitude < 1 << (7 * n - 1))
    header = ((1 << length) - 1) << (7 * length)
    return ((value & ((1 << (8 * length)) - 1)) ^ header).to_bytes(length, "big")


def slice_key(name: str, extents: list[tuple[int, int | None]]) -> bytes:
    """OrderedCode (0, name, rank, start_0, length_0, ...); a whole dimension's length is -1."""
    escaped = b"".join({0: b"\x00\xff", 255: b"\xff\x00"}.get(c, bytes([c])) for c in name.encode())
    rank = len(extents).to_bytes(max(1, (len(extents).bit_length() + 7) // 8), "big") if extents else b""
    key = b"\x00" + escaped + b"\x00\x01" + bytes([len(rank)]) + rank
    for start, length in extents:
        key += ordered_signed(start) + ordered_signed(-1 if length is None else length)
    return key


# ---------------------------------------------------------------------------------------------
# the sorted table

Handles = list  # of (separator key, block offset, block size)


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    if not restarts:
        restarts = [0]
    out += b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")
    return bytes(out)


def _with_trailer(contents: bytes) -> bytes:
    return contents + b"\x00" + masked(crc32c_bitwise(contents + b"\x00")).to_bytes(4, "little")


def write_table(path: Path, entries: list[tuple[bytes, bytes]], per_block: int = 3, sort: bool = True,
                mangle_index: Callable[[Handles], Handles] | None = None, raw_blocks: list[bytes] | None = None) -> None:
    """A sorted table with ``per_block`` entries a data block (small: several blocks).
    ``sort=False`` keeps the entries' order; ``mangle_index`` rewrites the index block's
    ``(separator, offset, size)`` handles; ``raw_blocks`` are block contents appended (with a
    valid trailer) before the index, after the data blocks, for handles to point at."""
    entries = sorted(entries) if sort else list(entries)
    out, index = bytearray(), []
    for start in range(0, len(entries), per_block):
        chunk = entries[start : start + per_block]
        offset, contents = len(out), _block(chunk, restart_interval=2)
        out += _with_trailer(contents)
        index.append((chunk[-1][0], offset, len(contents)))
    for contents in raw_blocks or []:
        out += _with_trailer(contents)
    if mangle_index is not None:
        index = mangle_index(index)
    meta_offset, meta = len(out), _block([], 1)
    out += _with_trailer(meta)
    index_block = _block([(key, varint(offset) + varint(size)) for key, offset, size in index], 1)
    index_offset = len(out)
    out += _with_trailer(index_block)
    handles = varint(meta_offset) + varint(len(meta)) + varint(index_offset) + varint(len(index_block))
    out += handles.ljust(40, b"\x00") + MAGIC.to_bytes(8, "little")
    path.write_bytes(bytes(out))


def raw_block(entries: list[tuple[int, int, bytes, bytes]], restarts: list[int] | None = None) -> bytes:
    """Block contents from ``(shared, unshared, key suffix, value)`` entries, written as given."""
    out = bytearray()
    for shared, unshared, suffix, value in entries:
        out += varint(shared) + varint(unshared) + varint(len(value)) + suffix + value
    restarts = [0] if restarts is None else restarts
    return bytes(out) + b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")


# ---------------------------------------------------------------------------------------------
# V2 bundles


@dataclass
class Bundle:
    """A V2 checkpoint before encoding: index entries as proto trees, and the shard files."""

    entries: list[tuple[bytes, Message]]
    shard_data: list[bytes]
    shard_names: list[str] = field(default_factory=list)


def _stored(array: np.ndarray, big_endian: bool) -> bytes:
    return array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).tobytes()


def bundle_parts(tensors: dict[str, np.ndarray], shards: int = 1, partitioned: dict[str, int] | None = None,
                 strings: dict[str, list[bytes]] | None = None, bfloat16: dict[str, np.ndarray] | None = None,
                 big_endian: bool = False, partition_axis: int = 0) -> Bundle:
    """A checkpoint of ``tensors``: tensor ``i`` goes to shard ``i % shards``;
    ``partitioned[name] = k`` stores it in ``k`` slices along ``partition_axis`` (the other
    dimensions written as whole-dimension extents); ``bfloat16`` arrays are stored as bfloat16
    (truncated float32 bits)."""
    partitioned = partitioned or {}
    shard_data = [bytearray() for _ in range(shards)]
    entries: list[tuple[bytes, Message]] = [(b"", header_tree(shards, big_endian))]
    for i, (name, array) in enumerate(sorted(tensors.items())):
        array = np.array(array, order="C")  # (ascontiguousarray would make a scalar 1-d)
        dtype = DTYPE_NUMBERS[array.dtype]
        pieces: list[tuple[np.ndarray, list | None]] = [(array, None)]
        if name in partitioned:
            bounds = np.array_split(np.arange(array.shape[partition_axis]), partitioned[name])
            pieces = []
            for b in bounds:
                extent: list[tuple[int, int | None]] = [(0, None)] * array.ndim
                extent[partition_axis] = (int(b[0]), len(b))
                pieces.append((np.take(array, b, axis=partition_axis), extent))
            entries.append((name.encode(), entry_tree(dtype, array.shape, 0, 0, None, [e for _, e in pieces])))
        for piece, extent in pieces:
            shard = i % shards
            data = _stored(piece, big_endian)
            offset = len(shard_data[shard])
            shard_data[shard] += data
            key = name.encode() if extent is None else slice_key(name, extent)
            entries.append((key, entry_tree(dtype, piece.shape, shard, offset, data)))
    for name, array in (bfloat16 or {}).items():
        bits = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype(">u2" if big_endian else "<u2")
        data, offset = bits.tobytes(), len(shard_data[0])
        shard_data[0] += data
        entries.append((name.encode(), entry_tree(BFLOAT16, array.shape, 0, offset, data)))
    for name, values in (strings or {}).items():  # lengths, their masked CRC, then the bytes
        lengths = b"".join(varint(len(v)) for v in values)
        data, offset = lengths + b"\x00\x00\x00\x00" + b"".join(values), len(shard_data[0])
        shard_data[0] += data
        entries.append((name.encode(), [(1, STRING), (2, shape_tree((len(values),)))] + [(4, offset)] * bool(offset)
                        + [(5, len(data))]))
    names = [f"data-{n:05d}-of-{shards:05d}" for n in range(shards)]
    return Bundle(entries, [bytes(d) for d in shard_data], names)


def write_parts(prefix: Path, bundle: Bundle, sort: bool = True, per_block: int = 3,
                mangle_index: Callable[[Handles], Handles] | None = None) -> None:
    """Encode ``bundle`` at ``prefix`` (``sort=False`` keeps its entries' order)."""
    entries = [(key, encode(tree)) for key, tree in bundle.entries]
    write_table(Path(f"{prefix}.index"), entries, per_block=per_block, sort=sort, mangle_index=mangle_index)
    for name, data in zip(bundle.shard_names, bundle.shard_data):
        Path(f"{prefix}.{name}").write_bytes(data)


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], shards: int = 1,
                 partitioned: dict[str, int] | None = None, strings: dict[str, list[bytes]] | None = None,
                 bfloat16: dict[str, np.ndarray] | None = None, big_endian: bool = False) -> None:
    """Write ``tensors`` (numpy arrays) as a V2 checkpoint at ``prefix`` (see ``bundle_parts``)."""
    write_parts(prefix, bundle_parts(tensors, shards, partitioned, strings, bfloat16, big_endian))


# ---------------------------------------------------------------------------------------------
# V1 files

_V1_INT_FIELDS = {np.dtype(np.int32): 7, np.dtype(np.int16): 7, np.dtype(np.int8): 7, np.dtype(np.uint8): 7,
                  np.dtype(np.uint16): 7, np.dtype(np.int64): 10, np.dtype(np.bool_): 11,
                  np.dtype(np.uint32): 16, np.dtype(np.uint64): 17}


def tensor_tree(array: np.ndarray) -> Message:
    """A TensorProto with the typed repeated field TF's V1 writer uses for the dtype (packed)."""
    flat = array.reshape(-1)
    tree: Message = [(1, DTYPE_NUMBERS[array.dtype]), (2, shape_tree(array.shape))]
    if array.dtype == np.float32:
        return tree + [(5, flat.astype("<f4").tobytes())]
    if array.dtype == np.float64:
        return tree + [(6, flat.astype("<f8").tobytes())]
    if array.dtype == np.float16:
        return tree + [(13, b"".join(varint(int(v)) for v in flat.view(np.uint16)))]
    return tree + [(_V1_INT_FIELDS[array.dtype], b"".join(varint(int(v)) for v in flat))]


def _v1_extent(array: np.ndarray, rows: np.ndarray | None) -> Message:
    """A V1 slice: none at all for a whole tensor; else rows along axis 0, the rest whole."""
    if rows is None:
        return []
    return slice_tree([(int(rows[0]), len(rows))] + [(0, None)] * (array.ndim - 1))


@dataclass
class V1Files:
    """A V1 checkpoint before encoding: per file, its meta tree and its slice entries."""

    metas: list[Message]
    slices: list[list[tuple[bytes, Message]]]


def v1_parts(tensors: dict[str, np.ndarray], parts: dict[str, int] | None = None, shards: int = 1) -> V1Files:
    """``parts[name] = k`` stores a tensor as ``k`` slices along axis 0; with ``shards`` files,
    tensor ``i`` (or slice ``j`` of a partitioned one) goes to file ``i % shards`` (``j % shards``),
    whose metadata lists the tensor with the slices that file holds."""
    parts = parts or {}
    metas: list[dict[str, Message]] = [{} for _ in range(shards)]
    slices: list[list[tuple[bytes, Message]]] = [[] for _ in range(shards)]
    for i, (name, array) in enumerate(sorted(tensors.items())):
        array = np.array(array, order="C")
        bounds = np.array_split(np.arange(array.shape[0]), parts[name]) if name in parts else [None]
        for number, rows in enumerate(bounds):
            file = (number if name in parts else i) % shards
            piece = array if rows is None else array[rows[0] : rows[-1] + 1]
            extent = _v1_extent(array, rows)
            meta = metas[file].setdefault(name, [(1, name.encode()), (2, shape_tree(array.shape)),
                                                 (3, DTYPE_NUMBERS[array.dtype])])
            meta.append((4, extent))
            saved: Message = [(1, name.encode()), (2, extent), (3, tensor_tree(piece))]
            slices[file].append((name.encode() + bytes([1, number]), [(2, saved)]))
    return V1Files([[(1, [(1, m) for m in file.values()])] for file in metas], slices)


def v1_names(prefix: Path, shards: int) -> list[Path]:
    if shards == 1:
        return [Path(prefix)]
    return [Path(f"{prefix}-{n:05d}-of-{shards:05d}") for n in range(shards)]


def write_v1_parts(prefix: Path, files: V1Files, sort: bool = True) -> list[Path]:
    paths = v1_names(prefix, len(files.metas))
    for path, meta, slices in zip(paths, files.metas, files.slices):
        entries = [(b"", encode(meta))] + [(key, encode(tree)) for key, tree in slices]
        write_table(path, entries, sort=sort)
    return paths


def write_v1(prefix: Path, tensors: dict[str, np.ndarray], parts: dict[str, int] | None = None,
             shards: int = 1) -> list[Path]:
    """A V1 checkpoint: one file at ``prefix``, or ``shards`` files ``prefix-0000i-of-0000N``;
    metadata under the empty key, then one entry per slice (see ``v1_parts``)."""
    return write_v1_parts(prefix, v1_parts(tensors, parts, shards))
