"""``torch.compile`` of rnnkit's layers: every layer kind compiles (``aot_eager`` for all of
them, ``inductor`` for a few, as it is slow to compile), on both backends, and its outputs,
final states and gradients equal the eager reference loop's.

The fused layers are a graph break (``FusedPlan.run`` is ``torch.compiler.disable``\\ d): they
run eagerly, forward and backward, and the code around them is compiled. ``reference`` is
traced as it is.

Sizes are tiny (B=3, T=4, D=3, at most 4 units; values and gradients of order 1), mostly in
float64; float32 where oneDNN's LSTM runs (it has no float64), which is where tracing failed.
The two sides differ by rounding only: each side's error is at most a few ulp of the values'
scale per operation, over sums of at most B * T * (D + 2 * units) = 132 terms (errors growing
like the square root of that: about 12), so well under 100 ulp; ``ULPS`` allows 1000 ulp in
float64 and 256 in float32 (1e-13 and 3e-5), which no wrong result meets.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest
import torch

import rnnkit as rk
from rnnkit.fused import plan_layers
from rnnkit.fused.torch_rnn import torch_lstm_layer

F32, F64 = torch.float32, torch.float64
ULPS = {F32: 256, F64: 1000}
B, T, D = 3, 4, 3
LENGTHS = [4, 1, 3]

LAYERS: dict[str, Callable[[], Any]] = {
    "basic_lstm": lambda: rk.BasicLSTMCell(4),
    "lstm_peepholes_clip_projection": lambda: rk.LSTMCell(
        4, use_peepholes=True, cell_clip=0.5, num_proj=3, proj_clip=0.4, forget_bias=0.7
    ),
    "lstm_projection": lambda: rk.LSTMCell(4, num_proj=2),
    "gru": lambda: rk.GRUCell(4),
    "gru_reset_after": lambda: rk.GRUCell(4, reset_after=True),
    "basic_rnn": lambda: rk.BasicRNNCell(4),
    "basic_rnn_selu": lambda: rk.BasicRNNCell(4, activation="selu"),
    "stack": lambda: rk.MultiRNNCell(
        [rk.LSTMCell(4, use_peepholes=True, num_proj=3), rk.GRUCell(3), rk.ResidualWrapper(rk.BasicRNNCell(3))]
    ),
    "stack_concat_state": lambda: rk.MultiRNNCell(
        [rk.BasicLSTMCell(3, state_is_tuple=False), rk.GRUCell(2, reset_after=True)], state_is_tuple=False
    ),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each case compiles from scratch (no recompilation limits reached across cases)."""
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo's notes on graph breaks
        yield
    torch._dynamo.reset()


def _tol(dtype: torch.dtype) -> dict[str, float]:
    ulps = ULPS[dtype] * torch.finfo(dtype).eps
    return dict(rtol=ulps, atol=ulps)


def _seeded(make: Callable[[], Any], dtype: torch.dtype = F64) -> Any:
    """A cell with seeded weights, built in ``dtype`` (by one eager call)."""
    torch.manual_seed(0)
    cell = make()
    with torch.no_grad():
        rk.dynamic_rnn(cell, _inputs(dtype), backend="reference")
    return cell


def _inputs(dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(1)).to(dtype)


def _results(layer: Any, x: torch.Tensor, lengths: Any, input_grad: bool, weights: list[torch.Tensor]) -> list:
    """Outputs, final state leaves and the gradients of a loss on both (weights, and the
    inputs when ``input_grad``) of one call of ``layer`` (a module or its compiled form)."""
    xi = x.clone().requires_grad_(input_grad)
    outputs, state = layer(xi, sequence_length=lengths)
    leaves = rk.flatten_state(outputs) + rk.flatten_state(state)
    loss = sum((leaf * torch.linspace(-1, 2, leaf.numel(), dtype=leaf.dtype).view_as(leaf)).sum() for leaf in leaves)
    wrt = [xi, *weights] if input_grad else weights
    return [*leaves, *torch.autograd.grad(loss, wrt)]


def _check_compiled(
    module: Any, weights: list[torch.Tensor], compiler: str, lengths: Any, input_grad: bool, backend: str = "auto",
    dtype: torch.dtype = F64,
) -> None:
    """``module`` compiled with ``compiler`` and run on ``backend`` gives the eager reference
    loop's results."""
    x = _inputs(dtype)
    module.backend = "reference"
    expected = _results(module, x, lengths, input_grad, weights)
    torch._dynamo.reset()
    module.backend = backend
    got = _results(torch.compile(module, backend=compiler), x, lengths, input_grad, weights)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **_tol(dtype), msg=lambda m: f"result {i}: {m}")


@pytest.mark.parametrize("lengths", [None, torch.tensor([0, 4, 2])], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_aot_eager_fused_equals_eager_reference(name: str, lengths: Any) -> None:
    cell = _seeded(LAYERS[name])
    assert rk.fused.select_plan(cell, _inputs(), "auto") is not None  # "auto" runs the fused layers
    _check_compiled(rk.RNN(cell), list(cell.parameters()), "aot_eager", lengths, input_grad=name != "basic_lstm")


@pytest.mark.parametrize("name", ["basic_lstm", "stack_concat_state"])
def test_aot_eager_float32_onednn_lstm(name: str, monkeypatch) -> None:
    """oneDNN's LSTM (float32, every row runs every step; taken where the compiled loops are
    absent), with weight gradients only: the case where AOTAutograd used to fail on the traced
    ``mkldnn_rnn_layer``."""
    monkeypatch.setattr(plan_layers, "kernels", lambda: None)
    calls = []
    monkeypatch.setattr(plan_layers, "torch_lstm_layer", lambda *args: calls.append(1) or torch_lstm_layer(*args))
    cell = _seeded(LAYERS[name], F32)
    _check_compiled(rk.RNN(cell), list(cell.parameters()), "aot_eager", None, input_grad=False, dtype=F32)
    assert calls, "oneDNN's LSTM did not run"


@pytest.mark.parametrize("name, lengths", [("basic_lstm", LENGTHS), ("stack", None)], ids=["basic_lstm", "stack"])
def test_aot_eager_reference_backend(name: str, lengths: Any) -> None:
    """``backend="reference"`` is traced whole (its Python loop unrolled)."""
    cell = _seeded(LAYERS[name])
    _check_compiled(rk.RNN(cell), list(cell.parameters()), "aot_eager", lengths, True, backend="reference")


def test_aot_eager_bidirectional() -> None:
    fw, bw = _seeded(LAYERS["lstm_peepholes_clip_projection"]), _seeded(LAYERS["gru"])
    module = rk.BidirectionalRNN(fw, bw)
    _check_compiled(module, [*fw.parameters(), *bw.parameters()], "aot_eager", LENGTHS, input_grad=True)


def test_aot_eager_static_rnn_and_an_unbuilt_layer() -> None:
    """``static_rnn`` in a compiled function, on a layer whose weights the compiled call makes."""
    torch.manual_seed(0)
    cell = rk.GRUCell(4)
    steps = list(_inputs(F64).unbind(1))
    compiled = torch.compile(lambda xs: rk.static_rnn(cell, xs, sequence_length=LENGTHS), backend="aot_eager")
    outputs, state = compiled(steps)
    expected, expected_state = rk.static_rnn(cell, steps, sequence_length=LENGTHS, backend="reference")
    torch.testing.assert_close(torch.stack(outputs), torch.stack(expected), **_tol(F64))
    torch.testing.assert_close(state, expected_state, **_tol(F64))
    assert torch.equal(outputs[3][1], torch.zeros(4, dtype=F64))  # past row 1's length


@pytest.mark.parametrize(
    "name, lengths, dtype", [("basic_lstm", None, F32), ("stack", LENGTHS, F64)],
    ids=["basic_lstm_float32_weights_only", "stack_lengths"],
)
def test_inductor_equals_eager_reference(name: str, lengths: Any, dtype: torch.dtype) -> None:
    """Inductor (C++ on the CPU): the plain float32 LSTM that used to fail on
    ``aten.mkldnn_rnn_layer``, and a stack of three layer kinds with lengths."""
    cell = _seeded(LAYERS[name], dtype)
    weights = list(cell.parameters())
    _check_compiled(rk.RNN(cell), weights, "inductor", lengths, input_grad=lengths is not None, dtype=dtype)
