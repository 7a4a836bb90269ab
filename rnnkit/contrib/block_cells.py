"""``tf.contrib.rnn``'s block cells (TensorFlow 1.15, ``contrib/rnn/python/ops/lstm_ops.py`` and
``gru_ops.py``, whose math is in the C++ ops ``LSTMBlockCell``/``BlockLSTM`` and
``GRUBlockCell``): ``LSTMBlockCell``, ``LSTMBlockFusedCell``, ``GRUBlockCellV2`` and
``GRUBlockCell``.

The block cells are TF's one-op versions of ``LSTMCell`` and ``GRUCell``: the same weights
under the same names (``lstm_cell/kernel``, ``gru_cell/gates/kernel``), the same forward math.
Where TF's op differs from ``LSTMCell``, rnnkit follows the op, on the reference loop and on
the fused path alike:

* ``cell_clip`` clips only when it is ``> 0`` (``None``, ``0`` or a negative value: no
  clipping; ``LSTMCell(cell_clip=0.0)`` clips to zero);
* the gradient of the clipping is the identity: TF's ``LSTMBlockCellGrad``/``BlockLSTMGrad``
  compute the gate gradients as if the cell state had not been clipped (``LSTMCell``'s
  ``clip_by_value`` passes no gradient where it clipped).

``LSTMBlockFusedCell`` is not a one-step cell: it runs a whole time-major sequence (TF's
``LSTMBlockWrapper.call``), here on the fused LSTM layer through :func:`rnnkit.dynamic_rnn`.

``GRUBlockCell`` (v1, deprecated in TF) names its weights ``w_ru``, ``b_ru``, ``w_c``, ``b_c``;
``GRUBlockCellV2`` uses ``GRUCell``'s names. Both run on the fused GRU layer.

``reuse`` is accepted and ignored, as in the built-in cells; ``input_size=`` (build now) and
``device=`` are keyword-only extras.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..activations import resolve_activation
from ..cell_base import _snake_case
from ..cells import GRUCell, LSTMCell, _check_units, _OneTensorStateCell, zeros_
from ..initializers import constant, glorot_uniform_
from ..state import LSTMStateTuple

__all__ = ["GRUBlockCell", "GRUBlockCellV2", "LSTMBlockCell", "LSTMBlockFusedCell"]


def _block_clip(value: Any) -> float | None:
    """TF's block-op ``cell_clip``: a number or None; clipping only when ``> 0`` (None: none)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"cell_clip must be a number or None, got {type(value).__name__}")
    return float(value) if value > 0 else None


class _ClipPassingGradient(torch.autograd.Function):
    """``clamp(c, -limit, limit)`` whose gradient is the identity, as in TF's block LSTM ops."""

    @staticmethod
    def forward(ctx: Any, c: Tensor, limit: float) -> Tensor:  # type: ignore[override]
        return c.clamp(-limit, limit)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class LSTMBlockCell(LSTMCell):
    """TF's ``LSTMBlockCell``: one step of the ``LSTMBlockCell`` op, ``LSTMCell``'s math.

    With gate blocks ``(i, ci, f, o)`` of width ``U`` (``LSTMCell``'s ``(i, j, f, o)``)::

        z = [x, h] @ kernel + bias                           # kernel [D+U, 4U], bias [4U]
        i = sigmoid(i [+ w_i_diag * c_prev])
        f = sigmoid(f + forget_bias [+ w_f_diag * c_prev])
        c = tanh(ci) * i + c_prev * f
        c = clip(c, -cell_clip, cell_clip)                   # only if cell_clip > 0
        h = sigmoid(o [+ w_o_diag * c]) * tanh(c)            # the new, clipped c

    Returns ``(h, LSTMStateTuple(c, h))``. The clipping's gradient is the identity (TF's
    ``LSTMBlockCellGrad`` ignores it). ``cell_clip=None`` or ``<= 0`` is stored as ``None``.

    Weights, in TF's creation order: ``kernel`` [D+U, 4U] (Glorot-uniform), ``bias`` [4U]
    (zeros), and with ``use_peephole`` ``w_i_diag``, ``w_f_diag``, ``w_o_diag`` [U]
    (Glorot-uniform), under ``lstm_cell/`` by default (TF's name for checkpoint compatibility
    with ``LSTMCell``; ``name=None`` gives ``lstm_block_cell``, as a TF layer does).

    It is an :class:`rnnkit.LSTMCell` with ``use_peepholes=use_peephole``, fused like one.
    """

    def __init__(
        self,
        num_units: int,
        forget_bias: float = 1.0,
        cell_clip: float | None = None,
        use_peephole: bool = False,
        dtype: torch.dtype | None = None,
        reuse: bool | None = None,
        name: str | None = "lstm_cell",
        *,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        clip = _block_clip(cell_clip)
        super().__init__(num_units, cell_clip=clip, forget_bias=forget_bias, name=name, dtype=dtype, device=device)
        if use_peephole:
            for gate in ("i", "f", "o"):  # the op's order (wci, wcf, wco); LSTMCell creates f first
                self._add_variable(f"w_{gate}_diag", (self.num_units,), glorot_uniform_)
            self.use_peepholes = True
        if input_size is not None:
            self.build(input_size)

    @property
    def use_peephole(self) -> bool:
        """TF's name of :attr:`use_peepholes`."""
        return self.use_peepholes

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, LSTMStateTuple]:
        c_prev, h_prev = state
        z = torch.cat([inputs, h_prev], 1) @ self.kernel + self.bias
        i, ci, f, o = z.chunk(4, dim=1)
        f = f + self.forget_bias
        if self.use_peepholes:
            i, f = i + c_prev * self.w_i_diag, f + c_prev * self.w_f_diag
        c = torch.tanh(ci) * torch.sigmoid(i) + c_prev * torch.sigmoid(f)
        if self.cell_clip is not None:
            c = _ClipPassingGradient.apply(c, self.cell_clip)
        if self.use_peepholes:
            o = o + c * self.w_o_diag
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, LSTMStateTuple(c, h)


class LSTMBlockFusedCell(nn.Module):
    """TF's ``LSTMBlockFusedCell``: a whole LSTM layer over a time-major sequence (the
    ``BlockLSTM`` op inside ``LSTMBlockWrapper.call``), the math of :class:`LSTMBlockCell`.

    ``cell(inputs, initial_state=None, dtype=None, sequence_length=None)``:

    * ``inputs`` ``[T, B, D]``, or a list of ``T`` tensors ``[B, D]`` (then the outputs are a
      list too);
    * ``initial_state`` ``(c, h)``, each ``[B, U]``; default zeros of ``dtype`` (default: the
      inputs' dtype; TF required ``dtype`` here);
    * ``sequence_length`` ``[B]``, each in ``[0, T]``: outputs past a row's length are zeros
      and its final state is the state at step ``length - 1`` (length 0: the initial state).

    Returns ``(outputs [T, B, U], LSTMStateTuple(c, h))``.

    Weights as TF names them under the layer's scope: ``lstm_fused_cell/kernel`` [D+U, 4U],
    ``bias`` [4U], ``w_i_diag``, ``w_f_diag``, ``w_o_diag`` [U] (``use_peephole``), created at
    the first call (or with ``input_size=``). They belong to an inner :class:`LSTMBlockCell`
    named like the layer (``self.cell``), which runs on :func:`rnnkit.dynamic_rnn`'s fused LSTM
    layer (``backend=`` chooses, as there); so ``rk.tf_variables(layer, None)`` gives
    ``lstm_fused_cell/kernel``, ... and ``rk.load_tf_variables`` loads them.
    """

    def __init__(
        self,
        num_units: int,
        forget_bias: float = 1.0,
        cell_clip: float | None = None,
        use_peephole: bool = False,
        reuse: bool | None = None,
        dtype: torch.dtype | None = None,
        name: str | None = "lstm_fused_cell",
        *,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.cell = LSTMBlockCell(
            num_units, forget_bias, cell_clip, use_peephole, dtype=dtype,
            name=_snake_case(type(self).__name__) if name is None else name, input_size=input_size, device=device,
        )  # fmt: skip

    @property
    def name(self) -> str:
        return self.cell.name

    @property
    def num_units(self) -> int:
        return self.cell.num_units

    @property
    def built(self) -> bool:
        return self.cell.built

    def build(self, input_size: int, dtype: torch.dtype | None = None) -> None:
        """Create the weights for inputs of depth ``input_size`` (see :meth:`RNNCell.build`)."""
        self.cell.build(input_size, dtype)

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        """The inner cell under ``prefix/<name>``: TF's ``lstm_fused_cell/kernel``, ..."""
        return self.cell._tf_scopes(prefix)

    def forward(
        self,
        inputs: Tensor | Sequence[Tensor],
        initial_state: Any = None,
        dtype: torch.dtype | None = None,
        sequence_length: Any = None,
        *,
        backend: str = "auto",
    ) -> tuple[Tensor | list[Tensor], LSTMStateTuple]:
        from ..rnn import _check_sequence_length, dynamic_rnn  # at call time: rnn imports the fused plan

        is_list = isinstance(inputs, list)
        x = self._check_inputs(inputs)
        state = self._check_initial_state(initial_state)
        lengths = _check_sequence_length(sequence_length, x.shape[1], x.device)
        if lengths is not None and x.shape[1] and int(lengths.max()) > x.shape[0]:
            raise ValueError(
                f"sequence_length must be <= the number of time steps ({x.shape[0]}) for {self.name} "
                f"(TF gathers the final state at length - 1), got {lengths.tolist()}"
            )
        outputs, final = dynamic_rnn(
            self.cell, x, sequence_length=lengths, initial_state=state, dtype=dtype, time_major=True, backend=backend
        )
        return (list(outputs.unbind(0)) if is_list else outputs), LSTMStateTuple(*final)

    def _check_inputs(self, inputs: Any) -> Tensor:
        if isinstance(inputs, list):
            if not inputs or not all(isinstance(step, Tensor) for step in inputs):
                raise TypeError(f"inputs of {self.name} as a list must be a non-empty list of [batch, depth] tensors")
            shapes = {tuple(step.shape) for step in inputs}
            if len(shapes) != 1:
                raise ValueError(f"inputs of {self.name}: the list's tensors must have one shape, got {sorted(shapes)}")
            inputs = torch.stack(inputs)
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs of {self.name} must be a tensor [time, batch, depth], got {type(inputs).__name__}")
        if inputs.dim() != 3:
            raise ValueError(
                f"inputs of {self.name} must have rank 3 [time, batch, depth] (time-major), "
                f"got shape {list(inputs.shape)}"
            )
        if inputs.shape[2] == 0:
            raise ValueError(f"inputs of {self.name} must have a depth >= 1, got shape {list(inputs.shape)}")
        return inputs

    def _check_initial_state(self, initial_state: Any) -> LSTMStateTuple | None:
        if initial_state is None:
            return None
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
            raise ValueError(
                f"initial_state of {self.name} must be a tuple (c, h) of length 2 or None, "
                f"got {type(initial_state).__name__}"
                + (f" of length {len(initial_state)}" if isinstance(initial_state, (tuple, list)) else "")
            )
        return LSTMStateTuple(*initial_state)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_units={self.num_units}"


def _check_num_units(num_units: Any, cell_size: Any) -> int:
    """TF's ``GRUBlockCell`` units: exactly one of ``num_units`` and (deprecated) ``cell_size``."""
    if (cell_size is None) == (num_units is None):
        raise ValueError(
            f"Exactly one of num_units or cell_size must be provided, got num_units={num_units!r}, "
            f"cell_size={cell_size!r}"
        )
    if num_units is None:
        warnings.warn("cell_size is deprecated, use num_units instead", DeprecationWarning, stacklevel=3)
        return _check_units(cell_size, "cell_size")
    return _check_units(num_units, "num_units")


def _block_gru_step(inputs: Tensor, h_prev: Tensor, w_ru: Tensor, b_ru: Tensor, w_c: Tensor, b_c: Tensor) -> Tensor:
    """The ``GRUBlockCell`` op: ``r, u = sigmoid([x, h] @ w_ru + b_ru)`` (r first);
    ``c = tanh([x, r * h] @ w_c + b_c)``; ``h' = u * (h - c) + c`` (= ``u * h + (1 - u) * c``)."""
    r, u = torch.sigmoid(torch.cat([inputs, h_prev], 1) @ w_ru + b_ru).chunk(2, dim=1)
    c = torch.tanh(torch.cat([inputs, r * h_prev], 1) @ w_c + b_c)
    return u * (h_prev - c) + c


class GRUBlockCellV2(GRUCell):
    """TF's ``GRUBlockCellV2``: one step of the ``GRUBlockCell`` op, ``GRUCell``'s math and names::

        r, u = split(sigmoid([x, h] @ gates/kernel + gates/bias), 2)   # r first, then u
        c = tanh([x, r * h] @ candidate/kernel + candidate/bias)
        h' = u * (h - c) + c

    Output and state are ``h'`` ``[B, U]``. Weights: ``gates/kernel`` [D+U, 2U], ``gates/bias``
    [2U] (1.0), ``candidate/kernel`` [D+U, U], ``candidate/bias`` [U] (0.0); kernels
    Glorot-uniform; under ``gru_cell/`` by default (``name=None``: ``gru_block_cell_v2``).

    ``num_units`` or, deprecated, ``cell_size``: exactly one of them. It is an
    :class:`rnnkit.GRUCell` (sigmoid gates, tanh, reset before the matmul), fused like one.
    """

    def __init__(
        self,
        num_units: int | None = None,
        cell_size: int | None = None,
        reuse: bool | None = None,
        name: str | None = "gru_cell",
        *,
        dtype: torch.dtype | None = None,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        units = _check_num_units(num_units, cell_size)
        super().__init__(units, name=name, dtype=dtype, input_size=input_size, device=device)

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates, candidate = self.gates, self.candidate
        new_h = _block_gru_step(inputs, state, gates["kernel"], gates["bias"], candidate["kernel"], candidate["bias"])
        return new_h, new_h


class GRUBlockCell(_OneTensorStateCell):
    """TF's ``GRUBlockCell`` (v1, deprecated for :class:`GRUBlockCellV2`): the same step under
    the op's own names: ``w_ru`` [D+U, 2U] (gates r, u), ``b_ru`` [2U] (1.0), ``w_c`` [D+U, U]
    (candidate), ``b_c`` [U] (0.0), in that creation order, under ``gru_cell/`` by default.

    (TF 1.15's names; older ``gru_ops.py``, creating them with ``get_variable``, swapped the two
    kernels' names: ``w_c`` [D+U, 2U] held the gates.)
    ``gates`` and ``candidate`` are read-only views of the weights under ``GRUCell``'s names,
    which the fused GRU layer reads.
    """

    w_ru: Tensor
    b_ru: Tensor
    w_c: Tensor
    b_c: Tensor
    reset_after = False  # the attributes of GRUCell that the fused GRU layer reads
    use_bias = True

    def __init__(
        self,
        num_units: int | None = None,
        cell_size: int | None = None,
        reuse: bool | None = None,
        name: str | None = "gru_cell",
        *,
        dtype: torch.dtype | None = None,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = units = _check_num_units(num_units, cell_size)
        self.activation = resolve_activation(None)
        self.gate_activation = torch.sigmoid
        self._add_variable("w_ru", (units, 2 * units), glorot_uniform_, input_rows=True)
        self._add_variable("b_ru", (2 * units,), constant(1.0))
        self._add_variable("w_c", (units, units), glorot_uniform_, input_rows=True)
        self._add_variable("b_c", (units,), zeros_)
        if input_size is not None:
            self.build(input_size)

    @property
    def gates(self) -> dict[str, Tensor]:
        return {"kernel": self.w_ru, "bias": self.b_ru}

    @property
    def candidate(self) -> dict[str, Tensor]:
        return {"kernel": self.w_c, "bias": self.b_c}

    def step(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        new_h = _block_gru_step(inputs, state, self.w_ru, self.b_ru, self.w_c, self.b_c)
        return new_h, new_h
