"""Conversions between rnnkit's TF-layout LSTMs and ``torch.nn.LSTM``, where the math is the same.

A TF LSTM (``BasicLSTMCell``/``LSTMCell`` without peepholes, cell clipping or projection
clipping, tanh) is ``torch.nn.LSTM``'s math once the gate blocks go from TF's ``(i, j, f, o)``
to PyTorch's ``(i, f, g=j, o)``, the kernel ``[D+H, 4U]`` is split into ``weight_ih = kernel[:D].T``
and ``weight_hh = kernel[D:].T``, and ``forget_bias`` is folded into ``bias_ih``'s f block
(``bias_hh`` = 0). A projection (``num_proj``, no clip) is ``proj_size`` with
``weight_hr = projection.T``.

``torch.nn.GRU`` is ``GRUCell(reset_after=True)``: gate order (r, z, n) against TF's (r, u);
``gates/kernel`` holds ``W_ir, W_iz`` over ``W_hr, W_hz`` with the two biases summed,
``candidate/input_projection`` is ``W_in, b_in`` and ``candidate/hidden_projection`` is
``W_hn, b_hn``. TF's default reset-before ``GRUCell`` has no ``torch.nn.GRU`` equivalent.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..cells import BasicLSTMCell, GRUCell, LSTMCell
from ..fused.activation_kinds import gate_options
from ..fused.torch_rnn import torch_gru_weights, torch_lstm_weights
from ..wrappers import MultiRNNCell

__all__ = ["from_torch_gru", "from_torch_lstm", "to_torch_gru", "to_torch_lstm"]


def _layers(cell: Any) -> list[Any]:
    layers = cell.layers if isinstance(cell, MultiRNNCell) else [cell]
    for i, layer in enumerate(layers):
        if type(layer) not in (BasicLSTMCell, LSTMCell):
            raise ValueError(f"layer {i}: {type(layer).__name__} has no torch.nn.LSTM equivalent (LSTM cells only)")
        problems = [
            what
            for what, present in (
                ("peepholes", layer.use_peepholes),
                ("cell_clip", layer.cell_clip is not None),
                ("proj_clip", layer.proj_clip is not None),
                ("a non-tanh activation", layer.activation is not torch.tanh),
            )
            if present
        ] + gate_options(layer)
        if problems:
            raise ValueError(f"layer {i} ({layer.name}) has no torch.nn.LSTM equivalent: it uses {', '.join(problems)}")
        if not layer.built:
            raise ValueError(f"layer {i} ({layer.name}) is not built yet: call it once or give input_size=")
    units = {layer.num_units for layer in layers}
    projections = {layer.num_proj for layer in layers}
    if len(units) > 1 or len(projections) > 1:
        raise ValueError("torch.nn.LSTM needs the same num_units and num_proj in every layer")
    return layers


def _torch_to_tf_rows(matrix: Tensor, units: int) -> Tensor:
    i, f, g, o = matrix.split(units, 0)
    return torch.cat([i, g, f, o], 0)


def to_torch_lstm(cell: Any, batch_first: bool = True) -> nn.LSTM:
    """An ``nn.LSTM`` computing what ``dynamic_rnn(cell, ...)`` computes (for a LSTM cell or a
    MultiRNNCell of them with equal sizes). Its outputs equal rnnkit's; its ``(h_n, c_n)`` are
    the last layer states stacked ``[layers, B, H]``."""
    layers = _layers(cell)
    first = layers[0]
    lstm = nn.LSTM(
        first.input_size, first.num_units, num_layers=len(layers), batch_first=batch_first,
        proj_size=first.num_proj or 0, dtype=first.kernel.dtype, device=first.kernel.device,
    )
    with torch.no_grad():
        for k, layer in enumerate(layers):
            w_ih, w_hh, b_ih, forget_bias = torch_lstm_weights(layer, layer.input_size)
            weights = (w_ih, w_hh, b_ih + forget_bias, torch.zeros_like(forget_bias))  # folded into bias_ih
            for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights):
                getattr(lstm, f"{name}_l{k}").copy_(value)
            if layer.num_proj is not None:
                getattr(lstm, f"weight_hr_l{k}").copy_(layer.projection["kernel"].t())
    return lstm


def _check_torch_rnn(module: Any, kind: type[nn.RNNBase], argname: str) -> None:
    if not isinstance(module, kind):
        raise TypeError(f"{argname} must be a torch.nn.{kind.__name__}, got {type(module).__name__}")
    if module.bidirectional:
        raise ValueError(f"a bidirectional nn.{kind.__name__} maps to two stacks: convert each direction separately")
    if module.dropout:
        raise ValueError(f"nn.{kind.__name__}'s dropout between layers has no exact TF-cell equivalent; set dropout=0")


def from_torch_lstm(lstm: nn.LSTM) -> Any:
    """TF-layout cells computing what ``lstm`` computes: an ``LSTMCell`` (``forget_bias=0``,
    the two biases summed), or a ``MultiRNNCell`` of them for several layers."""
    _check_torch_rnn(lstm, nn.LSTM, "lstm")
    units, proj = lstm.hidden_size, lstm.proj_size or None
    cells = []
    with torch.no_grad():
        for k in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")
            cell = LSTMCell(
                units, num_proj=proj, forget_bias=0.0, input_size=w_ih.shape[1], dtype=w_ih.dtype, device=w_ih.device
            )
            cell.kernel.copy_(torch.cat([_torch_to_tf_rows(w_ih, units), _torch_to_tf_rows(w_hh, units)], 1).t())
            if lstm.bias:
                total = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")
                cell.bias.copy_(_torch_to_tf_rows(total, units))
            else:
                cell.bias.zero_()
            if proj is not None:
                cell.projection["kernel"].copy_(getattr(lstm, f"weight_hr_l{k}").t())
            cells.append(cell)
    return cells[0] if len(cells) == 1 else MultiRNNCell(cells)


def _gru_layers(cell: Any) -> list[Any]:
    layers = cell.layers if isinstance(cell, MultiRNNCell) else [cell]
    for i, layer in enumerate(layers):
        if type(layer) is not GRUCell:
            raise ValueError(f"layer {i}: {type(layer).__name__} has no torch.nn.GRU equivalent (GRU cells only)")
        if not layer.reset_after:
            raise ValueError(
                f"layer {i} ({layer.name}) is TF's reset-before GRU: torch.nn.GRU is GRUCell(reset_after=True)"
            )
        if layer.activation is not torch.tanh:
            raise ValueError(f"layer {i} ({layer.name}) has no torch.nn.GRU equivalent: a non-tanh activation")
        if gate_options(layer):
            raise ValueError(f"layer {i} ({layer.name}) has no torch.nn.GRU equivalent: it uses "
                             f"{', '.join(gate_options(layer))}")
        if not layer.built:
            raise ValueError(f"layer {i} ({layer.name}) is not built yet: call it once or give input_size=")
    if len({layer.num_units for layer in layers}) > 1:
        raise ValueError("torch.nn.GRU needs the same num_units in every layer")
    return layers


def to_torch_gru(cell: Any, batch_first: bool = True) -> nn.GRU:
    """An ``nn.GRU`` computing what ``dynamic_rnn(cell, ...)`` computes, for a
    ``GRUCell(reset_after=True)`` or a MultiRNNCell of them."""
    layers = _gru_layers(cell)
    first = layers[0]
    gru = nn.GRU(first.input_size, first.num_units, num_layers=len(layers), batch_first=batch_first,
                 dtype=first.gates["kernel"].dtype, device=first.gates["kernel"].device)
    with torch.no_grad():
        for k, layer in enumerate(layers):
            weights = torch_gru_weights(layer, layer.input_size)
            for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights):
                getattr(gru, f"{name}_l{k}").copy_(value)
    return gru


def from_torch_gru(gru: nn.GRU) -> Any:
    """``GRUCell(reset_after=True)`` cells computing what ``gru`` computes (a MultiRNNCell for
    several layers)."""
    _check_torch_rnn(gru, nn.GRU, "gru")
    units, cells = gru.hidden_size, []
    with torch.no_grad():
        for k in range(gru.num_layers):
            w_ih, w_hh = getattr(gru, f"weight_ih_l{k}"), getattr(gru, f"weight_hh_l{k}")
            zeros = torch.zeros(3 * units, dtype=w_ih.dtype, device=w_ih.device)
            b_ih = getattr(gru, f"bias_ih_l{k}") if gru.bias else zeros
            b_hh = getattr(gru, f"bias_hh_l{k}") if gru.bias else zeros
            cell = GRUCell(units, reset_after=True, input_size=w_ih.shape[1], dtype=w_ih.dtype, device=w_ih.device)
            cell.gates["kernel"].copy_(torch.cat([w_ih[: 2 * units], w_hh[: 2 * units]], 1).t())
            cell.gates["bias"].copy_(b_ih[: 2 * units] + b_hh[: 2 * units])
            cell.candidate["input_projection"]["kernel"].copy_(w_ih[2 * units :].t())
            cell.candidate["input_projection"]["bias"].copy_(b_ih[2 * units :])
            cell.candidate["hidden_projection"]["kernel"].copy_(w_hh[2 * units :].t())
            cell.candidate["hidden_projection"]["bias"].copy_(b_hh[2 * units :])
            cells.append(cell)
    return cells[0] if len(cells) == 1 else MultiRNNCell(cells)
