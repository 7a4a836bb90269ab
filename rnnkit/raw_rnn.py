"""``raw_rnn``: TF 1.15's ``tf.nn.raw_rnn``, the runner that lets user code drive the loop
(``tensorflow/python/ops/rnn.py``).

``raw_rnn(cell, loop_fn)`` calls ``loop_fn(time, cell_output, cell_state, loop_state)`` before
the first step and after every step; it says which rows are finished, what the cell reads next,
what state it starts from and what is emitted. TF collected the emitted values in a
``TensorArray`` (``emit_ta``) that callers turned into a tensor with ``emit_ta.stack()``; here
that stacked tensor is returned directly, time-major ``[T, B, ...]`` per leaf of the emit
structure (``T`` = the number of steps the loop ran).

The cell runs under TF's scope ``"rnn"``: its weights are ``rk.tf_variables(cell, "rnn")``.
(``static_state_saving_rnn``, the other runner of that file, is in :mod:`rnnkit.state_saving_rnn`.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ._checks import check_is_cell, check_state, check_tensor
from .rnn import _rows
from .state import _describe, flatten_state, is_nested, map_state, zeros_for_size

__all__ = ["raw_rnn"]

#: ``loop_fn(time, cell_output, cell_state, loop_state) -> (finished, next_input,
#: next_cell_state, emit_output, next_loop_state)``
LoopFn = Callable[[int, Any, Any, Any], Sequence[Any]]


def raw_rnn(
    cell: Any,
    loop_fn: LoopFn,
    parallel_iterations: int | None = None,
    swap_memory: bool = False,
    scope: Any = None,
) -> tuple[Any, Any, Any]:
    """Run ``cell`` in a loop that ``loop_fn`` drives (TF's ``tf.nn.raw_rnn``).

    ``loop_fn(time, cell_output, cell_state, loop_state)`` returns ``(finished, next_input,
    next_cell_state, emit_output, next_loop_state)``:

    * first call: ``loop_fn(0, None, None, None)``; its ``next_cell_state`` is the initial state
      (structure ``cell.state_size``, leaves ``[B, size]``), its ``next_input`` the first input
      (``B`` is its leaves' first dim) and its ``emit_output`` the *emit structure*: ``None``
      (emit ``cell.output_size`` leaves in the state's dtype) or a structure of tensors WITHOUT
      the batch dim, e.g. ``(torch.zeros(2, 3, dtype=torch.int32), ...)``, whose shapes (with
      ``B`` prepended) and dtypes every later emit has; the values of that first emit are unused.
    * after step ``t`` (``time = t + 1``): the cell's raw output and new state; the return
      values give what is emitted at step ``t`` and what step ``t + 1`` reads.
    * ``finished``: a bool ``[B]`` tensor (a bool or 0-d bool tensor means every row); a row
      finished before step ``t`` still runs through the cell, but emits zeros at step ``t`` and
      keeps its state (``next_cell_state`` is ignored for it), exactly as TF's loop body.
      Finished rows stay finished (``finished |= next_finished``); the loop runs while any row
      is not finished.
    * ``next_loop_state``: anything ``loop_fn`` wants back at the next call (tensors, lists);
      ``None`` keeps the previous one. If the first call returned ``None``, the final loop state
      is ``None`` (TF's surrogate loop state; here ``loop_fn`` gets ``None``).

    ``time`` is a Python int (TF passed an int32 scalar tensor; ``inputs[time]`` and
    ``time >= sequence_length`` work the same). TF-only knobs (``parallel_iterations``,
    ``swap_memory``, ``scope``) have no effect; the cell's weights are TF's ``rnn/<cell>/...``.

    Returns:
        ``(emit, final_state, final_loop_state)``: ``emit`` is TF's ``emit_ta.stack()``, a
        ``[T, B, ...]`` tensor per leaf of the emit structure (``T`` = the number of steps run;
        ``T = 0`` if every row was finished at time 0); ``final_state`` has the cell's state
        structure.

    A ``dynamic_rnn`` written with it (``inputs`` ``[T, B, D]``, ``lengths`` ``[B]``)::

        def loop_fn(time, cell_output, cell_state, loop_state):
            state = cell.zero_state(B, inputs.dtype) if cell_output is None else cell_state
            finished = time >= lengths
            next_input = inputs[time] if not finished.all() else torch.zeros_like(inputs[0])
            return finished, next_input, state, cell_output, None

        outputs, final_state, _ = rk.raw_rnn(cell, loop_fn)
    """
    check_is_cell(cell, "cell")
    if not callable(loop_fn):
        raise TypeError(f"loop_fn must be a callable, got {type(loop_fn).__name__}")
    first = _call_loop_fn(loop_fn, 0, None, None, None)
    current_input, batch_size = _check_first_input(first[1])
    finished = _check_finished(first[0], batch_size, 0, current_input)
    state = _check_initial_state(first[2], cell, batch_size)
    zero_emit = _zero_emit(first[3], cell, state, batch_size)
    init_loop_state = loop_state = first[4]
    start_sequence = getattr(cell, "start_sequence", None)
    if callable(start_sequence):
        start_sequence()
    emitted: list[Any] = []
    time = 0
    while not bool(finished.all()):
        output, cell_state = _call_cell(cell, current_input, state, time)
        step = _call_loop_fn(loop_fn, time + 1, output, cell_state, loop_state)
        next_finished = _check_finished(step[0], batch_size, time + 1, current_input)
        next_input = _check_like(step[1], current_input, "next_input", time + 1)
        next_state = _check_like(step[2], state, "next_cell_state", time + 1)
        emit = _check_like(step[3], zero_emit, "emit_output", time + 1)
        if step[4] is not None:
            loop_state = step[4]
        emitted.append(map_state(lambda z, e: torch.where(_rows(finished, e), z, e), zero_emit, emit))
        state = map_state(lambda s, n: torch.where(_rows(finished, n), s, n), state, next_state)
        finished = finished | next_finished
        current_input, time = next_input, time + 1
    return _stack(zero_emit, emitted), state, (None if init_loop_state is None else loop_state)


def _call_loop_fn(loop_fn: LoopFn, time: int, output: Any, state: Any, loop_state: Any) -> Sequence[Any]:
    returned = loop_fn(time, output, state, loop_state)
    if not isinstance(returned, (tuple, list)) or len(returned) != 5:
        raise TypeError(
            f"loop_fn must return (finished, next_input, next_cell_state, emit_output, next_loop_state), "
            f"got {_describe(returned)} at time {time}"
        )
    return returned


def _check_first_input(next_input: Any) -> tuple[Any, int]:
    """The first ``next_input``: tensors of rank >= 1 with one batch size (returned)."""
    leaves = flatten_state(next_input)
    for leaf in leaves:
        check_tensor(leaf, "next_input (from loop_fn at time 0)")
        if leaf.dim() < 1:
            raise ValueError("next_input (from loop_fn at time 0) must have a batch dimension, got a scalar")
    batch_size = leaves[0].shape[0]
    for leaf in leaves[1:]:
        if leaf.shape[0] != batch_size:
            raise ValueError(
                f"next_input (from loop_fn at time 0): batch sizes differ: {list(leaf.shape)} vs "
                f"{list(leaves[0].shape)}"
            )
    return next_input, batch_size


def _check_finished(finished: Any, batch_size: int, time: int, like: Any) -> Tensor:
    """``finished`` as a bool ``[B]`` tensor on the inputs' device."""
    device = flatten_state(like)[0].device
    if isinstance(finished, bool):
        return torch.full((batch_size,), finished, device=device)
    if not isinstance(finished, Tensor) or finished.dtype != torch.bool:
        raise TypeError(
            f"finished (from loop_fn at time {time}) must be a bool tensor [batch_size], got {_describe(finished)}"
        )
    if finished.dim() == 0:
        return finished.to(device).expand(batch_size)
    if list(finished.shape) != [batch_size]:
        raise ValueError(
            f"finished (from loop_fn at time {time}) must have shape [{batch_size}] (one flag per row), "
            f"got {list(finished.shape)}"
        )
    return finished.to(device)


def _check_initial_state(state: Any, cell: Any, batch_size: int) -> Any:
    if state is None:
        raise ValueError(
            "next_cell_state from loop_fn at time 0 is the initial state and must not be None "
            "(return e.g. cell.zero_state(batch_size, dtype))"
        )
    first = flatten_state(state)[0]
    check_tensor(first, "next_cell_state (from loop_fn at time 0)")
    check_state(state, cell.state_size, batch_size, first.dtype, "next_cell_state (from loop_fn at time 0)")
    return state


def _zero_emit(emit_structure: Any, cell: Any, state: Any, batch_size: int) -> Any:
    """Zeros ``[B, ...]`` of the emit structure: ``cell.output_size`` in the state's dtype, or
    the per-row shapes and dtypes of the first call's ``emit_output``."""
    like = flatten_state(state)[0]
    if emit_structure is None:
        return zeros_for_size(cell.output_size, batch_size, like.dtype, like.device)
    for leaf in flatten_state(emit_structure):
        check_tensor(leaf, "emit_output (from loop_fn at time 0)")
    return map_state(lambda e: torch.zeros((batch_size, *e.shape), dtype=e.dtype, device=like.device), emit_structure)


def _call_cell(cell: Any, inputs: Any, state: Any, time: int) -> tuple[Any, Any]:
    output, new_state = cell(inputs, state)
    if not _same_structure(new_state, state):
        raise ValueError(
            f"the cell's new state at step {time} {_describe(new_state)} does not have the structure of "
            f"the state {_describe(state)}"
        )
    if not _same_structure(output, cell.output_size):
        raise ValueError(
            f"the cell's output at step {time} {_describe(output)} does not have the structure of "
            f"cell.output_size {cell.output_size}"
        )
    return output, new_state


def _check_like(value: Any, like: Any, argname: str, time: int) -> Any:
    """``value`` (from ``loop_fn``) with the structure, shapes and dtypes of ``like``."""
    where = f"{argname} (from loop_fn at time {time})"
    if value is None or not _same_structure(value, like):
        raise ValueError(f"{where} must have the structure of {_describe(like)}, got {_describe(value)}")
    for new, old in zip(flatten_state(value), flatten_state(like)):
        check_tensor(new, where)
        if new.shape != old.shape:
            raise ValueError(f"{where} must have shape {list(old.shape)} as before, got {list(new.shape)}")
        if new.dtype != old.dtype:
            raise TypeError(f"{where} must have dtype {old.dtype} as before, got {new.dtype}")
    return value


def _same_structure(a: Any, b: Any) -> bool:
    if is_nested(a) != is_nested(b):
        return False
    if not is_nested(a):
        return True
    return len(a) == len(b) and all(_same_structure(x, y) for x, y in zip(a, b))


def _stack(zero_emit: Any, emitted: list[Any]) -> Any:
    """TF's ``emit_ta.stack()``: ``[T, B, ...]`` per leaf (``[0, B, ...]`` after no step)."""
    if not emitted:
        return map_state(lambda z: z.unsqueeze(0)[:0], zero_emit)
    return map_state(lambda *steps: torch.stack(steps, 0), *emitted)
