"""Conversions to and from torch.nn.LSTM: both sides run on the same inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnkit as rk
from rnnkit.interop.torch_nn import from_torch_lstm, to_torch_lstm

F64 = torch.float64


def _built(cell, depth: int):
    cell(torch.zeros(1, depth, dtype=F64), cell.zero_state(1, F64))
    return cell


@pytest.mark.parametrize(
    "make",
    [
        lambda: rk.BasicLSTMCell(5, forget_bias=0.7),
        lambda: rk.LSTMCell(5, num_proj=3, forget_bias=1.0),
        lambda: rk.MultiRNNCell([rk.BasicLSTMCell(4), rk.LSTMCell(4, forget_bias=0.3)]),
    ],
)
def test_to_torch_lstm_computes_the_same(make) -> None:
    torch.manual_seed(0)
    cell = _built(make(), 3)
    lstm = to_torch_lstm(cell)
    x = torch.randn(2, 6, 3, dtype=F64)
    expected, state = rk.dynamic_rnn(cell, x, backend="reference")
    actual, (h_n, c_n) = lstm(x)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    last = state[-1] if isinstance(cell, rk.MultiRNNCell) else state
    torch.testing.assert_close(h_n[-1], last.h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_n[-1], last.c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layers, proj", [(1, 0), (2, 0), (2, 3)])
def test_from_torch_lstm_computes_the_same(layers: int, proj: int) -> None:
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 5, num_layers=layers, proj_size=proj, batch_first=True, dtype=F64)
    cell = from_torch_lstm(lstm)
    x = torch.randn(3, 7, 4, dtype=F64)
    expected, _ = lstm(x)
    actual, _ = rk.dynamic_rnn(cell, x, backend="reference")
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    assert isinstance(cell, rk.MultiRNNCell) == (layers > 1)


@pytest.mark.parametrize(
    "cell, message",
    [
        (rk.LSTMCell(3, use_peepholes=True, input_size=2), "peepholes"),
        (rk.LSTMCell(3, cell_clip=1.0, input_size=2), "cell_clip"),
        (rk.LSTMCell(3, activation="relu", input_size=2), "non-tanh"),
        (rk.GRUCell(3, input_size=2), "GRUCell has no torch.nn.LSTM equivalent"),
        (rk.BasicLSTMCell(3), "not built yet"),
        (rk.MultiRNNCell([rk.BasicLSTMCell(3, input_size=2), rk.BasicLSTMCell(4, input_size=3)]), "same num_units"),
    ],
)
def test_variants_without_an_equivalent_are_refused(cell, message) -> None:
    with pytest.raises(ValueError, match=message):
        to_torch_lstm(cell)


def test_from_torch_lstm_refusals() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        from_torch_lstm(nn.LSTM(2, 3, bidirectional=True))
    with pytest.raises(ValueError, match="dropout"):
        from_torch_lstm(nn.LSTM(2, 3, num_layers=2, dropout=0.5))
    with pytest.raises(TypeError, match="torch.nn.LSTM"):
        from_torch_lstm(nn.GRU(2, 3))


def test_gru_conversions_both_ways() -> None:
    from rnnkit.interop.torch_nn import from_torch_gru, to_torch_gru

    torch.manual_seed(2)
    gru = nn.GRU(4, 5, num_layers=2, batch_first=True, dtype=F64)
    cell = from_torch_gru(gru)
    x = torch.randn(3, 6, 4, dtype=F64)
    expected, h_n = gru(x)
    actual, state = rk.dynamic_rnn(cell, x)  # reset-after GRUs run on the reference loop
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[-1], h_n[-1], rtol=1e-12, atol=1e-12)
    back = to_torch_gru(cell)
    torch.testing.assert_close(back(x)[0], expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="reset-before"):
        to_torch_gru(rk.GRUCell(3, input_size=2))


def test_reset_after_gru_gradcheck_and_tf_names() -> None:
    cell = rk.GRUCell(3, reset_after=True, input_size=2, dtype=F64)
    assert list(rk.tf_variables(cell, "rnn"))[2] == "rnn/gru_cell/candidate/input_projection/kernel"
    x = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    for backend in ("reference", "fused"):
        assert torch.autograd.gradcheck(
            lambda x, b=backend: rk.dynamic_rnn(cell, x, sequence_length=[4, 1], backend=b)[0], (x,)
        )


@pytest.mark.parametrize("lengths", [None, [5, 0, 3, 7]])
@pytest.mark.parametrize("time_major", [False, True])
def test_reset_after_gru_fused_through_torch_gru_equals_the_reference(lengths, time_major) -> None:
    torch.manual_seed(4)
    cell = rk.MultiRNNCell([rk.GRUCell(5, reset_after=True), rk.GRUCell(4, reset_after=True)])
    x = torch.randn(5, 4, 3, dtype=F64) if time_major else torch.randn(4, 5, 3, dtype=F64)
    h0 = tuple(torch.randn(4, n, dtype=F64) for n in (5, 4))
    results = []
    for backend in ("reference", "fused"):
        xi = x.clone().requires_grad_()
        out, state = rk.dynamic_rnn(cell, xi, sequence_length=lengths, initial_state=h0, time_major=time_major,
                                    backend=backend)
        loss = out.square().sum() + sum(s.sum() for s in state)
        results.append([out, *state, *torch.autograd.grad(loss, [xi, *cell.parameters()])])
    for fused, reference in zip(results[1], results[0]):
        torch.testing.assert_close(fused, reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lengths", [None, [5, 0, 3, 7]])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_basic_rnn_through_torch_rnn_equals_the_reference(lengths, activation, monkeypatch) -> None:
    """The cuDNN path of ``BasicRNNCell`` (``torch.rnn_tanh``/``rnn_relu``), run here on the CPU."""
    from rnnkit.fused import plan_layers

    torch.manual_seed(5)
    cell = rk.MultiRNNCell([rk.BasicRNNCell(5, activation=activation), rk.BasicRNNCell(4, activation=activation)])
    x = torch.randn(4, 6, 3, dtype=F64)
    h0 = tuple(torch.randn(4, n, dtype=F64) for n in (5, 4))
    results = []
    for backend in ("reference", "fused"):
        if backend == "fused":
            monkeypatch.setattr(plan_layers, "_cudnn_on", lambda device: True)
            monkeypatch.setattr(plan_layers, "RNNSequence", None)  # must not be used
        xi = x.clone().requires_grad_()
        out, state = rk.dynamic_rnn(cell, xi, sequence_length=lengths, initial_state=h0, backend=backend)
        loss = out.square().sum() + sum(s.sum() for s in state)
        results.append([out, *state, *torch.autograd.grad(loss, [xi, *cell.parameters()])])
    for fused, reference in zip(results[1], results[0]):
        torch.testing.assert_close(fused, reference, rtol=1e-10, atol=1e-10)


def test_convert_command_between_rnnkit_and_torch_nn(tmp_path, capsys) -> None:
    from rnnkit.__main__ import main as cli
    from rnnkit.interop.convert import load_module, save_module

    torch.manual_seed(3)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    torch.save(lstm.state_dict(), tmp_path / "lstm.pt")  # a state dict: type and sizes from its shapes
    assert cli(["convert", str(tmp_path / "lstm.pt"), str(tmp_path / "cell.pt")]) == 0
    torch.load(tmp_path / "cell.pt", weights_only=True)  # what convert writes loads without unpickling objects
    cell = load_module(tmp_path / "cell.pt")
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(rk.dynamic_rnn(cell, x)[0], lstm(x)[0], rtol=1e-5, atol=1e-6)
    assert cli(["convert", str(tmp_path / "cell.pt"), str(tmp_path / "back.pt")]) == 0
    back = load_module(tmp_path / "back.pt")
    assert isinstance(back, nn.LSTM)
    torch.testing.assert_close(back(x)[0], lstm(x)[0], rtol=1e-5, atol=1e-6)
    assert cli(["convert", str(tmp_path / "back.pt"), str(tmp_path / "cell.safetensors")]) == 0
    torch.testing.assert_close(rk.dynamic_rnn(load_module(tmp_path / "cell.safetensors"), x)[0], lstm(x)[0])
    gru = nn.GRU(3, 4, batch_first=True)
    torch.save(gru.state_dict(), tmp_path / "gru.pt")
    assert cli(["convert", str(tmp_path / "gru.pt"), str(tmp_path / "gcell.pt")]) == 0
    assert load_module(tmp_path / "gcell.pt").reset_after
    save_module(rk.LSTMCell(3, use_peepholes=True, input_size=2), tmp_path / "peep.pt")
    capsys.readouterr()
    assert cli(["convert", str(tmp_path / "peep.pt"), str(tmp_path / "x.pt")]) == 2
    assert "peepholes" in capsys.readouterr().err
    torch.save(lstm, tmp_path / "whole.pt")  # a whole-module pickle: only with the explicit opt-in
    assert cli(["convert", str(tmp_path / "whole.pt"), str(tmp_path / "y.pt")]) == 2
    assert "--unsafe-pickle" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "whole.pt"), str(tmp_path / "y.pt"), "--unsafe-pickle"]) == 0
    torch.testing.assert_close(rk.dynamic_rnn(load_module(tmp_path / "y.pt"), x)[0], lstm(x)[0])


def test_cudnn_tf32_flag_is_held_in_forward_and_backward() -> None:
    from rnnkit.fused.torch_rnn import _CudnnTF32

    seen = []

    class Spy(torch.autograd.Function):  # records cuDNN's TF32 flag when each pass runs
        @staticmethod
        def forward(ctx, x):
            seen.append(("forward", torch.backends.cudnn.allow_tf32))
            return x * 3

        @staticmethod
        def backward(ctx, g):
            seen.append(("backward", torch.backends.cudnn.allow_tf32))
            return g * 3

    before = torch.backends.cudnn.allow_tf32
    x, w = torch.randn(4, requires_grad=True), torch.randn(4)
    (out,) = _CudnnTF32.apply(not before, lambda a, b: (Spy.apply(a) * b,), x, w)
    assert torch.backends.cudnn.allow_tf32 == before
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, 3 * w)
    assert seen == [("forward", not before), ("backward", not before)]
    assert torch.backends.cudnn.allow_tf32 == before


@pytest.mark.parametrize("make", [lambda: rk.BasicLSTMCell(5, forget_bias=0.4),
                                  lambda: rk.GRUCell(5, reset_after=True)])
@pytest.mark.parametrize("prebuilt", [False, True], ids=["lazy", "built"])
def test_weight_constants_made_under_inference_mode_serve_training_later(make, prebuilt: bool) -> None:
    """The torch path caches small constants (gate order, forget bias, zero biases), and a
    lazy cell builds its weights at the first call: under ``inference_mode`` neither may become
    an inference tensor, which a later backward could not save nor an optimizer update."""
    from rnnkit.fused import torch_rnn

    torch.manual_seed(6)
    cell = make()
    x = torch.randn(3, 4, 2, dtype=F64)
    if prebuilt:
        rk.dynamic_rnn(cell, x, dtype=F64)
    for cached in (torch_rnn._torch_gate_order, torch_rnn._forget_bias_vector, torch_rnn._zeros):
        cached.cache_clear()
    with torch.inference_mode():
        inferred, _ = rk.dynamic_rnn(cell, x, dtype=F64)
    xi = x.clone().requires_grad_()
    out, _ = rk.dynamic_rnn(cell, xi, dtype=F64)
    assert not any(p.is_inference() for p in cell.parameters())
    (grad,) = torch.autograd.grad(out.sum(), xi)
    torch.testing.assert_close(out.detach(), inferred)
    expected = torch.autograd.grad(rk.dynamic_rnn(cell, xi, dtype=F64, backend="reference")[0].sum(), xi)[0]
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)
