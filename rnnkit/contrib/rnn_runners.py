"""``tf.contrib.rnn``'s stacked bidirectional runners (TF 1.15,
``tensorflow/contrib/rnn/python/ops/rnn.py``): ``stack_bidirectional_dynamic_rnn`` and
``stack_bidirectional_rnn``.

Layer ``i`` is a bidirectional rnn of ``cells_fw[i]`` and ``cells_bw[i]``; from layer 1 on it
reads the previous layer's fw and bw outputs concatenated on the depth axis (so fw and bw
information meet between layers, which one bidirectional rnn over a ``MultiRNNCell`` does not).

TF variable names. TF created the cells' weights under scopes of the runner's; rnnkit cells
own their weights, so the names come from :class:`StackBidirectionalRNN` (or
:func:`stack_bidirectional_variables`), which knows the layout::

    stack_bidirectional_rnn/cell_<i>/bidirectional_rnn/fw/<cell name>/...   # dynamic
    stack_bidirectional_rnn/cell_<i>/bidirectional_rnn/bw/<cell name>/...
    stack_bidirectional_rnn/cell_<i>/fw/<cell name>/...                     # static (list)

(``stack_bidirectional_rnn`` is replaced by the runner's ``scope=`` when TF was given one, with
any outer variable scope in front: ``"encoder"``, ``"model/stack_bidirectional_rnn"``.) The
static form lacks ``bidirectional_rnn/`` because TF passed the ``cell_<i>`` scope itself to
``static_bidirectional_rnn``, which then opened no scope of its own.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_is_cell, check_state
from ..rnn import (
    _check_sequence_inputs,
    _check_sequence_length,
    _check_step_list,
    bidirectional_dynamic_rnn,
    static_bidirectional_rnn,
)
from ..state import _describe, flatten_state, is_nested
from ..tfvars import LoadResult, load_tf_variables, tf_variables
from ..wrappers import _tf_scopes_of
from ._common import join_scope

__all__ = [
    "StackBidirectionalRNN",
    "load_stack_bidirectional_variables",
    "stack_bidirectional_dynamic_rnn",
    "stack_bidirectional_rnn",
    "stack_bidirectional_variables",
]

DEFAULT_SCOPE = "stack_bidirectional_rnn"


def stack_bidirectional_dynamic_rnn(
    cells_fw: Sequence[Any],
    cells_bw: Sequence[Any],
    inputs: Tensor,
    initial_states_fw: Sequence[Any] | None = None,
    initial_states_bw: Sequence[Any] | None = None,
    dtype: torch.dtype | None = None,
    sequence_length: Any = None,
    parallel_iterations: int | None = None,
    time_major: bool = False,
    scope: Any = None,
    swap_memory: bool = False,
    *,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Any, ...], tuple[Any, ...]]:
    """Stacked :func:`rnnkit.bidirectional_dynamic_rnn` layers.

    Args:
        cells_fw, cells_bw: lists of cells, one per layer, the same number in both.
        inputs: ``[B, T, D]`` (``[T, B, D]`` when ``time_major``); layer ``i > 0`` reads
            ``concat([out_fw, out_bw], 2)`` of layer ``i - 1`` (TF's ``array_ops.concat(outputs,
            2)``, so the cells' outputs must be single tensors).
        initial_states_fw, initial_states_bw: optional lists with one state (or ``None``: zeros)
            per layer.
        dtype: of the zero states; default the inputs' dtype (TF required it).
        sequence_length: optional ``[B]`` lengths, each ``<= T``; outputs are zero past them.
        backend: as in :func:`rnnkit.dynamic_rnn`, for every layer.

    Returns ``(outputs, states_fw, states_bw)``: the last layer's concatenated outputs
    ``[B, T, U_fw + U_bw]`` (or time-major) and tuples of the final fw/bw states, one per layer.
    ``parallel_iterations``, ``swap_memory`` and ``scope`` have no effect; for TF's names see
    :class:`StackBidirectionalRNN`.
    """
    _check_cells(cells_fw, cells_bw)
    leaves, batch_size, num_steps = _check_sequence_inputs(inputs, time_major)
    lengths = _check_sequence_length(sequence_length, batch_size, leaves[0].device, max_length=num_steps)
    states_fw = _initial_states(initial_states_fw, cells_fw, batch_size, leaves[0].dtype, "initial_states_fw")
    states_bw = _initial_states(initial_states_bw, cells_bw, batch_size, leaves[0].dtype, "initial_states_bw")
    layer_input, finals_fw, finals_bw = inputs, [], []
    for i, (cell_fw, cell_bw) in enumerate(zip(cells_fw, cells_bw)):
        (out_fw, out_bw), (final_fw, final_bw) = bidirectional_dynamic_rnn(
            cell_fw,
            cell_bw,
            layer_input,
            sequence_length=lengths,
            initial_state_fw=states_fw[i],
            initial_state_bw=states_bw[i],
            dtype=dtype,
            parallel_iterations=parallel_iterations,
            swap_memory=swap_memory,
            time_major=time_major,
            backend=backend,
        )
        layer_input = _concat_depth(out_fw, out_bw, i)
        finals_fw.append(final_fw)
        finals_bw.append(final_bw)
    return layer_input, tuple(finals_fw), tuple(finals_bw)


def stack_bidirectional_rnn(
    cells_fw: Sequence[Any],
    cells_bw: Sequence[Any],
    inputs: Sequence[Any],
    initial_states_fw: Sequence[Any] | None = None,
    initial_states_bw: Sequence[Any] | None = None,
    dtype: torch.dtype | None = None,
    sequence_length: Any = None,
    scope: Any = None,
    *,
    backend: str = "auto",
) -> tuple[list[Any], tuple[Any, ...], tuple[Any, ...]]:
    """Stacked :func:`rnnkit.static_bidirectional_rnn` layers over a list of ``T`` steps.

    ``inputs``: a list of ``[B, D]`` steps (or nested tuples of them); each layer's outputs,
    ``concat([fw_t, bw_t], 1)`` per step (per leaf), are the next layer's inputs. Arguments as in
    :func:`stack_bidirectional_dynamic_rnn`. Returns ``(list of T outputs [B, U_fw + U_bw] of the
    last layer, states_fw, states_bw)`` with one final state per layer in each tuple.
    """
    _check_cells(cells_fw, cells_bw)
    batch_size, first = _check_step_list(inputs)
    lengths = _check_sequence_length(sequence_length, batch_size, first.device, max_length=len(inputs))
    states_fw = _initial_states(initial_states_fw, cells_fw, batch_size, first.dtype, "initial_states_fw")
    states_bw = _initial_states(initial_states_bw, cells_bw, batch_size, first.dtype, "initial_states_bw")
    layer_input, finals_fw, finals_bw = list(inputs), [], []
    for i, (cell_fw, cell_bw) in enumerate(zip(cells_fw, cells_bw)):
        layer_input, final_fw, final_bw = static_bidirectional_rnn(
            cell_fw,
            cell_bw,
            layer_input,
            initial_state_fw=states_fw[i],
            initial_state_bw=states_bw[i],
            dtype=dtype,
            sequence_length=lengths,
            backend=backend,
        )
        finals_fw.append(final_fw)
        finals_bw.append(final_bw)
    return layer_input, tuple(finals_fw), tuple(finals_bw)


class StackBidirectionalRNN(nn.Module):
    """The cells of a stacked bidirectional rnn and their runner as one ``nn.Module``, with
    TF's variable names.

    ``forward(inputs, sequence_length=None, initial_states_fw=None, initial_states_bw=None)``
    runs :func:`stack_bidirectional_dynamic_rnn` (``static=True``: :func:`stack_bidirectional_rnn`
    on a list of steps) and returns ``(outputs, states_fw, states_bw)``.

    TF names: ``rk.tf_variables(layer, scope="stack_bidirectional_rnn")`` gives
    ``stack_bidirectional_rnn/cell_<i>/bidirectional_rnn/{fw,bw}/<cell name>/...`` (static:
    ``stack_bidirectional_rnn/cell_<i>/{fw,bw}/...``), in TF's creation order (layer by layer,
    fw before bw); ``rk.load_tf_variables(layer, arrays, scope=...)`` loads them (building lazy
    cells). The scope is the runner's ``scope=`` in TF, or its default, with any outer variable
    scope in front.
    """

    def __init__(
        self,
        cells_fw: Sequence[nn.Module],
        cells_bw: Sequence[nn.Module],
        time_major: bool = False,
        static: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_cells(cells_fw, cells_bw)
        for argname, cells in (("cells_fw", cells_fw), ("cells_bw", cells_bw)):
            for i, cell in enumerate(cells):
                if not isinstance(cell, nn.Module):
                    raise TypeError(
                        f"{argname}[{i}] must be an nn.Module cell to be held by a layer, got {type(cell).__name__}"
                    )
        self.cells_fw = nn.ModuleList(cells_fw)
        self.cells_bw = nn.ModuleList(cells_bw)
        self.time_major = bool(time_major)
        self.static = bool(static)
        self.backend = backend

    def forward(
        self,
        inputs: Any,
        sequence_length: Any = None,
        initial_states_fw: Sequence[Any] | None = None,
        initial_states_bw: Sequence[Any] | None = None,
    ) -> tuple[Any, tuple[Any, ...], tuple[Any, ...]]:
        cells_fw, cells_bw = list(self.cells_fw), list(self.cells_bw)
        if self.static:
            return stack_bidirectional_rnn(
                cells_fw,
                cells_bw,
                inputs,
                initial_states_fw,
                initial_states_bw,
                sequence_length=sequence_length,
                backend=self.backend,
            )
        return stack_bidirectional_dynamic_rnn(
            cells_fw,
            cells_bw,
            inputs,
            initial_states_fw,
            initial_states_bw,
            sequence_length=sequence_length,
            time_major=self.time_major,
            backend=self.backend,
        )

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        for i, (cell_fw, cell_bw) in enumerate(zip(self.cells_fw, self.cells_bw)):
            layer = join_scope(prefix, f"cell_{i}")
            if not self.static:
                layer += "/bidirectional_rnn"
            yield from _tf_scopes_of(cell_fw, f"{layer}/fw")
            yield from _tf_scopes_of(cell_bw, f"{layer}/bw")

    def extra_repr(self) -> str:
        return f"time_major={self.time_major}, static={self.static}, backend={self.backend!r}"


def stack_bidirectional_variables(
    cells_fw: Sequence[nn.Module], cells_bw: Sequence[nn.Module], scope: str | None = None, static: bool = False
) -> dict[str, nn.Parameter]:
    """``{TF name: Parameter}`` of the cells of a stacked bidirectional run, as TF 1.15 names
    them: ``<scope>/cell_<i>/bidirectional_rnn/{fw,bw}/<cell>/...`` (``static=True``, i.e.
    :func:`stack_bidirectional_rnn`: ``<scope>/cell_<i>/{fw,bw}/<cell>/...``). ``scope``: the
    runner's ``scope=`` (default ``"stack_bidirectional_rnn"``), outer scopes in front."""
    layer = StackBidirectionalRNN(cells_fw, cells_bw, static=static)
    return tf_variables(layer, _scope(scope))


def load_stack_bidirectional_variables(
    cells_fw: Sequence[nn.Module],
    cells_bw: Sequence[nn.Module],
    arrays: Mapping[str, Any],
    scope: str | None = None,
    static: bool = False,
    strict: bool = True,
) -> LoadResult:
    """Copy TF-named arrays into the cells (names as :func:`stack_bidirectional_variables`);
    lazy cells are built from the arrays' shapes. ``strict`` as in :func:`rnnkit.load_tf_variables`."""
    layer = StackBidirectionalRNN(cells_fw, cells_bw, static=static)
    return load_tf_variables(layer, arrays, scope=_scope(scope), strict=strict)


# --------------------------------------------------------------------------------------------
# argument checks


def _scope(scope: Any) -> str:
    if scope is None:
        return DEFAULT_SCOPE
    if not isinstance(scope, str) or not scope.strip("/"):
        raise TypeError(f"scope must be a non-empty str or None, got {scope!r}")
    return scope.rstrip("/")


def _check_cells(cells_fw: Any, cells_bw: Any) -> None:
    """TF's checks, in TF's order (a tuple is accepted as well as a list)."""
    for argname, direction, cells in (("cells_fw", "fw", cells_fw), ("cells_bw", "bw", cells_bw)):
        if cells is None or (isinstance(cells, (list, tuple)) and not cells):
            raise ValueError(
                f"Must specify at least one {direction} cell for BidirectionalRNN ({argname} is {cells!r})."
            )
    for argname, cells in (("cells_fw", cells_fw), ("cells_bw", cells_bw)):
        if not isinstance(cells, (list, tuple)):
            raise ValueError(f"{argname} must be a list of RNNCells (one per layer), got {_describe(cells)}")
    if len(cells_fw) != len(cells_bw):
        raise ValueError(
            f"Forward and Backward cells must have the same depth: len(cells_fw) = {len(cells_fw)}, "
            f"len(cells_bw) = {len(cells_bw)}"
        )
    for argname, cells in (("cells_fw", cells_fw), ("cells_bw", cells_bw)):
        for i, cell in enumerate(cells):
            check_is_cell(cell, f"{argname}[{i}]")


def _initial_states(states: Any, cells: Sequence[Any], batch_size: int, dtype: torch.dtype, argname: str) -> list[Any]:
    """One initial state (or ``None``) per layer, each checked against its cell."""
    if states is None:
        return [None] * len(cells)
    if not isinstance(states, (list, tuple)) or len(states) != len(cells):
        got = f"{len(states)} states" if isinstance(states, (list, tuple)) else _describe(states)
        raise ValueError(f"{argname} must be a list of state tensors (one per layer: {len(cells)}), got {got}")
    for i, (state, cell) in enumerate(zip(states, cells)):
        if state is not None:  # integer ids (EmbeddingWrapper) say nothing of the state's dtype
            expected = dtype if dtype.is_floating_point or dtype.is_complex else flatten_state(state)[0].dtype
            check_state(state, cell.state_size, batch_size, expected, f"{argname}[{i}]")
    return list(states)


def _concat_depth(out_fw: Any, out_bw: Any, layer: int) -> Tensor:
    """TF's ``array_ops.concat(outputs, 2)`` of a layer's fw and bw outputs."""
    for direction, out in (("fw", out_fw), ("bw", out_bw)):
        if is_nested(out):
            raise TypeError(
                f"stack_bidirectional_dynamic_rnn concatenates each layer's outputs on axis 2, but "
                f"cells_{direction}[{layer}] returns a nested output ({len(flatten_state(out))} tensors); "
                "use cells with a single output tensor"
            )
    return torch.cat([out_fw, out_bw], 2)
