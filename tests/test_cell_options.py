"""The cells' keyword-only Keras options: ``gate_activation`` and ``use_bias``.

Checked against a hand-written float64 step, with TF's names unchanged for the defaults; the
fused CPU step loops (compiled and their torch twins) against the reference (outputs, final
states, every gradient); and the fused paths declining where they cannot run them (CUDA, half
precision, ``GRUCell(reset_after=True)``: ``auto`` runs the reference loop, ``fused`` says why)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import rnnkit as rk
from rnnkit.fused import gru as fused_gru
from rnnkit.fused import lstm as fused_lstm
from rnnkit.fused import select_plan
from rnnkit.fused.activation_kinds import gate_backward_into
from rnnkit.fused.cpu.native import kernels
from rnnkit.fused.plan import make_plan

from .test_native import STEPS_ULPS, assert_rounding_close

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
    fused, _ = rk.dynamic_rnn(cell, x, backend="fused")  # on the CPU every combination is fused
    torch.testing.assert_close(fused, out, rtol=1e-12, atol=1e-12)


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
    if not reset_after or (gate == "sigmoid" and use_bias):  # TF's GRU: the CPU step loops
        torch.testing.assert_close(rk.dynamic_rnn(cell, x, backend="fused")[0], out, rtol=1e-12, atol=1e-12)
    else:  # reset_after=True runs fused through torch.gru: sigmoid gates with a bias only
        with pytest.raises(ValueError, match="reset_after=True.*torch.gru, which computes sigmoid gates with a bias"):
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


# ---- the fused CPU step loops against the reference, forward and every gradient

OPTIONS = [("hard_sigmoid", True), ("hard_sigmoid", False), ("sigmoid", False)]  # the default is tested elsewhere


def _option_cells(name: str, gate: str, use_bias: bool):
    options = {"gate_activation": gate, "use_bias": use_bias}
    return {
        "basic_lstm": lambda: rk.BasicLSTMCell(7, forget_bias=0.5, **options),
        "lstm_peepholes_clip_projection": lambda: rk.LSTMCell(
            7, use_peepholes=True, cell_clip=0.8, num_proj=5, proj_clip=0.6, forget_bias=0.3, **options),
        "lstm_peepholes_elu": lambda: rk.LSTMCell(7, use_peepholes=True, activation="elu", **options),
        "tf_gru": lambda: rk.GRUCell(6, **options),
        "tf_gru_softsign": lambda: rk.GRUCell(6, activation="softsign", **options),
        "stack": lambda: rk.MultiRNNCell([rk.LSTMCell(6, use_peepholes=True, cell_clip=0.7, **options),
                                          rk.GRUCell(5, **options), rk.BasicLSTMCell(4)]),
    }[name]()


CELL_NAMES = ["basic_lstm", "lstm_peepholes_clip_projection", "lstm_peepholes_elu", "tf_gru", "tf_gru_softsign",
              "stack"]


def _use_loops(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled step loops (skipped where they do not build) or, with ``compiled`` False, the
    torch twins."""
    if compiled and kernels() is None:
        pytest.skip("no compiled kernels on this machine")
    if not compiled:
        monkeypatch.setattr(fused_lstm, "kernels", lambda: None)
        monkeypatch.setattr(fused_gru, "kernels", lambda: None)


def _run_with_grads(cell, x: torch.Tensor, lengths, init, backend: str) -> list[torch.Tensor]:
    """``[outputs, *final state, *gradients]`` of a fixed random projection of the outputs and
    final state, the gradients with respect to the inputs, every weight and the initial state."""
    xi = x.detach().clone().requires_grad_()
    state = rk.map_state(lambda s: s.detach().clone().requires_grad_(), init)
    out, final = rk.dynamic_rnn(cell, xi, sequence_length=lengths, initial_state=state, backend=backend)
    generator = torch.Generator().manual_seed(11)
    loss = (out * torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)).sum()
    for leaf in rk.flatten_state(final):
        loss = loss + (leaf * torch.randn(leaf.shape, generator=generator, dtype=torch.float64).to(leaf.dtype)).sum()
    wrt = [xi, *cell.parameters(), *rk.flatten_state(state)]
    return [t.detach() for t in [out, *rk.flatten_state(final), *torch.autograd.grad(loss, wrt)]]


def _case(name: str, gate: str, use_bias: bool, dtype: torch.dtype):
    """A cell with random weights (biases too), ragged inputs (a row of length 0) and a random
    initial state, in ``dtype``; and the same cell in float64."""
    batch, steps, depth = 4, 9, 3
    cell = _option_cells(name, gate, use_bias)
    cell(torch.zeros(1, depth), cell.zero_state(1, torch.float32))  # build
    _randomize(cell)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # weights of a usual size: the gates' inputs mostly inside (-3, 3)
        for p in cell.parameters():
            p.mul_(0.6)
    x = torch.randn(batch, steps, depth, generator=generator, dtype=torch.float64) * 1.5
    init = rk.map_state(lambda z: torch.randn(z.shape, generator=generator, dtype=torch.float64),
                        cell.zero_state(batch, torch.float64))
    exact_cell = cell.to(torch.float64)
    run_cell = _option_cells(name, gate, use_bias)
    run_cell(torch.zeros(1, depth, dtype=dtype), run_cell.zero_state(1, dtype))
    run_cell.load_state_dict({k: v.to(dtype) for k, v in exact_cell.state_dict().items()})
    inputs = (x.to(dtype), [9, 4, 0, 7], rk.map_state(lambda s: s.to(dtype), init))
    return run_cell, inputs, exact_cell, (x, [9, 4, 0, 7], init)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled_loops", "torch_twins"])
@pytest.mark.parametrize("gate, use_bias", OPTIONS)
@pytest.mark.parametrize("name", CELL_NAMES)
def test_fused_options_equal_the_reference_float64(name, gate, use_bias, compiled, monkeypatch) -> None:
    _use_loops(compiled, monkeypatch)
    cell, inputs, _, _ = _case(name, gate, use_bias, torch.float64)
    assert select_plan(cell, inputs[0], "fused") is not None
    expected = _run_with_grads(cell, *inputs, backend="reference")
    actual = _run_with_grads(cell, *inputs, backend="fused")
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12, msg=lambda m: f"result {i}: {m}")


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled_loops", "torch_twins"])
@pytest.mark.parametrize("gate, use_bias", OPTIONS)
@pytest.mark.parametrize("name", ["lstm_peepholes_clip_projection", "tf_gru", "stack"])
def test_fused_options_float32_within_rounding_of_float64(name, gate, use_bias, compiled, monkeypatch) -> None:
    """Float32, fused and reference each within the rounding bound of the float64 reference
    (``test_native``: ``STEPS_ULPS * sqrt(n * T) * eps32 * max|exact|`` for T recurrent steps
    of n-term products; here the longest sums are the weight gradients', over all 4 * 9 rows,
    and a stack of three layers chains three such loops)."""
    _use_loops(compiled, monkeypatch)
    cell, inputs, exact_cell, exact_inputs = _case(name, gate, use_bias, torch.float32)
    exact = _run_with_grads(exact_cell, *exact_inputs, backend="reference")
    layers = 3 if name == "stack" else 1
    ulps = STEPS_ULPS * layers * math.sqrt(4 * 9 * 9)
    for backend in ("fused", "reference"):
        result = _run_with_grads(cell, *inputs, backend=backend)
        for i, (a, e) in enumerate(zip(result, exact)):
            assert_rounding_close(a, e, ulps, f"{backend} result {i}")


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled_loops", "torch_twins"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_hard_sigmoid_gates_at_the_clip_boundaries_match_autograd(kind, compiled, monkeypatch) -> None:
    """Gate inputs exactly at -3 and 3 (gradient 0, as torch's autograd of F.hardsigmoid, which
    is 1/6 only for -3 < x < 3), just inside -3, and inside: zero kernels, so the gates'
    inputs are the biases exactly."""
    _use_loops(compiled, monkeypatch)
    values = torch.tensor([-3.0, 3.0, math.nextafter(-3.0, 0.0), 0.5, -2.5, 2.75], dtype=torch.float64)
    if kind == "lstm":
        cell = rk.BasicLSTMCell(6, forget_bias=0.0, gate_activation="hard_sigmoid", input_size=2, dtype=torch.float64)
        gate_bias = {"i": values, "j": values.flip(0), "f": values.roll(1), "o": values.roll(2)}
        bias = torch.cat([gate_bias[g] for g in "ijfo"])
        parameters = {"kernel": torch.zeros_like(cell.kernel), "bias": bias}
    else:
        cell = rk.GRUCell(6, gate_activation="hard_sigmoid", input_size=2, dtype=torch.float64)
        parameters = {"gates.kernel": torch.zeros_like(cell.gates["kernel"]),
                      "gates.bias": torch.cat([values, values.roll(3)]),
                      "candidate.kernel": 0.3 * torch.ones_like(cell.candidate["kernel"])}
    cell.load_state_dict(parameters, strict=False)
    x = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    init = rk.map_state(lambda z: torch.full_like(z, 0.5), cell.zero_state(3, torch.float64))
    expected = _run_with_grads(cell, x, None, init, backend="reference")
    actual = _run_with_grads(cell, x, None, init, backend="fused")
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14, msg=lambda m: f"result {i}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_sigmoid_gate_backward_is_torchs_from_the_output(dtype) -> None:
    x = torch.tensor([-4.0, -3.0, math.nextafter(-3.0, 0.0), -1.0, 0.0, 2.5, 3.0, 7.0], dtype=dtype).requires_grad_()
    y = F.hardsigmoid(x)
    grad = torch.linspace(-2, 3, x.numel(), dtype=dtype)
    (expected,) = torch.autograd.grad(y, x, grad)
    actual = torch.empty_like(grad)
    gate_backward_into("hard_sigmoid", grad, y.detach(), actual)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("options", [{"gate_activation": "hard_sigmoid"}, {"use_bias": False}])
@pytest.mark.parametrize("cls", [rk.BasicLSTMCell, rk.LSTMCell, rk.GRUCell])
def test_options_decline_off_the_cpu_and_in_half_precision(cls, options) -> None:
    """CUDA (decided without a GPU: a meta tensor stands for the inputs; the plan asks only the
    device) and half precision keep declining these cells; CPU float32/float64 take them."""
    cell = cls(U, input_size=D, **options)
    option = "gate_activation 'hardsigmoid'" if "gate_activation" in options else "use_bias=False"
    for device, dtype in [("cuda", torch.float32), ("cuda", torch.float64), ("meta", torch.float32),
                          ("cpu", torch.bfloat16), ("cpu", torch.float16)]:
        plan = make_plan(cell)
        assert not isinstance(plan, str)
        reason = plan.options_reason(torch.device(device), dtype)
        assert reason is not None and option in reason and "sigmoid gates with a bias" in reason, (device, dtype)
    with pytest.raises(ValueError, match=f"{option}; the fused path computes sigmoid gates with a bias on meta"):
        select_plan(cell, torch.empty(B, T, D, device="meta"), "fused")
    assert select_plan(cell, torch.empty(B, T, D, device="meta"), "auto") is None
    stack = rk.MultiRNNCell([rk.BasicLSTMCell(U), cls(U, **options)])
    with pytest.raises(ValueError, match=f"layer 1: .*{option}"):
        select_plan(stack, torch.empty(B, T, D, device="meta"), "fused")
    for dtype in (torch.float32, torch.float64):
        assert select_plan(cell, torch.empty(B, T, D, dtype=dtype), "fused") is not None


def test_other_gate_activations_keep_declining_and_modules_are_recognised() -> None:
    cell = rk.GRUCell(U, gate_activation="tanh", input_size=D)
    with pytest.raises(ValueError, match="gate_activation 'tanh'; the fused path implements sigmoid and hard_sigmoid"):
        rk.dynamic_rnn(cell, torch.zeros(B, T, D), backend="fused")
    module_cell = _randomize(rk.LSTMCell(U, gate_activation=torch.nn.Hardsigmoid(), input_size=D,
                                         dtype=torch.float64))
    x = _inputs()
    torch.testing.assert_close(rk.dynamic_rnn(module_cell, x, backend="fused")[0],
                               rk.dynamic_rnn(module_cell, x, backend="reference")[0], rtol=1e-12, atol=1e-12)
