"""Keras 3 ``.weights.h5`` LSTM and GRU layers into rnnkit cells (needs ``h5py``: the
``rnnkit[keras]`` extra).

A Keras 3 weights file stores a layer's variables under ``layers/<layer name>/cell/vars/<i>``:
``0`` the input kernel ``[D, k*U]``, ``1`` the recurrent kernel ``[U, k*U]``, ``2`` the bias
(``[4U]`` for LSTM; ``[3U]``, or ``[2, 3U]`` input and recurrent biases with ``reset_after``,
for GRU). Gate orders: Keras LSTM ``(i, f, c, o)``, TF ``(i, j=c, f, o)``; Keras GRU
``(z, r, h)``, TF ``(r, u=z)`` plus the candidate. Keras adds no forget bias at run time, so
the LSTM becomes ``LSTMCell(forget_bias=0.0)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cells import GRUCell, LSTMCell

__all__ = ["keras_layer_names", "load_keras_rnn"]


def _open(path: str | Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras .weights.h5 files needs h5py: pip install 'rnnkit[keras]'") from None
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error})") from None


def keras_layer_names(path: str | Path) -> list[str]:
    """The layers in a Keras weights file that hold recurrent cells."""
    with _open(path) as file:
        layers = file.get("layers", {})
        return sorted(name for name in layers if "cell" in layers[name] and "vars" in layers[name]["cell"])


def _vars(path: str | Path, layer: str) -> list[np.ndarray]:
    with _open(path) as file:
        group = file.get(f"layers/{layer}/cell/vars")
        if group is None:
            raise ValueError(f"{path}: no recurrent layer named {layer!r}; it holds {keras_layer_names(path)}")
        return [np.asarray(group[str(i)]) for i in range(len(group))]


def load_keras_rnn(path: str | Path, layer: str, kind: str) -> Any:
    """The rnnkit cell computing what the Keras ``LSTM``/``GRU`` layer ``layer`` computes.

    ``kind`` is ``"lstm"`` or ``"gru"``; a GRU saved with ``reset_after=True`` (Keras' default)
    becomes ``GRUCell(reset_after=True)``, otherwise TF's reset-before ``GRUCell``.
    """
    variables = _vars(path, layer)
    if len(variables) != 3:
        raise ValueError(f"{path}: layer {layer!r} has {len(variables)} variables, expected kernel, recurrent, bias")
    kernel, recurrent, bias = (torch.from_numpy(np.array(v)) for v in variables)
    depth, units = kernel.shape[0], recurrent.shape[0]
    if kind == "lstm":
        return _lstm(kernel, recurrent, bias, depth, units)
    if kind == "gru":
        return _gru(kernel, recurrent, bias, depth, units)
    raise ValueError(f"kind must be 'lstm' or 'gru', got {kind!r}")


def _lstm(kernel: torch.Tensor, recurrent: torch.Tensor, bias: torch.Tensor, depth: int, units: int) -> LSTMCell:
    def tf_order(m: torch.Tensor) -> torch.Tensor:
        i, f, c, o = m.split(units, -1)
        return torch.cat([i, c, f, o], -1)

    cell = LSTMCell(units, forget_bias=0.0, input_size=depth, dtype=kernel.dtype)
    with torch.no_grad():
        cell.kernel.copy_(torch.cat([tf_order(kernel), tf_order(recurrent)]))
        cell.bias.copy_(tf_order(bias))
    return cell


def _gru(kernel: torch.Tensor, recurrent: torch.Tensor, bias: torch.Tensor, depth: int, units: int) -> GRUCell:
    z, r, h = (slice(0, units), slice(units, 2 * units), slice(2 * units, 3 * units))
    reset_after = bias.dim() == 2
    input_bias, recurrent_bias = (bias[0], bias[1]) if reset_after else (bias, torch.zeros_like(bias))
    cell = GRUCell(units, reset_after=reset_after, input_size=depth, dtype=kernel.dtype)
    with torch.no_grad():
        gates_x = torch.cat([kernel[:, r], kernel[:, z]], 1)
        gates_h = torch.cat([recurrent[:, r], recurrent[:, z]], 1)
        cell.gates["kernel"].copy_(torch.cat([gates_x, gates_h]))
        cell.gates["bias"].copy_(torch.cat([input_bias[r] + recurrent_bias[r], input_bias[z] + recurrent_bias[z]]))
        if reset_after:
            cell.candidate["input_projection"]["kernel"].copy_(kernel[:, h])
            cell.candidate["input_projection"]["bias"].copy_(input_bias[h])
            cell.candidate["hidden_projection"]["kernel"].copy_(recurrent[:, h])
            cell.candidate["hidden_projection"]["bias"].copy_(recurrent_bias[h])
        else:
            cell.candidate["kernel"].copy_(torch.cat([kernel[:, h], recurrent[:, h]]))
            cell.candidate["bias"].copy_(input_bias[h])
    return cell
