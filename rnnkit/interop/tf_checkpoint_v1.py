"""The old V1 checkpoint format (``Saver(write_version=V1)``), read without TensorFlow.

The same sorted-table container as V2 (``tf_checkpoint._table``), one file per shard (the
prefix itself, or ``prefix-00000-of-0000N``). The empty key holds ``SavedTensorSlices.meta``
(every tensor's name, shape, dtype and slices); every other entry holds one slice as a
``TensorProto`` with typed repeated fields (``float_val``, ``double_val``, ``int64_val``, ...)
or raw ``tensor_content``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ._wire import FormatError, proto_fields, read_varint, signed64
from .tf_checkpoint import _DTYPES, _STRING, _parse_shape, _parse_slice, _table

_TYPED_FIELDS = {5: "f", 6: "d", 7: "varint", 10: "varint", 11: "varint", 13: "varint"}


def v1_files(prefix: Path) -> list[Path]:
    """The V1 files of ``prefix`` (empty when it is not a V1 checkpoint)."""
    if prefix.is_file():
        return [prefix]
    return sorted(prefix.parent.glob(f"{prefix.name}-?????-of-?????"))


def _values(tensor_proto: bytes, dtype: int) -> np.ndarray:
    """The flat values of a serialized TensorProto."""
    kind = _DTYPES.get(dtype)
    if kind is None:
        raise FormatError(f"unsupported dtype (DataType {dtype})")
    content, typed = None, []
    for number, wire, value in proto_fields(tensor_proto):
        if number == 4 and isinstance(value, bytes):
            content = value
        elif number in _TYPED_FIELDS:
            style = _TYPED_FIELDS[number]
            if wire == 2 and isinstance(value, bytes):  # packed
                if style == "varint":
                    position = 0
                    while position < len(value):
                        item, position = read_varint(value, position)
                        typed.append(signed64(item))
                else:
                    typed.extend(struct.unpack(f"<{len(value) // struct.calcsize(style)}{style}", value))
            elif style == "f" and wire == 5 and isinstance(value, int):
                typed.append(struct.unpack("<f", value.to_bytes(4, "little"))[0])
            elif style == "d" and wire == 1 and isinstance(value, int):
                typed.append(struct.unpack("<d", value.to_bytes(8, "little"))[0])
            elif isinstance(value, int):
                typed.append(signed64(value))
    if kind == "bfloat16":
        bits = np.frombuffer(content, "<u2") if content is not None else np.array(typed, dtype=np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if content is not None:
        return np.frombuffer(content, dtype=np.dtype(kind).newbyteorder("<")).astype(kind)
    if np.dtype(kind) == np.float16:
        return np.array(typed, dtype=np.uint16).view(np.float16)
    return np.array(typed, dtype=kind)


class TFCheckpointV1:
    """A V1 checkpoint, with the interface of :class:`TFCheckpoint`."""

    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._meta: dict[str, tuple[tuple[int, ...], int]] = {}
        self._slices: dict[str, list[tuple[list[tuple[int, int | None]], bytes]]] = {}
        for path in files:
            for key, value in _table(path):
                if key == b"":
                    self._read_meta(value, path)
                else:
                    self._read_slice(value, path)

    def _read_meta(self, value: bytes, path: Path) -> None:
        for number, _, meta in proto_fields(value):
            if number != 1 or not isinstance(meta, bytes):
                continue
            for field_number, _, tensor in proto_fields(meta):
                if field_number != 1 or not isinstance(tensor, bytes):
                    continue
                fields = {n: v for n, _, v in proto_fields(tensor)}
                name = fields.get(1)
                if not isinstance(name, bytes):
                    raise FormatError(f"{path}: a tensor without a name in the V1 metadata")
                shape_field = fields.get(2)
                shape = _parse_shape(shape_field) if isinstance(shape_field, bytes) else ()
                self._meta[name.decode()] = (shape, int(fields.get(3, 0)))

    def _read_slice(self, value: bytes, path: Path) -> None:
        for number, _, saved in proto_fields(value):
            if number != 2 or not isinstance(saved, bytes):
                continue
            fields = {n: v for n, _, v in proto_fields(saved)}
            name, extent, data = fields.get(1), fields.get(2, b""), fields.get(3, b"")
            if not isinstance(name, bytes) or not isinstance(extent, bytes) or not isinstance(data, bytes):
                raise FormatError(f"{path}: a malformed V1 tensor slice")
            self._slices.setdefault(name.decode(), []).append((_parse_slice(extent), data))

    def names(self) -> list[str]:
        return sorted(self._meta)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name)[0]

    def is_string(self, name: str) -> bool:
        return self._info(name)[1] == _STRING

    def _info(self, name: str) -> tuple[tuple[int, ...], int]:
        try:
            return self._meta[name]
        except KeyError:
            raise KeyError(f"{self._files[0]}: no tensor named {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        shape, dtype = self._info(name)
        if dtype == _STRING:
            raise FormatError(f"{self._files[0]}: {name} is a string tensor; only numeric tensors are read")
        kind = _DTYPES.get(dtype)
        if kind is None:
            raise FormatError(f"{self._files[0]}: {name} has an unsupported dtype (DataType {dtype})")
        full = np.zeros(shape, dtype=np.float32 if kind == "bfloat16" else kind)
        for extent, data in self._slices.get(name, []):
            index = tuple(
                slice(start, None if length is None else start + length) for start, length in extent
            ) if extent else ()
            target = full[index]
            values = _values(data, dtype)
            if values.size != target.size:
                raise FormatError(f"{self._files[0]}: a slice of {name} holds {values.size} values, not {target.size}")
            full[index] = values.reshape(target.shape)
        return full
