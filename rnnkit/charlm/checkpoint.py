"""Checkpoints that lose nothing: written atomically, read back with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write

FORMAT = "rnnkit-charlm-1"
_KEYS = ("format", "config", "vocab", "model", "optimizer", "step", "position", "state", "rng", "best_val")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a one-line reason."""


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    missing = [key for key in _KEYS if key not in checkpoint and key != "format"]
    assert not missing, missing
    atomic_write(path, lambda file: torch.save({"format": FORMAT, **checkpoint}, file))


def load(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a run directory holding ``last.pt``)."""
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated, corrupt or not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rnnkit char-LM checkpoint (expected format {FORMAT})")
    missing = [key for key in _KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return checkpoint
