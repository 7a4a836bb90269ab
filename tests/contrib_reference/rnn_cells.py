"""numpy float64 transcriptions of the ``call`` methods of TensorFlow 1.15's
``tensorflow/contrib/rnn/python/ops/rnn_cell.py``: ``NASCell.call``, ``UGRNNCell.call``,
``IntersectionRNNCell.call``, ``IndRNNCell.call``, ``IndyGRUCell.call`` and
``IndyLSTMCell.call`` (with ``core_rnn_cell._Linear`` for the kernels of UGRNN and +RNN), and
of ``dynamic_rnn``'s handling of ``sequence_length`` (``tensorflow/python/ops/rnn.py``,
``_rnn_step``: zero outputs and the carried state past each length).

Every step function takes ``weights``, the cell's variables by TF name relative to the cell's
scope (``"kernel"``, ``"gates/kernel_w"``, ...), and returns ``(output, new_state)`` with
states as plain tuples.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

Weights = Mapping[str, np.ndarray]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def nas_step(x: np.ndarray, state: tuple, weights: Weights, num_proj: int | None, use_bias: bool) -> tuple:
    """``NASCell.call``: eight branches of ``x @ kernel`` and ``m @ recurrent_kernel (+ bias)``."""
    c_prev, m_prev = state
    m_matrix = m_prev @ weights["recurrent_kernel"]
    if use_bias:
        m_matrix = m_matrix + weights["bias"]
    inputs_matrix = x @ weights["kernel"]
    m_s = np.split(m_matrix, 8, axis=1)
    i_s = np.split(inputs_matrix, 8, axis=1)
    layer1 = [
        sigmoid(i_s[0] + m_s[0]),
        relu(i_s[1] + m_s[1]),
        sigmoid(i_s[2] + m_s[2]),
        relu(i_s[3] * m_s[3]),
        np.tanh(i_s[4] + m_s[4]),
        sigmoid(i_s[5] + m_s[5]),
        np.tanh(i_s[6] + m_s[6]),
        sigmoid(i_s[7] + m_s[7]),
    ]
    l2_0 = np.tanh(layer1[0] * layer1[1])
    l2_1 = np.tanh(layer1[2] + layer1[3])
    l2_2 = np.tanh(layer1[4] * layer1[5])
    l2_3 = sigmoid(layer1[6] + layer1[7])
    l2_0 = np.tanh(l2_0 + c_prev)
    new_c = l2_0 * l2_1
    l3_1 = np.tanh(l2_2 + l2_3)
    new_m = np.tanh(new_c * l3_1)
    if num_proj is not None:
        new_m = new_m @ weights["projection_weights"]
    return new_m, (new_c, new_m)


def ugrnn_step(x: np.ndarray, state: np.ndarray, weights: Weights, forget_bias: float = 1.0) -> tuple:
    """``UGRNNCell.call`` with tanh: ``_Linear([x, h], 2U)``, split into (g, c)."""
    rnn_matrix = np.concatenate([x, state], 1) @ weights["kernel"] + weights["bias"]
    g_act, c_act = np.split(rnn_matrix, 2, axis=1)
    c = np.tanh(c_act)
    g = sigmoid(g_act + forget_bias)
    new_state = g * state + (1.0 - g) * c
    return new_state, new_state


def intersection_step(
    x: np.ndarray,
    state: np.ndarray,
    weights: Weights,
    num_units: int,
    forget_bias: float = 1.0,
    y_activation: Callable[[np.ndarray], np.ndarray] = relu,
) -> tuple:
    """``IntersectionRNNCell.call``: ``in_projection`` when ``x``'s depth is not ``num_units``,
    then ``_Linear([x, h], 4U)`` sliced (gh, h, gy, y)."""
    if x.shape[1] != num_units:
        x = x @ weights["in_projection/kernel"] + weights["in_projection/bias"]
    n = num_units
    rnn_matrix = np.concatenate([x, state], 1) @ weights["kernel"] + weights["bias"]
    gh_act = rnn_matrix[:, :n]
    h_act = rnn_matrix[:, n : 2 * n]
    gy_act = rnn_matrix[:, 2 * n : 3 * n]
    y_act = rnn_matrix[:, 3 * n : 4 * n]
    h = np.tanh(h_act)
    y = y_activation(y_act)
    gh = sigmoid(gh_act + forget_bias)
    gy = sigmoid(gy_act + forget_bias)
    new_state = gh * state + (1.0 - gh) * h
    new_y = gy * x + (1.0 - gy) * y
    return new_y, new_state


def indrnn_step(x: np.ndarray, state: np.ndarray, weights: Weights) -> tuple:
    """``IndRNNCell.call`` with tanh: ``act(x @ kernel_w + state * kernel_u + bias)``."""
    output = np.tanh(x @ weights["kernel_w"] + state * weights["kernel_u"] + weights["bias"])
    return output, output


def indygru_step(x: np.ndarray, state: np.ndarray, weights: Weights) -> tuple:
    """``IndyGRUCell.call`` with tanh."""
    gate_inputs = x @ weights["gates/kernel_w"] + np.tile(state, [1, 2]) * weights["gates/kernel_u"]
    value = sigmoid(gate_inputs + weights["gates/bias"])
    r, u = np.split(value, 2, axis=1)
    r_state = r * state
    candidate = x @ weights["candidate/kernel"] + r_state * weights["candidate/kernel_u"]
    c = np.tanh(candidate + weights["candidate/bias"])
    new_h = u * state + (1 - u) * c
    return new_h, new_h


def indylstm_step(x: np.ndarray, state: tuple, weights: Weights, forget_bias: float = 1.0) -> tuple:
    """``IndyLSTMCell.call`` with tanh: gates (i, j, f, o) of ``x @ kernel_w + tile(h, 4) * kernel_u``."""
    c, h = state
    gate_inputs = x @ weights["kernel_w"] + np.tile(h, [1, 4]) * weights["kernel_u"] + weights["bias"]
    i, j, f, o = np.split(gate_inputs, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    new_h = np.tanh(new_c) * sigmoid(o)
    return new_h, (new_c, new_h)


def unroll(
    step: Callable[[np.ndarray, object], tuple],
    inputs: np.ndarray,
    state: object,
    sequence_length: Sequence[int] | None = None,
) -> tuple[np.ndarray, object]:
    """``dynamic_rnn`` on batch-major ``inputs`` ``[B, T, D]``: outputs ``[B, T, out]``, zero at
    steps ``t >= length[b]``, where row ``b``'s state is carried through unchanged."""
    batch, steps = inputs.shape[:2]
    lengths = np.full(batch, steps) if sequence_length is None else np.asarray(sequence_length)
    outputs = []
    for t in range(steps):
        out, new_state = step(inputs[:, t], state)
        alive = (t < lengths)[:, None]
        outputs.append(np.where(alive, out, 0.0))
        state = _select(alive, new_state, state)
    return np.stack(outputs, 1), state


def _select(alive: np.ndarray, new: object, old: object) -> object:
    if isinstance(new, tuple):
        return tuple(_select(alive, n, o) for n, o in zip(new, old))
    return np.where(alive, new, old)
