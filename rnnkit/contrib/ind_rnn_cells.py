"""``tf.contrib.rnn``'s independently recurrent cells (TensorFlow 1.15): ``IndRNNCell``,
``IndyGRUCell``, ``IndyLSTMCell``.

In these cells each unit sees only its OWN previous state: the recurrent matrices of the plain
RNN, GRU and LSTM are replaced by vectors ``kernel_u`` ``[1, n]`` multiplied elementwise
(IndRNN, https://arxiv.org/abs/1803.04831). The input kernels ``kernel_w`` act on ``x`` alone,
so no kernel here multiplies ``concat([x, h])``.

TF creates every ``*_u`` vector with ``random_uniform_initializer(-1, 1)``, whatever
``kernel_initializer`` says; ``kernel_initializer`` (default Glorot-uniform) is for the input
kernels only. These cells are layers in TF (``LayerRNNCell``), so ``name`` and ``dtype`` are
positional as in TF; ``reuse`` is accepted and ignored. They run on the reference loop (no
fused kernel).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..activations import Activation, resolve_activation
from ..cell_base import RNNCell
from ..cells import _check_number, _check_units, _OneTensorStateCell, zeros_
from ..initializers import Initializer, constant, glorot_uniform_, resolve_initializer
from ..state import LSTMStateTuple
from ._common import random_uniform

__all__ = ["IndRNNCell", "IndyGRUCell", "IndyLSTMCell"]

recurrent_uniform_ = random_uniform(-1.0, 1.0)  # TF's initializer of every kernel_u


class _IndependentCell(RNNCell):
    """The constructor checks they share: ``num_units`` and ``activation``."""

    def __init__(
        self,
        num_units: int,
        activation: Activation,
        name: str | None,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = _check_units(num_units, "num_units")
        self.activation = resolve_activation(activation)


class IndRNNCell(_IndependentCell, _OneTensorStateCell):
    """TF's IndRNN step ``h' = act(x @ kernel_w + h * kernel_u + bias)``; output and state are
    ``h'`` ``[B, U]``.

    Weights (TF's creation order): ``kernel_w`` ``[D, U]`` (Glorot-uniform), ``kernel_u``
    ``[1, U]`` (``U(-1, 1)``), ``bias`` ``[U]`` (zeros). TF's IndRNNCell has no initializer
    arguments. ``activation`` defaults to tanh (the paper uses relu: pass ``"relu"``).
    """

    kernel_w: Tensor
    kernel_u: Tensor
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
        super().__init__(num_units, activation, name, dtype, device)
        units = self.num_units
        self._add_variable("kernel_w", (0, units), glorot_uniform_, input_rows=True)
        self._add_variable("kernel_u", (1, units), recurrent_uniform_)
        self._add_variable("bias", (units,), zeros_)
        if input_size is not None:
            self.build(input_size)

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        output = self.activation(inputs @ self.kernel_w + state * self.kernel_u + self.bias)
        return output, output


class IndyGRUCell(_IndependentCell, _OneTensorStateCell):
    """TF's IndyGRU step: a GRU whose recurrent matrices are vectors::

        r, u = split(sigmoid(x @ gates/kernel_w + [h, h] * gates/kernel_u + gates/bias), 2)
        c = act(x @ candidate/kernel + (r * h) * candidate/kernel_u + candidate/bias)
        h' = u * h + (1 - u) * c                                  # u = 1 keeps h

    (``r`` first, then ``u``, as in :class:`rnnkit.GRUCell`). Output and state are ``h'``.

    Weights (TF's creation order): ``gates/kernel_w`` ``[D, 2U]``, ``gates/kernel_u``
    ``[1, 2U]``, ``gates/bias`` ``[2U]`` (1.0), ``candidate/kernel`` ``[D, U]`` (TF's name:
    not ``kernel_w``), ``candidate/kernel_u`` ``[1, U]``, ``candidate/bias`` ``[U]`` (0.0).
    ``kernel_initializer`` (default Glorot-uniform) initializes the two input kernels, the
    ``kernel_u`` vectors are ``U(-1, 1)``; ``bias_initializer``, when given, both biases.
    """

    gates: nn.ParameterDict  # kernel_w [D, 2U], kernel_u [1, 2U], bias [2U]
    candidate: nn.ParameterDict  # kernel [D, U], kernel_u [1, U], bias [U]

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
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_units, activation, name, dtype, device)
        units = self.num_units
        kernel_init = resolve_initializer(kernel_initializer, glorot_uniform_, "kernel_initializer")
        gates_bias_init = resolve_initializer(bias_initializer, constant(1.0), "bias_initializer")
        candidate_bias_init = resolve_initializer(bias_initializer, zeros_, "bias_initializer")
        self._add_variable("gates/kernel_w", (0, 2 * units), kernel_init, input_rows=True)
        self._add_variable("gates/kernel_u", (1, 2 * units), recurrent_uniform_)
        self._add_variable("gates/bias", (2 * units,), gates_bias_init)
        self._add_variable("candidate/kernel", (0, units), kernel_init, input_rows=True)
        self._add_variable("candidate/kernel_u", (1, units), recurrent_uniform_)
        self._add_variable("candidate/bias", (units,), candidate_bias_init)
        if input_size is not None:
            self.build(input_size)

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates, candidate = self.gates, self.candidate
        gate_inputs = inputs @ gates["kernel_w"] + state.repeat(1, 2) * gates["kernel_u"]
        r, u = torch.sigmoid(gate_inputs + gates["bias"]).chunk(2, dim=1)
        candidate_inputs = inputs @ candidate["kernel"] + (r * state) * candidate["kernel_u"]
        c = self.activation(candidate_inputs + candidate["bias"])
        new_h = u * state + (1 - u) * c
        return new_h, new_h


class IndyLSTMCell(_IndependentCell):
    """TF's IndyLSTM step: a basic LSTM whose recurrent matrices are vectors::

        z = x @ kernel_w + [h, h, h, h] * kernel_u + bias        # gate blocks (i, j, f, o)
        c' = c * sigmoid(f + forget_bias) + sigmoid(i) * act(j)
        h' = act(c') * sigmoid(o)

    Returns ``(h', LSTMStateTuple(c', h'))``; no peepholes, clipping or projection.

    Weights (TF's creation order): ``kernel_w`` ``[D, 4U]`` (``kernel_initializer``, default
    Glorot-uniform), ``kernel_u`` ``[1, 4U]`` (``U(-1, 1)``), ``bias`` ``[4U]``
    (``bias_initializer``, default zeros). ``forget_bias`` is added at every step, never stored.
    """

    kernel_w: Tensor
    kernel_u: Tensor
    bias: Tensor

    def __init__(
        self,
        num_units: int,
        forget_bias: float = 1.0,
        activation: Activation = None,
        reuse: bool | None = None,
        kernel_initializer: Initializer = None,
        bias_initializer: Initializer = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        *,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_units, activation, name, dtype, device)
        self.forget_bias = _check_number(forget_bias, "forget_bias")
        units = self.num_units
        kernel_init = resolve_initializer(kernel_initializer, glorot_uniform_, "kernel_initializer")
        bias_init = resolve_initializer(bias_initializer, zeros_, "bias_initializer")
        self._add_variable("kernel_w", (0, 4 * units), kernel_init, input_rows=True)
        self._add_variable("kernel_u", (1, 4 * units), recurrent_uniform_)
        self._add_variable("bias", (4 * units,), bias_init)
        if input_size is not None:
            self.build(input_size)

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_units

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, LSTMStateTuple]:
        c, h = state
        z = inputs @ self.kernel_w + h.repeat(1, 4) * self.kernel_u + self.bias
        i, j, f, o = z.chunk(4, dim=1)
        new_c = c * torch.sigmoid(f + self.forget_bias) + torch.sigmoid(i) * self.activation(j)
        new_h = self.activation(new_c) * torch.sigmoid(o)
        return new_h, LSTMStateTuple(new_c, new_h)
