"""``raw_rnn`` and ``static_state_saving_rnn``: TF 1.15's ``tf.nn`` runners that let user code
drive the loop (``tensorflow/python/ops/rnn.py``).

``raw_rnn(cell, loop_fn)`` calls ``loop_fn(time, cell_output, cell_state, loop_state)`` before
the first step and after every step; it says which rows are finished, what the cell reads next,
what state it starts from and what is emitted. TF collected the emitted values in a
``TensorArray`` (``emit_ta``) that callers turned into a tensor with ``emit_ta.stack()``; here
that stacked tensor is returned directly, time-major ``[T, B, ...]`` per leaf of the emit
structure (``T`` = the number of steps the loop ran).

``static_state_saving_rnn`` runs :func:`rnnkit.static_rnn` from states read from a *state saver*
(``state(name)``) and writes the final states back (``save_state(name, value)``): truncated
BPTT over segments of long sequences. :class:`InMemoryStateSaver` is a ready one.

Both run the cell under TF's scope ``"rnn"``: its weights are ``rk.tf_variables(cell, "rnn")``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from ._checks import as_dtype, check_batch_size, check_is_cell, check_state, check_tensor
from .rnn import _check_sequence_length, _check_step_list, static_rnn
from .state import _describe, flatten_state, is_nested, map_state, pack_state, zeros_for_size

__all__ = ["InMemoryStateSaver", "StateSaver", "raw_rnn", "static_state_saving_rnn"]

#: ``loop_fn(time, cell_output, cell_state, loop_state) -> (finished, next_input,
#: next_cell_state, emit_output, next_loop_state)``
LoopFn = Callable[[int, Any, Any, Any], Sequence[Any]]


# --------------------------------------------------------------------------------------------
# raw_rnn


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


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


def _stack(zero_emit: Any, emitted: list[Any]) -> Any:
    """TF's ``emit_ta.stack()``: ``[T, B, ...]`` per leaf (``[0, B, ...]`` after no step)."""
    if not emitted:
        return map_state(lambda z: z.unsqueeze(0)[:0], zero_emit)
    return map_state(lambda *steps: torch.stack(steps, 0), *emitted)


# --------------------------------------------------------------------------------------------
# static_state_saving_rnn


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
