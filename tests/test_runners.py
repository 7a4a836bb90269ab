"""dynamic_rnn, static_rnn and the bidirectional runners: TF's semantics, and agreement with
the hand-unrolled loop (the specification) in outputs, states and gradients."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

import rnnkit as rk

F64 = torch.float64

CELLS: dict[str, Callable[[], Any]] = {
    "basic_rnn": lambda: rk.BasicRNNCell(3),
    "basic_lstm": lambda: rk.BasicLSTMCell(3, forget_bias=0.5),
    "lstm_full": lambda: rk.LSTMCell(4, use_peepholes=True, cell_clip=0.8, num_proj=3, proj_clip=0.6),
    "lstm_concat": lambda: rk.LSTMCell(3, state_is_tuple=False, activation="relu"),
    "gru": lambda: rk.GRUCell(3),
    "multi": lambda: rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.GRUCell(2), rk.LSTMCell(2, use_peepholes=True)]),
    "multi_concat": lambda: rk.MultiRNNCell(
        [rk.BasicLSTMCell(3, state_is_tuple=False), rk.GRUCell(3)], state_is_tuple=False
    ),
    "residual": lambda: rk.ResidualWrapper(rk.GRUCell(2)),
}


def _cell(name: str, depth: int = 2) -> Any:
    torch.manual_seed(0)
    cell = CELLS[name]()
    cell(torch.zeros(1, depth, dtype=F64), cell.zero_state(1, F64))  # build
    return cell


def _random_state(cell: Any, batch: int) -> Any:
    return rk.map_state(lambda z: torch.randn_like(z).requires_grad_(), cell.zero_state(batch, F64))


def _hand_unrolled(cell: Any, x: torch.Tensor, lengths: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
    """The TF loop written out: outputs zero and state carried through past each length."""
    outputs = []
    for t in range(x.shape[1]):
        output, new_state = cell(x[:, t], state)
        if lengths is not None:
            alive = (t < lengths).unsqueeze(1)
            output = torch.where(alive, output, torch.zeros_like(output))
            new_state = rk.map_state(lambda n, s: torch.where(alive, n, s), new_state, state)
        outputs.append(output)
        state = new_state
    return torch.stack(outputs, 1), state


def _grads(outputs: torch.Tensor, state: Any, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    torch.manual_seed(5)
    loss = (outputs * torch.randn_like(outputs)).sum()
    loss = loss + sum((leaf * torch.randn_like(leaf)).sum() for leaf in rk.flatten_state(state))
    return list(torch.autograd.grad(loss, wrt, allow_unused=False))


def _assert_same(a: Any, b: Any) -> None:
    for x, y in zip(rk.flatten_state(a), rk.flatten_state(b), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("lengths", [None, [5, 0, 3, 7]], ids=["full", "lengths"])
def test_dynamic_equals_hand_loop_and_static(name: str, lengths: list[int] | None) -> None:
    cell = _cell(name)
    torch.manual_seed(1)
    x = torch.randn(4, 5, 2, dtype=F64, requires_grad=True)
    seq = None if lengths is None else torch.tensor(lengths)
    init = _random_state(cell, 4)
    wrt = [x, *cell.parameters(), *rk.flatten_state(init)]

    out, state = rk.dynamic_rnn(cell, x, sequence_length=seq, initial_state=init)
    ref_out, ref_state = _hand_unrolled(cell, x, seq, init)
    static_out, static_state = rk.static_rnn(cell, list(x.unbind(1)), initial_state=init, sequence_length=seq)
    _assert_same(out, ref_out)
    _assert_same(state, ref_state)
    _assert_same(out, torch.stack(static_out, 1))
    _assert_same(state, static_state)
    reference_grads = _grads(ref_out, ref_state, wrt)
    _assert_same(_grads(out, state, wrt), reference_grads)
    _assert_same(_grads(torch.stack(static_out, 1), static_state, wrt), reference_grads)
    assert type(state) is type(ref_state)


@pytest.mark.parametrize("name", ["basic_lstm", "multi", "gru"])
def test_time_major_equals_batch_major(name: str) -> None:
    cell = _cell(name)
    x = torch.randn(3, 6, 2, dtype=F64)
    lengths = torch.tensor([6, 2, 4])
    out, state = rk.dynamic_rnn(cell, x, sequence_length=lengths)
    out_tm, state_tm = rk.dynamic_rnn(cell, x.transpose(0, 1), sequence_length=lengths, time_major=True)
    assert torch.equal(out_tm.transpose(0, 1), out)
    for a, b in zip(rk.flatten_state(state), rk.flatten_state(state_tm)):
        assert torch.equal(a, b)


def test_lengths_zero_outputs_and_carry_the_state() -> None:
    cell = _cell("multi")
    x = torch.randn(4, 6, 2, dtype=F64, requires_grad=True)
    lengths = [6, 3, 0, 9]  # 9 > T means all steps
    init = _random_state(cell, 4)
    out, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=init)
    assert torch.equal(out[1, 3:], torch.zeros_like(out[1, 3:]))
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    # length 0: the initial state; otherwise: the state after step length-1
    for final, start in zip(rk.flatten_state(state), rk.flatten_state(init)):
        assert torch.equal(final[2], start[2])
    _, state_3 = rk.dynamic_rnn(cell, x[1:2, :3], initial_state=rk.map_state(lambda s: s[1:2], init))
    _assert_same(rk.map_state(lambda s: s[1:2], state), state_3)
    _, state_full = rk.dynamic_rnn(cell, x[3:4], initial_state=rk.map_state(lambda s: s[3:4], init))
    _assert_same(rk.map_state(lambda s: s[3:4], state), state_full)
    # no gradient reaches the inputs past each length
    (grad,) = torch.autograd.grad(out.sum() + sum(s.sum() for s in rk.flatten_state(state)), [x])
    assert torch.equal(grad[1, 3:], torch.zeros_like(grad[1, 3:])) and torch.equal(grad[2], torch.zeros_like(grad[2]))
    assert grad[0].abs().sum() > 0


def test_zero_time_steps() -> None:
    cell = _cell("lstm_full")
    init = _random_state(cell, 3)
    out, state = rk.dynamic_rnn(cell, torch.zeros(3, 0, 2, dtype=F64), sequence_length=[0, 0, 0], initial_state=init)
    assert list(out.shape) == [3, 0, 3] and out.dtype == F64
    assert isinstance(state, rk.LSTMStateTuple) and state.c is init.c and state.h is init.h
    out_tm, _ = rk.dynamic_rnn(rk.GRUCell(5), torch.zeros(0, 2, 4), time_major=True)
    assert list(out_tm.shape) == [0, 2, 5]


def test_default_state_takes_the_inputs_dtype_and_device() -> None:
    cell = rk.BasicLSTMCell(3)
    out, state = rk.dynamic_rnn(cell, torch.randn(2, 4, 5, dtype=F64))
    assert out.dtype == F64 and state.dtype == F64
    out32, _ = rk.dynamic_rnn(rk.GRUCell(3), torch.randn(2, 4, 5), dtype=torch.float32)
    assert out32.dtype == torch.float32


@pytest.mark.parametrize(
    "lengths", [[2, 3], np.array([2, 3]), torch.tensor([2, 3], dtype=torch.int32), torch.tensor([2.0, 3.0])]
)
def test_sequence_length_forms(lengths: Any) -> None:
    cell = rk.BasicRNNCell(2)
    x = torch.randn(2, 4, 3)
    out, _ = rk.dynamic_rnn(cell, x, sequence_length=lengths)
    expected, _ = rk.dynamic_rnn(cell, x, sequence_length=torch.tensor([2, 3]))
    assert torch.equal(out, expected)


class PlusOne(rk.RNNCell):
    """TF's test cell: output = input + 1 per leaf, state counts steps; nested in and out."""

    @property
    def state_size(self) -> int:
        return 2

    @property
    def output_size(self) -> tuple[int, int]:
        return (2, 3)

    def _check_call(self, inputs: Any, state: Any) -> None:
        pass

    def step(self, inputs: Any, state: torch.Tensor) -> tuple[Any, torch.Tensor]:
        a, b = inputs
        return (a + 1, b + 1), state + 1


def test_nested_inputs_and_outputs_and_a_user_cell() -> None:
    a, b = torch.randn(3, 4, 2), torch.randn(3, 4, 3)
    (out_a, out_b), state = rk.dynamic_rnn(PlusOne(), (a, b), sequence_length=[4, 2, 0])
    assert torch.equal(out_a[0], a[0] + 1) and torch.equal(out_b[1, :2], b[1, :2] + 1)
    assert torch.equal(out_b[1, 2:], torch.zeros(2, 3)) and torch.equal(out_a[2], torch.zeros(4, 2))
    assert torch.equal(state, torch.tensor([[4.0, 4.0], [2.0, 2.0], [0.0, 0.0]]))
    outputs, state = rk.static_rnn(PlusOne(), [(a[:, t], b[:, t]) for t in range(4)], sequence_length=[2, 3, 4])
    assert torch.equal(outputs[2][0][0], torch.zeros(2)) and torch.equal(outputs[2][0][1], a[1, 2] + 1)
    assert torch.equal(state[:, 0], torch.tensor([2.0, 3.0, 4.0]))


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 0, 4]], ids=["full", "lengths"])
def test_bidirectional_with_one_cell_is_symmetric(time_major: bool, lengths: list[int] | None) -> None:
    # TF's testBidirectionalDynamicRNN: the same weights both ways and the same input at
    # every step give mirrored outputs
    cell = _cell("basic_lstm")
    x = torch.randn(4, 1, 2, dtype=F64).expand(4, 5, 2)
    seq = torch.tensor(lengths) if lengths is not None else torch.full((4,), 5)
    inputs = x.transpose(0, 1) if time_major else x
    (out_fw, out_bw), (st_fw, st_bw) = rk.bidirectional_dynamic_rnn(
        cell, cell, inputs, sequence_length=lengths, time_major=time_major
    )
    if time_major:
        out_fw, out_bw = out_fw.transpose(0, 1), out_bw.transpose(0, 1)
    for b, n in enumerate(seq.tolist()):
        assert torch.equal(out_fw[b, :n], out_bw[b, :n].flip(0))
        assert torch.equal(out_bw[b, n:], torch.zeros_like(out_bw[b, n:]))
    # the backward state summarizes the reversed sequence: its h is out_bw at t=0
    torch.testing.assert_close(st_bw.h[seq > 0], out_bw[seq > 0, 0], rtol=0, atol=0)
    backward_only, _ = rk.dynamic_rnn(cell, rk.reverse_sequence(x, seq, 1), sequence_length=seq)
    assert torch.equal(rk.reverse_sequence(backward_only, seq, 1), out_bw)


def test_static_bidirectional_concatenates_features() -> None:
    fw, bw = rk.GRUCell(3), rk.GRUCell(3)
    x = torch.randn(2, 1, 5, dtype=F64).expand(2, 4, 5)
    fw(x[:, 0], fw.zero_state(2, F64))
    bw.load_state_dict(fw.state_dict())
    outputs, st_fw, st_bw = rk.static_bidirectional_rnn(fw, bw, list(x.unbind(1)), sequence_length=[2, 4])
    assert len(outputs) == 4 and list(outputs[0].shape) == [2, 6]
    for b, n in enumerate([2, 4]):
        for t in range(n):
            assert torch.equal(outputs[t][b, :3], outputs[n - 1 - t][b, 3:])
    assert torch.equal(st_fw, st_bw)
    (dyn_fw, dyn_bw), _ = rk.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[2, 4])
    assert torch.equal(torch.stack(outputs, 1), torch.cat([dyn_fw, dyn_bw], 2))


def test_reverse_sequence() -> None:
    x = torch.arange(12.0).view(2, 6, 1)
    out = rk.reverse_sequence(x, torch.tensor([3, 6]), time_axis=1)
    assert out[0, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0, 4.0, 5.0]
    assert out[1, :, 0].tolist() == [11.0, 10.0, 9.0, 8.0, 7.0, 6.0]
    assert torch.equal(rk.reverse_sequence(x.transpose(0, 1), torch.tensor([3, 6]), time_axis=0), out.transpose(0, 1))


def test_detach_state_cuts_the_graph_between_batches() -> None:
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.GRUCell(3)])
    x1 = torch.randn(2, 4, 2, requires_grad=True)
    _, state = rk.dynamic_rnn(cell, x1)
    carried = rk.detach_state(state)
    assert isinstance(carried[0], rk.LSTMStateTuple) and not any(s.requires_grad for s in rk.flatten_state(carried))
    out, _ = rk.dynamic_rnn(cell, torch.randn(2, 4, 2), initial_state=carried)
    out.sum().backward()
    assert x1.grad is None and cell.cells[0].kernel.grad is not None
    assert rk.detach_state(None) is None


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradcheck_dynamic_rnn_with_lengths(name: str) -> None:
    layer = rk.RNN(_cell(name))
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(3, 4, 2, dtype=F64, requires_grad=True)
    init = _random_state(layer.cell, 3)
    num_leaves = len(rk.flatten_state(init))

    def run(x: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = rk.pack_state(init, flat[:num_leaves])
        weights = dict(zip(names, flat[num_leaves:]))
        kwargs = {"sequence_length": [4, 0, 2], "initial_state": state}
        out, final = torch.func.functional_call(layer, weights, (x,), kwargs)
        return (out, *rk.flatten_state(final))

    weights = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(run, (x, *rk.flatten_state(init), *weights))


def test_gradcheck_bidirectional_and_static() -> None:
    fw, bw = _cell("lstm_full"), _cell("gru")
    x = torch.randn(3, 4, 2, dtype=F64, requires_grad=True)

    def bidirectional(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        (a, b), (s_fw, s_bw) = rk.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[4, 1, 0])
        return (a, b, *rk.flatten_state((s_fw, s_bw)))

    def static(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, state = rk.static_rnn(fw, list(x.unbind(1)), sequence_length=[3, 4, 0])
        return (*outputs, *rk.flatten_state(state))

    assert torch.autograd.gradcheck(bidirectional, (x,))
    assert torch.autograd.gradcheck(static, (x,))


def test_rnn_layer_runs_dynamic_rnn_and_trains() -> None:
    torch.manual_seed(0)
    layer = rk.RNN(rk.MultiRNNCell([rk.LSTMCell(4, use_peepholes=True), rk.GRUCell(3)]), time_major=True)
    x = torch.randn(5, 2, 3)
    out, state = layer(x, sequence_length=[5, 3])
    expected, _ = rk.dynamic_rnn(layer.cell, x, sequence_length=[5, 3], time_major=True)
    assert torch.equal(out, expected)
    assert sorted(rk.tf_variables(layer)) == sorted(rk.tf_variables(layer.cell))
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    target = torch.randn(5, 2, 3)
    losses = []
    for _ in range(30):
        out, _ = layer(x)
        loss = ((out - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_bidirectional_layer_runs_the_runner_and_names_both_directions() -> None:
    layer = rk.BidirectionalRNN(rk.LSTMCell(3, num_proj=2), rk.GRUCell(4), time_major=True)
    x = torch.randn(5, 2, 3)
    (out_fw, out_bw), (st_fw, st_bw) = layer(x, sequence_length=[5, 3])
    (ref_fw, ref_bw), (ref_st_fw, ref_st_bw) = rk.bidirectional_dynamic_rnn(
        layer.cell_fw, layer.cell_bw, x, sequence_length=[5, 3], time_major=True
    )
    assert torch.equal(out_fw, ref_fw) and torch.equal(out_bw, ref_bw) and torch.equal(st_bw, ref_st_bw)
    assert list(out_fw.shape) == [5, 2, 2] and list(out_bw.shape) == [5, 2, 4]
    names = list(rk.tf_variables(layer, scope="encoder/bidirectional_rnn"))
    assert names[0] == "encoder/bidirectional_rnn/fw/lstm_cell/kernel"
    assert names[-1] == "encoder/bidirectional_rnn/bw/gru_cell/candidate/bias"
    assert len(names) == 3 + 4
