"""numpy float64 transcriptions of TensorFlow 1.15's weight-owning ``tf.contrib.rnn`` wrappers.

Written from ``tensorflow/contrib/rnn/python/ops/core_rnn_cell.py`` (``EmbeddingWrapper.call``,
``InputProjectionWrapper.call``, ``OutputProjectionWrapper.call``, ``_Linear``) and
``tensorflow/contrib/rnn/python/ops/rnn_cell.py`` (``AttentionCellWrapper.call`` and
``_attention``, ``HighwayWrapper.__call__`` and ``_highway``); the wrapped cells from
``tensorflow/python/ops/rnn_cell_impl.py`` (``BasicLSTMCell.call``, ``GRUCell.call``,
``MultiRNNCell.call``).

Weights are read by their full TF names from ``variables`` (``{name: ndarray}``), so the same
dict checks the port's names too. A step is ``step(x, state) -> (output, new_state)``; states
are numpy arrays or tuples of them (an LSTM's ``(c, h)``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

Variables = Mapping[str, np.ndarray]
Step = Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    """``nn_ops.softmax`` over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def linear(variables: Variables, scope: str, args: list[np.ndarray]) -> np.ndarray:
    """``_Linear(args, ...)``: ``concat(args, 1) @ <scope>/kernel + <scope>/bias``."""
    return np.concatenate(args, 1) @ variables[f"{scope}/kernel"] + variables[f"{scope}/bias"]


def flatten(state: Any) -> list[np.ndarray]:
    """``nest.flatten``: the leaves depth first."""
    if isinstance(state, tuple):
        return [leaf for item in state for leaf in flatten(item)]
    return [state]


# ---------------------------------------------------------------------------------------------
# the wrapped cells (rnn_cell_impl.py)


def basic_lstm_step(variables: Variables, scope: str, forget_bias: float = 1.0) -> Step:
    """``BasicLSTMCell.call``: gates ``(i, j, f, o)`` of ``[x, h] @ kernel + bias``."""

    def step(x: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, Any]:
        c, h = state
        i, j, f, o = np.split(linear(variables, scope, [x, h]), 4, axis=1)
        new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
        new_h = np.tanh(new_c) * sigmoid(o)
        return new_h, (new_c, new_h)

    return step


def gru_step(variables: Variables, scope: str) -> Step:
    """``GRUCell.call``: ``r, u`` from ``gates``, the reset applied before the candidate matmul."""

    def step(x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, u = np.split(sigmoid(linear(variables, f"{scope}/gates", [x, h])), 2, axis=1)
        c = np.tanh(linear(variables, f"{scope}/candidate", [x, r * h]))
        new_h = u * h + (1 - u) * c
        return new_h, new_h

    return step


def multi_step(cells: list[Step]) -> Step:
    """``MultiRNNCell.call`` (``state_is_tuple=True``): each layer on the one below's output."""

    def step(x: np.ndarray, state: tuple[Any, ...]) -> tuple[np.ndarray, tuple[Any, ...]]:
        new_states = []
        for cell, layer_state in zip(cells, state):
            x, new_state = cell(x, layer_state)
            new_states.append(new_state)
        return x, tuple(new_states)

    return step


# ---------------------------------------------------------------------------------------------
# core_rnn_cell.py


def embedding_wrapper_step(variables: Variables, scope: str, cell: Step) -> Step:
    """``EmbeddingWrapper.call``: ``embedding_lookup(embedding, reshape(ids, [-1]))``, then the cell."""

    def step(ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        embedded = variables[f"{scope}/embedding"][np.reshape(ids, [-1])]
        return cell(embedded, state)

    return step


def input_projection_step(
    variables: Variables, scope: str, cell: Step, activation: Callable[[np.ndarray], np.ndarray] | None = None
) -> Step:
    """``InputProjectionWrapper.call``: ``_Linear(inputs, num_proj, True)``, the optional
    activation, then the cell."""

    def step(x: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        projected = linear(variables, scope, [x])
        if activation is not None:
            projected = activation(projected)
        return cell(projected, state)

    return step


def output_projection_step(
    variables: Variables, scope: str, cell: Step, activation: Callable[[np.ndarray], np.ndarray] | None = None
) -> Step:
    """``OutputProjectionWrapper.call``: the cell, then ``_Linear(output, output_size, True)``
    and the optional activation; the state is the cell's."""

    def step(x: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        output, new_state = cell(x, state)
        projected = linear(variables, scope, [output])
        if activation is not None:
            projected = activation(projected)
        return projected, new_state

    return step


# ---------------------------------------------------------------------------------------------
# rnn_cell.py


def attention_cell_step(
    variables: Variables,
    scope: str,
    cell: Step,
    attn_length: int,
    attn_size: int,
    state_is_tuple: bool = True,
    cell_state_size: int | None = None,
) -> Step:
    """``AttentionCellWrapper.call``: state ``(cell_state, attns, attn_states)`` (or their
    concatenation, the cell's state one tensor of width ``cell_state_size``)."""

    def attention(query: np.ndarray, attn_states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # _attention: k is a [1, 1, A, V] conv2d filter on hidden [B, L, 1, A], stride 1, "SAME"
        k = variables[f"{scope}/attention/attn_w"]
        v = variables[f"{scope}/attention/attn_v"]
        hidden = np.reshape(attn_states, [-1, attn_length, 1, attn_size])
        hidden_features = np.einsum("blwa,av->blwv", hidden, k[0, 0])
        y = linear(variables, f"{scope}/attention", [query])
        y = np.reshape(y, [-1, 1, 1, y.shape[1]])
        s = np.sum(v * np.tanh(hidden_features + y), axis=(2, 3))
        a = softmax(s)
        d = np.sum(np.reshape(a, [-1, attn_length, 1, 1]) * hidden, axis=(1, 2))
        new_attns = np.reshape(d, [-1, attn_size])
        new_attn_states = attn_states[:, 1:, :]
        return new_attns, new_attn_states

    def step(x: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        if state_is_tuple:
            cell_state, attns, attn_states = state
        else:
            assert cell_state_size is not None
            cell_state = state[:, :cell_state_size]
            attns = state[:, cell_state_size : cell_state_size + attn_size]
            attn_states = state[:, cell_state_size + attn_size : cell_state_size + attn_size * (1 + attn_length)]
        attn_states = np.reshape(attn_states, [-1, attn_length, attn_size])
        projected = linear(variables, scope, [x, attns])
        cell_output, new_cell_state = cell(projected, cell_state)
        query = np.concatenate(flatten(new_cell_state), 1) if state_is_tuple else new_cell_state
        new_attns, new_attn_states = attention(query, attn_states)
        output = linear(variables, f"{scope}/attn_output_projection", [cell_output, new_attns])
        new_attn_states = np.concatenate([new_attn_states, output[:, None, :]], 1)
        new_attn_states = np.reshape(new_attn_states, [-1, attn_length * attn_size])
        new_state = (new_cell_state, new_attns, new_attn_states)
        if not state_is_tuple:
            new_state = np.concatenate(list(new_state), 1)
        return output, new_state

    return step


def highway_step(variables: Variables, scope: str, cell: Step, couple_carry_transform_gates: bool = True) -> Step:
    """``HighwayWrapper.__call__``: the cell, then ``inp * carry + out * transform`` with the
    weights directly in the enclosing ``scope`` (``<scope>/carry_w``, ...)."""

    def step(x: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        output, new_state = cell(x, state)
        carry = sigmoid(x @ variables[f"{scope}/carry_w"] + variables[f"{scope}/carry_b"])
        if couple_carry_transform_gates:
            transform = 1 - carry
        else:
            transform = sigmoid(x @ variables[f"{scope}/transform_w"] + variables[f"{scope}/transform_b"])
        return x * carry + output * transform, new_state

    return step


# ---------------------------------------------------------------------------------------------
# running


def unroll(step: Step, inputs: np.ndarray, state: Any) -> tuple[list[np.ndarray], Any]:
    """Step over ``inputs`` ``[B, T, ...]`` (batch-major): the T outputs and the final state."""
    outputs = []
    for t in range(inputs.shape[1]):
        output, state = step(inputs[:, t], state)
        outputs.append(output)
    return outputs, state
