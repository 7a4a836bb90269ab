"""The plain LSTM through PyTorch's own fused LSTM (oneDNN on CPU, cuDNN on GPU).

A TF ``BasicLSTMCell``/``LSTMCell`` without peepholes, clipping or projection and with tanh
is exactly ``torch.nn.LSTM``'s math once the gate blocks are reordered from TF's
``(i, j, f, o)`` to PyTorch's ``(i, f, g=j, o)``, the kernel ``[D+U, 4U]`` is split into
``W_ih = kernel[:D].T`` and ``W_hh = kernel[D:].T``, and ``forget_bias`` is folded into the f
bias. The conversion is a few tensor ops under autograd, so gradients reach the TF-layout
weights. Used when every row runs every step (no ``sequence_length`` below ``T``).
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


def torch_lstm_layer(
    data: Tensor, packing: Packing, h0: Tensor, c0: Tensor, cell: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """``data`` ``[T * B, D]`` (every row, every step, time-major) -> ``(out [T * B, U],
    h_final [B, U], c_final [B, U])``."""
    units, depth = cell.num_units, data.shape[1]
    i, j, f, o = cell.kernel.split(units, 1)
    kernel = torch.cat([i, f, j, o], 1)  # PyTorch's gate order
    b_i, b_j, b_f, b_o = cell.bias.split(units)
    bias = torch.cat([b_i, b_f + cell.forget_bias, b_j, b_o])
    weights = [kernel[:depth].t().contiguous(), kernel[depth:].t().contiguous(), bias, torch.zeros_like(bias)]
    x = data.view(packing.num_steps, packing.batch_size, depth)
    train = torch.is_grad_enabled()
    out, h, c = torch.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, True, 1, 0.0, train, False, False)
    return out.reshape(-1, units), h[0], c[0]
