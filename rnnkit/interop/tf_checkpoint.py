"""TensorFlow checkpoints (the V2 "tensor bundle") read without TensorFlow or protobuf.

A checkpoint ``prefix`` is ``prefix.index`` (a LevelDB-format sorted table: tensor name ->
``BundleEntryProto``; the empty key holds the ``BundleHeaderProto``) and the shard files
``prefix.data-00000-of-0000N`` holding the raw row-major tensor bytes; every form of path TF
accepts is resolved by ``checkpoint_paths``. Every index block's CRC32C is checked, and so is
every tensor read (``verify=False`` skips the tensors' checks).

Files are untrusted: anything malformed raises ``FormatError`` naming the file (and tensor), and
nothing larger than the bytes present is allocated. A tensor's bytes are read (not mapped) into
a fresh array, checked, and returned: the array owns its memory, so later changes to the file do
not reach it.

Partitioned variables (``fixed_size_partitioner``, ``LSTMCell(num_unit_shards=...)``) are
reassembled, their slices checked to cover the tensor exactly; string tensors are listed but not
loaded. The old V1 format is read by ``tf_checkpoint_v1`` (``open_checkpoint`` picks the
reader). Not read: the snappy-compressed index blocks of TF 1.1-era merged bundles.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._bundle_format import (
    BFLOAT16,
    STRING,
    Box,
    BundleEntry,
    box_index,
    box_shape,
    check_coverage,
    check_listed,
    check_numeric,
    decode_slice_key,
    element_count,
    is_file,
    itemsize,
    numpy_dtype,
    parse_entry,
    read_table,
    resolve_extents,
    utf8,
)
from ._wire import FormatError, crc32c_of_array, int32, last_int, located, parse_message, unmask_crc
from .checkpoint_paths import resolve_prefix
from .tf_checkpoint_v1 import TFCheckpointV1, v1_files

__all__ = ["FormatError", "TFCheckpoint", "list_variables", "load_variables", "open_checkpoint"]

_KERNEL_VERSION = 1  # kTensorBundleVersion: the newest bundle version this reader understands


# ---------------------------------------------------------------------------------------------
# the bundle


def _parse_header(value: bytes) -> tuple[int, bool]:
    """``(num_shards, big_endian)`` of a ``BundleHeaderProto``."""
    fields = parse_message(value, {1: 0, 2: 0, 3: 2}, "BundleHeaderProto")
    num_shards = int32(last_int(fields, 1), "num_shards")
    endianness = last_int(fields, 2)
    if num_shards < 1:
        raise FormatError(f"the bundle header says {num_shards} shards")
    if endianness not in (0, 1):
        raise FormatError(f"the bundle header's endianness is {endianness} (0 little or 1 big)")
    if 3 in fields:
        version = parse_message(fields[3][-1], {2: 0}, "VersionDef")  # type: ignore[arg-type]
        min_consumer = int32(last_int(version, 2), "version.min_consumer")
        if min_consumer > _KERNEL_VERSION:
            raise FormatError(f"written for bundle readers of version >= {min_consumer}; this one is {_KERNEL_VERSION}")
    return num_shards, endianness == 1


class TFCheckpoint:
    """An open V2 checkpoint: its tensor names, shapes and dtypes, and their values on demand."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.prefix = resolve_prefix(path)
        self.verify = verify
        self._index = index = Path(f"{self.prefix}.index")
        if not is_file(index):
            raise FormatError(f"{index}: no such checkpoint index")
        entries = read_table(index)
        self._entries: dict[str, BundleEntry] = {}
        self._slices: dict[str, list[tuple[list, BundleEntry]]] = {}
        with located(str(index)):
            if not entries or entries[0][0] != b"":
                raise FormatError("the bundle header (the empty key) is missing")
            self.num_shards, self.big_endian = _parse_header(entries[0][1])
            for key, value in entries[1:]:
                self._add(key, value)
            for name in self._slices:
                if name not in self._entries:
                    raise FormatError(f"{name}: slices stored for a tensor the checkpoint does not list")

    def _add(self, key: bytes, value: bytes) -> None:
        """One table entry: a tensor, or (key starting with 0x00) a slice of a partitioned one."""
        if key.startswith(b"\x00"):
            name, extents = decode_slice_key(key)
            with located(name):
                self._slices.setdefault(name, []).append((extents, parse_entry(value)))
        else:
            name = utf8(key, "a tensor name")
            with located(name):
                self._entries[name] = parse_entry(value)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def is_string(self, name: str) -> bool:
        return self._entry(name).dtype == STRING

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array that owns its memory (bfloat16 widened to float32)."""
        entry = self._entry(name)
        with located(f"{self._index}: {name}"):
            check_numeric(entry.dtype)
            if entry.slices or name in self._slices:
                return self._reassemble(name, entry)
            return self._load(entry, entry.shape)

    def _entry(self, name: str) -> BundleEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self._index}: no tensor named {name!r}") from None

    def _shard_path(self, number: int) -> Path:
        if not 0 <= number < self.num_shards:
            raise FormatError(f"shard {number} of {self.num_shards} does not exist")
        return Path(f"{self.prefix}.data-{number:05d}-of-{self.num_shards:05d}")

    def _check_stored(self, entry: BundleEntry, shape: tuple[int, ...]) -> Path:
        """What can be checked before reading: byte count, CRC present, bytes inside the shard."""
        expected = element_count(shape) * itemsize(entry.dtype)
        if entry.size != expected:
            raise FormatError(f"holds {entry.size} bytes, expected {expected} for shape {list(shape)}")
        if self.verify and entry.crc is None:
            raise FormatError("no crc32c in its entry (data loss): cannot be verified")
        path = self._shard_path(entry.shard)
        if not is_file(path):
            raise FormatError(f"{path}: missing shard file")
        length = path.stat().st_size
        if entry.offset + entry.size > length:
            raise FormatError(
                f"bytes [{entry.offset}, {entry.offset + entry.size}) lie outside shard {entry.shard}"
                f" ({length} bytes; truncated data file?)"
            )
        return path

    def _load(self, entry: BundleEntry, shape: tuple[int, ...]) -> np.ndarray:
        """One stored tensor (or slice), read into a fresh array and checked."""
        path = self._check_stored(entry, shape)
        native = entry.dtype != BFLOAT16 and not self.big_endian
        out = np.empty(shape, numpy_dtype(entry.dtype)) if native else np.empty(entry.size, np.uint8)
        raw = out.reshape(-1).view(np.uint8)
        _read_into(path, entry.offset, raw)
        if self.verify and unmask_crc(entry.crc or 0) != crc32c_of_array(raw):
            raise FormatError(f"{path}: checksum mismatch in the tensor's bytes")
        if not native:
            out = _decode(raw, entry.dtype, self.big_endian).reshape(shape)
        if out.dtype == np.bool_ and out.view(np.uint8).max(initial=0) > 1:
            raise FormatError("bool values other than 0 and 1")
        return out

    def _reassemble(self, name: str, entry: BundleEntry) -> np.ndarray:
        """A partitioned variable from its slices, every check made before the full array is
        allocated: the listed and the stored slices agree, each slice's bytes are present and
        disjoint from the others', and the slices cover the tensor exactly."""
        listed = [resolve_extents(extents, entry.shape) for extents in entry.slices]
        stored: dict[Box, BundleEntry] = {}
        for extents, part in self._slices.get(name, []):
            box = resolve_extents(extents, entry.shape)
            if box in stored:
                raise FormatError(f"two stored slices with the extent {[list(b) for b in box]}")
            stored[box] = part
        check_listed(listed, list(stored))
        for box, part in stored.items():
            if part.dtype != entry.dtype or part.shape != box_shape(box):
                raise FormatError(
                    f"a slice stored as DataType {part.dtype} {list(part.shape)}, expected"
                    f" DataType {entry.dtype} {list(box_shape(box))}"
                )
            self._check_stored(part, part.shape)
        _check_disjoint(list(stored.values()))
        check_coverage(entry.shape, listed)
        full = np.empty(entry.shape, numpy_dtype(entry.dtype))
        for box, part in stored.items():
            full[box_index(box)] = self._load(part, part.shape)
        return full


def _check_disjoint(parts: list[BundleEntry]) -> None:
    """No two slices share stored bytes (so their total is bounded by the shard files' sizes)."""
    spans = sorted((part.shard, part.offset, part.size) for part in parts if part.size)
    for (shard, offset, size), (next_shard, next_offset, _) in zip(spans, spans[1:]):
        if shard == next_shard and offset + size > next_offset:
            raise FormatError(f"slices share bytes in shard {shard} (at offsets {offset} and {next_offset})")


def _read_into(path: Path, offset: int, out: np.ndarray) -> None:
    """Fill ``out`` (uint8) with the file's bytes at ``offset``."""
    view, filled = memoryview(out.data), 0
    with path.open("rb") as file:
        file.seek(offset)
        while filled < len(view):
            count = file.readinto(view[filled:])
            if not count:
                raise FormatError(f"{path}: ends inside a tensor's bytes (changed while being read?)")
            filled += count


def _decode(raw: np.ndarray, dtype: int, big_endian: bool) -> np.ndarray:
    """Stored bytes in another byte order, or bfloat16 bits, as a native array."""
    order: Literal[">", "<"] = ">" if big_endian else "<"
    if dtype == BFLOAT16:
        return (raw.view(f"{order}u2").astype(np.uint32) << 16).view(np.float32)
    kind = numpy_dtype(dtype)
    return raw.view(kind.newbyteorder(order)).astype(kind)


def open_checkpoint(path: str | Path, verify: bool = True) -> Any:
    """A V2 checkpoint (``TFCheckpoint``) or a V1 one (``TFCheckpointV1``), by what is on disk.

    ``path`` is any form TF accepts (see ``checkpoint_paths.resolve_prefix``): a prefix (``model.ckpt-1000``,
    ``model.weights/``), one of its files, or a directory; a ``FormatError`` names what was tried
    when none holds a checkpoint."""
    prefix = resolve_prefix(path)
    if is_file(Path(f"{prefix}.index")):
        return TFCheckpoint(prefix, verify=verify)
    return TFCheckpointV1(v1_files(Path(prefix)))


def list_variables(path: str | Path) -> list[tuple[str, list[int]]]:
    """``(name, shape)`` of every tensor in the checkpoint, sorted by name (as TF's
    ``tf.train.list_variables``)."""
    checkpoint = open_checkpoint(path)
    return [(name, list(checkpoint.shape(name))) for name in checkpoint.names()]


def load_variables(path: str | Path, names: list[str] | None = None, verify: bool = True) -> dict[str, np.ndarray]:
    """The numeric tensors of a checkpoint by name (all, or ``names``); string tensors are
    skipped with a warning. Each array owns its (writable) memory."""
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
