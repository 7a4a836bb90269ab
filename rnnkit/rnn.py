"""The runners: ``dynamic_rnn``, ``static_rnn`` and their bidirectional forms.

They drive a cell over time with TF's exact semantics for ``sequence_length``: at steps
``t >= length[b]`` row ``b``'s outputs are exactly zero and its state is carried through, so
the final state is the state after step ``length[b] - 1`` (length 0: the initial state).
Steps after the longest sequence are not computed (their outputs are zeros, as in TF).

TF-only knobs (``parallel_iterations``, ``swap_memory``, ``scope``) are accepted and have no
effect.

The state's dtype (which the outputs share): floating (or complex) inputs give it, and
``dtype``/``initial_state`` must agree with them; with neither, the state starts at zeros of the
inputs' dtype (TF required ``dtype``). Other inputs (integer ids for an ``EmbeddingWrapper``,
bools) say nothing of it, as in TF: it comes from ``dtype``, else from ``initial_state``, and
with neither it is TF's ``ValueError``. The runners pass such inputs through (masking, time-major
transposes and reversal work on any dtype); the cell checks what it is given.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import as_dtype, check_is_cell, check_state, check_tensor
from .fused import select_plan
from .fused.packing import graph_zero
from .state import _describe, flatten_state, map_state, pack_state, zeros_for_size

__all__ = [
    "bidirectional_dynamic_rnn",
    "dynamic_rnn",
    "reverse_sequence",
    "static_bidirectional_rnn",
    "static_rnn",
]


def dynamic_rnn(
    cell: Any,
    inputs: Any,
    sequence_length: Any = None,
    initial_state: Any = None,
    dtype: torch.dtype | None = None,
    parallel_iterations: int | None = None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope: Any = None,
    backend: str = "auto",
) -> tuple[Any, Any]:
    """Run ``cell`` over the time axis of ``inputs``.

    Args:
        cell: an RNNCell (one step: ``cell(x_t, state) -> (out_t, new_state)``).
        inputs: ``[B, T, D]`` (``[T, B, D]`` when ``time_major``), or a nested tuple of such
            tensors with the same ``B`` and ``T``; integer ids for an ``EmbeddingWrapper`` are
            ``[B, T, 1]`` (rank 3, as TF requires), and need ``dtype`` or ``initial_state``.
        sequence_length: optional ``[B]`` integer lengths (tensor, list or array), each >= 0;
            a length above ``T`` means all ``T`` steps.
        initial_state: a state of structure ``cell.state_size`` with leaves ``[B, size]``;
            default zeros.
        dtype: dtype of the zero initial state and of the outputs; default the inputs' dtype
            when they are floating (then it must be theirs), required for other inputs
            unless ``initial_state`` is given.
        time_major: layout of both inputs and outputs.
        backend: ``"reference"`` steps the cell in a Python loop (the specification);
            ``"fused"`` runs whole layers with hand-written backward passes (LSTM, GRU and
            BasicRNN cells, stacks, residual wrappers, input/output dropout; raises for anything
            else); ``"auto"`` (default) takes ``"fused"`` where it applies.

    Returns:
        ``(outputs, final_state)``: outputs ``[B, T, output_size]`` (or ``[T, B, ...]``),
        zero past each length; the final state, of the cell's state structure.
    """
    check_is_cell(cell, "cell")
    leaves, batch_size, _ = _check_sequence_inputs(inputs, time_major)
    lengths = _check_sequence_length(sequence_length, batch_size, leaves[0].device)
    return _dynamic(cell, inputs, lengths, initial_state, dtype, time_major, "initial_state", backend)


def static_rnn(
    cell: Any,
    inputs: Sequence[Any],
    initial_state: Any = None,
    dtype: torch.dtype | None = None,
    sequence_length: Any = None,
    scope: Any = None,
    backend: str = "auto",
) -> tuple[list[Any], Any]:
    """Run ``cell`` over a Python list of ``T`` step inputs, each ``[B, D]`` (or nested).

    Same semantics and ``backend`` as :func:`dynamic_rnn` (note TF's argument order:
    ``initial_state``, ``dtype``, then ``sequence_length``); integer ids for an
    ``EmbeddingWrapper`` are steps ``[B]`` or ``[B, 1]``. Returns ``(list of T outputs
    [B, output_size], final_state)``.
    """
    check_is_cell(cell, "cell")
    batch_size, first = _check_step_list(inputs)
    lengths = _check_sequence_length(sequence_length, batch_size, first.device)
    return _static(cell, inputs, lengths, initial_state, dtype, "initial_state", backend)


def bidirectional_dynamic_rnn(
    cell_fw: Any,
    cell_bw: Any,
    inputs: Any,
    sequence_length: Any = None,
    initial_state_fw: Any = None,
    initial_state_bw: Any = None,
    dtype: torch.dtype | None = None,
    parallel_iterations: int | None = None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope: Any = None,
    backend: str = "auto",
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """A forward and a backward :func:`dynamic_rnn` over the same inputs.

    The backward cell reads each sequence reversed within its own length (padding stays at the
    end); its outputs are reversed back, so ``output_bw[t]`` is aligned with input ``t``.
    Lengths above ``T`` are an error here (as in TF). Returns
    ``((output_fw, output_bw), (state_fw, state_bw))``; concatenate the outputs yourself
    (``torch.cat(outputs, -1)``).
    """
    check_is_cell(cell_fw, "cell_fw")
    check_is_cell(cell_bw, "cell_bw")
    leaves, batch_size, num_steps = _check_sequence_inputs(inputs, time_major)
    lengths = _check_sequence_length(sequence_length, batch_size, leaves[0].device, max_length=num_steps)
    out_fw, state_fw = _dynamic(
        cell_fw, inputs, lengths, initial_state_fw, dtype, time_major, "initial_state_fw", backend
    )
    time_axis = 0 if time_major else 1
    reversed_inputs = map_state(lambda x: reverse_sequence(x, lengths, time_axis), inputs)
    out_bw, state_bw = _dynamic(
        cell_bw, reversed_inputs, lengths, initial_state_bw, dtype, time_major, "initial_state_bw", backend
    )
    out_bw = map_state(lambda y: reverse_sequence(y, lengths, time_axis), out_bw)
    return (out_fw, out_bw), (state_fw, state_bw)


def static_bidirectional_rnn(
    cell_fw: Any,
    cell_bw: Any,
    inputs: Sequence[Any],
    initial_state_fw: Any = None,
    initial_state_bw: Any = None,
    dtype: torch.dtype | None = None,
    sequence_length: Any = None,
    scope: Any = None,
    backend: str = "auto",
) -> tuple[list[Any], Any, Any]:
    """The list form of :func:`bidirectional_dynamic_rnn`.

    Returns ``(outputs, state_fw, state_bw)`` with ``outputs[t] = concat([fw_t, bw_t], 1)``
    (per leaf for nested outputs).
    """
    check_is_cell(cell_fw, "cell_fw")
    check_is_cell(cell_bw, "cell_bw")
    batch_size, first = _check_step_list(inputs)
    lengths = _check_sequence_length(sequence_length, batch_size, first.device, max_length=len(inputs))
    out_fw, state_fw = _static(cell_fw, inputs, lengths, initial_state_fw, dtype, "initial_state_fw", backend)
    reversed_steps = _reverse_steps(inputs, lengths)
    out_bw, state_bw = _static(cell_bw, reversed_steps, lengths, initial_state_bw, dtype, "initial_state_bw", backend)
    out_bw = _reverse_steps(out_bw, lengths)
    outputs = [map_state(lambda f, b: torch.cat([f, b], 1), f, b) for f, b in zip(out_fw, out_bw)]
    return outputs, state_fw, state_bw


def reverse_sequence(inputs: Tensor, sequence_length: Tensor | None, time_axis: int = 1) -> Tensor:
    """Reverse each row's first ``sequence_length[b]`` steps along ``time_axis`` (0 or 1; the
    other of the two is the batch axis); later steps stay in place. ``None`` reverses all."""
    if sequence_length is None:
        return inputs.flip(time_axis)
    num_steps = inputs.shape[time_axis]
    t = torch.arange(num_steps, device=inputs.device)
    lengths = sequence_length.to(inputs.device).unsqueeze(1)  # [B, 1]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [B, T]
    if time_axis == 0:
        index = index.t()
    index = index.reshape(*index.shape, *([1] * (inputs.dim() - 2))).expand_as(inputs)
    return inputs.gather(time_axis, index)


# --------------------------------------------------------------------------------------------
# the loop


def _dynamic(
    cell: Any,
    inputs: Any,
    lengths: Tensor | None,
    initial_state: Any,
    dtype: torch.dtype | None,
    time_major: bool,
    state_argname: str,
    backend: str,
) -> tuple[Any, Any]:
    """dynamic_rnn on checked inputs and lengths: split the time axis, run, stack."""
    leaves = flatten_state(inputs)
    like, time_axis = leaves[0], (0 if time_major else 1)
    batch_size, num_steps = like.shape[1 - time_axis], like.shape[time_axis]
    state, state_dtype = _initial_state(cell, initial_state, dtype, batch_size, leaves, state_argname, _NO_DTYPE)
    plan = select_plan(cell, inputs, backend)
    if plan is not None:
        return plan.run(inputs, lengths, state, time_major)
    steps = [pack_state(inputs, [leaf.select(time_axis, t) for leaf in leaves]) for t in range(num_steps)]
    outputs, state = _run(cell, steps, lengths, state, batch_size, state_dtype, like.device)
    if not outputs:
        empty = zeros_for_size(cell.output_size, batch_size, state_dtype, like.device)
        return map_state(lambda z: z.unsqueeze(time_axis).narrow(time_axis, 0, 0), empty), state
    return map_state(lambda *per_step: torch.stack(per_step, time_axis), *outputs), state


def _static(
    cell: Any,
    steps: Sequence[Any],
    lengths: Tensor | None,
    initial_state: Any,
    dtype: Any,
    state_argname: str,
    backend: str,
) -> tuple[list[Any], Any]:
    """static_rnn on a checked list of steps (fused: stacked along a time axis)."""
    leaves = flatten_state(steps[0])
    like = leaves[0]
    state, state_dtype = _initial_state(
        cell, initial_state, dtype, like.shape[0], leaves, state_argname, _NO_DTYPE_STATIC
    )
    single_tensors = all(isinstance(step, Tensor) and step.shape == like.shape for step in steps)
    plan = select_plan(cell, like if single_tensors else tuple(steps), backend)
    if plan is not None:
        outputs, state = plan.run(torch.stack(list(steps)), lengths, state, time_major=True)
        return list(outputs.unbind(0)), state
    return _run(cell, list(steps), lengths, state, like.shape[0], state_dtype, like.device)


def _run(
    cell: Any,
    steps: list[Any],
    lengths: Tensor | None,
    state: Any,
    batch_size: int,
    output_dtype: torch.dtype,
    device: torch.device,
) -> tuple[list[Any], Any]:
    """Step ``cell`` over ``steps``; zero the outputs and carry the state past each length.

    ``output_dtype`` (the state's) is the dtype of the zero outputs when no step runs (every
    length 0): TF's ``_infer_state_dtype``, not the inputs' dtype, which ids do not share.

    Rows past their length take the step on zero inputs, whose results are then dropped: the
    cell never sees what the padding holds, so NaN or inf there cannot reach the gradients
    (``torch.where`` passes a zero gradient, but ``0 * NaN`` would still be NaN)."""
    start_sequence = getattr(cell, "start_sequence", None)
    if callable(start_sequence):
        start_sequence()
    num_steps = len(steps)
    if lengths is None or not batch_size:  # an empty batch runs every step, as it does without lengths
        num_live, always_live = num_steps, num_steps
    else:
        num_live = min(num_steps, int(lengths.max()))
        always_live = min(num_steps, int(lengths.min()))
    outputs = []
    for t in range(num_live):
        if lengths is not None and t >= always_live:
            alive = lengths > t  # [B]
            step = map_state(lambda x: torch.where(_rows(alive, x), x, torch.zeros_like(x)), steps[t])
            output, new_state = cell(step, state)
            output = map_state(lambda o: torch.where(_rows(alive, o), o, torch.zeros_like(o)), output)
            new_state = map_state(lambda n, s: torch.where(_rows(alive, n), n, s), new_state, state)
        else:
            output, new_state = cell(steps[t], state)
        outputs.append(output)
        state = new_state
    if num_live < num_steps:
        if outputs:
            padding = map_state(torch.zeros_like, outputs[0])
        else:  # every length is 0: zeros, connected to the graph (as the fused path's)
            padding = zeros_for_size(cell.output_size, batch_size, output_dtype, device)
            weights = cell.parameters() if callable(getattr(cell, "parameters", None)) else ()
            zero = graph_zero([*flatten_state(steps), *weights, *flatten_state(state)])
            padding = padding if zero is None else map_state(lambda z: z + zero, padding)
        outputs.extend([padding] * (num_steps - num_live))
    return outputs, state


def _rows(alive: Tensor, like: Tensor) -> Tensor:
    """``alive`` [B] shaped to broadcast over ``like`` [B, ...]."""
    return alive.reshape(-1, *([1] * (like.dim() - 1)))


def _reverse_steps(steps: Sequence[Any], lengths: Tensor | None) -> list[Any]:
    """A list of per-step structures, reversed within each row's length."""
    stacked = map_state(lambda *per_step: torch.stack(per_step, 0), *steps)
    leaves = flatten_state(map_state(lambda x: reverse_sequence(x, lengths, 0), stacked))
    return [pack_state(steps[0], [leaf[t] for leaf in leaves]) for t in range(len(steps))]


# --------------------------------------------------------------------------------------------
# argument checks


def _check_sequence_inputs(inputs: Any, time_major: bool) -> tuple[list[Tensor], int, int]:
    """The input leaves, checked; with the batch size and the number of steps."""
    leaves = flatten_state(inputs)
    if not leaves:
        raise ValueError("inputs must contain at least one tensor, got an empty structure")
    layout = "[time, batch, depth]" if time_major else "[batch, time, depth]"
    batch_axis, time_axis = (1, 0) if time_major else (0, 1)
    for leaf in leaves:
        check_tensor(leaf, "inputs")
        if leaf.dim() < 3:
            ids = leaf.dim() == 2 and not _is_floating(leaf.dtype)
            hint = " (for ids add a depth axis of 1: ids.unsqueeze(-1), as TF requires)" if ids else ""
            raise ValueError(
                f"inputs must have rank >= 3 {layout} (time_major={time_major}), "
                f"got rank {leaf.dim()} with shape {list(leaf.shape)} and dtype {leaf.dtype}{hint}"
            )
    first = leaves[0]
    for leaf in leaves[1:]:
        if leaf.shape[time_axis] != first.shape[time_axis]:
            raise ValueError(
                "inputs: time steps is not the same for all the elements in the input: "
                f"{leaf.shape[time_axis]} vs {first.shape[time_axis]}"
            )
        if leaf.shape[batch_axis] != first.shape[batch_axis]:
            raise ValueError(
                "inputs: batch_size is not the same for all the elements in the input: "
                f"{leaf.shape[batch_axis]} vs {first.shape[batch_axis]}"
            )
    return leaves, first.shape[batch_axis], first.shape[time_axis]


def _check_step_list(inputs: Any) -> tuple[int, Tensor]:
    """static_rnn's inputs: a non-empty list of ``[B, ...]`` steps with one batch size."""
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(
            f"Argument `inputs` must be a sequence (list of [batch, depth] steps). Received: {_describe(inputs)}"
        )
    if not inputs:
        raise ValueError("Argument `inputs` must not be empty.")
    first = check_tensor(flatten_state(inputs[0])[0], "inputs[0]")
    for t, step in enumerate(inputs):
        for leaf in flatten_state(step):
            check_tensor(leaf, f"inputs[{t}]")
            if leaf.dim() < 1:
                raise ValueError(f"inputs[{t}] must have a batch dimension ([batch, depth]), got a scalar")
            if leaf.shape[0] != first.shape[0]:
                raise ValueError(
                    f"inputs[{t}] has shape {list(leaf.shape)}; every step must have batch size "
                    f"{first.shape[0]} (the batch size of inputs[0])"
                )
    return first.shape[0], first


@torch.compiler.disable(reason="checks the values of sequence_length: run eagerly, not specialised on them")
def _check_sequence_length(
    sequence_length: Any, batch_size: int, device: torch.device, max_length: int | None = None
) -> Tensor | None:
    """``sequence_length`` as an int64 ``[B]`` tensor on ``device`` (or ``None``).

    Under ``torch.compile`` it runs eagerly: traced, its checks of the values would be graph
    breaks, and dynamo would specialise (recompile) on every new minimum and maximum.

    Takes a tensor, a list or tuple of Python/numpy numbers (or 0-d tensors), or a numpy array.
    A tensor may sit on the inputs' device or on the CPU (as ``pack_padded_sequence`` takes
    them). Every other value raises a ``TypeError``/``ValueError`` naming ``sequence_length``,
    what was expected and what came.
    """
    if sequence_length is None:
        return None
    expected = f"a vector of length batch_size ({batch_size}), one integer length per row"
    if isinstance(sequence_length, (list, tuple, np.ndarray)):
        sequence_length = _lengths_from_values(sequence_length, expected)
    if not isinstance(sequence_length, Tensor):
        raise ValueError(f"sequence_length must be {expected}, got {_describe(sequence_length)}")
    if sequence_length.device != device and sequence_length.device.type != "cpu":
        raise ValueError(
            f"sequence_length is on device {sequence_length.device} but the inputs are on {device}; "
            "pass the lengths on the inputs' device or on the CPU"
        )
    if sequence_length.dim() == 0:
        raise ValueError(f"sequence_length must be {expected}, got a 0-d tensor (a scalar: {sequence_length.item()})")
    if sequence_length.dim() != 1 or sequence_length.shape[0] != batch_size:
        raise ValueError(
            f"sequence_length must be a vector of length batch_size ({batch_size}), "
            f"got shape {list(sequence_length.shape)}"
        )
    if sequence_length.dtype == torch.bool or sequence_length.is_complex():
        raise TypeError(f"sequence_length must hold integers, got dtype {sequence_length.dtype}")
    if sequence_length.is_floating_point():
        whole = torch.isfinite(sequence_length) & (sequence_length == sequence_length.trunc())
        if not bool(whole.all()):
            raise ValueError(f"sequence_length must hold whole numbers, got {sequence_length.tolist()}")
    if batch_size and int(sequence_length.min()) < 0:
        raise ValueError(f"sequence_length must be >= 0, got {sequence_length.tolist()}")
    if max_length is not None and batch_size and int(sequence_length.max()) > max_length:
        raise ValueError(
            f"sequence_length must be <= the number of time steps ({max_length}) for a bidirectional "
            f"rnn, got {sequence_length.tolist()}"
        )
    return sequence_length.to(device=device, dtype=torch.int64)


def _lengths_from_values(values: list | tuple | np.ndarray, expected: str) -> Tensor:
    """A list, tuple or numpy array of lengths as a tensor (its dtype checked by the caller);
    ``TypeError``/``ValueError`` for strings, ``None``, nested sequences and other objects."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return torch.as_tensor(values)
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        raise TypeError(f"sequence_length must hold integers, got a numpy array of dtype {values.dtype}")
    items = []
    for i, item in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
        if isinstance(item, (Tensor, np.ndarray)) and item.ndim == 0:
            item = item.item()
        if isinstance(item, (list, tuple, Tensor, np.ndarray)):
            raise ValueError(
                f"sequence_length must be {expected}, got a nested sequence: element {i} is {_describe(item)}"
            )
        if isinstance(item, bool) or not isinstance(item, (int, float, np.integer, np.floating)):
            raise TypeError(
                f"sequence_length must hold integers (one length per row), got {item!r} "
                f"({type(item).__name__}) at index {i}"
            )
        items.append(item)
    return torch.as_tensor(np.asarray(items))


_NO_DTYPE = "If there is no initial_state, you must give a dtype."  # TF's dynamic_rnn
_NO_DTYPE_STATIC = "If no initial_state is provided, dtype must be specified."  # TF's static_rnn


def _is_floating(dtype: torch.dtype) -> bool:
    """Floating or complex: the inputs whose dtype is the state's (as ``check_floating``)."""
    return dtype.is_floating_point or dtype.is_complex


def _initial_state(
    cell: Any,
    initial_state: Any,
    dtype: Any,
    batch_size: int,
    leaves: list[Tensor],
    argname: str,
    no_dtype_message: str,
) -> tuple[Any, torch.dtype]:
    """The checked initial state (or zeros) and its dtype, which the outputs share.

    Floating inputs (every leaf of ``leaves``, one step's) fix it: ``dtype`` and the state must
    be the first leaf's dtype. Other inputs (integer ids, bools) leave it to ``dtype``, else to
    ``initial_state`` (one dtype for all its tensors, TF's ``_infer_state_dtype``); with neither,
    ``ValueError`` with TF's ``no_dtype_message``."""
    if dtype is not None:
        dtype = as_dtype(dtype)
    other = next((leaf.dtype for leaf in leaves if not _is_floating(leaf.dtype)), None)
    if other is None:
        if dtype is not None and dtype != leaves[0].dtype:
            raise TypeError(f"dtype={dtype} differs from the inputs' dtype {leaves[0].dtype}; cast the inputs")
        dtype, source = leaves[0].dtype, "the inputs have dtype"
    elif dtype is not None:
        source = "dtype= is"
    elif initial_state is not None:
        dtype = next((x.dtype for x in flatten_state(initial_state) if isinstance(x, Tensor)), None)
        source = f"the first tensor of {argname} has dtype"
    else:
        raise ValueError(
            f"inputs have dtype {other}, which does not say the state's dtype. {no_dtype_message} "
            f"(give {argname} or dtype=, e.g. dtype=torch.float32). Such inputs suit cells that take them "
            "(EmbeddingWrapper takes integer ids); any other RNN cell only supports floating point inputs."
        )
    if initial_state is not None:
        check_state(initial_state, cell.state_size, batch_size, dtype, argname, dtype_source=source)
        return initial_state, dtype
    return _zero_state(cell, batch_size, dtype, leaves[0].device), dtype


def _zero_state(cell: Any, batch_size: int, dtype: torch.dtype, device: torch.device) -> Any:
    """``cell.zero_state`` on ``device`` (also for a user's cell whose ``zero_state`` takes
    ``(batch_size, dtype)`` only, as in TF)."""
    try:
        return cell.zero_state(batch_size, dtype, device=device)
    except TypeError:
        return map_state(lambda z: z.to(device), cell.zero_state(batch_size, dtype))
