"""Edges of the runners on both backends: what the padding past ``sequence_length`` holds
(NaN, inf) never reaches the outputs, states or gradients; an empty batch (or one where every
length is 0) still gives outputs connected to the graph, with zero gradients."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import rnnkit as rk

F64 = torch.float64
BACKENDS = ["reference", "fused"]

CELLS: dict[str, Callable[[], Any]] = {
    "basic_lstm": lambda: rk.BasicLSTMCell(3),
    "lstm_peepholes_projection": lambda: rk.LSTMCell(3, use_peepholes=True, cell_clip=0.5, num_proj=2),
    "gru": lambda: rk.GRUCell(3),
    "gru_reset_after": lambda: rk.GRUCell(3, reset_after=True),
    "basic_rnn": lambda: rk.BasicRNNCell(3, activation="elu"),
    "stack": lambda: rk.MultiRNNCell([rk.GRUCell(3), rk.ResidualWrapper(rk.BasicLSTMCell(3))]),
}


def _cell(name: str) -> Any:
    torch.manual_seed(0)
    return CELLS[name]()


def _loss(outputs: Any, state: Any) -> torch.Tensor:
    """A loss on every output and state leaf (weights that differ per element)."""
    leaves = rk.flatten_state(outputs) + rk.flatten_state(state)
    return sum((leaf * torch.linspace(-1, 2, leaf.numel(), dtype=leaf.dtype).view_as(leaf)).sum() for leaf in leaves)


def _padded(x: torch.Tensor, lengths: list[int], fill: float) -> torch.Tensor:
    """``x`` ``[B, T, D]`` with ``fill`` at every step past each row's length."""
    x = x.clone()
    for row, length in enumerate(lengths):
        x[row, length:] = fill
    return x


def _run(cell: Any, x: torch.Tensor, lengths: Any, backend: str, bidirectional: bool) -> list[torch.Tensor]:
    """Outputs, final state leaves and the gradients of inputs and weights."""
    x = x.clone().requires_grad_()
    if bidirectional:
        outputs, state = rk.bidirectional_dynamic_rnn(cell, cell, x, sequence_length=lengths, backend=backend)
    else:
        outputs, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, backend=backend)
    grads = torch.autograd.grad(_loss(outputs, state), [x, *cell.parameters()])
    return [*rk.flatten_state(outputs), *rk.flatten_state(state), *grads]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("fill", [float("nan"), -float("inf")], ids=["nan", "-inf"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CELLS))
def test_padding_never_reaches_the_results(name: str, backend: str, fill: float, bidirectional: bool) -> None:
    """Non-finite padding gives exactly the results of zero padding, all finite (the input
    gradient is zero there)."""
    cell, lengths = _cell(name), [4, 0, 2, 1]
    x = torch.randn(4, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    with_zeros = _run(cell, _padded(x, lengths, 0.0), lengths, backend, bidirectional)
    with_fill = _run(cell, _padded(x, lengths, fill), lengths, backend, bidirectional)
    for i, (a, b) in enumerate(zip(with_fill, with_zeros)):
        assert torch.isfinite(a).all(), f"result {i} is not finite"
        assert torch.equal(a, b), f"result {i} differs from the run with zero padding"
    d_inputs = with_fill[len(with_fill) - len(list(cell.parameters())) - 1]
    assert torch.equal(_padded(d_inputs, lengths, 0.0), d_inputs)  # no gradient into the padding


@pytest.mark.parametrize("backend", BACKENDS)
def test_static_rnn_padding_never_reaches_the_gradients(backend: str) -> None:
    cell, lengths = _cell("lstm_peepholes_projection"), [3, 1]
    x = torch.randn(2, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    results = []
    for fill in (0.0, float("nan")):
        steps = [s.requires_grad_() for s in _padded(x, lengths, fill).unbind(1)]
        outputs, state = rk.static_rnn(cell, steps, sequence_length=lengths, backend=backend)
        grads = torch.autograd.grad(_loss(outputs, state), [*steps, *cell.parameters()])
        results.append([*outputs, *state, *grads])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("with_initial_state", [False, True], ids=["zero_state", "initial_state"])
@pytest.mark.parametrize("lengths", [None, []], ids=["no_lengths", "lengths"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["basic_lstm", "lstm_peepholes_projection", "gru", "stack"])
def test_empty_batch_backpropagates_zero_gradients(name: str, backend: str, lengths: Any,
                                                   with_initial_state: bool) -> None:
    """``out.sum().backward()`` on a batch of 0 rows works (inputs without gradients: the
    outputs hang on the weights) and gives zero gradients, on both backends."""
    cell = _cell(name)
    x = torch.randn(0, 3, 2, dtype=F64)
    state = None
    if with_initial_state:
        state = rk.map_state(lambda s: s.requires_grad_(), cell.zero_state(0, F64))
    outputs, final = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state, backend=backend)
    assert outputs.shape == (0, 3, cell.output_size) and outputs.requires_grad
    assert all(s.requires_grad for s in rk.flatten_state(final))
    (outputs.sum() + sum(s.sum() for s in rk.flatten_state(final))).backward()
    weights = list(cell.parameters())
    assert weights and all(w.grad is not None and not w.grad.any() for w in weights)
    if with_initial_state:
        assert all(s.grad is not None and s.grad.shape[0] == 0 for s in rk.flatten_state(state))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_length_zero_gives_connected_zero_outputs(backend: str) -> None:
    """No row takes a step: the outputs are zeros that still backpropagate (zero gradients)
    and the final state is the initial state, exactly."""
    cell = _cell("gru")
    with torch.no_grad():
        rk.dynamic_rnn(cell, torch.randn(1, 1, 2, dtype=F64))  # build the weights
    x = torch.full((2, 3, 2), float("nan"), dtype=F64)  # padding only
    initial = torch.randn(2, 3, dtype=F64)
    outputs, final = rk.dynamic_rnn(cell, x, sequence_length=[0, 0], initial_state=initial, backend=backend)
    assert torch.equal(outputs, torch.zeros(2, 3, 3, dtype=F64)) and torch.equal(final, initial)
    outputs.sum().backward()
    assert all(w.grad is not None and not w.grad.any() for w in cell.parameters())
