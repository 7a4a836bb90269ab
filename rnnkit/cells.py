"""The built-in cells: ``BasicRNNCell``, ``BasicLSTMCell``, ``LSTMCell``, ``GRUCell``.

Each is one step of TensorFlow 1.x's cell of the same name, with its weights under TF's names
and in TF's layout, so a TF checkpoint loads unchanged:

* the kernel multiplies ``concat([x, h], 1)``: its first ``D`` rows belong to the input;
* LSTM gate blocks are ``(i, j, f, o)`` (j is the candidate); ``forget_bias`` is added to
  ``f`` at every step and never stored;
* TF's GRU applies the reset gate to ``h`` BEFORE the candidate matmul (not cuDNN's form).

Constructor arguments keep TF's positional order; ``input_size=`` (build now instead of at the
first call) and ``device=`` are keyword-only additions, and so are two options of Keras' LSTM
and GRU that TF1's cells lack (for ``BasicLSTMCell``, ``LSTMCell`` and ``GRUCell``):

* ``gate_activation=`` (Keras' ``recurrent_activation``; default sigmoid, TF's math): the
  function of the gates, ``i``, ``f``, ``o`` of an LSTM and ``r``, ``u`` of a GRU, e.g.
  ``"hard_sigmoid"`` (Keras 3's, ``clip(x / 6 + 0.5, 0, 1)``);
* ``use_bias=False``: no bias variables at all (not in ``tf_variables``, ``state_dict`` or
  the optimizer's parameters), so a bias-free model stays bias-free when trained.

The fused path runs ``hard_sigmoid`` gates and ``use_bias=False`` on the CPU (float32 and
float64: its compiled step loops or their torch twins), except for ``GRUCell(reset_after=True)``
(fused through ``torch.gru``); on CUDA, in half precision, and for any other gate function these
cells run on the reference loop (``backend="fused"`` raises and says why).

``reuse`` is accepted and ignored: weights belong to the cell object, so calling one cell at
every step shares them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .activations import Activation, resolve_activation
from .cell_base import RNNCell
from .initializers import Initializer, constant, glorot_uniform_, resolve_initializer
from .state import LSTMStateTuple

__all__ = ["BasicLSTMCell", "BasicRNNCell", "GRUCell", "LSTMCell"]

zeros_ = constant(0.0)


def _check_units(value: Any, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argname} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{argname} must be >= 1, got {value}")
    return value


def _check_clip(value: Any, argname: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argname} must be a number or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{argname} must be >= 0, got {value}")
    return float(value)


def _gate_activation(activation: Activation) -> Any:
    """The gates' function: sigmoid unless given (``None`` is sigmoid too, not tanh)."""
    return torch.sigmoid if activation is None else resolve_activation(activation, "gate_activation")


def _check_number(value: Any, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argname} must be a number, got {type(value).__name__}")
    return float(value)


class _OneTensorStateCell(RNNCell):
    """A cell whose state and output are the same ``[B, num_units]`` tensor."""

    num_units: int

    @property
    def state_size(self) -> int:
        return self.num_units

    @property
    def output_size(self) -> int:
        return self.num_units


class BasicRNNCell(_OneTensorStateCell):
    """The plain RNN step ``h' = act([x, h] @ kernel + bias)``; output and state are ``h'``.

    Weights: ``kernel`` ``[D+U, U]`` (Glorot-uniform), ``bias`` ``[U]`` (zeros).
    """

    kernel: Tensor
    bias: Tensor

    def __init__(
        self,
        num_units: int,
        activation: Activation = None,
        reuse: bool | None = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        *,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = _check_units(num_units, "num_units")
        self.activation = resolve_activation(activation)
        self._add_variable("kernel", (self.num_units, self.num_units), glorot_uniform_, input_rows=True)
        self._add_variable("bias", (self.num_units,), zeros_)
        if input_size is not None:
            self.build(input_size)

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        output = self.activation(torch.cat([inputs, state], 1) @ self.kernel + self.bias)
        return output, output


class LSTMCell(RNNCell):
    """TF's full LSTM step, with optional peepholes, cell clipping and a projection.

    With ``H = num_proj or num_units`` and gate blocks ``(i, j, f, o)`` of width ``U``::

        z = [x, h] @ kernel + bias                              # kernel [D+H, 4U], bias [4U]
        c = sigmoid(f + forget_bias [+ w_f_diag * c_prev]) * c_prev
            + sigmoid(i [+ w_i_diag * c_prev]) * act(j)
        c = clip(c, -cell_clip, cell_clip)                      # if cell_clip is not None
        m = sigmoid(o [+ w_o_diag * c]) * act(c)                # the NEW (clipped) c

    (``sigmoid`` is ``gate_activation``, sigmoid by default; without ``use_bias`` no ``bias``.)
        m = clip(m @ projection/kernel, -proj_clip, proj_clip)  # if num_proj (clip if proj_clip)

    Returns ``(m, LSTMStateTuple(c, m))``, or ``(m, concat([c, m], 1))`` when
    ``state_is_tuple=False``.

    Weights, in TF's creation order: ``kernel`` [D+H, 4U], ``bias`` [4U] (zeros),
    ``w_f_diag``, ``w_i_diag``, ``w_o_diag`` [U] (``use_peepholes``), ``projection/kernel``
    [U, P] (``num_proj``, no bias). ``initializer`` (default Glorot-uniform on the fused
    shape) applies to all but the bias.

    ``num_unit_shards``/``num_proj_shards`` are accepted for TF's positional order; they only
    partitioned TF's variables and change nothing here.
    """

    kernel: Tensor
    bias: Tensor
    w_f_diag: Tensor
    w_i_diag: Tensor
    w_o_diag: Tensor
    projection: nn.ParameterDict  # projection.kernel [U, P]

    def __init__(
        self,
        num_units: int,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        initializer: Initializer = None,
        num_proj: int | None = None,
        proj_clip: float | None = None,
        num_unit_shards: int | None = None,
        num_proj_shards: int | None = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Activation = None,
        reuse: bool | None = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        *,
        gate_activation: Activation = None,
        use_bias: bool = True,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = _check_units(num_units, "num_units")
        self.gate_activation = _gate_activation(gate_activation)
        self.use_bias = bool(use_bias)
        self.use_peepholes = bool(use_peepholes)  # truthiness, as TF (old code passed input_size here)
        self.cell_clip = _check_clip(cell_clip, "cell_clip")
        self.num_proj = None if num_proj is None else _check_units(num_proj, "num_proj")
        self.proj_clip = _check_clip(proj_clip, "proj_clip")
        self.forget_bias = _check_number(forget_bias, "forget_bias")
        self.state_is_tuple = bool(state_is_tuple)
        self.activation = resolve_activation(activation)
        weight_init = resolve_initializer(initializer, glorot_uniform_, "initializer")
        units, hidden = self.num_units, self.num_proj or self.num_units
        self._add_variable("kernel", (hidden, 4 * units), weight_init, input_rows=True)
        if self.use_bias:
            self._add_variable("bias", (4 * units,), zeros_)
        if self.use_peepholes:
            for gate in ("f", "i", "o"):
                self._add_variable(f"w_{gate}_diag", (units,), weight_init)
        if self.num_proj is not None:
            self._add_variable("projection/kernel", (units, hidden), weight_init)
        if input_size is not None:
            self.build(input_size)

    @property
    def state_size(self) -> LSTMStateTuple | int:
        hidden = self.num_proj or self.num_units
        if self.state_is_tuple:
            return LSTMStateTuple(self.num_units, hidden)
        return self.num_units + hidden

    @property
    def output_size(self) -> int:
        return self.num_proj or self.num_units

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, Any]:
        if self.state_is_tuple:
            c_prev, m_prev = state
        else:
            c_prev, m_prev = state[:, : self.num_units], state[:, self.num_units :]
        z = torch.cat([inputs, m_prev], 1) @ self.kernel
        if self.use_bias:
            z = z + self.bias
        i, j, f, o = z.chunk(4, dim=1)
        act, gate = self.activation, self.gate_activation
        if self.use_peepholes:
            c = gate(f + self.forget_bias + self.w_f_diag * c_prev) * c_prev + gate(i + self.w_i_diag * c_prev) * act(j)
        else:
            c = gate(f + self.forget_bias) * c_prev + gate(i) * act(j)
        if self.cell_clip is not None:
            c = torch.clamp(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            m = gate(o + self.w_o_diag * c) * act(c)
        else:
            m = gate(o) * act(c)
        if self.num_proj is not None:
            m = m @ self.projection["kernel"]
            if self.proj_clip is not None:
                m = torch.clamp(m, -self.proj_clip, self.proj_clip)
        new_state = LSTMStateTuple(c, m) if self.state_is_tuple else torch.cat([c, m], 1)
        return m, new_state


class BasicLSTMCell(LSTMCell):
    """TF's basic LSTM step: :class:`LSTMCell` without peepholes, clipping or projection.

    ``z = [x, h] @ kernel + bias``, gates ``(i, j, f, o)``;
    ``c' = c * sigmoid(f + forget_bias) + sigmoid(i) * act(j)``; ``h' = act(c') * sigmoid(o)``.
    Weights ``basic_lstm_cell/kernel`` [D+U, 4U] and ``bias`` [4U]; state ``LSTMStateTuple(c,
    h)`` or, with ``state_is_tuple=False``, ``concat([c, h], 1)``.
    """

    def __init__(
        self,
        num_units: int,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Activation = None,
        reuse: bool | None = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        *,
        gate_activation: Activation = None,
        use_bias: bool = True,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(
            num_units,
            forget_bias=forget_bias,
            state_is_tuple=state_is_tuple,
            activation=activation,
            name=name,
            dtype=dtype,
            gate_activation=gate_activation,
            use_bias=use_bias,
            input_size=input_size,
            device=device,
        )


class GRUCell(_OneTensorStateCell):
    """TF's GRU step, with the reset gate applied BEFORE the candidate matmul::

        r, u = split(sigmoid([x, h] @ gates/kernel + gates/bias), 2)   # r first, then u
        c = act([x, r * h] @ candidate/kernel + candidate/bias)
        h' = u * h + (1 - u) * c                                        # u = 1 keeps h

    Output and state are ``h'``. Weights: ``gates/kernel`` [D+U, 2U], ``gates/bias`` [2U]
    (1.0), ``candidate/kernel`` [D+U, U], ``candidate/bias`` [U] (0.0). ``bias_initializer``,
    when given, initializes all biases; ``kernel_initializer`` all kernels.

    ``reset_after=True`` is the GRU of cuDNN, PyTorch and Keras (TF1's
    ``CudnnCompatibleGRUCell``), the reset gate applied AFTER the hidden matmul::

        c = act(x @ candidate/input_projection/kernel + candidate/input_projection/bias
                + r * (h @ candidate/hidden_projection/kernel + candidate/hidden_projection/bias))

    with ``input_projection`` [D, U] and ``hidden_projection`` [U, U] in place of
    ``candidate/kernel``.

    ``gate_activation`` (default sigmoid) is the function of ``r`` and ``u``; ``use_bias=False``
    drops every bias variable.
    """

    gates: nn.ParameterDict  # gates.kernel [D+U, 2U], gates.bias [2U]
    candidate: nn.ParameterDict  # candidate.kernel [D+U, U], candidate.bias [U]

    def __init__(
        self,
        num_units: int,
        activation: Activation = None,
        reuse: bool | None = None,
        kernel_initializer: Initializer = None,
        bias_initializer: Initializer = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        *,
        reset_after: bool = False,
        gate_activation: Activation = None,
        use_bias: bool = True,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = units = _check_units(num_units, "num_units")
        self.activation = resolve_activation(activation)
        self.gate_activation = _gate_activation(gate_activation)
        self.use_bias = bias = bool(use_bias)
        self.reset_after = bool(reset_after)
        kernel_init = resolve_initializer(kernel_initializer, glorot_uniform_, "kernel_initializer")
        gates_bias_init = resolve_initializer(bias_initializer, constant(1.0), "bias_initializer")
        candidate_bias_init = resolve_initializer(bias_initializer, zeros_, "bias_initializer")
        self._add_variable("gates/kernel", (units, 2 * units), kernel_init, input_rows=True)
        if bias:
            self._add_variable("gates/bias", (2 * units,), gates_bias_init)
        if self.reset_after:
            self._add_variable("candidate/input_projection/kernel", (0, units), kernel_init, input_rows=True)
            if bias:
                self._add_variable("candidate/input_projection/bias", (units,), candidate_bias_init)
            self._add_variable("candidate/hidden_projection/kernel", (units, units), kernel_init)
            if bias:
                self._add_variable("candidate/hidden_projection/bias", (units,), candidate_bias_init)
        else:
            self._add_variable("candidate/kernel", (units, units), kernel_init, input_rows=True)
            if bias:
                self._add_variable("candidate/bias", (units,), candidate_bias_init)
        if input_size is not None:
            self.build(input_size)

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        bias = self.use_bias
        gates = torch.cat([inputs, state], 1) @ self.gates["kernel"]
        gates = self.gate_activation(gates + self.gates["bias"] if bias else gates)
        r, u = gates.chunk(2, dim=1)
        if self.reset_after:
            x_part, h_part = self.candidate["input_projection"], self.candidate["hidden_projection"]
            hidden = state @ h_part["kernel"]
            candidate = inputs @ x_part["kernel"]
            if bias:
                hidden, candidate = hidden + h_part["bias"], candidate + x_part["bias"]
            candidate = candidate + r * hidden
        else:
            candidate = torch.cat([inputs, r * state], 1) @ self.candidate["kernel"]
            if bias:
                candidate = candidate + self.candidate["bias"]
        c = self.activation(candidate)
        new_h = u * state + (1 - u) * c
        return new_h, new_h
