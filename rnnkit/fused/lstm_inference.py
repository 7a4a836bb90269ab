"""LSTM stacks in inference on the CPU: one compiled call per layer, nothing kept for backward.

Where no gradient can follow (``torch.no_grad()``, ``torch.inference_mode()``, or no tensor that
requires one), every row runs every step, and every layer is an LSTM without a projection or
wrappers (any activation, gate kind, peepholes and clipping), :func:`lstm_layer_inference` runs the
stack through ``lstm_inference.cpp``: the input products a chunk of steps at a time, the state
updated in place, and the outputs written straight into the caller's layout (batch- or
time-major), where the training path (``LSTMSequence``) keeps five ``[N, U]`` buffers for its
backward and copies the sequence into and out of time-major packed rows. Same math as
``LSTMSequence`` (``lstm_rows.h`` is the pointwise step of both), on the cell's kernel and bias
as they are (TF's gate order; ``LSTMSequence`` reorders a copy).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .cpu.native import compiled_lstm_inference, kernels

INFERENCE_DTYPES = (torch.float32, torch.float64)
MAX_GATE_BYTES = 256 << 20  # the input products computed at once; longer sequences take them in chunks


def inference_runs(cells: Sequence[Any], inputs: Tensor, states: Sequence[Sequence[Tensor]]) -> bool:
    """True when :func:`lstm_layer_inference` can run ``cells`` (the layers' LSTM cells, built) on
    ``inputs`` from ``states`` (each layer's ``[h, c]``), every row running every step (the
    caller's check)."""
    if inputs.device.type != "cpu" or inputs.dtype not in INFERENCE_DTYPES:
        return False
    if torch.is_autocast_enabled("cpu") or kernels() is None:
        return False
    tensors = [inputs, *(s for state in states for s in state), *(w for cell in cells for w in cell.parameters())]
    if any(t.dtype != inputs.dtype or t.device != inputs.device for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(cell.num_proj is None for cell in cells)


def lstm_layer_inference(cell: Any, x: Tensor, h0: Tensor, c0: Tensor, out: Tensor, activation: str, gate: str,
                         max_gate_bytes: int = MAX_GATE_BYTES) -> tuple[Tensor, Tensor]:
    """One LSTM layer (built) on ``x`` ``[T, B, D]`` (any strides, unit column stride) from
    ``h0``, ``c0`` ``[B, U]``, its outputs written into ``out`` ``[T, B, U]`` (any strides, unit
    column stride); returns the final ``(h, c)``. ``activation`` and ``gate`` are the cell's
    kinds (``activation_kinds.py``); the input products are computed ``max_gate_bytes`` of gates
    at a time."""
    kernel, depth, empty = cell.kernel.contiguous(), x.shape[2], x.new_empty(0)  # itself in the usual case
    bias = cell.bias.contiguous() if cell.use_bias else empty
    w_if = torch.stack([cell.w_i_diag, cell.w_f_diag]) if cell.use_peepholes else empty
    w_o = cell.w_o_diag if cell.use_peepholes else empty
    clip = -1.0 if cell.cell_clip is None else float(cell.cell_clip)
    c = c0.clone(memory_format=torch.contiguous_format)  # c0 in, the final c out
    loop = compiled_lstm_inference(kernels(), activation, gate)
    assert loop is not None, "checked by inference_runs"
    loop(x, kernel[:depth], bias, float(cell.forget_bias), kernel[depth:], h0, c, w_if, w_o, clip, out, max_gate_bytes)
    return out[-1].clone(memory_format=torch.contiguous_format), c
