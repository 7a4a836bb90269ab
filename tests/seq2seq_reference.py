"""An independent numpy float64 transcription of TF 1.15's seq2seq losses, for the tests.

Written from the formulas of ``tensorflow/contrib/seq2seq/python/ops/loss.py`` and
``tensorflow/contrib/legacy_seq2seq/python/ops/seq2seq.py`` (v1.15) with explicit loops, so
that it shares no code with ``rnnkit.seq2seq``.
"""

from __future__ import annotations

import math

import numpy as np


def sparse_softmax_xent(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``-log softmax(logits[n])[labels[n]]`` per row, ``logits`` ``[N, V]``."""
    out = np.empty(logits.shape[0])
    for n in range(logits.shape[0]):
        row = logits[n].astype(np.float64)
        top = row.max()
        lse = top + math.log(sum(math.exp(v - top) for v in row))
        out[n] = lse - row[int(labels[n])]
    return out


def div_no_nan(x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out = np.zeros(np.broadcast(x, y).shape)
    nz = y != 0
    np.divide(x, y, out=out, where=nz)
    return out


def sequence_loss(
    logits: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    average_across_timesteps: bool = True,
    average_across_batch: bool = True,
    sum_over_timesteps: bool = False,
    sum_over_batch: bool = False,
    crossent_fn=None,
) -> np.ndarray:
    """tf.contrib.seq2seq.sequence_loss of TF 1.15 (div_no_nan everywhere, no epsilon)."""
    batch, steps, classes = logits.shape
    flat_logits = logits.reshape(batch * steps, classes)
    flat_targets = targets.reshape(batch * steps)
    if crossent_fn is None:
        xent = sparse_softmax_xent(flat_logits, flat_targets)
    else:
        xent = crossent_fn(flat_targets, flat_logits)
    xent = (xent * weights.reshape(-1)).reshape(batch, steps)
    w = weights.astype(np.float64)
    if average_across_timesteps and average_across_batch:
        return div_no_nan(xent.sum(), w.sum())
    if sum_over_timesteps and sum_over_batch:
        return div_no_nan(xent.sum(), float(np.count_nonzero(w)))
    if average_across_timesteps or average_across_batch:
        # TF 1.15 tests average_across_batch first: it picks axis 0 when that flag is set.
        if average_across_batch:
            return np.array([div_no_nan(xent[:, t].sum(), w[:, t].sum()) for t in range(steps)])
        return np.array([div_no_nan(xent[b].sum(), w[b].sum()) for b in range(batch)])
    if sum_over_timesteps or sum_over_batch:
        if sum_over_batch:
            return np.array([div_no_nan(xent[:, t].sum(), np.count_nonzero(w[:, t])) for t in range(steps)])
        return np.array([div_no_nan(xent[b].sum(), np.count_nonzero(w[b])) for b in range(batch)])
    return xent


def sequence_loss_by_example(
    logits: list[np.ndarray],
    targets: list[np.ndarray],
    weights: list[np.ndarray],
    average_across_timesteps: bool = True,
) -> np.ndarray:
    """tf.contrib.legacy_seq2seq.sequence_loss_by_example: ``[B]``."""
    batch = logits[0].shape[0]
    log_perps = np.zeros(batch)
    total = np.zeros(batch)
    for logit, target, weight in zip(logits, targets, weights):
        xent = sparse_softmax_xent(logit, np.reshape(target, -1))
        for b in range(batch):
            log_perps[b] += xent[b] * weight[b]
            total[b] += weight[b]
    if average_across_timesteps:
        log_perps = log_perps / (total + 1e-12)
    return log_perps


def legacy_sequence_loss(
    logits: list[np.ndarray],
    targets: list[np.ndarray],
    weights: list[np.ndarray],
    average_across_timesteps: bool = True,
    average_across_batch: bool = True,
) -> float:
    """tf.contrib.legacy_seq2seq.sequence_loss: a scalar."""
    cost = sequence_loss_by_example(logits, targets, weights, average_across_timesteps).sum()
    if average_across_batch:
        cost = cost / np.shape(targets[0])[0]
    return float(cost)


def basic_lstm_step(
    x: np.ndarray, c: np.ndarray, h: np.ndarray, kernel: np.ndarray, bias: np.ndarray, forget_bias: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """TF's BasicLSTMCell: ``i, j, f, o = split([x, h] @ kernel + bias)``; returns ``(c, h)``."""

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    gates = np.concatenate([x, h], 1) @ kernel + bias
    i, j, f, o = np.split(gates, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    new_h = np.tanh(new_c) * sigmoid(o)
    return new_c, new_h
