"""``tf.contrib.rnn.AttentionCellWrapper`` (TensorFlow 1.15's
``tensorflow/contrib/rnn/python/ops/rnn_cell.py``): attention over the cell's last outputs, a
TF layer of its own (see :mod:`rnnkit.contrib.wrappers` for the scopes these wrappers open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..cell_base import RNNCell, VariableSpec
from ..cells import _check_units, zeros_
from ..initializers import glorot_uniform_
from ..state import flatten_state, is_nested
from .wrappers import _int_size, _ScopedWrapper

__all__ = ["AttentionCellWrapper"]


@dataclass(frozen=True)
class _DepthWideSpec(VariableSpec):
    """A weight whose LAST dim is the input depth too: ``AttentionCellWrapper`` without
    ``input_size`` projects ``[x, attns]`` back to the depth of ``x`` (``[D+A, D]``, ``[D]``)."""

    def shape_for(self, input_depth: int) -> tuple[int, ...]:
        return (*super().shape_for(input_depth)[:-1], input_depth)


class AttentionCellWrapper(_ScopedWrapper):
    """Attention over the cell's last ``attn_length`` outputs (Cheng et al., LSTMN,
    arXiv:1601.06733), TF's ``tf.contrib.rnn.AttentionCellWrapper``.

    With ``A = attn_size`` (default ``cell.output_size``), ``V = attn_vec_size`` (default
    ``A``), ``L = attn_length`` and ``P = input_size`` (default the input depth ``D``), one step
    on ``x`` [B, D] and the state ``(cell_state, attns [B, A], attn_states [B, L*A])``::

        x' = [x, attns] @ kernel + bias                              # [D+A, P], [P]
        out, cell_state' = cell(x', cell_state)
        q = concat(flatten(cell_state'), 1)                           # the query [B, Q]
        H = reshape(attn_states, [B, L, A])
        s = sum(attention/attn_v * tanh(H @ attention/attn_w[0, 0]     # [1, 1, A, V]; a 1x1 conv
                                          + q @ attention/kernel + attention/bias), -1)   # [B, L]
        attns' = sum(softmax(s)[..., None] * H, 1)                      # [B, A]
        output = [out, attns'] @ attn_output_projection/kernel + attn_output_projection/bias
        attn_states' = reshape(concat([H[:, 1:], output[:, None]], 1), [B, L*A])

    Returns ``(output [B, A], (cell_state', attns', attn_states'))``; with
    ``state_is_tuple=False`` the state is ``concat([cell_state, attns, attn_states], 1)`` (the
    cell's state must then be one tensor). The state's zeros come from ``state_size``, not from
    the cell's ``zero_state`` (TF's default ``zero_state``).

    Weights under ``attention_cell_wrapper/``, in TF's creation order: ``kernel`` [D+A, P],
    ``bias`` [P], (the wrapped cell, on inputs of depth P), ``attention/attn_w`` [1, 1, A, V],
    ``attention/attn_v`` [V], ``attention/kernel`` [Q, V], ``attention/bias`` [V],
    ``attn_output_projection/kernel`` [O+A, A], ``attn_output_projection/bias`` [A] (``O``: the
    cell's output size). Kernels and ``attn_w``/``attn_v`` are Glorot-uniform, biases zeros.

    ``input_size`` is TF's: the width ``P`` of the input projection, not the input depth.
    """

    kernel: Tensor
    bias: Tensor
    attention: nn.ParameterDict  # attn_w, attn_v, kernel, bias
    attn_output_projection: nn.ParameterDict  # kernel, bias

    def __init__(
        self,
        cell: Any,
        attn_length: int,
        attn_size: int | None = None,
        attn_vec_size: int | None = None,
        input_size: int | None = None,
        state_is_tuple: bool = True,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cell, name, dtype, device)
        self.state_is_tuple = bool(state_is_tuple)
        if is_nested(cell.state_size) and not self.state_is_tuple:
            raise ValueError(
                "Cell returns tuple of states, but the flag state_is_tuple is not set. "
                f"State size is: {cell.state_size}"
            )
        self.attn_length = _check_units(attn_length, "attn_length")
        cell_output = _int_size(cell.output_size, "AttentionCellWrapper: the cell's output_size")
        self.attn_size = cell_output if attn_size is None else _check_units(attn_size, "attn_size")
        self.attn_vec_size = self.attn_size if attn_vec_size is None else _check_units(attn_vec_size, "attn_vec_size")
        self.projection_size = None if input_size is None else _check_units(input_size, "input_size")
        query = sum(
            _int_size(size, "AttentionCellWrapper: each leaf of the cell's state_size")
            for size in flatten_state(cell.state_size)
        )
        self._add_input_projection()
        attn, vec = self.attn_size, self.attn_vec_size
        self._add_variable("attention/attn_w", (1, 1, attn, vec), glorot_uniform_)
        self._add_variable("attention/attn_v", (vec,), glorot_uniform_)
        self._add_variable("attention/kernel", (query, vec), glorot_uniform_)
        self._add_variable("attention/bias", (vec,), zeros_)
        self._add_variable("attn_output_projection/kernel", (cell_output + attn, attn), glorot_uniform_)
        self._add_variable("attn_output_projection/bias", (attn,), zeros_)

    def _add_input_projection(self) -> None:
        """``kernel`` [D+A, P] and ``bias`` [P]; without ``input_size``, ``P`` is the depth D."""
        width = self.projection_size
        self._add_variable("kernel", (self.attn_size, width or 0), glorot_uniform_, input_rows=True)
        self._add_variable("bias", (width or 0,), zeros_)
        if width is None:
            kernel, bias = self._variable_specs[-2:]
            self._variable_specs[-2:] = [
                _DepthWideSpec(kernel.name, kernel.shape, kernel.initializer, kernel.input_rows),
                _DepthWideSpec(bias.name, bias.shape, bias.initializer, bias.input_rows),
            ]

    @property
    def state_size(self) -> tuple[Any, int, int] | int:
        sizes = (self.cell.state_size, self.attn_size, self.attn_size * self.attn_length)
        return sizes if self.state_is_tuple else sum(sizes)

    @property
    def output_size(self) -> int:
        return self.attn_size

    def zero_state(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Any:
        """Zeros of ``state_size`` (TF's default ``zero_state``, not the cell's)."""
        return RNNCell.zero_state(self, batch_size, dtype, device)

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, Any]:
        cell_state, attns, attn_states = self._split_state(state)
        attn_states = attn_states.reshape(-1, self.attn_length, self.attn_size)
        cell_output, new_cell_state = self.cell(torch.cat([inputs, attns], 1) @ self.kernel + self.bias, cell_state)
        query = torch.cat(flatten_state(new_cell_state), 1) if self.state_is_tuple else new_cell_state
        new_attns = self._attend(query, attn_states)
        projection = self.attn_output_projection
        output = torch.cat([cell_output, new_attns], 1) @ projection["kernel"] + projection["bias"]
        new_attn_states = torch.cat([attn_states[:, 1:], output.unsqueeze(1)], 1)
        new_attn_states = new_attn_states.reshape(-1, self.attn_length * self.attn_size)
        if self.state_is_tuple:
            return output, (new_cell_state, new_attns, new_attn_states)
        return output, torch.cat([new_cell_state, new_attns, new_attn_states], 1)

    def _split_state(self, state: Any) -> tuple[Any, Tensor, Tensor]:
        if self.state_is_tuple:
            cell_state, attns, attn_states = state
            return cell_state, attns, attn_states
        widths = [self.cell.state_size, self.attn_size, self.attn_size * self.attn_length]
        cell_state, attns, attn_states = state.split(widths, 1)
        return cell_state, attns, attn_states

    def _attend(self, query: Tensor, hidden: Tensor) -> Tensor:
        """TF's ``_attention``: the softmax-weighted sum of ``hidden`` [B, L, A] rows."""
        weights = self.attention
        features = hidden @ weights["attn_w"][0, 0]  # the 1x1 conv2d: [B, L, V]
        y = query @ weights["kernel"] + weights["bias"]  # [B, V]
        scores = (weights["attn_v"] * torch.tanh(features + y.unsqueeze(1))).sum(2)  # [B, L]
        alignment = torch.softmax(scores, dim=1)
        return (alignment.unsqueeze(2) * hidden).sum(1)

    def extra_repr(self) -> str:
        return (
            f"attn_length={self.attn_length}, attn_size={self.attn_size}, attn_vec_size={self.attn_vec_size}, "
            f"input_size={self.projection_size}, state_is_tuple={self.state_is_tuple}"
        )
