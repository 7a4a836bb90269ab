"""rnnkit.seq2seq: TF 1.15's sequence losses (contrib and legacy) and legacy rnn_decoder,
checked against an independent numpy float64 transcription (tests/seq2seq_reference.py)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit import seq2seq as s2s

from . import seq2seq_reference as ref

F64 = torch.float64
B, T, V = 3, 4, 5

# Every legal flag combination (avg_t, avg_b, sum_t, sum_b): an axis can't be both averaged and summed.
FLAGS = [f for f in itertools.product([False, True], repeat=4) if not (f[0] and f[2]) and not (f[1] and f[3])]


def _flag_id(flags: tuple[bool, ...]) -> str:
    names = ["avg_t", "avg_b", "sum_t", "sum_b"]
    return "+".join(n for n, on in zip(names, flags) if on) or "none"


def _inputs(seed: int = 0, weights: str = "mixed") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=gen, dtype=F64) * 2
    targets = torch.randint(0, V, (B, T), generator=gen)
    if weights == "ones":
        w = torch.ones(B, T, dtype=F64)
    elif weights == "zeros":
        w = torch.zeros(B, T, dtype=F64)
    elif weights == "mask":  # padded batch: lengths 4, 2, 0 (an all-zero row)
        w = (torch.arange(T) < torch.tensor([4, 2, 0])[:, None]).to(F64)
    else:  # random positive weights with zeros, and a column of zeros
        w = torch.rand(B, T, generator=gen, dtype=F64) + 0.25
        w[0, 1] = 0.0
        w[2, 3] = 0.0
        w[:, 2] = 0.0
    return logits, targets, w


def _kwargs(flags: tuple[bool, ...]) -> dict[str, bool]:
    return dict(
        average_across_timesteps=flags[0],
        average_across_batch=flags[1],
        sum_over_timesteps=flags[2],
        sum_over_batch=flags[3],
    )


def _expected_shape(flags: tuple[bool, ...]) -> list[int]:
    avg_t, avg_b, sum_t, sum_b = flags
    if avg_t and avg_b or sum_t and sum_b:
        return []
    if avg_t or avg_b:  # one average flag: TF reduces that axis only (a sum_over flag is then unused)
        return [T] if avg_b else [B]
    if sum_t or sum_b:
        return [T] if sum_b else [B]
    return [B, T]


# --------------------------------------------------------------------------------------------
# tf.contrib.seq2seq.sequence_loss
@pytest.mark.parametrize("weights", ["mixed", "ones", "mask", "zeros"])
@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
def test_sequence_loss_matches_reference(flags: tuple[bool, ...], weights: str) -> None:
    logits, targets, w = _inputs(1, weights)
    got = s2s.sequence_loss(logits, targets, w, **_kwargs(flags))
    want = ref.sequence_loss(logits.numpy(), targets.numpy(), w.numpy(), *flags)
    assert list(got.shape) == _expected_shape(flags) == list(np.shape(want))
    assert got.dtype == F64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-13)
    assert torch.isfinite(got).all()


def test_sequence_loss_tf_test_values() -> None:
    """TF's own loss_test: logits all i + 0.5 at step i, targets i, so every cross-entropy is log 5."""
    logits = torch.stack([torch.full((2, 5), i + 0.5) for i in range(3)], 1)
    targets = torch.stack([torch.full((2,), i, dtype=torch.int32) for i in range(3)], 1)
    weights = torch.ones(2, 3)
    expected = 1.60944
    assert math.isclose(float(s2s.sequence_loss(logits, targets, weights)), expected, rel_tol=1e-5)
    per_t = s2s.sequence_loss(logits, targets, weights, average_across_timesteps=False)
    torch.testing.assert_close(per_t, torch.full((3,), expected), rtol=1e-5, atol=1e-5)
    per_b = s2s.sequence_loss(logits, targets, weights, average_across_batch=False)
    torch.testing.assert_close(per_b, torch.full((2,), expected), rtol=1e-5, atol=1e-5)
    full = s2s.sequence_loss(logits, targets, weights, average_across_timesteps=False, average_across_batch=False)
    torch.testing.assert_close(full, torch.full((2, 3), expected), rtol=1e-5, atol=1e-5)
    # TF's testWeightedSumReduction: the last step weighted 0 is left out of the counts.
    weights[:, -1] = 0
    kw = dict(average_across_timesteps=False, average_across_batch=False)
    both = s2s.sequence_loss(logits, targets, weights, sum_over_timesteps=True, sum_over_batch=True, **kw)
    assert math.isclose(float(both), expected, rel_tol=1e-5)
    per_t = s2s.sequence_loss(logits, targets, weights, sum_over_batch=True, **kw)
    torch.testing.assert_close(per_t, torch.tensor([expected, expected, 0.0]), rtol=1e-5, atol=1e-5)
    per_b = s2s.sequence_loss(logits, targets, weights, sum_over_timesteps=True, **kw)
    torch.testing.assert_close(per_b, torch.full((2,), expected), rtol=1e-5, atol=1e-5)
    # TF's testZeroWeights: all-zero weights give zeros, not NaN.
    zeros = torch.zeros(2, 3)
    assert float(s2s.sequence_loss(logits, targets, zeros)) == 0.0
    assert s2s.sequence_loss(logits, targets, zeros, sum_over_batch=True, average_across_batch=False).eq(0).all()


def test_sequence_loss_average_divides_by_weight_sum_and_sum_over_by_count() -> None:
    """TF 1.15: average_across_* divides by the summed weights, sum_over_* by the nonzero count."""
    logits, targets, _ = _inputs(2)
    w = torch.full((B, T), 0.5, dtype=F64)
    w[0, 0] = 0.0
    xent = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    weighted = (xent * w.reshape(-1)).sum()
    avg = s2s.sequence_loss(logits, targets, w)
    summed = s2s.sequence_loss(
        logits, targets, w, average_across_timesteps=False, average_across_batch=False,
        sum_over_timesteps=True, sum_over_batch=True,
    )
    torch.testing.assert_close(avg, weighted / w.sum())
    torch.testing.assert_close(summed, weighted / (B * T - 1))


def test_sequence_loss_mixed_flags_follow_tf_precedence() -> None:
    """An average flag on one axis wins over a sum_over flag on the other (TF 1.15's if/elif)."""
    logits, targets, w = _inputs(3)
    a = s2s.sequence_loss(logits, targets, w, average_across_batch=False, sum_over_batch=True)
    b = s2s.sequence_loss(logits, targets, w, average_across_batch=False)
    assert a.shape == (B,)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = s2s.sequence_loss(logits, targets, w, average_across_timesteps=False, sum_over_timesteps=True)
    d = s2s.sequence_loss(logits, targets, w, average_across_timesteps=False)
    assert c.shape == (T,)
    torch.testing.assert_close(c, d, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int16, torch.uint8])
def test_sequence_loss_integer_target_dtypes(dtype: torch.dtype) -> None:
    logits, targets, w = _inputs(4)
    want = s2s.sequence_loss(logits, targets, w)
    torch.testing.assert_close(s2s.sequence_loss(logits, targets.to(dtype), w), want, rtol=0, atol=0)


def test_sequence_loss_float32() -> None:
    logits, targets, w = _inputs(5)
    got = s2s.sequence_loss(logits.float(), targets, w.float(), average_across_timesteps=False)
    assert got.dtype == torch.float32
    want = ref.sequence_loss(logits.numpy(), targets.numpy(), w.numpy(), False, True, False, False)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_sequence_loss_custom_softmax_loss_function() -> None:
    logits, targets, w = _inputs(6)
    calls: list[tuple[list[int], list[int]]] = []

    def smoothed(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:  # keyword-only use
        calls.append((list(labels.shape), list(logits.shape)))
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1)

    def smoothed_np(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
        logp = logits - logits.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        return -(0.9 * logp[np.arange(len(labels)), labels] + 0.1 * logp.mean(1))

    for flags in FLAGS:
        got = s2s.sequence_loss(logits, targets, w, softmax_loss_function=smoothed, **_kwargs(flags))
        want = ref.sequence_loss(logits.numpy(), targets.numpy(), w.numpy(), *flags, crossent_fn=smoothed_np)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert calls[0] == ([B * T], [B * T, V])

    def positional_only(labels, logits, /):  # noqa: ANN001, ANN202
        raise AssertionError("must be called by keyword")

    with pytest.raises(TypeError):
        s2s.sequence_loss(logits, targets, w, softmax_loss_function=positional_only)


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
def test_sequence_loss_gradcheck(flags: tuple[bool, ...]) -> None:
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 4, generator=gen, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 4, (2, 3), generator=gen)
    weights = (torch.rand(2, 3, generator=gen, dtype=F64) + 0.5).requires_grad_()
    kw = _kwargs(flags)
    # Weights count only through their nonzero count under sum_over_*, so check them away from 0.
    assert torch.autograd.gradcheck(lambda lg, w: s2s.sequence_loss(lg, targets, w, **kw), (logits, weights))
    # With zeros (an all-zero row and column: div_no_nan's branch), check the logits.
    zeroed = weights.detach().clone()
    zeroed[0] = 0.0
    zeroed[:, 1] = 0.0
    assert torch.autograd.gradcheck(lambda lg: s2s.sequence_loss(lg, targets, zeroed, **kw), (logits,))
    out = s2s.sequence_loss(logits, targets, torch.zeros_like(zeroed), **kw)
    (grad,) = torch.autograd.grad(out.sum(), logits)
    assert torch.isfinite(grad).all() and grad.eq(0).all()


# --------------------------------------------------------------------------------------------
# tf.contrib.legacy_seq2seq losses
def _legacy_inputs(seed: int = 0, steps: int = T) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    logits = [torch.randn(B, V, generator=gen, dtype=F64) for _ in range(steps)]
    targets = [torch.randint(0, V, (B,), generator=gen, dtype=torch.int32) for _ in range(steps)]
    weights = [torch.rand(B, generator=gen, dtype=F64) + 0.1 for _ in range(steps)]
    weights[1][0] = 0.0
    weights[0][2] = 0.0
    return logits, targets, weights


def _np(items: list[torch.Tensor]) -> list[np.ndarray]:
    return [x.detach().numpy() for x in items]


@pytest.mark.parametrize("average_across_timesteps", [True, False])
def test_sequence_loss_by_example_matches_reference(average_across_timesteps: bool) -> None:
    logits, targets, weights = _legacy_inputs(10)
    got = s2s.sequence_loss_by_example(logits, targets, weights, average_across_timesteps=average_across_timesteps)
    want = ref.sequence_loss_by_example(_np(logits), _np(targets), _np(weights), average_across_timesteps)
    assert got.shape == (B,) and got.dtype == F64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-13)
    # tuples and [B, 1] targets work too (TF reshapes each target to [-1])
    got2 = s2s.legacy.sequence_loss_by_example(
        tuple(logits), tuple(t[:, None] for t in targets), tuple(weights),
        average_across_timesteps=average_across_timesteps,
    )
    torch.testing.assert_close(got2, got, rtol=0, atol=0)


def test_sequence_loss_by_example_zero_weights_use_tf_epsilon() -> None:
    logits, targets, weights = _legacy_inputs(11)
    weights = [w.clone() for w in weights]
    for w in weights:
        w[1] = 0.0  # sequence 1 has no weight at all: 0 / (0 + 1e-12) = 0
    got = s2s.sequence_loss_by_example(logits, targets, weights)
    assert got[1] == 0.0 and torch.isfinite(got).all()
    want = ref.sequence_loss_by_example(_np(logits), _np(targets), _np(weights))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-13)
    # the epsilon is in the divisor: tiny weights show it
    tiny = [torch.full((B,), 1e-13, dtype=F64) for _ in logits]
    xent = sum(torch.nn.functional.cross_entropy(lg, t.long(), reduction="none") * 1e-13 for lg, t in zip(logits, targets))
    torch.testing.assert_close(s2s.sequence_loss_by_example(logits, targets, tiny), xent / (len(logits) * 1e-13 + 1e-12))


@pytest.mark.parametrize("avg_t,avg_b", list(itertools.product([True, False], repeat=2)))
def test_legacy_sequence_loss_matches_reference(avg_t: bool, avg_b: bool) -> None:
    logits, targets, weights = _legacy_inputs(12)
    got = s2s.legacy_sequence_loss(logits, targets, weights, average_across_timesteps=avg_t, average_across_batch=avg_b)
    want = ref.legacy_sequence_loss(_np(logits), _np(targets), _np(weights), avg_t, avg_b)
    assert got.shape == () and got.dtype == F64
    assert math.isclose(float(got), want, rel_tol=1e-13, abs_tol=1e-13)
    assert s2s.legacy.sequence_loss is s2s.legacy_sequence_loss


def test_legacy_agrees_with_contrib() -> None:
    """by_example over steps = contrib's per-sequence average (up to TF's 1e-12), on nonzero weights."""
    logits, targets, weights = _inputs(13, "ones")
    weights = weights * 0.7
    by_example = s2s.sequence_loss_by_example(list(logits.unbind(1)), list(targets.unbind(1)), list(weights.unbind(1)))
    contrib = s2s.sequence_loss(logits, targets, weights, average_across_batch=False)
    torch.testing.assert_close(by_example, contrib, rtol=1e-12, atol=0)


def test_ptb_tutorial_call_pattern() -> None:
    """The PTB tutorial (TF 1.x ptb_word_lm.py): one [B*T, V] logits step, flattened targets,
    unit weights; cost = sum / B; perplexity = exp(costs / iters) over num_steps per batch."""
    torch.manual_seed(14)
    batch, steps, vocab, hidden = 4, 6, 11, 8
    cell = rk.BasicLSTMCell(hidden)
    softmax_w = torch.randn(hidden, vocab, dtype=F64, requires_grad=True)
    softmax_b = torch.zeros(vocab, dtype=F64, requires_grad=True)
    x = torch.randn(batch, steps, 3, dtype=F64)
    targets = torch.randint(0, vocab, (batch, steps), dtype=torch.int32)
    outputs, _ = rk.dynamic_rnn(cell, x, initial_state=cell.zero_state(batch, F64))
    output = outputs.reshape(-1, hidden)  # tf.reshape(tf.concat(outputs, 1), [-1, size])
    logits = output @ softmax_w + softmax_b
    loss = s2s.legacy.sequence_loss_by_example(
        [logits], [targets.reshape(-1)], [torch.ones(batch * steps, dtype=F64)]
    )
    assert loss.shape == (batch * steps,)
    cost = loss.sum() / batch
    want = ref.sequence_loss_by_example([logits.detach().numpy()], [targets.reshape(-1).numpy()], [np.ones(batch * steps)])
    np.testing.assert_allclose(loss.detach().numpy(), want, rtol=1e-13, atol=1e-13)
    # with unit weights each row is its own cross-entropy (/ (1 + 1e-12)); the perplexity is
    # that of contrib's default mean loss
    mean = s2s.sequence_loss(logits.reshape(batch, steps, vocab), targets, torch.ones(batch, steps, dtype=F64))
    assert math.isclose(math.exp(cost.item() / steps), math.exp(mean.item()), rel_tol=1e-10)
    cost.backward()
    grads = [softmax_w.grad, softmax_b.grad, *(p.grad for p in cell.parameters())]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_legacy_gradcheck() -> None:
    gen = torch.Generator().manual_seed(15)
    logits = [torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True) for _ in range(3)]
    targets = [torch.randint(0, 3, (2,), generator=gen) for _ in range(3)]
    weights = [(torch.rand(2, generator=gen, dtype=F64) + 0.5).requires_grad_() for _ in range(3)]

    def by_example(*args: torch.Tensor) -> torch.Tensor:
        return s2s.sequence_loss_by_example(list(args[:3]), targets, list(args[3:]))

    def collapsed(*args: torch.Tensor) -> torch.Tensor:
        return s2s.legacy_sequence_loss(list(args[:3]), targets, list(args[3:]), average_across_batch=True)

    assert torch.autograd.gradcheck(by_example, (*logits, *weights))
    assert torch.autograd.gradcheck(collapsed, (*logits, *weights))


# --------------------------------------------------------------------------------------------
# rnn_decoder
def _lstm(num_units: int = 8, depth: int = 8) -> Any:
    torch.manual_seed(20)
    cell = rk.BasicLSTMCell(num_units)
    cell(torch.zeros(1, depth, dtype=F64), cell.zero_state(1, F64))  # build
    return cell


def _np_decoder(cell: Any, inputs: list[np.ndarray], c: np.ndarray, h: np.ndarray, loop=None):  # noqa: ANN001, ANN202
    kernel = cell.kernel.detach().numpy()
    bias = cell.bias.detach().numpy()
    outputs = []
    for i, x in enumerate(inputs):
        if loop is not None and i > 0:
            x = loop(outputs[-1], i)
        c, h = ref.basic_lstm_step(x, c, h, kernel, bias, cell.forget_bias)
        outputs.append(h)
    return outputs, (c, h)


def test_rnn_decoder_without_loop_function() -> None:
    cell = _lstm()
    gen = torch.Generator().manual_seed(21)
    inputs = [torch.randn(B, 8, generator=gen, dtype=F64) for _ in range(5)]
    init = rk.LSTMStateTuple(*(torch.randn(B, 8, generator=gen, dtype=F64) for _ in range(2)))
    outputs, state = s2s.rnn_decoder(inputs, init, cell)
    assert isinstance(outputs, list) and len(outputs) == 5 and isinstance(state, rk.LSTMStateTuple)
    want_out, (want_c, want_h) = _np_decoder(cell, _np(inputs), init.c.numpy(), init.h.numpy())
    for got, want in zip(outputs, want_out):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.c.detach().numpy(), want_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.h.detach().numpy(), want_h, rtol=1e-12, atol=1e-12)
    # the same as static_rnn over the list (and from zero_state)
    zero = cell.zero_state(B, F64)
    outputs, state = s2s.legacy.rnn_decoder(inputs, zero, cell)
    ref_out, ref_state = rk.static_rnn(cell, inputs, initial_state=zero)
    for a, b in zip(outputs, ref_out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.c, ref_state.c, rtol=1e-12, atol=1e-12)


def test_rnn_decoder_with_loop_function() -> None:
    cell = _lstm()
    gen = torch.Generator().manual_seed(22)
    go = torch.randn(B, 8, generator=gen, dtype=F64)
    proj = torch.randn(8, 8, generator=gen, dtype=F64)
    seen: list[tuple[int, torch.Tensor]] = []

    def loop_function(prev: torch.Tensor, i: int) -> torch.Tensor:
        seen.append((i, prev))
        return torch.tanh(prev @ proj)

    ignored = torch.full((B, 8), float("nan"), dtype=F64)  # only counted, never read (as in TF)
    outputs, state = s2s.rnn_decoder([go, ignored, ignored, ignored], cell.zero_state(B, F64), cell, loop_function)
    assert [i for i, _ in seen] == [1, 2, 3]
    for (_, prev), out in zip(seen, outputs[:-1]):
        assert prev is out  # the previous step's output, as it was returned
    want_out, (want_c, _) = _np_decoder(
        cell, [go.numpy()] * 4, np.zeros((B, 8)), np.zeros((B, 8)), loop=lambda p, i: np.tanh(p @ proj.numpy())
    )
    for got, want in zip(outputs, want_out):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.c.detach().numpy(), want_c, rtol=1e-12, atol=1e-12)
    assert all(torch.isfinite(o).all() for o in outputs)


def test_rnn_decoder_gradients_through_loop_function() -> None:
    cell = _lstm(num_units=3, depth=3)
    gen = torch.Generator().manual_seed(23)
    go = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    c0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)

    def run(go: torch.Tensor, c0: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, state = s2s.rnn_decoder([go] * 3, rk.LSTMStateTuple(c0, h0), cell, lambda prev, i: prev * i)
        return (*outputs, state.c)

    assert torch.autograd.gradcheck(run, (go, c0, h0))
    outputs, _ = s2s.rnn_decoder([go] * 3, rk.LSTMStateTuple(c0, h0), cell, lambda prev, i: prev * i)
    outputs[-1].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [go, c0, h0, *cell.parameters()])


def test_rnn_decoder_multi_cell_and_empty() -> None:
    torch.manual_seed(24)
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(8), rk.GRUCell(4)])
    inputs = (torch.randn(B, 8, dtype=F64) for _ in range(3))  # any iterable, as TF's embedding decoder passes
    outputs, state = s2s.rnn_decoder(inputs, cell.zero_state(B, F64), cell)
    assert len(outputs) == 3 and outputs[0].shape == (B, 4) and len(state) == 2
    init = cell.zero_state(B, F64)
    outputs, state = s2s.rnn_decoder([], init, cell)
    assert outputs == [] and state is init


# --------------------------------------------------------------------------------------------
# errors
def test_sequence_loss_errors() -> None:
    logits, targets, w = _inputs(30)
    with pytest.raises(ValueError, match=r"logits must be a \[batch_size, sequence_length, num_decoder_symbols\].*rank 3.*\[3, 20\]"):
        s2s.sequence_loss(logits.reshape(B, T * V), targets, w)
    with pytest.raises(ValueError, match=r"targets must be a \[batch_size, sequence_length\] tensor \(rank 2\), got shape \[12\]"):
        s2s.sequence_loss(logits, targets.reshape(-1), w)
    with pytest.raises(ValueError, match=r"weights must be a \[batch_size, sequence_length\] tensor \(rank 2\), got shape \[3, 4, 1\]"):
        s2s.sequence_loss(logits, targets, w[..., None])
    with pytest.raises(ValueError, match=r"targets must have shape \[3, 4\].*got shape \[3, 3\]"):
        s2s.sequence_loss(logits, targets[:, :3], w)
    with pytest.raises(ValueError, match=r"weights must have shape \[3, 4\].*got shape \[1, 4\]"):
        s2s.sequence_loss(logits, targets, w[:1])  # would broadcast: refused
    with pytest.raises(TypeError, match=r"targets must have an integer dtype.*torch.float64"):
        s2s.sequence_loss(logits, targets.to(F64), w)
    with pytest.raises(TypeError, match=r"targets must have an integer dtype.*torch.bool"):
        s2s.sequence_loss(logits, targets > 0, w)
    with pytest.raises(TypeError, match=r"weights must have a floating dtype.*torch.int64"):
        s2s.sequence_loss(logits, targets, w.long())
    with pytest.raises(TypeError, match=r"logits must have a floating dtype.*torch.int64"):
        s2s.sequence_loss(logits.long(), targets, w)
    with pytest.raises(TypeError, match=r"logits must be a torch.Tensor.*ndarray"):
        s2s.sequence_loss(logits.numpy(), targets, w)
    with pytest.raises(TypeError, match=r"targets must be a torch.Tensor.*list"):
        s2s.sequence_loss(logits, targets.tolist(), w)
    with pytest.raises(ValueError, match=r"targets must hold class ids in \[0, 5\).*got 5"):
        s2s.sequence_loss(logits, targets.index_fill(1, torch.tensor([2]), V), w)
    with pytest.raises(ValueError, match=r"targets must hold class ids in \[0, 5\).*got -100"):
        s2s.sequence_loss(logits, targets.index_fill(1, torch.tensor([0]), -100), w)  # not torch's ignore_index
    with pytest.raises(ValueError, match="average_across_timesteps and sum_over_timesteps cannot be set to True at same time"):
        s2s.sequence_loss(logits, targets, w, sum_over_timesteps=True)
    with pytest.raises(ValueError, match="average_across_batch and sum_over_batch cannot be set to True at same time"):
        s2s.sequence_loss(logits, targets, w, sum_over_batch=True)
    with pytest.raises(TypeError, match="average_across_batch must be a Python bool"):
        s2s.sequence_loss(logits, targets, w, average_across_batch=torch.tensor(True))
    with pytest.raises(ValueError, match=r"softmax_loss_function must return losses of shape \[12\].*got shape \[12, 1\]"):
        s2s.sequence_loss(logits, targets, w, softmax_loss_function=lambda labels, logits: logits[:, :1])
    with pytest.raises(TypeError, match="softmax_loss_function must return a torch.Tensor"):
        s2s.sequence_loss(logits, targets, w, softmax_loss_function=lambda labels, logits: 0.0)
    with pytest.raises(TypeError, match="softmax_loss_function must be callable"):
        s2s.sequence_loss(logits, targets, w, softmax_loss_function="sparse")


def test_legacy_errors() -> None:
    logits, targets, weights = _legacy_inputs(31)
    with pytest.raises(ValueError, match="Lengths of logits, weights, and targets must be the same 4, 3, 4."):
        s2s.sequence_loss_by_example(logits, targets, weights[:3])
    with pytest.raises(ValueError, match="Lengths of logits, weights, and targets must be the same 4, 4, 2."):
        s2s.legacy_sequence_loss(logits, targets[:2], weights)
    with pytest.raises(ValueError, match="at least one step"):
        s2s.sequence_loss_by_example([], [], [])
    with pytest.raises(TypeError, match=r"logits must be a list of per-step tensors.*one tensor of shape \[3, 5\].*\[logits\]"):
        s2s.sequence_loss_by_example(logits[0], targets, weights)
    with pytest.raises(TypeError, match="weights must be a list of per-step tensors.*got dict"):
        s2s.sequence_loss_by_example(logits, targets, {})
    with pytest.raises(ValueError, match=r"logits\[2\] must be a \[batch_size, num_decoder_symbols\] tensor \(rank 2\), got shape \[3, 5, 1\]"):
        s2s.sequence_loss_by_example(logits[:2] + [logits[2][..., None]] + logits[3:], targets, weights)
    with pytest.raises(ValueError, match=r"logits\[1\] must have batch size 3.*got shape \[2, 5\]"):
        s2s.sequence_loss_by_example([logits[0], logits[1][:2]], targets[:2], weights[:2])
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \[3\].*got shape \[3, 1\]"):
        s2s.sequence_loss_by_example(logits, targets, [w[:, None] for w in weights])  # TF would broadcast to [B, B]
    with pytest.raises(ValueError, match=r"targets\[0\] must have shape \[3\] \(or \[3, 1\]\), got shape \[2\]"):
        s2s.sequence_loss_by_example(logits, [t[:2] for t in targets], weights)
    with pytest.raises(TypeError, match=r"targets\[0\] must have an integer dtype.*float"):
        s2s.sequence_loss_by_example(logits, [t.float() for t in targets], weights)
    with pytest.raises(TypeError, match=r"weights\[0\] must have a floating dtype.*torch.bool"):
        s2s.sequence_loss_by_example(logits, targets, [w > 0 for w in weights])
    with pytest.raises(ValueError, match=r"targets\[3\] must hold class ids in \[0, 5\).*got 7"):
        s2s.sequence_loss_by_example(logits, targets[:3] + [torch.full((B,), 7)], weights)
    with pytest.raises(ValueError, match=r"softmax_loss_function must return losses of shape \[3\]"):
        s2s.sequence_loss_by_example(logits, targets, weights, softmax_loss_function=lambda labels, logits: logits)
    with pytest.raises(TypeError, match="namespace"):
        s2s.legacy()


def test_rnn_decoder_errors() -> None:
    cell = _lstm()
    x = torch.randn(B, 8, dtype=F64)
    with pytest.raises(TypeError, match="The argument 'cell'.*is not an RNNCell"):
        s2s.rnn_decoder([x], None, torch.nn.Linear(8, 8))
    with pytest.raises(TypeError, match="loop_function must be None or callable"):
        s2s.rnn_decoder([x], cell.zero_state(B, F64), cell, loop_function=3)
    with pytest.raises(TypeError, match=r"decoder_inputs must be a list.*one tensor of shape \[3, 2, 8\].*unbind"):
        s2s.rnn_decoder(torch.stack([x, x], 1), cell.zero_state(B, F64), cell)
    with pytest.raises(TypeError, match="decoder_inputs must be a list.*got int"):
        s2s.rnn_decoder(5, cell.zero_state(B, F64), cell)
    with pytest.raises(ValueError, match="initial_state must be given"):
        s2s.rnn_decoder([x], None, cell)
    with pytest.raises(ValueError, match="rank 2"):  # the cell's own check, per step
        s2s.rnn_decoder([x[0]], cell.zero_state(B, F64), cell)
