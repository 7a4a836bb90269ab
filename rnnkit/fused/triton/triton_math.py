"""Device functions shared by rnnkit's Triton kernels: activations, tiles, products and a
grid-wide barrier.

``activate``/``activation_slope`` are the cell activations of ``activation_kinds.py`` (a
compile-time kind) and their derivatives from the output.

The activations compute in float32 from ``exp`` alone (Triton's interpreter has no libdevice):
``sigmoid(x) = 1 / (1 + exp(-x))``; ``tanh`` from ``exp(-2|x|)`` with an odd Taylor
polynomial below ``|x| = 0.2``, where ``1 - exp(-2|x|)`` would cancel. Both are within a few
float32 ulps of torch's.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    large = (1.0 - e) / (1.0 + e)
    x2 = x * x
    series = x * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * (
        -0.05396825396825397 + x2 * 0.021869488536155203))))
    return tl.where(a < 0.2, series, tl.where(x < 0, -large, large))


@triton.jit
def activate(x, KIND: tl.constexpr):
    """A cell activation of kind ``KIND`` (``activation_kinds.py``), float32."""
    if KIND == "tanh":
        y = tanh(x)
    elif KIND == "sigmoid":
        y = sigmoid(x)
    elif KIND == "relu":
        y = tl.maximum(x, 0.0)
    elif KIND == "relu6":
        y = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif KIND == "elu":
        y = tl.where(x > 0, x, tl.exp(tl.minimum(x, 0.0)) - 1.0)
    elif KIND == "selu":
        y = 1.0507009873554805 * tl.where(x > 0, x, 1.6732632423543772 * (tl.exp(tl.minimum(x, 0.0)) - 1.0))
    elif KIND == "softsign":
        y = x / (1.0 + tl.abs(x))
    else:  # linear
        y = x
    return y


@triton.jit
def activation_slope(y, KIND: tl.constexpr):
    """The derivative of the activation of kind ``KIND`` at the input whose output is ``y``."""
    if KIND == "tanh":
        slope = 1.0 - y * y
    elif KIND == "sigmoid":
        slope = y * (1.0 - y)
    elif KIND == "relu":
        slope = tl.where(y > 0, 1.0, 0.0)
    elif KIND == "relu6":
        slope = tl.where((y > 0) & (y < 6.0), 1.0, 0.0)
    elif KIND == "elu":
        slope = tl.where(y > 0, 1.0, y + 1.0)
    elif KIND == "selu":
        slope = tl.where(y > 0, 1.0507009873554805, y + 1.0507009873554805 * 1.6732632423543772)
    elif KIND == "softsign":
        slope = (1.0 - tl.abs(y)) * (1.0 - tl.abs(y))
    else:  # linear
        slope = y * 0.0 + 1.0
    return slope


@triton.jit
def grid_barrier(counter_ptr, step, num_programs):
    """Wait until all ``num_programs`` programs have finished step ``step`` (0, 1, 2, ...).

    First the program's own threads meet (``debug_barrier``, CUDA's ``__syncthreads``): a
    step reads what other threads of the same program stored in the step before, so this is
    needed even when a single program runs the layer. Then each program adds 1 to a zeroed
    counter (release) and waits until it reaches ``(step + 1) * num_programs`` (acquire).
    Triton runs a scalar atomic once per program, from its first thread (the pattern of
    CUDA's cooperative grid sync). All programs must be resident at once: the caller launches
    at most one program per multiprocessor.
    """
    tl.debug_barrier()
    if num_programs > 1:
        tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
        target = (step + 1) * num_programs
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        while seen < target:
            seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()


@triton.jit
def load_tile(ptr, first_row, rows, cols, row_mask, col_mask, width):
    """A ``[rows, cols]`` tile of a row-major matrix of ``width`` columns, as float32."""
    mask = row_mask[:, None] & col_mask[None, :]
    return tl.load(ptr + (first_row + rows[:, None]) * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def product(a_ptr, first_row, rows, row_mask, depth, w_ptr, w_width, cols, col_mask, w_resident,
             BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr, K_PAD: tl.constexpr,
             RESIDENT: tl.constexpr, PRECISION: tl.constexpr):
    """``a[first_row + rows, :depth] @ w[:depth, cols]`` (``[BLOCK_B, BLOCK_U]``, float32), ``a``
    written by other programs before the last barrier (so read past L1). With ``RESIDENT``
    the weight slice is ``w_resident`` (``[K_PAD, BLOCK_U]``, already in registers)."""
    if RESIDENT:
        all_k = tl.arange(0, K_PAD)
        a_mask = row_mask[:, None] & (all_k < depth)[None, :]
        a = tl.load(a_ptr + (first_row + rows[:, None]) * depth + all_k[None, :], mask=a_mask, other=0.0,
                    cache_modifier=".cg")
        acc = tl.dot(a.to(w_resident.dtype), w_resident, input_precision=PRECISION)
    else:
        acc = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        for k0 in range(0, depth, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            chunk = tl.load(a_ptr + (first_row + rows[:, None]) * depth + ks[None, :],
                            mask=row_mask[:, None] & (ks < depth)[None, :], other=0.0, cache_modifier=".cg")
            w = tl.load(w_ptr + ks[:, None] * w_width + cols[None, :],
                        mask=(ks < depth)[:, None] & col_mask[None, :], other=0.0)
            acc += tl.dot(chunk.to(w.dtype), w, input_precision=PRECISION)
    return acc


@triton.jit
def gate_products(a_ptr, first_row, rows, row_mask, depth, w_ptr, w_width, gate_width, cols, col_mask,
                  r_0, r_1, r_2, r_3, GATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
                  BLOCK_K: tl.constexpr, K_PAD: tl.constexpr, RESIDENT: tl.constexpr, PRECISION: tl.constexpr,
                  ONE_LOOP: tl.constexpr):
    """:func:`product` for each of ``GATES`` (2 or 4) gate blocks: ``a @ w[:depth, g * gate_width
    + cols]`` for ``g < GATES`` (4 results; with 2 gates the last two are zeros), ``r_g`` their
    resident slices. Streamed weights with ``ONE_LOOP`` take one pass over ``a``'s chunks for all
    gates: each chunk of ``a`` is read once, and the latency-bound loop runs ``GATES`` times fewer
    iterations with ``GATES + 1`` loads in flight. The sums are the same, in the same order."""
    if RESIDENT or not ONE_LOOP:
        p_0 = product(a_ptr, first_row, rows, row_mask, depth, w_ptr, w_width, cols, col_mask, r_0,
                      BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
        p_1 = product(a_ptr, first_row, rows, row_mask, depth, w_ptr + gate_width, w_width, cols, col_mask, r_1,
                      BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
        p_2 = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        p_3 = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        if GATES == 4:
            p_2 = product(a_ptr, first_row, rows, row_mask, depth, w_ptr + 2 * gate_width, w_width, cols, col_mask,
                          r_2, BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
            p_3 = product(a_ptr, first_row, rows, row_mask, depth, w_ptr + 3 * gate_width, w_width, cols, col_mask,
                          r_3, BLOCK_B, BLOCK_U, BLOCK_K, K_PAD, RESIDENT, PRECISION)
    else:
        p_0 = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        p_1 = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        p_2 = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        p_3 = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
        for k0 in range(0, depth, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            chunk = tl.load(a_ptr + (first_row + rows[:, None]) * depth + ks[None, :],
                            mask=row_mask[:, None] & (ks < depth)[None, :], other=0.0, cache_modifier=".cg")
            w_here = w_ptr + ks[:, None] * w_width + cols[None, :]
            w_mask = (ks < depth)[:, None] & col_mask[None, :]
            w_0 = tl.load(w_here, mask=w_mask, other=0.0)
            w_1 = tl.load(w_here + gate_width, mask=w_mask, other=0.0)
            chunk = chunk.to(w_0.dtype)
            p_0 += tl.dot(chunk, w_0, input_precision=PRECISION)
            p_1 += tl.dot(chunk, w_1, input_precision=PRECISION)
            if GATES == 4:
                w_2 = tl.load(w_here + 2 * gate_width, mask=w_mask, other=0.0)
                w_3 = tl.load(w_here + 3 * gate_width, mask=w_mask, other=0.0)
                p_2 += tl.dot(chunk, w_2, input_precision=PRECISION)
                p_3 += tl.dot(chunk, w_3, input_precision=PRECISION)
    return p_0, p_1, p_2, p_3


@triton.jit
def weight_slice(w_ptr, depth, w_width, cols, col_mask, K_PAD: tl.constexpr):
    """``w[:depth, cols]`` padded to ``K_PAD`` rows with zeros."""
    ks = tl.arange(0, K_PAD)
    return tl.load(w_ptr + ks[:, None] * w_width + cols[None, :], mask=(ks < depth)[:, None] & col_mask[None, :],
                   other=0.0)


@triton.jit
def program_tile(unit_blocks, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr):
    """The rows and unit columns this program of a persistent kernel owns."""
    pid = tl.program_id(0)
    rows = (pid // unit_blocks) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = (pid % unit_blocks) * BLOCK_U + tl.arange(0, BLOCK_U)
    return rows, cols


@triton.jit
def step_at(sizes_ptr, starts_ptr, previous_ptr, step, valid):
    """``(rows alive, first packed row, previous state's row)`` of ``step``; zeros if not ``valid``."""
    n = tl.load(sizes_ptr + step, mask=valid, other=0)
    start = tl.load(starts_ptr + step, mask=valid, other=0)
    previous = tl.load(previous_ptr + step, mask=valid, other=0)
    return n, start, previous
