"""Which cells the fused path runs, and how a whole stack runs on packed steps.

``make_plan(cell)`` recognises a cell tree (each layer's kernels: ``plan_layers.py``):
``BasicLSTMCell``/``LSTMCell`` (every option) and ``LSTMBlockCell`` (its clipping's gradient the
identity), the layer-norm LSTMs (CPU, float32 and float64; without layer norm they are
``LSTMCell``s), ``GRUCell`` (both forms; ``reset_after`` with tanh only), ``GRUBlockCell(V2)`` and
``BasicRNNCell``, each with an activation of ``activation_kinds.py`` (tanh, sigmoid, relu, relu6, elu, selu, softsign,
linear) and, for the LSTM and GRU cells, sigmoid gates and biases (the defaults; on the CPU in
float32 and float64 also ``gate_activation="hard_sigmoid"`` and ``use_bias=False``, except for
``reset_after=True`` GRUs, which run through ``torch.gru``), stacked in a ``MultiRNNCell``,
wrapped in ``ResidualWrapper`` (default residual) and ``DropoutWrapper`` (input and output
dropout with a fresh mask per step and element, as the wrapper draws them, here applied to
whole packed sequences; state dropout and variational masks feed back into the recurrence and
are left to the reference loop).
Anything else gets a reason string, and ``dynamic_rnn`` runs the reference loop (or, with
``backend="fused"``, raises with that reason).

A plan runs layer after layer over the whole sequence. That equals TF's step-by-step order:
layer ``l`` at step ``t`` depends only on layer ``l - 1`` at step ``t`` and on its own past;
and past a row's length its outputs are zero and its state carried, whichever order is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..state import flatten_state, map_state
from ..wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper, _add_residual
from .lstm_inference import inference_runs
from .packing import Packing, graph_zero, make_packing, pack, sort_rows, unpack, unsort_rows
from .plan_layers import LAYERS, Layer, LSTMLayer, drops


def _state_rows(state: Tensor) -> Tensor:
    """A layer's ``[B, width]`` state tensor as the step loops read it, by row pointer and row
    stride: rows of unit column stride that do not overlap. An expanded state (a learned initial
    state broadcast over the batch: row stride 0) or a transposed one is copied, under autograd."""
    rows, width = state.shape
    if state.stride(1) == 1 and (rows <= 1 or state.stride(0) >= width):
        return state
    return state.contiguous()


# Why FusedPlan.run is not traced by torch.compile. The fused layers are autograd Functions
# around opaque calls (the compiled C++ step loops, oneDNN's LSTM, cuDNN, Triton kernels) on a
# Packing of host-side Python ints; traced, AOTAutograd and inductor fail on some of them (an
# internal assertion on saved tensors, ``aten.mkldnn_rnn_layer`` without a fake kernel). Run
# eagerly, each one is exactly the tested eager computation, on every device and layer kind.
_COMPILE_BREAK = "rnnkit's fused RNN layers run eagerly under torch.compile (opaque kernels, hand-written backward)"


@dataclass
class FusedPlan:
    """A recognised cell tree: its layers, and how its state splits into theirs."""

    layers: list[Layer]
    split_state: Callable[[Any], list[Any]]
    merge_state: Callable[[list[Any]], Any]

    def half_reason(self, device: torch.device) -> str | None:
        """Why bfloat16/float16 inputs cannot run on this plan (None: they can)."""
        return self._first_reason(lambda layer: layer.half_reason(device))

    def options_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why a layer's gate options cannot run on ``device`` in ``dtype`` (None: they can)."""
        return self._first_reason(lambda layer: layer.options_reason(device, dtype))

    def _first_reason(self, reason_of: Callable[[Layer], str | None]) -> str | None:
        for i, layer in enumerate(self.layers):
            reason = reason_of(layer)
            if reason is not None:
                return reason if len(self.layers) == 1 else f"layer {i}: {reason}"
        return None

    @torch.compiler.disable(reason=_COMPILE_BREAK)
    def run(self, inputs: Tensor, lengths: Tensor | None, state: Any, time_major: bool) -> tuple[Tensor, Any]:
        """``inputs`` ``[T, B, D]`` (``[B, T, D]`` unless ``time_major``), ``lengths`` ``[B]`` or
        None, the checked initial state -> ``(outputs [T, B, out] or [B, T, out], final state)``.

        Under ``torch.compile`` this is a graph break: dynamo runs the fused layers eagerly,
        forward and backward (see ``_COMPILE_BREAK``); the code around it is compiled."""
        batch_size, num_steps = (inputs.shape[1], inputs.shape[0]) if time_major else inputs.shape[:2]
        packing = make_packing(num_steps, batch_size, lengths)
        states = self._inference_states(inputs, packing, state)
        if states is not None:
            return self._infer(inputs, states, time_major)
        running = packing.num_running
        data, finals = pack(inputs, packing, time_major), []
        depth = inputs.shape[2]
        for layer, layer_state in zip(self.layers, self.split_state(state)):
            layer.cell.ensure_built(depth, inputs.dtype)
            if layer.has_residual and layer.cell.output_size != depth:
                raise ValueError(
                    f"ResidualWrapper: Shapes {[batch_size, depth]} and {[batch_size, layer.cell.output_size]} "
                    "are incompatible (inputs vs the cell's outputs); the cell's output_size must equal the input depth"
                )
            tensors = [_state_rows(s) for s in layer.state_tensors(layer_state)]
            if running and running == batch_size:  # every row runs (the rows may be reordered)
                data, final = layer.run_wrapped(data, packing, [sort_rows(s, packing) for s in tensors])
                tensors = [unsort_rows(f, packing) for f in final]
            elif running:  # rows of length 0 keep their initial state
                sorted_state = [sort_rows(s, packing) for s in tensors]
                data, final = layer.run_wrapped(data, packing, [s[:running] for s in sorted_state])
                final = [torch.cat([f, s[running:]]) for f, s in zip(final, sorted_state)]
                tensors = [unsort_rows(f, packing) for f in final]
            finals.append(layer.state_from(tensors))
            depth = layer.cell.output_size
        if not running:  # no step runs: zeros, and the state as it came, connected to the graph
            shape = (num_steps, batch_size, depth) if time_major else (batch_size, num_steps, depth)
            weights = [w for layer in self.layers for w in layer.cell.parameters()]
            zero = graph_zero([inputs, *weights, *flatten_state(state)])
            outputs = inputs.new_zeros(shape)
            final_state = self.merge_state(finals)
            if zero is not None:
                outputs = outputs + zero
                if not batch_size:  # empty: adding the zero changes no value (not even -0.0 to 0.0)
                    final_state = map_state(lambda s: s + zero, final_state)
            return outputs, final_state
        return unpack(data, packing, time_major), self.merge_state(finals)


    def _inference_states(self, inputs: Tensor, packing: Packing, state: Any) -> list[list[Tensor]] | None:
        """Each layer's ``[h, c]`` where :meth:`_infer` runs this call (``lstm_inference.py``:
        LSTM layers without wrappers, every row running every step, no gradient to follow), else
        None. Builds the layers' weights (the call builds them anyway)."""
        if not all(type(layer) is LSTMLayer and not layer.wrappers for layer in self.layers):
            return None
        full = packing.flat_index is None and packing.num_running == packing.batch_size > 0
        if not full or inputs.device.type != "cpu":
            return None
        depth = inputs.shape[2]
        for layer in self.layers:
            layer.cell.ensure_built(depth, inputs.dtype)
            depth = layer.cell.output_size
        layer_states = zip(self.layers, self.split_state(state))
        states = [[_state_rows(t) for t in layer.state_tensors(s)] for layer, s in layer_states]
        return states if inference_runs([layer.cell for layer in self.layers], inputs, states) else None

    def _infer(self, inputs: Tensor, states: list[list[Tensor]], time_major: bool) -> tuple[Tensor, Any]:
        """The stack layer after layer through ``lstm_inference.cpp``: the first reads the
        inputs as they are, the last writes the outputs in the caller's layout, the layers
        between hand over ``[T, B, U]`` tensors."""
        x = inputs if time_major else inputs.transpose(0, 1)  # [T, B, D] views
        x = x if x.stride(-1) == 1 else x.contiguous()
        steps, batch = x.shape[:2]
        finals = []
        for i, (layer, tensors) in enumerate(zip(self.layers, states)):
            assert isinstance(layer, LSTMLayer), "checked by _inference_states"
            units = layer.cell.num_units
            last = i == len(self.layers) - 1
            if last and not time_major:
                out = inputs.new_empty(batch, steps, units).transpose(0, 1)
            else:
                out = inputs.new_empty(steps, batch, units)
            finals.append(layer.state_from(layer.infer(x, tensors, out)))
            x = out
        return (x if time_major else x.transpose(0, 1)), self.merge_state(finals)


def make_plan(cell: Any) -> FusedPlan | str:
    """The fused plan for ``cell``, or why it has none."""
    if isinstance(cell, MultiRNNCell):
        layers = []
        for i, layer_cell in enumerate(cell.layers):
            layer = _layer_for(layer_cell)
            if isinstance(layer, str):
                return f"layer {i}: {layer}"
            layers.append(layer)
        if cell.state_is_tuple:
            return FusedPlan(layers, list, tuple)
        widths = [c.state_size for c in cell.layers]
        return FusedPlan(layers, lambda s: list(s.split(widths, 1)), lambda parts: torch.cat(parts, 1))
    layer = _layer_for(cell)
    if isinstance(layer, str):
        return layer
    return FusedPlan([layer], lambda s: [s], lambda parts: parts[0])


def _layer_for(cell: Any, wrappers: tuple[Any, ...] = ()) -> Layer | str:
    if isinstance(cell, DropoutWrapper):
        if not drops(cell, "input") and not drops(cell, "output") and not drops(cell, "state"):
            return _layer_for(cell.cell, wrappers)  # eval() mode or keep probabilities of 1
        if drops(cell, "state"):
            return "DropoutWrapper with state dropout (it feeds back into the recurrence)"
        if cell.variational_recurrent:
            return "DropoutWrapper with variational_recurrent=True"
        return _layer_for(cell.cell, (*wrappers, cell))
    if isinstance(cell, ResidualWrapper):
        if cell.residual_fn is not _add_residual:
            return "ResidualWrapper with a custom residual_fn"
        return _layer_for(cell.cell, (*wrappers, cell))
    layer_type = LAYERS.get(type(cell))  # exact types: a subclass may change the step
    if layer_type is None:
        return f"{type(cell).__name__} has no fused implementation"
    layer = layer_type(cell, wrappers)
    if isinstance(layer, str):
        return layer
    reason = layer.activation_reason()
    return layer if reason is None else reason
