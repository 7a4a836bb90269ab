"""Which cells the fused path runs, and how a whole stack runs on packed steps.

``make_plan(cell)`` recognises a cell tree: ``BasicLSTMCell``/``LSTMCell`` (every option) and
``LSTMBlockCell`` (its clipping's gradient the identity), the layer-norm LSTMs (CPU, float32 and
float64; without layer norm they are ``LSTMCell``s), ``GRUCell`` (both forms; ``reset_after`` with
tanh only), ``GRUBlockCell(V2)`` and ``BasicRNNCell``, each with an
activation of ``activation_kinds.py`` (tanh, sigmoid, relu, relu6, elu, selu, softsign,
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

from ..cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell
from ..contrib.block_cells import GRUBlockCell, GRUBlockCellV2, LSTMBlockCell
from ..contrib.layer_norm_cells import GATE_SCOPES, STATE_SCOPE, LayerNormBasicLSTMCell, LayerNormLSTMCell
from ..state import LSTMStateTuple, flatten_state, map_state
from ..wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper, _add_residual
from .activation_kinds import ACTIVATION_KINDS, GATE_KINDS, activation_kind, gate_kind, gate_options
from .basic_rnn import RNNSequence
from .cpu.native import kernels
from .gru import GRUSequence
from .layer_norm_lstm import LayerNormLSTMConfig, LayerNormLSTMSequence
from .lstm import LSTMConfig, LSTMSequence
from .lstm_inference import inference_runs, lstm_layer_inference
from .packing import Packing, graph_zero, make_packing, pack, sort_rows, unpack, unsort_rows
from .precision import HALF_DTYPES, half_supported
from .torch_rnn import TORCH_RNN_FUNCTIONS, is_torch_lstm_math, torch_gru_layer, torch_lstm_layer, torch_rnn_layer
from .triton.triton_support import persistent_preferred, persistent_rnn_fits


def _cudnn_on(device: torch.device) -> bool:
    """True when torch's RNNs on ``device`` run cuDNN (float32, float64, float16, bfloat16)."""
    return device.type == "cuda" and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled


class _Layer:
    """One recurrent layer on packed rows, inside its wrappers (outermost first); its state as a
    list of ``[B, width]`` tensors."""

    def __init__(self, cell: Any, wrappers: tuple[Any, ...]) -> None:
        self.cell = cell
        self.wrappers = wrappers

    @property
    def has_residual(self) -> bool:
        return any(isinstance(w, ResidualWrapper) for w in self.wrappers)

    def run_wrapped(self, data: Tensor, packing: Packing, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """:meth:`run` with the wrappers' dropout and residual applied around it."""
        return self._through(self.wrappers, data, packing, state)

    def _through(
        self, wrappers: tuple[Any, ...], data: Tensor, packing: Packing, state: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        if not wrappers:
            return self.run(data, packing, state)
        outer, inner = wrappers[0], wrappers[1:]
        if isinstance(outer, ResidualWrapper):
            out, final = self._through(inner, data, packing, state)
            return out + data, final
        out, final = self._through(inner, _dropout(outer, "input", data), packing, state)
        return _dropout(outer, "output", out), final

    def state_tensors(self, state: Any) -> list[Tensor]:
        return [state]

    def state_from(self, tensors: list[Tensor]) -> Any:
        return tensors[0]

    def run(self, data: Tensor, packing: Packing, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError

    @property
    def activation(self) -> str:
        """The kind of the cell's activation (``activation_kinds.py``)."""
        kind = activation_kind(self.cell.activation)
        assert kind is not None, "checked by activation_reason"
        return kind

    @property
    def gate(self) -> str:
        """The kind of the cell's gate activation (``activation_kinds.GATE_KINDS``)."""
        kind = gate_kind(self.cell)
        assert kind is not None, "checked by activation_reason"
        return kind

    def activation_reason(self) -> str | None:
        """Why the fused layer cannot run the cell's activation or gate activation on any device
        (None: it can; :meth:`options_reason` says where it runs the gate options)."""
        if gate_kind(self.cell) is None:
            gate = self.cell.gate_activation
            return (f"{self.cell.name} uses gate_activation {getattr(gate, '__name__', gate)!r}; the fused path "
                    f"implements {' and '.join(GATE_KINDS)} gates")
        if activation_kind(self.cell.activation) is None:
            return (f"{self.cell.name} uses activation {self.cell.activation!r}; the fused path implements "
                    f"{', '.join(sorted(set(ACTIVATION_KINDS.values())))}")
        return None

    def options_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why the cell's gate options (a gate activation other than sigmoid, ``use_bias=False``)
        cannot run on ``device`` in ``dtype`` (None: it has none, or they can). Only the CPU step
        loops (compiled, or their torch twins) in float32 and float64 run them; oneDNN, cuDNN
        and the Triton kernels compute sigmoid gates and add a bias."""
        options = gate_options(self.cell)
        if not options or (device.type == "cpu" and dtype not in HALF_DTYPES):
            return None
        return (f"{self.cell.name} uses {' and '.join(options)}; the fused path computes sigmoid gates with "
                f"a bias on {device.type} in {dtype} (these cells run on the reference loop; on the CPU in float32 "
                "and float64 fused)")

    def half_reason(self, device: torch.device) -> str | None:
        """Why bfloat16/float16 inputs cannot run here (None: they can)."""
        return f"{self.cell.name} in half precision (fused: float32 and float64)"


class _LSTMLayer(_Layer):
    def state_tensors(self, state: Any) -> list[Tensor]:  # [h, c]
        if self.cell.state_is_tuple:
            return [state[1], state[0]]
        units = self.cell.num_units
        return [state[:, units:], state[:, :units]]

    def state_from(self, tensors: list[Tensor]) -> Any:
        h, c = tensors
        return LSTMStateTuple(c, h) if self.cell.state_is_tuple else torch.cat([c, h], 1)

    def options_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type == "cuda" and isinstance(self.cell, LSTMBlockCell) and self.cell.cell_clip is not None:
            # the Triton kernels' backward without the clip mask has not run on a GPU yet
            return (f"{self.cell.name}: LSTMBlockCell's cell clipping (its gradient passes through the clip) runs "
                    "fused on the CPU only for now")
        return super().options_reason(device, dtype)

    def half_reason(self, device: torch.device) -> str | None:
        cell = self.cell
        if _cudnn_on(device) and is_torch_lstm_math(cell, projection=True):
            return None  # cuDNN
        if half_supported(device):
            return None  # the persistent kernel or the Triton step loop
        return f"{cell.name} in half precision: the fused LSTM runs it on CUDA (cuDNN or Triton's kernels)"

    def run(self, data: Tensor, packing: Packing, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        cell = self.cell
        if self._through_torch(cell, data, packing):
            out, h, c = torch_lstm_layer(data, packing, state[0], state[1], cell)
            return out, [h, c]
        config = LSTMConfig(cell.num_units, cell.forget_bias, cell.cell_clip, cell.proj_clip, self.activation,
                            self.gate, clip_gradient=not isinstance(cell, LSTMBlockCell))
        peepholes = (cell.w_i_diag, cell.w_f_diag, cell.w_o_diag) if cell.use_peepholes else (None, None, None)
        projection = cell.projection["kernel"] if cell.num_proj is not None else None
        bias = cell.bias if cell.use_bias else _zero_bias(cell.kernel)
        h0, c0 = state
        out, h, c = LSTMSequence.apply(data, h0, c0, cell.kernel, bias, *peepholes, projection, config, packing,
                                       torch.is_grad_enabled())
        return out, [h, c]

    def infer(self, x: Tensor, state: list[Tensor], out: Tensor) -> list[Tensor]:
        """:meth:`run` without a backward to follow (``lstm_inference.py``), on ``x`` ``[T, B, D]``
        into ``out`` ``[T, B, U]``, every row running every step; returns the final ``[h, c]``."""
        return list(lstm_layer_inference(self.cell, x, state[0], state[1], out, self.activation, self.gate))

    @staticmethod
    def _through_torch(cell: Any, data: Tensor, packing: Packing) -> bool:
        """PyTorch's own LSTM where it is exact and fastest: cuDNN on CUDA (with a projection
        too) except where the persistent kernel is faster (small batches, at most 256 units);
        on the CPU oneDNN only without the compiled step loops (which measured as fast or faster
        at every shape from B1 H32 to B128 H512 and B64 H1024, forward and backward: 0.84-1.19x
        torch.nn.LSTM where rnnkit's oneDNN path took 0.98-1.47x, its weights converted per call),
        then when every row runs every step, and with variable lengths for inference only (one
        call per run of equal batch sizes measured slower than LSTMSequence's torch twins in
        training), never under CPU autocast (oneDNN has no bfloat16 LSTM on CPUs without bfloat16
        support: ``nn.LSTM`` itself fails there). Never for gate options (``is_torch_lstm_math``)."""
        if _cudnn_on(data.device):
            batch = packing.num_running
            faster = cell.num_proj is None and persistent_preferred(data.device, data.dtype, batch, cell.num_units)
            return is_torch_lstm_math(cell, projection=True) and not faster
        use_torch = kernels() is None and (packing.flat_index is None or not torch.is_grad_enabled())
        autocast = torch.is_autocast_enabled("cpu")
        return data.device.type == "cpu" and use_torch and not autocast and is_torch_lstm_math(cell)


class _GRULayer(_Layer):
    def activation_reason(self) -> str | None:
        if self.cell.reset_after and activation_kind(self.cell.activation) != "tanh":
            return (f"{self.cell.name}: GRUCell(reset_after=True) runs fused through torch.gru, with tanh only; "
                    f"it uses {self.cell.activation!r}")
        options = gate_options(self.cell)
        if self.cell.reset_after and options:
            return (f"{self.cell.name} uses {' and '.join(options)}; GRUCell(reset_after=True) runs fused through "
                    "torch.gru, which computes sigmoid gates with a bias (these cells run on the reference loop)")
        return super().activation_reason()

    def half_reason(self, device: torch.device) -> str | None:
        if _cudnn_on(device) and self.cell.reset_after:
            return None  # cuDNN
        if not self.cell.reset_after and half_supported(device):
            return None  # the persistent kernel or the Triton step loop
        return (f"{self.cell.name} in half precision: the fused GRU runs it on CUDA (cuDNN for reset_after=True, "
                "else Triton's kernels)")

    def run(self, data: Tensor, packing: Packing, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if self.cell.reset_after:  # torch.nn.GRU's math: cuDNN on CUDA, ATen's loop on the CPU
            out, h = torch_gru_layer(data, packing, state[0], self.cell)
            return out, [h]
        cell = self.cell
        gates, candidate = cell.gates, cell.candidate
        biases = ((gates["bias"], candidate["bias"]) if cell.use_bias
                  else (_zero_bias(gates["kernel"]), _zero_bias(candidate["kernel"])))
        out, h = GRUSequence.apply(
            data, state[0], gates["kernel"], biases[0], candidate["kernel"], biases[1], packing,
            self.activation, torch.is_grad_enabled(), self.gate,
        )
        return out, [h]


class _RNNLayer(_Layer):
    def half_reason(self, device: torch.device) -> str | None:
        if device.type == "cuda" or half_supported(device):
            return None  # cuDNN (tanh, relu), Triton's kernels, or the torch step loop, all in half
        return f"{self.cell.name} in half precision: the fused BasicRNNCell runs it on CUDA"

    def run(self, data: Tensor, packing: Packing, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if self._through_cudnn(data, packing):
            out, h = torch_rnn_layer(data, packing, state[0], self.cell, self.activation)
        else:
            out, h = RNNSequence.apply(data, state[0], self.cell.kernel, self.cell.bias, packing, self.activation)
        return out, [h]

    def _through_cudnn(self, data: Tensor, packing: Packing) -> bool:
        """cuDNN for the activations it has (tanh, relu), except where the persistent kernel is
        preferred (as for plain LSTMs: small batches, at most 256 units)."""
        if not (_cudnn_on(data.device) and self.activation in TORCH_RNN_FUNCTIONS):
            return False
        batch, units = packing.num_running, self.cell.num_units
        preferred = persistent_preferred(data.device, data.dtype, batch, units)
        return not (preferred and persistent_rnn_fits(data.device, batch, units))


class _LayerNormLSTMLayer(_LSTMLayer):
    """``LayerNormBasicLSTMCell`` and ``LayerNormLSTMCell`` with layer norm: the CPU step loops
    of ``layer_norm_lstm.py`` in float32 and float64 (no CUDA kernel: elsewhere the reference
    loop), with the cell's candidate dropout drawn for all steps before the loop."""

    def activation_reason(self) -> str | None:
        if activation_kind(self.cell.activation) is None:
            return (f"{self.cell.name} uses activation {self.cell.activation!r}; the fused path implements "
                    f"{', '.join(sorted(set(ACTIVATION_KINDS.values())))}")
        return None

    def options_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type == "cpu" and dtype in (torch.float32, torch.float64):
            return None
        return (f"{self.cell.name} (layer norm) runs fused on the CPU in float32 and float64 only, got {dtype} on "
                f"{device.type} (it runs on the reference loop there)")

    def half_reason(self, device: torch.device) -> str | None:
        return f"{self.cell.name} (layer norm) in half precision (fused: CPU float32 and float64)"

    def run(self, data: Tensor, packing: Packing, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        cell = self.cell
        config = LayerNormLSTMConfig(cell.num_units, cell.forget_bias, cell.cell_clip, cell.proj_clip, self.activation)
        norms = [cell.norm_weights(scope) for scope in (*GATE_SCOPES, STATE_SCOPE)]
        gains, shifts = torch.stack([g for g, _ in norms]), torch.stack([b for _, b in norms])
        peepholes = (cell.w_i_diag, cell.w_f_diag, cell.w_o_diag) if cell.use_peepholes else (None, None, None)
        projection = cell.projection["kernel"] if cell.num_proj is not None else None
        drop = cell.dropout_mask(data.new_empty(data.shape[0], cell.num_units)) if cell.dropping() else None
        h0, c0 = state
        out, h, c = LayerNormLSTMSequence.apply(data, h0, c0, cell.kernel, gains, shifts, *peepholes, projection, drop,
                                                config, packing, torch.is_grad_enabled())
        return out, [h, c]


def _layer_norm_layer(cell: Any, wrappers: tuple[Any, ...]) -> _Layer | str:
    """The layer of a layer-norm cell: without layer norm (and without dropout) it is
    ``LSTMCell``'s math, and runs as one."""
    if cell.layer_norm:
        return _LayerNormLSTMLayer(cell, wrappers)
    if cell.dropping():
        return f"{cell.name} with dropout_keep_prob < 1 and layer_norm=False"
    return _LSTMLayer(cell, wrappers)


def _state_rows(state: Tensor) -> Tensor:
    """A layer's ``[B, width]`` state tensor as the step loops read it, by row pointer and row
    stride: rows of unit column stride that do not overlap. An expanded state (a learned initial
    state broadcast over the batch: row stride 0) or a transposed one is copied, under autograd."""
    rows, width = state.shape
    if state.stride(1) == 1 and (rows <= 1 or state.stride(0) >= width):
        return state
    return state.contiguous()


def _zero_bias(kernel: Tensor) -> Tensor:
    """The bias of a ``use_bias=False`` cell for the fused layers: zeros, no parameter (the
    gradient the layer computes for it is dropped)."""
    return kernel.new_zeros(kernel.shape[1])


_LAYERS: dict[type, Callable[[Any, tuple[Any, ...]], _Layer | str]] = {
    BasicLSTMCell: _LSTMLayer,
    LSTMCell: _LSTMLayer,
    GRUCell: _GRULayer,
    BasicRNNCell: _RNNLayer,
    LayerNormBasicLSTMCell: _layer_norm_layer,
    LayerNormLSTMCell: _layer_norm_layer,
    LSTMBlockCell: _LSTMLayer,
    GRUBlockCellV2: _GRULayer,
    GRUBlockCell: _GRULayer,
}


# Why FusedPlan.run is not traced by torch.compile. The fused layers are autograd Functions
# around opaque calls (the compiled C++ step loops, oneDNN's LSTM, cuDNN, Triton kernels) on a
# Packing of host-side Python ints; traced, AOTAutograd and inductor fail on some of them (an
# internal assertion on saved tensors, ``aten.mkldnn_rnn_layer`` without a fake kernel). Run
# eagerly, each one is exactly the tested eager computation, on every device and layer kind.
_COMPILE_BREAK = "rnnkit's fused RNN layers run eagerly under torch.compile (opaque kernels, hand-written backward)"


@dataclass
class FusedPlan:
    """A recognised cell tree: its layers, and how its state splits into theirs."""

    layers: list[_Layer]
    split_state: Callable[[Any], list[Any]]
    merge_state: Callable[[list[Any]], Any]

    def half_reason(self, device: torch.device) -> str | None:
        """Why bfloat16/float16 inputs cannot run on this plan (None: they can)."""
        return self._first_reason(lambda layer: layer.half_reason(device))

    def options_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why a layer's gate options cannot run on ``device`` in ``dtype`` (None: they can)."""
        return self._first_reason(lambda layer: layer.options_reason(device, dtype))

    def _first_reason(self, reason_of: Callable[[_Layer], str | None]) -> str | None:
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
        if not all(type(layer) is _LSTMLayer and not layer.wrappers for layer in self.layers):
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
            assert isinstance(layer, _LSTMLayer), "checked by _inference_states"
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


def _layer_for(cell: Any, wrappers: tuple[Any, ...] = ()) -> _Layer | str:
    if isinstance(cell, DropoutWrapper):
        if not _drops(cell, "input") and not _drops(cell, "output") and not _drops(cell, "state"):
            return _layer_for(cell.cell, wrappers)  # eval() mode or keep probabilities of 1
        if _drops(cell, "state"):
            return "DropoutWrapper with state dropout (it feeds back into the recurrence)"
        if cell.variational_recurrent:
            return "DropoutWrapper with variational_recurrent=True"
        return _layer_for(cell.cell, (*wrappers, cell))
    if isinstance(cell, ResidualWrapper):
        if cell.residual_fn is not _add_residual:
            return "ResidualWrapper with a custom residual_fn"
        return _layer_for(cell.cell, (*wrappers, cell))
    layer_type = _LAYERS.get(type(cell))  # exact types: a subclass may change the step
    if layer_type is None:
        return f"{type(cell).__name__} has no fused implementation"
    layer = layer_type(cell, wrappers)
    if isinstance(layer, str):
        return layer
    reason = layer.activation_reason()
    return layer if reason is None else reason


def _drops(wrapper: DropoutWrapper, kind: str) -> bool:
    return wrapper.training and getattr(wrapper, f"{kind}_keep_prob") < 1.0


def _dropout(wrapper: DropoutWrapper, kind: str, values: Tensor) -> Tensor:
    """The wrapper's input or output dropout on packed rows: a fresh mask for every element of
    every step, drawn as the wrapper draws it (its seed and generator)."""
    if not _drops(wrapper, kind):
        return values
    keep = getattr(wrapper, f"{kind}_keep_prob")
    return values * wrapper._mask(kind, 0, values, keep)
