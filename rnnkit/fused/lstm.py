"""A whole LSTM layer (TF's ``LSTMCell``, every option) over packed steps, forward and backward.

Same math as :class:`rnnkit.LSTMCell` (gate blocks ``(i, j, f, o)``, ``forget_bias`` added to
``f``, peepholes from ``c_prev`` for i/f and from the new clipped ``c`` for o, cell and
projection clipping, the cell's activation on ``j`` and ``c``: any kind of
``activation_kinds.py``; sigmoid or hard_sigmoid gates, on the CPU only for hard_sigmoid),
organised for speed:

* the compiled CPU loops read TF's kernel and bias as they are, gate blocks ``(i, j, f, o)``,
  and add ``forget_bias`` in the step (TF's order: after the bias); for the torch twins and the
  Triton kernels a copy of the kernel's columns is reordered to ``(i, f, o, j)``, so the sigmoid
  gates are one contiguous block, with ``forget_bias`` folded into the bias, once per call;
* the input projection of all steps is one GEMM; each step adds one ``h @ W_h`` GEMM in place
  and does its pointwise part on the rows still alive in one compiled pass (``rnn_cpu.cpp``,
  CPU), one Triton kernel (CUDA; or the whole loop is one persistent kernel), or else
  as a handful of in-place torch ops;
* backward is written by hand: per step one pointwise pass for the gate gradients and one
  ``dz @ W_h^T`` GEMM; the weight gradients are single GEMMs over all steps at the end.
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


@dataclass(frozen=True)
class LSTMConfig:
    """The cell's numbers; peepholes and projection are on when their weights are given.
    ``activation`` is the kind (``activation_kinds.py``) applied to ``j`` and to ``c``, ``gate``
    the gate kind of i, f and o. ``clip_gradient=False``: the cell clipping's gradient is the
    identity (TF's block LSTM ops), not ``clip_by_value``'s (zero where it clipped)."""

    units: int
    forget_bias: float
    cell_clip: float | None
    proj_clip: float | None
    activation: str = "tanh"
    gate: str = "sigmoid"
    clip_gradient: bool = True


def _reorder_gates(kernel: Tensor, bias: Tensor, units: int, forget_bias: float) -> tuple[Tensor, Tensor]:
    """TF's ``(i, j, f, o)`` columns -> ``(i, f, o, j)``, with ``forget_bias`` in the f bias."""
    i, j, f, o = kernel.split(units, 1)
    bi, bj, bf, bo = bias.split(units)
    return torch.cat([i, f, o, j], 1), torch.cat([bi, bf + forget_bias, bo, bj])


def _restore_gate_order(grad: Tensor, units: int) -> Tensor:
    """Inverse of the column reordering, for gradients: ``(i, f, o, j)`` -> ``(i, j, f, o)``."""
    i, f, o, j = grad.split(units, -1)
    return torch.cat([i, j, f, o], -1)


TF_GATE_BLOCKS = (0, 2, 3, 1)  # the blocks of i, f, o and j in TF's layout (i, j, f, o)
TWIN_GATE_BLOCKS = (0, 1, 2, 3)  # and in the twins' and Triton's (i, f, o, j)


def _gate_blocks(loops: StepLoops) -> tuple[int, int, int, int]:
    """The blocks of the gates (and of their gradients) that hold i, f, o and j: the compiled
    loops read TF's kernel as it is, the others a reordered copy (:func:`_reorder_gates`)."""
    return TF_GATE_BLOCKS if loops.compiled else TWIN_GATE_BLOCKS


_ABSENT = torch.empty(0)  # an optional tensor that is not there (the compiled kernels' convention)


def _given(t: Tensor | None) -> Tensor:
    return _ABSENT if t is None else t


def _clip_(values: Tensor, limit: float, kept: Tensor) -> None:
    """Clamp ``values`` to ``[-limit, limit]`` in place; ``kept`` records where the gradient
    passes (``|value| <= limit``, as ``torch.clamp``'s and TF's ``clip_by_value``'s)."""
    torch.le(values.abs(), limit, out=kept)
    values.clamp_(-limit, limit)


def _mask_like(values: Tensor, wanted: bool) -> Tensor | None:
    return torch.empty(values.shape, dtype=torch.bool, device=values.device) if wanted else None


def forward_pointwise_torch(
    z: Tensor, c_prev: Tensor, w_if: Tensor, w_o: Tensor, clip: float,
    j: Tensor, c: Tensor, act_c: Tensor, m: Tensor, kept: Tensor, activation: str = "tanh", gate: str = "sigmoid",
) -> None:
    """One step's pointwise forward on ``n`` rows, in torch ops (``rnn_cpu.cpp`` is the same
    in one pass): activates ``z`` [n, 4U] (i, f, o, j) in place and writes
    ``j = act(j)``, the new (clipped) ``c``, ``act(c)``, ``m = o * act(c)`` and, if clipping,
    ``kept``. Absent peepholes are empty tensors; ``clip < 0`` means no clipping."""
    n, U = c.shape
    peepholes = w_if.numel() > 0
    if peepholes:
        z[:, : 2 * U].view(n, 2, U).addcmul_(c_prev.unsqueeze(1), w_if)
    gate_(gate, z[:, : 2 * U if peepholes else 3 * U])  # with peepholes o waits for the new c
    activate_(activation, j.copy_(z[:, 3 * U :]))  # contiguous: tanh on a strided block is much slower
    i, f, o = z[:, :U], z[:, U : 2 * U], z[:, 2 * U : 3 * U]
    torch.mul(f, c_prev, out=c).addcmul_(i, j)
    if clip >= 0:
        _clip_(c, clip, kept)
    if peepholes:
        gate_(gate, o.addcmul_(c, w_o))
    torch.mul(o, activate_(activation, act_c.copy_(c)), out=m)


def backward_pointwise_torch(
    z: Tensor, j: Tensor, c_prev: Tensor, act_c: Tensor, dm: Tensor, d_c: Tensor,
    w_if: Tensor, w_o: Tensor, kept: Tensor, dz: Tensor, activation: str = "tanh", gate: str = "sigmoid",
) -> None:
    """One step's pointwise backward: from ``dm`` (the gradient of ``m``) and ``d_c`` (the
    gradient reaching the new ``c`` from the next step) write the gate pre-activation
    gradients ``dz`` [n, 4U] and replace ``d_c`` by the gradient of ``c_prev``."""
    U = j.shape[1]
    i, f, o = z[:, :U], z[:, U : 2 * U], z[:, 2 * U : 3 * U]
    gate_backward_into(gate, dm * act_c, o, dz[:, 2 * U : 3 * U])
    dc = activation_backward(activation, dm * o, act_c).add_(d_c)
    if w_o.numel() > 0:
        dc.addcmul_(dz[:, 2 * U : 3 * U], w_o)
    if kept.numel() > 0:
        dc.mul_(kept)
    gate_backward_into(gate, dc * c_prev, f, dz[:, U : 2 * U])
    gate_backward_into(gate, dc * j, i, dz[:, :U])
    dz[:, 3 * U :] = activation_backward(activation, dc * i, j)
    d_c_prev = dc.mul_(f)
    if w_if.numel() > 0:
        d_c_prev.addcmul_(dz[:, :U], w_if[0]).addcmul_(dz[:, U : 2 * U], w_if[1])
    d_c.copy_(d_c_prev)


def forward_steps_torch(
    gates: Tensor, h0: Tensor, c0: Tensor, w_h: Tensor, w_if: Tensor, w_o: Tensor, projection: Tensor,
    clip: float, proj_clip: float, batch_sizes: list[int], candidates: Tensor, cells: Tensor,
    act_cells: Tensor, hidden: Tensor, out: Tensor, clip_mask: Tensor, proj_mask: Tensor,
    pointwise: Callable[..., None] = forward_pointwise_torch,
) -> None:
    """The forward step loop over packed rows (``lstm_forward_steps`` in ``rnn_cpu.cpp`` is the
    same loop in C++). Absent tensors are empty; ``clip``/``proj_clip`` < 0 mean no clipping.
    ``pointwise`` is :func:`forward_pointwise_torch` or its Triton twin."""
    h_prev, c_prev, start = h0, c0, 0
    for n in batch_sizes:
        rows = slice(start, start + n)
        z = add_product_(gates[rows], h_prev[:n], w_h)
        m = out[rows] if projection.numel() == 0 else hidden[rows]
        kept = clip_mask[rows] if clip_mask.numel() else clip_mask
        step_outputs = (candidates[rows], cells[rows], act_cells[rows], m, kept)
        pointwise(z, c_prev[:n], w_if, w_o, clip, *step_outputs)
        if projection.numel():
            m = product_into(out[rows], m, projection)
            if proj_clip >= 0:
                _clip_(m, proj_clip, proj_mask[rows])
        h_prev, c_prev, start = out[rows], cells[rows], start + n


def backward_steps_torch(
    gates: Tensor, candidates: Tensor, cells: Tensor, act_cells: Tensor, c0: Tensor, d_out: Tensor,
    d_h: Tensor, d_c: Tensor, d_gates: Tensor, d_m: Tensor, w_h_t: Tensor, projection_t: Tensor,
    w_if: Tensor, w_o: Tensor, clip_mask: Tensor, proj_mask: Tensor, batch_sizes: list[int],
    pointwise: Callable[..., None] = backward_pointwise_torch,
) -> None:
    """The backward step loop (``lstm_backward_steps`` in C++): fills ``d_gates`` (and ``d_m``,
    the gradient of the projection's output), leaves the initial state's gradients in ``d_h``
    and ``d_c``. ``pointwise`` is :func:`backward_pointwise_torch` or its Triton twin."""
    starts = step_starts(batch_sizes)
    for t in reversed(range(len(batch_sizes))):
        n, start = batch_sizes[t], starts[t]
        rows = slice(start, start + n)
        c_prev = c0[:n] if t == 0 else cells[starts[t - 1] : starts[t - 1] + n]
        dm = d_out[rows] + d_h[:n]
        if projection_t.numel():
            if proj_mask.numel():
                dm.mul_(proj_mask[rows])
            d_m[rows] = dm
            dm = dm @ projection_t
        kept = clip_mask[rows] if clip_mask.numel() else clip_mask
        dz = d_gates[rows]
        saved = (gates[rows], candidates[rows], c_prev, act_cells[rows])
        pointwise(*saved, dm, d_c[:n], w_if, w_o, kept, dz)
        product_into(d_h[:n], dz, w_h_t)


def _steps(
    device: torch.device, dtype: torch.dtype, batch: int, config: LSTMConfig, num_proj: int | None, save: bool = True,
) -> StepLoops:
    """The step loops for a layer: on the CPU the compiled loops when they
    build (TF's layout; half inputs only in tests, through Triton's interpreter); on CUDA the
    persistent Triton kernels where they fit (see ``triton_support.persistent_fits``; without
    ``save`` they skip what only backward reads), else the loops around Triton's pointwise
    kernels (float32 and half); the torch twins otherwise (float32 and float64). Gates other
    than sigmoid run on the CPU loops only (the plan sends them nowhere else)."""
    units, activation, gate = config.units, config.activation, config.gate
    if device.type == "cpu" and dtype not in HALF_DTYPES:
        compiled = compiled_loops(kernels(), "lstm", activation, gate)
        if compiled is None:
            return _loops(forward_pointwise_torch, backward_pointwise_torch, activation, gate)
        forget_bias, forward = float(config.forget_bias), compiled.forward
        return replace(compiled, forward=lambda *loop: forward(*loop, forget_bias))  # added in the step
    if gate != "sigmoid":
        raise ValueError(f"the fused LSTM runs {gate} gates only on the CPU, in float32 and float64")
    if triton_runs_on(device) and dtype != torch.float64:
        if persistent_fits(device, batch, units, num_proj):
            from .triton.persistent_lstm import backward_steps_persistent, forward_steps_persistent

            return StepLoops(partial(forward_steps_persistent, activation=activation, save=save),
                             partial(backward_steps_persistent, activation=activation))
        from .triton.triton_pointwise import backward_pointwise_triton, forward_pointwise_triton

        return _loops(forward_pointwise_triton, backward_pointwise_triton, activation)
    if dtype in HALF_DTYPES:
        raise ValueError(f"the fused LSTM runs {dtype} only with Triton's kernels (CUDA)")
    return _loops(forward_pointwise_torch, backward_pointwise_torch, activation)


def _loops(forward_pointwise: Callable[..., None], backward_pointwise: Callable[..., None],
           activation: str, gate: str = "sigmoid") -> StepLoops:
    """The step loops around a pair of pointwise functions, for ``activation`` and the ``gate``
    kind (bound only when not sigmoid: Triton's pointwise functions compute sigmoid gates)."""
    kinds = {"activation": activation} if gate == "sigmoid" else {"activation": activation, "gate": gate}
    return StepLoops(partial(forward_steps_torch, pointwise=partial(forward_pointwise, **kinds)),
                     partial(backward_steps_torch, pointwise=partial(backward_pointwise, **kinds)))


def _kernel_gradient(data: Tensor, h_prev: Tensor, d_gates: Tensor, tf_layout: bool, units: int) -> Tensor:
    """The gradient of TF's kernel ``[D + H, 4U]`` from that of the gates ``[N, 4U]`` (in the
    loops' layout), the inputs ``data`` ``[N, D]`` and the previous outputs ``h_prev`` ``[N, H]``."""
    if tf_layout:
        return stacked_products(data, h_prev, d_gates)
    return _restore_gate_order(torch.cat([data.t() @ d_gates, h_prev.t() @ d_gates]), units)


class LSTMSequence(torch.autograd.Function):
    """Packed LSTM layer: ``(data [N, D], h0 [k, H], c0 [k, U], weights..., config, packing,
    grad_enabled) -> (out [N, H], h_final [k, H], c_final [k, U])`` for the ``k`` running rows,
    longest first. ``grad_enabled`` is the caller's grad mode (``forward`` runs without it)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        data: Tensor,
        h0: Tensor,
        c0: Tensor,
        kernel: Tensor,
        bias: Tensor,
        w_i: Tensor | None,
        w_f: Tensor | None,
        w_o: Tensor | None,
        projection: Tensor | None,
        config: LSTMConfig,
        packing: Packing,
        grad_enabled: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        U = config.units
        depth = data.shape[1]
        num_proj = None if projection is None else projection.shape[1]
        save = grad_enabled and any(ctx.needs_input_grad)  # a backward can follow
        loops = _steps(data.device, data.dtype, packing.batch_sizes[0], config, num_proj, save)
        if loops.compiled:
            kernel_l, bias_l = kernel.contiguous(), bias  # as they are
        else:
            kernel_l, bias_l = _reorder_gates(kernel, bias, U, config.forget_bias)
        w_x, w_h = kernel_l[:depth], kernel_l[depth:]
        kept_dtype = state_dtype(data.dtype)  # float32 gates and cell states for half inputs
        gates = torch.addmm(bias_l, data, w_x).to(kept_dtype)  # [N, 4U], activated in place: i, f, o in 0, 1, 2
        cells = torch.empty(data.shape[0], U, dtype=kept_dtype, device=data.device)
        act_cells = torch.empty_like(cells)
        candidates = torch.empty_like(cells)  # act(j), contiguous: tanh on a strided block is slow
        hidden = None if projection is None else torch.empty_like(cells)  # m before the projection
        out = torch.empty(data.shape[0], w_h.shape[0], dtype=data.dtype, device=data.device)
        clip_mask = _mask_like(cells, config.cell_clip is not None)
        proj_mask = _mask_like(out, projection is not None and config.proj_clip is not None)
        w_if = torch.stack([w_i, w_f]) if w_i is not None and w_f is not None else None  # [2, U]
        ctx.loops = loops
        loops.forward(
            gates, h0, c0, w_h, _given(w_if), _given(w_o), _given(projection),
            -1.0 if config.cell_clip is None else config.cell_clip,
            -1.0 if config.proj_clip is None else config.proj_clip,
            list(packing.batch_sizes), candidates, cells, act_cells, _given(hidden), out,
            _given(clip_mask), _given(proj_mask),
        )
        last = last_rows(packing, data.device)
        ctx.save_for_backward(
            data, h0, c0, kernel_l, gates, candidates, cells, act_cells, hidden, out, w_o, w_if, projection,
            clip_mask, proj_mask,
        )
        ctx.config, ctx.packing = config, packing
        return out, out.index_select(0, last), cells.index_select(0, last).to(data.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_h_final: Tensor, d_c_final: Tensor) -> tuple[Any, ...]:
        (data, h0, c0, kernel_l, gates, candidates, cells, act_cells, hidden, out, w_o, w_if, projection,
         clip_mask, proj_mask) = ctx.saved_tensors
        config: LSTMConfig = ctx.config
        packing: Packing = ctx.packing
        loops: StepLoops = ctx.loops
        U, depth = config.units, data.shape[1]
        w_x, w_h = kernel_l[:depth], kernel_l[depth:]
        last = last_rows(packing, data.device)
        d_out = d_out.clone()
        d_out.index_add_(0, last, d_h_final)  # a row's final h is its last output
        d_gates = torch.empty_like(gates)
        d_m = torch.empty_like(out) if projection is not None else None  # after proj clip
        d_h = torch.zeros_like(h0)
        d_c = d_c_final.to(gates.dtype, copy=True)  # carried from step to step: float32 for half inputs
        w_h_t = loops.transposed(w_h)
        projection_t = None if projection is None else loops.transposed(projection)
        loops.backward(
            gates, candidates, cells, act_cells, c0, d_out, d_h, d_c, d_gates, _given(d_m), w_h_t,
            _given(projection_t), _given(w_if), _given(w_o), _given(clip_mask if config.clip_gradient else None),
            _given(proj_mask),
            list(packing.batch_sizes),
        )

        h_prev_all = previous_states(h0, out, packing)
        d_gates_x = d_gates.to(data.dtype)  # the GEMMs in the inputs' dtype (float32 gates of half inputs)
        d_data = d_gates_x @ w_x.t()
        d_kernel = _kernel_gradient(data, h_prev_all, d_gates_x, loops.compiled, U)
        d_bias = d_gates.sum(0)  # in float32 for half inputs
        d_bias = (d_bias if loops.compiled else _restore_gate_order(d_bias, U)).to(data.dtype)
        d_w_i = d_w_f = d_w_o = d_projection = None
        if w_if is not None:
            c_prev_all = previous_states(c0, cells, packing)
            d_i, d_f, d_o = (d_gates[:, block * U : (block + 1) * U] for block in _gate_blocks(loops)[:3])
            d_w_i = (d_i * c_prev_all).sum(0).to(data.dtype)
            d_w_f = (d_f * c_prev_all).sum(0).to(data.dtype)
            d_w_o = (d_o * cells).sum(0).to(data.dtype)
        if projection is not None:
            d_projection = hidden.to(out.dtype).t() @ d_m
        return d_data, d_h, d_c.to(c0.dtype), d_kernel, d_bias, d_w_i, d_w_f, d_w_o, d_projection, None, None, None
