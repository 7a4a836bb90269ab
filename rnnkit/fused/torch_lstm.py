"""The plain LSTM through PyTorch's own fused LSTM (oneDNN on CPU, cuDNN on GPU).

A TF ``BasicLSTMCell``/``LSTMCell`` without peepholes, clipping or projection and with tanh
is exactly ``torch.nn.LSTM``'s math once the gate blocks are reordered from TF's
``(i, j, f, o)`` to PyTorch's ``(i, f, g=j, o)``, the kernel ``[D+U, 4U]`` is split into
``W_ih = kernel[:D].T`` and ``W_hh = kernel[D:].T``, and ``forget_bias`` is folded into the f
bias. The conversion is a few tensor ops under autograd, so gradients reach the TF-layout
weights.

Packed steps with variable lengths run as a few calls, one per run of steps with the same
number of live rows (a packed run of ``s`` steps of ``n`` rows is a ``[s, n, D]`` block), each
starting from the state the previous call left: no work on finished rows, and every call is
PyTorch's fused kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .packing import Packing


def is_torch_lstm_math(cell: Any) -> bool:
    """True for an LSTM cell whose step is exactly torch.nn.LSTM's."""
    return (
        not cell.use_peepholes
        and cell.cell_clip is None
        and cell.num_proj is None
        and cell.activation is torch.tanh
    )


def torch_lstm_weights(cell: Any, depth: int) -> list[Tensor]:
    """``[W_ih, W_hh, b_ih, b_hh]`` in PyTorch's layout and gate order, from an LSTM cell's TF
    weights, under autograd (``forget_bias`` folded into ``b_ih``; ``b_hh`` is zero)."""
    units = cell.num_units
    i, j, f, o = cell.kernel.split(units, 1)
    kernel = torch.cat([i, f, j, o], 1)
    b_i, b_j, b_f, b_o = cell.bias.split(units)
    bias = torch.cat([b_i, b_f + cell.forget_bias, b_j, b_o])
    return [kernel[:depth].t().contiguous(), kernel[depth:].t().contiguous(), bias, torch.zeros_like(bias)]


def _runs_of_equal_sizes(packing: Packing) -> list[tuple[int, int, int]]:
    """``(first packed row, steps, rows)`` for each run of steps with the same live rows."""
    runs: list[tuple[int, int, int]] = []
    for n, start in zip(packing.batch_sizes, packing.offsets):
        if runs and runs[-1][2] == n:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, n)
        else:
            runs.append((start, 1, n))
    return runs


def torch_lstm_layer(
    data: Tensor, packing: Packing, h0: Tensor, c0: Tensor, cell: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """Packed ``data`` ``[N, D]`` -> ``(out [N, U], h_final [k, U], c_final [k, U])``."""
    depth = data.shape[1]
    weights = torch_lstm_weights(cell, depth)
    train = torch.is_grad_enabled()
    outputs, finished_h, finished_c = [], [], []
    h, c = h0, c0
    for start, steps, rows in _runs_of_equal_sizes(packing):
        if rows < h.shape[0]:  # rows [rows:] ended with the previous run
            finished_h.append(h[rows:])
            finished_c.append(c[rows:])
            h, c = h[:rows], c[:rows]
        x = data[start : start + steps * rows].view(steps, rows, depth)
        out, h_n, c_n = torch.lstm(x, (h.unsqueeze(0), c.unsqueeze(0)), weights, True, 1, 0.0, train, False, False)
        outputs.append(out.reshape(-1, cell.num_units))
        h, c = h_n[0], c_n[0]
    finished_h.append(h)
    finished_c.append(c)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return out, torch.cat(finished_h[::-1]), torch.cat(finished_c[::-1])
