"""The cells' keyword-only Keras options: ``gate_activation`` and ``use_bias``.

Checked against a hand-written float64 step, with TF's names unchanged for the defaults, and the
fused paths declining (``auto`` runs the reference loop, ``fused`` says why)."""

from __future__ import annotations

import pytest
import torch

import rnnkit as rk

D, U, B, T = 3, 5, 4, 6


def _hard_sigmoid(x):
    return torch.clamp(x / 6 + 0.5, 0, 1)


def _lstm_reference(cell, x, gate):
    """TF's LSTM step written out, with ``gate`` for i, f, o and peepholes if the cell has them."""
    c, h, outs = torch.zeros(B, U, dtype=x.dtype), torch.zeros(B, U, dtype=x.dtype), []
    for t in range(T):
        z = torch.cat([x[:, t], h], 1) @ cell.kernel
        if cell.use_bias:
            z = z + cell.bias
        i, j, f, o = z.split(U, 1)
        peep = cell.use_peepholes
        f_in = f + cell.forget_bias + (cell.w_f_diag * c if peep else 0)
        i_in = i + (cell.w_i_diag * c if peep else 0)
        c = gate(f_in) * c + gate(i_in) * torch.tanh(j)
        h = gate(o + (cell.w_o_diag * c if peep else 0)) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)


def _gru_reference(cell, x, gate):
    h, outs = torch.zeros(B, U, dtype=x.dtype), []
    for t in range(T):
        xt = x[:, t]
        g = torch.cat([xt, h], 1) @ cell.gates["kernel"] + (cell.gates["bias"] if cell.use_bias else 0)
        r, u = gate(g).split(U, 1)
        if cell.reset_after:
            xp, hp = cell.candidate["input_projection"], cell.candidate["hidden_projection"]
            hidden = h @ hp["kernel"] + (hp["bias"] if cell.use_bias else 0)
            pre = xt @ xp["kernel"] + (xp["bias"] if cell.use_bias else 0) + r * hidden
        else:
            pre = torch.cat([xt, r * h], 1) @ cell.candidate["kernel"] + (cell.candidate["bias"] if cell.use_bias
                                                                          else 0)
        h = u * h + (1 - u) * torch.tanh(pre)
        outs.append(h)
    return torch.stack(outs, 1)


def _randomize(cell):
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return cell


def _inputs():
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2


@pytest.mark.parametrize("cls", [rk.BasicLSTMCell, rk.LSTMCell])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_lstm_gate_activation_and_use_bias(cls, use_bias, gate) -> None:
    cell = _randomize(cls(U, gate_activation=gate, use_bias=use_bias, input_size=D, dtype=torch.float64))
    x = _inputs()
    fn = torch.sigmoid if gate == "sigmoid" else _hard_sigmoid
    out, _ = rk.dynamic_rnn(cell, x, backend="reference")
    torch.testing.assert_close(out, _lstm_reference(cell, x, fn), rtol=1e-12, atol=1e-12)
    fused_ok = gate == "sigmoid" and use_bias
    if fused_ok:
        fused, _ = rk.dynamic_rnn(cell, x, backend="fused")
        torch.testing.assert_close(fused, out)
    else:
        with pytest.raises(ValueError, match="gate_activation 'hardsigmoid'" if gate != "sigmoid" else "use_bias=False"):
            rk.dynamic_rnn(cell, x, backend="fused")
        auto, _ = rk.dynamic_rnn(cell, x)  # auto takes the reference loop
        torch.testing.assert_close(auto, out, rtol=0, atol=0)


def test_lstm_peepholes_with_hard_sigmoid() -> None:
    cell = _randomize(rk.LSTMCell(U, use_peepholes=True, gate_activation="hard_sigmoid", input_size=D,
                                  dtype=torch.float64))
    x = _inputs()
    out, _ = rk.dynamic_rnn(cell, x)
    torch.testing.assert_close(out, _lstm_reference(cell, x, _hard_sigmoid), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_gru_gate_activation_and_use_bias(reset_after, use_bias, gate) -> None:
    cell = _randomize(rk.GRUCell(U, reset_after=reset_after, gate_activation=gate, use_bias=use_bias,
                                 input_size=D, dtype=torch.float64))
    x = _inputs()
    fn = torch.sigmoid if gate == "sigmoid" else _hard_sigmoid
    out, _ = rk.dynamic_rnn(cell, x, backend="reference")
    torch.testing.assert_close(out, _gru_reference(cell, x, fn), rtol=1e-12, atol=1e-12)
    if gate == "sigmoid" and use_bias:
        torch.testing.assert_close(rk.dynamic_rnn(cell, x, backend="fused")[0], out)
    else:
        with pytest.raises(ValueError, match="backend='fused' cannot run this"):
            rk.dynamic_rnn(cell, x, backend="fused")
        torch.testing.assert_close(rk.dynamic_rnn(cell, x)[0], out, rtol=0, atol=0)


def test_tf_names_unchanged_and_bias_free_names() -> None:
    assert sorted(rk.tf_variables(rk.BasicLSTMCell(U, input_size=D))) == [
        "rnn/basic_lstm_cell/bias", "rnn/basic_lstm_cell/kernel"]
    assert sorted(rk.tf_variables(rk.GRUCell(U, input_size=D))) == [
        "rnn/gru_cell/candidate/bias", "rnn/gru_cell/candidate/kernel", "rnn/gru_cell/gates/bias",
        "rnn/gru_cell/gates/kernel"]
    assert sorted(rk.tf_variables(rk.GRUCell(U, gate_activation="hard_sigmoid", input_size=D))) == sorted(
        rk.tf_variables(rk.GRUCell(U, input_size=D)))
    assert sorted(rk.tf_variables(rk.LSTMCell(U, use_bias=False, input_size=D))) == ["rnn/lstm_cell/kernel"]
    assert sorted(rk.tf_variables(rk.GRUCell(U, use_bias=False, input_size=D))) == [
        "rnn/gru_cell/candidate/kernel", "rnn/gru_cell/gates/kernel"]
    # a bias-free cell's state_dict loads into another and stays bias-free
    source = _randomize(rk.GRUCell(U, use_bias=False, reset_after=True, input_size=D))
    target = rk.GRUCell(U, use_bias=False, reset_after=True)
    target.load_state_dict(source.state_dict())
    assert set(target.state_dict()) == set(source.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        rk.GRUCell(U, reset_after=True).load_state_dict(source.state_dict())


def test_defaults_unchanged_and_keyword_only() -> None:
    cell = rk.LSTMCell(U)
    assert cell.gate_activation is torch.sigmoid and cell.use_bias
    assert rk.GRUCell(U, gate_activation=None).gate_activation is torch.sigmoid
    with pytest.raises(ValueError, match="gate_activation: unknown activation 'hard'"):
        rk.GRUCell(U, gate_activation="hard")
    with pytest.raises(TypeError):
        rk.BasicLSTMCell(U, 1.0, True, None, None, None, None, "hard_sigmoid")  # type: ignore[misc]


@pytest.mark.parametrize("options", [{"gate_activation": "hard_sigmoid"}, {"use_bias": False}])
@pytest.mark.parametrize("cls", [rk.BasicLSTMCell, rk.GRUCell])
def test_converters_refuse_what_their_formats_cannot_hold_and_module_files_keep_it(tmp_path, cls, options) -> None:
    from rnnkit.interop.convert import load_module, save_module
    from rnnkit.interop.onnx_export import export_onnx
    from rnnkit.interop.torch_nn import to_torch_gru, to_torch_lstm

    gru = {"reset_after": True} if cls is rk.GRUCell else {}  # torch's and ONNX's GRU form
    cell = cls(U, input_size=D, **gru, **options)
    convert = to_torch_gru if cls is rk.GRUCell else to_torch_lstm
    option = next(iter(options))
    with pytest.raises(ValueError, match=f"no torch.nn.(LSTM|GRU) equivalent.*{option}"):
        convert(cell)
    with pytest.raises(ValueError, match=f"sigmoid gates with a bias.*{option}"):
        export_onnx(cell, tmp_path / "cell.onnx")
    save_module(cell, tmp_path / "cell.pt")  # a module file keeps the options
    back = load_module(tmp_path / "cell.pt")
    assert back.gate_activation is cell.gate_activation and back.use_bias == cell.use_bias
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(rk.dynamic_rnn(back, x)[0], rk.dynamic_rnn(cell, x)[0], rtol=0, atol=0)
