"""The persistent LSTM kernels: a whole layer's step loop, forward or backward, in one launch.

Each program owns ``BLOCK_U`` units (the four gate columns of each) for a block of ``BLOCK_B``
rows (``triton_support.persistent_layout``), so the cell state (forward) or its gradient
(backward) stays in registers from the first step to the last. Its slice of the recurrent
kernel is loaded once into registers when it is small enough (``RESIDENT``), else re-read
every step from the multiprocessor's cache. Between steps the programs meet at a grid-wide
barrier (:func:`grid_barrier`): step ``t`` needs all of ``h_{t-1}`` (forward) or all of the
gate gradients of step ``t + 1`` (backward). Whatever a step reads that no other program
writes (its input projection, saved activations, incoming gradients) is loaded before the
barrier that precedes it, so those loads overlap the wait.

Lengths are handled in the kernel: step ``t`` runs the packed rows ``starts[t] ..
starts[t] + sizes[t]``; rows past their length keep their cell state (or its gradient).

Both kernels take and fill the buffers of the step loops in ``lstm.py``
(:func:`rnnkit.fused.lstm.forward_steps_torch` is the specification), with the same
signatures, so ``LSTMSequence`` uses them interchangeably. Gates, cell states and their
gradients are float32 whatever the inputs' dtype: with bfloat16/float16 inputs the products
take half inputs and accumulate in float32, and only ``h`` (the layer's output) is stored in
the inputs' dtype. A projection adds a second barrier per step: ``h = m @ W_proj`` needs every
unit's ``m`` (forward), and ``d_m @ W_proj^T`` every column's ``d_m`` (backward); each program
computes its share of the projection's columns.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .persistent_setup import TUNING, after_initial, launch_parameters, or_stand_in, output_block, schedule
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
def _peepholes(w_if_ptr, w_o_ptr, cols, col_mask, units):
    """The program's peephole weights ``(w_i, w_f, w_o)``, each ``[1, BLOCK_U]`` float32."""
    w_i = tl.load(w_if_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    w_f = tl.load(w_if_ptr + units + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    w_o = tl.load(w_o_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return w_i, w_f, w_o


@triton.jit
def _gate_inputs(gates_ptr, start, n, rows, cols, col_mask, units):
    """The input projections (plus biases) ``(i, f, o, j)`` of a step's rows, float32."""
    width = 4 * units
    x_i = load_tile(gates_ptr, start, rows, cols, rows < n, col_mask, width)
    x_f = load_tile(gates_ptr + units, start, rows, cols, rows < n, col_mask, width)
    x_o = load_tile(gates_ptr + 2 * units, start, rows, cols, rows < n, col_mask, width)
    x_j = load_tile(gates_ptr + 3 * units, start, rows, cols, rows < n, col_mask, width)
    return x_i, x_f, x_o, x_j


@triton.jit
def _saved(gates_ptr, candidates_ptr, act_cells_ptr, cbuf_ptr, start, n, c_row, rows, cols, col_mask, units):
    """What the backward step reads of its own rows: the activated gates, ``act(j)``,
    ``act(c)`` and the previous ``c`` (all float32)."""
    width = 4 * units
    i = load_tile(gates_ptr, start, rows, cols, rows < n, col_mask, width)
    f = load_tile(gates_ptr + units, start, rows, cols, rows < n, col_mask, width)
    o = load_tile(gates_ptr + 2 * units, start, rows, cols, rows < n, col_mask, width)
    j = load_tile(candidates_ptr, start, rows, cols, rows < n, col_mask, units)
    act_c = load_tile(act_cells_ptr, start, rows, cols, rows < n, col_mask, units)
    c_prev = load_tile(cbuf_ptr, c_row, rows, cols, rows < n, col_mask, units)
    return i, f, o, j, act_c, c_prev


@triton.jit
def _clip(x, limit, kept_ptrs, mask, SAVE: tl.constexpr):
    """``x`` clamped to ``[-limit, limit]``; with ``SAVE`` it also records at ``kept_ptrs``
    where the gradient passes (``|x| <= limit``)."""
    if SAVE:
        tl.store(kept_ptrs, tl.abs(x) <= limit, mask=mask)
    return tl.minimum(tl.maximum(x, -limit), limit)


@triton.jit
def _output_columns(unit_blocks, BLOCK_P: tl.constexpr):
    """The columns of ``h`` this program computes: its share of the projection's outputs (the
    same as its unit columns without a projection, where ``BLOCK_P == BLOCK_U``)."""
    return (tl.program_id(0) % unit_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)


@triton.jit
def _lstm_forward_kernel(
    gates_ptr, hbuf_ptr, c0_ptr, w_ptr, w_if_ptr, w_o_ptr, proj_ptr, hidden_ptr, proj_kept_ptr,
    sizes_ptr, starts_ptr, previous_ptr, candidates_ptr, cells_ptr, act_cells_ptr, kept_ptr, counter_ptr,
    num_steps, units, depth_h, clip, proj_clip, running, unit_blocks, num_programs,
    PEEPHOLES: tl.constexpr, CLIP: tl.constexpr, PROJECTION: tl.constexpr, PROJ_CLIP: tl.constexpr,
    ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, K_PAD: tl.constexpr, RESIDENT: tl.constexpr, ONE_LOOP: tl.constexpr,
    SAVE: tl.constexpr,
):
    """``hbuf`` is ``[running + N, depth_h]`` (``depth_h``: the projection's width, else
    ``units``): the initial h, then each step's h; step ``t`` reads its previous h at row
    ``previous[t]``. ``sizes``/``starts`` end with a 0 sentinel. With a projection each step
    publishes ``m = o * act(c)`` in ``hidden`` and, after a barrier, computes its columns of
    ``h = clip(m @ W_proj)``. Without ``SAVE`` (inference) only ``h``, ``c`` and ``m`` are
    stored, not what backward reads (activated gates, ``act(j)``, ``act(c)``, clip masks)."""
    rows, cols = program_tile(unit_blocks, BLOCK_B, BLOCK_U)
    col_mask = cols < units
    out_cols = _output_columns(unit_blocks, BLOCK_P)
    out_col_mask = out_cols < depth_h
    width = 4 * units
    c = load_tile(c0_ptr, 0, rows, cols, rows < running, col_mask, units)
    if PEEPHOLES:
        w_i, w_f, w_o = _peepholes(w_if_ptr, w_o_ptr, cols, col_mask, units)
    r_i = w_ptr  # the resident weight slices (placeholders when not resident)
    r_f = w_ptr
    r_o = w_ptr
    r_j = w_ptr
    r_p = proj_ptr
    if RESIDENT:
        r_i = weight_slice(w_ptr, depth_h, width, cols, col_mask, K_PAD)
        r_f = weight_slice(w_ptr + units, depth_h, width, cols, col_mask, K_PAD)
        r_o = weight_slice(w_ptr + 2 * units, depth_h, width, cols, col_mask, K_PAD)
        r_j = weight_slice(w_ptr + 3 * units, depth_h, width, cols, col_mask, K_PAD)
        if PROJECTION:
            r_p = weight_slice(proj_ptr, units, depth_h, out_cols, out_col_mask, K_PAD)
    n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, 0, True)
    x_i, x_f, x_o, x_j = _gate_inputs(gates_ptr, start, n, rows, cols, col_mask, units)
    for t in range(num_steps):
        row_mask = rows < n
        p_i, p_f, p_o, p_j = gate_products(hbuf_ptr, previous, rows, row_mask, depth_h, w_ptr, width, units, cols,
                                           col_mask, r_i, r_f, r_o, r_j, 4, BLOCK_B, BLOCK_U, BLOCK_K, K_PAD,
                                           RESIDENT, PRECISION, ONE_LOOP)
        z_i = x_i + p_i
        z_f = x_f + p_f
        z_o = x_o + p_o
        z_j = x_j + p_j
        if PEEPHOLES:
            z_i += c * w_i
            z_f += c * w_f
        # j before i and f: in this order LLVM's SLP vectorizer in Triton 3.9 does not crash on
        # the float32 kernel without peepholes and with tanh (an assertion that aborts Python)
        j = activate(z_j, ACT)
        i = sigmoid(z_i)
        f = sigmoid(z_f)
        c_new = f * c + i * j
        mask = row_mask[:, None] & col_mask[None, :]
        here = (start + rows[:, None]) * units + cols[None, :]
        if CLIP:
            c_new = _clip(c_new, clip, kept_ptr + here, mask, SAVE)
        if PEEPHOLES:
            z_o += c_new * w_o
        o = sigmoid(z_o)
        act_c = activate(c_new, ACT)
        if SAVE:  # what backward reads
            gate_here = (start + rows[:, None]) * width + cols[None, :]
            tl.store(gates_ptr + gate_here, i, mask=mask)
            tl.store(gates_ptr + gate_here + units, f, mask=mask)
            tl.store(gates_ptr + gate_here + 2 * units, o, mask=mask)
            tl.store(candidates_ptr + here, j, mask=mask)
            tl.store(act_cells_ptr + here, act_c, mask=mask)
        tl.store(cells_ptr + here, c_new, mask=mask)
        c = tl.where(mask, c_new, c)
        if PROJECTION:
            tl.store(hidden_ptr + here, o * act_c, mask=mask)
            grid_barrier(counter_ptr, 2 * t, num_programs)  # every unit's m of this step is out
            h = product(hidden_ptr, start, rows, row_mask, units, proj_ptr, depth_h, out_cols, out_col_mask, r_p,
                        BLOCK_B, BLOCK_P, BLOCK_K, K_PAD, RESIDENT, PRECISION)
            out_mask = row_mask[:, None] & out_col_mask[None, :]
            out_here = (start + rows[:, None]) * depth_h + out_cols[None, :]
            if PROJ_CLIP:
                h = _clip(h, proj_clip, proj_kept_ptr + out_here, out_mask, SAVE)
            tl.store(hbuf_ptr + running * depth_h + out_here, h.to(hbuf_ptr.dtype.element_ty), mask=out_mask)
        else:
            h_here = (running + start + rows[:, None]) * units + cols[None, :]
            tl.store(hbuf_ptr + h_here, (o * act_c).to(hbuf_ptr.dtype.element_ty), mask=mask)
        # the next step's input projection, before the barrier (sentinel size 0 after the last)
        n, start, previous = step_at(sizes_ptr, starts_ptr, previous_ptr, t + 1, True)
        x_i, x_f, x_o, x_j = _gate_inputs(gates_ptr, start, n, rows, cols, col_mask, units)
        if PROJECTION:
            grid_barrier(counter_ptr, 2 * t + 1, num_programs)
        else:
            grid_barrier(counter_ptr, t, num_programs)


@triton.jit
def _lstm_backward_kernel(
    gates_ptr, candidates_ptr, cbuf_ptr, act_cells_ptr, kept_ptr, d_out_ptr, d_h_ptr, d_c_ptr, d_gates_ptr,
    w_t_ptr, w_if_ptr, w_o_ptr, proj_t_ptr, d_m_ptr, proj_kept_ptr, sizes_ptr, starts_ptr, previous_ptr,
    counter_ptr, num_steps, units, depth_h, running, unit_blocks, num_programs,
    PEEPHOLES: tl.constexpr, CLIP: tl.constexpr, PROJECTION: tl.constexpr, PROJ_CLIP: tl.constexpr,
    ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, K_PAD: tl.constexpr, RESIDENT: tl.constexpr,
):
    """``cbuf`` is ``[running + N, units]``: the initial c, then each step's c; step ``t``'s
    previous c is at row ``previous[t]``. ``sizes``/``starts`` end with a 0 sentinel. The
    gradient reaching ``h_t`` through step ``t + 1`` is ``d_gates[t + 1] @ W_h^T``. With a
    projection each step first publishes its columns of ``d_m`` (the gradient of
    ``m @ W_proj`` after the clip) and, after a barrier, takes ``d_m @ W_proj^T``."""
    rows, cols = program_tile(unit_blocks, BLOCK_B, BLOCK_U)
    col_mask = cols < units
    out_cols = _output_columns(unit_blocks, BLOCK_P)
    out_col_mask = out_cols < depth_h
    width = 4 * units
    d_c = load_tile(d_c_ptr, 0, rows, cols, rows < running, col_mask, units)
    if PEEPHOLES:
        w_i, w_f, w_o = _peepholes(w_if_ptr, w_o_ptr, cols, col_mask, units)
    r_t = w_t_ptr
    if RESIDENT:
        r_t = weight_slice(w_t_ptr, width, depth_h, out_cols, out_col_mask, K_PAD)
    last = num_steps - 1
    n, start, c_row = step_at(sizes_ptr, starts_ptr, previous_ptr, last, True)
    d_out = load_tile(d_out_ptr, start, rows, out_cols, rows < n, out_col_mask, depth_h)
    i, f, o, j, act_c, c_prev = _saved(gates_ptr, candidates_ptr, act_cells_ptr, cbuf_ptr, start, n, c_row, rows, cols,
                                       col_mask, units)
    for s in range(num_steps):
        t = last - s
        row_mask = rows < n
        mask = row_mask[:, None] & col_mask[None, :]
        # the gradient reaching h_t: its output's, and through step t + 1 (none after the last
        # step: sentinel size 0)
        dh = d_out + product(d_gates_ptr, tl.load(starts_ptr + t + 1), rows, rows < tl.load(sizes_ptr + t + 1),
                             width, w_t_ptr, depth_h, out_cols, out_col_mask, r_t, BLOCK_B, BLOCK_P, BLOCK_K, K_PAD,
                             RESIDENT, PRECISION)
        if PROJECTION:
            out_mask = row_mask[:, None] & out_col_mask[None, :]
            out_here = (start + rows[:, None]) * depth_h + out_cols[None, :]
            if PROJ_CLIP:
                dh = tl.where(tl.load(proj_kept_ptr + out_here, mask=out_mask, other=0) != 0, dh, 0.0)
            tl.store(d_m_ptr + out_here, dh.to(d_m_ptr.dtype.element_ty), mask=out_mask)
            grid_barrier(counter_ptr, 2 * s, num_programs)  # all of this step's d_m is out
            dm = product(d_m_ptr, start, rows, row_mask, depth_h, proj_t_ptr, units, cols, col_mask, proj_t_ptr,
                         BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, False, PRECISION)
        else:
            dm = dh
        d_o = dm * act_c * o * (1.0 - o)
        dc = dm * o * activation_slope(act_c, ACT) + d_c
        if PEEPHOLES:
            dc += d_o * w_o
        if CLIP:
            here = (start + rows[:, None]) * units + cols[None, :]
            dc = tl.where(tl.load(kept_ptr + here, mask=mask, other=0) != 0, dc, 0.0)
        d_f = dc * c_prev * f * (1.0 - f)
        d_i = dc * j * i * (1.0 - i)
        d_j = dc * i * activation_slope(j, ACT)
        dc_prev = dc * f
        if PEEPHOLES:
            dc_prev += d_i * w_i + d_f * w_f
        gate_here = (start + rows[:, None]) * width + cols[None, :]
        tl.store(d_gates_ptr + gate_here, d_i, mask=mask)
        tl.store(d_gates_ptr + gate_here + units, d_f, mask=mask)
        tl.store(d_gates_ptr + gate_here + 2 * units, d_o, mask=mask)
        tl.store(d_gates_ptr + gate_here + 3 * units, d_j, mask=mask)
        d_c = tl.where(mask, dc_prev, d_c)
        # the previous step's own inputs, before the barrier (size 0 before the first step)
        n, start, c_row = step_at(sizes_ptr, starts_ptr, previous_ptr, t - 1, t > 0)
        d_out = load_tile(d_out_ptr, start, rows, out_cols, rows < n, out_col_mask, depth_h)
        i, f, o, j, act_c, c_prev = _saved(gates_ptr, candidates_ptr, act_cells_ptr, cbuf_ptr, start, n, c_row, rows,
                                           cols, col_mask, units)
        if PROJECTION:
            grid_barrier(counter_ptr, 2 * s + 1, num_programs)
        else:
            grid_barrier(counter_ptr, s, num_programs)
    d_h0 = product(d_gates_ptr, 0, rows, rows < running, width, w_t_ptr, depth_h, out_cols, out_col_mask, r_t,
                   BLOCK_B, BLOCK_P, BLOCK_K, K_PAD, RESIDENT, PRECISION)
    first_out = (rows < running)[:, None] & out_col_mask[None, :]
    tl.store(d_h_ptr + rows[:, None] * depth_h + out_cols[None, :], d_h0.to(d_h_ptr.dtype.element_ty), mask=first_out)
    first = (rows < running)[:, None] & col_mask[None, :]
    tl.store(d_c_ptr + rows[:, None] * units + cols[None, :], d_c.to(d_c_ptr.dtype.element_ty), mask=first)


def forward_steps_persistent(
    gates: Tensor, h0: Tensor, c0: Tensor, w_h: Tensor, w_if: Tensor, w_o: Tensor, projection: Tensor,
    clip: float, proj_clip: float, batch_sizes: list[int], candidates: Tensor, cells: Tensor,
    act_cells: Tensor, hidden: Tensor, out: Tensor, clip_mask: Tensor, proj_mask: Tensor, activation: str = "tanh",
    save: bool = True,
) -> None:
    """:func:`rnnkit.fused.lstm.forward_steps_torch` in one launch. ``gates`` (in: input
    projection plus bias; out: activated), ``candidates``, ``cells``, ``act_cells`` and
    ``hidden`` are float32; ``h0``, ``w_h``, ``projection`` and ``out`` share the inputs' dtype.
    Without ``save`` (no backward will follow) only ``out`` and ``cells`` are filled."""
    units, running, depth_h = cells.shape[1], batch_sizes[0], out.shape[1]
    projected = projection.numel() > 0
    programs, launch, counter = launch_parameters(units, max(depth_h, units), True, running, w_h)
    sizes, starts, previous = schedule(batch_sizes, running, gates.device)
    hbuf = after_initial(h0, out, running)  # the kernel writes each step's h after the initial h
    _lstm_forward_kernel[(programs,)](
        gates, hbuf, c0.contiguous(), w_h.contiguous(), or_stand_in(w_if, cells), or_stand_in(w_o, cells),
        or_stand_in(projection, w_h).contiguous(), or_stand_in(hidden, cells), or_stand_in(proj_mask, cells),
        sizes, starts, previous, candidates, cells, act_cells, or_stand_in(clip_mask, cells), counter,
        len(batch_sizes), units, depth_h, max(clip, 0.0), max(proj_clip, 0.0), running,
        PEEPHOLES=w_if.numel() > 0, CLIP=clip >= 0, PROJECTION=projected, PROJ_CLIP=projected and proj_clip >= 0,
        ACT=activation, BLOCK_P=output_block(depth_h, launch), ONE_LOOP=TUNING.one_loop_for_gates, SAVE=save,
        **launch,
    )
    out.copy_(hbuf[running:])


def backward_steps_persistent(
    gates: Tensor, candidates: Tensor, cells: Tensor, act_cells: Tensor, c0: Tensor, d_out: Tensor,
    d_h: Tensor, d_c: Tensor, d_gates: Tensor, d_m: Tensor, w_h_t: Tensor, projection_t: Tensor,
    w_if: Tensor, w_o: Tensor, clip_mask: Tensor, proj_mask: Tensor, batch_sizes: list[int], activation: str = "tanh",
) -> None:
    """:func:`rnnkit.fused.lstm.backward_steps_torch` in one launch: fills ``d_gates`` (float32)
    and ``d_m`` (with a projection) and leaves the initial state's gradients in ``d_h``, ``d_c``."""
    units, running, depth_h = cells.shape[1], batch_sizes[0], d_out.shape[1]
    projected = projection_t.numel() > 0
    programs, launch, counter = launch_parameters(units, 4 * units, False, running, w_h_t)
    sizes, starts, previous = schedule(batch_sizes, running, gates.device)
    cbuf = after_initial(c0, cells, running)
    _lstm_backward_kernel[(programs,)](
        gates, candidates, cbuf, act_cells, or_stand_in(clip_mask, cells), d_out.contiguous(),
        d_h, d_c, d_gates, w_h_t.contiguous(), or_stand_in(w_if, cells), or_stand_in(w_o, cells),
        or_stand_in(projection_t, w_h_t).contiguous(), or_stand_in(d_m, cells), or_stand_in(proj_mask, cells),
        sizes, starts, previous, counter, len(batch_sizes), units, depth_h, running,
        PEEPHOLES=w_if.numel() > 0, CLIP=clip_mask.numel() > 0, PROJECTION=projected,
        PROJ_CLIP=proj_mask.numel() > 0, ACT=activation, BLOCK_P=output_block(depth_h, launch), **launch,
    )
