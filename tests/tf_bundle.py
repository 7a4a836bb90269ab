"""A minimal, independent writer of TensorFlow V2 checkpoints (tensor bundles), for tests.

Written from the format's description (shared/docs/interop.md §1), separately from the reader
in rnnkit/interop: its own varints, protobuf encoding and bitwise CRC32C. It writes what TF
writes: an uncompressed sorted table with prefix-compressed keys, restart points, block CRCs and
the 48-byte footer; raw row-major tensor bytes in shard files; partitioned variables as slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DTYPE_NUMBERS = {
    np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.uint8): 4,
    np.dtype(np.int64): 9, np.dtype(np.bool_): 10, np.dtype(np.float16): 19,
}
BFLOAT16 = 14
STRING = 7


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, data: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(data)) + data


def field_fixed32(number: int, value: int) -> bytes:
    return varint((number << 3) | 5) + value.to_bytes(4, "little")


def crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def shape_proto(shape: tuple[int, ...]) -> bytes:
    return b"".join(field_bytes(2, field_varint(1, size)) for size in shape)


def entry_proto(dtype: int, shape: tuple[int, ...], shard: int, offset: int, data: bytes | None,
                slices: list[list[tuple[int, int]]] | None = None) -> bytes:
    out = field_varint(1, dtype) + field_bytes(2, shape_proto(shape))
    if shard:
        out += field_varint(3, shard)
    if offset:
        out += field_varint(4, offset)
    if data is not None:
        out += field_varint(5, len(data)) + field_fixed32(6, masked(crc32c_bitwise(data)))
    for extents in slices or []:
        out += field_bytes(7, b"".join(field_bytes(1, field_varint(1, s) + field_varint(2, n)) for s, n in extents))
    return out


def slice_key(name: str, extents: list[tuple[int, int]]) -> bytes:
    """OrderedCode (0, name, rank, start_0, length_0, ...) for small numbers (< 64)."""
    escaped = b"".join({0: b"\x00\xff", 255: b"\xff\x00"}.get(c, bytes([c])) for c in name.encode())
    key = b"\x00" + escaped + b"\x00\x01" + bytes([1, len(extents)])
    for start, length in extents:
        assert 0 <= start < 64 and 0 <= length < 64
        key += bytes([0x80 ^ start, 0x80 ^ length])
    return key


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


def write_table(path: Path, entries: list[tuple[bytes, bytes]], per_block: int = 3) -> None:
    """A sorted table with ``per_block`` entries a data block (small: several blocks)."""
    entries = sorted(entries)
    out, index = bytearray(), []
    for start in range(0, len(entries), per_block):
        chunk = entries[start : start + per_block]
        offset, contents = len(out), _block(chunk, restart_interval=2)
        out += _with_trailer(contents)
        index.append((chunk[-1][0], varint(offset) + varint(len(contents))))
    meta_offset, meta = len(out), _block([], 1)
    out += _with_trailer(meta)
    index_offset, index_block = len(out), _block(index, 1)
    out += _with_trailer(index_block)
    handles = varint(meta_offset) + varint(len(meta)) + varint(index_offset) + varint(len(index_block))
    out += handles.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    path.write_bytes(bytes(out))


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], shards: int = 1,
                 partitioned: dict[str, int] | None = None, strings: dict[str, list[bytes]] | None = None,
                 bfloat16: dict[str, np.ndarray] | None = None) -> None:
    """Write ``tensors`` (numpy arrays) as a V2 checkpoint at ``prefix``: tensor ``i`` goes to
    shard ``i % shards``; ``partitioned[name] = k`` stores it in ``k`` slices along axis 0;
    ``bfloat16`` arrays are stored as bfloat16 (truncated float32 bits)."""
    partitioned = partitioned or {}
    shard_data = [bytearray() for _ in range(shards)]
    entries = [(b"", field_varint(1, shards) + field_bytes(3, field_varint(1, 1)))]
    for i, (name, array) in enumerate(sorted(tensors.items())):
        array = np.array(array, order="C")  # (ascontiguousarray would make a scalar 1-d)
        dtype = DTYPE_NUMBERS[array.dtype]
        pieces = [(array, None)]
        if name in partitioned:
            bounds = np.array_split(np.arange(array.shape[0]), partitioned[name])
            pieces = [(array[b[0] : b[-1] + 1], [(int(b[0]), len(b))] + [(0, s) for s in array.shape[1:]]) for b in bounds]
            slices = [extent for _, extent in pieces]
            entries.append((name.encode(), entry_proto(dtype, array.shape, 0, 0, None, slices)))
        for piece, extent in pieces:
            shard = i % shards
            data = piece.tobytes()
            offset = len(shard_data[shard])
            shard_data[shard] += data
            key = name.encode() if extent is None else slice_key(name, extent)
            entries.append((key, entry_proto(dtype, piece.shape, shard, offset, data)))
    for name, array in (bfloat16 or {}).items():
        bits = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
        data, offset = bits.tobytes(), len(shard_data[0])
        shard_data[0] += data
        entries.append((name.encode(), entry_proto(BFLOAT16, array.shape, 0, offset, data)))
    for name, values in (strings or {}).items():  # lengths, their masked CRC, then the bytes
        lengths = b"".join(varint(len(v)) for v in values)
        data, offset = lengths + b"\x00\x00\x00\x00" + b"".join(values), len(shard_data[0])
        shard_data[0] += data
        entries.append((name.encode(), field_varint(1, STRING) + field_bytes(2, shape_proto((len(values),)))
                        + field_varint(4, offset) * bool(offset) + field_varint(5, len(data))))
    write_table(Path(f"{prefix}.index"), entries)
    for number, data in enumerate(shard_data):
        Path(f"{prefix}.data-{number:05d}-of-{shards:05d}").write_bytes(bytes(data))


def _tensor_proto(array: np.ndarray) -> bytes:
    """A TensorProto with typed repeated fields, as the V1 writer stored them."""
    dtype = DTYPE_NUMBERS[array.dtype]
    flat = array.reshape(-1)
    out = field_varint(1, dtype) + field_bytes(2, shape_proto(array.shape))
    if array.dtype == np.float32:
        return out + field_bytes(5, flat.astype("<f4").tobytes())
    if array.dtype == np.float64:
        return out + field_bytes(6, flat.astype("<f8").tobytes())
    if array.dtype == np.float16:
        return out + field_bytes(13, b"".join(varint(int(v)) for v in flat.view(np.uint16)))
    if array.dtype in (np.int64, np.int32, np.bool_):
        number = {np.dtype(np.int64): 10, np.dtype(np.int32): 7, np.dtype(np.bool_): 11}[array.dtype]
        return out + field_bytes(number, b"".join(varint(int(v)) for v in flat))
    return out + field_bytes(4, flat.tobytes())  # tensor_content


def write_v1(prefix: Path, tensors: dict[str, np.ndarray], parts: dict[str, int] | None = None) -> None:
    """A V1 checkpoint (one file at ``prefix``): metadata under the empty key, then one entry per
    slice; ``parts[name] = k`` stores a tensor as ``k`` slices along axis 0."""
    parts = parts or {}
    metas, entries = b"", []
    for name, array in sorted(tensors.items()):
        array = np.array(array, order="C")
        bounds = np.array_split(np.arange(array.shape[0]), parts[name]) if name in parts else [None]
        slice_protos = []
        for number, rows in enumerate(bounds):
            if rows is None:
                piece, extent = array, b""
            else:
                piece = array[rows[0] : rows[-1] + 1]
                extent = field_bytes(1, field_varint(1, int(rows[0])) + field_varint(2, len(rows)))
                extent += b"".join(field_bytes(1, b"") for _ in array.shape[1:])
            slice_protos.append(extent)
            saved = field_bytes(1, name.encode()) + field_bytes(2, extent) + field_bytes(3, _tensor_proto(piece))
            entries.append((name.encode() + bytes([1, number]), field_bytes(2, saved)))
        meta = field_bytes(1, name.encode()) + field_bytes(2, shape_proto(array.shape))
        meta += field_varint(3, DTYPE_NUMBERS[array.dtype])
        meta += b"".join(field_bytes(4, s) for s in slice_protos)
        metas += field_bytes(1, meta)
    entries.append((b"", field_bytes(1, metas)))
    write_table(Path(prefix), entries)
