"""rnnkit's Triton kernels equal their torch twins and the reference cells, forward and
gradients: on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest.py
when there is no GPU) at small sizes, and on CUDA for real when a GPU is present."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
import torch

import rnnkit as rk
from rnnkit.fused import basic_rnn, gru, lstm, plan_layers
from rnnkit.fused.activation_kinds import ACTIVATION_CODES
from rnnkit.fused.step_loops import StepLoops

pytest.importorskip("triton")

from rnnkit.fused.triton import (  # noqa: E402
    persistent_gru,
    persistent_lstm,
    persistent_rnn,
    persistent_setup,
    triton_pointwise,
    triton_support,
)
from rnnkit.fused.triton.triton_support import persistent_fits  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
F32 = torch.float32
EMPTY = torch.empty(0, device=DEVICE)
NO_MASK = torch.empty(0, dtype=torch.bool, device=DEVICE)
TOL = dict(rtol=1e-5, atol=1e-5)


def _randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, device=DEVICE)


def _strided(rows: int, cols: int) -> torch.Tensor:
    """A [rows, cols] view with a row stride wider than its width (as packed slices are)."""
    return _randn(rows, cols + 3)[:, :cols]


ACTIVATIONS = list(ACTIVATION_CODES)  # tanh first
# (peepholes, clip, activation): every option with tanh, other activations with all options on
LSTM_KINDS = [(p, c, "tanh") for p, c in itertools.product([False, True], [-1.0, 0.4])]
LSTM_KINDS += [(True, 0.4, a) for a in ACTIVATIONS[1:]]


@pytest.mark.parametrize("peepholes, clip, activation", LSTM_KINDS)
def test_lstm_pointwise_kernels_equal_the_torch_twins(peepholes: bool, clip: float, activation: str) -> None:
    torch.manual_seed(0)
    n, units = 5, 20
    z, c_prev = _randn(n, 4 * units, scale=2.0), _strided(n, units)
    w_if, w_o = (_randn(2, units), _randn(units)) if peepholes else (EMPTY, EMPTY)
    forward = []
    for pointwise in (lstm.forward_pointwise_torch, triton_pointwise.forward_pointwise_triton):
        outputs = [z.clone(), *(torch.empty(n, units, device=DEVICE) for _ in range(4))]
        kept = torch.empty(n, units, dtype=torch.bool, device=DEVICE) if clip >= 0 else NO_MASK
        pointwise(outputs[0], c_prev, w_if, w_o, clip, *outputs[1:], kept, activation=activation)
        forward.append([*outputs, kept])
    for twin, kernel in zip(*forward):
        torch.testing.assert_close(kernel, twin, **TOL)

    gates, j, _, act_c, _, kept = forward[0]
    dm, d_c = _strided(n, units), _randn(n, units)
    backward = []
    for pointwise in (lstm.backward_pointwise_torch, triton_pointwise.backward_pointwise_triton):
        d_c_step, dz = d_c.clone(), torch.empty(n, 4 * units, device=DEVICE)
        pointwise(gates, j, c_prev, act_c, dm, d_c_step, w_if, w_o, kept, dz, activation=activation)
        backward.append([d_c_step, dz])
    for twin, kernel in zip(*backward):
        torch.testing.assert_close(kernel, twin, **TOL)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gru_pointwise_kernels_equal_the_torch_twins(activation: str) -> None:
    torch.manual_seed(1)
    n, units = 6, 19
    twins = gru.GRUPointwise().for_activation(activation)
    kernels = gru.GRUPointwise(
        triton_pointwise.gates_forward_triton, triton_pointwise.output_forward_triton,
        triton_pointwise.output_backward_triton, triton_pointwise.reset_backward_triton,
    ).for_activation(activation)
    g0, h_prev, c0, dh, d_rh = _randn(n, 2 * units), _strided(n, units), _randn(n, units, scale=3.0), _randn(
        n, units), _randn(n, units)
    results = []
    for ops in (twins, kernels):
        g, c, reset_h, h = g0.clone(), c0.clone(), torch.empty(n, units, device=DEVICE), torch.empty(
            n, units, device=DEVICE)
        ops.gates_forward(g, h_prev, reset_h)
        ops.output_forward(c, g, h_prev, h)
        dg, dc, dh_prev = torch.zeros(n, 2 * units, device=DEVICE), torch.empty(n, units, device=DEVICE), torch.empty(
            n, units, device=DEVICE)
        ops.output_backward(dh, g, c, h_prev, dg, dc, dh_prev)
        ops.reset_backward(d_rh, g, h_prev, dg, dh_prev)
        results.append([g, c, reset_h, h, dg, dc, dh_prev])
    for twin, kernel in zip(*results):
        torch.testing.assert_close(kernel, twin, **TOL)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_basic_rnn_pointwise_kernels_equal_the_torch_twins(activation: str) -> None:
    torch.manual_seed(11)
    n, units = 7, 21
    z, d_out, d_h = _randn(n, units, scale=3.0), _strided(n, units), _randn(n, units)
    results = []
    for forward, backward in ((basic_rnn.forward_pointwise_torch, basic_rnn.backward_pointwise_torch),
                              (triton_pointwise.rnn_forward_triton, triton_pointwise.rnn_backward_triton)):
        h, d_pre = _strided(n, units), torch.empty(n, units, device=DEVICE)
        forward(z.clone(), h, activation=activation)
        backward(d_out, d_h, h, d_pre, activation=activation)
        in_place = z.clone()
        forward(in_place, in_place, activation=activation)  # h may be the pre-activation itself
        results.append([h, d_pre, in_place])
    for twin, kernel in zip(*results):
        torch.testing.assert_close(kernel, twin, **TOL)
    assert bool(results[0][1].abs().sum() > 0)


def test_kernel_activations_are_accurate_to_float32() -> None:
    """Relative error of a few float32 ulps (GPU ``exp`` is ``ex2.approx``: ~|x| ulps at the tails)."""
    x = torch.cat([torch.linspace(-30, 30, 4001), torch.linspace(-0.3, 0.3, 2001)]).to(DEVICE).view(-1, 1)
    z = torch.cat([x, x, x, x], 1)  # (i, f, o, j): sigmoid, sigmoid, sigmoid, tanh
    outputs = [torch.empty_like(x) for _ in range(4)]
    triton_pointwise.forward_pointwise_triton(z, torch.zeros_like(x), EMPTY, EMPTY, -1.0, *outputs, NO_MASK)
    exact = x.double()
    torch.testing.assert_close(z[:, :1].double(), torch.sigmoid(exact), rtol=4e-6, atol=1e-30)
    torch.testing.assert_close(outputs[0].double(), torch.tanh(exact), rtol=1e-6, atol=1e-30)


SIZES = {"full": [5, 5, 5, 5], "ragged": [6, 6, 4, 3, 3, 1]}
# where the persistent kernels keep their weights: in registers, or streamed from the cache
# every step with one loop for all gates (the default) or one loop per gate
WEIGHTS = ["in_registers", "streamed", "streamed_loop_per_gate"]


def _hold_weights(weights: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persistent_setup.TUNING, "resident_max_depth", 1 << 20 if weights == "in_registers" else 0)
    monkeypatch.setattr(persistent_setup.TUNING, "one_loop_for_gates", weights != "streamed_loop_per_gate")


def _forward_buffers(batch_sizes: list[int], units: int, clip: float) -> dict[str, torch.Tensor]:
    rows = sum(batch_sizes)
    return {
        "candidates": torch.empty(rows, units, device=DEVICE),
        "cells": torch.empty(rows, units, device=DEVICE),
        "act_cells": torch.empty(rows, units, device=DEVICE),
        "out": torch.empty(rows, units, device=DEVICE),
        "clip_mask": torch.empty(rows, units, dtype=torch.bool, device=DEVICE) if clip >= 0 else NO_MASK,
    }


def _forward(steps: Any, gates: torch.Tensor, h0, c0, w_h, w_if, w_o, clip, sizes) -> dict[str, torch.Tensor]:
    b = _forward_buffers(sizes, c0.shape[1], clip)
    steps(gates, h0, c0, w_h, w_if, w_o, EMPTY, clip, -1.0, sizes, b["candidates"], b["cells"], b["act_cells"],
          EMPTY, b["out"], b["clip_mask"], NO_MASK)
    return {"gates": gates, **b}


@pytest.mark.parametrize("peepholes, clip, activation", [*LSTM_KINDS[:4], (True, 0.4, "elu"), (False, -1.0, "relu6")])
@pytest.mark.parametrize("sizes", sorted(SIZES))
@pytest.mark.parametrize("weights", WEIGHTS)
def test_persistent_lstm_kernels_equal_the_step_loops(peepholes: bool, clip: float, activation: str, sizes: str,
                                                      weights: str, monkeypatch) -> None:
    _hold_weights(weights, monkeypatch)
    torch.manual_seed(2)
    batch_sizes, units = SIZES[sizes], 24
    rows, k = sum(batch_sizes), batch_sizes[0]
    gates, h0, c0, w_h = _randn(rows, 4 * units), _randn(k, units), _randn(k, units), _randn(units, 4 * units, scale=0.3)
    w_if, w_o = (_randn(2, units), _randn(units)) if peepholes else (EMPTY, EMPTY)
    twins = lstm._loops(lstm.forward_pointwise_torch, lstm.backward_pointwise_torch, activation)
    twin_forward, twin_backward = twins.forward, twins.backward
    kernel_forward = functools.partial(persistent_lstm.forward_steps_persistent, activation=activation)
    kernel_backward = functools.partial(persistent_lstm.backward_steps_persistent, activation=activation)
    twin = _forward(twin_forward, gates.clone(), h0, c0, w_h, w_if, w_o, clip, batch_sizes)
    kernel = _forward(kernel_forward, gates.clone(), h0, c0, w_h, w_if, w_o, clip, batch_sizes)
    inference = _forward(functools.partial(kernel_forward, save=False), gates.clone(), h0, c0, w_h, w_if, w_o, clip,
                         batch_sizes)
    for name in ("out", "cells"):  # all that inference fills
        torch.testing.assert_close(inference[name], twin[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")
    saved_gates = twin["gates"]
    twin["gates"], kernel["gates"] = twin["gates"][:, : 3 * units], kernel["gates"][:, : 3 * units]  # j stays raw
    for name in twin:
        torch.testing.assert_close(kernel[name], twin[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")

    d_out, d_c_final = _randn(rows, units), _randn(k, units)
    results = []
    for steps in (twin_backward, kernel_backward):
        d_h, d_c, d_gates = torch.zeros(k, units, device=DEVICE), d_c_final.clone(), torch.empty(
            rows, 4 * units, device=DEVICE)
        steps(saved_gates, twin["candidates"], twin["cells"], twin["act_cells"], c0, d_out, d_h, d_c, d_gates, EMPTY,
              w_h.t().contiguous(), EMPTY, w_if, w_o, twin["clip_mask"], NO_MASK, batch_sizes)
        results.append([d_h, d_c, d_gates])
    for twin_grad, kernel_grad in zip(*results):
        torch.testing.assert_close(kernel_grad, twin_grad, **TOL)


def test_persistent_kernels_on_tiles_of_64_rows_and_32_units(monkeypatch) -> None:
    """The wide tiles' shapes (one program of 64 rows x 32 units here; 8 warps and ``wide_block_k``
    on a GPU), LSTM, GRU and BasicRNN, forward and backward, against the step loops."""
    monkeypatch.setattr(persistent_setup.TUNING, "resident_max_depth", 0)
    torch.manual_seed(10)
    batch_sizes, units = [40, 40, 33, 17], 20
    rows, k = sum(batch_sizes), batch_sizes[0]
    gates, h0, c0, w_h = _randn(rows, 4 * units), _randn(k, units), _randn(k, units), _randn(units, 4 * units, scale=0.3)
    w_if, w_o = _randn(2, units), _randn(units)
    twin = _forward(lstm.forward_steps_torch, gates.clone(), h0, c0, w_h, w_if, w_o, 0.6, batch_sizes)
    kernel = _forward(persistent_lstm.forward_steps_persistent, gates.clone(), h0, c0, w_h, w_if, w_o, 0.6, batch_sizes)
    for name in ("candidates", "cells", "act_cells", "out", "clip_mask"):
        torch.testing.assert_close(kernel[name], twin[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")
    d_out, d_c_final = _randn(rows, units), _randn(k, units)
    results = []
    for steps in (lstm.backward_steps_torch, persistent_lstm.backward_steps_persistent):
        d_h, d_c, d_gates = torch.zeros(k, units, device=DEVICE), d_c_final.clone(), torch.empty(
            rows, 4 * units, device=DEVICE)
        steps(twin["gates"], twin["candidates"], twin["cells"], twin["act_cells"], c0, d_out, d_h, d_c, d_gates, EMPTY,
              w_h.t().contiguous(), EMPTY, w_if, w_o, twin["clip_mask"], NO_MASK, batch_sizes)
        results.append([d_h, d_c, d_gates])
    for twin_grad, kernel_grad in zip(*results):
        torch.testing.assert_close(kernel_grad, twin_grad, **TOL)

    w_gh, w_ch = _randn(units, 2 * units, scale=0.3), _randn(units, units, scale=0.3)
    forward = []
    for steps in (gru.forward_steps_torch, persistent_gru.forward_steps_persistent):
        buffers = [gates[:, : 2 * units].clone(), gates[:, 2 * units : 3 * units].clone(),
                   torch.empty(rows, units, device=DEVICE), torch.empty(rows, units, device=DEVICE)]
        steps(*buffers, h0, w_gh, w_ch, batch_sizes)
        forward.append(buffers)
    for twin_result, kernel_result in zip(*forward):
        torch.testing.assert_close(kernel_result, twin_result, **TOL)
    backward = []
    for steps in (gru.backward_steps_torch, persistent_gru.backward_steps_persistent):
        d_h, d_gates, d_candidates = torch.zeros(k, units, device=DEVICE), torch.empty(
            rows, 2 * units, device=DEVICE), torch.empty(rows, units, device=DEVICE)
        steps(forward[0][0], forward[0][1], forward[0][3], h0, d_out, d_h, d_gates, d_candidates,
              w_gh.t().contiguous(), w_ch.t().contiguous(), batch_sizes)
        backward.append([d_h, d_gates, d_candidates])
    for twin_grad, kernel_grad in zip(*backward):
        torch.testing.assert_close(kernel_grad, twin_grad, **TOL)

    twin_h, kernel_h = (_rnn_forward(steps, gates[:, :units], h0, w_ch, batch_sizes)
                        for steps in (basic_rnn.forward_steps_torch, persistent_rnn.forward_steps_persistent))
    torch.testing.assert_close(kernel_h, twin_h, **TOL)
    for twin_grad, kernel_grad in zip(*(_rnn_backward(steps, twin_h, d_out, w_ch, batch_sizes) for steps in
                                        (basic_rnn.backward_steps_torch, persistent_rnn.backward_steps_persistent))):
        torch.testing.assert_close(kernel_grad, twin_grad, **TOL)


@pytest.mark.parametrize("proj_clip, activation", [(-1.0, "tanh"), (0.3, "tanh"), (0.3, "relu")])
@pytest.mark.parametrize("sizes", sorted(SIZES))
@pytest.mark.parametrize("weights", WEIGHTS)
def test_persistent_projection_lstm_kernels_equal_the_step_loops(proj_clip: float, activation: str, sizes: str,
                                                                 weights: str, monkeypatch) -> None:
    """With peepholes, cell clipping and a projection to fewer columns than units (and
    ``proj_clip``): the two-barrier steps against the step loop."""
    _hold_weights(weights, monkeypatch)
    torch.manual_seed(9)
    batch_sizes, units, proj = SIZES[sizes], 20, 11
    rows, k = sum(batch_sizes), batch_sizes[0]
    gates, h0, c0 = _randn(rows, 4 * units), _randn(k, proj), _randn(k, units)
    w_h, projection = _randn(proj, 4 * units, scale=0.3), _randn(units, proj, scale=0.4)
    w_if, w_o = _randn(2, units), _randn(units)

    def masks(cols: int, clip: float) -> torch.Tensor:
        return torch.empty(rows, cols, dtype=torch.bool, device=DEVICE) if clip >= 0 else NO_MASK

    twin_steps = lstm._loops(lstm.forward_pointwise_torch, lstm.backward_pointwise_torch, activation)
    kernel_steps = (functools.partial(persistent_lstm.forward_steps_persistent, activation=activation),
                    functools.partial(persistent_lstm.backward_steps_persistent, activation=activation))
    forward = []
    for steps in (twin_steps.forward, kernel_steps[0]):
        b = {"gates": gates.clone(), **{name: torch.empty(rows, units, device=DEVICE)
                                         for name in ("candidates", "cells", "act_cells", "hidden")},
             "out": torch.empty(rows, proj, device=DEVICE), "clip_mask": masks(units, 0.5),
             "proj_mask": masks(proj, proj_clip)}
        steps(b["gates"], h0, c0, w_h, w_if, w_o, projection, 0.5, proj_clip, batch_sizes, b["candidates"], b["cells"],
              b["act_cells"], b["hidden"], b["out"], b["clip_mask"], b["proj_mask"])
        forward.append(b)
    twin, kernel = forward
    for name in twin:
        got, expected = (kernel[name][:, : 3 * units], twin[name][:, : 3 * units]) if name == "gates" else (
            kernel[name], twin[name])  # j's block of the gates stays raw
        torch.testing.assert_close(got, expected, **TOL, msg=lambda m, n=name: f"{n}: {m}")
    if proj_clip >= 0:
        assert 0 < int(twin["proj_mask"].sum()) < twin["proj_mask"].numel()  # the clip acts on some outputs

    d_out, d_c_final = _randn(rows, proj), _randn(k, units)
    backward = []
    for steps in (twin_steps.backward, kernel_steps[1]):
        d_h, d_c, d_gates, d_m = torch.zeros(k, proj, device=DEVICE), d_c_final.clone(), torch.empty(
            rows, 4 * units, device=DEVICE), torch.empty(rows, proj, device=DEVICE)
        steps(twin["gates"], twin["candidates"], twin["cells"], twin["act_cells"], c0, d_out, d_h, d_c, d_gates, d_m,
              w_h.t().contiguous(), projection.t().contiguous(), w_if, w_o, twin["clip_mask"], twin["proj_mask"],
              batch_sizes)
        backward.append([d_h, d_c, d_gates, d_m])
    for twin_grad, kernel_grad in zip(*backward):
        torch.testing.assert_close(kernel_grad, twin_grad, **TOL)


@pytest.mark.parametrize("sizes", sorted(SIZES))
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("activation", ["tanh", "softsign"])
def test_persistent_gru_kernels_equal_the_step_loops(sizes: str, weights: str, activation: str,
                                                     monkeypatch) -> None:
    _hold_weights(weights, monkeypatch)
    torch.manual_seed(6)
    batch_sizes, units = SIZES[sizes], 20
    rows, k = sum(batch_sizes), batch_sizes[0]
    gates, candidates, h0 = _randn(rows, 2 * units), _randn(rows, units), _randn(k, units)
    w_gh, w_ch = _randn(units, 2 * units, scale=0.3), _randn(units, units, scale=0.3)
    forward = []
    twins = gru._loops(gru.GRUPointwise(), activation)
    twin_forward, twin_backward = twins.forward, twins.backward
    kernel_forward = functools.partial(persistent_gru.forward_steps_persistent, activation=activation)
    kernel_backward = functools.partial(persistent_gru.backward_steps_persistent, activation=activation)
    for steps in (twin_forward, kernel_forward, functools.partial(kernel_forward, save=False)):
        buffers = [gates.clone(), candidates.clone(), torch.empty(rows, units, device=DEVICE),
                   torch.empty(rows, units, device=DEVICE)]
        steps(*buffers, h0, w_gh, w_ch, batch_sizes)
        forward.append(buffers)
    for twin, kernel in zip(*forward[:2]):
        torch.testing.assert_close(kernel, twin, **TOL)
    torch.testing.assert_close(forward[2][3], forward[0][3], **TOL)  # inference: the same h

    activated, candidates_out, _, out = forward[0]
    d_out = _randn(rows, units)
    backward = []
    for steps in (twin_backward, kernel_backward):
        d_h, d_gates, d_candidates = torch.zeros(k, units, device=DEVICE), torch.empty(
            rows, 2 * units, device=DEVICE), torch.empty(rows, units, device=DEVICE)
        steps(activated, candidates_out, out, h0, d_out, d_h, d_gates, d_candidates, w_gh.t().contiguous(),
              w_ch.t().contiguous(), batch_sizes)
        backward.append([d_h, d_gates, d_candidates])
    for twin, kernel in zip(*backward):
        torch.testing.assert_close(kernel, twin, **TOL)


def _rnn_forward(steps: Any, pre: torch.Tensor, h0: torch.Tensor, w_h: torch.Tensor,
                 batch_sizes: list[int]) -> torch.Tensor:
    out = torch.empty_like(pre)
    steps(pre.clone(), out, h0, w_h, batch_sizes)
    return out


def _rnn_backward(steps: Any, out: torch.Tensor, d_out: torch.Tensor, w_h: torch.Tensor,
                  batch_sizes: list[int]) -> list[torch.Tensor]:
    d_h, d_pre = torch.zeros(batch_sizes[0], out.shape[1], device=DEVICE), torch.empty_like(out)
    steps(out, d_out, d_h, d_pre, w_h.t().contiguous(), batch_sizes)
    return [d_h, d_pre]


@pytest.mark.parametrize("sizes", sorted(SIZES))
@pytest.mark.parametrize("weights", WEIGHTS[:2])  # one product a step: no gates to loop over
@pytest.mark.parametrize("activation", ["tanh", "elu", "relu6"])
def test_persistent_basic_rnn_kernels_equal_the_step_loops(sizes: str, weights: str, activation: str,
                                                           monkeypatch) -> None:
    _hold_weights(weights, monkeypatch)
    torch.manual_seed(12)
    batch_sizes, units = SIZES[sizes], 20
    rows, k = sum(batch_sizes), batch_sizes[0]
    pre, h0, w_h = _randn(rows, units, scale=2.0), _randn(k, units), _randn(units, units, scale=0.4)
    twin_steps = basic_rnn._loops(basic_rnn.forward_pointwise_torch, basic_rnn.backward_pointwise_torch, activation)
    kernel_steps = StepLoops(functools.partial(persistent_rnn.forward_steps_persistent, activation=activation),
                             functools.partial(persistent_rnn.backward_steps_persistent, activation=activation))
    twin, kernel = (_rnn_forward(steps.forward, pre, h0, w_h, batch_sizes) for steps in (twin_steps, kernel_steps))
    torch.testing.assert_close(kernel, twin, **TOL)
    d_out = _randn(rows, units)
    for twin_grad, kernel_grad in zip(*(_rnn_backward(steps.backward, twin, d_out, w_h, batch_sizes)
                                        for steps in (twin_steps, kernel_steps))):
        torch.testing.assert_close(kernel_grad, twin_grad, **TOL)


@pytest.mark.parametrize("flag", [False, True], ids=["persistent_rnn_off", "persistent_rnn_on"])
def test_basic_rnn_step_selection(flag: bool, monkeypatch) -> None:
    """Half inputs under the interpreter (as on CUDA): the persistent kernels while
    ``PERSISTENT_RNN`` and they fit, else the Triton step loops; float32 and float64 on the CPU
    without the compiled loops: the torch twins."""
    monkeypatch.setattr(triton_support, "PERSISTENT_RNN", flag)
    cpu = torch.device("cpu")
    loops = basic_rnn._steps(cpu, torch.float16, 4, 8, "elu")
    forward, backward = loops.forward, loops.backward
    if flag:
        assert forward.func is persistent_rnn.forward_steps_persistent
        assert backward.func is persistent_rnn.backward_steps_persistent
        assert forward.keywords == backward.keywords == {"activation": "elu"}
    else:
        assert forward.keywords["pointwise"].func is triton_pointwise.rnn_forward_triton
        assert backward.keywords["pointwise"].func is triton_pointwise.rnn_backward_triton
        assert forward.keywords["pointwise"].keywords == {"activation": "elu"}
    monkeypatch.setattr(basic_rnn, "kernels", lambda: None)  # else the compiled loops (test_native.py)
    for dtype in (torch.float32, torch.float64):
        forward = basic_rnn._steps(cpu, dtype, 4, 8, "elu").forward
        assert forward.keywords["pointwise"].func is basic_rnn.forward_pointwise_torch


def _run(cell: Any, x: torch.Tensor, lengths: Any, init: Any, backend: str) -> list[torch.Tensor]:
    xi = x.detach().clone().requires_grad_()
    state = rk.map_state(lambda s: s.detach().clone().requires_grad_(), init)
    out, final = rk.dynamic_rnn(cell, xi, sequence_length=lengths, initial_state=state, backend=backend)
    generator = torch.Generator(device=DEVICE).manual_seed(7)
    loss = (out.float() * torch.randn(out.shape, device=DEVICE, generator=generator)).sum()
    for leaf in rk.flatten_state(final):
        loss = loss + (leaf.float() * torch.randn(leaf.shape, device=DEVICE, generator=generator)).sum()
    grads = torch.autograd.grad(loss, [xi, *cell.parameters(), *rk.flatten_state(state)])
    return [out, *rk.flatten_state(final), *grads]


def _on_triton(monkeypatch: pytest.MonkeyPatch, persistent: bool = True) -> None:
    """Make the fused path take the Triton kernels on this device (on the CPU: the interpreter):
    the persistent kernels where they fit (unless not ``persistent``), else the step loops."""
    def lstm_steps(device: torch.device, dtype: torch.dtype, batch: int, config: lstm.LSTMConfig,
                   num_proj: int | None, save: bool = True) -> StepLoops:
        assert config.gate == "sigmoid", "the plan runs other gates on the CPU loops only"
        activation = config.activation
        if persistent and persistent_fits(device, batch, config.units, num_proj):
            return StepLoops(
                functools.partial(persistent_lstm.forward_steps_persistent, activation=activation, save=save),
                functools.partial(persistent_lstm.backward_steps_persistent, activation=activation))
        return lstm._loops(triton_pointwise.forward_pointwise_triton, triton_pointwise.backward_pointwise_triton,
                           activation)

    def gru_steps(device: torch.device, dtype: torch.dtype, batch: int, units: int, activation: str = "tanh",
                  save: bool = True, gate: str = "sigmoid") -> StepLoops:
        assert gate == "sigmoid", "the plan runs other gates on the CPU loops only"
        if persistent and persistent_fits(device, batch, units):
            return StepLoops(
                functools.partial(persistent_gru.forward_steps_persistent, activation=activation, save=save),
                functools.partial(persistent_gru.backward_steps_persistent, activation=activation))
        ops = gru.GRUPointwise(triton_pointwise.gates_forward_triton, triton_pointwise.output_forward_triton,
                               triton_pointwise.output_backward_triton, triton_pointwise.reset_backward_triton)
        return gru._loops(ops, activation)

    def rnn_steps(device: torch.device, dtype: torch.dtype, batch: int, units: int, activation: str) -> StepLoops:
        if persistent and persistent_fits(device, batch, units):
            return StepLoops(functools.partial(persistent_rnn.forward_steps_persistent, activation=activation),
                             functools.partial(persistent_rnn.backward_steps_persistent, activation=activation))
        return basic_rnn._loops(triton_pointwise.rnn_forward_triton, triton_pointwise.rnn_backward_triton, activation)

    monkeypatch.setattr(triton_support, "PERSISTENT_PROJECTION", True)
    monkeypatch.setattr(lstm, "_steps", lstm_steps)
    monkeypatch.setattr(gru, "_steps", gru_steps)
    monkeypatch.setattr(basic_rnn, "_steps", rnn_steps)
    monkeypatch.setattr(plan_layers.LSTMLayer, "_through_torch", staticmethod(lambda *a: False))


CELLS = {
    "lstm": lambda: rk.BasicLSTMCell(12, forget_bias=0.5),
    "lstm_peephole_clip": lambda: rk.LSTMCell(12, use_peepholes=True, cell_clip=0.5, forget_bias=0.3),
    "lstm_projection": lambda: rk.LSTMCell(12, use_peepholes=True, num_proj=7, proj_clip=0.3),
    "tf_gru": lambda: rk.GRUCell(11),
    "stack": lambda: rk.MultiRNNCell([rk.LSTMCell(10, use_peepholes=True), rk.GRUCell(9)]),
    "other_activations": lambda: rk.MultiRNNCell([rk.LSTMCell(10, use_peepholes=True, cell_clip=0.7, activation="selu"),
                                                  rk.LSTMCell(9, num_proj=6, activation="relu"),
                                                  rk.GRUCell(9, activation="softsign")]),
    "basic_rnn": lambda: rk.MultiRNNCell([rk.BasicRNNCell(10), rk.BasicRNNCell(8, activation="elu"),
                                          rk.BasicRNNCell(9, activation="sigmoid")]),
}


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 9, 6]])
def test_fused_layers_on_triton_equal_the_reference(name: str, lengths: Any, monkeypatch) -> None:
    torch.manual_seed(3)
    cell = CELLS[name]().to(DEVICE)
    x = torch.randn(5, 6, 4, device=DEVICE)
    cell(x[:, 0], cell.zero_state(5, F32))  # build
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    init = rk.map_state(lambda z: torch.randn_like(z), cell.zero_state(5, F32))
    reference = _run(cell, x, lengths, init, "reference")
    _on_triton(monkeypatch)
    fused = _run(cell, x, lengths, init, "fused")
    for i, (a, b) in enumerate(zip(reference, fused)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, i=i: f"result {i}: {m}")


@pytest.mark.parametrize("name", ["lstm_peephole_clip", "lstm_projection", "stack"])
def test_inference_on_triton_skips_the_saves_and_equals_the_reference(name: str, monkeypatch) -> None:
    """Without grad mode the persistent kernels store only h and c (``save=False``)."""
    torch.manual_seed(4)
    cell = CELLS[name]().to(DEVICE)
    x = torch.randn(5, 6, 4, device=DEVICE)
    lengths = torch.tensor([6, 0, 3, 9, 6])
    init = rk.map_state(lambda z: torch.randn_like(z), cell.zero_state(5, F32))
    with torch.no_grad():
        reference = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=init, backend="reference")
        _on_triton(monkeypatch)
        saves = []
        for module in (persistent_lstm, persistent_gru):
            launch = module.forward_steps_persistent
            monkeypatch.setattr(module, "forward_steps_persistent",
                                lambda *a, launch=launch, **k: (saves.append(k["save"]), launch(*a, **k))[1])
        fused = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=init, backend="fused")
    assert saves and not any(saves)
    for a, b in zip(rk.flatten_state(reference), rk.flatten_state(fused)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


HALF = [torch.float16, torch.bfloat16] if DEVICE.type == "cuda" else [torch.float16]  # the interpreter lacks bf16


HALF_CELLS = {
    "peephole_lstm": lambda **kw: rk.LSTMCell(12, use_peepholes=True, cell_clip=0.8, input_size=4, **kw),
    "projection_lstm": lambda **kw: rk.LSTMCell(12, use_peepholes=True, num_proj=7, proj_clip=0.5, input_size=4,
                                                **kw),  # only the step loop runs projections
    "tf_gru": lambda **kw: rk.GRUCell(12, input_size=4, **kw),
    "basic_rnn": lambda **kw: rk.BasicRNNCell(12, activation="softsign", input_size=4, **kw),
}


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 9, 6]])
@pytest.mark.parametrize("name", sorted(HALF_CELLS))
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "step_loop"])
def test_half_precision_triton_kernels_track_the_float32_reference(dtype: torch.dtype, lengths: Any, name: str,
                                                                   persistent: bool, monkeypatch) -> None:
    torch.manual_seed(5)
    exact = HALF_CELLS[name]().to(DEVICE)
    half = HALF_CELLS[name](dtype=dtype).to(DEVICE)
    rk.load_tf_variables(half, {name: value.detach() for name, value in rk.tf_variables(exact).items()})
    x = torch.randn(5, 6, 4, device=DEVICE).to(dtype).float()  # inputs both can represent
    init = rk.map_state(lambda z: torch.randn_like(z).to(dtype).float(), exact.zero_state(5, F32))
    reference = _run(exact, x, lengths, init, "reference")
    _on_triton(monkeypatch, persistent)
    monkeypatch.setattr(plan_layers, "half_supported", lambda *args: True)
    fused = _run(half, x.to(dtype), lengths, rk.map_state(lambda s: s.to(dtype), init), "fused")
    assert fused[0].dtype == dtype and fused[1].dtype == dtype  # outputs and the state in the inputs' dtype
    tol = dict(rtol=0.05, atol=0.05) if dtype == torch.bfloat16 else dict(rtol=0.01, atol=0.01)
    for i, (a, b) in enumerate(zip(reference, fused)):
        torch.testing.assert_close(b.float(), a, **tol, msg=lambda m, i=i: f"result {i}: {m}")


@pytest.mark.parametrize("wide", [False, True], ids=["narrow_tiles", "wide_tiles"])
def test_persistent_layout_covers_the_layer_with_resident_programs(wide: bool, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the GPU layout (the interpreter's is one program)
    monkeypatch.setattr(triton_support, "PERSISTENT_WIDE", wide)
    tiles = [(32, 16), *triton_support.WIDE_TILES] if wide else [(32, 16)]
    sizes = itertools.product([1, 5, 16, 33, 64, 256, 300, 700, 1024], [8, 100, 256, 512, 1024], [132, 114, 66])
    for batch, units, resident in sizes:
        block_rows, block_units, row_blocks, unit_blocks = triton_support.persistent_layout(batch, units, resident)
        assert row_blocks * block_rows >= batch and unit_blocks * block_units >= units
        assert (block_rows, block_units) in [(16, 16), *tiles]  # tl.dot's smallest tile up; no register spills
        if any(-(-batch // rows) * -(-units // width) <= resident for rows, width in tiles):
            assert row_blocks * unit_blocks <= resident  # some layout fits: the chosen one does
        if block_rows * block_units > 32 * 16:  # wide only where the narrow tiles do not fit
            assert -(-batch // 32) * -(-units // 16) > resident
    _, _, row_blocks, unit_blocks = triton_support.persistent_layout(256, 1024, 132)
    assert (row_blocks * unit_blocks <= 132) == wide  # B256 H1024 on an H100: only wide tiles fit


def test_persistent_schedule_tables() -> None:
    """Step sizes and first rows with a 0 sentinel, and each step's previous-state row in the
    buffer ``[initial state, every step's states]``; built once per packing, also when first
    asked for under ``inference_mode``."""
    persistent_setup._schedule.cache_clear()
    with torch.inference_mode():
        sizes, starts, previous = persistent_setup.schedule([6, 6, 4, 3, 3, 1], 6, DEVICE)
    assert sizes.tolist() == [6, 6, 4, 3, 3, 1, 0] and sizes.dtype == torch.int32
    assert starts.tolist() == [0, 6, 12, 16, 19, 22, 0]
    assert previous.tolist() == [0, 6, 12, 18, 22, 25, 0]
    assert not sizes.is_inference()
    assert persistent_setup.schedule([6, 6, 4, 3, 3, 1], 6, DEVICE)[0] is sizes  # the forward's, for backward
    assert [t.tolist() for t in persistent_setup.schedule([5], 5, DEVICE)] == [[5, 0], [0, 0], [0, 0]]


@pytest.mark.parametrize("capability, fits", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_persistent_kernels_need_an_ampere_or_newer_gpu(capability: tuple[int, int], fits: bool, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the GPU layout
    monkeypatch.setattr(triton_support, "_capability", lambda index: capability)
    monkeypatch.setattr(triton_support, "multiprocessors", lambda index: 80)
    assert triton_support.persistent_fits(torch.device("cuda", 0), 16, 256) == fits
