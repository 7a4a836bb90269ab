"""Variable lengths without wasted work: rows sorted by length, steps packed.

The fused layers work on *packed* sequences, as ``torch.nn.utils.rnn.PackedSequence`` does:
rows are sorted by length (longest first), and step ``t`` holds only the ``batch_sizes[t]``
rows still alive, stored one after the other, so the data is ``[N, D]`` with
``N = sum(batch_sizes)``. Row ``b`` of step ``t`` is at ``offsets[t] + b``; the rows alive at
step ``t`` are a prefix of those alive at ``t - 1``. Rows of length 0 take no step at all.

Packing and unpacking are ``index_select``/``index_copy`` under autograd, so gradients flow
back to the padded inputs; padded outputs are exactly zero (TF's semantics).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Packing:
    """How a ``[T, B, ...]`` batch with lengths maps to packed rows."""

    num_steps: int  # T of the padded layout
    batch_size: int  # B
    batch_sizes: tuple[int, ...]  # rows alive at each step that runs (non-increasing)
    order: Tensor | None  # sorted position -> original row (None: already in order)
    flat_index: Tensor | None  # packed row -> t * B + original row (None: packed == padded)

    @functools.cached_property
    def offsets(self) -> list[int]:
        """The first packed row of each step."""
        return step_starts(self.batch_sizes)

    @property
    def num_running(self) -> int:
        """Rows that take at least one step (the rest keep their initial state)."""
        return self.batch_sizes[0] if self.batch_sizes else 0


def step_starts(batch_sizes: tuple[int, ...] | list[int]) -> list[int]:
    """The first packed row of each step."""
    starts, total = [], 0
    for n in batch_sizes:
        starts.append(total)
        total += n
    return starts


def make_packing(num_steps: int, batch_size: int, lengths: Tensor | None) -> Packing:
    """The packing for ``lengths`` ([B] ints; ``None``: every row runs all ``num_steps``)."""
    if lengths is None or bool((lengths >= num_steps).all()):
        sizes = (batch_size,) * num_steps if batch_size else ()
        return Packing(num_steps, batch_size, sizes, None, None)
    lengths = lengths.clamp(max=num_steps).cpu()
    sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
    steps_run = int(sorted_lengths[0]) if batch_size else 0
    t = torch.arange(steps_run)
    alive = sorted_lengths.unsqueeze(0) > t.unsqueeze(1)  # [steps, B]
    sizes = tuple(int(n) for n in alive.sum(1))
    step_of_row = torch.repeat_interleave(t, torch.tensor(sizes, dtype=torch.long))
    starts = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0)
    position = torch.arange(len(step_of_row)) - starts[step_of_row]
    flat_index = step_of_row * batch_size + order[position]
    return Packing(num_steps, batch_size, sizes, order, flat_index)


def _flat_index(packing: Packing, time_major: bool, device: torch.device) -> Tensor:
    """Packed row -> row of the padded layout flattened (``t * B + b`` or ``b * T + t``)."""
    assert packing.flat_index is not None
    index = packing.flat_index
    if not time_major:
        step, row = index // packing.batch_size, index % packing.batch_size
        index = row * packing.num_steps + step
    return index.to(device)


def pack(x: Tensor, packing: Packing, time_major: bool) -> Tensor:
    """``[T, B, D]`` (or ``[B, T, D]``) inputs -> ``[N, D]`` packed rows."""
    if packing.flat_index is None:
        steps_first = x if time_major else x.transpose(0, 1)
        return steps_first.reshape(-1, x.shape[-1])
    return x.reshape(-1, x.shape[-1]).index_select(0, _flat_index(packing, time_major, x.device))


def unpack(data: Tensor, packing: Packing, time_major: bool) -> Tensor:
    """``[N, H]`` packed rows -> ``[T, B, H]`` (or ``[B, T, H]``), zero where a row has ended."""
    steps, batch = packing.num_steps, packing.batch_size
    if packing.flat_index is None:
        steps_first = data.view(steps, batch, data.shape[-1])
        return steps_first if time_major else steps_first.transpose(0, 1).contiguous()
    shape = (steps, batch, data.shape[-1]) if time_major else (batch, steps, data.shape[-1])
    padded = data.new_zeros(steps * batch, data.shape[-1])
    return padded.index_copy(0, _flat_index(packing, time_major, data.device), data).view(shape)


def sort_rows(state: Tensor, packing: Packing) -> Tensor:
    """Rows of a ``[B, ...]`` state in packed (longest first) order."""
    if packing.order is None:
        return state
    return state.index_select(0, packing.order.to(state.device))


def unsort_rows(sorted_state: Tensor, packing: Packing) -> Tensor:
    """Inverse of :func:`sort_rows`."""
    if packing.order is None:
        return sorted_state
    inverse = torch.argsort(packing.order).to(sorted_state.device)
    return sorted_state.index_select(0, inverse)


def previous_rows(packing: Packing, device: torch.device) -> Tensor | None:
    """For the packed rows of steps ``t >= 1``: the packed row of the same sequence at ``t - 1``
    (``None`` when no step after the first runs)."""
    sizes = packing.batch_sizes
    if len(sizes) < 2:
        return None
    if packing.flat_index is None:  # every row runs every step: B rows back
        return torch.arange(sum(sizes[1:]), device=device)
    later = torch.tensor(sizes[1:])
    previous_starts = torch.tensor(packing.offsets[:-1])
    first_of_step = torch.repeat_interleave(previous_starts, later)  # start of step t - 1, per row of step t
    row_in_step = torch.arange(len(first_of_step)) - torch.repeat_interleave(later.cumsum(0) - later, later)
    return (first_of_step + row_in_step).to(device)


def previous_states(initial: Tensor, steps: Tensor, packing: Packing) -> Tensor:
    """``[N, width]``: for every packed row, the state its step started from: ``initial``'s row
    at the first step, else the row of ``steps`` one step earlier (in ``steps``' dtype)."""
    first = initial[: packing.batch_sizes[0]].to(steps.dtype)
    if packing.flat_index is None:  # every row runs every step: the rows of the steps before, in place
        return torch.cat([first, steps[: steps.shape[0] - first.shape[0]]])
    previous = previous_rows(packing, steps.device)
    return first if previous is None else torch.cat([first, steps.index_select(0, previous)])


def last_rows(packing: Packing, device: torch.device) -> Tensor:
    """For each running sorted row ``b``: its packed row at its last step."""
    sizes, running = packing.batch_sizes, packing.num_running
    if packing.flat_index is None:  # the rows of the last step
        total = running * len(sizes)
        return torch.arange(total - running, total, device=device)
    rows = torch.arange(running)
    ascending = torch.tensor(sizes[::-1])
    steps_run = len(sizes) - torch.searchsorted(ascending, rows, right=True)  # steps with more than b rows alive
    return (torch.tensor(packing.offsets)[steps_run - 1] + rows).to(device)


def graph_zero(tensors: Any) -> Tensor | None:
    """An exact ``0`` that autograd connects to each of ``tensors`` needing a gradient (``None``
    when none does): for results no step computes (batch size 0, every length 0), so that a
    loss on them backpropagates zero gradients, as it does where a step runs.

    The sum of an empty slice is ``0`` whatever the values are (NaN and inf too), and its
    gradient is zero."""
    zero = None
    for tensor in tensors:
        if isinstance(tensor, Tensor) and tensor.requires_grad:
            term = tensor.reshape(-1)[:0].sum()
            zero = term if zero is None else zero + term
    return zero
