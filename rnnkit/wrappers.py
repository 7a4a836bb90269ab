"""Cells made of cells: ``MultiRNNCell``, ``DropoutWrapper``, ``ResidualWrapper``.

``MultiRNNCell`` adds the TF scope ``multi_rnn_cell/cell_<i>`` to its layers' weights; the
wrappers add no scope level (``tf_variables`` of a wrapped cell are the cell's own names).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_floating, check_is_cell, check_keep_prob, check_state
from .cell_base import RNNCell
from .state import LSTMStateTuple, _describe, flatten_state, is_nested, map_state, pack_state

__all__ = ["DropoutWrapper", "MultiRNNCell", "ResidualWrapper"]


class MultiRNNCell(RNNCell):
    """A stack of cells run one after the other at each step: layer ``i+1`` reads layer ``i``'s
    output; the output is the last layer's.

    State: a tuple with one entry per layer (each layer's own state, e.g. an
    ``LSTMStateTuple``), or with ``state_is_tuple=False`` one tensor concatenating the layers'
    states in order (``[c0, h0, c1, h1]`` for concat-state LSTMs). The same cell object given
    twice shares its weights (TF warns, and so does this).

    Weights: ``multi_rnn_cell/cell_<i>/<layer's names>``.
    """

    def __init__(self, cells: Sequence[Any], state_is_tuple: bool = True) -> None:
        super().__init__()
        if not isinstance(cells, (list, tuple)):
            raise TypeError(f"cells must be a list or tuple, but received: {cells!r}")
        if not cells:
            raise ValueError("Must specify at least one cell for MultiRNNCell.")
        for i, cell in enumerate(cells):
            check_is_cell(cell, f"cells[{i}]")
        if len({id(cell) for cell in cells}) < len(cells):
            warnings.warn(
                "At least two cells provided to MultiRNNCell are the same object and will share weights.",
                stacklevel=2,
            )
        self.state_is_tuple = bool(state_is_tuple)
        if not self.state_is_tuple and any(is_nested(cell.state_size) for cell in cells):
            raise ValueError(
                "Some cells return tuples of states, but the flag state_is_tuple is not set. "
                f"State sizes are: {[cell.state_size for cell in cells]}"
            )
        self.cells = nn.ModuleList(cells)

    @property
    def layers(self) -> list[Any]:
        """The cells, layer by layer (the same object twice where weights are shared)."""
        return list(self.cells)

    @property
    def state_size(self) -> tuple[Any, ...] | int:
        sizes = tuple(cell.state_size for cell in self.layers)
        return sizes if self.state_is_tuple else sum(sizes)

    @property
    def output_size(self) -> Any:
        return self.layers[-1].output_size

    def zero_state(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Any:
        """Each layer's own ``zero_state`` (concatenated when ``state_is_tuple=False``)."""
        states = tuple(cell.zero_state(batch_size, dtype, device) for cell in self.layers)
        return states if self.state_is_tuple else torch.cat(states, 1)

    def step(self, inputs: Any, state: Any) -> tuple[Any, Any]:
        layer_input, new_states, start = inputs, [], 0
        for i, cell in enumerate(self.layers):
            if self.state_is_tuple:
                layer_state = state[i]
            else:
                layer_state = state[:, start : start + cell.state_size]
                start += cell.state_size
            layer_input, layer_new_state = cell(layer_input, layer_state)
            new_states.append(layer_new_state)
        if self.state_is_tuple:
            return layer_input, tuple(new_states)
        return layer_input, torch.cat(new_states, 1)

    def _check_call(self, inputs: Any, state: Any) -> None:
        # The layers check their inputs and their own states; here only the outer structure.
        if self.state_is_tuple:
            if not is_nested(state) or len(state) != len(self.cells):
                raise ValueError(
                    f"Expected state to be a tuple of length {len(self.cells)} (one state per layer), "
                    f"but received: {_describe(state)}"
                )
            return
        first_input = flatten_state(inputs)[0]
        batch_size = first_input.shape[0] if isinstance(first_input, Tensor) and first_input.dim() else 0
        dtype = first_input.dtype if isinstance(first_input, Tensor) else torch.get_default_dtype()
        check_state(state, self.state_size, batch_size, dtype, "state")

    def _resolve_dtype_device(
        self, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> tuple[torch.dtype, torch.device | str | None]:
        return self.layers[0]._resolve_dtype_device(dtype, device)

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        scope = f"{prefix}/{self.name}" if prefix else self.name
        for i, cell in enumerate(self.layers):
            yield from _tf_scopes_of(cell, f"{scope}/cell_{i}")


class _Wrapper(RNNCell):
    """A cell around a cell: sizes, zero state and TF scopes are the wrapped cell's."""

    def __init__(self, cell: Any) -> None:
        check_is_cell(cell, "cell")
        super().__init__()
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

    def zero_state(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Any:
        return self.cell.zero_state(batch_size, dtype, device)

    def _check_call(self, inputs: Any, state: Any) -> None:
        pass  # the wrapped cell checks its arguments

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        yield from _tf_scopes_of(self.cell, prefix)


def _tf_scopes_of(cell: Any, prefix: str) -> Iterator[tuple[nn.Module, str]]:
    """TF scopes of any cell: rnnkit cells know theirs; a user's ``nn.Module`` cell is a leaf."""
    if isinstance(cell, RNNCell):
        yield from cell._tf_scopes(prefix)
    elif isinstance(cell, nn.Module):
        name = getattr(cell, "name", None) or type(cell).__name__.lower()
        yield cell, f"{prefix}/{name}" if prefix else name


def _keep_all_but_lstm_memory(substate: Any) -> Any:
    """TF's default state filter: every state leaf is dropped out except an LSTM's ``c``."""
    if isinstance(substate, LSTMStateTuple):
        return LSTMStateTuple(c=False, h=True)
    return True


class DropoutWrapper(_Wrapper):
    """Dropout on a cell's inputs, outputs and (new) state, active only in ``train()`` mode.

    Each kept element is scaled by ``1 / keep_prob`` (inverted dropout). A keep probability of
    exactly 1.0 skips that dropout. State dropout applies to the leaves that
    ``dropout_state_filter_visitor`` selects (default: all but an LSTM's memory ``c``); the
    dropped state is what the step returns, so it is also the runner's final state.

    ``variational_recurrent=True`` (Gal & Ghahramani): one mask per sequence, i.e. per batch
    row, fixed across time steps; new masks are drawn after :meth:`start_sequence`, which the
    runners call at the start of each call (TF's graph mode drew them per ``session.run``).
    Masks are drawn from the shapes of the first step, so ``input_size`` and ``dtype`` are
    accepted for TF compatibility and not needed.

    ``seed``: masks come from a ``torch.Generator`` seeded with it (deterministic per wrapper);
    without it, from torch's global RNG (deterministic under ``torch.manual_seed``).
    """

    _KINDS = ("input", "state", "output")

    def __init__(
        self,
        cell: Any,
        input_keep_prob: float = 1.0,
        output_keep_prob: float = 1.0,
        state_keep_prob: float = 1.0,
        variational_recurrent: bool = False,
        input_size: Any = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
        dropout_state_filter_visitor: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(cell)
        self.input_keep_prob = check_keep_prob(input_keep_prob, "input_keep_prob")
        self.output_keep_prob = check_keep_prob(output_keep_prob, "output_keep_prob")
        self.state_keep_prob = check_keep_prob(state_keep_prob, "state_keep_prob")
        visitor = _keep_all_but_lstm_memory if dropout_state_filter_visitor is None else dropout_state_filter_visitor
        if not callable(visitor):
            raise TypeError(f"dropout_state_filter_visitor must be callable. Received: {visitor!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.dropout_state_filter_visitor = visitor
        self.variational_recurrent = bool(variational_recurrent)
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._masks: dict[tuple[str, int], Tensor] = {}

    def step(self, inputs: Any, state: Any) -> tuple[Any, Any]:
        if self._active(self.input_keep_prob):
            for leaf in flatten_state(inputs):
                check_floating(leaf.dtype, "inputs")
            inputs = self._dropout_leaves(inputs, "input", self.input_keep_prob)
        output, new_state = self.cell(inputs, state)
        if self._active(self.state_keep_prob):
            selected = _state_filter(self.dropout_state_filter_visitor, new_state)
            new_state = self._dropout_leaves(new_state, "state", self.state_keep_prob, selected)
        if self._active(self.output_keep_prob):
            output = self._dropout_leaves(output, "output", self.output_keep_prob)
        return output, new_state

    def _new_sequence(self) -> None:
        self._masks.clear()

    def _active(self, keep_prob: float) -> bool:
        return self.training and keep_prob < 1.0

    def _dropout_leaves(self, values: Any, kind: str, keep_prob: float, selected: Any = None) -> Any:
        leaves = flatten_state(values)
        chosen = flatten_state(selected) if selected is not None else [True] * len(leaves)
        dropped = [
            leaf * self._mask(kind, index, leaf, keep_prob) if use else leaf
            for index, (leaf, use) in enumerate(zip(leaves, chosen))
        ]
        return pack_state(values, dropped)

    def _mask(self, kind: str, index: int, like: Tensor, keep_prob: float) -> Tensor:
        """A 0 or 1/keep_prob mask of ``like``'s shape (the sequence's own, when variational)."""
        key = (kind, index)
        cached = self._masks.get(key)
        if cached is not None and cached.shape == like.shape and cached.device == like.device:
            return cached.to(like.dtype)
        noise = torch.rand(like.shape, generator=self._generator(like.device), device=like.device)
        mask = (noise < keep_prob).to(like.dtype) / keep_prob
        if self.variational_recurrent:
            self._masks[key] = mask
        return mask

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def extra_repr(self) -> str:
        keeps = ", ".join(f"{kind}_keep_prob={getattr(self, kind + '_keep_prob')}" for kind in self._KINDS)
        return f"{keeps}, variational_recurrent={self.variational_recurrent}"


def _state_filter(visitor: Callable[[Any], Any], substate: Any) -> Any:
    """Which leaves of ``substate`` to drop out, as a structure of bools (TF's traversal).

    The visitor returns a bool for a whole sub-structure (False: none of it; True: descend and
    ask again at each element, a leaf True is dropped out) or a depth-1 structure of bools.
    """
    decision = visitor(substate)
    if isinstance(decision, bool):
        if not decision:
            return map_state(lambda _: False, substate)
        if not is_nested(substate):
            return True
        return pack_state(substate, [leaf for item in substate for leaf in flatten_state(_state_filter(visitor, item))])
    if not is_nested(decision) or not is_nested(substate) or len(decision) != len(substate):
        raise TypeError(
            f"dropout_state_filter_visitor must return a bool or a structure of bools matching the "
            f"state {_describe(substate)}, got {decision!r}"
        )
    parts = [
        _state_filter(visitor, item) if flag else map_state(lambda _: False, item)
        for flag, item in zip(decision, substate)
    ]
    return pack_state(substate, [leaf for part in parts for leaf in flatten_state(part)])


def _add_residual(inputs: Any, outputs: Any) -> Any:
    """TF's default residual: ``inputs + outputs`` leaf by leaf, shapes equal."""
    input_leaves, output_leaves = flatten_state(inputs), flatten_state(outputs)
    if len(input_leaves) != len(output_leaves):
        raise ValueError(f"ResidualWrapper: inputs {_describe(inputs)} and outputs {_describe(outputs)} differ")
    for x, y in zip(input_leaves, output_leaves):
        if x.shape != y.shape:
            raise ValueError(
                f"ResidualWrapper: Shapes {list(x.shape)} and {list(y.shape)} are incompatible "
                "(inputs vs the cell's outputs); the cell's output_size must equal the input depth"
            )
    return pack_state(outputs, [x + y for x, y in zip(input_leaves, output_leaves)])


class ResidualWrapper(_Wrapper):
    """Runs the cell and returns ``(residual_fn(inputs, output), new_state)``.

    The default ``residual_fn`` adds inputs and outputs leaf by leaf (equal shapes required);
    the state is the cell's, untouched.
    """

    def __init__(self, cell: Any, residual_fn: Callable[[Any, Any], Any] | None = None) -> None:
        super().__init__(cell)
        if residual_fn is not None and not callable(residual_fn):
            raise TypeError(f"residual_fn must be callable or None, got {type(residual_fn).__name__}")
        self.residual_fn = residual_fn or _add_residual

    def step(self, inputs: Any, state: Any) -> tuple[Any, Any]:
        output, new_state = self.cell(inputs, state)
        return self.residual_fn(inputs, output), new_state
