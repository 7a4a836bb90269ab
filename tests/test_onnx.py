"""ONNX export: onnxruntime runs the exported graph and agrees with dynamic_rnn."""

from __future__ import annotations

import numpy as np
import onnxruntime  # the rnnkit[onnx] extra; the test extra installs it
import pytest
import torch

import rnnkit as rk
from rnnkit.interop.onnx_export import export_onnx

CELLS = {
    "basic_lstm": lambda: rk.BasicLSTMCell(4, forget_bias=0.7),
    "peephole_lstm": lambda: rk.LSTMCell(4, use_peepholes=True),
    "tf_gru": lambda: rk.GRUCell(4),
    "reset_after_gru": lambda: rk.GRUCell(4, reset_after=True),
    "stack": lambda: rk.MultiRNNCell([rk.LSTMCell(5, use_peepholes=True), rk.GRUCell(4), rk.BasicLSTMCell(3)]),
}


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_onnxruntime_agrees_with_dynamic_rnn(tmp_path, name, time_major) -> None:
    torch.manual_seed(0)
    cell = CELLS[name]()
    cell(torch.zeros(1, 3), cell.zero_state(1))  # build
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    export_onnx(cell, tmp_path / "rnn.onnx", time_major=time_major)
    lengths = torch.tensor([6, 0, 3, 6, 1])
    x = torch.randn(6, 5, 3) if time_major else torch.randn(5, 6, 3)
    expected, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, time_major=time_major)
    session = onnxruntime.InferenceSession(str(tmp_path / "rnn.onnx"))
    results = session.run(None, {"inputs": x.numpy(), "sequence_length": lengths.numpy()})
    np.testing.assert_allclose(results[0], expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    last = state[-1] if isinstance(cell, rk.MultiRNNCell) else state
    final_h = last.h if isinstance(last, rk.LSTMStateTuple) else last
    np.testing.assert_allclose(results[1], final_h.detach().numpy(), rtol=1e-5, atol=1e-5)
    if isinstance(last, rk.LSTMStateTuple):
        np.testing.assert_allclose(results[2], last.c.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cell, message",
    [
        (rk.LSTMCell(3, cell_clip=1.0, input_size=2), "no cell clipping"),
        (rk.LSTMCell(3, num_proj=2, input_size=2), "no projection"),
        (rk.BasicRNNCell(3, input_size=2), "no native ONNX node"),
        (rk.GRUCell(3, activation="relu", input_size=2), "only tanh"),
        (rk.BasicLSTMCell(3), "not built"),
    ],
)
def test_what_onnx_cannot_express_is_refused(tmp_path, cell, message) -> None:
    with pytest.raises(ValueError, match=message):
        export_onnx(cell, tmp_path / "x.onnx")
