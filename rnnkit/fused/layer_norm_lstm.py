"""A whole layer-normalised LSTM layer (``LayerNormBasicLSTMCell``, ``LayerNormLSTMCell`` with
``layer_norm=True``) over packed steps, forward and backward by hand.

Same math as the cells' ``step`` (``rnnkit/contrib/layer_norm_cells.py``), organised as
``lstm.py`` is:

* the norms' ``gamma``/``beta`` are stacked in TF's gate order with the state's last:
  ``gains``/``shifts`` [5, U], ``(i, j, f, o, state)``; the compiled loops read them and the
  kernel as they are, for the torch twins a copy of the kernel's columns and of the norms is
  reordered to ``(i, f, o, j)`` once per call;
* the input projection of all steps is one GEMM (there is no bias); each step adds one
  ``h @ W_h`` GEMM and then, in one pass per row, normalises the four gate blocks, activates
  them, forms ``c``, normalises it, clips it and forms ``m`` (``layer_norm_lstm.cpp`` on the
  CPU, else the torch twins below);
* saved for backward: the activated gates, the normalised values ``x_hat`` of the five norms
  [N, 5U] and their ``1 / std`` [N, 5]; backward runs per step one pass for the gate gradients
  through the norms and one ``dz @ W_h^T`` GEMM, and the weight, gain and shift gradients as
  single reductions over all steps at the end.

Candidate dropout (``dropout_keep_prob``) comes in as a mask [N, U] drawn before the loop (a
fresh element per step and row, as the cell draws it) or absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..contrib.layer_norm_cells import LAYER_NORM_EPSILON
from .activation_kinds import activate_, activation_backward
from .cpu.native import compiled_loops, kernels
from .packing import Packing, last_rows, previous_states, step_starts
from .precision import add_product_, product_into
from .step_loops import StepLoops, stacked_products

NORMS = 5  # i, f, o, j and the cell state
PARAM_ROWS = 13  # the backward's row sums: gains and shifts of the NORMS norms, then w_i, w_f, w_o


@dataclass(frozen=True)
class LayerNormLSTMConfig:
    """The cell's numbers; peepholes, projection and dropout are on when their tensors are given."""

    units: int
    forget_bias: float
    cell_clip: float | None
    proj_clip: float | None
    activation: str = "tanh"


_ABSENT = torch.empty(0)


def _given(t: Tensor | None) -> Tensor:
    return _ABSENT if t is None else t


def _reorder(kernel: Tensor, units: int) -> Tensor:
    """TF's kernel columns ``(i, j, f, o)`` -> the twins' ``(i, f, o, j)``."""
    i, j, f, o = kernel.split(units, 1)
    return torch.cat([i, f, o, j], 1)


def _restore_order(grad: Tensor, units: int) -> Tensor:
    """The twins' gradient columns ``(i, f, o, j)`` -> TF's ``(i, j, f, o)``."""
    i, f, o, j = grad.split(units, -1)
    return torch.cat([i, j, f, o], -1)


TWIN_NORMS = [0, 2, 3, 1, 4]  # TF's norms (i, j, f, o, state) in the twins' order (i, f, o, j, state)
TF_NORMS = [0, 3, 1, 2, 4]  # and back


def _normalize_(values: Tensor, x_hat: Tensor, inv_std: Tensor, gains: Tensor, shifts: Tensor) -> None:
    """Layer norm over the last axis of ``values`` [n, k, U], in place: writes ``x_hat`` [n, k, U]
    and ``inv_std`` [n, k], then ``values = gains * x_hat + shifts`` (gains/shifts [k, U])."""
    mean = values.mean(-1, keepdim=True)
    torch.sub(values, mean, out=x_hat)
    variance = x_hat.square().mean(-1)
    torch.rsqrt(variance + LAYER_NORM_EPSILON, out=inv_std)
    x_hat.mul_(inv_std.unsqueeze(-1))
    torch.addcmul(shifts, x_hat, gains, out=values)


def _normalize_backward(d_y: Tensor, x_hat: Tensor, inv_std: Tensor, gains: Tensor) -> Tensor:
    """The gradient of layer norm's input from ``d_y`` (of its output), all [n, k, U]:
    ``inv_std * (g - mean(g) - x_hat * mean(g * x_hat))`` with ``g = d_y * gains``."""
    g = d_y * gains
    centred = g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True)
    return centred.mul_(inv_std.unsqueeze(-1))


def forward_pointwise_torch(
    z: Tensor,
    c_prev: Tensor,
    gains: Tensor,
    shifts: Tensor,
    w_if: Tensor,
    w_o: Tensor,
    drop: Tensor,
    forget_bias: float,
    clip: float,
    x_hat: Tensor,
    inv_std: Tensor,
    c: Tensor,
    act_c: Tensor,
    m: Tensor,
    kept: Tensor,
    activation: str = "tanh",
) -> None:
    """One step's pointwise forward on ``n`` rows (``layer_norm_lstm.cpp`` does it in one pass):
    normalises and activates ``z`` [n, 4U] (i, f, o, j) in place (j becomes ``act(j)`` before
    dropout), writes ``x_hat`` [n, 5U], ``inv_std`` [n, 5], the new (normalised, clipped) ``c``,
    ``act(c)``, ``m = o * act(c)`` and, if clipping, ``kept``. Absent tensors are empty;
    ``clip < 0`` means no clipping."""
    n, U = c.shape
    gates = z.view(n, 4, U)
    _normalize_(gates, x_hat[:, : 4 * U].view(n, 4, U), inv_std[:, :4], gains[:4], shifts[:4])
    i, f, o, j = z[:, :U], z[:, U : 2 * U], z[:, 2 * U : 3 * U], z[:, 3 * U :]
    f.add_(forget_bias)
    if w_if.numel():
        z[:, : 2 * U].view(n, 2, U).addcmul_(c_prev.unsqueeze(1), w_if)
    torch.sigmoid_(z[:, : 2 * U] if w_o.numel() else z[:, : 3 * U])
    activate_(activation, j)
    g = j * drop if drop.numel() else j
    torch.mul(f, c_prev, out=c).addcmul_(i, g)
    _normalize_(c.view(n, 1, U), x_hat[:, 4 * U :].view(n, 1, U), inv_std[:, 4:], gains[4:], shifts[4:])
    if clip >= 0:
        torch.le(c.abs(), clip, out=kept)
        c.clamp_(-clip, clip)
    if w_o.numel():
        torch.sigmoid_(o.addcmul_(c, w_o))
    torch.mul(o, activate_(activation, act_c.copy_(c)), out=m)


def backward_pointwise_torch(
    z: Tensor,
    c_prev: Tensor,
    act_c: Tensor,
    x_hat: Tensor,
    inv_std: Tensor,
    gains: Tensor,
    w_if: Tensor,
    w_o: Tensor,
    drop: Tensor,
    kept: Tensor,
    dm: Tensor,
    d_c: Tensor,
    d_post: Tensor,
    d_state: Tensor,
    dz: Tensor,
    activation: str = "tanh",
) -> None:
    """One step's pointwise backward: from ``dm`` and ``d_c`` (the gradient reaching the new
    ``c`` from the next step) writes ``d_post`` [n, 4U] (the gradients of the normalised gate
    blocks, for their gains and shifts), ``d_state`` [n, U] (of the normalised state), ``dz``
    [n, 4U] (of the gate pre-activations, for the GEMMs) and replaces ``d_c`` by the gradient
    of ``c_prev``."""
    n, U = act_c.shape
    i, f, o, j = z[:, :U], z[:, U : 2 * U], z[:, 2 * U : 3 * U], z[:, 3 * U :]
    d_i, d_f, d_o, d_j = d_post[:, :U], d_post[:, U : 2 * U], d_post[:, 2 * U : 3 * U], d_post[:, 3 * U :]
    torch.mul(dm * act_c, o * (1 - o), out=d_o)
    dc = activation_backward(activation, dm * o, act_c).add_(d_c)
    if w_o.numel():
        dc.addcmul_(d_o, w_o)
    if kept.numel():
        dc.mul_(kept)
    d_state.copy_(dc)
    dc = _normalize_backward(dc.view(n, 1, U), x_hat[:, 4 * U :].view(n, 1, U), inv_std[:, 4:], gains[4:]).view(n, U)
    g = j * drop if drop.numel() else j
    torch.mul(dc * g, i * (1 - i), out=d_i)
    torch.mul(dc * c_prev, f * (1 - f), out=d_f)
    d_g = dc * i if not drop.numel() else dc * i * drop
    d_j.copy_(activation_backward(activation, d_g, j))
    d_c_prev = dc.mul_(f)
    if w_if.numel():
        d_c_prev.addcmul_(d_i, w_if[0]).addcmul_(d_f, w_if[1])
    d_c.copy_(d_c_prev)
    dz.view(n, 4, U).copy_(
        _normalize_backward(d_post.view(n, 4, U), x_hat[:, : 4 * U].view(n, 4, U), inv_std[:, :4], gains[:4])
    )


def forward_steps_torch(
    gates: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_h: Tensor,
    gains: Tensor,
    shifts: Tensor,
    w_if: Tensor,
    w_o: Tensor,
    projection: Tensor,
    drop: Tensor,
    forget_bias: float,
    clip: float,
    proj_clip: float,
    batch_sizes: list[int],
    x_hat: Tensor,
    inv_std: Tensor,
    cells: Tensor,
    act_cells: Tensor,
    hidden: Tensor,
    out: Tensor,
    clip_mask: Tensor,
    proj_mask: Tensor,
    pointwise: Callable[..., None] = forward_pointwise_torch,
) -> None:
    """The forward step loop over packed rows (``ln_lstm_forward_steps`` in C++ is the same loop)."""
    h_prev, c_prev, start = h0, c0, 0
    for n in batch_sizes:
        rows = slice(start, start + n)
        z = add_product_(gates[rows], h_prev[:n], w_h)
        m = out[rows] if projection.numel() == 0 else hidden[rows]
        kept = clip_mask[rows] if clip_mask.numel() else clip_mask
        step_drop = drop[rows] if drop.numel() else drop
        pointwise(
            z,
            c_prev[:n],
            gains,
            shifts,
            w_if,
            w_o,
            step_drop,
            forget_bias,
            clip,
            x_hat[rows],
            inv_std[rows],
            cells[rows],
            act_cells[rows],
            m,
            kept,
        )
        if projection.numel():
            m = product_into(out[rows], m, projection)
            if proj_clip >= 0:
                torch.le(m.abs(), proj_clip, out=proj_mask[rows])
                m.clamp_(-proj_clip, proj_clip)
        h_prev, c_prev, start = out[rows], cells[rows], start + n


def backward_steps_torch(
    gates: Tensor,
    cells: Tensor,
    act_cells: Tensor,
    x_hat: Tensor,
    inv_std: Tensor,
    c0: Tensor,
    gains: Tensor,
    w_if: Tensor,
    w_o: Tensor,
    drop: Tensor,
    clip_mask: Tensor,
    proj_mask: Tensor,
    d_out: Tensor,
    d_h: Tensor,
    d_c: Tensor,
    d_gates: Tensor,
    d_m: Tensor,
    d_params: Tensor,
    w_h_t: Tensor,
    projection_t: Tensor,
    batch_sizes: list[int],
    pointwise: Callable[..., None] = backward_pointwise_torch,
) -> None:
    """The backward step loop (``ln_lstm_backward_steps`` in C++): fills ``d_gates`` (and ``d_m``),
    leaves the initial state's gradients in ``d_h`` and ``d_c``, and writes the parameters' gradients
    summed over the rows into ``d_params`` [PARAM_ROWS, U]: the gains' and shifts' of the five
    norms (i, f, o, j, state), then the peepholes' w_i, w_f, w_o (zero without peepholes)."""
    U = cells.shape[1]
    starts = step_starts(batch_sizes)
    d_post, d_state = torch.empty_like(gates), torch.empty_like(cells)
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
        step_drop = drop[rows] if drop.numel() else drop
        pointwise(
            gates[rows],
            c_prev,
            act_cells[rows],
            x_hat[rows],
            inv_std[rows],
            gains,
            w_if,
            w_o,
            step_drop,
            kept,
            dm,
            d_c[:n],
            d_post[rows],
            d_state[rows],
            d_gates[rows],
        )
        product_into(d_h[:n], d_gates[rows], w_h_t)
        if w_if.numel():
            d_params[10] += (d_post[rows, :U] * c_prev).sum(0)
            d_params[11] += (d_post[rows, U : 2 * U] * c_prev).sum(0)
            d_params[12] += (d_post[rows, 2 * U : 3 * U] * cells[rows]).sum(0)
    d_params[:4] = (d_post * x_hat[:, : 4 * U]).sum(0).view(4, U)
    d_params[4] = (d_state * x_hat[:, 4 * U :]).sum(0)
    d_params[5:9] = d_post.sum(0).view(4, U)
    d_params[9] = d_state.sum(0)


def _steps(activation: str) -> StepLoops:
    """The step loops: the compiled ones (which, given empty ``x_hat``, ``inv_std`` and
    ``act_cells``, save nothing for backward) or the torch twins."""
    return compiled_loops(kernels(), "ln_lstm", activation) or StepLoops(
        partial(forward_steps_torch, pointwise=partial(forward_pointwise_torch, activation=activation)),
        partial(backward_steps_torch, pointwise=partial(backward_pointwise_torch, activation=activation)),
    )


class LayerNormLSTMSequence(torch.autograd.Function):
    """Packed layer-norm LSTM layer: ``(data [N, D], h0 [k, H], c0 [k, U], kernel [D+H, 4U],
    gains [5, U], shifts [5, U] (TF's order i, j, f, o, state), w_i, w_f, w_o [U] or None,
    projection [U, P] or None, drop [N, U] or None, config, packing) -> (out [N, H],
    h_final [k, H], c_final [k, U])`` for the ``k`` running rows, longest first."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        data: Tensor,
        h0: Tensor,
        c0: Tensor,
        kernel: Tensor,
        gains: Tensor,
        shifts: Tensor,
        w_i: Tensor | None,
        w_f: Tensor | None,
        w_o: Tensor | None,
        projection: Tensor | None,
        drop: Tensor | None,
        config: LayerNormLSTMConfig,
        packing: Packing,
        grad_enabled: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        U, depth = config.units, data.shape[1]
        c0 = c0.contiguous()  # the compiled loops read its rows by pointer
        ctx.loops = _steps(config.activation)
        if ctx.loops.compiled:  # TF's kernel, gains and shifts as they are
            kernel_l, gains_l, shifts_l = kernel.contiguous(), gains.contiguous(), shifts.contiguous()
        else:
            kernel_l, gains_l, shifts_l = _reorder(kernel, U), gains[TWIN_NORMS], shifts[TWIN_NORMS]
        w_x, w_h = kernel_l[:depth], kernel_l[depth:]
        gates = data @ w_x  # [N, 4U], normalised and activated in place
        N = data.shape[0]
        save = grad_enabled and any(ctx.needs_input_grad)  # a backward can follow
        kept = save or not ctx.loops.compiled  # the torch twins always write what backward reads
        x_hat = data.new_empty(N, NORMS * U) if kept else _ABSENT
        inv_std = data.new_empty(N, NORMS) if kept else _ABSENT
        cells, act_cells = data.new_empty(N, U), data.new_empty(N, U) if kept else _ABSENT
        hidden = None if projection is None else data.new_empty(N, U)
        out = data.new_empty(N, w_h.shape[0])
        clip_mask = None if config.cell_clip is None else cells.new_empty(cells.shape, dtype=torch.bool)
        clips_projection = projection is not None and config.proj_clip is not None
        proj_mask = out.new_empty(out.shape, dtype=torch.bool) if clips_projection else None
        w_if = torch.stack([w_i, w_f]) if w_i is not None and w_f is not None else None
        ctx.loops.forward(
            gates,
            h0,
            c0,
            w_h,
            gains_l,
            shifts_l,
            _given(w_if),
            _given(w_o),
            _given(projection),
            _given(drop),
            config.forget_bias,
            -1.0 if config.cell_clip is None else config.cell_clip,
            -1.0 if config.proj_clip is None else config.proj_clip,
            list(packing.batch_sizes),
            x_hat,
            inv_std,
            cells,
            act_cells,
            _given(hidden),
            out,
            _given(clip_mask),
            _given(proj_mask),
        )
        last = last_rows(packing, data.device)
        if not save:
            return out, out.index_select(0, last), cells.index_select(0, last)
        ctx.save_for_backward(
            data,
            h0,
            c0,
            kernel_l,
            gains_l,
            gates,
            x_hat,
            inv_std,
            cells,
            act_cells,
            hidden,
            out,
            w_if,
            w_o,
            projection,
            drop,
            clip_mask,
            proj_mask,
        )
        ctx.config, ctx.packing = config, packing
        return out, out.index_select(0, last), cells.index_select(0, last)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_h_final: Tensor, d_c_final: Tensor) -> tuple[Any, ...]:
        (
            data,
            h0,
            c0,
            kernel_l,
            gains_l,
            gates,
            x_hat,
            inv_std,
            cells,
            act_cells,
            hidden,
            out,
            w_if,
            w_o,
            projection,
            drop,
            clip_mask,
            proj_mask,
        ) = ctx.saved_tensors
        config: LayerNormLSTMConfig = ctx.config
        packing: Packing = ctx.packing
        U, depth = config.units, data.shape[1]
        w_x, w_h = kernel_l[:depth], kernel_l[depth:]
        last = last_rows(packing, data.device)
        d_out = d_out.clone(memory_format=torch.contiguous_format)
        d_out.index_add_(0, last, d_h_final)
        d_gates = torch.empty_like(gates)
        d_m = torch.empty_like(out) if projection is not None else None
        d_h = torch.zeros_like(h0, memory_format=torch.contiguous_format)
        d_c = d_c_final.clone(memory_format=torch.contiguous_format)
        d_params = gates.new_zeros(PARAM_ROWS, U)
        loops: StepLoops = ctx.loops
        loops.backward(
            gates,
            cells,
            act_cells,
            x_hat,
            inv_std,
            c0,
            gains_l,
            _given(w_if),
            _given(w_o),
            _given(drop),
            _given(clip_mask),
            _given(proj_mask),
            d_out,
            d_h,
            d_c,
            d_gates,
            _given(d_m),
            d_params,
            loops.transposed(w_h),
            _given(None if projection is None else loops.transposed(projection)),
            list(packing.batch_sizes),
        )
        d_data = d_gates @ w_x.t()
        h_prev_all = previous_states(h0, out, packing)
        d_gains, d_shifts = d_params[:NORMS], d_params[NORMS : 2 * NORMS]
        if loops.compiled:  # in TF's order
            d_kernel = stacked_products(data, h_prev_all, d_gates)
        else:
            d_kernel = _restore_order(torch.cat([data.t() @ d_gates, h_prev_all.t() @ d_gates]), U)
            d_gains, d_shifts = d_gains[TF_NORMS], d_shifts[TF_NORMS]
        d_w_i = d_w_f = d_w_o = d_projection = None
        if w_if is not None:
            d_w_i, d_w_f, d_w_o = d_params[2 * NORMS :].unbind(0)
        if projection is not None:
            d_projection = hidden.t() @ d_m
        return (
            d_data,
            d_h,
            d_c,
            d_kernel,
            d_gains,
            d_shifts,
            d_w_i,
            d_w_f,
            d_w_o,
            d_projection,
            None,
            None,
            None,
            None,
        )
