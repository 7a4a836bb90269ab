"""numpy float64 transcriptions of TensorFlow 1.15's block RNN ops, forward AND gradient:

* :func:`lstm_block_cell`: the ``LSTMBlockCell`` op (``LSTMBlockCellFprop`` in
  ``tensorflow/core/kernels/rnn/lstm_ops.cc``, documented in
  ``tensorflow/contrib/rnn/python/ops/lstm_ops.py``'s ``_lstm_block_cell``);
* :func:`lstm_block_cell_grad`: ``LSTMBlockCellBprop`` (``lstm_ops.h``) with the matmuls of
  ``_LSTMBlockCellGrad`` (``lstm_ops.py``) -- the gradient TF's autodiff uses, which treats
  the cell clipping as the identity;
* :func:`block_lstm`, :func:`block_lstm_grad`: ``BlockLSTMOp`` and ``BlockLSTMGradOp``
  (``lstm_ops.cc``): the step loop up to ``seq_len_max``, zeros after it;
* :func:`lstm_block_wrapper`, :func:`lstm_block_wrapper_grad`: ``LSTMBlockWrapper.call``
  (``lstm_ops.py``): outputs masked past ``sequence_length``, the final state gathered at
  ``length - 1`` (the initial state for length 0), and the gradient through that;
* :func:`gru_block_cell`: the ``GRUBlockCell`` op (``GRUBlockCellFprop`` in
  ``tensorflow/contrib/rnn/kernels/gru_ops.h``); its gradient op is the exact gradient.

``LSTMBlockCell`` under ``dynamic_rnn`` (a ``select`` carrying the state past each length)
has the same values and gradients as :func:`lstm_block_wrapper`: the wrapper's steps past a
row's length get zero gradient.

Arrays are time-major ``[T, B, ...]``; ``w`` is ``[D+U, 4U]`` with gate blocks ``(i, ci, f, o)``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Weights(NamedTuple):
    w: np.ndarray  # kernel [D+U, 4U]
    b: np.ndarray  # bias [4U]
    wci: np.ndarray  # w_i_diag [U] (zeros without peepholes, as TF passes them)
    wcf: np.ndarray  # w_f_diag
    wco: np.ndarray  # w_o_diag


class Gates(NamedTuple):
    """The op's outputs for one step, each ``[B, U]`` (or ``[T, B, U]`` for ``BlockLSTM``)."""

    i: np.ndarray
    cs: np.ndarray
    f: np.ndarray
    o: np.ndarray
    ci: np.ndarray
    co: np.ndarray
    h: np.ndarray


def lstm_block_cell(
    x: np.ndarray,
    cs_prev: np.ndarray,
    h_prev: np.ndarray,
    weights: Weights,
    forget_bias: float,
    cell_clip: float,
    use_peephole: bool,
) -> Gates:
    """``LSTMBlockCellFprop``: ``cell_clip`` as the op's attribute (``-1``: none; clips if > 0)."""
    w, b, wci, wcf, wco = weights
    units = cs_prev.shape[1]
    icfo = np.concatenate([x, h_prev], 1) @ w + b
    gi, gci, gf, go = (icfo[:, k * units : (k + 1) * units] for k in range(4))
    i = sigmoid(gi + cs_prev * wci) if use_peephole else sigmoid(gi)
    ci = np.tanh(gci)
    f = sigmoid(gf + forget_bias + cs_prev * wcf) if use_peephole else sigmoid(gf + forget_bias)
    cs = i * ci + f * cs_prev
    if cell_clip > 0.0:
        cs = np.clip(cs, -cell_clip, cell_clip)
    co = np.tanh(cs)
    o = sigmoid(go + cs * wco) if use_peephole else sigmoid(go)
    return Gates(i, cs, f, o, ci, co, o * co)


class CellGrads(NamedTuple):
    x: np.ndarray
    cs_prev: np.ndarray
    h_prev: np.ndarray
    w: np.ndarray
    wci: np.ndarray
    wcf: np.ndarray
    wco: np.ndarray
    b: np.ndarray


def lstm_block_cell_grad(
    x: np.ndarray,
    cs_prev: np.ndarray,
    h_prev: np.ndarray,
    weights: Weights,
    gates: Gates,
    cs_grad: np.ndarray,
    h_grad: np.ndarray,
    use_peephole: bool,
) -> CellGrads:
    """``LSTMBlockCellBprop`` + ``_LSTMBlockCellGrad``: the gradients of one step from those of
    its outputs ``cs`` and ``h``. No clip mask anywhere: ``dcs`` goes through the clipping."""
    w, _, wci, wcf, wco = weights
    i, cs, f, o, ci, co, _ = gates
    do = o * (1 - o) * h_grad * co
    dcs = (1 - co * co) * h_grad * o + cs_grad
    if use_peephole:
        dcs = dcs + do * wco
    dci = (1 - ci * ci) * dcs * i
    df = f * (1 - f) * dcs * cs_prev
    di = i * (1 - i) * dcs * ci
    dicfo = np.concatenate([di, dci, df, do], 1)
    cs_prev_grad = dcs * f
    if use_peephole:
        cs_prev_grad = cs_prev_grad + di * wci + df * wcf
    zero = np.zeros_like(wci)
    wci_grad = (di * cs_prev).sum(0) if use_peephole else zero
    wcf_grad = (df * cs_prev).sum(0) if use_peephole else zero
    wco_grad = (do * cs).sum(0) if use_peephole else zero
    xh_grad = dicfo @ w.T
    depth = x.shape[1]
    xh = np.concatenate([x, h_prev], 1)
    return CellGrads(
        xh_grad[:, :depth],
        cs_prev_grad,
        xh_grad[:, depth:],
        xh.T @ dicfo,
        wci_grad,
        wcf_grad,
        wco_grad,
        dicfo.sum(0),
    )


def block_lstm(
    seq_len_max: int,
    x: np.ndarray,
    cs_prev: np.ndarray,
    h_prev: np.ndarray,
    weights: Weights,
    forget_bias: float,
    cell_clip: float,
    use_peephole: bool,
) -> Gates:
    """``BlockLSTMOp``: :func:`lstm_block_cell` for ``t < seq_len_max``, every row (no masking
    inside the op); ``cs`` and ``h`` are zeros after it (the other outputs too, here)."""
    steps, batch, units = x.shape[0], x.shape[1], cs_prev.shape[1]
    out = [np.zeros((steps, batch, units)) for _ in Gates._fields]
    cs_t, h_t = cs_prev, h_prev
    for t in range(seq_len_max):
        gates = lstm_block_cell(x[t], cs_t, h_t, weights, forget_bias, cell_clip, use_peephole)
        for k, value in enumerate(gates):
            out[k][t] = value
        cs_t, h_t = gates.cs, gates.h
    return Gates(*out)


def block_lstm_grad(
    seq_len_max: int,
    x: np.ndarray,
    cs_prev: np.ndarray,
    h_prev: np.ndarray,
    weights: Weights,
    gates: Gates,
    cs_grad: np.ndarray,
    h_grad: np.ndarray,
    use_peephole: bool,
) -> CellGrads:
    """``BlockLSTMGradOp``: backward over ``t < seq_len_max``, each step's ``cs``/``h``
    gradient plus what the next step sends back; ``x``'s gradient is zero after it."""
    x_grad = np.zeros_like(x)
    cs_carry, h_carry = np.zeros_like(cs_prev), np.zeros_like(h_prev)
    totals = {name: np.zeros_like(value) for name, value in weights._asdict().items()}
    for t in reversed(range(seq_len_max)):
        cs_before = cs_prev if t == 0 else gates.cs[t - 1]
        h_before = h_prev if t == 0 else gates.h[t - 1]
        step = Gates(*(g[t] for g in gates))
        grads = lstm_block_cell_grad(
            x[t], cs_before, h_before, weights, step, cs_carry + cs_grad[t], h_carry + h_grad[t], use_peephole
        )
        x_grad[t], cs_carry, h_carry = grads.x, grads.cs_prev, grads.h_prev
        for name in totals:
            totals[name] = totals[name] + getattr(grads, name)
    return CellGrads(x_grad, cs_carry, h_carry, totals["w"], totals["wci"], totals["wcf"], totals["wco"], totals["b"])


def _mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    """``transpose(sequence_mask(lengths, steps))``: ``[T, B, 1]``, 1.0 where ``t < length``."""
    return (np.arange(steps)[:, None] < lengths[None, :]).astype(np.float64)[:, :, None]


def lstm_block_wrapper(
    x: np.ndarray,
    c0: np.ndarray,
    h0: np.ndarray,
    weights: Weights,
    forget_bias: float,
    cell_clip: float,
    use_peephole: bool,
    sequence_length: Sequence[int] | None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], Gates]:
    """``LSTMBlockWrapper.call`` with ``LSTMBlockFusedCell._call_cell``: ``(outputs [T, B, U],
    (final c, final h), the op's outputs)``."""
    steps = x.shape[0]
    if sequence_length is None:
        gates = block_lstm(steps, x, c0, h0, weights, forget_bias, cell_clip, use_peephole)
        return gates.h, (gates.cs[-1], gates.h[-1]), gates
    lengths = np.asarray(sequence_length)
    gates = block_lstm(int(lengths.max()), x, c0, h0, weights, forget_bias, cell_clip, use_peephole)
    outputs = gates.h * _mask(lengths, steps)
    rows = np.arange(x.shape[1])
    final_c = np.concatenate([c0[None], gates.cs])[lengths, rows]
    final_h = np.concatenate([h0[None], outputs])[lengths, rows]
    return outputs, (final_c, final_h), gates


def lstm_block_wrapper_grad(
    x: np.ndarray,
    c0: np.ndarray,
    h0: np.ndarray,
    weights: Weights,
    forget_bias: float,
    cell_clip: float,
    use_peephole: bool,
    sequence_length: Sequence[int] | None,
    d_outputs: np.ndarray,
    d_c: np.ndarray,
    d_h: np.ndarray,
) -> CellGrads:
    """The gradient TF computes for :func:`lstm_block_wrapper` (the mask's and gather's
    gradients, then ``BlockLSTMGrad``) from those of the outputs and the final state."""
    steps, batch = x.shape[0], x.shape[1]
    _, _, gates = lstm_block_wrapper(x, c0, h0, weights, forget_bias, cell_clip, use_peephole, sequence_length)
    lengths = np.full(batch, steps) if sequence_length is None else np.asarray(sequence_length)
    h_grad = d_outputs * (1.0 if sequence_length is None else _mask(lengths, steps))
    cs_grad = np.zeros_like(h_grad)
    c0_grad, h0_grad = np.zeros_like(c0), np.zeros_like(h0)
    for row, length in enumerate(lengths):
        if length == 0:
            c0_grad[row] += d_c[row]
            h0_grad[row] += d_h[row]
        else:
            cs_grad[length - 1, row] += d_c[row]
            h_grad[length - 1, row] += d_h[row]
    grads = block_lstm_grad(int(lengths.max()), x, c0, h0, weights, gates, cs_grad, h_grad, use_peephole)
    return grads._replace(cs_prev=grads.cs_prev + c0_grad, h_prev=grads.h_prev + h0_grad)


def gru_block_cell(
    x: np.ndarray, h_prev: np.ndarray, w_ru: np.ndarray, b_ru: np.ndarray, w_c: np.ndarray, b_c: np.ndarray
) -> np.ndarray:
    """``GRUBlockCellFprop``: the new ``h`` ``[B, U]``."""
    units = h_prev.shape[1]
    r_u = sigmoid(np.concatenate([x, h_prev], 1) @ w_ru + b_ru)
    r, u = r_u[:, :units], r_u[:, units:]
    c = np.tanh(np.concatenate([x, h_prev * r], 1) @ w_c + b_c)
    return u * (h_prev - c) + c
