"""A whole TF GRU layer (reset gate BEFORE the candidate matmul) over packed steps, forward and
hand-written backward. The candidate's activation is any kind of ``activation_kinds.py``;
tanh in the formulas below. The gates are sigmoid, or hard_sigmoid (on the CPU only).

GRU, with ``W_g = gates/kernel`` and ``W_c = candidate/kernel`` split into input rows ``x`` and
recurrent rows ``h``::

    r, u = sigmoid(x W_gx + h W_gh + b_g)      # one GEMM for the input part of all steps
    c = tanh(x W_cx + (r * h) W_ch + b_c)      # the second, dependent GEMM of each step
    h' = u * h + (1 - u) * c

Both input projections of all steps are one GEMM; each step runs two small dependent GEMMs
(TF's reset-before form cannot share one), forward and backward, each followed by one
pointwise pass (compiled in ``rnn_cpu.cpp`` on the CPU, else the torch twins below).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .activation_kinds import activate_, activation_backward, gate_, gate_backward_into
from .cpu.native import compiled_loops, kernels
from .packing import Packing, last_rows, previous_states, step_starts
from .precision import HALF_DTYPES, add_product_, product_into, state_dtype
from .step_loops import StepLoops, stacked_products
from .triton.triton_support import persistent_fits, triton_runs_on


def gates_forward_torch(g: Tensor, h_prev: Tensor, rh: Tensor, gate: str = "sigmoid") -> None:
    """``g = gate(g)`` in place ([n, 2U]: r, u) and ``rh = r * h_prev``."""
    gate_(gate, g)
    torch.mul(g[:, : h_prev.shape[1]], h_prev, out=rh)


def output_forward_torch(c: Tensor, g: Tensor, h_prev: Tensor, h: Tensor, activation: str = "tanh") -> None:
    """``c = act(c)`` in place and ``h = u * h_prev + (1 - u) * c``."""
    activate_(activation, c)
    torch.sub(h_prev, c, out=h).mul_(g[:, c.shape[1] :]).add_(c)


def output_backward_torch(
    dh: Tensor, g: Tensor, c: Tensor, h_prev: Tensor, dg: Tensor, dc: Tensor, dh_prev: Tensor, activation: str = "tanh",
    gate: str = "sigmoid",
) -> None:
    """From ``dh`` (gradient of the new h): the u pre-activation gradient into ``dg[:, U:]``,
    the candidate pre-activation gradient into ``dc``, and ``dh_prev = dh * u``."""
    U = c.shape[1]
    u = g[:, U:]
    gate_backward_into(gate, dh * (h_prev - c), u, dg[:, U:])
    dc.copy_(activation_backward(activation, dh - dh * u, c))
    torch.mul(dh, u, out=dh_prev)


def reset_backward_torch(
    d_rh: Tensor, g: Tensor, h_prev: Tensor, dg: Tensor, dh_prev: Tensor, gate: str = "sigmoid"
) -> None:
    """From ``d_rh`` (gradient of r * h_prev): the r pre-activation gradient into ``dg[:, :U]``,
    and ``dh_prev += d_rh * r``."""
    r = g[:, : h_prev.shape[1]]
    gate_backward_into(gate, d_rh * h_prev, r, dg[:, : h_prev.shape[1]])
    dh_prev.addcmul_(d_rh, r)


@dataclass(frozen=True)
class GRUPointwise:
    """The four pointwise parts of a GRU step: the torch twins above, or their Triton kernels;
    the output parts for the candidate's activation kind."""

    gates_forward: Callable[..., None] = gates_forward_torch
    output_forward: Callable[..., None] = output_forward_torch
    output_backward: Callable[..., None] = output_backward_torch
    reset_backward: Callable[..., None] = reset_backward_torch

    def for_activation(self, activation: str, gate: str = "sigmoid") -> GRUPointwise:
        """These parts with the output parts bound to the candidate's ``activation`` kind, and the
        gate parts to the ``gate`` kind unless sigmoid (Triton's kernels compute sigmoid gates)."""
        bound = replace(self, output_forward=partial(self.output_forward, activation=activation),
                        output_backward=partial(self.output_backward, activation=activation))
        if gate == "sigmoid":
            return bound
        return replace(bound, gates_forward=partial(bound.gates_forward, gate=gate),
                       output_backward=partial(bound.output_backward, gate=gate),
                       reset_backward=partial(bound.reset_backward, gate=gate))


_TORCH_POINTWISE = GRUPointwise()


def forward_steps_torch(
    gates: Tensor, candidates: Tensor, reset_h: Tensor, out: Tensor, h0: Tensor, w_gh: Tensor, w_ch: Tensor,
    batch_sizes: list[int], pointwise: GRUPointwise = _TORCH_POINTWISE,
) -> None:
    """The forward step loop over packed rows (``gru_forward_steps`` in ``rnn_cpu.cpp``)."""
    h_prev, start = h0, 0
    for n in batch_sizes:
        rows = slice(start, start + n)
        g = add_product_(gates[rows], h_prev[:n], w_gh)
        pointwise.gates_forward(g, h_prev[:n], reset_h[rows])
        c = add_product_(candidates[rows], reset_h[rows], w_ch)
        pointwise.output_forward(c, g, h_prev[:n], out[rows])
        h_prev, start = out[rows], start + n


def backward_steps_torch(
    gates: Tensor, candidates: Tensor, out: Tensor, h0: Tensor, d_out: Tensor, d_h: Tensor, d_gates: Tensor,
    d_candidates: Tensor, w_gh_t: Tensor, w_ch_t: Tensor, batch_sizes: list[int],
    pointwise: GRUPointwise = _TORCH_POINTWISE,
) -> None:
    """The backward step loop (``gru_backward_steps``): fills ``d_gates`` and ``d_candidates``
    and leaves the initial state's gradient in ``d_h``."""
    starts = step_starts(batch_sizes)
    d_rh = torch.empty_like(d_h)  # the gradient of r * h_prev
    for t in reversed(range(len(batch_sizes))):
        n, start = batch_sizes[t], starts[t]
        rows = slice(start, start + n)
        h_prev = h0[:n] if t == 0 else out[starts[t - 1] : starts[t - 1] + n]
        g, dg, dc = gates[rows], d_gates[rows], d_candidates[rows]
        dh = d_out[rows] + d_h[:n]
        pointwise.output_backward(dh, g, candidates[rows], h_prev, dg, dc, d_h[:n])
        pointwise.reset_backward(product_into(d_rh[:n], dc, w_ch_t), g, h_prev, dg, d_h[:n])
        add_product_(d_h[:n], dg, w_gh_t)


def _steps(
    device: torch.device, dtype: torch.dtype, batch: int, units: int, activation: str = "tanh", save: bool = True,
    gate: str = "sigmoid",
) -> StepLoops:
    """The step loops for a layer: on the CPU the compiled loops when they
    build (half inputs only in tests, through Triton's interpreter); on CUDA the
    persistent Triton kernels where they fit (without ``save`` they skip what only backward
    reads), else the loops around Triton's pointwise kernels (float32 and half); the torch
    twins otherwise (float32 and float64). Gates other than sigmoid run on the CPU loops only
    (the plan sends them nowhere else)."""
    if device.type == "cpu" and dtype not in HALF_DTYPES:
        return compiled_loops(kernels(), "gru", activation, gate) or _loops(_TORCH_POINTWISE, activation, gate)
    if gate != "sigmoid":
        raise ValueError(f"the fused GRU runs {gate} gates only on the CPU, in float32 and float64")
    if triton_runs_on(device) and dtype != torch.float64:
        if persistent_fits(device, batch, units):
            from .triton.persistent_gru import backward_steps_persistent, forward_steps_persistent

            return StepLoops(partial(forward_steps_persistent, activation=activation, save=save),
                             partial(backward_steps_persistent, activation=activation))
        from .triton import triton_pointwise as kernels_

        on_triton = GRUPointwise(kernels_.gates_forward_triton, kernels_.output_forward_triton,
                                 kernels_.output_backward_triton, kernels_.reset_backward_triton)
        return _loops(on_triton, activation)
    if dtype in HALF_DTYPES:
        raise ValueError(f"the fused GRU runs {dtype} only with Triton's kernels (CUDA)")
    return _loops(_TORCH_POINTWISE, activation)


def _loops(pointwise: GRUPointwise, activation: str, gate: str = "sigmoid") -> StepLoops:
    """The step loops around ``pointwise``, for the candidate's ``activation`` and the ``gate`` kind."""
    bound = pointwise.for_activation(activation, gate)
    return StepLoops(partial(forward_steps_torch, pointwise=bound), partial(backward_steps_torch, pointwise=bound))


class GRUSequence(torch.autograd.Function):
    """Packed GRU layer: ``(data [N, D], h0 [k, U], gates kernel/bias, candidate kernel/bias,
    packing, activation, grad_enabled, gate) -> (out [N, U], h_final [k, U])`` for the ``k`` running
    rows, longest first. ``grad_enabled`` is the caller's grad mode (``forward`` runs without it);
    ``gate`` the gate kind."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        data: Tensor,
        h0: Tensor,
        gates_kernel: Tensor,
        gates_bias: Tensor,
        candidate_kernel: Tensor,
        candidate_bias: Tensor,
        packing: Packing,
        activation: str = "tanh",
        grad_enabled: bool = True,
        gate: str = "sigmoid",
    ) -> tuple[Tensor, Tensor]:
        U, depth = h0.shape[1], data.shape[1]
        kept_dtype = state_dtype(data.dtype)  # float32 gates for half inputs
        gates = torch.addmm(gates_bias, data, gates_kernel[:depth]).to(kept_dtype)  # [N, 2U]: (r, u) once activated
        candidates = torch.addmm(candidate_bias, data, candidate_kernel[:depth]).to(kept_dtype)  # [N, U]: c
        reset_h = torch.empty(data.shape[0], U, dtype=data.dtype, device=data.device)
        out = torch.empty_like(reset_h)
        save = grad_enabled and any(ctx.needs_input_grad)  # a backward can follow
        ctx.loops = _steps(data.device, data.dtype, packing.batch_sizes[0], U, activation, save, gate=gate)
        ctx.loops.forward(gates, candidates, reset_h, out, h0, gates_kernel[depth:], candidate_kernel[depth:],
                          list(packing.batch_sizes))
        last = last_rows(packing, data.device)
        ctx.save_for_backward(data, h0, gates_kernel, candidate_kernel, gates, candidates, reset_h, out)
        ctx.packing = packing
        return out, out.index_select(0, last)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_h_final: Tensor) -> tuple[Any, ...]:
        data, h0, gates_kernel, candidate_kernel, gates, candidates, reset_h, out = ctx.saved_tensors
        packing: Packing = ctx.packing
        loops: StepLoops = ctx.loops
        depth = data.shape[1]
        d_out = d_out.clone()
        d_out.index_add_(0, last_rows(packing, data.device), d_h_final)
        d_gates, d_candidates = torch.empty_like(gates), torch.empty_like(candidates)
        d_h = torch.zeros_like(h0)
        w_gh_t, w_ch_t = loops.transposed(gates_kernel[depth:]), loops.transposed(candidate_kernel[depth:])
        loops.backward(
            gates, candidates, out, h0, d_out, d_h, d_gates, d_candidates, w_gh_t, w_ch_t, list(packing.batch_sizes)
        )
        h_prev_all = previous_states(h0, out, packing)
        # the GEMMs in the inputs' dtype (float32 gradients of half inputs)
        d_gates_x, d_candidates_x = d_gates.to(data.dtype), d_candidates.to(data.dtype)
        d_data = torch.mm(d_gates_x, gates_kernel[:depth].t()).addmm_(d_candidates_x, candidate_kernel[:depth].t())
        d_gates_kernel = stacked_products(data, h_prev_all, d_gates_x)
        d_candidate_kernel = stacked_products(data, reset_h, d_candidates_x)
        d_biases = (d_gates.sum(0).to(data.dtype), d_candidates.sum(0).to(data.dtype))
        return d_data, d_h, d_gates_kernel, d_biases[0], d_candidate_kernel, d_biases[1], None, None, None, None

