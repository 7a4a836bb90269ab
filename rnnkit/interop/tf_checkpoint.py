"""TensorFlow checkpoints (the V2 "tensor bundle") read without TensorFlow or protobuf.

A checkpoint ``prefix`` is ``prefix.index`` (a LevelDB-format sorted table: tensor name ->
``BundleEntryProto``; the empty key holds the ``BundleHeaderProto``) and the shard files
``prefix.data-00000-of-0000N`` holding the raw row-major tensor bytes. A directory means the
checkpoint its ``checkpoint`` state file names. Every index block's CRC32C is checked, and so is
every tensor read (``verify=False`` skips the tensors' checks). Shard files are memory-mapped,
so a large checkpoint is not read whole.

Partitioned variables (``fixed_size_partitioner``, ``LSTMCell(num_unit_shards=...)``) are
reassembled; string tensors are listed but not loaded. The old V1 format is read by
``tf_checkpoint_v1`` (``open_checkpoint`` picks the reader). Not read: the snappy-compressed
index blocks of TF 1.1-era merged bundles (a clear error).
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._wire import FormatError, crc32c, proto_fields, read_varint, signed64, unmask_crc

__all__ = ["FormatError", "TFCheckpoint", "list_variables", "load_variables", "open_checkpoint"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_DTYPES: dict[int, Any] = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
    10: np.bool_, 14: "bfloat16", 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}
_STRING = 7


@dataclass
class _Entry:
    """One ``BundleEntryProto``: where a tensor's bytes are and what they hold."""

    dtype: int = 0
    shape: tuple[int, ...] = ()
    shard: int = 0
    offset: int = 0
    size: int = 0
    crc: int | None = None
    slices: list[list[tuple[int, int | None]]] = field(default_factory=list)


def _parse_shape(data: bytes) -> tuple[int, ...]:
    dims = []
    for number, _, value in proto_fields(data):
        if number == 2 and isinstance(value, bytes):
            size = next((signed64(v) for n, _, v in proto_fields(value) if n == 1 and isinstance(v, int)), 0)
            dims.append(size)
    return tuple(dims)


def _parse_slice(data: bytes) -> list[tuple[int, int | None]]:
    extents = []
    for number, _, value in proto_fields(data):
        if number == 1 and isinstance(value, bytes):
            fields = {n: v for n, _, v in proto_fields(value)}
            start = signed64(int(fields.get(1, 0)))
            length = signed64(int(fields[2])) if 2 in fields else None
            extents.append((start, length))
    return extents


def _parse_entry(data: bytes) -> _Entry:
    entry = _Entry()
    for number, _, value in proto_fields(data):
        if number == 1 and isinstance(value, int):
            entry.dtype = value
        elif number == 2 and isinstance(value, bytes):
            entry.shape = _parse_shape(value)
        elif number == 3 and isinstance(value, int):
            entry.shard = value
        elif number == 4 and isinstance(value, int):
            entry.offset = signed64(value)
        elif number == 5 and isinstance(value, int):
            entry.size = signed64(value)
        elif number == 6 and isinstance(value, int):
            entry.crc = value
        elif number == 7 and isinstance(value, bytes):
            entry.slices.append(_parse_slice(value))
    return entry


# ---------------------------------------------------------------------------------------------
# the sorted table (LevelDB's format, as TF writes it)


def _block(data: memoryview, offset: int, size: int, where: str) -> memoryview:
    """A block's contents, its trailer checked (compression type, masked CRC32C)."""
    end = offset + size
    if offset < 0 or end + 5 > len(data):
        raise FormatError(f"{where}: a block at offset {offset} runs past the end of the file (truncated?)")
    contents, kind = data[offset:end], data[end]
    stored = int.from_bytes(data[end + 1 : end + 5], "little")
    if unmask_crc(stored) != crc32c(bytes(contents) + bytes([kind])):
        raise FormatError(f"{where}: checksum mismatch in the block at offset {offset} (corrupt file)")
    if kind == 1:
        raise FormatError(f"{where}: snappy-compressed blocks (TF 1.1-era bundles) are not supported")
    if kind != 0:
        raise FormatError(f"{where}: unknown block compression type {kind}")
    return contents


def _block_entries(block: memoryview, where: str) -> Iterator[tuple[bytes, memoryview]]:
    if len(block) < 4:
        raise FormatError(f"{where}: a block too short for its restart array")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise FormatError(f"{where}: a block's restart array is larger than the block")
    position, key = 0, b""
    while position < limit:
        shared, position = read_varint(block, position)
        unshared, position = read_varint(block, position)
        value_length, position = read_varint(block, position)
        if shared > len(key) or position + unshared + value_length > limit:
            raise FormatError(f"{where}: a table entry runs past its block")
        key = key[:shared] + bytes(block[position : position + unshared])
        position += unshared
        yield key, block[position : position + value_length]
        position += value_length


def _table(path: Path) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a sorted-table file, in order."""
    data = memoryview(path.read_bytes())
    where = str(path)
    if len(data) < _FOOTER:
        raise FormatError(f"{where}: too short to be a checkpoint index (truncated?)")
    footer = data[-_FOOTER:]
    if int.from_bytes(footer[40:48], "little") != _MAGIC:
        raise FormatError(f"{where}: bad magic number: not a TensorFlow checkpoint index")
    _, position = read_varint(footer, 0)  # the meta-index block handle: TF writes it empty
    _, position = read_varint(footer, position)
    index_offset, position = read_varint(footer, position)
    index_size, _ = read_varint(footer, position)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, where), where):
        offset, position = read_varint(handle, 0)
        size, _ = read_varint(handle, position)
        entries.extend((key, bytes(value)) for key, value in _block_entries(_block(data, offset, size, where), where))
    return entries


# ---------------------------------------------------------------------------------------------
# the bundle


def _resolve_prefix(path: str | Path) -> Path:
    """A checkpoint prefix from a prefix, its ``.index`` file, or a directory with a
    ``checkpoint`` state file."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if not state.is_file():
            raise FormatError(f"{path}: a directory without a 'checkpoint' file naming its latest checkpoint")
        match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', state.read_text(), re.MULTILINE)
        if match is None:
            raise FormatError(f"{state}: no model_checkpoint_path in it")
        named = Path(_unescape(match.group(1)))
        return named if named.is_absolute() else path / named
    if path.suffix == ".index":
        return path.with_suffix("")
    return path


def _unescape(text: str) -> str:
    """A text-format proto string's contents: C escapes (``\\ooo`` octal for non-ASCII UTF-8
    bytes, ``\\"``, ...) decoded; text that is not an escaped ASCII literal is kept as it is."""
    try:
        return ast.literal_eval(f'b"{text}"').decode("utf-8")
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return text


class TFCheckpoint:
    """An open V2 checkpoint: its tensor names, shapes and dtypes, and their values on demand."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.prefix = _resolve_prefix(path)
        self.verify = verify
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise FormatError(f"{index}: no such checkpoint index")
        self._index = index
        entries = _table(index)
        if not entries or entries[0][0] != b"":
            raise FormatError(f"{index}: the bundle header (the empty key) is missing")
        header = {n: v for n, _, v in proto_fields(entries[0][1])}
        self.num_shards = int(header.get(1, 1))
        self.big_endian = int(header.get(2, 0)) == 1
        self._entries: dict[str, _Entry] = {}
        self._slice_keys: dict[str, list[_Entry]] = {}
        for key, value in entries[1:]:
            if key.startswith(b"\x00"):  # a slice of a partitioned variable
                self._slice_keys.setdefault(_slice_key_name(key, index), []).append(_parse_entry(value))
            else:
                self._entries[key.decode("utf-8", errors="replace")] = _parse_entry(value)
        self._shards: dict[int, np.ndarray] = {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def is_string(self, name: str) -> bool:
        return self._entry(name).dtype == _STRING

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (bfloat16 widened to float32)."""
        entry = self._entry(name)
        if entry.dtype == _STRING:
            raise FormatError(f"{self._index}: {name} is a string tensor; only numeric tensors are read")
        if entry.slices:
            return self._reassemble(name, entry)
        return self._read_entry(name, entry, entry.shape)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self._index}: no tensor named {name!r}") from None

    def _shard(self, number: int) -> np.ndarray:
        if number not in self._shards:
            if not 0 <= number < max(self.num_shards, 1):
                raise FormatError(f"{self._index}: shard {number} of {self.num_shards} does not exist")
            path = Path(f"{self.prefix}.data-{number:05d}-of-{self.num_shards:05d}")
            if not path.is_file():
                raise FormatError(f"{path}: missing shard file")
            empty = path.stat().st_size == 0  # np.memmap refuses empty files
            self._shards[number] = np.zeros(0, np.uint8) if empty else np.memmap(path, dtype=np.uint8, mode="r")
        return self._shards[number]

    def _read_entry(self, name: str, entry: _Entry, shape: tuple[int, ...]) -> np.ndarray:
        kind = _DTYPES.get(entry.dtype)
        if kind is None:
            raise FormatError(f"{self._index}: {name} has an unsupported dtype (DataType {entry.dtype})")
        shard = self._shard(entry.shard)
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > len(shard):
            raise FormatError(f"{self._index}: {name}'s bytes lie outside shard {entry.shard} (truncated data file?)")
        raw = shard[entry.offset : entry.offset + entry.size]
        if self.verify and entry.crc is not None and unmask_crc(entry.crc) != crc32c(raw.tobytes()):
            raise FormatError(f"{self.prefix}.data-{entry.shard:05d}: checksum mismatch in tensor {name}")
        itemsize = 2 if kind == "bfloat16" else np.dtype(kind).itemsize
        count = int(np.prod(shape, dtype=np.int64))
        if entry.size != count * itemsize:
            raise FormatError(f"{self._index}: {name} holds {entry.size} bytes, not {count} x {itemsize} for {shape}")
        if kind == "bfloat16":
            bits = np.frombuffer(raw, dtype=">u2" if self.big_endian else "<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(shape)
        dtype = np.dtype(kind).newbyteorder(">" if self.big_endian else "<")
        return np.frombuffer(raw, dtype=dtype).astype(np.dtype(kind), copy=False).reshape(shape)

    def _reassemble(self, name: str, entry: _Entry) -> np.ndarray:
        """A partitioned variable from its slices (stored in the order of their starts)."""
        parts = self._slice_keys.get(name, [])
        extents = sorted(entry.slices, key=lambda s: tuple(start for start, _ in s))
        if len(parts) != len(extents):
            raise FormatError(f"{self._index}: {name} has {len(extents)} slices but {len(parts)} stored parts")
        kind = _DTYPES.get(entry.dtype)
        full = np.zeros(entry.shape, dtype=np.float32 if kind == "bfloat16" else kind)
        for extent, part in zip(extents, parts):
            index = tuple(
                slice(start, None if length is None else start + length) for start, length in extent
            )
            target = full[index]
            full[index] = self._read_entry(name, replace(part, dtype=entry.dtype), target.shape)
        return full


def _slice_key_name(key: bytes, where: Path) -> str:
    """The variable name in a slice key: OrderedCode (0, name, ...) with 0x00/0xff escaped."""
    name, position = bytearray(), 1
    while position + 1 < len(key):
        byte, following = key[position], key[position + 1]
        if byte == 0x00 and following == 0x01:
            return name.decode("utf-8", errors="replace")
        if byte in (0x00, 0xFF):
            name.append(byte)
            position += 2
        else:
            name.append(byte)
            position += 1
    raise FormatError(f"{where}: a malformed partitioned-variable key")


def open_checkpoint(path: str | Path, verify: bool = True) -> Any:
    """A V2 checkpoint (``TFCheckpoint``) or a V1 one (``TFCheckpointV1``), by what is on disk."""
    from .tf_checkpoint_v1 import TFCheckpointV1, v1_files

    prefix = _resolve_prefix(path)
    if Path(f"{prefix}.index").is_file():
        return TFCheckpoint(prefix, verify=verify)
    files = v1_files(prefix)
    if files:
        return TFCheckpointV1(files)
    raise FormatError(f"{prefix}: no checkpoint there (neither {prefix}.index nor a V1 file)")


def list_variables(path: str | Path) -> list[tuple[str, list[int]]]:
    """``(name, shape)`` of every tensor in the checkpoint, sorted by name (as TF's
    ``tf.train.list_variables``)."""
    checkpoint = open_checkpoint(path)
    return [(name, list(checkpoint.shape(name))) for name in checkpoint.names()]


def load_variables(path: str | Path, names: list[str] | None = None, verify: bool = True) -> dict[str, np.ndarray]:
    """The numeric tensors of a checkpoint by name (all, or ``names``); string tensors are
    skipped with a warning. Arrays are read-only views of the memory-mapped shard files."""
    checkpoint = open_checkpoint(path, verify=verify)
    wanted = checkpoint.names() if names is None else list(names)
    result, skipped = {}, []
    for name in wanted:
        if checkpoint.is_string(name):
            skipped.append(name)
            continue
        result[name] = checkpoint.read(name)
    if skipped:
        warnings.warn(f"string tensors not loaded: {', '.join(skipped)}", stacklevel=2)
    return result
