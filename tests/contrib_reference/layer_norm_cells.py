"""numpy float64 transcription of TensorFlow 1.15's layer-norm LSTMs
(``tensorflow/contrib/rnn/python/ops/rnn_cell.py``: ``LayerNormBasicLSTMCell.call`` and
``LayerNormLSTMCell.call``, with ``_norm``), and of the layer norm they call
(``tensorflow/contrib/layers/python/layers/layers.py``: ``layer_norm`` = ``nn.moments`` over
the last axis, then ``nn.batch_normalization`` with ``variance_epsilon = 1e-12``).

Weights are a dict keyed by the TF names relative to the cell's scope (``kernel``, ``bias``,
``input/gamma``, ..., ``w_f_diag``, ``projection/kernel``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

Weights = Mapping[str, np.ndarray]
GATE_SCOPES = ("input", "transform", "forget", "output")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``nn.moments`` (mean, then the mean of squared differences) and
    ``nn.batch_normalization``: ``x * inv + (beta - mean * inv)``, ``inv = rsqrt(var + eps) * gamma``."""
    mean = x.mean(axis=-1, keepdims=True)
    variance = np.square(x - mean).mean(axis=-1, keepdims=True)
    inv = gamma / np.sqrt(variance + 1e-12)
    return x * inv + (beta - mean * inv)


def _norm(weights: Weights, scope: str, x: np.ndarray) -> np.ndarray:
    return layer_norm(x, weights[f"{scope}/gamma"], weights[f"{scope}/beta"])


def layer_norm_basic_lstm_step(
    weights: Weights,
    x: np.ndarray,
    c: np.ndarray,
    h: np.ndarray,
    forget_bias: float = 1.0,
    layer_norm_on: bool = True,
    activation: Callable[[np.ndarray], np.ndarray] = np.tanh,
    drop: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``LayerNormBasicLSTMCell.call``; ``drop`` is ``nn_ops.dropout``'s mask already scaled by
    ``1 / keep_prob`` (None: keep_prob 1)."""
    concat = np.concatenate([x, h], 1) @ weights["kernel"]
    if not layer_norm_on:
        concat = concat + weights["bias"]
    i, j, f, o = np.split(concat, 4, axis=1)
    if layer_norm_on:
        i, j, f, o = (_norm(weights, scope, block) for scope, block in zip(GATE_SCOPES, (i, j, f, o)))
    g = activation(j)
    if drop is not None:
        g = g * drop
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * g
    if layer_norm_on:
        new_c = _norm(weights, "state", new_c)
    new_h = activation(new_c) * sigmoid(o)
    return new_h, (new_c, new_h)


def layer_norm_lstm_step(
    weights: Weights,
    x: np.ndarray,
    c_prev: np.ndarray,
    m_prev: np.ndarray,
    use_peepholes: bool = False,
    cell_clip: float | None = None,
    num_proj: int | None = None,
    proj_clip: float | None = None,
    forget_bias: float = 1.0,
    activation: Callable[[np.ndarray], np.ndarray] = np.tanh,
    layer_norm_on: bool = False,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``LayerNormLSTMCell.call`` (its ``_linear`` creates the bias but adds it only without
    layer norm)."""
    lstm_matrix = np.concatenate([x, m_prev], 1) @ weights["kernel"]
    if not layer_norm_on:
        lstm_matrix = lstm_matrix + weights["bias"]
    i, j, f, o = np.split(lstm_matrix, 4, axis=1)
    if layer_norm_on:
        i, j, f, o = (_norm(weights, scope, block) for scope, block in zip(GATE_SCOPES, (i, j, f, o)))
    if use_peepholes:
        c = sigmoid(f + forget_bias + weights["w_f_diag"] * c_prev) * c_prev + sigmoid(
            i + weights["w_i_diag"] * c_prev
        ) * activation(j)
    else:
        c = sigmoid(f + forget_bias) * c_prev + sigmoid(i) * activation(j)
    if layer_norm_on:
        c = _norm(weights, "state", c)
    if cell_clip is not None:
        c = np.clip(c, -cell_clip, cell_clip)
    if use_peepholes:
        m = sigmoid(o + weights["w_o_diag"] * c) * activation(c)
    else:
        m = sigmoid(o) * activation(c)
    if num_proj is not None:
        m = m @ weights["projection/kernel"]
        if proj_clip is not None:
            m = np.clip(m, -proj_clip, proj_clip)
    return m, (c, m)


def unroll(
    step: Callable[..., tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]],
    inputs: np.ndarray,
    state: tuple[np.ndarray, np.ndarray],
    lengths: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``dynamic_rnn`` over ``inputs`` [B, T, D] (batch-major) with ``sequence_length``: outputs
    zero past each length, the state carried. ``step(x, c, h, t) -> (out, (c, h))``."""
    batch, steps = inputs.shape[:2]
    c, h = state
    outputs = []
    for t in range(steps):
        out, (new_c, new_h) = step(inputs[:, t], c, h, t)
        alive = (t < lengths)[:, None]
        outputs.append(np.where(alive, out, 0.0))
        c, h = np.where(alive, new_c, c), np.where(alive, new_h, h)
    return np.stack(outputs, 1), (c, h)
