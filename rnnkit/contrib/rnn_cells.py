"""``tf.contrib.rnn``'s extra cells (TensorFlow 1.15): ``NASCell``, ``UGRNNCell``,
``IntersectionRNNCell`` (the independently recurrent cells are in :mod:`.ind_rnn_cells`).

Each is one step of the TF cell of the same name, with its weights under TF's names, in TF's
layout and creation order, so that ``rk.tf_variables(cell, "rnn")`` gives the names TF 1.15
creates in ``dynamic_rnn`` (``rnn/nas_cell/kernel``, ``rnn/ugrnn_cell/bias``, ...) and a TF
checkpoint loads unchanged. Weights that TF creates without an explicit initializer get TF's
default, Glorot-uniform; biases are zeros unless said otherwise.

Constructor arguments keep TF's positional order and defaults; ``name=``, ``dtype=``,
``input_size=`` (build now instead of at the first call) and ``device=`` are keyword-only
where TF's constructor lacks them. ``reuse`` is accepted and ignored. These cells run on the
reference loop (no fused kernel).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..activations import Activation, resolve_activation
from ..cell_base import RNNCell
from ..cells import _check_number, _check_units, _OneTensorStateCell, zeros_
from ..initializers import Initializer, glorot_uniform_, resolve_initializer
from ..state import LSTMStateTuple

__all__ = ["IntersectionRNNCell", "NASCell", "UGRNNCell"]

_NAS_BASE = 8  # the NAS cell's eight branches


class NASCell(RNNCell):
    """TF's Neural Architecture Search cell (Zoph & Le, ICLR 2017), with an optional projection.

    With ``P = num_proj or num_units``, ``m`` ``[B, P]`` and ``c`` ``[B, U]``::

        mm = m @ recurrent_kernel [+ bias]     # [P, 8U] (+ [8U]): the bias is on this half only
        xm = x @ kernel                        # [D, 8U]
        a0..a7 = split(xm, 8), b0..b7 = split(mm, 8)
        l0 = sigmoid(a0 + b0)   l1 = relu(a1 + b1)   l2 = sigmoid(a2 + b2)   l3 = relu(a3 * b3)
        l4 = tanh(a4 + b4)      l5 = sigmoid(a5 + b5) l6 = tanh(a6 + b6)     l7 = sigmoid(a7 + b7)
        c' = tanh(tanh(l0 * l1) + c) * tanh(l2 + l3)
        m' = tanh(c' * tanh(tanh(l4 * l5) + sigmoid(l6 + l7)))
        m' = m' @ projection_weights           # [U, P], if num_proj

    (branch 3 MULTIPLIES its two halves, as TF does). Returns ``(m', LSTMStateTuple(c', m'))``.

    Weights, in TF's creation order: ``recurrent_kernel`` ``[P, 8U]``, ``kernel`` ``[D, 8U]``,
    ``bias`` ``[8U]`` (zeros; only with ``use_bias``), ``projection_weights`` ``[U, P]`` (only
    with ``num_proj``). TF gives the kernels no initializer (Glorot-uniform).

    ``use_bias`` is TF 1.15's name; TF up to 1.12 called it ``use_biases``, accepted here as a
    keyword (the variable names did not change).
    """

    recurrent_kernel: Tensor
    kernel: Tensor
    bias: Tensor
    projection_weights: Tensor

    def __init__(
        self,
        num_units: int,
        num_proj: int | None = None,
        use_bias: bool = False,
        reuse: bool | None = None,
        *,
        use_biases: bool | None = None,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = units = _check_units(num_units, "num_units")
        self.num_proj = None if num_proj is None else _check_units(num_proj, "num_proj")
        self.use_bias = _use_bias(use_bias, use_biases)
        hidden = self.num_proj or units
        self._add_variable("recurrent_kernel", (hidden, _NAS_BASE * units), glorot_uniform_)
        self._add_variable("kernel", (0, _NAS_BASE * units), glorot_uniform_, input_rows=True)
        if self.use_bias:
            self._add_variable("bias", (_NAS_BASE * units,), zeros_)
        if self.num_proj is not None:
            self._add_variable("projection_weights", (units, hidden), glorot_uniform_)
        if input_size is not None:
            self.build(input_size)

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_proj or self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.num_units

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, LSTMStateTuple]:
        c_prev, m_prev = state
        m_matrix = m_prev @ self.recurrent_kernel
        if self.use_bias:
            m_matrix = m_matrix + self.bias
        a = (inputs @ self.kernel).chunk(_NAS_BASE, dim=1)
        b = m_matrix.chunk(_NAS_BASE, dim=1)
        sigmoid, tanh = torch.sigmoid, torch.tanh
        l2_0 = tanh(sigmoid(a[0] + b[0]) * torch.relu(a[1] + b[1]))
        l2_1 = tanh(sigmoid(a[2] + b[2]) + torch.relu(a[3] * b[3]))
        l2_2 = tanh(tanh(a[4] + b[4]) * sigmoid(a[5] + b[5]))
        l2_3 = sigmoid(tanh(a[6] + b[6]) + sigmoid(a[7] + b[7]))
        new_c = tanh(l2_0 + c_prev) * l2_1
        new_m = tanh(new_c * tanh(l2_2 + l2_3))
        if self.num_proj is not None:
            new_m = new_m @ self.projection_weights
        return new_m, LSTMStateTuple(new_c, new_m)


def _use_bias(use_bias: Any, use_biases: Any) -> bool:
    """``use_bias``, or its pre-1.13 name ``use_biases``; both given must agree."""
    if use_biases is None:
        return bool(use_bias)
    if use_bias and not use_biases:
        raise ValueError(f"use_bias={use_bias!r} and use_biases={use_biases!r} (its old name) disagree; give one")
    return bool(use_biases)


class UGRNNCell(_OneTensorStateCell):
    """TF's Update Gate RNN (Collins et al., ICLR 2017): one gate between keeping and replacing::

        g_act, c_act = split([x, h] @ kernel + bias, 2)     # kernel [D+U, 2U]: g first, then c
        g = sigmoid(g_act + forget_bias)
        h' = g * h + (1 - g) * act(c_act)                    # g = 1 keeps h

    Output and state are ``h'`` ``[B, U]``. Weights: ``kernel`` ``[D+U, 2U]`` (``initializer``,
    default Glorot-uniform), ``bias`` ``[2U]`` (zeros: TF's initializer reaches the kernel only).
    ``forget_bias`` is added at every step, never stored.
    """

    kernel: Tensor
    bias: Tensor

    def __init__(
        self,
        num_units: int,
        initializer: Initializer = None,
        forget_bias: float = 1.0,
        activation: Activation = None,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = units = _check_units(num_units, "num_units")
        self.forget_bias = _check_number(forget_bias, "forget_bias")
        self.activation = resolve_activation(activation)
        kernel_init = resolve_initializer(initializer, glorot_uniform_, "initializer")
        self._add_variable("kernel", (units, 2 * units), kernel_init, input_rows=True)
        self._add_variable("bias", (2 * units,), zeros_)
        if input_size is not None:
            self.build(input_size)

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        g_act, c_act = (torch.cat([inputs, state], 1) @ self.kernel + self.bias).chunk(2, dim=1)
        c = self.activation(c_act)
        g = torch.sigmoid(g_act + self.forget_bias)
        new_h = g * state + (1.0 - g) * c
        return new_h, new_h


class IntersectionRNNCell(_OneTensorStateCell):
    """TF's Intersection RNN (+RNN, Collins et al., ICLR 2017): a gate through time and a gate
    through depth, for deep stacks::

        x = x @ in_projection/kernel + in_projection/bias     # only when D != U (see below)
        gh, h_act, gy, y_act = split([x, h] @ kernel + bias, 4)   # kernel [2U, 4U], in this order
        gh = sigmoid(gh + forget_bias);  gy = sigmoid(gy + forget_bias)
        h' = gh * h + (1 - gh) * tanh(h_act)                  # the state, through time
        y' = gy * x + (1 - gy) * y_activation(y_act)          # the output, through depth

    Returns ``(y', h')``, both ``[B, U]``. The depth gate adds the (projected) inputs to the
    output, so they must be ``U`` wide. TF's rule, kept exactly: inputs of depth ``U`` are used
    as they are, even with ``num_in_proj``; inputs of another depth are projected to ``U`` (a
    linear map with a bias, no activation) when ``num_in_proj`` is set (truthy: its value is
    otherwise ignored, the projection is always to ``num_units``), and are an error otherwise.

    Weights, in TF's creation order: ``in_projection/kernel`` ``[D, U]`` and
    ``in_projection/bias`` ``[U]`` (only when projecting), ``kernel`` ``[2U, 4U]``, ``bias``
    ``[4U]``. ``initializer`` (default Glorot-uniform) reaches both kernels; biases are zeros.

    A lazy cell with ``num_in_proj`` declares the projection and drops it at its first call
    (or build) if the inputs turn out ``U`` wide; to load a TF model that has no
    ``in_projection`` into such a cell, give ``input_size=num_units``.
    """

    kernel: Tensor
    bias: Tensor
    in_projection: nn.ParameterDict  # kernel [D, U], bias [U]

    def __init__(
        self,
        num_units: int,
        num_in_proj: int | None = None,
        initializer: Initializer = None,
        forget_bias: float = 1.0,
        y_activation: Activation = "relu",
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = units = _check_units(num_units, "num_units")
        self.num_in_proj = _check_num_in_proj(num_in_proj)
        self.forget_bias = _check_number(forget_bias, "forget_bias")
        self.y_activation = resolve_activation("relu" if y_activation is None else y_activation, "y_activation")
        kernel_init = resolve_initializer(initializer, glorot_uniform_, "initializer")
        self.projects_inputs = bool(self.num_in_proj)  # until the input depth is known
        if self.projects_inputs:
            self._add_variable("in_projection/kernel", (0, units), kernel_init, input_rows=True)
            self._add_variable("in_projection/bias", (units,), zeros_)
        self._add_variable("kernel", (2 * units, 4 * units), kernel_init)
        self._add_variable("bias", (4 * units,), zeros_)
        if input_size is not None:
            self.build(input_size)

    def build(self, input_size: int, dtype: torch.dtype | None = None) -> None:
        """Create the weights for inputs of depth ``input_size``: with the input projection
        if and only if ``input_size != num_units`` (which needs ``num_in_proj``)."""
        if not self.built and isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
            self._fit_input_depth(int(input_size))
        super().build(input_size, dtype=dtype)

    def _fit_input_depth(self, depth: int) -> None:
        if depth == self.num_units:
            if self.projects_inputs:  # TF projects only inputs of another depth
                self._variable_specs = [s for s in self._variable_specs if not s.name.startswith("in_projection/")]
                del self.in_projection
                self.projects_inputs = False
        elif not self.projects_inputs and depth >= 1:
            raise ValueError(
                f"inputs of {self.name} must have depth num_units={self.num_units} (the depth gate adds "
                f"them to the output), got depth {depth}; to project them, set num_in_proj={self.num_units}"
            )

    def infer_input_size(self, shapes: Mapping[str, Sequence[int]]) -> int | None:
        """The input depth: ``in_projection/kernel``'s rows, else ``num_units`` (``kernel`` is
        ``[2U, 4U]`` whatever the inputs)."""
        projection = shapes.get("in_projection/kernel")
        if self.projects_inputs and projection is not None and len(projection) > 0:
            return int(projection[0])
        return self.num_units if "kernel" in shapes else None

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        if self.projects_inputs:
            inputs = inputs @ self.in_projection["kernel"] + self.in_projection["bias"]
        z = torch.cat([inputs, state], 1) @ self.kernel + self.bias
        gh_act, h_act, gy_act, y_act = z.chunk(4, dim=1)
        gh = torch.sigmoid(gh_act + self.forget_bias)
        gy = torch.sigmoid(gy_act + self.forget_bias)
        new_state = gh * state + (1.0 - gh) * torch.tanh(h_act)
        new_y = gy * inputs + (1.0 - gy) * self.y_activation(y_act)
        return new_y, new_state


def _check_num_in_proj(value: Any) -> int | None:
    """``None`` or an int >= 0 (TF tests its truthiness: 0 is the same as None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"num_in_proj must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"num_in_proj must be >= 0 or None, got {value}")
    return value
