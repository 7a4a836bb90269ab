"""The old V1 checkpoint format (``Saver(write_version=V1)``), read without TensorFlow.

The same sorted-table container as V2, one file per shard: the prefix itself, or all N of
``prefix-00000-of-0000N``. The empty key of each file holds ``SavedTensorSlices.meta`` (every
tensor's name, shape, dtype and the slices that file stores); every other entry holds one slice
as a ``TensorProto`` with typed repeated fields (``float_val``, ``double_val``, ``int64_val``,
...) or raw ``tensor_content``. Name and slice are taken from the entry's value, not its key.

Like the V2 reader, every malformed file raises ``FormatError``; a tensor is returned only when
its slices cover it exactly with values in its dtype's range. V1 files have no per-tensor CRC.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._bundle_format import (
    BFLOAT16,
    DTYPES,
    STRING,
    Box,
    Extent,
    box_index,
    box_shape,
    check_coverage,
    check_listed,
    check_numeric,
    element_count,
    is_file,
    itemsize,
    numpy_dtype,
    parse_shape,
    parse_slice,
    read_table,
    resolve_extents,
    utf8,
)
from ._wire import FormatError, last_int, located, parse_message, proto_fields

__all__ = ["TFCheckpointV1", "v1_files"]

_SHARD_SUFFIX = re.compile(r"-(\d{5,})-of-(\d{5,})")


def v1_files(prefix: Path) -> list[Path]:
    """The V1 files of ``prefix``, in shard order (empty when it is not a V1 checkpoint).

    Shard files of two saves side by side (``-of-00002`` and ``-of-00003``) are an error, not a
    guess: TF picks the count from the graph's saver, which this reader does not have."""
    if is_file(prefix):
        return [prefix]
    try:
        candidates = list(prefix.parent.glob(f"{glob.escape(prefix.name)}-*-of-*"))
    except (OSError, ValueError):
        return []
    named = [(path, _SHARD_SUFFIX.fullmatch(path.name[len(prefix.name) :])) for path in sorted(candidates)]
    found = [(int(match[1]), int(match[2]), path) for path, match in named if match and is_file(path)]
    if not found:
        return []
    counts = sorted({count for _, count, _ in found})
    if len(counts) > 1:
        listed = ", ".join(f"-of-{count:05d}" for count in counts)
        raise FormatError(f"{prefix}: V1 shard files of different saves side by side ({listed})")
    count = counts[0]
    shards: dict[int, Path] = {}
    for number, _, path in found:
        if number in shards:
            raise FormatError(f"{prefix}: two files for V1 shard {number}: {shards[number].name}, {path.name}")
        shards[number] = path
    missing = next((i for i, number in enumerate(sorted(shards)) if number != i), len(shards))
    if missing < count:
        raise FormatError(f"{prefix}: missing V1 shard file {prefix.name}-{missing:05d}-of-{count:05d}")
    if len(shards) > count:
        raise FormatError(f"{prefix}: V1 shard {max(shards)} of a save of {count} shards")
    return [shards[number] for number in sorted(shards)]


# ---------------------------------------------------------------------------------------------
# TensorProto values

# DataType -> (the TensorProto field TF's V1 writer stores its values in, smallest, largest)
_VALUE_FIELDS: dict[int, tuple[int, int, int]] = {
    1: (5, 0, 0), 2: (6, 0, 0),  # float_val, double_val: IEEE bits, any value
    3: (7, -(1 << 31), (1 << 31) - 1), 4: (7, 0, 255), 5: (7, -(1 << 15), (1 << 15) - 1), 6: (7, -128, 127),
    17: (7, 0, 65535),  # int_val (int32)
    9: (10, -(1 << 63), (1 << 63) - 1),  # int64_val
    10: (11, 0, 1),  # bool_val
    19: (13, 0, 65535), 14: (13, 0, 65535),  # half_val: float16 and bfloat16 bit patterns
    22: (16, 0, (1 << 32) - 1), 23: (17, 0, (1 << 64) - 1),  # uint32_val, uint64_val
}
_ANY_VALUE_FIELD = set(range(5, 19))  # float_val .. float8_val
_SIGNED = {7, 10, 13}  # int32/int64 fields: negative values are sign-extended varints
# float_val, double_val: (the wire type of one unpacked value, its raw bits, its float type)
_FIXED: dict[int, tuple[int, np.dtype, np.dtype]] = {
    5: (5, np.dtype("<u4"), np.dtype("<f4")), 6: (1, np.dtype("<u8"), np.dtype("<f8")),
}


def _packed_varints(data: bytes) -> np.ndarray:
    """A packed repeated varint field as uint64 values (vectorized: one pass over the bytes)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if not len(raw):
        return np.zeros(0, np.uint64)
    if raw[-1] & 0x80:
        raise FormatError("a packed varint runs past the end of its field")
    ends = np.flatnonzero(raw < 0x80)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise FormatError("a packed varint longer than 10 bytes")
    place = np.arange(len(raw)) - np.repeat(starts, lengths)
    if np.any((place == 9) & (raw > 1)):
        raise FormatError("a packed varint overflows 64 bits")
    parts = (raw & 0x7F).astype(np.uint64) << (7 * place).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


def _field_values(number: int, wire: int, value: int | bytes) -> np.ndarray:
    """One occurrence of a typed field, packed or not, as raw unsigned numbers."""
    if number in _FIXED:
        single, raw, _ = _FIXED[number]
        if wire == 2 and isinstance(value, bytes):
            if len(value) % raw.itemsize:
                raise FormatError(f"packed field {number} of {len(value)} bytes, not a multiple of {raw.itemsize}")
            return np.frombuffer(value, dtype=raw).astype(np.uint64)
        if wire == single and isinstance(value, int):
            return np.array([value], dtype=np.uint64)
    elif wire == 2 and isinstance(value, bytes):
        return _packed_varints(value)
    elif wire == 0 and isinstance(value, int):
        return np.array([value], dtype=np.uint64)
    raise FormatError(f"TensorProto field {number} with wire type {wire}")


def _typed_values(number: int, raws: np.ndarray, dtype: int) -> np.ndarray:
    """Raw field numbers as the dtype's values, each checked to be in the dtype's range."""
    if number in _FIXED:
        _, raw, kind = _FIXED[number]
        return raws.astype(raw).view(kind).astype(numpy_dtype(dtype))
    _, low, high = _VALUE_FIELDS[dtype]
    numbers = raws.view(np.int64) if number in _SIGNED else raws
    if len(numbers) and (int(numbers.min()) < low or int(numbers.max()) > high):
        bad = next(int(v) for v in numbers if not low <= int(v) <= high)
        raise FormatError(f"value {bad} out of range for DataType {dtype} (field {number}: {low}..{high})")
    if dtype == BFLOAT16:
        return (numbers.astype(np.uint32) << 16).view(np.float32)
    if DTYPES[dtype] is np.float16:
        return numbers.astype(np.uint16).view(np.float16)
    return numbers.astype(numpy_dtype(dtype))


def _content_values(content: bytes, dtype: int, count: int) -> np.ndarray:
    """``tensor_content``: raw little-endian element bytes."""
    if len(content) != count * itemsize(dtype):
        raise FormatError(f"tensor_content of {len(content)} bytes for {count} values of DataType {dtype}")
    if dtype == BFLOAT16:
        return (np.frombuffer(content, "<u2").astype(np.uint32) << 16).view(np.float32)
    kind = numpy_dtype(dtype)
    values = np.frombuffer(content, kind.newbyteorder("<")).astype(kind)
    if kind == np.bool_ and values.view(np.uint8).max(initial=0) > 1:
        raise FormatError("bool values other than 0 and 1")
    return values


def tensor_values(tensor_proto: bytes, dtype: int, count: int) -> np.ndarray:
    """The ``count`` flat values of a serialized TensorProto holding DataType ``dtype``: its
    ``tensor_content``, or the one typed field TF's writer uses for the dtype."""
    expected = _VALUE_FIELDS[dtype][0]
    content, chunks = None, []
    for number, wire, value in proto_fields(tensor_proto):
        if number == 1 and isinstance(value, int) and value != dtype:
            raise FormatError(f"a slice's TensorProto says DataType {value}, the metadata {dtype}")
        if number == 4 and isinstance(value, bytes):
            content = value
        elif number == expected:
            chunks.append(_field_values(number, wire, value))
        elif number in _ANY_VALUE_FIELD:
            raise FormatError(f"values in TensorProto field {number}; DataType {dtype} keeps them in field {expected}")
    if content is not None:
        if chunks:
            raise FormatError("a TensorProto with both tensor_content and typed values")
        return _content_values(content, dtype, count)
    raws = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    if len(raws) != count:
        raise FormatError(f"a slice holds {len(raws)} values, its extent {count}")
    return _typed_values(expected, raws, dtype)


# ---------------------------------------------------------------------------------------------
# the checkpoint


@dataclass
class _Tensor:
    """A tensor as the files' metadata describe it, and its slices' data."""

    shape: tuple[int, ...]
    dtype: int
    where: Path  # the first file listing it
    listed: list[list[Extent]] = field(default_factory=list)
    stored: list[tuple[Path, list[Extent], bytes]] = field(default_factory=list)


class TFCheckpointV1:
    """A V1 checkpoint, with the interface of ``TFCheckpoint``."""

    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._tensors: dict[str, _Tensor] = {}
        data: list[tuple[Path, str, list[Extent], bytes]] = []
        for path in files:
            entries = read_table(path)
            with located(str(path)):
                if not entries or entries[0][0] != b"":
                    raise FormatError("no V1 metadata (the empty key) at the start of the table")
                self._read_meta(entries[0][1], path)
                data.extend((path, *self._read_slice(value)) for _, value in entries[1:])
        for path, name, extents, proto in data:
            if name not in self._tensors:
                raise FormatError(f"{path}: {name}: a slice of a tensor no metadata lists")
            self._tensors[name].stored.append((path, extents, proto))

    def _read_meta(self, value: bytes, path: Path) -> None:
        """``SavedTensorSlices.meta``: every tensor of this file (listed once) and its slices."""
        fields = parse_message(value, {1: 2, 2: 2}, "SavedTensorSlices")
        if 1 not in fields or 2 in fields:
            raise FormatError("the metadata entry holds no SavedTensorSliceMeta (or also slice data)")
        here: set[str] = set()
        for meta in fields[1]:
            for tensor in parse_message(meta, {1: 2}, "SavedTensorSliceMeta").get(1, []):  # type: ignore[arg-type]
                self._add_tensor(parse_message(tensor, {1: 2, 2: 2, 3: 0, 4: 2}, "SavedSliceMeta"), path, here)  # type: ignore[arg-type]

    def _add_tensor(self, fields: dict, path: Path, here: set[str]) -> None:
        if 1 not in fields:
            raise FormatError("a tensor without a name in the V1 metadata")
        name = utf8(fields[1][-1], "a tensor name")
        with located(name):
            if name in here:
                raise FormatError("listed twice in the metadata")
            here.add(name)
            shape = parse_shape(fields[2][-1]) if 2 in fields else ()
            dtype = last_int(fields, 3)
            known = self._tensors.setdefault(name, _Tensor(shape, dtype, path))
            if (known.shape, known.dtype) != (shape, dtype):
                raise FormatError(
                    f"DataType {dtype} {list(shape)} here, DataType {known.dtype} {list(known.shape)} in {known.where}"
                )
            known.listed.extend(parse_slice(s) for s in fields.get(4, []))

    @staticmethod
    def _read_slice(value: bytes) -> tuple[str, list[Extent], bytes]:
        """``SavedTensorSlices.data``: one slice's tensor name, extents and TensorProto."""
        fields = parse_message(value, {1: 2, 2: 2}, "SavedTensorSlices")
        if len(fields.get(2, [])) != 1 or 1 in fields:
            raise FormatError("a slice entry that is not exactly one SavedSlice")
        saved = parse_message(fields[2][0], {1: 2, 2: 2, 3: 2}, "SavedSlice")  # type: ignore[arg-type]
        if 1 not in saved or 3 not in saved:
            raise FormatError("a saved slice without a name or data")
        name = utf8(saved[1][-1], "a slice's tensor name")  # type: ignore[arg-type]
        extents = parse_slice(saved[2][-1]) if 2 in saved else []  # type: ignore[arg-type]
        return name, extents, saved[3][-1]  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._tensor(name).shape

    def is_string(self, name: str) -> bool:
        return self._tensor(name).dtype == STRING

    def _tensor(self, name: str) -> _Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self._files[0]}: no tensor named {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name``: its slices checked to be the ones listed, to cover it exactly
        and to hold in-range values, before the full array is allocated."""
        tensor = self._tensor(name)
        with located(f"{tensor.where}: {name}"):
            check_numeric(tensor.dtype)
            listed = [resolve_extents(extents, tensor.shape) for extents in tensor.listed]
            values: dict[Box, np.ndarray] = {}
            for path, extents, proto in tensor.stored:
                box = resolve_extents(extents, tensor.shape)
                if box in values:
                    raise FormatError(f"{path}: two slices with the extent {[list(b) for b in box]}")
                with located(str(path)):
                    values[box] = tensor_values(proto, tensor.dtype, element_count(box_shape(box)))
            check_listed(listed, list(values))
            check_coverage(tensor.shape, listed)
            full = np.empty(tensor.shape, numpy_dtype(tensor.dtype))
            for box, flat in values.items():
                full[box_index(box)] = flat.reshape(box_shape(box))
            return full

