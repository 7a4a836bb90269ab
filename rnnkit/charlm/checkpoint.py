"""Checkpoints that lose nothing and run nothing: written atomically, read back with
``torch.load(weights_only=True)`` (tensors and plain containers only) and clear errors.

A checkpoint is a dict: ``format``, ``config`` (dict), ``vocab`` (list of str), ``model`` and
``optimizer`` (state dicts), ``step`` and ``position`` (ints), ``state`` (the carried state:
``None`` or tuples of tensors and ``LSTMStateTuple``), ``rng`` (tensor), ``best_val`` (float),
and optionally ``cuda_rng``, ``record`` (the metrics row of its step) and ``losses`` (the
training losses of the steps since the last evaluation: a checkpoint written by Ctrl-C between
two evaluations carries them, so that the next metrics row is the uninterrupted run's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._files import UnsafePickleError, atomic_write_stream, describe, load_weights_only

FORMAT = "rnnkit-charlm-1"
_KEYS = ("format", "config", "vocab", "model", "optimizer", "step", "position", "state", "rng", "best_val")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "vocab": list, "model": dict, "optimizer": dict, "step": int, "position": int,
    "rng": torch.Tensor, "best_val": (int, float),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a one-line reason."""


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    missing = [key for key in _KEYS if key not in checkpoint and key != "format"]
    assert not missing, missing
    atomic_write_stream(path, lambda file: torch.save({"format": FORMAT, **checkpoint}, file))


def load(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a run directory holding ``last.pt``)."""
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        checkpoint = load_weights_only(path)
    except UnsafePickleError as error:
        raise CheckpointError(str(error)) from None
    except Exception as error:  # truncated, corrupt or not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({describe(error)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rnnkit char-LM checkpoint (expected format {FORMAT})")
    missing = [key for key in _KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    wrong = [key for key, kind in _TYPES.items() if not isinstance(checkpoint[key], kind)]
    if wrong:
        raise CheckpointError(f"{path}: malformed checkpoint ({', '.join(wrong)} of the wrong type)")
    problem = _malformed(checkpoint)
    if problem:
        raise CheckpointError(f"{path}: malformed checkpoint ({problem})")
    return checkpoint


def _malformed(checkpoint: dict[str, Any]) -> str | None:
    """What is wrong with the values of a checkpoint whose keys have the right types (None:
    nothing); what depends on the configuration (state shapes) is checked by the training run."""
    vocab = checkpoint["vocab"]
    if not vocab or not all(isinstance(ch, str) and len(ch) == 1 for ch in vocab) or len(set(vocab)) != len(vocab):
        return "the vocabulary must be distinct single characters"
    if isinstance(checkpoint["step"], bool) or checkpoint["step"] < 0 or checkpoint["position"] < 0:
        return "negative step or position"
    rng = checkpoint["rng"]
    if rng.dtype != torch.uint8 or rng.dim() != 1:
        return f"the RNG state is a {rng.dtype} tensor of shape {list(rng.shape)}, not uint8 [n]"
    if checkpoint["state"] is not None and not _is_state(checkpoint["state"]):
        return "the carried state is not tuples of floating-point tensors"
    losses = checkpoint.get("losses", [])
    if not isinstance(losses, list) or not all(type(loss) is float for loss in losses):
        return "the losses since the last evaluation are not a list of floats"
    return None


def _is_state(state: Any) -> bool:
    if isinstance(state, torch.Tensor):
        return state.is_floating_point() and state.dim() == 2
    return isinstance(state, (tuple, list)) and len(state) > 0 and all(_is_state(part) for part in state)
