"""A whole ``BasicRNNCell`` layer over packed steps, forward and hand-written backward::

    h' = act(x W_x + b + h W_h)        # W_x, W_h: the input and recurrent rows of ``kernel``

``act`` is any kind of ``activation_kinds.py``. The input projection of all steps is one GEMM;
each step adds one ``h @ W_h`` GEMM in place and applies the activation (backward: the
activation's derivative from the saved output, then one ``dz @ W_h^T`` GEMM); the weight
gradients are single GEMMs at the end. Where the steps run:

* CUDA: the persistent Triton kernel (``persistent_rnn.py``) where its programs fit, while
  ``triton_support.PERSISTENT_RNN``; else the loops below around Triton's pointwise kernels
  (float32 and half). cuDNN takes tanh and relu before this (``torch_rnn.py``), except where
  the persistent kernel is preferred;
* CPU: the same loops compiled (``rnn_cpu.cpp``) when they build; else the loops below around
  their torch twins (which also run half inputs on CUDA without Triton).

The pre-activations are kept in float32 for half inputs (the GEMMs run in half with float32
accumulation, each product rounded to half before it is added, as in ``lstm.py``); ``h`` is
stored in the inputs' dtype.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .activation_kinds import activate_, activation_backward
from .cpu.native import compiled_loops, kernels
from .packing import Packing, last_rows, previous_states, step_starts
from .precision import HALF_DTYPES, add_product_, product_into, state_dtype
from .step_loops import StepLoops, stacked_products
from .triton.triton_support import persistent_rnn_fits, triton_runs_on


def forward_pointwise_torch(z: Tensor, h: Tensor, activation: str = "tanh") -> None:
    """``h = act(z)`` (``z`` is overwritten; ``h`` may be ``z`` itself)."""
    activate_(activation, z)
    if h is not z:
        h.copy_(z)


def backward_pointwise_torch(d_out: Tensor, d_h: Tensor, h: Tensor, d_pre: Tensor, activation: str = "tanh") -> None:
    """``d_pre = (d_out + d_h) * act'`` at the output ``h``: the pre-activation's gradient from
    the step's output gradient and what reached ``h`` through the next step."""
    d_pre.copy_(activation_backward(activation, d_out + d_h, h))


def forward_steps_torch(
    pre: Tensor, out: Tensor, h0: Tensor, w_h: Tensor, batch_sizes: list[int],
    pointwise: Callable[..., None] = forward_pointwise_torch,
) -> None:
    """The forward step loop over packed rows: ``pre`` (``[N, U]``, the input projection plus
    bias; overwritten) gains ``h_prev @ W_h`` and ``out`` (``[N, U]``, may be ``pre``) gets
    ``act`` of it. ``pointwise`` is :func:`forward_pointwise_torch` or its Triton twin."""
    h_prev, start = h0, 0
    for n in batch_sizes:
        rows = slice(start, start + n)
        z = add_product_(pre[rows], h_prev[:n], w_h)
        h_prev = z if out is pre else out[rows]
        pointwise(z, h_prev)
        start += n


def backward_steps_torch(
    out: Tensor, d_out: Tensor, d_h: Tensor, d_pre: Tensor, w_h_t: Tensor, batch_sizes: list[int],
    pointwise: Callable[..., None] = backward_pointwise_torch,
) -> None:
    """The backward step loop: fills ``d_pre`` (the pre-activations' gradients) and leaves the
    initial state's gradient in ``d_h`` (zeros on entry)."""
    starts = step_starts(batch_sizes)
    for t in reversed(range(len(batch_sizes))):
        rows = slice(starts[t], starts[t] + batch_sizes[t])
        n = batch_sizes[t]
        pointwise(d_out[rows], d_h[:n], out[rows], d_pre[rows])
        product_into(d_h[:n], d_pre[rows], w_h_t)


def _loops(forward_pointwise: Callable[..., None], backward_pointwise: Callable[..., None],
           activation: str) -> StepLoops:
    """The step loops around a pair of pointwise steps, for the cell's ``activation``."""
    return StepLoops(partial(forward_steps_torch, pointwise=partial(forward_pointwise, activation=activation)),
                     partial(backward_steps_torch, pointwise=partial(backward_pointwise, activation=activation)))


def _steps(device: torch.device, dtype: torch.dtype, batch: int, units: int, activation: str) -> StepLoops:
    """The step loops for a layer: on the CPU the compiled loops of
    ``rnn_cpu.cpp`` when they build; on CUDA the persistent kernels where they fit, else the
    loops around Triton's pointwise kernels; half inputs on the CPU under Triton's interpreter
    (tests) the same; the torch twins otherwise."""
    if device.type == "cpu" and dtype not in HALF_DTYPES:
        compiled = compiled_loops(kernels(), "rnn", activation)
        return compiled or _loops(forward_pointwise_torch, backward_pointwise_torch, activation)
    on_triton = triton_runs_on(device) and (device.type == "cuda" or dtype in HALF_DTYPES)
    if not on_triton or dtype == torch.float64:
        return _loops(forward_pointwise_torch, backward_pointwise_torch, activation)
    if persistent_rnn_fits(device, batch, units):
        from .triton.persistent_rnn import backward_steps_persistent, forward_steps_persistent

        return StepLoops(partial(forward_steps_persistent, activation=activation),
                         partial(backward_steps_persistent, activation=activation))
    from .triton.triton_pointwise import rnn_backward_triton, rnn_forward_triton

    return _loops(rnn_forward_triton, rnn_backward_triton, activation)


class RNNSequence(torch.autograd.Function):
    """Packed ``BasicRNNCell`` layer: ``(data [N, D], h0 [k, U], kernel [D + U, U], bias [U])
    -> (out [N, U], h_final [k, U])`` for the ``k`` running rows, longest first."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, data: Tensor, h0: Tensor, kernel: Tensor, bias: Tensor, packing: Packing, activation: str = "tanh"
    ) -> tuple[Tensor, Tensor]:
        depth, units = data.shape[1], h0.shape[1]
        pre = torch.addmm(bias, data, kernel[:depth]).to(state_dtype(data.dtype))  # [N, U]
        out = pre if pre.dtype == data.dtype else torch.empty(pre.shape, dtype=data.dtype, device=data.device)
        ctx.loops = _steps(data.device, data.dtype, packing.num_running, units, activation)
        ctx.loops.forward(pre, out, h0, kernel[depth:], list(packing.batch_sizes))
        ctx.save_for_backward(data, h0, kernel, out)
        ctx.packing = packing
        return out, out.index_select(0, last_rows(packing, data.device))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_h_final: Tensor) -> tuple[Any, ...]:
        data, h0, kernel, out = ctx.saved_tensors
        packing: Packing = ctx.packing
        depth = data.shape[1]
        d_out = d_out.clone()
        d_out.index_add_(0, last_rows(packing, data.device), d_h_final)
        d_pre = torch.empty(out.shape, dtype=state_dtype(data.dtype), device=data.device)
        d_h = torch.zeros_like(h0)
        loops: StepLoops = ctx.loops
        loops.backward(out, d_out, d_h, d_pre, loops.transposed(kernel[depth:]), list(packing.batch_sizes))
        d_pre_x = d_pre.to(data.dtype)  # the GEMMs in the inputs' dtype
        d_kernel = stacked_products(data, previous_states(h0, out, packing), d_pre_x)
        return d_pre_x @ kernel[:depth].t(), d_h, d_kernel, d_pre.sum(0).to(data.dtype), None, None
