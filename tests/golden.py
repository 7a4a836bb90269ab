"""Reading the TensorFlow golden cases in ../shared/golden (format in its README)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit as rk

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "golden"


@dataclass
class GoldenCase:
    name: str
    spec: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays whose key starts with ``prefix``, keyed by the rest."""
        return {k[len(prefix) :]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def leaves(self, prefix: str) -> list[np.ndarray]:
        """``initial_state/0``, ``initial_state/1``, ... in order."""
        items = self.prefixed(prefix + "/")
        return [items[str(i)] for i in range(len(items))]


def golden_cases() -> list[GoldenCase]:
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"golden cases not found at {GOLDEN_DIR} (the repository's ../shared/golden)")
    cases = []
    for path in sorted(GOLDEN_DIR.glob("*.npz")):
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        spec = json.loads(str(arrays.pop("spec")))
        cases.append(GoldenCase(path.stem, spec, arrays))
    return cases


def cell_from_spec(spec: dict[str, Any]) -> Any:
    """An rnnkit cell from a golden spec's cell tree (TF class names and constructor kwargs)."""
    kwargs = dict(spec)
    cell_type = kwargs.pop("type")
    if cell_type == "MultiRNNCell":
        return rk.MultiRNNCell([cell_from_spec(c) for c in kwargs.pop("cells")], **kwargs)
    if cell_type in ("ResidualWrapper", "DropoutWrapper"):
        return getattr(rk, cell_type)(cell_from_spec(kwargs.pop("cell")), **kwargs)
    return getattr(rk, cell_type)(**kwargs)
