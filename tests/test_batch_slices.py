"""The compiled step loops split the batch into slices, one thread each (batch_slices.h): with
two and three threads, every loop (LSTM with peepholes, clipping and projection, TF's GRU,
BasicRNNCell, both layer-norm LSTMs) equals the reference, forward and every gradient, with
sequences of every length (0 included) so that slices lose rows unevenly; and the split is taken
(counted), not skipped."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import rnnkit as rk
from rnnkit.contrib.layer_norm_cells import LayerNormBasicLSTMCell, LayerNormLSTMCell
from rnnkit.fused import basic_rnn as fused_basic_rnn
from rnnkit.fused import gru as fused_gru
from rnnkit.fused import layer_norm_lstm as fused_layer_norm_lstm
from rnnkit.fused import lstm as fused_lstm
from tests.loop_counting import counting_loops

BATCH, STEPS, DEPTH = 13, 6, 5
LENGTHS = [6, 0, 3, 6, 1, 5, 2, 6, 4, 0, 6, 3, 2]
CELLS = {
    "lstm_peepholes_clips_projection": lambda: rk.LSTMCell(
        7, use_peepholes=True, cell_clip=0.4, num_proj=4, proj_clip=0.3, input_size=DEPTH, dtype=torch.float64
    ),
    "lstm_hard_sigmoid": lambda: rk.LSTMCell(
        6, use_peepholes=True, gate_activation="hard_sigmoid", input_size=DEPTH, dtype=torch.float64
    ),
    "tf_gru": lambda: rk.GRUCell(6, input_size=DEPTH, dtype=torch.float64),
    "basic_rnn_elu": lambda: rk.BasicRNNCell(6, activation="elu", input_size=DEPTH, dtype=torch.float64),
    "layer_norm_basic_lstm": lambda: LayerNormBasicLSTMCell(6, input_size=DEPTH, dtype=torch.float64),
    "layer_norm_lstm_peepholes_projection": lambda: LayerNormLSTMCell(
        7, use_peepholes=True, cell_clip=0.5, num_proj=4, proj_clip=0.6, layer_norm=True, input_size=DEPTH,
        dtype=torch.float64,
    ),
}


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _run(cell, x: torch.Tensor, backend: str, lengths: list[int] | None = LENGTHS) -> list[torch.Tensor]:
    xi = x.clone().requires_grad_()
    out, state = rk.dynamic_rnn(cell, xi, sequence_length=lengths, backend=backend)
    states = list(state) if isinstance(state, tuple) else [state]
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + sum(s.square().sum() for s in states)
    grads = torch.autograd.grad(loss, [xi, *cell.parameters()], allow_unused=True)  # LN-LSTM: no bias used
    return [t.detach() for t in (out, *states, *grads) if t is not None]


@pytest.mark.parametrize("threads", [2, 3], indirect=True)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_split_batch_equals_the_reference(compiled, threads, name, monkeypatch) -> None:
    calls: Counter = Counter()
    counting = counting_loops(compiled, calls)
    for module in (fused_lstm, fused_gru, fused_basic_rnn, fused_layer_norm_lstm):
        monkeypatch.setattr(module, "kernels", lambda: counting)
    torch.manual_seed(11)
    cell = CELLS[name]()
    x = torch.randn(BATCH, STEPS, DEPTH, dtype=torch.float64)
    expected = _run(cell, x, "reference")
    actual = _run(cell, x, "fused")
    assert sum(count for loop, count in calls.items() if loop.endswith("forward_steps")) == 1, calls
    assert sum(count for loop, count in calls.items() if loop.endswith("backward_steps")) == 1, calls
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("threads", [2, 3], indirect=True)
def test_the_split_is_taken_for_small_weights_and_enough_rows(compiled, threads, monkeypatch) -> None:
    small, large = 64 * 1024, 4 * 1024 * 1024
    assert compiled.batch_slice_count(BATCH, small) == threads  # 13 rows: 4 or more per thread
    assert compiled.batch_slice_count(8, small) == 2  # at least 4 rows a slice
    assert compiled.batch_slice_count(7, small) == 1
    assert compiled.batch_slice_count(BATCH, large) == 1  # every thread would stream the weights
    monkeypatch.setenv("RNNKIT_BATCH_SLICES", "0")
    assert compiled.batch_slice_count(BATCH, small) == 1


FLOAT32_STEPS = 24  # a slice of 6 rows has 144 rows of products: MKL's packed GEMM (from 128, packed_gemm.h)


@pytest.mark.parametrize("lengths", [[4 * n for n in LENGTHS], None], ids=["lengths", "full"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_split_and_unsplit_loops_in_float32(compiled, name, lengths, monkeypatch) -> None:
    """Float32 (where the recurrent products are MKL's packed GEMM on the slices' strided rows,
    forward on the weights and backward on their transposed views; without lengths at every
    step), split and not, against the same float64 reference: within 200 eps32 * max|exact|.
    That is about 8 sqrt(K T) (K = 12 summed products a step, T = 24 steps: test_native's bound
    for a chain of GEMMs) with room for the layer norms' backward; the largest error measured
    is 33."""
    torch.manual_seed(12)
    cell64 = CELLS[name]()
    x = torch.randn(BATCH, FLOAT32_STEPS, DEPTH, dtype=torch.float64)
    expected = _run(cell64, x, "reference", lengths)
    cell32 = CELLS[name]().float()
    cell32.load_state_dict({key: value.float() for key, value in cell64.state_dict().items()})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for flag in ("1", "0"):
            monkeypatch.setenv("RNNKIT_BATCH_SLICES", flag)
            actual = _run(cell32, x.float(), "fused", lengths)
            for a, b in zip(actual, expected, strict=True):
                error, scale = float((a.double() - b).abs().max()), float(b.abs().max())
                assert error <= 200 * torch.finfo(torch.float32).eps * scale, (flag, error / scale)
    finally:
        torch.set_num_threads(before)
