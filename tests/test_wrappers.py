"""Semantics of MultiRNNCell, DropoutWrapper and ResidualWrapper (spec §8, §9, §17.5, §17.6, §18).

Error messages are covered in test_errors.py; this file checks values, structures, weight
sharing, TF names and the randomness of dropout.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import rnnkit as rk
from rnnkit import LSTMStateTuple

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seeded():
    """The statistical checks below have wide margins; seeding makes them reproducible too."""
    torch.manual_seed(1234)


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _fill_kernels(cell, value: float = 0.5) -> None:
    """TF's root initializer 0.5 for every kernel; biases keep their TF defaults."""
    variables = rk.tf_variables(cell)
    assert variables, "the cell has no weights"
    with torch.no_grad():
        for name, param in variables.items():
            if name.endswith("kernel"):
                param.fill_(value)


def _close(actual, expected, atol: float = ATOL) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected.expand_as(actual) if expected.dim() == 0 else expected,
                               atol=atol, rtol=0)


class _OnesCell(rk.RNNCell):
    """A weightless cell that makes dropout visible exactly: output = inputs (unchanged), new
    state = LSTMStateTuple(c=ones, h=ones), whatever the old state."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    @property
    def state_size(self):
        return LSTMStateTuple(self.width, self.width)

    @property
    def output_size(self):
        return self.width

    def step(self, inputs, state):
        ones = torch.ones_like(state.c)
        return inputs.clone(), LSTMStateTuple(ones, ones.clone())


def _lstm_reference_setup():
    """§9.1's reference: LSTMCell(3, initializer=0.5), time-major x=[[[2,2,2]],[[1,1,1]]], c=h=0.1."""
    x = torch.tensor([[[2.0, 2.0, 2.0]], [[1.0, 1.0, 1.0]]])
    state = LSTMStateTuple(torch.full((1, 3), 0.1), torch.full((1, 3), 0.1))
    return x, state


def _run_reference(**dropout_kwargs):
    x, state = _lstm_reference_setup()
    cell = rk.DropoutWrapper(rk.LSTMCell(3, initializer=0.5), **dropout_kwargs)
    return rk.dynamic_rnn(cell, x, initial_state=state, time_major=True)


# ============================================================================================
# MultiRNNCell
# ============================================================================================


def test_multi_rnn_cell_concat_basic_lstm_golden():
    cell = rk.MultiRNNCell(
        [rk.BasicLSTMCell(2, state_is_tuple=False, input_size=2) for _ in range(2)], state_is_tuple=False
    )
    _fill_kernels(cell)
    output, state = cell(torch.ones(1, 2), torch.full((1, 8), 0.1))
    _close(output, [[0.240247, 0.240247]])
    assert isinstance(state, torch.Tensor)
    # layer-major layout [c0, h0, c1, h1]
    _close(state, [[0.689673, 0.689673, 0.448484, 0.448484, 0.398971, 0.398971, 0.240247, 0.240247]])


def test_multi_rnn_cell_tuple_of_concat_states_golden():
    """state_is_tuple=True around concat-state layers: a pair of [1, 4] tensors (TF's test)."""
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(2, state_is_tuple=False, input_size=2) for _ in range(2)])
    _fill_kernels(cell)
    output, (m0, m1) = cell(torch.ones(1, 2), (torch.full((1, 4), 0.1), torch.full((1, 4), 0.1)))
    _close(output, [[0.240247, 0.240247]])
    _close(m0, [[0.689673, 0.689673, 0.448484, 0.448484]])
    _close(m1, [[0.398971, 0.398971, 0.240247, 0.240247]])


def test_multi_rnn_cell_tuple_of_lstm_state_tuples_golden():
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(2, input_size=2) for _ in range(2)])
    _fill_kernels(cell)
    layer_state = LSTMStateTuple(torch.full((1, 2), 0.1), torch.full((1, 2), 0.1))
    output, state = cell(torch.ones(1, 2), (layer_state, layer_state))
    _close(output, [[0.240247, 0.240247]])
    assert type(state) is tuple and len(state) == 2
    assert all(isinstance(s, LSTMStateTuple) for s in state)
    _close(state[0].c, [[0.689673, 0.689673]])
    _close(state[0].h, [[0.448484, 0.448484]])
    _close(state[1].c, [[0.398971, 0.398971]])
    _close(state[1].h, [[0.240247, 0.240247]])
    assert state[1].h is not None and torch.equal(state[1].h, output)


def test_multi_rnn_cell_concat_gru_golden_and_weight_count():
    cell = rk.MultiRNNCell([rk.GRUCell(2, input_size=2) for _ in range(2)], state_is_tuple=False)
    _fill_kernels(cell)
    output, state = cell(torch.ones(1, 2), torch.full((1, 4), 0.1))
    _close(state, [[0.175991, 0.175991, 0.13248, 0.13248]])
    _close(output, [[0.13248, 0.13248]])
    assert len(rk.tf_variables(cell)) == 8  # TF's testMultiRNNCell: len(weights) == 8
    assert len(list(cell.parameters())) == 8


def test_multi_rnn_cell_sizes_and_zero_state_tuple_mode():
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(2), rk.GRUCell(3), rk.LSTMCell(4, num_proj=5)])
    assert cell.state_size == (LSTMStateTuple(2, 2), 3, LSTMStateTuple(4, 5))
    assert isinstance(cell.state_size[0], LSTMStateTuple)
    assert isinstance(cell.state_size[2], LSTMStateTuple)
    assert cell.output_size == 5
    zero = cell.zero_state(4, torch.float64)
    assert type(zero) is tuple and len(zero) == 3
    assert isinstance(zero[0], LSTMStateTuple) and isinstance(zero[2], LSTMStateTuple)
    assert isinstance(zero[1], torch.Tensor)
    shapes = [tuple(t.shape) for t in rk.flatten_state(zero)]
    assert shapes == [(4, 2), (4, 2), (4, 3), (4, 4), (4, 5)]
    for leaf in rk.flatten_state(zero):
        assert leaf.dtype == torch.float64
        assert torch.count_nonzero(leaf) == 0


def test_multi_rnn_cell_sizes_and_zero_state_concat_mode():
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(2, state_is_tuple=False), rk.GRUCell(3)], state_is_tuple=False)
    assert cell.state_size == 7
    assert cell.output_size == 3
    zero = cell.zero_state(5)
    assert isinstance(zero, torch.Tensor)
    assert tuple(zero.shape) == (5, 7)
    assert torch.count_nonzero(zero) == 0


def test_multi_rnn_cell_chains_layers_and_matches_its_cells():
    """Layer i+1 reads layer i's output; the output is the last layer's; states are per layer."""
    torch.manual_seed(0)
    lstm, gru = rk.BasicLSTMCell(3, input_size=2), rk.GRUCell(4, input_size=3)
    cell = rk.MultiRNNCell([lstm, gru])
    x = torch.randn(5, 2)
    s0 = LSTMStateTuple(torch.randn(5, 3), torch.randn(5, 3))
    s1 = torch.randn(5, 4)
    output, (n0, n1) = cell(x, (s0, s1))
    out0, ref0 = lstm(x, s0)
    out1, ref1 = gru(out0, s1)
    torch.testing.assert_close(output, out1)
    torch.testing.assert_close(n0.c, ref0.c)
    torch.testing.assert_close(n0.h, ref0.h)
    torch.testing.assert_close(n1, ref1)


def test_multi_rnn_cell_concat_mode_equals_tuple_mode():
    torch.manual_seed(1)
    layers = [rk.GRUCell(3, input_size=2), rk.GRUCell(2, input_size=3)]
    tuple_cell = rk.MultiRNNCell(layers)
    concat_cell = rk.MultiRNNCell(layers, state_is_tuple=False)
    x, s = torch.randn(4, 5, 2), torch.randn(4, 5)
    out_t, st_t = rk.dynamic_rnn(tuple_cell, x, initial_state=(s[:, :3], s[:, 3:]))
    out_c, st_c = rk.dynamic_rnn(concat_cell, x, initial_state=s)
    torch.testing.assert_close(out_t, out_c)
    torch.testing.assert_close(torch.cat(st_t, 1), st_c)
    assert tuple(out_c.shape) == (4, 5, 2)


def test_multi_rnn_cell_same_object_twice_warns_and_shares_weights():
    lstm = rk.BasicLSTMCell(2)
    with pytest.warns(UserWarning, match="same object"):
        cell = rk.MultiRNNCell([lstm, lstm])
    torch.manual_seed(2)
    x = torch.randn(3, 2)
    state = cell.zero_state(3)
    output, (n0, n1) = cell(x, state)
    names = list(rk.tf_variables(cell))
    assert names == ["rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel", "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias"]
    assert len(list(cell.parameters())) == 2
    # the same weights at both layers: applying the one cell twice by hand gives the same numbers
    out0, ref0 = lstm(x, state[0])
    out1, ref1 = lstm(out0, state[1])
    torch.testing.assert_close(output, out1)
    torch.testing.assert_close(n0.c, ref0.c)
    torch.testing.assert_close(n1.h, ref1.h)


def test_multi_rnn_cell_distinct_cells_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cell = rk.MultiRNNCell([rk.BasicLSTMCell(2), rk.BasicLSTMCell(2)])
    cell(torch.ones(1, 2), cell.zero_state(1))
    assert len(rk.tf_variables(cell)) == 4
    assert len(list(cell.parameters())) == 4


def test_multi_rnn_cell_in_dynamic_rnn_returns_per_layer_states():
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.GRUCell(2)])
    x = torch.randn(4, 6, 5)
    outputs, state = rk.dynamic_rnn(cell, x, sequence_length=[6, 2, 0, 3])
    assert tuple(outputs.shape) == (4, 6, 2)
    assert type(state) is tuple and isinstance(state[0], LSTMStateTuple)
    assert tuple(state[0].c.shape) == (4, 3) and tuple(state[1].shape) == (4, 2)
    # the final output of each live row is the last layer's state at its last step
    torch.testing.assert_close(outputs[0, 5], state[1][0])
    torch.testing.assert_close(outputs[1, 1], state[1][1])
    assert torch.count_nonzero(state[1][2]) == 0  # length 0: the zero initial state


# ============================================================================================
# DropoutWrapper: TF reference numbers (§9.1, §18)
# ============================================================================================


def test_dropout_keep_all_reference_values():
    outputs, state = _run_reference()
    _close(outputs[0], [[0.751109] * 3])
    _close(outputs[1], [[0.895509] * 3])
    _close(state.c, [[1.949385] * 3])
    torch.testing.assert_close(state.h, outputs[1])


def test_dropout_keep_all_with_tensor_keep_probs():
    """Keep probabilities given as scalar tensors equal to 1 give the same numbers (TF's KeepAll)."""
    one = torch.tensor(1.0)
    outputs, state = _run_reference(input_keep_prob=one, output_keep_prob=one, state_keep_prob=one)
    _close(outputs[1], [[0.895509] * 3])
    _close(state.c, [[1.949385] * 3])


def test_dropout_keep_no_output():
    outputs, state = _run_reference(output_keep_prob=1e-6)
    assert torch.count_nonzero(outputs) == 0
    _close(state.h, [[0.895509] * 3])
    _close(state.c, [[1.949385] * 3])


def test_dropout_keep_no_state_except_lstm_memory():
    outputs, state = _run_reference(state_keep_prob=1e-6)
    _close(outputs[0], [[0.751109] * 3])
    assert not torch.allclose(outputs[1], torch.full_like(outputs[1], 0.895509), atol=1e-3)
    assert torch.count_nonzero(state.h) == 0
    _close(state.c, [[1.713925] * 3])  # c is never dropped by the default filter


def test_dropout_keep_no_input():
    outputs, state = _run_reference(input_keep_prob=1e-6)
    assert not torch.allclose(outputs[0], torch.full_like(outputs[0], 0.751109), atol=1e-3)
    assert not torch.allclose(outputs[1], torch.full_like(outputs[1], 0.895509), atol=1e-3)
    assert not torch.allclose(state.c, torch.full_like(state.c, 1.949385), atol=1e-3)
    # with every input dropped the cell sees zeros: the same as the bare cell on zero inputs
    x, init = _lstm_reference_setup()
    ref_out, ref_state = rk.dynamic_rnn(rk.LSTMCell(3, initializer=0.5), torch.zeros_like(x),
                                        initial_state=init, time_major=True)
    torch.testing.assert_close(outputs, ref_out)
    torch.testing.assert_close(state.c, ref_state.c)


def test_dropout_eval_mode_is_the_bare_cell():
    torch.manual_seed(3)
    lstm = rk.LSTMCell(4, input_size=3)
    wrapper = rk.DropoutWrapper(lstm, input_keep_prob=0.5, output_keep_prob=0.5, state_keep_prob=0.5)
    x = torch.randn(6, 5, 3)
    ref_out, ref_state = rk.dynamic_rnn(lstm, x)
    wrapper.eval()
    out, state = rk.dynamic_rnn(wrapper, x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(state.c, ref_state.c)
    torch.testing.assert_close(state.h, ref_state.h)
    wrapper.train()
    out_train, _ = rk.dynamic_rnn(wrapper, x)
    assert not torch.allclose(out_train, ref_out)


def test_dropout_eval_propagates_from_an_enclosing_multi_rnn_cell():
    torch.manual_seed(4)
    gru = rk.GRUCell(3, input_size=3)
    stack = rk.MultiRNNCell([rk.DropoutWrapper(gru, output_keep_prob=0.5)])
    x = torch.randn(4, 3, 3)
    ref, _ = rk.dynamic_rnn(gru, x)
    stack.eval()
    out, _ = rk.dynamic_rnn(stack, x)
    torch.testing.assert_close(out, ref)


def test_dropout_keep_prob_one_draws_no_random_numbers():
    """A keep probability of exactly 1.0 skips the dropout (no mask drawn, RNG untouched)."""
    cell = rk.DropoutWrapper(rk.GRUCell(3, input_size=2))
    x = torch.randn(2, 4, 2)
    rng = torch.get_rng_state()
    out, _ = rk.dynamic_rnn(cell, x)
    assert torch.equal(torch.get_rng_state(), rng)
    ref, _ = rk.dynamic_rnn(cell.wrapped_cell, x)
    torch.testing.assert_close(out, ref)


# ============================================================================================
# DropoutWrapper: exact masks
# ============================================================================================


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["input", "output"])
def test_dropout_values_are_zero_or_scaled_by_inverse_keep(kind, dtype):
    keep = 0.25
    wrapper = rk.DropoutWrapper(_OnesCell(8), **{f"{kind}_keep_prob": keep})
    x = torch.ones(2000, 8, dtype=dtype)
    state = wrapper.zero_state(2000, dtype)
    output, new_state = wrapper(x, state)
    assert output.dtype == dtype
    values = set(output.unique().tolist())
    assert values == {0.0, 1.0 / keep}
    kept = (output != 0).to(torch.float64).mean().item()
    assert abs(kept - keep) < 0.03
    assert torch.equal(x, torch.ones_like(x))  # the caller's inputs are not modified
    assert torch.equal(new_state.h, torch.ones_like(new_state.h))  # no state dropout asked


def test_dropout_state_values_and_default_filter():
    keep = 0.5
    wrapper = rk.DropoutWrapper(_OnesCell(8), state_keep_prob=keep)
    output, state = wrapper(torch.ones(2000, 8), wrapper.zero_state(2000))
    assert torch.equal(output, torch.ones(2000, 8))
    assert torch.equal(state.c, torch.ones(2000, 8))  # LSTM memory c: never dropped by default
    assert set(state.h.unique().tolist()) == {0.0, 2.0}
    assert abs((state.h != 0).float().mean().item() - keep) < 0.03


def test_dropout_scaling_preserves_the_mean():
    wrapper = rk.DropoutWrapper(_OnesCell(50), output_keep_prob=0.7)
    output, _ = wrapper(torch.ones(1000, 50), wrapper.zero_state(1000))
    assert abs(output.mean().item() - 1.0) < 0.02


def test_dropout_non_variational_masks_differ_between_steps_and_rows():
    wrapper = rk.DropoutWrapper(_OnesCell(16), output_keep_prob=0.5)
    outputs, _ = rk.dynamic_rnn(wrapper, torch.ones(64, 3, 16))
    assert not torch.equal(outputs[:, 0], outputs[:, 1])
    assert not torch.equal(outputs[:, 1], outputs[:, 2])
    assert not torch.equal(outputs[0, 0], outputs[1, 0])


def test_dropout_default_filter_in_a_multi_rnn_cell_state():
    """Each layer's LSTMStateTuple keeps its c; a GRU layer's state is dropped."""
    torch.manual_seed(5)
    stack = rk.MultiRNNCell([rk.LSTMCell(3, input_size=2), rk.GRUCell(3, input_size=3)])
    wrapper = rk.DropoutWrapper(stack, state_keep_prob=1e-6)
    x = torch.randn(2, 2)
    _, (lstm_state, gru_state) = wrapper(x, wrapper.zero_state(2))
    _, (ref_lstm, ref_gru) = stack(x, stack.zero_state(2))
    torch.testing.assert_close(lstm_state.c, ref_lstm.c)
    assert torch.count_nonzero(ref_lstm.c) > 0
    assert torch.count_nonzero(lstm_state.h) == 0
    assert torch.count_nonzero(gru_state) == 0


# ============================================================================================
# DropoutWrapper: custom state filter
# ============================================================================================


def test_dropout_filter_returning_false_drops_nothing_from_the_state():
    calls = []

    def keep_state(substate):
        calls.append(substate)
        return False

    outputs, state = _run_reference(state_keep_prob=1e-6, dropout_state_filter_visitor=keep_state)
    assert calls, "the visitor was not called"
    _close(outputs[0], [[0.751109] * 3])
    _close(outputs[1], [[0.895509] * 3])
    _close(state.h, [[0.895509] * 3])
    _close(state.c, [[1.949385] * 3])


def test_dropout_filter_can_drop_c_and_keep_h():
    def drop_memory_only(substate):
        if isinstance(substate, LSTMStateTuple):
            return LSTMStateTuple(c=True, h=False)
        return True

    outputs, state = _run_reference(state_keep_prob=1e-6, dropout_state_filter_visitor=drop_memory_only)
    _close(outputs[0], [[0.751109] * 3])
    # step 1 starts from c=0 (dropped) and h=0.751109 (kept)
    g = 0.5 * (3.0 + 3 * 0.7511088)
    c2 = _sigmoid(g) * math.tanh(g)
    h2 = _sigmoid(g) * math.tanh(c2)
    assert abs(h2 - 0.678198) < 1e-5
    _close(outputs[1], [[h2] * 3])
    assert torch.count_nonzero(state.c) == 0
    _close(state.h, [[h2] * 3])


def test_dropout_filter_structure_selects_layers_of_a_multi_rnn_cell_state():
    """A depth-1 structure of bools: False leaves that layer alone, True descends into it."""
    torch.manual_seed(9)
    stack = rk.MultiRNNCell([rk.GRUCell(3, input_size=2), rk.GRUCell(3, input_size=3)])

    def second_layer_only(substate):
        return (False, True) if isinstance(substate, tuple) else True

    wrapper = rk.DropoutWrapper(stack, state_keep_prob=1e-6, dropout_state_filter_visitor=second_layer_only)
    x = torch.randn(2, 2)
    _, (s0, s1) = wrapper(x, wrapper.zero_state(2))
    _, (r0, r1) = stack(x, stack.zero_state(2))
    torch.testing.assert_close(s0, r0)
    assert torch.count_nonzero(r0) > 0
    assert torch.count_nonzero(s1) == 0


def test_dropout_filter_sees_the_whole_state_first():
    seen = []

    def visitor(substate):
        seen.append(substate)
        return True

    wrapper = rk.DropoutWrapper(_OnesCell(4), state_keep_prob=0.5, dropout_state_filter_visitor=visitor)
    _, state = wrapper(torch.ones(1000, 4), wrapper.zero_state(1000))
    assert isinstance(seen[0], LSTMStateTuple)
    # True at every level: both c and h are dropped
    assert set(state.c.unique().tolist()) == {0.0, 2.0}
    assert set(state.h.unique().tolist()) == {0.0, 2.0}


# ============================================================================================
# DropoutWrapper: variational_recurrent
# ============================================================================================


def test_variational_output_mask_is_constant_over_time_and_differs_between_rows():
    wrapper = rk.DropoutWrapper(_OnesCell(16), output_keep_prob=0.5, variational_recurrent=True)
    outputs, _ = rk.dynamic_rnn(wrapper, torch.ones(500, 4, 16))
    for t in range(1, 4):
        assert torch.equal(outputs[:, t], outputs[:, 0])
    assert set(outputs.unique().tolist()) == {0.0, 2.0}
    rows = outputs[:, 0]
    assert (rows != rows[0]).any(dim=1).float().mean().item() > 0.9  # one mask per sequence
    assert abs((rows != 0).float().mean().item() - 0.5) < 0.03


def test_variational_input_and_state_masks_are_constant_over_steps():
    wrapper = rk.DropoutWrapper(
        _OnesCell(16), input_keep_prob=0.5, state_keep_prob=0.5, variational_recurrent=True,
        input_size=16, dtype=torch.float32,
    )
    wrapper.start_sequence()
    state = wrapper.zero_state(200)
    outs, hs = [], []
    for _ in range(3):
        out, state = wrapper(torch.ones(200, 16), state)
        outs.append(out)
        hs.append(state.h)
        assert torch.equal(state.c, torch.ones(200, 16))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    assert torch.equal(hs[0], hs[1]) and torch.equal(hs[1], hs[2])
    assert not torch.equal(outs[0], hs[0])  # input and state masks are independent draws
    wrapper.start_sequence()
    out, state = wrapper(torch.ones(200, 16), wrapper.zero_state(200))
    assert not torch.equal(out, outs[0])
    assert not torch.equal(state.h, hs[0])


def test_variational_masks_are_redrawn_at_each_dynamic_rnn_call():
    wrapper = rk.DropoutWrapper(_OnesCell(16), output_keep_prob=0.5, variational_recurrent=True)
    x = torch.ones(64, 3, 16)
    first, _ = rk.dynamic_rnn(wrapper, x)
    second, _ = rk.dynamic_rnn(wrapper, x)
    assert torch.equal(second[:, 0], second[:, 2])
    assert not torch.equal(first, second)


def test_variational_masks_are_redrawn_inside_a_multi_rnn_cell():
    inner = rk.DropoutWrapper(_OnesCell(16), output_keep_prob=0.5, variational_recurrent=True)
    stack = rk.MultiRNNCell([inner])
    x = torch.ones(64, 3, 16)
    first, _ = rk.dynamic_rnn(stack, x)
    second, _ = rk.dynamic_rnn(stack, x)
    assert torch.equal(first[:, 0], first[:, 2])
    assert not torch.equal(first, second)


def test_variational_real_cell_in_eval_mode_is_the_bare_cell():
    torch.manual_seed(6)
    gru = rk.GRUCell(3, input_size=2)
    wrapper = rk.DropoutWrapper(gru, input_keep_prob=0.5, output_keep_prob=0.5, state_keep_prob=0.5,
                                variational_recurrent=True, input_size=2, dtype=torch.float32).eval()
    x = torch.randn(3, 4, 2)
    torch.testing.assert_close(rk.dynamic_rnn(wrapper, x)[0], rk.dynamic_rnn(gru, x)[0])


# ============================================================================================
# DropoutWrapper: seeds and determinism
# ============================================================================================


@pytest.mark.parametrize("variational", [False, True])
def test_dropout_same_seed_gives_identical_results(variational):
    torch.manual_seed(7)
    x = torch.randn(8, 5, 3)

    def make(seed):
        gru = rk.GRUCell(4, input_size=3)
        with torch.no_grad():
            for p in gru.parameters():
                p.fill_(0.3)
        return rk.DropoutWrapper(gru, input_keep_prob=0.6, output_keep_prob=0.6, state_keep_prob=0.6,
                                 variational_recurrent=variational, input_size=3, dtype=torch.float32,
                                 seed=seed)

    a, b, c = make(42), make(42), make(43)
    torch.manual_seed(0)
    out_a, st_a = rk.dynamic_rnn(a, x)
    torch.manual_seed(1)  # the seeded wrapper does not depend on the global RNG
    out_b, st_b = rk.dynamic_rnn(b, x)
    out_c, _ = rk.dynamic_rnn(c, x)
    assert torch.equal(out_a, out_b)
    assert torch.equal(st_a, st_b)
    assert not torch.equal(out_a, out_c)
    # the same seeded wrapper keeps producing fresh masks on later calls, in step with its twin
    again_a, _ = rk.dynamic_rnn(a, x)
    again_b, _ = rk.dynamic_rnn(b, x)
    assert torch.equal(again_a, again_b)
    assert not torch.equal(again_a, out_a)


def test_dropout_without_seed_is_deterministic_under_manual_seed():
    wrapper = rk.DropoutWrapper(_OnesCell(8), input_keep_prob=0.5, output_keep_prob=0.5, state_keep_prob=0.5)
    x = torch.ones(16, 4, 8)
    torch.manual_seed(123)
    out1, st1 = rk.dynamic_rnn(wrapper, x)
    torch.manual_seed(123)
    out2, st2 = rk.dynamic_rnn(wrapper, x)
    torch.manual_seed(124)
    out3, _ = rk.dynamic_rnn(wrapper, x)
    assert torch.equal(out1, out2)
    assert torch.equal(st1.h, st2.h)
    assert not torch.equal(out1, out3)


# ============================================================================================
# DropoutWrapper: pass-through properties
# ============================================================================================


def test_dropout_wrapper_properties_pass_through():
    lstm = rk.LSTMCell(4, num_proj=3)
    wrapper = rk.DropoutWrapper(lstm, output_keep_prob=0.5)
    assert wrapper.wrapped_cell is lstm
    assert wrapper.state_size == lstm.state_size == LSTMStateTuple(4, 3)
    assert isinstance(wrapper.state_size, LSTMStateTuple)
    assert wrapper.output_size == lstm.output_size == 3
    zero, ref = wrapper.zero_state(2, torch.float64), lstm.zero_state(2, torch.float64)
    assert isinstance(zero, LSTMStateTuple)
    for a, b in zip(zero, ref):
        assert a.dtype == b.dtype == torch.float64
        assert torch.equal(a, b)
    assert tuple(zero.h.shape) == (2, 3)


def test_dropout_wrapper_shares_the_cells_weights():
    lstm = rk.LSTMCell(4, input_size=3)
    wrapper = rk.DropoutWrapper(lstm, output_keep_prob=0.5)
    assert [id(p) for p in wrapper.parameters()] == [id(p) for p in lstm.parameters()]


# ============================================================================================
# ResidualWrapper
# ============================================================================================


def _gru3_half():
    return rk.GRUCell(3, kernel_initializer=0.5, bias_initializer=0.5)


def test_residual_wrapper_golden_gru():
    """TF's testResidualWrapper: GRU(3), kernels and biases 0.5; output = base output + input."""
    base = _gru3_half()
    wrapper = rk.ResidualWrapper(base)
    x = torch.ones(1, 3)
    m = torch.full((1, 3), 0.1)
    g, m_new = base(x, m)
    g_res, m_new_res = wrapper(x, m)
    torch.testing.assert_close(g_res, g + x)
    torch.testing.assert_close(m_new_res, m_new)
    u = _sigmoid(0.5 * (3 + 0.3) + 0.5)
    expected = u * 0.1 + (1 - u) * math.tanh(0.5 * (3 + 3 * u * 0.1) + 0.5)
    assert abs(expected - 0.191017) < 1e-5
    _close(m_new_res, [[expected] * 3])
    _close(g_res, [[1 + expected] * 3])


def test_residual_wrapper_with_slice_fn():
    """TF's testResidualWrapperWithSlice: a custom residual_fn is used, with (inputs, outputs)."""
    base = _gru3_half()
    calls = []

    def residual_with_slice(inputs, outputs):
        calls.append((inputs, outputs))
        return inputs[:, :3] + outputs

    wrapper = rk.ResidualWrapper(base, residual_with_slice)
    x = torch.ones(1, 5)
    m = torch.full((1, 3), 0.5)
    g, m_new = base(x, m)
    g_res, m_new_res = wrapper(x, m)
    assert len(calls) == 1 and calls[0][0] is x
    torch.testing.assert_close(calls[0][1], g)
    torch.testing.assert_close(g_res, g + 1.0)
    torch.testing.assert_close(m_new_res, m_new)
    _close(g_res, [[1.511462] * 3])


def test_residual_wrapper_in_dynamic_rnn():
    torch.manual_seed(8)
    lstm = rk.LSTMCell(3, input_size=3)
    wrapper = rk.ResidualWrapper(lstm)
    x = torch.randn(2, 4, 3)
    lengths = [4, 2]
    out, state = rk.dynamic_rnn(wrapper, x, sequence_length=lengths)
    ref_out, ref_state = rk.dynamic_rnn(lstm, x, sequence_length=lengths)
    torch.testing.assert_close(out[0], ref_out[0] + x[0])
    torch.testing.assert_close(out[1, :2], ref_out[1, :2] + x[1, :2])
    assert torch.count_nonzero(out[1, 2:]) == 0  # past the length: zeros, residual included
    torch.testing.assert_close(state.c, ref_state.c)
    torch.testing.assert_close(state.h, ref_state.h)
    # the state is the cell's h, not the residual output
    assert not torch.allclose(state.h[0], out[0, 3])


def test_residual_wrapper_properties_pass_through():
    lstm = rk.LSTMCell(4)
    wrapper = rk.ResidualWrapper(lstm)
    assert wrapper.wrapped_cell is lstm
    assert wrapper.state_size == LSTMStateTuple(4, 4)
    assert wrapper.output_size == 4
    zero = wrapper.zero_state(3)
    assert isinstance(zero, LSTMStateTuple)
    assert tuple(zero.c.shape) == (3, 4) and torch.count_nonzero(zero.c) == 0


def test_residual_wrapper_gradient_reaches_input_directly():
    gru = rk.GRUCell(2, input_size=2)
    with torch.no_grad():
        for p in gru.parameters():
            p.zero_()
    x = torch.randn(1, 2, requires_grad=True)
    out, _ = rk.ResidualWrapper(gru)(x, torch.zeros(1, 2))
    out.sum().backward()
    # with zero weights the cell's output does not depend on x: the gradient is the identity's
    torch.testing.assert_close(x.grad, torch.ones(1, 2))


# ============================================================================================
# TF names: wrappers add no scope level
# ============================================================================================


def test_wrappers_add_no_scope_level_in_multi_rnn_cell():
    cell = rk.MultiRNNCell([rk.DropoutWrapper(rk.LSTMCell(5)), rk.ResidualWrapper(rk.GRUCell(5))])
    cell(torch.ones(2, 5), cell.zero_state(2))
    assert list(rk.tf_variables(cell)) == [
        "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
    ]
    variables = rk.tf_variables(cell)
    assert variables["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"] is cell.cells[0].wrapped_cell.kernel
    assert tuple(variables["rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel"].shape) == (10, 10)


def test_nested_wrappers_add_no_scope_level():
    gru = rk.GRUCell(3, input_size=3)
    wrapped = rk.ResidualWrapper(rk.DropoutWrapper(gru, output_keep_prob=0.5))
    names = list(rk.tf_variables(wrapped, scope="enc"))
    assert names == ["enc/gru_cell/gates/kernel", "enc/gru_cell/gates/bias",
                     "enc/gru_cell/candidate/kernel", "enc/gru_cell/candidate/bias"]
    assert list(rk.tf_variables(rk.DropoutWrapper(rk.LSTMCell(2)))) == ["rnn/lstm_cell/kernel", "rnn/lstm_cell/bias"]


def test_load_tf_variables_through_wrappers():
    cell = rk.MultiRNNCell([rk.DropoutWrapper(rk.BasicLSTMCell(2)), rk.ResidualWrapper(rk.GRUCell(2))])
    arrays = {
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel": torch.full((5, 8), 0.5),
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias": torch.zeros(8),
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel": torch.full((4, 4), 0.5),
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias": torch.ones(4),
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel": torch.full((4, 2), 0.5),
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias": torch.zeros(2),
    }
    result = rk.load_tf_variables(cell, arrays)
    assert result == rk.LoadResult([], [], [])
    lstm = cell.cells[0].wrapped_cell
    assert lstm.input_size == 3
    torch.testing.assert_close(lstm.kernel.detach(), torch.full((5, 8), 0.5))
    torch.testing.assert_close(cell.cells[1].wrapped_cell.gates.bias.detach(), torch.ones(4))
