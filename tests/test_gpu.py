"""The reference path on a CUDA device equals the CPU (skipped without a GPU)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import rnnkit as rk

pytestmark = pytest.mark.gpu
F64 = torch.float64


@pytest.fixture(autouse=True)
def _unverified_persistent_layouts_on(monkeypatch) -> None:
    """Every GPU test also runs the persistent kernels with projections, on wide tiles and for
    BasicRNNCell (off by default until a GPU run verifies them; see ``triton_support``)."""
    from rnnkit.fused.triton import triton_support

    monkeypatch.setattr(triton_support, "PERSISTENT_PROJECTION", True)
    monkeypatch.setattr(triton_support, "PERSISTENT_WIDE", True)
    monkeypatch.setattr(triton_support, "PERSISTENT_RNN", True)


def _stack() -> rk.MultiRNNCell:
    return rk.MultiRNNCell(
        [rk.LSTMCell(8, use_peepholes=True, cell_clip=1.0, num_proj=6, input_size=5, dtype=F64),
         rk.GRUCell(7, input_size=6, dtype=F64)]
    )


def test_dynamic_rnn_on_cuda_equals_cpu_with_gradients() -> None:
    torch.manual_seed(0)
    cpu = _stack()
    gpu = _stack().cuda()
    rk.load_tf_variables(gpu, {n: p.detach() for n, p in rk.tf_variables(cpu).items()})
    x = torch.randn(4, 9, 5, dtype=F64)
    lengths = torch.tensor([9, 0, 4, 12])  # CPU lengths with CUDA inputs are fine
    results = []
    for cell, device in ((cpu, "cpu"), (gpu, "cuda")):
        xd = x.to(device).requires_grad_()
        out, state = rk.dynamic_rnn(cell, xd, sequence_length=lengths)
        assert out.device.type == device and all(s.device.type == device for s in rk.flatten_state(state))
        loss = out.square().sum() + sum(s.sum() for s in rk.flatten_state(state))
        grads = torch.autograd.grad(loss, [xd, *cell.parameters()])
        results.append([out, *rk.flatten_state(state), *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-10)


def test_zero_state_dropout_and_bidirectional_on_cuda() -> None:
    cell = rk.DropoutWrapper(rk.BasicLSTMCell(4, input_size=3), output_keep_prob=0.5, seed=1).cuda()
    state = cell.zero_state(2)
    assert state.c.device.type == "cuda"
    (fw, bw), _ = rk.bidirectional_dynamic_rnn(cell, rk.GRUCell(4).cuda(), torch.randn(2, 5, 3, device="cuda"),
                                                sequence_length=torch.tensor([5, 2], device="cuda"))
    assert fw.device.type == "cuda" and torch.equal(bw[1, 2:], torch.zeros(3, 4, device="cuda"))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fused_on_cuda_equals_the_reference(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    cell = rk.MultiRNNCell(
        [rk.LSTMCell(16, use_peepholes=True, cell_clip=1.0, num_proj=12), rk.GRUCell(12),
         rk.ResidualWrapper(rk.BasicLSTMCell(12))]
    ).to(device="cuda", dtype=dtype)
    x = torch.randn(6, 9, 5, device="cuda", dtype=dtype)
    lengths = torch.tensor([9, 0, 4, 12, 9, 1])
    results = []
    for backend in ("reference", "fused"):
        xi = x.clone().requires_grad_()
        out, state = rk.dynamic_rnn(cell, xi, sequence_length=lengths, backend=backend)
        loss = out.square().sum() + sum(s.square().sum() for s in rk.flatten_state(state))
        results.append([out, *rk.flatten_state(state), *torch.autograd.grad(loss, [xi, *cell.parameters()])])
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == F64 else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **tol)


def _results(cell: Any, x: torch.Tensor, lengths: Any, backend: str) -> list[torch.Tensor]:
    """Outputs, final state and the gradients of inputs and weights of one run."""
    xi = x.clone().requires_grad_()
    out, state = rk.dynamic_rnn(cell, xi, sequence_length=lengths, backend=backend)
    loss = out.square().sum() + sum(s.square().sum() for s in rk.flatten_state(state))
    return [out, *rk.flatten_state(state), *torch.autograd.grad(loss, [xi, *cell.parameters()])]


# each runs a different CUDA path: cuDNN, a persistent kernel, a Triton step loop
CUDA_PATHS = {
    "cudnn_lstm": (lambda: rk.BasicLSTMCell(300, forget_bias=1.0), 32),  # over 256 units: cuDNN
    "persistent_plain_lstm": (lambda: rk.BasicLSTMCell(96, forget_bias=1.0), 32),  # small: persistent is faster
    "cudnn_projection_lstm": (lambda: rk.LSTMCell(96, num_proj=48), 32),
    "cudnn_reset_after_gru": (lambda: rk.GRUCell(96, reset_after=True), 32),
    "cudnn_basic_rnn": (lambda: rk.BasicRNNCell(300), 32),  # over 256 units: cuDNN
    "persistent_tanh_basic_rnn": (lambda: rk.BasicRNNCell(200), 32),  # small: persistent is preferred
    "persistent_elu_basic_rnn": (lambda: rk.BasicRNNCell(300, activation="elu"), 48),
    "step_loop_sigmoid_basic_rnn_1040_units": (lambda: rk.BasicRNNCell(1040, activation="sigmoid"), 8),
    "persistent_peephole_lstm": (lambda: rk.LSTMCell(200, use_peepholes=True, cell_clip=2.0), 48),
    "persistent_tf_gru": (lambda: rk.GRUCell(300), 40),
    "persistent_peephole_lstm_batch_256": (lambda: rk.LSTMCell(128, use_peepholes=True, cell_clip=2.0), 256),
    "persistent_projection_peephole_lstm": (lambda: rk.LSTMCell(64, use_peepholes=True, num_proj=32, proj_clip=1.0),
                                            100),
    "persistent_wide_tiles_peephole_lstm": (lambda: rk.LSTMCell(1024, use_peepholes=True, cell_clip=2.0), 256),
    "step_loop_projection_peephole_lstm_1040_units": (lambda: rk.LSTMCell(1040, use_peepholes=True, num_proj=256),
                                                      8),  # over 1024 units: no persistent kernel
    "persistent_wide_tiles_tf_gru": (lambda: rk.GRUCell(512), 300),  # 32-row tiles make too many programs
    "step_loop_relu_gru_1040_units": (lambda: rk.GRUCell(1040, activation="relu"), 20),
    "persistent_softsign_lstm": (lambda: rk.LSTMCell(100, use_peepholes=True, activation="softsign"), 24),
}


def _assert_as_accurate_as_the_float32_reference(name: str, lengths: bool) -> None:
    """Every result within a few times the float32 reference's own distance from float64, or
    2e-5 of its scale (cuDNN's small-hidden algorithms measured 5e-6 here)."""
    torch.manual_seed(2)
    make, batch = CUDA_PATHS[name]
    cell = make().cuda()
    x = torch.randn(batch, 30, 40, device="cuda")
    seq = torch.randint(0, 35, (batch,)) if lengths else None
    reference, fused = (_results(cell, x, seq, backend) for backend in ("reference", "fused"))
    exact = _results(copy.deepcopy(cell).double(), x.double(), seq, "reference")
    for i, (r, f, e) in enumerate(zip(reference, fused, exact)):
        reference_error = (r.double() - e).abs().max().item()
        fused_error = (f.double() - e).abs().max().item()
        allowed = 4 * reference_error + 2e-5 * (1 + e.abs().max().item())
        assert fused_error <= allowed, f"result {i}: fused {fused_error:.2e} vs reference {reference_error:.2e}"


@pytest.mark.parametrize("name", sorted(CUDA_PATHS))
@pytest.mark.parametrize("lengths", [False, True])
def test_every_cuda_path_is_as_accurate_as_the_float32_reference(name: str, lengths: bool, monkeypatch) -> None:
    """Also checks the TF32 rule: cuDNN's default (TF32 on, set here) would be 1e-4 of the
    scale off."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    _assert_as_accurate_as_the_float32_reference(name, lengths)


@pytest.mark.parametrize("name", sorted(n for n in CUDA_PATHS if n.startswith("persistent")))
def test_persistent_kernels_with_3xtf32_products_keep_float32_accuracy(name: str, monkeypatch) -> None:
    """The ``tf32x3`` tuning (three TF32 tensor-core products of split operands, streamed
    weights only) is as accurate."""
    from rnnkit.fused.triton import persistent_setup

    monkeypatch.setattr(persistent_setup.TUNING, "strict_float32_dot", "tf32x3")
    monkeypatch.setattr(persistent_setup.TUNING, "resident_max_depth", 0)
    _assert_as_accurate_as_the_float32_reference(name, lengths=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["cudnn_lstm", "cudnn_reset_after_gru", "cudnn_basic_rnn", "persistent_peephole_lstm",
                                  "persistent_tf_gru", "persistent_projection_peephole_lstm",
                                  "persistent_wide_tiles_tf_gru", "persistent_elu_basic_rnn",
                                  "step_loop_projection_peephole_lstm_1040_units", "step_loop_relu_gru_1040_units",
                                  "step_loop_sigmoid_basic_rnn_1040_units"])
def test_half_precision_cuda_paths_track_float32(dtype: torch.dtype, name: str) -> None:
    torch.manual_seed(3)
    make, batch = CUDA_PATHS[name]
    exact, half = make().cuda(), make().to(device="cuda", dtype=dtype)
    exact(torch.zeros(1, 40, device="cuda"), exact.zero_state(1, torch.float32))
    rk.load_tf_variables(half, {n: v.detach() for n, v in rk.tf_variables(exact).items()})
    x = torch.randn(batch, 30, 40, device="cuda").to(dtype)
    lengths = torch.randint(0, 35, (batch,))
    out, state = rk.dynamic_rnn(half, x, sequence_length=lengths, backend="fused")
    expected, expected_state = rk.dynamic_rnn(exact, x.float(), sequence_length=lengths, backend="reference")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    for s, e in zip(rk.flatten_state(state), rk.flatten_state(expected_state)):
        torch.testing.assert_close(s.float(), e, rtol=0.05, atol=0.05)
    grad = torch.autograd.grad(out.float().sum(), half.kernel if hasattr(half, "kernel") else half.gates["kernel"])
    assert grad[0].dtype == dtype and bool(torch.isfinite(grad[0].float()).all())


EXPECTED_PATH = {
    "cudnn_lstm": "cudnn", "cudnn_projection_lstm": "cudnn", "cudnn_reset_after_gru": "cudnn", "cudnn_basic_rnn": "cudnn",
    "persistent_plain_lstm": "persistent", "persistent_peephole_lstm": "persistent", "persistent_tf_gru": "persistent",
    "persistent_peephole_lstm_batch_256": "persistent",
    "persistent_projection_peephole_lstm": "persistent", "persistent_wide_tiles_peephole_lstm": "persistent",
    "persistent_wide_tiles_tf_gru": "persistent", "persistent_softsign_lstm": "persistent",
    "persistent_tanh_basic_rnn": "persistent", "persistent_elu_basic_rnn": "persistent",
    "step_loop_projection_peephole_lstm_1040_units": "step_loop", "step_loop_relu_gru_1040_units": "step_loop",
    "step_loop_sigmoid_basic_rnn_1040_units": "step_loop",
}


@pytest.mark.parametrize("name", sorted(CUDA_PATHS))
def test_dispatch_takes_the_documented_cuda_path(name: str, monkeypatch) -> None:
    from rnnkit.fused import plan_layers
    from rnnkit.fused.triton import persistent_gru, persistent_lstm, persistent_rnn, triton_pointwise

    taken = []

    def spy(module: Any, attribute: str, path: str) -> None:
        original = getattr(module, attribute)
        monkeypatch.setattr(module, attribute, lambda *a, **k: (taken.append(path), original(*a, **k))[1])

    spy(plan_layers, "torch_lstm_layer", "cudnn")
    spy(plan_layers, "torch_gru_layer", "cudnn")
    spy(plan_layers, "torch_rnn_layer", "cudnn")
    for module in (persistent_lstm, persistent_gru, persistent_rnn):
        spy(module, "forward_steps_persistent", "persistent")
    for attribute in ("forward_pointwise_triton", "gates_forward_triton", "rnn_forward_triton"):
        spy(triton_pointwise, attribute, "step_loop")
    make, batch = CUDA_PATHS[name]
    rk.dynamic_rnn(make().cuda(), torch.randn(batch, 4, 40, device="cuda"))
    assert set(taken) == {EXPECTED_PATH[name]}
