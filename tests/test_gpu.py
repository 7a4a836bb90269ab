"""The reference path on a CUDA device equals the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import rnnkit as rk

pytestmark = pytest.mark.gpu
F64 = torch.float64


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
