"""``static_state_saving_rnn``: TF 1.15's ``tf.nn.static_state_saving_rnn``
(``tensorflow/python/ops/rnn.py``), and a ready state saver.

``static_state_saving_rnn`` runs :func:`rnnkit.static_rnn` from states read from a *state saver*
(``state(name)``) and writes the final states back (``save_state(name, value)``): truncated
BPTT over segments of long sequences. :class:`InMemoryStateSaver` is a ready one.

The cell runs under TF's scope ``"rnn"``: its weights are ``rk.tf_variables(cell, "rnn")``.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from ._checks import as_dtype, check_batch_size, check_is_cell, check_state, check_tensor
from .rnn import _check_sequence_length, _check_step_list, static_rnn
from .state import flatten_state, is_nested, pack_state

__all__ = ["InMemoryStateSaver", "StateSaver", "static_state_saving_rnn"]


class StateSaver(Protocol):
    """What ``static_state_saving_rnn`` needs of a state saver (TF's protocol, e.g. the
    ``NextQueuedSequenceBatch`` of ``SequenceQueueingStateSaver``)."""

    def state(self, name: str) -> Tensor:
        """The saved state ``[B, size]`` of ``name`` (the start state of this segment)."""
        ...

    def save_state(self, name: str, value: Tensor) -> Any:
        """Keep ``value`` as the state of ``name`` for the next segment."""
        ...


def static_state_saving_rnn(
    cell: Any,
    inputs: Sequence[Any],
    state_saver: StateSaver,
    state_name: str | Sequence[Any],
    sequence_length: Any = None,
    scope: Any = None,
    *,
    backend: str = "auto",
) -> tuple[list[Any], Any]:
    """:func:`rnnkit.static_rnn` from the states of a state saver, saving the final states back.

    Args:
        cell: an RNNCell.
        inputs: a list of ``T`` steps, each ``[B, D]``.
        state_saver: an object with ``state(name)`` and ``save_state(name, value)``, e.g.
            :class:`InMemoryStateSaver`.
        state_name: one name (a ``str``) if ``cell.state_size`` is not nested, else a (nested)
            tuple with as many names as ``cell.state_size`` has leaves in TF's flatten order
            (``("c", "h")`` for an LSTM; ``("c0", "h0", "c1", "h1")`` for two stacked LSTMs).
        sequence_length: optional ``[B]`` lengths, as in :func:`rnnkit.static_rnn`; the saved
            state is the final one (the state at step ``length - 1``).

    Returns ``(outputs, final_state)`` as :func:`rnnkit.static_rnn`; ``save_state`` has been
    called with every flat leaf of ``final_state`` under its name. ``scope`` has no effect;
    the cell's weights are TF's ``rnn/<cell>/...``.
    """
    check_is_cell(cell, "cell")
    names = _check_state_name(state_name, cell.state_size)
    _check_state_saver(state_saver)
    batch_size, first = _check_step_list(inputs)
    _check_sequence_length(sequence_length, batch_size, first.device)
    leaves = []
    for name, size in zip(names, flatten_state(cell.state_size)):
        leaf = state_saver.state(name)
        check_state(leaf, size, batch_size, first.dtype, f"state_saver.state({name!r})")
        leaves.append(leaf)
    initial_state = pack_state(cell.state_size, leaves) if is_nested(cell.state_size) else leaves[0]
    outputs, state = static_rnn(
        cell, inputs, initial_state=initial_state, sequence_length=sequence_length, backend=backend
    )
    for name, leaf in zip(names, flatten_state(state)):
        state_saver.save_state(name, leaf)
    return outputs, state


def _check_state_name(state_name: Any, state_size: Any) -> list[str]:
    """The flat names, one per leaf of ``state_size`` (TF's checks and messages)."""
    if is_nested(state_size) != is_nested(state_name):
        raise ValueError(
            "state_name should be the same type as cell.state_size.  "
            f"state_name: {state_name!r}, cell.state_size: {state_size}"
        )
    names = flatten_state(state_name)
    sizes = flatten_state(state_size)
    if len(names) != len(sizes):
        raise ValueError(f"#elems(state_name) != #elems(state_size): {len(names)} vs. {len(sizes)}")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"state_name must hold strings, got {name!r} ({type(name).__name__})")
    if len(set(names)) != len(names):
        raise ValueError(f"state_name must not repeat a name, got {state_name!r}")
    return names


def _check_state_saver(state_saver: Any) -> None:
    missing = [m for m in ("state", "save_state") if not callable(getattr(state_saver, m, None))]
    if missing:
        raise TypeError(
            f"state_saver must have methods state(name) and save_state(name, value); "
            f"{type(state_saver).__name__} lacks {', '.join(missing)}"
        )


class InMemoryStateSaver:
    """A state saver keeping the last saved state of each name in a dict.

    ``state(name)`` returns what was last saved under ``name``, or zeros ``[batch_size, *size]``
    (``size`` = ``state_size``, or ``state_size[name]`` for a mapping) before anything was
    saved or after :meth:`reset`. ``save_state`` keeps the value, detached from the autograd
    graph unless ``detach=False``: each segment then backpropagates into its own steps only
    (truncated BPTT, as TF's queue-based savers did).

    Example::

        saver = rk.InMemoryStateSaver(batch_size=B, state_size={"c": U, "h": U}, dtype=torch.float32)
        for segment in segments:                        # each a list of [B, D] steps
            outputs, state = rk.static_state_saving_rnn(cell, segment, saver, ("c", "h"))
            loss(outputs).backward()
        saver.reset()                                   # new sequences start from zeros

    Args:
        batch_size: rows of every state.
        state_size: an int or shape for every name, or a mapping ``{name: int or shape}``.
        dtype, device: of the zero states (default: torch's default dtype, CPU).
        detach: detach saved values (default True).
    """

    def __init__(
        self,
        batch_size: int,
        state_size: int | Sequence[int] | Mapping[str, int | Sequence[int]],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        detach: bool = True,
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        if isinstance(state_size, Mapping):
            self.state_size: Any = {
                name: _check_size(size, f"state_size[{name!r}]") for name, size in state_size.items()
            }
        else:
            self.state_size = _check_size(state_size, "state_size")
        self.dtype = torch.get_default_dtype() if dtype is None else as_dtype(dtype)
        self.device = device
        self.detach = bool(detach)
        self._saved: dict[str, Tensor] = {}

    @property
    def saved_state(self) -> dict[str, Tensor]:
        """The saved values by name (a copy of the dict)."""
        return dict(self._saved)

    def state(self, name: str) -> Tensor:
        """The last saved state of ``name``, or zeros ``[batch_size, *size]``."""
        if name in self._saved:
            return self._saved[name]
        return torch.zeros((self.batch_size, *self._size(name)), dtype=self.dtype, device=self.device)

    def save_state(self, name: str, value: Tensor) -> None:
        """Keep ``value`` ``[batch_size, *size]`` as the state of ``name``."""
        check_tensor(value, f"save_state({name!r}, value): value")
        expected = [self.batch_size, *self._size(name)]
        if list(value.shape) != expected:
            raise ValueError(f"save_state({name!r}, value): value must have shape {expected}, got {list(value.shape)}")
        self._saved[name] = value.detach() if self.detach else value

    def reset(self, name: str | None = None) -> None:
        """Forget the saved state of ``name`` (of every name if ``None``): back to zeros."""
        if name is None:
            self._saved.clear()
        else:
            self._saved.pop(name, None)

    def _size(self, name: str) -> tuple[int, ...]:
        if not isinstance(name, str):
            raise TypeError(f"state names must be strings, got {name!r}")
        if isinstance(self.state_size, dict):
            if name not in self.state_size:
                raise KeyError(f"InMemoryStateSaver has no state named {name!r}; it has {sorted(self.state_size)}")
            return self.state_size[name]
        return self.state_size

    def __repr__(self) -> str:
        saved = sorted(self._saved)
        return f"InMemoryStateSaver(batch_size={self.batch_size}, state_size={self.state_size}, saved={saved})"


def _check_size(size: Any, argname: str) -> tuple[int, ...]:
    """A state's per-row shape from an int or a sequence of ints (each >= 1)."""
    dims = (size,) if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(dims, (tuple, list, torch.Size)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims
    ):
        raise ValueError(f"{argname} must be a positive int or a shape of positive ints, got {size!r}")
    return tuple(dims)
