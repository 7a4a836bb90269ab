"""The persistent ``BasicRNNCell`` kernels: a whole layer's step loop, forward or backward, in
one launch.

The layout is the LSTM's (``persistent_lstm.py``): each program owns ``BLOCK_U`` units for a
block of rows, its slice of the recurrent kernel held in registers when small enough, and the
programs meet at a grid-wide barrier between steps, one per step:

* forward: ``h_t = act(x_t W_x + b + h_{t-1} W_h)`` for the program's units; barrier;
* backward (step ``t``, last to first): ``d_pre_t = (d_out_t + d_pre_{t+1} @ W_h^T) * act'``,
  the derivative taken from the saved output ``h_t``; barrier. The initial state's gradient is
  ``d_pre_0 @ W_h^T``.

Same buffers and signatures as the step loops of ``basic_rnn.py`` (their specification). The
pre-activations and their gradients are float32 whatever the inputs' dtype; ``h`` is stored
in the inputs' dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .persistent_setup import after_initial, launch_parameters, schedule
from .triton_math import (
    activate,
    activation_slope,
    grid_barrier,
    load_tile,
    product,
    program_tile,
    step_at,
    weight_slice,
)


@triton.jit
def _rnn_forward_kernel(
    pre_ptr, hbuf_ptr, w_ptr, sizes_ptr, starts_ptr, previous_ptr, counter_ptr, num_steps, units, running,
    unit_blocks, num_programs,
    ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
    K_PAD: tl.constexpr, RESIDENT: tl.constexpr,
):
    """``pre`` is ``[N, units]``, the input projections plus bias (read only); ``hbuf`` is
    ``[running + N, units]``: the initial h, then each step's h; step ``t`` reads its previous
    h at row ``previous[t]``. ``sizes``/``starts`` end with a 0 sentinel."""
    rows, cols = program_tile(unit_blocks, BLOCK_B, BLOCK_U)
    col_mask = cols < units
    w = w_ptr  # the resident weight slice (a placeholder when not resident)
    if RESIDENT:
        w = weight_slice(w_ptr, units, units, cols, col_mask, K_PAD)
    n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, 0, True)
    x = load_tile(pre_ptr, start, rows, cols, rows < n, col_mask, units)
    for t in range(num_steps):
        row_mask = rows < n
        h = activate(x + product(hbuf_ptr, previous, rows, row_mask, units, w_ptr, units, cols, col_mask, w,
                                 BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION), ACT)
        h_here = (running + start + rows[:, None]) * units + cols[None, :]
        tl.store(hbuf_ptr + h_here, h.to(hbuf_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])
        # the next step's input projection, before the barrier (sentinel size 0 after the last)
        n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, t + 1, True)
        x = load_tile(pre_ptr, start, rows, cols, rows < n, col_mask, units)
        grid_barrier(counter_ptr, t, num_programs)


@triton.jit
def _rnn_backward_kernel(
    out_ptr, d_out_ptr, d_h_ptr, d_pre_ptr, w_t_ptr, sizes_ptr, starts_ptr, previous_ptr, counter_ptr, num_steps,
    units, running, unit_blocks, num_programs,
    ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
    K_PAD: tl.constexpr, RESIDENT: tl.constexpr,
):
    """``out`` is ``[N, units]``, each step's h; ``d_pre`` gets the pre-activations' gradients
    and ``d_h`` the initial state's. The gradient reaching ``h_t`` through step ``t + 1`` is
    ``d_pre[t + 1] @ W_h^T``."""
    rows, cols = program_tile(unit_blocks, BLOCK_B, BLOCK_U)
    col_mask = cols < units
    w_t = w_t_ptr  # the resident slice of W_h^T (a placeholder when not resident)
    if RESIDENT:
        w_t = weight_slice(w_t_ptr, units, units, cols, col_mask, K_PAD)
    last = num_steps - 1
    n, start, _ = step_at(sizes_ptr, starts_ptr, previous_ptr, last, True)
    d_out = load_tile(d_out_ptr, start, rows, cols, rows < n, col_mask, units)
    h = load_tile(out_ptr, start, rows, cols, rows < n, col_mask, units)
    for s in range(num_steps):
        t = last - s
        row_mask = rows < n
        # the gradient reaching h_t: its output's, and through step t + 1 (none after the last
        # step: sentinel size 0)
        dh = d_out + product(d_pre_ptr, tl.load(starts_ptr + t + 1), rows, rows < tl.load(sizes_ptr + t + 1),
                             units, w_t_ptr, units, cols, col_mask, w_t, BLOCK_B, BLOCK_U, BLOCK_K, K_PAD,
                             RESIDENT, PRECISION)
        here = (start + rows[:, None]) * units + cols[None, :]
        tl.store(d_pre_ptr + here, dh * activation_slope(h, ACT), mask=row_mask[:, None] & col_mask[None, :])
        # the previous step's own inputs, before the barrier (size 0 before the first step)
        n, start, _ = step_at(sizes_ptr, starts_ptr, previous_ptr, t - 1, t > 0)
        d_out = load_tile(d_out_ptr, start, rows, cols, rows < n, col_mask, units)
        h = load_tile(out_ptr, start, rows, cols, rows < n, col_mask, units)
        grid_barrier(counter_ptr, s, num_programs)
    d_h0 = product(d_pre_ptr, 0, rows, rows < running, units, w_t_ptr, units, cols, col_mask, w_t,
                   BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
    first = (rows < running)[:, None] & col_mask[None, :]
    tl.store(d_h_ptr + rows[:, None] * units + cols[None, :], d_h0.to(d_h_ptr.dtype.element_ty), mask=first)


def forward_steps_persistent(
    pre: Tensor, out: Tensor, h0: Tensor, w_h: Tensor, batch_sizes: list[int], activation: str = "tanh"
) -> None:
    """:func:`rnnkit.fused.basic_rnn.forward_steps_torch` in one launch. ``pre`` is float32 and
    read only; ``out`` (may be ``pre``), ``h0`` and ``w_h`` share the inputs' dtype."""
    units, running = out.shape[1], batch_sizes[0]
    programs, launch, counter = launch_parameters(units, units, True, running, w_h)
    sizes, starts, previous = schedule(batch_sizes, running, pre.device)
    hbuf = after_initial(h0, out, running)  # the kernel writes each step's h after the initial h
    _rnn_forward_kernel[(programs,)](
        pre, hbuf, w_h.contiguous(), sizes, starts, previous, counter, len(batch_sizes), units, running,
        ACT=activation, **launch,
    )
    out.copy_(hbuf[running:])


def backward_steps_persistent(
    out: Tensor, d_out: Tensor, d_h: Tensor, d_pre: Tensor, w_h_t: Tensor, batch_sizes: list[int],
    activation: str = "tanh",
) -> None:
    """:func:`rnnkit.fused.basic_rnn.backward_steps_torch` in one launch: fills ``d_pre``
    (float32) and leaves the initial state's gradient in ``d_h``."""
    units, running = out.shape[1], batch_sizes[0]
    programs, launch, counter = launch_parameters(units, units, True, running, w_h_t)
    sizes, starts, previous = schedule(batch_sizes, running, out.device)
    _rnn_backward_kernel[(programs,)](
        out.contiguous(), d_out.contiguous(), d_h, d_pre, w_h_t.contiguous(), sizes, starts, previous, counter,
        len(batch_sizes), units, running, ACT=activation, **launch,
    )
