"""The persistent GRU kernels (TF's reset-before form): a whole layer's steps in one launch.

The layout is the LSTM's (``persistent_lstm.py``): each program owns ``BLOCK_U`` units for a
block of rows and the programs meet at grid-wide barriers. TF's GRU has two dependent
products per step, so two barriers:

* forward: ``r, u = sigmoid(x W_gx + b_g + h W_gh)`` for the program's units, then
  ``r * h`` is published; barrier; ``c = act(x W_cx + b_c + (r * h) W_ch)`` and
  ``h' = u * h + (1 - u) * c``; barrier;
* backward (step ``t``, last to first): the gradient of ``h_t`` (its output's, plus what
  reached it from step ``t + 1``: ``dh u + d(rh) r`` kept in registers, and
  ``d_gates[t + 1] @ W_gh^T``); the update and candidate gradients are published; barrier;
  ``d(r h) = d_candidates @ W_ch^T`` gives the reset gradient; barrier.

Same buffers and signatures as the step loops of ``gru.py`` (their specification). Gates,
candidates and their gradients are float32 whatever the inputs' dtype; ``r * h`` and ``h`` are
stored in the inputs' dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .persistent_setup import TUNING, after_initial, launch_parameters, schedule
from .triton_math import (
    activate,
    activation_slope,
    gate_products,
    grid_barrier,
    load_tile,
    product,
    program_tile,
    sigmoid,
    step_at,
    weight_slice,
)


@triton.jit
def _inputs(gates_ptr, candidates_ptr, start, n, rows, cols, col_mask, units):
    """The input projections (plus biases) ``(r, u, c)`` of a step's rows, float32."""
    x_r = load_tile(gates_ptr, start, rows, cols, rows < n, col_mask, 2 * units)
    x_u = load_tile(gates_ptr + units, start, rows, cols, rows < n, col_mask, 2 * units)
    x_c = load_tile(candidates_ptr, start, rows, cols, rows < n, col_mask, units)
    return x_r, x_u, x_c


@triton.jit
def _saved(d_out_ptr, gates_ptr, candidates_ptr, hbuf_ptr, start, n, previous, rows, cols, col_mask, units):
    """What the backward step reads of its own rows: the output gradient, ``r``, ``u``, ``c``
    and the previous ``h`` (float32)."""
    d_out = load_tile(d_out_ptr, start, rows, cols, rows < n, col_mask, units)
    x_r, x_u, c = _inputs(gates_ptr, candidates_ptr, start, n, rows, cols, col_mask, units)
    h_prev = load_tile(hbuf_ptr, previous, rows, cols, rows < n, col_mask, units)
    return d_out, x_r, x_u, c, h_prev


@triton.jit
def _gru_forward_kernel(
    gates_ptr, candidates_ptr, reset_h_ptr, hbuf_ptr, w_gh_ptr, w_ch_ptr, sizes_ptr, starts_ptr, previous_ptr,
    counter_ptr, num_steps, units, running, unit_blocks, num_programs,
    ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
    K_PAD: tl.constexpr, RESIDENT: tl.constexpr, ONE_LOOP: tl.constexpr, SAVE: tl.constexpr,
):
    """``hbuf`` is ``[running + N, units]``: the initial h, then each step's h; step ``t``
    reads its previous h at row ``previous[t]``. ``sizes``/``starts`` end with a 0 sentinel.
    Without ``SAVE`` (inference) the activated gates and candidates are not stored."""
    rows, cols = program_tile(unit_blocks, BLOCK_B, BLOCK_U)
    col_mask = cols < units
    width = 2 * units
    w_r = w_gh_ptr  # the resident weight slices (placeholders when not resident)
    w_u = w_gh_ptr
    w_c = w_ch_ptr
    if RESIDENT:
        w_r = weight_slice(w_gh_ptr, units, width, cols, col_mask, K_PAD)
        w_u = weight_slice(w_gh_ptr + units, units, width, cols, col_mask, K_PAD)
        w_c = weight_slice(w_ch_ptr, units, units, cols, col_mask, K_PAD)
    n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, 0, True)
    x_r, x_u, x_c = _inputs(gates_ptr, candidates_ptr, start, n, rows, cols, col_mask, units)
    for t in range(num_steps):
        row_mask = rows < n
        mask = row_mask[:, None] & col_mask[None, :]
        h_prev = load_tile(hbuf_ptr, previous, rows, cols, row_mask, col_mask, units)
        p_r, p_u, _, _ = gate_products(hbuf_ptr, previous, rows, row_mask, units, w_gh_ptr, width, units, cols,
                                       col_mask, w_r, w_u, w_r, w_u, 2, BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT,
                                       PRECISION, ONE_LOOP)
        reset = sigmoid(x_r + p_r)
        update = sigmoid(x_u + p_u)
        gate_here = (start + rows[:, None]) * width + cols[None, :]
        here = (start + rows[:, None]) * units + cols[None, :]
        if SAVE:  # what backward reads
            tl.store(gates_ptr + gate_here, reset, mask=mask)
            tl.store(gates_ptr + gate_here + units, update, mask=mask)
        tl.store(reset_h_ptr + here, (reset * h_prev).to(reset_h_ptr.dtype.element_ty), mask=mask)
        grid_barrier(counter_ptr, 2 * t, num_programs)
        c = activate(x_c + product(reset_h_ptr, start, rows, row_mask, units, w_ch_ptr, units, cols, col_mask, w_c,
                                   BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION), ACT)
        if SAVE:
            tl.store(candidates_ptr + here, c, mask=mask)
        h_here = (running + start + rows[:, None]) * units + cols[None, :]
        tl.store(hbuf_ptr + h_here, ((h_prev - c) * update + c).to(hbuf_ptr.dtype.element_ty), mask=mask)
        # the next step's input projections, before the barrier (sentinel size 0 after the last)
        n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, t + 1, True)
        x_r, x_u, x_c = _inputs(gates_ptr, candidates_ptr, start, n, rows, cols, col_mask, units)
        grid_barrier(counter_ptr, 2 * t + 1, num_programs)


@triton.jit
def _gru_backward_kernel(
    gates_ptr, candidates_ptr, hbuf_ptr, d_out_ptr, d_h_ptr, d_gates_ptr, d_candidates_ptr, w_gh_t_ptr, w_ch_t_ptr,
    sizes_ptr, starts_ptr, previous_ptr, counter_ptr, num_steps, units, running, unit_blocks, num_programs,
    ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
    K_PAD: tl.constexpr, RESIDENT: tl.constexpr,
):
    """``hbuf`` as in the forward kernel; ``d_h`` holds the gradient reaching ``h0`` in the end."""
    rows, cols = program_tile(unit_blocks, BLOCK_B, BLOCK_U)
    col_mask = cols < units
    width = 2 * units
    carry = load_tile(d_h_ptr, 0, rows, cols, rows < running, col_mask, units)  # dh u + d(rh) r of step t + 1
    last = num_steps - 1
    n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, last, True)
    d_out, reset, update, c, h_prev = _saved(d_out_ptr, gates_ptr, candidates_ptr, hbuf_ptr, start, n, previous,
                                             rows, cols, col_mask, units)
    for s in range(num_steps):
        t = last - s
        row_mask = rows < n
        mask = row_mask[:, None] & col_mask[None, :]
        dh = d_out + carry + product(d_gates_ptr, tl.load(starts_ptr + t + 1), rows, rows < tl.load(sizes_ptr + t + 1),
                                     width, w_gh_t_ptr, units, cols, col_mask, w_gh_t_ptr,
                                     BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
        gate_here = (start + rows[:, None]) * width + cols[None, :]
        here = (start + rows[:, None]) * units + cols[None, :]
        tl.store(d_gates_ptr + gate_here + units, dh * (h_prev - c) * update * (1.0 - update), mask=mask)
        tl.store(d_candidates_ptr + here, (dh - dh * update) * activation_slope(c, ACT), mask=mask)
        grid_barrier(counter_ptr, 2 * s, num_programs)
        d_rh = product(d_candidates_ptr, start, rows, row_mask, units, w_ch_t_ptr, units, cols, col_mask, w_ch_t_ptr,
                       BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
        tl.store(d_gates_ptr + gate_here, d_rh * h_prev * reset * (1.0 - reset), mask=mask)
        carry = tl.where(mask, dh * update + d_rh * reset, carry)
        # the previous step's own inputs, before the barrier (size 0 before the first step)
        n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, t - 1, t > 0)
        d_out, reset, update, c, h_prev = _saved(d_out_ptr, gates_ptr, candidates_ptr, hbuf_ptr, start, n, previous,
                                                 rows, cols, col_mask, units)
        grid_barrier(counter_ptr, 2 * s + 1, num_programs)
    d_h0 = carry + product(d_gates_ptr, 0, rows, rows < running, width, w_gh_t_ptr, units, cols, col_mask, w_gh_t_ptr,
                           BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
    first = (rows < running)[:, None] & col_mask[None, :]
    tl.store(d_h_ptr + rows[:, None] * units + cols[None, :], d_h0.to(d_h_ptr.dtype.element_ty), mask=first)


def forward_steps_persistent(
    gates: Tensor, candidates: Tensor, reset_h: Tensor, out: Tensor, h0: Tensor, w_gh: Tensor, w_ch: Tensor,
    batch_sizes: list[int], activation: str = "tanh", save: bool = True,
) -> None:
    """:func:`rnnkit.fused.gru.forward_steps_torch` in one launch. ``gates`` and ``candidates``
    (in: input projections plus biases; out: activated) are float32; ``reset_h``, ``out``,
    ``h0`` and the weights share the inputs' dtype. Without ``save`` (no backward will follow)
    ``gates`` and ``candidates`` keep the input projections."""
    units, running = out.shape[1], batch_sizes[0]
    programs, launch, counter = launch_parameters(units, units, True, running, w_gh)
    sizes, starts, previous = schedule(batch_sizes, running, gates.device)
    hbuf = after_initial(h0, out, running)  # the kernel writes each step's h after the initial h
    _gru_forward_kernel[(programs,)](
        gates, candidates, reset_h, hbuf, w_gh.contiguous(), w_ch.contiguous(), sizes, starts, previous, counter,
        len(batch_sizes), units, running, ACT=activation, ONE_LOOP=TUNING.one_loop_for_gates, SAVE=save, **launch,
    )
    out.copy_(hbuf[running:])


def backward_steps_persistent(
    gates: Tensor, candidates: Tensor, out: Tensor, h0: Tensor, d_out: Tensor, d_h: Tensor, d_gates: Tensor,
    d_candidates: Tensor, w_gh_t: Tensor, w_ch_t: Tensor, batch_sizes: list[int], activation: str = "tanh",
) -> None:
    """:func:`rnnkit.fused.gru.backward_steps_torch` in one launch: fills ``d_gates`` and
    ``d_candidates`` (float32) and leaves the initial state's gradient in ``d_h``."""
    units, running = out.shape[1], batch_sizes[0]
    programs, launch, counter = launch_parameters(units, 2 * units, False, running, w_gh_t)
    sizes, starts, previous = schedule(batch_sizes, running, gates.device)
    hbuf = after_initial(h0, out, running)
    _gru_backward_kernel[(programs,)](
        gates, candidates, hbuf, d_out.contiguous(), d_h, d_gates, d_candidates, w_gh_t.contiguous(),
        w_ch_t.contiguous(), sizes, starts, previous, counter, len(batch_sizes), units, running, ACT=activation,
        **launch,
    )
