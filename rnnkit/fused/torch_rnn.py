"""The cells whose math PyTorch's own fused RNNs compute exactly, run through them: cuDNN on
CUDA, oneDNN (LSTM) or ATen's loop (GRU) on the CPU.

* A TF ``BasicLSTMCell``/``LSTMCell`` without peepholes or clipping and with tanh is
  ``torch.nn.LSTM``'s math once the gate blocks are reordered from TF's ``(i, j, f, o)`` to
  PyTorch's ``(i, f, g=j, o)``, the kernel ``[D+H, 4U]`` is split into ``W_ih = kernel[:D].T``
  and ``W_hh = kernel[D:].T``, ``b_ih = bias`` and ``forget_bias`` is ``b_hh``'s f block; a
  projection (without ``proj_clip``) is ``W_hr = projection/kernel.T``.
* ``GRUCell(reset_after=True)`` is ``torch.nn.GRU``'s math: gates ``(r, u)`` are PyTorch's
  ``(r, z)``, ``candidate/input_projection`` is the n block of ``W_ih``/``b_ih`` and
  ``candidate/hidden_projection`` that of ``W_hh``/``b_hh``.
* ``BasicRNNCell`` with tanh or relu is ``torch.nn.RNN``'s math with ``W_ih = kernel[:D].T``,
  ``W_hh = kernel[D:].T``, ``b_ih = bias`` and ``b_hh = 0``.

The conversions are a few tensor ops under autograd, so gradients reach the TF-layout weights.

TF32: cuDNN uses TF32 for float32 RNNs unless ``torch.backends.cudnn.allow_tf32`` is off, and
that flag is on by default, so ``nn.LSTM`` in float32 on a recent GPU is not float32 math.
rnnkit's calls follow the matmul flag instead, ``torch.backends.cuda.matmul.allow_tf32``
(off by default; ``torch.set_float32_matmul_precision("high")`` turns it on), forward and
backward: results match the reference cells unless you allowed TF32 yourself.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .activation_kinds import activation_kind, gate_options
from .packing import Packing


def is_torch_lstm_math(cell: Any, projection: bool = False) -> bool:
    """True for an LSTM cell whose step is exactly torch.nn.LSTM's (with ``projection``, one
    with a projection without clipping counts too)."""
    projected = cell.num_proj is not None
    return (
        not cell.use_peepholes
        and cell.cell_clip is None
        and (not projected or (projection and cell.proj_clip is None))
        and activation_kind(cell.activation) == "tanh"  # torch.tanh, F.tanh, nn.Tanh()
        and not gate_options(cell)
    )


def torch_lstm_weights(cell: Any, depth: int) -> list[Tensor]:
    """``[W_ih, W_hh, b_ih, b_hh]`` in PyTorch's layout and gate order, from an LSTM cell's TF
    weights, under autograd: three gathers (``forget_bias`` is ``b_hh``, a cached constant)."""
    kernel, units = cell.kernel, cell.num_units
    order = _torch_gate_order(units, kernel.device)
    return [kernel[:depth].t().index_select(0, order), kernel[depth:].t().index_select(0, order),
            cell.bias.index_select(0, order), _forget_bias_vector(units, cell.forget_bias, kernel.dtype, kernel.device)]


# Constants cached per size, dtype and device. They are made outside inference mode whatever
# the caller's mode: an inference tensor could not be saved for a later backward.


@functools.lru_cache(maxsize=32)
def _torch_gate_order(units: int, device: torch.device) -> Tensor:
    """Row indices taking TF's gate blocks ``(i, j, f, o)`` to PyTorch's ``(i, f, g=j, o)``."""
    with torch.inference_mode(False):
        i, j, f, o = (torch.arange(units) + block * units for block in range(4))
        return torch.cat([i, f, j, o]).to(device)


@functools.lru_cache(maxsize=32)
def _forget_bias_vector(units: int, forget_bias: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``b_hh`` of a TF LSTM in PyTorch's gate order: ``forget_bias`` in the f block, zeros
    elsewhere (a constant: it gets no gradient)."""
    with torch.inference_mode(False):
        vector = torch.zeros(4 * units, dtype=dtype)
        vector[units : 2 * units] = forget_bias
        return vector.to(device)


@functools.lru_cache(maxsize=32)
def _zeros(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A constant zero vector (``b_hh`` parts TF's cells lack)."""
    with torch.inference_mode(False):
        return torch.zeros(size, dtype=dtype, device=device)


def torch_gru_weights(cell: Any, depth: int) -> list[Tensor]:
    """``[W_ih, W_hh, b_ih, b_hh]`` of ``torch.nn.GRU`` from a ``GRUCell(reset_after=True)``."""
    gates, x_part, h_part = cell.gates, cell.candidate["input_projection"], cell.candidate["hidden_projection"]
    kernel = gates["kernel"]
    return [
        torch.cat([kernel[:depth].t(), x_part["kernel"].t()]),  # a contiguous [3U, D]
        torch.cat([kernel[depth:].t(), h_part["kernel"].t()]),
        torch.cat([gates["bias"], x_part["bias"]]),
        torch.cat([_zeros(gates["bias"].shape[0], kernel.dtype, kernel.device), h_part["bias"]]),
    ]


def torch_rnn_weights(cell: Any, depth: int) -> list[Tensor]:
    """``[W_ih, W_hh, b_ih, b_hh]`` of ``torch.nn.RNN`` from a ``BasicRNNCell``."""
    kernel = cell.kernel
    return [kernel[:depth].t().contiguous(), kernel[depth:].t().contiguous(), cell.bias,
            _zeros(cell.bias.shape[0], kernel.dtype, kernel.device)]


@contextmanager
def _cudnn_tf32(allow: bool) -> Iterator[None]:
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


class _CudnnTF32(torch.autograd.Function):
    """``fn(*tensors)`` with cuDNN's TF32 flag set to ``allow`` in forward AND in backward
    (cuDNN reads the flag again when it computes gradients): the forward graph is recorded on
    detached inputs and differentiated under the same flag."""

    @staticmethod
    def forward(ctx: Any, allow: bool, fn: Callable[..., tuple[Tensor, ...]], *tensors: Tensor) -> Any:
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
        with torch.enable_grad(), _cudnn_tf32(allow):
            outputs = fn(*leaves)
        ctx.allow, ctx.leaves, ctx.outputs = allow, leaves, outputs
        return tuple(o.detach() for o in outputs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Any:
        wanted = [leaf for leaf in ctx.leaves if leaf.requires_grad]
        pairs = [(o, g) for o, g in zip(ctx.outputs, grads) if o.requires_grad]
        with _cudnn_tf32(ctx.allow):
            found = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
        found_iter = iter(found)
        result = [next(found_iter) if leaf.requires_grad else None for leaf in ctx.leaves]
        ctx.leaves = ctx.outputs = None  # free the recorded graph
        return (None, None, *result)


def _quietly(fn: Callable[..., tuple[Tensor, ...]]) -> Callable[..., tuple[Tensor, ...]]:
    """``fn`` without cuDNN's warning that the weights are not one flat buffer: they are
    converted from the TF layout at every call, so cuDNN copies them (a small cost)."""
    def call(*tensors: Tensor) -> tuple[Tensor, ...]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
            return fn(*tensors)
    return call


def _with_tf32_rule(fn: Callable[..., tuple[Tensor, ...]], *tensors: Tensor) -> tuple[Tensor, ...]:
    """``fn(*tensors)`` with cuDNN allowed TF32 exactly when float32 matmuls are."""
    if tensors[0].device.type != "cuda":
        return fn(*tensors)
    fn = _quietly(fn)
    allow = torch.backends.cuda.matmul.allow_tf32
    if tensors[0].dtype != torch.float32 or torch.backends.cudnn.allow_tf32 == allow:
        return fn(*tensors)
    if not torch.is_grad_enabled():
        with _cudnn_tf32(allow):
            return fn(*tensors)
    return _CudnnTF32.apply(allow, fn, *tensors)


def _runs_of_equal_sizes(packing: Packing) -> list[tuple[int, int, int]]:
    """``(first packed row, steps, rows)`` for each run of steps with the same live rows."""
    runs: list[tuple[int, int, int]] = []
    for n, start in zip(packing.batch_sizes, packing.offsets):
        if runs and runs[-1][2] == n:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, n)
        else:
            runs.append((start, 1, n))
    return runs


def _lstm_runs(data: Tensor, packing: Packing, h0: Tensor, c0: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
    """Packed LSTM as one padded ``torch.lstm`` call per run of equal batch sizes (oneDNN on
    the CPU takes no packed input): no work on finished rows."""
    train, depth = torch.is_grad_enabled(), data.shape[1]
    if packing.flat_index is None:  # every row runs every step: one call
        x = data.view(len(packing.batch_sizes), packing.batch_size, depth)
        out, h_n, c_n = torch.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), list(weights), True, 1, 0.0, train, False,
                                   False)
        return out.view(-1, out.shape[-1]), h_n[0], c_n[0]
    outputs, finished_h, finished_c = [], [], []
    h, c = h0, c0
    for start, steps, rows in _runs_of_equal_sizes(packing):
        if rows < h.shape[0]:  # rows [rows:] ended with the previous run
            finished_h.append(h[rows:])
            finished_c.append(c[rows:])
            h, c = h[:rows], c[:rows]
        x = data[start : start + steps * rows].view(steps, rows, depth)
        out, h_n, c_n = torch.lstm(x, (h.unsqueeze(0), c.unsqueeze(0)), list(weights), True, 1, 0.0, train, False,
                                   False)
        outputs.append(out.reshape(-1, out.shape[-1]))
        h, c = h_n[0], c_n[0]
    finished_h.append(h)
    finished_c.append(c)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return out, torch.cat(finished_h[::-1]), torch.cat(finished_c[::-1])


def _lstm_packed(data: Tensor, packing: Packing, h0: Tensor, c0: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
    """Packed LSTM as one packed ``torch.lstm`` call (cuDNN takes packed input)."""
    if packing.flat_index is None:  # every row runs every step: the padded call
        return _lstm_runs(data, packing, h0, c0, *weights)
    sizes = torch.tensor(packing.batch_sizes, dtype=torch.long)
    out, h_n, c_n = torch.lstm(data, sizes, (h0.unsqueeze(0), c0.unsqueeze(0)), list(weights), True, 1, 0.0,
                               torch.is_grad_enabled(), False)
    return out, h_n[0], c_n[0]


def torch_lstm_layer(
    data: Tensor, packing: Packing, h0: Tensor, c0: Tensor, cell: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """Packed ``data`` ``[N, D]`` -> ``(out [N, H], h_final [k, H], c_final [k, U])`` through
    ``torch.lstm``: one packed call on CUDA, one call per run of equal batch sizes on the CPU."""
    weights = torch_lstm_weights(cell, data.shape[1])
    if cell.num_proj is not None:
        weights.append(cell.projection["kernel"].t().contiguous())  # cuDNN views every weight
    run = _lstm_packed if data.device.type == "cuda" else _lstm_runs
    out, h, c = _with_tf32_rule(lambda *t: run(t[0], packing, *t[1:]), data, h0, c0, *weights)
    return out, h, c


def _one_state_packed(
    rnn: Callable[..., tuple[Tensor, Tensor]], data: Tensor, packing: Packing, h0: Tensor, *weights: Tensor
) -> tuple[Tensor, ...]:
    """Packed ``data`` through ``rnn`` (``torch.gru``, ``torch.rnn_tanh``, ``torch.rnn_relu``):
    the padded call when every row runs every step, else one packed call."""
    train = torch.is_grad_enabled()
    if packing.flat_index is None:
        x = data.view(len(packing.batch_sizes), packing.batch_size, data.shape[1])
        out, h_n = rnn(x, h0.unsqueeze(0), list(weights), True, 1, 0.0, train, False, False)
        return out.reshape(-1, out.shape[-1]), h_n[0]
    sizes = torch.tensor(packing.batch_sizes, dtype=torch.long)
    out, h_n = rnn(data, sizes, h0.unsqueeze(0), list(weights), True, 1, 0.0, train, False)
    return out, h_n[0]


def torch_gru_layer(data: Tensor, packing: Packing, h0: Tensor, cell: Any) -> tuple[Tensor, Tensor]:
    """Packed ``data`` ``[N, D]`` -> ``(out [N, U], h_final [k, U])`` for a
    ``GRUCell(reset_after=True)`` through ``torch.gru`` (one packed call)."""
    weights = torch_gru_weights(cell, data.shape[1])
    out, h = _with_tf32_rule(lambda *t: _one_state_packed(torch.gru, t[0], packing, *t[1:]), data, h0, *weights)
    return out, h


TORCH_RNN_FUNCTIONS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {  # by activation kind
    "tanh": torch.rnn_tanh,
    "relu": torch.rnn_relu,
}


def torch_rnn_layer(data: Tensor, packing: Packing, h0: Tensor, cell: Any, activation: str) -> tuple[Tensor, Tensor]:
    """Packed ``data`` ``[N, D]`` -> ``(out [N, U], h_final [k, U])`` for a ``BasicRNNCell``
    whose activation is of kind ``activation`` (tanh or relu: ``TORCH_RNN_FUNCTIONS``) through
    ``torch.rnn_tanh``/``rnn_relu``."""
    rnn = TORCH_RNN_FUNCTIONS[activation]
    weights = torch_rnn_weights(cell, data.shape[1])
    out, h = _with_tf32_rule(lambda *t: _one_state_packed(rnn, t[0], packing, *t[1:]), data, h0, *weights)
    return out, h
