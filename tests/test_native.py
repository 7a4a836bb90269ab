"""The compiled RNN step kernels (rnn_cpu.cpp) equal their torch twins, and the fused layers
equal the reference on both."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import rnnkit as rk
from rnnkit.fused import basic_rnn as fused_basic_rnn
from rnnkit.fused import gru as fused_gru
from rnnkit.fused import lstm as fused_lstm
from rnnkit.fused.activation_kinds import ACTIVATION_CODES, GATE_CODES
from rnnkit.fused.cpu.native import kernels
from rnnkit.fused.gru import gates_forward_torch, output_backward_torch, output_forward_torch, reset_backward_torch
from rnnkit.fused.lstm import backward_pointwise_torch, forward_pointwise_torch

EMPTY = torch.empty(0)
EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps

# Float32 results are checked against the same computation in float64 (the torch twins on the
# float32 inputs cast up), each side on its own, within a bound on its rounding error, never
# against each other with a tolerance one run happened to meet. Every rounding of a value of
# size s errs by at most eps/2 * s, and the errors of a chain of k roundings add up: a
# pointwise kernel (a chain of about a dozen float ops and functions accurate to an ulp, on
# values no larger than the largest of its results) errs by at most POINTWISE_ULPS * eps32 *
# max|result|. A GEMM sums n products: its error grows like sqrt(n) (rounding errors are
# independent, of random sign; n in the worst case, never approached); T recurrent steps add
# T such errors: STEPS_ULPS * sqrt(n * T) * eps32 * max|result|. Both constants leave a factor
# of about 10 over the largest error measured here (1.5 and 0.74) whatever the summation order,
# which changes with threads and load but not the size of the rounding errors.
POINTWISE_ULPS = 16
STEPS_ULPS = 8


def assert_rounding_close(actual: torch.Tensor, exact: torch.Tensor, ulps: float, name: str) -> None:
    """``|actual - exact| <= ulps * eps32 * max|exact|`` everywhere (``exact`` in float64)."""
    assert exact.dtype == torch.float64 and actual.shape == exact.shape, name
    scale = float(exact.abs().max()) if exact.numel() else 0.0
    error = float((actual.double() - exact).abs().max()) if exact.numel() else 0.0
    assert error <= ulps * EPS32 * scale, (
        f"{name}: error {error:.3g} is {error / (EPS32 * scale):.3g} eps32 * max|exact| ({scale:.3g}); "
        f"the bound is {ulps:.3g}"
    )


def _step_inputs(dtype: torch.dtype, n: int, units: int, peepholes: bool, clip: bool):
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(n, 6 * units, dtype=dtype, generator=g) * 3  # rows with a stride
    z = wide[:, : 4 * units]
    c_prev = torch.randn(n, 2 * units, dtype=dtype, generator=g)[:, :units]
    w_if = torch.randn(2, units, dtype=dtype, generator=g) if peepholes else EMPTY
    w_o = torch.randn(units, dtype=dtype, generator=g) if peepholes else EMPTY
    kept = torch.empty(n, units, dtype=torch.bool) if clip else EMPTY
    return z, c_prev, w_if, w_o, (0.8 if clip else -1.0), kept


ACTIVATIONS = list(ACTIVATION_CODES)


def _with_code(kernel, activation: str | None, gate: str | None = None):
    """A compiled kernel with the activation's code and then the gate kind's code (those not None)
    as its last arguments (the twins' keywords)."""
    codes = [ACTIVATION_CODES[activation]] if activation is not None else []
    codes += [GATE_CODES[gate]] if gate is not None else []
    return lambda *args: kernel(*args, *codes)


def _float64(values: tuple) -> tuple:
    """The floating tensors of ``values`` cast to float64 (the rest as they are)."""
    return tuple(v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in values)


def _lstm_pointwise(forward, backward, inputs: tuple, clip: bool) -> list[torch.Tensor]:
    """The LSTM step's pointwise forward and backward on ``inputs`` (of :func:`_step_inputs`),
    in their dtype: ``[z, j, c, tc, m, dz, d_c_prev]`` (and ``kept`` with clipping)."""
    z, c_prev, w_if, w_o, limit, kept = inputs
    n, units, dtype = c_prev.shape[0], c_prev.shape[1], z.dtype
    z, kept = z.clone(), kept.clone()
    j, c, tc, m = (torch.empty(n, units, dtype=dtype) for _ in range(4))
    forward(z, c_prev, w_if, w_o, limit, j, c, tc, m, kept)
    g = torch.Generator().manual_seed(1)
    dm, d_c = (torch.randn(n, units, generator=g).to(dtype) for _ in range(2))
    dz = torch.empty(n, 4 * units, dtype=dtype)
    backward(z, j, c_prev, tc, dm, d_c, w_if, w_o, kept, dz)
    return [z, j, c, tc, m, dz, d_c] + ([kept] if clip else [])


LSTM_NAMES = ["z", "j", "c", "tc", "m", "dz", "d_c_prev", "kept"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peepholes, clip, activation, gate", [
    *((p, c, "tanh", "sigmoid") for p in (False, True) for c in (False, True)),
    *((True, True, a, "sigmoid") for a in ACTIVATIONS[1:]),
    *((p, c, a, "hard_sigmoid") for p, c in ((False, False), (True, True)) for a in ("tanh", "elu"))])
def test_forward_and_backward_kernels_match_torch(compiled, dtype, peepholes, clip, activation, gate) -> None:
    """Float64: the compiled kernels equal the twins to a few ulp. Float32: each within its
    rounding bound of the twins run in float64 on the same inputs."""
    inputs = _step_inputs(dtype, 5, 19, peepholes, clip)  # 19 units: not a multiple of the vector width
    twins = (partial(forward_pointwise_torch, activation=activation, gate=gate),
             partial(backward_pointwise_torch, activation=activation, gate=gate))
    ours = (_with_code(compiled.lstm_forward_pointwise, activation, gate),
            _with_code(compiled.lstm_backward_pointwise, activation, gate))
    results = [_lstm_pointwise(*loops, inputs, clip) for loops in (twins, ours)]
    if dtype == torch.float64:
        for name, a, b in zip(LSTM_NAMES, *results):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14, msg=lambda msg: f"{name}: {msg}")
        return
    exact = _lstm_pointwise(*twins, _float64(inputs), clip)
    for result in results:
        for name, a, e in zip(LSTM_NAMES, result, exact):
            if name == "kept":  # which cell values were clipped: none of these is within rounding of the limit
                assert torch.equal(a, e), name
            else:
                assert_rounding_close(a, e, POINTWISE_ULPS, name)


@pytest.mark.parametrize("compiled_kernels", [False, True], ids=["torch_steps", "compiled_steps"])
def test_fused_lstm_equals_the_reference_with_either_kernels(compiled_kernels, monkeypatch) -> None:
    if compiled_kernels and kernels() is None:
        pytest.skip("no compiled kernels on this machine")
    if not compiled_kernels:
        monkeypatch.setattr(fused_lstm, "kernels", lambda: None)
    torch.manual_seed(2)
    cell = rk.LSTMCell(6, use_peepholes=True, cell_clip=0.5, num_proj=4, proj_clip=0.7, input_size=3, dtype=torch.float64)
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    results = []
    for backend in ("reference", "fused"):
        xi = x.clone().requires_grad_()
        out, state = rk.dynamic_rnn(cell, xi, sequence_length=[7, 3, 0, 5], backend=backend)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + state.c.sum()
        results.append([out, *state, *torch.autograd.grad(loss, [xi, *cell.parameters()])])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_tanh_keeps_relative_precision(compiled, dtype) -> None:
    """tanh of tiny to saturated values, to a few ulp relative to the value (no absolute
    floor: a tanh computed as ``1 - 2 / (exp(2x) + 1)`` would lose every digit of the tiny
    ones). Float32 against float64's tanh; float64 against torch's own (one ulp off or so),
    allowing the vectorised exp-based tanh 4 ulp (2.2 measured, deterministic)."""
    units = 64
    magnitudes = torch.logspace(-7, 1.3, units, dtype=dtype)  # tiny to saturated
    x = torch.cat([magnitudes, -magnitudes]).view(2, units)
    z = torch.zeros(2, 4 * units, dtype=dtype)
    z[:, 3 * units :] = x
    j, c, tc, m = (torch.empty(2, units, dtype=dtype) for _ in range(4))
    compiled.lstm_forward_pointwise(z, torch.zeros(2, units, dtype=dtype), EMPTY, EMPTY, -1.0, j, c, tc, m, EMPTY,
                                    ACTIVATION_CODES["tanh"], GATE_CODES["sigmoid"])
    if dtype == torch.float32:
        torch.testing.assert_close(j.double(), torch.tanh(x.double()), rtol=2 * EPS32, atol=0)
    else:
        torch.testing.assert_close(j, torch.tanh(x), rtol=5 * EPS64, atol=0)


def _gru_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of the GRU step kernels, made in float32 and cast to ``dtype``:
    ``(g, h_prev, c, dh, d_rh)`` (``h_prev`` with a row stride)."""
    n, units = 5, 19  # not a multiple of the vector width
    g_ = torch.Generator().manual_seed(0)
    g = (torch.randn(n, 3 * units, generator=g_) * 3)[:, : 2 * units].to(dtype).contiguous()
    h_prev = torch.randn(n, 2 * units, generator=g_).to(dtype)[:, :units]
    c = torch.randn(n, units, generator=g_).to(dtype) * 3
    dh, d_rh = (torch.randn(n, units, generator=g_).to(dtype) for _ in range(2))
    return g, h_prev, c, dh, d_rh


def _gru_pointwise(kernels_used: tuple, inputs: tuple) -> list[torch.Tensor]:
    """The GRU step's pointwise kernels on ``inputs`` (of :func:`_gru_inputs`):
    ``[g, rh, c, h, dg, dc, dh_prev]``."""
    gates_forward, output_forward, output_backward, reset_backward = kernels_used
    g, h_prev, c, dh, d_rh = inputs
    g, c = g.clone(), c.clone()
    rh, h, dc, dh_prev = (torch.empty_like(c) for _ in range(4))
    dg = torch.empty_like(g)
    gates_forward(g, h_prev, rh)
    output_forward(c, g, h_prev, h)
    output_backward(dh, g, c, h_prev, dg, dc, dh_prev)
    reset_backward(d_rh, g, h_prev, dg, dh_prev)
    return [g, rh, c, h, dg, dc, dh_prev]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation, gate", [*((a, "sigmoid") for a in ACTIVATIONS),
                                              ("tanh", "hard_sigmoid"), ("softsign", "hard_sigmoid")])
def test_gru_kernels_match_torch(compiled, dtype, activation, gate) -> None:
    """As for the LSTM kernels: float64 equal to a few ulp, float32 within the rounding bound."""
    twins = (partial(gates_forward_torch, gate=gate), partial(output_forward_torch, activation=activation),
             partial(output_backward_torch, activation=activation, gate=gate), partial(reset_backward_torch, gate=gate))
    ours = (_with_code(compiled.gru_gates_forward, None, gate), _with_code(compiled.gru_output_forward, activation),
            _with_code(compiled.gru_output_backward, activation, gate),
            _with_code(compiled.gru_reset_backward, None, gate))
    names = ["g", "rh", "c", "h", "dg", "dc", "dh_prev"]
    results = [_gru_pointwise(used, _gru_inputs(dtype)) for used in (twins, ours)]
    if dtype == torch.float64:
        for name, a, b in zip(names, *results):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14, msg=lambda msg: f"{name}: {msg}")
        return
    exact = _gru_pointwise(twins, _float64(_gru_inputs(dtype)))
    for result in results:
        for name, a, e in zip(names, result, exact):
            assert_rounding_close(a, e, POINTWISE_ULPS, name)


BATCH_SIZES, RNN_UNITS = [5, 5, 3, 2, 2], 19


def _rnn_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of the BasicRNNCell step loops over ragged packed steps, made in float32
    and cast to ``dtype``: ``(pre, d_out, h0, w_h)``."""
    rows, running = sum(BATCH_SIZES), BATCH_SIZES[0]
    g = torch.Generator().manual_seed(4)
    pre, d_out = (3 * torch.randn(rows, RNN_UNITS, generator=g) for _ in range(2))
    h0 = torch.randn(running, RNN_UNITS, generator=g)
    w_h = 0.4 * torch.randn(RNN_UNITS, RNN_UNITS, generator=g)
    return tuple(t.to(dtype) for t in (pre, d_out, h0, w_h))


def _rnn_loops(loops: tuple, inputs: tuple, aliased: bool) -> list[torch.Tensor]:
    """The forward and backward step loops on ``inputs``: ``[out, d_h0, d_pre]``."""
    forward, backward = loops
    pre, d_out, h0, w_h = inputs
    z = pre.clone()
    out = z if aliased else torch.empty_like(z)
    forward(z, out, h0, w_h, BATCH_SIZES)
    d_h, d_pre = torch.zeros_like(h0), torch.empty_like(out)
    backward(out, d_out, d_h, d_pre, w_h.t().contiguous(), BATCH_SIZES)
    return [out, d_h, d_pre]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("aliased", [False, True], ids=["own_output", "output_is_pre_activation"])
def test_basic_rnn_step_loops_match_torch(compiled, dtype, activation, aliased) -> None:
    """The compiled forward and backward step loops against the torch twins' loops, over ragged
    packed steps; the output buffer may be the pre-activations' own (as in float32 and float64).
    Float32: each within the rounding bound of a GEMM loop (``STEPS_ULPS``: 19-term products over
    5 steps) of the twins run in float64 on the same inputs."""
    loops = fused_basic_rnn._loops(fused_basic_rnn.forward_pointwise_torch, fused_basic_rnn.backward_pointwise_torch,
                                   activation)
    twins = (loops.forward, loops.backward)
    ours = (_with_code(compiled.rnn_forward_steps, activation), _with_code(compiled.rnn_backward_steps, activation))
    results = [_rnn_loops(loops, _rnn_inputs(dtype), aliased) for loops in (twins, ours)]
    names = ["out", "d_h", "d_pre"]
    if dtype == torch.float64:
        for name, a, b in zip(names, *results):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=lambda msg: f"{name}: {msg}")
        return
    exact = _rnn_loops(twins, _rnn_inputs(torch.float64), aliased)
    ulps = STEPS_ULPS * (RNN_UNITS * len(BATCH_SIZES)) ** 0.5
    for result in results:
        for name, a, e in zip(names, result, exact):
            assert_rounding_close(a, e, ulps, name)


@pytest.mark.parametrize("compiled_kernels", [False, True], ids=["torch_steps", "compiled_steps"])
@pytest.mark.parametrize("name", ["gru", "basic_rnn_elu"])
def test_fused_layers_equal_the_reference_with_either_kernels(compiled_kernels, name, monkeypatch) -> None:
    if compiled_kernels and kernels() is None:
        pytest.skip("no compiled kernels on this machine")
    if not compiled_kernels:
        monkeypatch.setattr(fused_gru, "kernels", lambda: None)
        monkeypatch.setattr(fused_basic_rnn, "kernels", lambda: None)
    torch.manual_seed(3)
    make = {"gru": rk.GRUCell, "basic_rnn_elu": partial(rk.BasicRNNCell, activation="elu")}[name]
    cell = make(6, input_size=3, dtype=torch.float64)
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    results = []
    for backend in ("reference", "fused"):
        xi = x.clone().requires_grad_()
        out, state = rk.dynamic_rnn(cell, xi, sequence_length=[7, 3, 0, 5], backend=backend)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + state.sum()
        results.append([out, state, *torch.autograd.grad(loss, [xi, *cell.parameters()])])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
