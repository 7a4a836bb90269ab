"""Recurrent state: ``LSTMStateTuple``, nested-structure helpers and zero states.

A state is a plain tensor, an ``LSTMStateTuple(c, h)`` or any nesting of tuples, lists and
namedtuples of those (``MultiRNNCell`` returns a tuple with one entry per layer). States are
ordinary tensors: keep them, feed them back, ``detach_state`` them for truncated BPTT, move
them with ``map_state(lambda t: t.to(device), state)`` and save them with ``torch.save``.

Flattening follows TensorFlow's ``nest`` order: depth first, namedtuples in field order.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

__all__ = [
    "LSTMStateTuple",
    "detach_state",
    "flatten_state",
    "is_nested",
    "map_state",
    "pack_state",
    "zeros_for_size",
]


class LSTMStateTuple(NamedTuple):
    """The state of an LSTM: memory ``c`` first, then hidden/output ``h`` (TF's order).

    For ``LSTMCell(num_units, num_proj=P)``: ``c`` is ``[B, num_units]`` and ``h`` is ``[B, P]``.
    Used for ``state_size`` too, with ints in place of tensors.
    """

    c: Any
    h: Any

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of ``c``; a ``TypeError`` if ``c`` and ``h`` disagree (as in TF)."""
        if self.c.dtype != self.h.dtype:
            raise TypeError(f"Inconsistent dtypes for internal state: {self.c.dtype} vs {self.h.dtype}")
        return self.c.dtype


# States are saved with torch.save; let torch.load's default weights_only mode read them back.
torch.serialization.add_safe_globals([LSTMStateTuple])


def is_nested(value: Any) -> bool:
    """True for tuples, lists and namedtuples (the containers a state may be built of).

    A ``torch.Size`` is a leaf: it is the size of one multi-dimensional state tensor.
    """
    return isinstance(value, (tuple, list)) and not isinstance(value, torch.Size)


def flatten_state(structure: Any) -> list[Any]:
    """The leaves of a nested structure in TF's nest order (depth first, fields in order)."""
    if not is_nested(structure):
        return [structure]
    leaves: list[Any] = []
    for item in structure:
        leaves.extend(flatten_state(item))
    return leaves


def _rebuild(template: Any, items: list[Any]) -> Any:
    """A container of ``template``'s type (tuple, list or namedtuple) holding ``items``."""
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*items)
    return type(template)(items)


def pack_state(structure: Any, leaves: Sequence[Any]) -> Any:
    """Inverse of :func:`flatten_state`: put ``leaves`` into the shape of ``structure``."""
    leaves = list(leaves)
    expected = len(flatten_state(structure))
    if len(leaves) != expected:
        raise ValueError(f"pack_state: the structure has {expected} leaves, but {len(leaves)} were given")
    packed, _ = _pack(structure, leaves, 0)
    return packed


def _pack(structure: Any, leaves: list[Any], start: int) -> tuple[Any, int]:
    if not is_nested(structure):
        return leaves[start], start + 1
    items = []
    for item in structure:
        packed, start = _pack(item, leaves, start)
        items.append(packed)
    return _rebuild(structure, items), start


def map_state(fn: Callable[..., Any], *structures: Any) -> Any:
    """Apply ``fn`` leaf by leaf to one or more structures of the same shape."""
    first = structures[0]
    if not is_nested(first):
        return fn(*structures)
    for other in structures[1:]:
        if not is_nested(other) or len(other) != len(first):
            raise ValueError(f"map_state: structures differ: {_describe(first)} vs {_describe(other)}")
    return _rebuild(first, [map_state(fn, *items) for items in zip(*structures)])


def detach_state(state: Any) -> Any:
    """The same state, cut from the autograd graph (for truncated backpropagation through time).

    ``None`` passes through, so ``detach_state(None)`` is a valid initial state.
    """
    if state is None:
        return None
    return map_state(lambda t: t.detach() if isinstance(t, Tensor) else t, state)


def zeros_for_size(
    size: Any, batch_size: int, dtype: torch.dtype, device: torch.device | str | None
) -> Any:
    """Zeros ``[batch_size, *leaf]`` for every leaf of a nested ``state_size``/``output_size``."""

    def zeros(leaf: int | torch.Size) -> Tensor:
        shape = (leaf,) if isinstance(leaf, int) else tuple(leaf)
        return torch.zeros((batch_size, *shape), dtype=dtype, device=device)

    return map_state(zeros, size)


def _describe(value: Any) -> str:
    """A short description of a (possibly nested) value for error messages."""
    if isinstance(value, Tensor):
        return f"tensor of shape {list(value.shape)} and dtype {value.dtype}"
    if is_nested(value):
        name = type(value).__name__
        return f"{name}({', '.join(_describe(v) for v in value)})"
    return f"{type(value).__name__} {value!r}"
