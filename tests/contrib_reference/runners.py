"""numpy float64 transcriptions of TensorFlow 1.15's runners ported in ``rnnkit.raw_rnn``,
``rnnkit.state_saving_rnn`` and ``rnnkit.contrib.rnn_runners``, with the cell steps they are
tested on:

* ``tensorflow/python/ops/rnn_cell_impl.py``: ``BasicLSTMCell.call`` (gates ``i, j, f, o``,
  ``forget_bias`` added to ``f``), ``GRUCell.call`` (reset gate before the candidate matmul);
* ``tensorflow/python/ops/rnn.py``: ``dynamic_rnn``/``static_rnn`` with ``sequence_length``
  (``_rnn_step``: zero outputs and the state copied through at ``t >= length``),
  ``bidirectional_dynamic_rnn`` (``reverse_sequence`` within each length), ``raw_rnn`` (its
  ``while_loop`` body) and ``static_state_saving_rnn``;
* ``tensorflow/contrib/rnn/python/ops/rnn.py``: ``stack_bidirectional_dynamic_rnn`` and
  ``stack_bidirectional_rnn`` (each layer's fw and bw outputs concatenated on the depth axis
  as the next layer's inputs).

Everything is time-major (``[T, B, D]``). A cell is a function ``step(params, x, state) ->
(output, new_state)`` reading its weights from ``params`` by TF name; states are arrays or
tuples of arrays (an LSTM's is ``(c, h)``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

Params = Mapping[str, np.ndarray]
Step = Callable[[Params, np.ndarray, Any], tuple[np.ndarray, Any]]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def basic_lstm(scope: str, forget_bias: float = 1.0) -> Step:
    """``BasicLSTMCell`` (or ``LSTMCell`` without options) with weights ``<scope>/kernel``
    ``[D+U, 4U]`` and ``<scope>/bias`` ``[4U]``; state ``(c, h)``."""

    def step(params: Params, x: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        c, h = state
        z = np.concatenate([x, h], 1) @ params[f"{scope}/kernel"] + params[f"{scope}/bias"]
        i, j, f, o = np.split(z, 4, axis=1)
        new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
        new_h = np.tanh(new_c) * sigmoid(o)
        return new_h, (new_c, new_h)

    return step


def gru(scope: str) -> Step:
    """``GRUCell``: ``<scope>/gates/{kernel,bias}`` (r, u) and ``<scope>/candidate/{kernel,bias}``."""

    def step(params: Params, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gates = sigmoid(np.concatenate([x, h], 1) @ params[f"{scope}/gates/kernel"] + params[f"{scope}/gates/bias"])
        r, u = np.split(gates, 2, axis=1)
        candidate = np.concatenate([x, r * h], 1) @ params[f"{scope}/candidate/kernel"]
        c = np.tanh(candidate + params[f"{scope}/candidate/bias"])
        new_h = u * h + (1 - u) * c
        return new_h, new_h

    return step


def map_nested(fn: Callable[..., Any], *structures: Any) -> Any:
    """``fn`` leaf by leaf over tuples/lists of arrays of the same structure."""
    first = structures[0]
    if isinstance(first, (tuple, list)):
        return type(first)(map_nested(fn, *items) for items in zip(*structures))
    return fn(*structures)


def flatten(structure: Any) -> list[Any]:
    if isinstance(structure, (tuple, list)):
        return [leaf for item in structure for leaf in flatten(item)]
    return [structure]


def _rows(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape(-1, *([1] * (like.ndim - 1)))


def rnn(
    step: Step, params: Params, inputs: np.ndarray, lengths: np.ndarray | None, state: Any
) -> tuple[np.ndarray, Any]:
    """``dynamic_rnn`` (time-major) and ``static_rnn``: outputs ``[T, B, U]`` zero at
    ``t >= lengths[b]``, the state copied through there; returns ``(outputs, final_state)``."""
    outputs = []
    for t in range(inputs.shape[0]):
        output, new_state = step(params, inputs[t], state)
        if lengths is not None:
            alive = t < lengths
            output = np.where(_rows(alive, output), output, 0.0)
            new_state = map_nested(lambda n, s: np.where(_rows(alive, n), n, s), new_state, state)
        outputs.append(output)
        state = new_state
    return np.stack(outputs), state


def reverse_sequence(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """TF's ``reverse_sequence`` on a time-major ``[T, B, ...]`` array (all of it without lengths)."""
    if lengths is None:
        return x[::-1].copy()
    out = x.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = x[:n, b][::-1]
    return out


def bidirectional_rnn(
    step_fw: Step,
    step_bw: Step,
    params: Params,
    inputs: np.ndarray,
    lengths: np.ndarray | None,
    state_fw: Any,
    state_bw: Any,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[Any, Any]]:
    """``bidirectional_dynamic_rnn`` (time-major): the bw cell reads each row reversed within its
    length; its outputs are reversed back."""
    out_fw, final_fw = rnn(step_fw, params, inputs, lengths, state_fw)
    out_bw, final_bw = rnn(step_bw, params, reverse_sequence(inputs, lengths), lengths, state_bw)
    return (out_fw, reverse_sequence(out_bw, lengths)), (final_fw, final_bw)


def stack_bidirectional_rnn(
    steps_fw: Sequence[Step],
    steps_bw: Sequence[Step],
    params: Params,
    inputs: np.ndarray,
    lengths: np.ndarray | None,
    states_fw: Sequence[Any],
    states_bw: Sequence[Any],
) -> tuple[np.ndarray, tuple[Any, ...], tuple[Any, ...]]:
    """``stack_bidirectional_dynamic_rnn`` / ``stack_bidirectional_rnn`` (time-major): layer
    ``i+1`` reads ``concat([out_fw_i, out_bw_i], depth)``; returns ``(outputs [T, B, U_fw + U_bw]
    of the last layer, final fw states per layer, final bw states per layer)``."""
    layer_input, finals_fw, finals_bw = inputs, [], []
    for step_fw, step_bw, state_fw, state_bw in zip(steps_fw, steps_bw, states_fw, states_bw):
        (out_fw, out_bw), (final_fw, final_bw) = bidirectional_rnn(
            step_fw, step_bw, params, layer_input, lengths, state_fw, state_bw
        )
        layer_input = np.concatenate([out_fw, out_bw], 2)
        finals_fw.append(final_fw)
        finals_bw.append(final_bw)
    return layer_input, tuple(finals_fw), tuple(finals_bw)


LoopFn = Callable[[int, Any, Any, Any], tuple[np.ndarray, Any, Any, Any, Any]]


def raw_rnn(step: Step, params: Params, loop_fn: LoopFn, output_size: Sequence[int]) -> tuple[Any, Any, Any]:
    """``raw_rnn``'s ``while_loop`` (rnn.py, ``body``): run the cell on every row, call
    ``loop_fn(t + 1, output, cell_state, loop_state)``, emit zeros and keep the old state for
    the rows finished BEFORE this step, then ``finished |= next_finished``; loop while some row
    is not finished. ``output_size`` is the flat ``cell.output_size`` used when the first call's
    emit structure is None (a flat tuple of the emit leaves' per-row shapes otherwise, taken from
    that first ``emit_output``). Returns ``(emitted, stacked [T, B, ...] per leaf with the emit
    structure, final_state, final_loop_state)``."""
    finished, current_input, state, emit_structure, init_loop_state = loop_fn(0, None, None, None)
    batch = flatten(current_input)[0].shape[0]
    if emit_structure is None:
        dtype = flatten(state)[0].dtype
        structure: Any = tuple(output_size) if len(output_size) > 1 else output_size[0]
        zero_emit = map_nested(lambda size: np.zeros((batch, size), dtype), structure)
    else:
        zero_emit = map_nested(lambda e: np.zeros((batch, *e.shape), e.dtype), emit_structure)
    loop_state, emitted, time = init_loop_state, [], 0
    while not finished.all():
        output, cell_state = step(params, current_input, state)
        next_finished, next_input, next_state, emit, next_loop_state = loop_fn(time + 1, output, cell_state, loop_state)
        if next_loop_state is not None:
            loop_state = next_loop_state
        emit = map_nested(lambda z, e: np.where(_rows(finished, e), z, e), zero_emit, emit)
        state = map_nested(lambda s, n: np.where(_rows(finished, n), s, n), state, next_state)
        emitted.append(emit)
        finished = finished | next_finished
        current_input, time = next_input, time + 1
    stacked = map_nested(lambda z, *es: np.stack(es) if es else np.zeros((0, *z.shape), z.dtype), zero_emit, *emitted)
    return stacked, state, (loop_state if init_loop_state is not None else None)


def static_state_saving_rnn(
    step: Step,
    params: Params,
    inputs: np.ndarray,
    saved: dict[str, np.ndarray],
    state_name: Any,
    lengths: np.ndarray | None,
    state_structure: Any,
) -> tuple[np.ndarray, Any]:
    """``static_state_saving_rnn``: the initial state from ``saved[name]`` per flat name (packed
    like ``state_structure``, a template with one leaf per name), ``static_rnn``, then every
    flat leaf of the final state saved under its name. Returns ``(outputs, final_state)``."""
    names = flatten(state_name)
    leaves = iter([saved[name] for name in names])
    initial = map_nested(lambda _: next(leaves), state_structure)
    outputs, final = rnn(step, params, inputs, lengths, initial)
    for name, leaf in zip(names, flatten(final)):
        saved[name] = leaf
    return outputs, final
