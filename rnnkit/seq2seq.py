"""The sequence losses and the plain decoder of TF 1.15's seq2seq modules, on PyTorch tensors.

Three TF 1.x APIs, with TF's argument names and order and TF 1.15's exact math:

- :func:`sequence_loss` is ``tf.contrib.seq2seq.sequence_loss``: one ``[B, T, V]`` logits
  tensor, ``[B, T]`` targets and weights; the result is ``[B, T]``, ``[B]``, ``[T]`` or a
  scalar, depending on which axes are reduced.
- :func:`sequence_loss_by_example`, :func:`legacy_sequence_loss` and :func:`rnn_decoder` are
  ``tf.contrib.legacy_seq2seq``'s ``sequence_loss_by_example``, ``sequence_loss`` and
  ``rnn_decoder``: Python lists of ``T`` per-step tensors. The legacy ``sequence_loss`` is
  named ``legacy_sequence_loss`` here so that it does not clash with the contrib one; the
  namespace :data:`legacy` holds all three under TF's own names, so that a TF program's
  ``tf.contrib.legacy_seq2seq.sequence_loss_by_example(...)`` reads
  ``rnnkit.seq2seq.legacy.sequence_loss_by_example(...)``.

The PTB tutorial's call, for example::

    loss = legacy.sequence_loss_by_example(
        [logits],                                  # [B*T, V]
        [targets.reshape(-1)],                     # [B*T], integer
        [torch.ones(B * T, dtype=logits.dtype)])   # [B*T]
    cost = loss.sum() / B

Every argument is checked (rank, shape, dtype, list lengths) and a bad one raises a
``ValueError`` or ``TypeError`` that names it with what was expected and what came: nothing is
broadcast (floating dtypes of logits and weights mix by PyTorch's type promotion, so that
float32 weights serve bfloat16/autocast logits; TF would insist on one dtype). Out-of-range
targets raise too (TF's CPU kernel does; PyTorch's ``ignore_index`` of ``-100`` is not
honoured). ``name`` and ``scope`` are accepted for TF compatibility and have
no effect.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_is_cell

__all__ = [
    "legacy",
    "legacy_sequence_loss",
    "rnn_decoder",
    "sequence_loss",
    "sequence_loss_by_example",
]

# TF's legacy losses add this to the total weight ("to avoid division by 0 for all-0 weights").
_LEGACY_EPSILON = 1e-12


# --------------------------------------------------------------------------------------------
# checks
def _shape(value: Tensor) -> list[int]:
    return list(value.shape)


def _tensor(value: Any, argname: str, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{argname} must be a torch.Tensor ({what}), got {type(value).__name__}")
    return value


def _check_logits(value: Any, argname: str, rank: int, what: str) -> Tensor:
    value = _tensor(value, argname, what)
    if value.dim() != rank:
        raise ValueError(f"{argname} must be a {what} tensor (rank {rank}), got shape {_shape(value)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{argname} must have a floating dtype, got {value.dtype}")
    return value


def _check_integer(value: Tensor, argname: str) -> None:
    dtype = value.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(
            f"{argname} must have an integer dtype (class ids, as TF's sparse softmax cross-entropy "
            f"takes), got {dtype}"
        )


def _check_weights(value: Any, argname: str, shape: list[int], what: str) -> Tensor:
    value = _tensor(value, argname, what)
    if _shape(value) != shape:
        raise ValueError(f"{argname} must have shape {shape} ({what}), got shape {_shape(value)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{argname} must have a floating dtype (TF's weights are float), got {value.dtype}")
    return value


def _check_in_range(targets: Tensor, num_classes: int, argname: str) -> None:
    """TF's CPU kernel rejects a class id outside ``[0, num_classes)``; so do we (one sync)."""
    if targets.numel() == 0 or torch.compiler.is_compiling():
        return
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{argname} must hold class ids in [0, {num_classes}) (num_decoder_symbols = the "
            f"logits' last dim), got {bad}"
        )


def _check_flag(value: Any, argname: str) -> bool:
    if isinstance(value, Tensor):
        raise TypeError(f"{argname} must be a Python bool, got a tensor")
    return bool(value)


def _custom_crossent(
    softmax_loss_function: Callable[..., Any], labels: Any, logits: Tensor, expected: list[int], what: str
) -> Tensor:
    """Call a user loss as TF does (by keyword) and check that it returned one loss per row."""
    if not callable(softmax_loss_function):
        raise TypeError(
            f"softmax_loss_function must be callable as f(labels=..., logits=...), got "
            f"{type(softmax_loss_function).__name__}"
        )
    crossent = softmax_loss_function(labels=labels, logits=logits)
    if not isinstance(crossent, Tensor):
        raise TypeError(
            f"softmax_loss_function must return a torch.Tensor of shape {expected} ({what}), got "
            f"{type(crossent).__name__}"
        )
    if _shape(crossent) != expected:
        raise ValueError(
            f"softmax_loss_function must return losses of shape {expected} ({what}), got shape "
            f"{_shape(crossent)}"
        )
    return crossent


def _div_no_nan(numerator: Tensor, denominator: Tensor) -> Tensor:
    """TF's ``div_no_nan``: ``numerator / denominator``, and 0 (with zero gradients) where the
    denominator is 0."""
    zero = denominator == 0
    safe = torch.where(zero, torch.ones_like(denominator), denominator)
    return torch.where(zero, torch.zeros_like(numerator), numerator / safe)


# --------------------------------------------------------------------------------------------
# tf.contrib.seq2seq
def sequence_loss(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor,
    average_across_timesteps: bool = True,
    average_across_batch: bool = True,
    sum_over_timesteps: bool = False,
    sum_over_batch: bool = False,
    softmax_loss_function: Callable[..., Tensor] | None = None,
    name: str | None = None,
) -> Tensor:
    """Weighted cross-entropy of a batch of sequences: ``tf.contrib.seq2seq.sequence_loss``
    (TF 1.15).

    Args:
        logits: ``[B, T, V]`` floating (``V`` = num_decoder_symbols).
        targets: ``[B, T]`` integer class ids in ``[0, V)``.
        weights: ``[B, T]`` floating; a 0/1 mask for padded batches
            (``rnnkit``'s ``sequence_length`` → ``torch.arange(T) < lengths[:, None]``).
        average_across_timesteps: sum over time and divide by the summed weights of each axis
            slice (``[B]``-shaped sums of ``weights``).
        average_across_batch: sum over the batch and divide by the summed weights.
        sum_over_timesteps: sum over time and divide by the number of nonzero weights.
        sum_over_batch: sum over the batch and divide by the number of nonzero weights.
        softmax_loss_function: ``f(labels=[B*T] targets, logits=[B*T, V]) -> [B*T]`` losses, used
            in place of the sparse softmax cross-entropy (called by keyword, as TF calls it).
        name: ignored (TF's op name).

    Per target, ``crossent[b, t] = weights[b, t] * (logsumexp(logits[b, t]) -
    logits[b, t, targets[b, t]])``; then, exactly as TF 1.15 does (every division is TF's
    ``div_no_nan``: 0 where the divisor is 0, e.g. all-zero weights):

    - both ``average_across_*``: scalar ``sum(crossent) / sum(weights)`` (the default: the
      weighted mean log-perplexity per symbol);
    - both ``sum_over_*``: scalar ``sum(crossent) / count_nonzero(weights)``;
    - one ``average_across_*`` flag: ``[B]`` (timesteps) or ``[T]`` (batch), that axis summed
      and divided by the weights summed over it;
    - otherwise one ``sum_over_*`` flag: ``[B]`` or ``[T]``, that axis summed and divided by the
      nonzero weights counted over it;
    - no flag: the weighted ``[B, T]`` cross-entropy.

    TF's precedence is kept when flags of both kinds are set on different axes: one
    ``average_across_*`` flag wins and the ``sum_over_*`` flag of the other axis has no effect
    (``average_across_timesteps=True, sum_over_batch=True`` gives ``[B]``, as in TF).

    Raises:
        ValueError: a rank or shape is wrong, a target is out of range, or
            ``average_across_X`` and ``sum_over_X`` are both set for one axis (TF's rule).
        TypeError: a non-tensor argument, floating/bool targets, non-floating logits/weights.
    """
    logits = _check_logits(logits, "logits", 3, "[batch_size, sequence_length, num_decoder_symbols]")
    batch_size, num_steps, num_classes = logits.shape
    targets = _tensor(targets, "targets", "[batch_size, sequence_length]")
    if targets.dim() != 2:
        raise ValueError(
            f"targets must be a [batch_size, sequence_length] tensor (rank 2), got shape {_shape(targets)}"
        )
    if _shape(targets) != [batch_size, num_steps]:
        raise ValueError(
            f"targets must have shape {[batch_size, num_steps]} (the logits' [batch_size, "
            f"sequence_length]), got shape {_shape(targets)}"
        )
    weights = _tensor(weights, "weights", "[batch_size, sequence_length]")
    if weights.dim() != 2:
        raise ValueError(
            f"weights must be a [batch_size, sequence_length] tensor (rank 2), got shape {_shape(weights)}"
        )
    weights = _check_weights(weights, "weights", [batch_size, num_steps], "the logits' [batch_size, sequence_length]")
    avg_t = _check_flag(average_across_timesteps, "average_across_timesteps")
    avg_b = _check_flag(average_across_batch, "average_across_batch")
    sum_t = _check_flag(sum_over_timesteps, "sum_over_timesteps")
    sum_b = _check_flag(sum_over_batch, "sum_over_batch")
    if avg_t and sum_t:
        raise ValueError("average_across_timesteps and sum_over_timesteps cannot be set to True at same time.")
    if avg_b and sum_b:
        raise ValueError("average_across_batch and sum_over_batch cannot be set to True at same time.")

    logits_flat = logits.reshape(-1, num_classes)
    targets_flat = targets.reshape(-1)
    if softmax_loss_function is None:
        _check_integer(targets, "targets")
        _check_in_range(targets_flat, num_classes, "targets")
        crossent = F.cross_entropy(logits_flat, targets_flat.long(), reduction="none")
    else:
        crossent = _custom_crossent(
            softmax_loss_function, targets_flat, logits_flat, [batch_size * num_steps], "batch_size * sequence_length"
        )
    crossent = crossent * weights.reshape(-1)

    if avg_t and avg_b:
        return _div_no_nan(crossent.sum(), weights.sum())
    if sum_t and sum_b:
        count = torch.count_nonzero(weights).to(crossent.dtype)
        return _div_no_nan(crossent.sum(), count)
    crossent = crossent.reshape(batch_size, num_steps)
    if avg_t or avg_b:
        axis = 0 if avg_b else 1
        return _div_no_nan(crossent.sum(axis), weights.sum(axis))
    if sum_t or sum_b:
        axis = 0 if sum_b else 1
        count = torch.count_nonzero(weights, dim=axis).to(crossent.dtype)
        return _div_no_nan(crossent.sum(axis), count)
    return crossent


# --------------------------------------------------------------------------------------------
# tf.contrib.legacy_seq2seq
def _check_list(value: Any, argname: str, what: str) -> list[Any]:
    if isinstance(value, Tensor):
        raise TypeError(
            f"{argname} must be a list of per-step tensors ({what} each), got one tensor of shape "
            f"{_shape(value)}; wrap it in a list ([{argname}]) as the PTB tutorial does"
        )
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{argname} must be a list of per-step tensors ({what} each), got {type(value).__name__}")
    return list(value)


def sequence_loss_by_example(
    logits: Sequence[Tensor],
    targets: Sequence[Tensor],
    weights: Sequence[Tensor],
    average_across_timesteps: bool = True,
    softmax_loss_function: Callable[..., Tensor] | None = None,
    name: str | None = None,
) -> Tensor:
    """Weighted cross-entropy per sequence: ``tf.contrib.legacy_seq2seq.sequence_loss_by_example``.

    Args:
        logits: a list of ``T`` tensors ``[B, V_t]`` (floating).
        targets: a list of ``T`` integer tensors ``[B]`` of class ids in ``[0, V_t)``; ``[B, 1]``
            is accepted too (TF reshapes each to ``[-1]``).
        weights: a list of ``T`` floating tensors ``[B]``.
        average_across_timesteps: divide each sequence's loss by its total weight
            ``sum_t weights[t] + 1e-12``.
        softmax_loss_function: ``f(labels=targets[t], logits=logits[t]) -> [B]`` losses, in place
            of the sparse softmax cross-entropy; ``targets[t]`` is passed unchanged (unchecked).
        name: ignored.

    Returns ``[B]``: ``log_perps = sum_t crossent_t * weights[t]``, divided by
    ``sum_t weights[t] + 1e-12`` when ``average_across_timesteps`` (TF's epsilon: all-zero
    weights give 0).

    The PTB tutorial's call is ``sequence_loss_by_example([logits], [targets.reshape(-1)],
    [torch.ones(B * T, dtype=logits.dtype)])`` with ``logits`` ``[B*T, V]``.

    Raises:
        ValueError: the three lists differ in length (TF's message) or are empty, or a step's
            rank/shape is wrong or its targets are out of range.
        TypeError: not lists of tensors, non-integer targets, non-floating logits/weights.
    """
    logits = _check_list(logits, "logits", "[batch_size, num_decoder_symbols]")
    targets = _check_list(targets, "targets", "[batch_size]")
    weights = _check_list(weights, "weights", "[batch_size]")
    if len(targets) != len(logits) or len(weights) != len(logits):
        raise ValueError(
            f"Lengths of logits, weights, and targets must be the same {len(logits)}, {len(weights)}, "
            f"{len(targets)}."
        )
    if not logits:
        raise ValueError("logits, targets and weights must hold at least one step each, got empty lists")
    avg_t = _check_flag(average_across_timesteps, "average_across_timesteps")

    batch_size: int | None = None
    log_perps: Tensor | None = None
    total_size: Tensor | None = None
    for t, (logit, target, weight) in enumerate(zip(logits, targets, weights)):
        logit = _check_logits(logit, f"logits[{t}]", 2, "[batch_size, num_decoder_symbols]")
        if batch_size is None:
            batch_size = logit.shape[0]
        elif logit.shape[0] != batch_size:
            raise ValueError(
                f"logits[{t}] must have batch size {batch_size} (that of logits[0]), got shape {_shape(logit)}"
            )
        weight = _check_weights(weight, f"weights[{t}]", [batch_size], "[batch_size]")
        if softmax_loss_function is None:
            target = _tensor(target, f"targets[{t}]", "[batch_size]")
            if _shape(target) not in ([batch_size], [batch_size, 1]):
                raise ValueError(
                    f"targets[{t}] must have shape {[batch_size]} (or {[batch_size, 1]}), got shape "
                    f"{_shape(target)}"
                )
            _check_integer(target, f"targets[{t}]")
            target = target.reshape(-1)
            _check_in_range(target, logit.shape[1], f"targets[{t}]")
            crossent = F.cross_entropy(logit, target.long(), reduction="none")
        else:
            crossent = _custom_crossent(softmax_loss_function, target, logit, [batch_size], "batch_size")
        term = crossent * weight
        log_perps = term if log_perps is None else log_perps + term
        total_size = weight if total_size is None else total_size + weight
    assert log_perps is not None and total_size is not None
    if avg_t:
        log_perps = log_perps / (total_size + _LEGACY_EPSILON)
    return log_perps


def legacy_sequence_loss(
    logits: Sequence[Tensor],
    targets: Sequence[Tensor],
    weights: Sequence[Tensor],
    average_across_timesteps: bool = True,
    average_across_batch: bool = True,
    softmax_loss_function: Callable[..., Tensor] | None = None,
    name: str | None = None,
) -> Tensor:
    """Weighted cross-entropy, batch-collapsed: ``tf.contrib.legacy_seq2seq.sequence_loss``.

    Same arguments as :func:`sequence_loss_by_example` (lists of ``T`` per-step tensors), plus
    ``average_across_batch``. Returns a scalar: the sum over the batch of
    :func:`sequence_loss_by_example` (with ``average_across_timesteps``), divided by the batch
    size ``B = targets[0].shape[0]`` when ``average_across_batch``.

    Named ``legacy_sequence_loss`` so as not to clash with the contrib :func:`sequence_loss`;
    ``legacy.sequence_loss`` is the same function under TF's name.
    """
    cost = sequence_loss_by_example(
        logits,
        targets,
        weights,
        average_across_timesteps=average_across_timesteps,
        softmax_loss_function=softmax_loss_function,
    ).sum()
    if _check_flag(average_across_batch, "average_across_batch"):
        batch_size = _tensor(targets[0], "targets[0]", "[batch_size]").shape[0]
        return cost / batch_size
    return cost


def rnn_decoder(
    decoder_inputs: Sequence[Any],
    initial_state: Any,
    cell: Any,
    loop_function: Callable[[Any, int], Any] | None = None,
    scope: Any = None,
) -> tuple[list[Any], Any]:
    """Run ``cell`` step by step from ``initial_state``: ``tf.contrib.legacy_seq2seq.rnn_decoder``.

    Args:
        decoder_inputs: a list (or any iterable) of ``T`` step inputs ``[B, input_size]``.
        initial_state: the cell's state at step 0 (``cell.zero_state(B, dtype)``, an encoder's
            final state, ...); required, as in TF.
        cell: an rnnkit cell (or any RNNCell-like module called as
            ``cell(x_t, state) -> (output, new_state)``); its weights are shared by every step.
        loop_function: ``None`` to feed ``decoder_inputs[i]`` at every step; else
            ``loop_function(prev, i) -> next input`` is fed at every step ``i >= 1``, ``prev``
            being the output of step ``i - 1`` (greedy decoding, scheduled sampling). Then only
            ``decoder_inputs[0]`` (the "GO" input) is read; the others only set the number of
            steps, as in TF. Gradients flow through ``prev`` unless the function detaches it.
        scope: ignored (TF's variable scope).

    Returns:
        ``(outputs, state)``: a list of ``T`` outputs ``[B, output_size]`` and the state after
        the last step (``initial_state`` itself for no steps). Like rnnkit's runners, it calls
        ``cell.start_sequence()`` first (new variational-dropout masks).
    """
    check_is_cell(cell, "cell")
    if loop_function is not None and not callable(loop_function):
        raise TypeError(
            f"loop_function must be None or callable as loop_function(prev, i), got {type(loop_function).__name__}"
        )
    if isinstance(decoder_inputs, Tensor):
        raise TypeError(
            f"decoder_inputs must be a list of [batch_size, input_size] tensors, got one tensor of shape "
            f"{_shape(decoder_inputs)}; use list(x.unbind(1)) for a [B, T, D] tensor"
        )
    try:
        steps = list(decoder_inputs)
    except TypeError:
        raise TypeError(
            f"decoder_inputs must be a list of [batch_size, input_size] tensors, got "
            f"{type(decoder_inputs).__name__}"
        ) from None
    if initial_state is None:
        raise ValueError(
            "initial_state must be given (TF's rnn_decoder has no default); e.g. cell.zero_state(B, dtype)"
        )
    start_sequence = getattr(cell, "start_sequence", None)
    if callable(start_sequence):
        start_sequence()
    state = initial_state
    outputs: list[Any] = []
    prev: Any = None
    for i, inp in enumerate(steps):
        if loop_function is not None and prev is not None:
            inp = loop_function(prev, i)
        output, state = cell(inp, state)
        outputs.append(output)
        if loop_function is not None:
            prev = output
    return outputs, state


class legacy:  # a namespace, spelled like the TF module it stands for
    """``tf.contrib.legacy_seq2seq``'s names: ``legacy.sequence_loss`` (= :func:`legacy_sequence_loss`),
    ``legacy.sequence_loss_by_example`` and ``legacy.rnn_decoder``."""

    sequence_loss = staticmethod(legacy_sequence_loss)
    sequence_loss_by_example = staticmethod(sequence_loss_by_example)
    rnn_decoder = staticmethod(rnn_decoder)

    def __init__(self) -> None:
        raise TypeError("rnnkit.seq2seq.legacy is a namespace; call legacy.sequence_loss(...) etc. directly")
