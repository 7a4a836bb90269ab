"""The layers of a fused plan (``plan.py``): for each cell kind the kernels a layer runs on,
chosen per call (oneDNN, cuDNN, the compiled CPU loops, the Triton kernels, or the torch twins),
its state as ``[B, width]`` tensors, the wrappers' dropout and residual around it, and why a cell
cannot run fused (``*_reason``: ``None`` when it can)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell
from ..contrib.block_cells import GRUBlockCell, GRUBlockCellV2, LSTMBlockCell
from ..contrib.layer_norm_cells import GATE_SCOPES, STATE_SCOPE, LayerNormBasicLSTMCell, LayerNormLSTMCell
from ..state import LSTMStateTuple
from ..wrappers import DropoutWrapper, ResidualWrapper
from .activation_kinds import ACTIVATION_KINDS, GATE_KINDS, activation_kind, gate_kind, gate_options
from .basic_rnn import RNNSequence
from .cpu.native import kernels
from .gru import GRUSequence
from .layer_norm_lstm import LayerNormLSTMConfig, LayerNormLSTMSequence
from .lstm import LSTMConfig, LSTMSequence
from .lstm_inference import lstm_layer_inference
from .packing import Packing
from .precision import HALF_DTYPES, half_supported
from .torch_rnn import TORCH_RNN_FUNCTIONS, is_torch_lstm_math, torch_gru_layer, torch_lstm_layer, torch_rnn_layer
from .triton.triton_support import persistent_preferred, persistent_rnn_fits


def _cudnn_on(device: torch.device) -> bool:
    """True when torch's RNNs on ``device`` run cuDNN (float32, float64, float16, bfloat16)."""
    return device.type == "cuda" and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled


class Layer:
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


class LSTMLayer(Layer):
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


class GRULayer(Layer):
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


class RNNLayer(Layer):
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


class LayerNormLSTMLayer(LSTMLayer):
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


def layer_norm_layer(cell: Any, wrappers: tuple[Any, ...]) -> Layer | str:
    """The layer of a layer-norm cell: without layer norm (and without dropout) it is
    ``LSTMCell``'s math, and runs as one."""
    if cell.layer_norm:
        return LayerNormLSTMLayer(cell, wrappers)
    if cell.dropping():
        return f"{cell.name} with dropout_keep_prob < 1 and layer_norm=False"
    return LSTMLayer(cell, wrappers)


def _zero_bias(kernel: Tensor) -> Tensor:
    """The bias of a ``use_bias=False`` cell for the fused layers: zeros, no parameter (the
    gradient the layer computes for it is dropped)."""
    return kernel.new_zeros(kernel.shape[1])


LAYERS: dict[type, Callable[[Any, tuple[Any, ...]], Layer | str]] = {
    BasicLSTMCell: LSTMLayer,
    LSTMCell: LSTMLayer,
    GRUCell: GRULayer,
    BasicRNNCell: RNNLayer,
    LayerNormBasicLSTMCell: layer_norm_layer,
    LayerNormLSTMCell: layer_norm_layer,
    LSTMBlockCell: LSTMLayer,
    GRUBlockCellV2: GRULayer,
    GRUBlockCell: GRULayer,
}


def drops(wrapper: DropoutWrapper, kind: str) -> bool:
    """True when the wrapper drops its ``kind`` (input, output, state) values in this mode."""
    return wrapper.training and getattr(wrapper, f"{kind}_keep_prob") < 1.0


def _dropout(wrapper: DropoutWrapper, kind: str, values: Tensor) -> Tensor:
    """The wrapper's input or output dropout on packed rows: a fresh mask for every element of
    every step, drawn as the wrapper draws it (its seed and generator)."""
    if not drops(wrapper, kind):
        return values
    keep = getattr(wrapper, f"{kind}_keep_prob")
    return values * wrapper._mask(kind, 0, values, keep)
