"""The compiled RNN step kernels (rnn_cpu.cpp) equal their torch twins, and the fused layers
equal the reference on both."""

from __future__ import annotations

import shutil
from functools import partial

import pytest
import torch

import rnnkit as rk
from rnnkit.fused import basic_rnn as fused_basic_rnn
from rnnkit.fused import gru as fused_gru
from rnnkit.fused import lstm as fused_lstm
from rnnkit.fused.activation_kinds import ACTIVATION_CODES
from rnnkit.fused.gru import gates_forward_torch, output_backward_torch, output_forward_torch, reset_backward_torch
from rnnkit.fused.lstm import backward_pointwise_torch, forward_pointwise_torch
from rnnkit.fused.native import kernels

EMPTY = torch.empty(0)


@pytest.fixture(scope="module")
def compiled():
    module = kernels()
    if module is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the pure-torch path is the one in use")
    assert module is not None, "a compiler is present but the kernels did not build (see the log)"
    return module


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


def _with_code(kernel, activation: str):
    """A compiled kernel with the activation's code as its last argument (the twins' keyword)."""
    return lambda *args: kernel(*args, ACTIVATION_CODES[activation])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("peepholes, clip, activation", [
    *((p, c, "tanh") for p in (False, True) for c in (False, True)), *((True, True, a) for a in ACTIVATIONS[1:])])
def test_forward_and_backward_kernels_match_torch(compiled, dtype, peepholes, clip, activation) -> None:
    n, units = 5, 19  # not a multiple of the vector width
    results = []
    for forward, backward in (
        (partial(forward_pointwise_torch, activation=activation), partial(backward_pointwise_torch,
                                                                          activation=activation)),
        (_with_code(compiled.lstm_forward_pointwise, activation), _with_code(compiled.lstm_backward_pointwise,
                                                                             activation)),
    ):
        z, c_prev, w_if, w_o, limit, kept = _step_inputs(dtype, n, units, peepholes, clip)
        z = z.clone()
        j, c, tc, m = (torch.empty(n, units, dtype=dtype) for _ in range(4))
        forward(z, c_prev, w_if, w_o, limit, j, c, tc, m, kept)
        g = torch.Generator().manual_seed(1)
        dm = torch.randn(n, units, dtype=dtype, generator=g)
        d_c = torch.randn(n, units, dtype=dtype, generator=g)
        dz = torch.empty(n, 4 * units, dtype=dtype)
        backward(z, j, c_prev, tc, dm, d_c, w_if, w_o, kept, dz)
        results.append([z, j, c, tc, m, dz, d_c] + ([kept] if clip else []))
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for name, a, b in zip(["z", "j", "c", "tc", "m", "dz", "d_c_prev", "kept"], *results):
        torch.testing.assert_close(b, a, **tol, msg=lambda msg: f"{name}: {msg}")


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


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 4e-7), (torch.float64, 2e-15)])
def test_compiled_tanh_keeps_relative_precision(compiled, dtype, rtol) -> None:
    units = 64
    magnitudes = torch.logspace(-7, 1.3, units, dtype=dtype)  # tiny to saturated
    x = torch.cat([magnitudes, -magnitudes]).view(2, units)
    z = torch.zeros(2, 4 * units, dtype=dtype)
    z[:, 3 * units :] = x
    j, c, tc, m = (torch.empty(2, units, dtype=dtype) for _ in range(4))
    compiled.lstm_forward_pointwise(z, torch.zeros(2, units, dtype=dtype), EMPTY, EMPTY, -1.0, j, c, tc, m, EMPTY,
                                    ACTIVATION_CODES["tanh"])
    torch.testing.assert_close(j, torch.tanh(x), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gru_kernels_match_torch(compiled, dtype, activation) -> None:
    n, units = 5, 19
    results = []
    for kernels_used in (
        (gates_forward_torch, partial(output_forward_torch, activation=activation),
         partial(output_backward_torch, activation=activation), reset_backward_torch),
        (compiled.gru_gates_forward, _with_code(compiled.gru_output_forward, activation),
         _with_code(compiled.gru_output_backward, activation), compiled.gru_reset_backward),
    ):
        gates_forward, output_forward, output_backward, reset_backward = kernels_used
        g_ = torch.Generator().manual_seed(0)
        g = (torch.randn(n, 3 * units, dtype=dtype, generator=g_) * 3)[:, : 2 * units].clone()
        h_prev = torch.randn(n, 2 * units, dtype=dtype, generator=g_)[:, :units]
        c = torch.randn(n, units, dtype=dtype, generator=g_) * 3
        rh, h = torch.empty(n, units, dtype=dtype), torch.empty(n, units, dtype=dtype)
        gates_forward(g, h_prev, rh)
        output_forward(c, g, h_prev, h)
        dh = torch.randn(n, units, dtype=dtype, generator=g_)
        d_rh = torch.randn(n, units, dtype=dtype, generator=g_)
        dg, dc, dh_prev = torch.empty(n, 2 * units, dtype=dtype), torch.empty(n, units, dtype=dtype), torch.empty(n, units, dtype=dtype)
        output_backward(dh, g, c, h_prev, dg, dc, dh_prev)
        reset_backward(d_rh, g, h_prev, dg, dh_prev)
        results.append([g, rh, c, h, dg, dc, dh_prev])
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for name, a, b in zip(["g", "rh", "c", "h", "dg", "dc", "dh_prev"], *results):
        torch.testing.assert_close(b, a, **tol, msg=lambda msg: f"{name}: {msg}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("aliased", [False, True], ids=["own_output", "output_is_pre_activation"])
def test_basic_rnn_step_loops_match_torch(compiled, dtype, activation, aliased) -> None:
    """The compiled forward and backward step loops against the torch twins' loops, over ragged
    packed steps; the output buffer may be the pre-activations' own (as in float32 and float64)."""
    batch_sizes, units = [5, 5, 3, 2, 2], 19
    rows, running = sum(batch_sizes), batch_sizes[0]
    g = torch.Generator().manual_seed(4)
    pre, d_out = (3 * torch.randn(rows, units, dtype=dtype, generator=g) for _ in range(2))
    h0 = torch.randn(running, units, dtype=dtype, generator=g)
    w_h = 0.4 * torch.randn(units, units, dtype=dtype, generator=g)
    twins = fused_basic_rnn._loops(fused_basic_rnn.forward_pointwise_torch, fused_basic_rnn.backward_pointwise_torch,
                                   activation)
    loops = (twins, (_with_code(compiled.rnn_forward_steps, activation),
                     _with_code(compiled.rnn_backward_steps, activation)))
    results = []
    for forward, backward in loops:
        z = pre.clone()
        out = z if aliased else torch.empty_like(z)
        forward(z, out, h0, w_h, batch_sizes)
        d_h, d_pre = torch.zeros_like(h0), torch.empty_like(out)
        backward(out, d_out, d_h, d_pre, w_h.t().contiguous(), batch_sizes)
        results.append([out, d_h, d_pre])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for name, a, b in zip(["out", "d_h", "d_pre"], *results):
        torch.testing.assert_close(b, a, **tol, msg=lambda msg: f"{name}: {msg}")


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
