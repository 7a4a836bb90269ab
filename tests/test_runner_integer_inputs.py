"""The runners on non-floating inputs: integer ids (``EmbeddingWrapper``) and bools (a user's cell).

TF 1.15 ``rnn.py``: ``dynamic_rnn``/``static_rnn`` take the state's dtype from ``dtype`` or the
initial state (``_infer_state_dtype``), never from the inputs, and raise "If there is no
initial_state, you must give a dtype." (static: "If no initial_state is provided, dtype must be
specified") without either; the zero outputs have the state's dtype; the cells check their own
inputs (``_check_rnn_cell_input_dtypes``). rnnkit keeps its rules for floating inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.contrib.wrappers import EmbeddingWrapper
from rnnkit.state import flatten_state, map_state

F64 = torch.float64
B, T, U, CLASSES = 2, 4, 3, 5
IDS = torch.tensor([[4, 0, 2, 3], [1, 1, 3, 0]])  # [B, T]
LENGTHS = [4, 2]
NO_DTYPE = "If there is no initial_state, you must give a dtype."
NO_DTYPE_STATIC = "If no initial_state is provided, dtype must be specified."


def _embedding_cell(inner: Any = None, seed: int = 0, dtype: torch.dtype = F64) -> EmbeddingWrapper:
    """An EmbeddingWrapper built in ``dtype`` with seeded random weights."""
    cell = EmbeddingWrapper(inner or rk.BasicLSTMCell(U), embedding_classes=CLASSES, embedding_size=2)
    cell(torch.tensor([0]), cell.zero_state(1, dtype))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in cell.parameters():
            param.copy_(0.6 * torch.randn(param.shape, generator=generator, dtype=dtype))
    return cell


def _random_state(cell: Any, batch_size: int, seed: int, dtype: torch.dtype = F64) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return map_state(
        lambda z: torch.randn(z.shape, generator=generator, dtype=dtype), cell.zero_state(batch_size, dtype)
    )


def _row(state: Any, b: int) -> Any:
    return map_state(lambda s: s[b : b + 1], state)


def _by_hand(cell: Any, ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """One row stepped by hand: ``ids`` [L] -> outputs [L, output_size] and the final state."""
    outputs = []
    for t in range(ids.shape[0]):
        output, state = cell(ids[t : t + 1], state)
        outputs.append(output[0])
    return (torch.stack(outputs) if outputs else torch.zeros(0, cell.output_size, dtype=F64)), state


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# EmbeddingWrapper under dynamic_rnn / static_rnn


@pytest.mark.parametrize("time_major", [False, True])
def test_dynamic_rnn_on_ids_matches_stepping_each_row_by_hand(time_major: bool) -> None:
    cell = _embedding_cell()
    state = _random_state(cell, B, seed=1)
    ids = IDS.unsqueeze(2)  # [B, T, 1], as TF requires rank 3
    inputs = ids.transpose(0, 1) if time_major else ids
    outputs, final = rk.dynamic_rnn(cell, inputs, sequence_length=LENGTHS, initial_state=state, time_major=time_major)
    outputs = outputs.transpose(0, 1) if time_major else outputs
    assert outputs.shape == (B, T, U) and outputs.dtype == F64
    for b, length in enumerate(LENGTHS):
        expected, expected_final = _by_hand(cell, IDS[b, :length], _row(state, b))
        _close(outputs[b, :length], expected)
        assert torch.equal(outputs[b, length:], torch.zeros(T - length, U, dtype=F64))
        for got, want in zip(flatten_state(_row(final, b)), flatten_state(expected_final)):
            _close(got, want)


def test_gradients_through_ids_match_stepping_each_row_by_hand() -> None:
    cell = _embedding_cell()
    state = map_state(lambda s: s.requires_grad_(True), _random_state(cell, B, seed=2))
    rng = np.random.default_rng(3)
    out_weights = torch.from_numpy(rng.standard_normal((B, T, U)))
    state_weights = [torch.from_numpy(rng.standard_normal((B, U))) for _ in range(2)]
    params = list(cell.parameters())

    def loss_of(outputs: torch.Tensor, final: Any, rows: slice) -> torch.Tensor:
        leaves = flatten_state(final)
        return (outputs * out_weights[rows, : outputs.shape[1]]).sum() + sum(
            (leaf * w[rows]).sum() for leaf, w in zip(leaves, state_weights)
        )

    outputs, final = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=LENGTHS, initial_state=state)
    grads = torch.autograd.grad(loss_of(outputs, final, slice(None)), [*params, *state])
    expected_loss = 0.0
    for b, length in enumerate(LENGTHS):
        row_out, row_final = _by_hand(cell, IDS[b, :length], _row(state, b))
        expected_loss = expected_loss + loss_of(row_out.unsqueeze(0), row_final, slice(b, b + 1))
    expected = torch.autograd.grad(expected_loss, [*params, *state])
    assert grads[0].abs().sum() > 0  # the embedding gets a gradient
    for got, want in zip(grads, expected):
        _close(got, want)


@pytest.mark.parametrize("step_shape", ["[B]", "[B, 1]"])
def test_static_rnn_on_ids_matches_dynamic_rnn(step_shape: str) -> None:
    cell = _embedding_cell()
    steps = [s if step_shape == "[B]" else s.unsqueeze(1) for s in IDS.unbind(1)]
    outputs, final = rk.static_rnn(cell, steps, dtype=F64, sequence_length=LENGTHS)
    expected, expected_final = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=LENGTHS, dtype=F64)
    assert len(outputs) == T
    _close(torch.stack(outputs, 1), expected)
    for got, want in zip(flatten_state(final), flatten_state(expected_final)):
        _close(got, want)


def test_padding_ids_past_the_length_never_reach_the_cell() -> None:
    # ids out of range (-1, CLASSES) past each length: the rows past their length step on zeros
    cell = _embedding_cell()
    padded = torch.tensor([[4, 0, 2, 3], [1, 1, -1, CLASSES]])
    expected, expected_final = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=LENGTHS, dtype=F64)
    outputs, final = rk.dynamic_rnn(cell, padded.unsqueeze(2), sequence_length=LENGTHS, dtype=F64)
    assert torch.equal(outputs, expected)
    assert all(torch.equal(a, b) for a, b in zip(flatten_state(final), flatten_state(expected_final)))
    steps, _ = rk.static_rnn(cell, list(padded.unbind(1)), dtype=F64, sequence_length=LENGTHS)
    assert torch.equal(torch.stack(steps, 1), expected)
    with pytest.raises(ValueError, match=r"must be ids in \[0, 5\), got values in \[-1, 2\]"):
        rk.dynamic_rnn(cell, padded.unsqueeze(2), dtype=F64)  # without lengths the cell sees them


def test_backend_auto_runs_the_reference_loop_and_fused_refuses_ids() -> None:
    cell = _embedding_cell()
    auto = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=LENGTHS, dtype=F64, backend="auto")
    reference = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=LENGTHS, dtype=F64, backend="reference")
    assert torch.equal(auto[0], reference[0])
    fused_msg = r"backend='fused' cannot run this: inputs of dtype torch.int64"
    with pytest.raises(ValueError, match=fused_msg):
        rk.dynamic_rnn(cell, IDS.unsqueeze(2), dtype=F64, backend="fused")
    with pytest.raises(ValueError, match=fused_msg):
        rk.static_rnn(cell, list(IDS.unbind(1)), dtype=F64, backend="fused")
    with pytest.raises(ValueError, match=fused_msg):  # even for a cell the fused path knows
        rk.dynamic_rnn(rk.GRUCell(U), IDS.unsqueeze(2), dtype=F64, backend="fused")


# ---------------------------------------------------------------------------------------------
# the state's dtype, and the outputs' when no step runs


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("given", ["dtype", "initial_state"])
def test_state_dtype_comes_from_dtype_or_initial_state(dtype: torch.dtype, given: str) -> None:
    cell = _embedding_cell(dtype=dtype)
    kwargs = {"dtype": dtype} if given == "dtype" else {"initial_state": cell.zero_state(B, dtype)}
    outputs, final = rk.dynamic_rnn(cell, IDS.unsqueeze(2), **kwargs)
    assert outputs.dtype == dtype and all(s.dtype == dtype for s in final)
    steps, final = rk.static_rnn(cell, list(IDS.unbind(1)), **kwargs)
    assert all(s.dtype == dtype for s in steps) and all(s.dtype == dtype for s in final)


@pytest.mark.parametrize("given", ["dtype", "initial_state"])
def test_every_length_zero_gives_zeros_of_the_state_dtype(given: str) -> None:
    cell = _embedding_cell()
    state = map_state(lambda s: s.requires_grad_(True), _random_state(cell, B, seed=4))
    kwargs = {"dtype": F64} if given == "dtype" else {"initial_state": state}
    outputs, final = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=[0, 0], **kwargs)
    assert outputs.dtype == F64 and torch.equal(outputs, torch.zeros(B, T, U, dtype=F64))
    steps, _ = rk.static_rnn(cell, list(IDS.unbind(1)), sequence_length=[0, 0], **kwargs)
    assert all(s.dtype == F64 and not s.any() for s in steps)
    if given == "initial_state":
        assert all(torch.equal(a, b) for a, b in zip(final, state))
        grads = torch.autograd.grad(outputs.sum() + sum(s.sum() for s in steps), [*cell.parameters()])
        assert all(not g.any() for g in grads)  # connected, and zero
    cell.requires_grad_(False)  # nothing to connect: no graph zero to promote the zeros' dtype
    kwargs = {"dtype": F64} if given == "dtype" else {"initial_state": map_state(torch.Tensor.detach, state)}
    outputs, _ = rk.dynamic_rnn(cell, IDS.unsqueeze(2), sequence_length=[0, 0], **kwargs)
    steps, _ = rk.static_rnn(cell, list(IDS.unbind(1)), sequence_length=[0, 0], **kwargs)
    assert not outputs.requires_grad
    assert outputs.dtype == F64 and all(s.dtype == F64 for s in steps)


def test_no_time_steps_gives_empty_outputs_of_the_state_dtype() -> None:
    cell = _embedding_cell()
    outputs, final = rk.dynamic_rnn(cell, IDS[:, :0].unsqueeze(2), dtype=F64)
    assert outputs.shape == (B, 0, U) and outputs.dtype == F64
    assert all(torch.equal(s, torch.zeros(B, U, dtype=F64)) for s in final)


# ---------------------------------------------------------------------------------------------
# errors


def test_ids_without_dtype_or_initial_state_get_tf_error() -> None:
    cell, other = _embedding_cell(), _embedding_cell(rk.GRUCell(U), seed=1)
    ids, steps = IDS.unsqueeze(2), list(IDS.unbind(1))
    with pytest.raises(ValueError, match=rf"inputs have dtype torch.int64.*{NO_DTYPE}"):
        rk.dynamic_rnn(cell, ids)
    with pytest.raises(ValueError, match=rf"inputs have dtype torch.int64.*{NO_DTYPE}"):
        rk.bidirectional_dynamic_rnn(cell, other, ids)
    with pytest.raises(ValueError, match=rf"inputs have dtype torch.int64.*{NO_DTYPE_STATIC}"):
        rk.static_rnn(cell, steps)
    with pytest.raises(ValueError, match=rf"inputs have dtype torch.int64.*{NO_DTYPE_STATIC}"):
        rk.static_bidirectional_rnn(cell, other, steps)


def test_ids_with_one_direction_state_only_name_the_other_direction() -> None:
    cell, other = _embedding_cell(), _embedding_cell(rk.GRUCell(U), seed=1)
    with pytest.raises(ValueError, match=rf"{NO_DTYPE} \(give initial_state_bw or dtype=") as info:
        rk.bidirectional_dynamic_rnn(cell, other, IDS.unsqueeze(2), initial_state_fw=cell.zero_state(B, F64))
    assert "initial_state_fw" not in str(info.value)
    with pytest.raises(ValueError, match=rf"{NO_DTYPE_STATIC} \(give initial_state_fw or dtype="):
        rk.static_bidirectional_rnn(cell, other, list(IDS.unbind(1)), initial_state_bw=other.zero_state(B, F64))
    (out_fw, out_bw), _ = rk.bidirectional_dynamic_rnn(
        cell, other, IDS.unsqueeze(2), initial_state_fw=cell.zero_state(B, F64), dtype=F64
    )
    assert out_fw.dtype == out_bw.dtype == F64


def test_ids_with_state_dtypes_that_disagree() -> None:
    cell = _embedding_cell()
    with pytest.raises(TypeError, match=r"initial_state.c has dtype torch.float64, but dtype= is torch.float32"):
        rk.dynamic_rnn(cell, IDS.unsqueeze(2), dtype=torch.float32, initial_state=cell.zero_state(B, F64))
    mixed = rk.LSTMStateTuple(torch.zeros(B, U, dtype=F64), torch.zeros(B, U))
    with pytest.raises(TypeError, match=r"initial_state.h has dtype torch.float32, but the first tensor of"):
        rk.dynamic_rnn(cell, IDS.unsqueeze(2), initial_state=mixed)
    with pytest.raises(TypeError, match=r"initial_state_bw.h has dtype torch.float32"):
        rk.static_bidirectional_rnn(cell, cell, list(IDS.unbind(1)), initial_state_bw=mixed, dtype=F64)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_ids_with_a_non_floating_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=r"dtype: RNN cell only supports floating point inputs"):
        rk.dynamic_rnn(_embedding_cell(), IDS.unsqueeze(2), dtype=dtype)


def test_ids_of_rank_2_get_tf_rank_error_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"inputs must have rank >= 3.*got rank 2.*ids.unsqueeze\(-1\)"):
        rk.dynamic_rnn(_embedding_cell(), IDS, dtype=F64)
    with pytest.raises(ValueError, match=r"got rank 2 with shape \[2, 4\] and dtype torch.float32$"):
        rk.dynamic_rnn(rk.GRUCell(U), torch.zeros(B, T))  # floating inputs: no hint about ids


FLOAT_ONLY_CELLS = {
    "BasicRNNCell": lambda: rk.BasicRNNCell(U),
    "GRUCell": lambda: rk.GRUCell(U),
    "BasicLSTMCell": lambda: rk.BasicLSTMCell(U),
    "LSTMCell-peepholes": lambda: rk.LSTMCell(U, use_peepholes=True),
    "MultiRNNCell": lambda: rk.MultiRNNCell([rk.GRUCell(U), rk.BasicLSTMCell(U)]),
    "DropoutWrapper": lambda: rk.DropoutWrapper(rk.GRUCell(U), input_keep_prob=0.5),
    "ResidualWrapper": lambda: rk.ResidualWrapper(rk.GRUCell(1)),
}


@pytest.mark.parametrize("name", list(FLOAT_ONLY_CELLS))
@pytest.mark.parametrize("runner", ["dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn"])
def test_a_float_only_cell_given_ids_names_the_inputs(name: str, runner: str) -> None:
    cell = FLOAT_ONLY_CELLS[name]()
    match = r"^inputs: RNN cell only supports floating point inputs, but received dtype: torch.int64$"
    with pytest.raises(ValueError, match=match):
        if runner == "dynamic_rnn":
            rk.dynamic_rnn(cell, IDS.unsqueeze(2), dtype=torch.float32, sequence_length=LENGTHS)
        elif runner == "static_rnn":
            rk.static_rnn(cell, [s.unsqueeze(1) for s in IDS.unbind(1)], dtype=torch.float32)
        else:
            rk.bidirectional_dynamic_rnn(cell, FLOAT_ONLY_CELLS[name](), IDS.unsqueeze(2), dtype=torch.float32)


def test_embedding_wrapper_given_floats_says_it_takes_ids() -> None:
    with pytest.raises(TypeError, match=r"must be integer ids, got dtype torch.float64"):
        rk.dynamic_rnn(_embedding_cell(), torch.zeros(B, T, 1, dtype=F64))


# ---------------------------------------------------------------------------------------------
# floating inputs keep rnnkit's rules


def test_floating_inputs_keep_their_rules() -> None:
    x = torch.randn(B, T, 2, generator=torch.Generator().manual_seed(5))
    outputs, _ = rk.dynamic_rnn(rk.GRUCell(U), x)  # no dtype needed
    assert outputs.dtype == torch.float32
    with pytest.raises(TypeError, match=r"dtype=torch.float64 differs from the inputs' dtype torch.float32"):
        rk.dynamic_rnn(rk.GRUCell(U), x, dtype=F64)
    with pytest.raises(TypeError, match=r"initial_state has dtype torch.float64, but the inputs have dtype"):
        rk.dynamic_rnn(rk.GRUCell(U), x, initial_state=torch.zeros(B, U, dtype=F64))
    outputs, _ = rk.dynamic_rnn(rk.GRUCell(U), x, sequence_length=[0, 0])
    assert outputs.dtype == torch.float32 and not outputs.any()


# ---------------------------------------------------------------------------------------------
# bool inputs through a user's cell: masking, time-major transposes, reversal, nesting


class _Counter(torch.nn.Module):
    """A user's cell (not an RNNCell subclass) on bool or number inputs ``[B, 1]``, or a pair
    ``(x, flags)``: ``state += w * x * flags``; output = new state, ``[B, 1]``."""

    state_size = 1
    output_size = 1

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0, dtype=F64))

    def zero_state(self, batch_size: int, dtype: torch.dtype, device: Any = None) -> torch.Tensor:
        return torch.zeros(batch_size, 1, dtype=dtype, device=device)

    def forward(self, inputs: Any, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, flags = inputs if isinstance(inputs, tuple) else (torch.ones_like(state), inputs)
        new = state + self.w * x * flags.to(state.dtype)
        return new, new


FLAGS = torch.tensor([[True, False, True, True], [True, True, False, True]])  # [B, T]


def _expected_counts(values: np.ndarray, lengths: list[int], reverse: bool) -> np.ndarray:
    """Cumulative ``2 * values`` within each length (from the end for the backward direction)."""
    out = np.zeros(values.shape)
    for b, length in enumerate(lengths):
        row = values[b, :length][::-1] if reverse else values[b, :length]
        counts = 2.0 * np.cumsum(row)
        out[b, :length] = counts[::-1] if reverse else counts
    return out


@pytest.mark.parametrize("time_major", [False, True])
def test_bool_inputs_forward_and_backward(time_major: bool) -> None:
    flags = FLAGS.unsqueeze(2).transpose(0, 1) if time_major else FLAGS.unsqueeze(2)
    (out_fw, out_bw), (state_fw, state_bw) = rk.bidirectional_dynamic_rnn(
        _Counter(), _Counter(), flags, sequence_length=LENGTHS, dtype=F64, time_major=time_major
    )
    if time_major:
        out_fw, out_bw = out_fw.transpose(0, 1), out_bw.transpose(0, 1)
    values = FLAGS.numpy().astype(np.float64)
    expected_fw = _expected_counts(values, LENGTHS, reverse=False)
    expected_bw = _expected_counts(values, LENGTHS, reverse=True)
    assert out_fw.dtype == out_bw.dtype == F64
    np.testing.assert_array_equal(out_fw[..., 0].detach().numpy(), expected_fw)
    np.testing.assert_array_equal(out_bw[..., 0].detach().numpy(), expected_bw)
    np.testing.assert_array_equal(state_fw[:, 0].detach().numpy(), [expected_fw[0, 3], expected_fw[1, 1]])
    np.testing.assert_array_equal(state_bw[:, 0].detach().numpy(), expected_bw[:, 0])


def test_bool_inputs_under_static_bidirectional_rnn() -> None:
    steps = [s.unsqueeze(1) for s in FLAGS.unbind(1)]
    outputs, _, _ = rk.static_bidirectional_rnn(_Counter(), _Counter(), steps, dtype=F64, sequence_length=LENGTHS)
    values = FLAGS.numpy().astype(np.float64)
    got = torch.stack(outputs, 1).detach().numpy()  # [B, T, 2]
    np.testing.assert_array_equal(got[..., 0], _expected_counts(values, LENGTHS, reverse=False))
    np.testing.assert_array_equal(got[..., 1], _expected_counts(values, LENGTHS, reverse=True))


def test_nested_float_and_bool_inputs_take_the_state_dtype_from_dtype() -> None:
    x = torch.randn(B, T, 1, generator=torch.Generator().manual_seed(6), dtype=F64)
    inputs = (x, FLAGS.unsqueeze(2))
    with pytest.raises(ValueError, match=rf"inputs have dtype torch.bool.*{NO_DTYPE}"):
        rk.dynamic_rnn(_Counter(), inputs)
    outputs, _ = rk.dynamic_rnn(_Counter(), inputs, dtype=F64, sequence_length=LENGTHS)
    values = (x[..., 0] * FLAGS).numpy()
    np.testing.assert_allclose(outputs[..., 0].detach().numpy(), _expected_counts(values, LENGTHS, False), rtol=1e-15)
