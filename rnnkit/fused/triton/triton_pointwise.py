"""Triton kernels for one step's pointwise part, forward and backward: LSTM, TF's GRU and
``BasicRNNCell``.

Each is a drop-in for its torch twin in ``lstm.py``, ``gru.py`` or ``basic_rnn.py`` (its
specification, named in its docstring): same arguments, same in-place results, one launch
instead of a handful of torch ops. The step loops around them (one cuBLAS GEMM per step, input
projection and weight gradients as single GEMMs) are the loops of those files; this is the GPU
path for the layers the persistent kernels do not take (batches whose programs do not all fit
on the GPU at once). Every kernel runs on a 2-D grid of ``[rows, units]`` tiles and reads any
row stride (column stride 1), so the loops pass row slices without copies.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .triton_math import activate, activation_slope, sigmoid

_BLOCK_ROWS = 16
_BLOCK_UNITS = 64


def _grid(rows: int, units: int) -> tuple[int, int]:
    return triton.cdiv(rows, _BLOCK_ROWS), triton.cdiv(units, _BLOCK_UNITS)


def _strides(*tensors: Tensor) -> list[int]:
    """Row strides of 2-D tensors whose columns are contiguous."""
    for t in tensors:
        if t.dim() != 2 or (t.shape[1] > 1 and t.stride(1) != 1):
            raise ValueError(f"expected a 2-D tensor with contiguous columns, got shape {tuple(t.shape)}")
    return [t.stride(0) for t in tensors]


@triton.jit
def _tile(rows_per_block: tl.constexpr, units_per_block: tl.constexpr, n, units):
    rows = tl.program_id(0) * rows_per_block + tl.arange(0, rows_per_block)
    cols = tl.program_id(1) * units_per_block + tl.arange(0, units_per_block)
    mask = (rows < n)[:, None] & (cols < units)[None, :]
    return rows[:, None], cols[None, :], mask


@triton.jit
def _lstm_forward(
    z_ptr, z_rs, c_prev_ptr, c_prev_rs, w_if_ptr, w_o_ptr, j_ptr, j_rs, c_ptr, c_rs, tc_ptr, tc_rs,
    m_ptr, m_rs, kept_ptr, kept_rs, n, units, clip,
    PEEPHOLES: tl.constexpr, CLIP: tl.constexpr, ACT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr,
):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    z = z_ptr + r * z_rs + u
    z_i = tl.load(z, mask=mask).to(tl.float32)
    z_f = tl.load(z + units, mask=mask).to(tl.float32)
    z_o = tl.load(z + 2 * units, mask=mask).to(tl.float32)
    z_j = tl.load(z + 3 * units, mask=mask).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + r * c_prev_rs + u, mask=mask).to(tl.float32)
    if PEEPHOLES:
        z_i += c_prev * tl.load(w_if_ptr + u, mask=u < units).to(tl.float32)
        z_f += c_prev * tl.load(w_if_ptr + units + u, mask=u < units).to(tl.float32)
    i = sigmoid(z_i)
    f = sigmoid(z_f)
    j = activate(z_j, ACT)
    c = f * c_prev + i * j
    if CLIP:
        tl.store(kept_ptr + r * kept_rs + u, tl.abs(c) <= clip, mask=mask)
        c = tl.minimum(tl.maximum(c, -clip), clip)
    if PEEPHOLES:
        z_o += c * tl.load(w_o_ptr + u, mask=u < units).to(tl.float32)
    o = sigmoid(z_o)
    tc = activate(c, ACT)
    kind = z_ptr.dtype.element_ty
    tl.store(z, i.to(kind), mask=mask)
    tl.store(z + units, f.to(kind), mask=mask)
    tl.store(z + 2 * units, o.to(kind), mask=mask)
    tl.store(j_ptr + r * j_rs + u, j.to(kind), mask=mask)
    tl.store(c_ptr + r * c_rs + u, c.to(kind), mask=mask)
    tl.store(tc_ptr + r * tc_rs + u, tc.to(kind), mask=mask)
    tl.store(m_ptr + r * m_rs + u, (o * tc).to(kind), mask=mask)


def forward_pointwise_triton(
    z: Tensor, c_prev: Tensor, w_if: Tensor, w_o: Tensor, clip: float,
    j: Tensor, c: Tensor, tc: Tensor, m: Tensor, kept: Tensor, activation: str = "tanh",
) -> None:
    """:func:`rnnkit.fused.lstm.forward_pointwise_torch` as one kernel."""
    n, units = c.shape
    if n == 0:
        return
    kept_t = kept if kept.numel() else c
    _lstm_forward[_grid(n, units)](
        z, *_strides(z), c_prev, *_strides(c_prev), w_if if w_if.numel() else z, w_o if w_o.numel() else z,
        j, *_strides(j), c, *_strides(c), tc, *_strides(tc), m, *_strides(m), kept_t, *_strides(kept_t),
        n, units, max(clip, 0.0),
        PEEPHOLES=w_if.numel() > 0, CLIP=clip >= 0, ACT=activation, BLOCK_R=_BLOCK_ROWS, BLOCK_U=_BLOCK_UNITS,
    )


@triton.jit
def _lstm_backward(
    z_ptr, z_rs, j_ptr, j_rs, c_prev_ptr, c_prev_rs, tc_ptr, tc_rs, dm_ptr, dm_rs, d_c_ptr, d_c_rs,
    w_if_ptr, w_o_ptr, kept_ptr, kept_rs, dz_ptr, dz_rs, n, units,
    PEEPHOLES: tl.constexpr, CLIP: tl.constexpr, ACT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr,
):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    z = z_ptr + r * z_rs + u
    i = tl.load(z, mask=mask).to(tl.float32)
    f = tl.load(z + units, mask=mask).to(tl.float32)
    o = tl.load(z + 2 * units, mask=mask).to(tl.float32)
    j = tl.load(j_ptr + r * j_rs + u, mask=mask).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + r * c_prev_rs + u, mask=mask).to(tl.float32)
    tc = tl.load(tc_ptr + r * tc_rs + u, mask=mask).to(tl.float32)
    dm = tl.load(dm_ptr + r * dm_rs + u, mask=mask).to(tl.float32)
    d_c = d_c_ptr + r * d_c_rs + u
    d_o = dm * tc * o * (1.0 - o)
    dc = dm * o * activation_slope(tc, ACT) + tl.load(d_c, mask=mask).to(tl.float32)
    if PEEPHOLES:
        dc += d_o * tl.load(w_o_ptr + u, mask=u < units).to(tl.float32)
    if CLIP:
        dc = tl.where(tl.load(kept_ptr + r * kept_rs + u, mask=mask, other=0) != 0, dc, 0.0)
    d_f = dc * c_prev * f * (1.0 - f)
    d_i = dc * j * i * (1.0 - i)
    d_j = dc * i * activation_slope(j, ACT)
    dc_prev = dc * f
    if PEEPHOLES:
        dc_prev += d_i * tl.load(w_if_ptr + u, mask=u < units).to(tl.float32)
        dc_prev += d_f * tl.load(w_if_ptr + units + u, mask=u < units).to(tl.float32)
    kind = dz_ptr.dtype.element_ty
    dz = dz_ptr + r * dz_rs + u
    tl.store(dz, d_i.to(kind), mask=mask)
    tl.store(dz + units, d_f.to(kind), mask=mask)
    tl.store(dz + 2 * units, d_o.to(kind), mask=mask)
    tl.store(dz + 3 * units, d_j.to(kind), mask=mask)
    tl.store(d_c, dc_prev.to(kind), mask=mask)


def backward_pointwise_triton(
    z: Tensor, j: Tensor, c_prev: Tensor, tc: Tensor, dm: Tensor, d_c: Tensor,
    w_if: Tensor, w_o: Tensor, kept: Tensor, dz: Tensor, activation: str = "tanh",
) -> None:
    """:func:`rnnkit.fused.lstm.backward_pointwise_torch` as one kernel."""
    n, units = j.shape
    if n == 0:
        return
    kept_t = kept if kept.numel() else j
    _lstm_backward[_grid(n, units)](
        z, *_strides(z), j, *_strides(j), c_prev, *_strides(c_prev), tc, *_strides(tc), dm, *_strides(dm),
        d_c, *_strides(d_c), w_if if w_if.numel() else z, w_o if w_o.numel() else z, kept_t, *_strides(kept_t),
        dz, *_strides(dz), n, units,
        PEEPHOLES=w_if.numel() > 0, CLIP=kept.numel() > 0, ACT=activation, BLOCK_R=_BLOCK_ROWS, BLOCK_U=_BLOCK_UNITS,
    )


@triton.jit
def _gru_gates_forward(g_ptr, g_rs, h_ptr, h_rs, rh_ptr, rh_rs, n, units,
                       BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    g = g_ptr + r * g_rs + u
    reset = sigmoid(tl.load(g, mask=mask).to(tl.float32))
    update = sigmoid(tl.load(g + units, mask=mask).to(tl.float32))
    h = tl.load(h_ptr + r * h_rs + u, mask=mask).to(tl.float32)
    kind = g_ptr.dtype.element_ty
    tl.store(g, reset.to(kind), mask=mask)
    tl.store(g + units, update.to(kind), mask=mask)
    tl.store(rh_ptr + r * rh_rs + u, (reset * h).to(kind), mask=mask)


def gates_forward_triton(g: Tensor, h_prev: Tensor, rh: Tensor) -> None:
    """:func:`rnnkit.fused.gru.gates_forward_torch` as one kernel."""
    n, units = h_prev.shape
    if n:
        _gru_gates_forward[_grid(n, units)](g, *_strides(g), h_prev, *_strides(h_prev), rh, *_strides(rh), n, units,
                                            BLOCK_R=_BLOCK_ROWS, BLOCK_U=_BLOCK_UNITS)


@triton.jit
def _gru_output_forward(c_ptr, c_rs, g_ptr, g_rs, h_prev_ptr, h_prev_rs, h_ptr, h_rs, n, units,
                        ACT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    c = activate(tl.load(c_ptr + r * c_rs + u, mask=mask).to(tl.float32), ACT)
    update = tl.load(g_ptr + r * g_rs + units + u, mask=mask).to(tl.float32)
    h_prev = tl.load(h_prev_ptr + r * h_prev_rs + u, mask=mask).to(tl.float32)
    kind = c_ptr.dtype.element_ty
    tl.store(c_ptr + r * c_rs + u, c.to(kind), mask=mask)
    tl.store(h_ptr + r * h_rs + u, ((h_prev - c) * update + c).to(kind), mask=mask)


def output_forward_triton(c: Tensor, g: Tensor, h_prev: Tensor, h: Tensor, activation: str = "tanh") -> None:
    """:func:`rnnkit.fused.gru.output_forward_torch` as one kernel."""
    n, units = c.shape
    if n:
        _gru_output_forward[_grid(n, units)](c, *_strides(c), g, *_strides(g), h_prev, *_strides(h_prev),
                                             h, *_strides(h), n, units, ACT=activation, BLOCK_R=_BLOCK_ROWS,
                                             BLOCK_U=_BLOCK_UNITS)


@triton.jit
def _gru_output_backward(dh_ptr, dh_rs, g_ptr, g_rs, c_ptr, c_rs, h_prev_ptr, h_prev_rs, dg_ptr, dg_rs,
                         dc_ptr, dc_rs, dh_prev_ptr, dh_prev_rs, n, units,
                         ACT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    dh = tl.load(dh_ptr + r * dh_rs + u, mask=mask).to(tl.float32)
    update = tl.load(g_ptr + r * g_rs + units + u, mask=mask).to(tl.float32)
    c = tl.load(c_ptr + r * c_rs + u, mask=mask).to(tl.float32)
    h_prev = tl.load(h_prev_ptr + r * h_prev_rs + u, mask=mask).to(tl.float32)
    kind = dg_ptr.dtype.element_ty
    tl.store(dg_ptr + r * dg_rs + units + u, (dh * (h_prev - c) * update * (1.0 - update)).to(kind), mask=mask)
    tl.store(dc_ptr + r * dc_rs + u, ((dh - dh * update) * activation_slope(c, ACT)).to(kind), mask=mask)
    tl.store(dh_prev_ptr + r * dh_prev_rs + u, (dh * update).to(kind), mask=mask)


def output_backward_triton(
    dh: Tensor, g: Tensor, c: Tensor, h_prev: Tensor, dg: Tensor, dc: Tensor, dh_prev: Tensor, activation: str = "tanh"
) -> None:
    """:func:`rnnkit.fused.gru.output_backward_torch` as one kernel."""
    n, units = c.shape
    if n:
        _gru_output_backward[_grid(n, units)](
            dh, *_strides(dh), g, *_strides(g), c, *_strides(c), h_prev, *_strides(h_prev), dg, *_strides(dg),
            dc, *_strides(dc), dh_prev, *_strides(dh_prev), n, units, ACT=activation, BLOCK_R=_BLOCK_ROWS,
            BLOCK_U=_BLOCK_UNITS,
        )


@triton.jit
def _gru_reset_backward(d_rh_ptr, d_rh_rs, g_ptr, g_rs, h_prev_ptr, h_prev_rs, dg_ptr, dg_rs,
                        dh_prev_ptr, dh_prev_rs, n, units, BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    d_rh = tl.load(d_rh_ptr + r * d_rh_rs + u, mask=mask).to(tl.float32)
    reset = tl.load(g_ptr + r * g_rs + u, mask=mask).to(tl.float32)
    h_prev = tl.load(h_prev_ptr + r * h_prev_rs + u, mask=mask).to(tl.float32)
    dh_prev = dh_prev_ptr + r * dh_prev_rs + u
    kind = dg_ptr.dtype.element_ty
    tl.store(dg_ptr + r * dg_rs + u, (d_rh * h_prev * reset * (1.0 - reset)).to(kind), mask=mask)
    tl.store(dh_prev, (tl.load(dh_prev, mask=mask).to(tl.float32) + d_rh * reset).to(kind), mask=mask)


def reset_backward_triton(d_rh: Tensor, g: Tensor, h_prev: Tensor, dg: Tensor, dh_prev: Tensor) -> None:
    """:func:`rnnkit.fused.gru.reset_backward_torch` as one kernel."""
    n, units = h_prev.shape
    if n:
        _gru_reset_backward[_grid(n, units)](
            d_rh, *_strides(d_rh), g, *_strides(g), h_prev, *_strides(h_prev), dg, *_strides(dg),
            dh_prev, *_strides(dh_prev), n, units, BLOCK_R=_BLOCK_ROWS, BLOCK_U=_BLOCK_UNITS,
        )


@triton.jit
def _rnn_forward(z_ptr, z_rs, h_ptr, h_rs, n, units, ACT: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_U: tl.constexpr):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    h = activate(tl.load(z_ptr + r * z_rs + u, mask=mask).to(tl.float32), ACT)
    tl.store(h_ptr + r * h_rs + u, h.to(h_ptr.dtype.element_ty), mask=mask)


def rnn_forward_triton(z: Tensor, h: Tensor, activation: str = "tanh") -> None:
    """:func:`rnnkit.fused.basic_rnn.forward_pointwise_torch` as one kernel (``z`` is left as it
    was unless ``h`` is ``z``)."""
    n, units = h.shape
    if n:
        _rnn_forward[_grid(n, units)](z, *_strides(z), h, *_strides(h), n, units, ACT=activation,
                                      BLOCK_R=_BLOCK_ROWS, BLOCK_U=_BLOCK_UNITS)


@triton.jit
def _rnn_backward(d_out_ptr, d_out_rs, d_h_ptr, d_h_rs, h_ptr, h_rs, d_pre_ptr, d_pre_rs, n, units,
                  ACT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_U: tl.constexpr):
    r, u, mask = _tile(BLOCK_R, BLOCK_U, n, units)
    dh = tl.load(d_out_ptr + r * d_out_rs + u, mask=mask).to(tl.float32)
    dh += tl.load(d_h_ptr + r * d_h_rs + u, mask=mask).to(tl.float32)
    slope = activation_slope(tl.load(h_ptr + r * h_rs + u, mask=mask).to(tl.float32), ACT)
    tl.store(d_pre_ptr + r * d_pre_rs + u, (dh * slope).to(d_pre_ptr.dtype.element_ty), mask=mask)


def rnn_backward_triton(d_out: Tensor, d_h: Tensor, h: Tensor, d_pre: Tensor, activation: str = "tanh") -> None:
    """:func:`rnnkit.fused.basic_rnn.backward_pointwise_torch` as one kernel."""
    n, units = h.shape
    if n:
        _rnn_backward[_grid(n, units)](d_out, *_strides(d_out), d_h, *_strides(d_h), h, *_strides(h), d_pre,
                                       *_strides(d_pre), n, units, ACT=activation, BLOCK_R=_BLOCK_ROWS,
                                       BLOCK_U=_BLOCK_UNITS)
