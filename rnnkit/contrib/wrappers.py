"""``tf.contrib.rnn``'s wrappers that own weights (TensorFlow 1.15).

From ``tensorflow/contrib/rnn/python/ops/core_rnn_cell.py``: :class:`EmbeddingWrapper`,
:class:`InputProjectionWrapper`, :class:`OutputProjectionWrapper`; from
``tensorflow/contrib/rnn/python/ops/rnn_cell.py``: :class:`HighwayWrapper` (and
``AttentionCellWrapper``, in :mod:`.attention_wrapper`, on this module's base classes).

Unlike ``DropoutWrapper`` and ``ResidualWrapper`` (which add no TF scope), the first four are
TF layers of their own: their weights AND the wrapped cell's live under the wrapper's scope,
``rnn/embedding_wrapper/embedding`` and ``rnn/embedding_wrapper/basic_lstm_cell/kernel``.
``HighwayWrapper`` overrides TF's ``__call__`` and opens no scope: its ``carry_w``/``carry_b``
sit directly in the enclosing scope (``rnn/carry_w``), beside the wrapped cell's scope.

``rk.tf_variables(wrapper, scope)`` lists the wrapped cell's variables first, then the
wrapper's own (the names are TF's; TF's creation order puts an embedding or an input
projection before the wrapped cell's variables, which a name-keyed checkpoint does not see).

None of these has a fused implementation: ``dynamic_rnn`` runs them on the reference loop, and
``backend="fused"`` raises ``ValueError`` saying so.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_floating, check_is_cell, check_tensor
from ..activations import Activation, resolve_activation
from ..cell_base import RNNCell
from ..cells import _check_units, zeros_
from ..initializers import Initializer, constant, glorot_uniform_, resolve_initializer
from ..state import _describe, flatten_state
from ..wrappers import _tf_scopes_of
from ._common import join_scope, random_uniform

__all__ = [
    "EmbeddingWrapper",
    "HighwayWrapper",
    "InputProjectionWrapper",
    "OutputProjectionWrapper",
]


def _optional_activation(activation: Activation) -> Callable[[Tensor], Tensor] | None:
    """TF's ``if self._activation: projected = self._activation(projected)``: None is none."""
    return None if activation is None else resolve_activation(activation)


def _project(x: Tensor, kernel: Tensor, bias: Tensor, activation: Callable[[Tensor], Tensor] | None) -> Tensor:
    """The projection wrappers' ``act(x @ kernel + bias)`` (TF's ``_Linear``; None: no activation)."""
    projected = x @ kernel + bias
    return projected if activation is None else activation(projected)


def _int_size(size: Any, what: str) -> int:
    """A cell's ``output_size``/``state_size`` as one int (a projection needs one width)."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{what} must be a single int, got {size!r}")
    return size


class _CellWrapper(RNNCell):
    """A wrapper that owns weights: sizes and zero state are the wrapped cell's (as for
    ``rnnkit.wrappers._Wrapper``, which takes no ``name``/``dtype``/``device``).

    Where the wrapper's weights do not depend on the inputs (they still are created at the
    first call, in its dtype, as in TF), the "input depth" they are built for is
    ``_fixed_depth``, and any of them among saved arrays tells it (``load_tf_variables``,
    ``load_state_dict``)."""

    _fixed_depth: int | None = None

    def __init__(
        self, cell: Any, name: str | None, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> None:
        check_is_cell(cell, "cell")
        super().__init__(name=name, dtype=dtype, device=device)
        self.cell = cell

    @property
    def wrapped_cell(self) -> Any:
        return self.cell

    @property
    def state_size(self) -> Any:
        return self.cell.state_size

    @property
    def output_size(self) -> Any:
        return self.cell.output_size

    def infer_input_size(self, shapes: Mapping[str, Sequence[int]]) -> int | None:
        if self._fixed_depth is None:
            return super().infer_input_size(shapes)
        return self._fixed_depth if any(spec.name in shapes for spec in self._variable_specs) else None

    def zero_state(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Any:
        """The wrapped cell's zero state (TF's wrappers delegate it)."""
        return self.cell.zero_state(batch_size, dtype, device)


class _ScopedWrapper(_CellWrapper):
    """A wrapper that is a TF layer with its own scope: its weights and the wrapped cell's are
    named ``<prefix>/<wrapper name>/...``."""

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        # The wrapped cell first: its parameters are then taken, and this wrapper's own
        # named_parameters() (which recurse into it) yield only the wrapper's weights.
        scope = join_scope(prefix, self.name)
        yield from _tf_scopes_of(self.cell, scope)
        yield self, scope


# ---------------------------------------------------------------------------------------------
# core_rnn_cell.py


class EmbeddingWrapper(_ScopedWrapper):
    """Looks integer ids up in an embedding and runs the cell on the embedded vectors.

    ``inputs``: integer ids ``[B]`` or ``[B, 1]`` in ``[0, embedding_classes)`` (TF reshapes
    them to ``[-1]``); the cell gets ``embedding[ids]`` ``[B, embedding_size]``. Output and
    state are the wrapped cell's.

    Weight: ``embedding_wrapper/embedding`` ``[embedding_classes, embedding_size]``, default
    initializer uniform in ``[-sqrt(3), sqrt(3)]`` (variance 1, TF's default), created at the
    first call in the dtype of the STATE (TF's rule: the ids say nothing of it).

    TF pins the embedding and the lookup to ``/cpu:0``; here the weight lives where the module
    does (``device=``, ``.to()``). As in TF, the runners take integer ids with ``dtype=`` (or an
    ``initial_state``) for the state: ``rk.dynamic_rnn(cell, ids [B, T, 1], dtype=torch.float32)``,
    ``rk.static_rnn(cell, [ids_t [B] or [B, 1], ...], dtype=...)``; they run on the reference loop.
    """

    embedding: Tensor

    def __init__(
        self,
        cell: Any,
        embedding_classes: int,
        embedding_size: int,
        initializer: Initializer = None,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cell, name, dtype, device)
        self.embedding_classes = _check_units(embedding_classes, "embedding_classes")
        self.embedding_size = _check_units(embedding_size, "embedding_size")
        limit = math.sqrt(3.0)
        init = resolve_initializer(initializer, random_uniform(-limit, limit), "initializer")
        self._add_variable("embedding", (self.embedding_classes, self.embedding_size), init)
        self._fixed_depth = 1  # one id per row

    def _check_call(self, inputs: Any, state: Any) -> None:
        ids = check_tensor(inputs, "inputs")
        if ids.dtype.is_floating_point or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"inputs of {self.name} must be integer ids, got dtype {ids.dtype}")
        if not (ids.dim() == 1 or (ids.dim() == 2 and ids.shape[1] == 1)):
            raise ValueError(
                f"inputs of {self.name} must be ids of shape [batch] or [batch, 1], got shape {list(ids.shape)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.embedding_classes):
            raise ValueError(
                f"inputs of {self.name} must be ids in [0, {self.embedding_classes}), "
                f"got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        leaves = [leaf for leaf in flatten_state(state) if isinstance(leaf, Tensor)]
        if not leaves:
            raise TypeError(f"state must hold tensors (the embedding takes their dtype), got {_describe(state)}")
        check_floating(leaves[0].dtype, "state")
        self.ensure_built(1, leaves[0].dtype)

    def step(self, inputs: Tensor, state: Any) -> tuple[Any, Any]:
        embedded = F.embedding(inputs.reshape(-1), self.embedding)
        return self.cell(embedded, state)

    def extra_repr(self) -> str:
        return f"embedding_classes={self.embedding_classes}, embedding_size={self.embedding_size}"


class InputProjectionWrapper(_ScopedWrapper):
    """Projects the inputs, then runs the cell: ``cell(act(x @ kernel + bias), state)``.

    Weights ``input_projection_wrapper/kernel`` ``[D, num_proj]`` (Glorot-uniform) and
    ``input_projection_wrapper/bias`` ``[num_proj]`` (zeros); the wrapped cell runs on inputs
    of depth ``num_proj``. ``activation=None`` is no activation (not tanh), as in TF.

    ``input_size``: deprecated and unused in TF (it was the input depth ``D``); here, when
    given, the projection is built for it at once instead of at the first call.
    """

    kernel: Tensor
    bias: Tensor

    def __init__(
        self,
        cell: Any,
        num_proj: int,
        activation: Activation = None,
        input_size: int | None = None,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cell, name, dtype, device)
        self.num_proj = _check_units(num_proj, "num_proj")
        self.activation = _optional_activation(activation)
        self._add_variable("kernel", (0, self.num_proj), glorot_uniform_, input_rows=True)
        self._add_variable("bias", (self.num_proj,), zeros_)
        if input_size is not None:
            self.build(input_size)

    def _check_call(self, inputs: Any, state: Any) -> None:
        # inputs [B, D] checked and the projection built; the wrapped cell checks the state
        inputs = check_tensor(inputs, "inputs")
        check_floating(inputs.dtype, "inputs")
        if inputs.dim() != 2:
            raise ValueError(f"inputs of {self.name} must have rank 2 [batch, depth], got shape {list(inputs.shape)}")
        self.ensure_built(inputs.shape[1], inputs.dtype)

    def step(self, inputs: Tensor, state: Any) -> tuple[Any, Any]:
        return self.cell(_project(inputs, self.kernel, self.bias, self.activation), state)

    def extra_repr(self) -> str:
        return f"num_proj={self.num_proj}"


class OutputProjectionWrapper(_ScopedWrapper):
    """Runs the cell, then projects its output: ``(act(out @ kernel + bias), new_state)``.

    Weights ``output_projection_wrapper/kernel`` ``[cell.output_size, output_size]``
    (Glorot-uniform) and ``output_projection_wrapper/bias`` ``[output_size]`` (zeros), created
    at the first call in the dtype of the cell's output; the state is the wrapped cell's.
    ``activation=None`` is no activation, as in TF.
    """

    kernel: Tensor
    bias: Tensor

    def __init__(
        self,
        cell: Any,
        output_size: int,
        activation: Activation = None,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cell, name, dtype, device)
        self._output_size = _check_units(output_size, "output_size")
        self.activation = _optional_activation(activation)
        cell_output = _int_size(cell.output_size, "OutputProjectionWrapper: the cell's output_size")
        self._add_variable("kernel", (cell_output, self._output_size), glorot_uniform_)
        self._add_variable("bias", (self._output_size,), zeros_)
        self._fixed_depth = cell_output

    @property
    def output_size(self) -> int:
        return self._output_size

    def _check_call(self, inputs: Any, state: Any) -> None:
        pass  # the wrapped cell checks its arguments; step checks its output

    def step(self, inputs: Any, state: Any) -> tuple[Tensor, Any]:
        output, new_state = self.cell(inputs, state)
        if not isinstance(output, Tensor) or output.dim() != 2:
            raise ValueError(
                f"{self.name}: the cell's output must be one [batch, depth] tensor, got {_describe(output)}"
            )
        self.ensure_built(output.shape[1], output.dtype)
        return _project(output, self.kernel, self.bias, self.activation), new_state

    def extra_repr(self) -> str:
        return f"output_size={self._output_size}"


# ---------------------------------------------------------------------------------------------
# rnn_cell.py


class HighwayWrapper(_CellWrapper):
    """A highway connection around the cell (Srivastava et al., arXiv:1505.00387)::

        out, new_state = cell(x, state)
        carry = sigmoid(x @ carry_w + carry_b)
        transform = 1 - carry                              # couple_carry_transform_gates
                  | sigmoid(x @ transform_w + transform_b)   # otherwise
        output = x * carry + out * transform

    The input depth must equal the cell's ``output_size`` ``U``. Weights ``carry_w`` [U, U]
    (Glorot-uniform), ``carry_b`` [U] (``carry_bias_init``), and when the gates are not coupled
    ``transform_w`` [U, U] and ``transform_b`` [U] (``-carry_bias_init``), created at the first
    call in the inputs' dtype.

    TF's ``HighwayWrapper.__call__`` opens no variable scope: the weights are named in the
    ENCLOSING scope (``rnn/carry_w``, ``rnn/multi_rnn_cell/cell_0/carry_w``), next to the
    wrapped cell's scope, so ``tf_variables`` needs a non-empty scope for them. TF maps the
    highway over nested inputs, which would create ``carry_w`` twice; here inputs are one tensor.
    """

    carry_w: Tensor
    carry_b: Tensor
    transform_w: Tensor
    transform_b: Tensor

    def __init__(
        self,
        cell: Any,
        couple_carry_transform_gates: bool = True,
        carry_bias_init: float = 1.0,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cell, name, dtype, device)
        if isinstance(carry_bias_init, bool) or not isinstance(carry_bias_init, (int, float)):
            raise TypeError(f"carry_bias_init must be a number, got {type(carry_bias_init).__name__}")
        self.couple_carry_transform_gates = bool(couple_carry_transform_gates)
        self.carry_bias_init = float(carry_bias_init)
        units = _int_size(cell.output_size, "HighwayWrapper: the cell's output_size")
        self._add_variable("carry_w", (units, units), glorot_uniform_)
        self._add_variable("carry_b", (units,), constant(self.carry_bias_init))
        if not self.couple_carry_transform_gates:
            self._add_variable("transform_w", (units, units), glorot_uniform_)
            self._add_variable("transform_b", (units,), constant(-self.carry_bias_init))
        self._fixed_depth = units

    def _check_call(self, inputs: Any, state: Any) -> None:
        inputs = check_tensor(inputs, "inputs")
        check_floating(inputs.dtype, "inputs")
        units = self._fixed_depth
        if inputs.dim() != 2 or inputs.shape[1] != units:
            raise ValueError(
                f"inputs of {self.name} must have shape [batch, {units}] (the highway adds them to the "
                f"cell's outputs of depth {units}), got shape {list(inputs.shape)}"
            )
        self.ensure_built(inputs.shape[1], inputs.dtype)

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, Any]:
        output, new_state = self.cell(inputs, state)
        if not isinstance(output, Tensor) or output.shape != inputs.shape:
            raise ValueError(
                f"{self.name}: the cell's output {_describe(output)} must have the inputs' shape {list(inputs.shape)}"
            )
        carry = torch.sigmoid(inputs @ self.carry_w + self.carry_b)
        if self.couple_carry_transform_gates:
            transform = 1 - carry
        else:
            transform = torch.sigmoid(inputs @ self.transform_w + self.transform_b)
        return inputs * carry + output * transform, new_state

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        yield from _tf_scopes_of(self.cell, prefix)
        if not prefix:
            raise ValueError(
                "HighwayWrapper's weights (carry_w, carry_b, ...) live directly in the enclosing TF scope; "
                "give tf_variables/load_tf_variables a non-empty scope (e.g. scope='rnn')"
            )
        yield self, prefix

    def extra_repr(self) -> str:
        return (
            f"couple_carry_transform_gates={self.couple_carry_transform_gates}, carry_bias_init={self.carry_bias_init}"
        )
