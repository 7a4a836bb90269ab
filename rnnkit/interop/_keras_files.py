"""The files under a Keras 3 model, read as data only: the ``.keras`` zip archive (its
``config.json`` and ``model.weights.h5``, sizes bounded before anything is read) and the HDF5
weights (groups ``layers/<path>/cell/vars/<i>``, shapes checked before any array is read)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._wire import FormatError

_MAX_CONFIG_BYTES = 64 << 20
_MAX_RATIO = 1000  # decompressed : compressed bytes of the weights beyond which an archive is refused
_MAX_DEPTH = 8  # nested groups walked in a weights file


def h5py_module() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras files needs h5py: pip install 'rnnkit[keras]'") from None
    return h5py


def is_archive(path: str | Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError as error:
        raise FormatError(f"{path}: cannot be read ({error})") from None


def read_archive(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """``config.json`` (parsed) and the bytes of ``model.weights.h5`` of a ``.keras`` archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise FormatError(f"{path}: not a Keras 3 archive (no config.json; it holds {sorted(names)[:8]})")
            if "model.weights.h5" not in names:
                raise FormatError(f"{path}: no model.weights.h5 in the archive (only HDF5 weights are read; it holds "
                                  f"{sorted(names)[:8]})")
            info = archive.getinfo("config.json")
            if info.file_size > _MAX_CONFIG_BYTES:
                raise FormatError(f"{path}: config.json is {info.file_size} bytes (at most {_MAX_CONFIG_BYTES})")
            with archive.open(info) as stream:
                raw = stream.read(_MAX_CONFIG_BYTES + 1)
            stored = archive.getinfo("model.weights.h5")
            if stored.file_size > _MAX_RATIO * stored.compress_size + (1 << 20):  # a zip bomb
                raise FormatError(f"{path}: model.weights.h5 claims {stored.file_size} bytes from "
                                  f"{stored.compress_size} compressed (more than {_MAX_RATIO}:1)")
            with archive.open(stored) as stream:
                weights = stream.read(stored.file_size + 1)
            if len(weights) != stored.file_size:
                raise FormatError(f"{path}: model.weights.h5 is not the {stored.file_size} bytes its entry says")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as error:
        raise FormatError(f"{path}: a damaged .keras archive ({error})") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise FormatError(f"{path}: config.json is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise FormatError(f"{path}: config.json is not JSON ({error})") from None
    if not isinstance(config, dict):
        raise FormatError(f"{path}: config.json holds a {type(config).__name__}, not an object")
    return config, weights


class Weights:
    """A Keras 3 weights file opened for reading (a path, or the bytes from an archive)."""

    def __init__(self, path: str | Path, data: bytes | None = None) -> None:
        h5py = h5py_module()
        self.path = path
        try:
            self.file = h5py.File(io.BytesIO(data) if data is not None else path, "r")
        except (OSError, ValueError) as error:
            where = f"{path}: model.weights.h5" if data is not None else str(path)
            raise FormatError(f"{where}: not a readable HDF5 file ({error})") from None
        root = "layers" if "layers" in self.file else "_layer_checkpoint_dependencies"
        self.root = self.file.get(root)

    def __enter__(self) -> Weights:
        return self

    def __exit__(self, *_: Any) -> None:
        self.file.close()

    def names(self) -> list[str]:
        """The paths (below ``layers/``) of the groups holding a recurrent cell's variables."""
        found: list[str] = []
        h5py = h5py_module()

        def walk(group: Any, prefix: str, depth: int) -> None:
            for key in group:
                child = group.get(key)
                if not isinstance(child, h5py.Group) or key == "vars":
                    continue
                name = f"{prefix}{key}"
                cell = child.get("cell")
                if isinstance(cell, h5py.Group) and isinstance(cell.get("vars"), h5py.Group):
                    found.append(name)
                elif depth < _MAX_DEPTH:
                    walk(child, f"{name}/", depth + 1)

        if self.root is not None and isinstance(self.root, h5py.Group):
            walk(self.root, "", 0)
        return sorted(found)

    def saved_name(self, layer: str) -> str | None:
        """The layer's own name, which newer Keras writes on ``layers/<path>/vars``."""
        group = self.root.get(f"{layer}/vars") if self.root is not None else None
        name = group.attrs.get("name") if group is not None else None
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return name if isinstance(name, str) else None

    def variables(self, layer: str, where: str) -> list[np.ndarray]:
        h5py = h5py_module()
        group = self.root.get(f"{layer}/cell/vars") if self.root is not None else None
        if not isinstance(group, h5py.Group):
            raise FormatError(f"{where}: no recurrent layer {layer!r} in the weights; they hold {self.names()}")
        keys = sorted(group, key=lambda k: int(k) if k.isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))] or len(keys) not in (2, 3):
            raise FormatError(f"{where}: variables {keys}, expected 0, 1 (kernel, recurrent kernel) and 2 (bias)")
        arrays = []
        for key in keys:
            dataset = group[key]
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "f" or dataset.ndim not in (1, 2):
                raise FormatError(f"{where}: variable {key} is not a float vector or matrix")
            arrays.append(dataset)
        return arrays


def arrays_of(datasets: list[Any], shapes: list[tuple[int, ...]], where: str) -> list[Tensor]:
    """The datasets read as tensors after checking their shapes (so nothing unexpected is read)."""
    what = ("kernel", "recurrent kernel", "bias")
    tensors = []
    for name, dataset, shape in zip(what, datasets, shapes):
        if tuple(dataset.shape) != shape:
            raise FormatError(f"{where}: the {name} has shape {list(dataset.shape)}, expected {list(shape)}")
        array = np.asarray(dataset[()])
        tensors.append(torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))))
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        raise FormatError(f"{where}: variables of mixed dtypes {sorted(map(str, dtypes))}")
    return tensors
