"""The CPU inference loop (lstm_inference.py, lstm_inference.cpp): where no gradient can follow,
every row runs every step and every layer is an LSTM without projection or wrappers, the fused
path runs it (counted), and it equals the reference cell by cell option, layout, batch size
(one row: parts of the units; small weights: slices of the batch; else all rows), dtype,
strided inputs and chunked input products; everywhere else it is not taken. Also the parts of
the units (unit_parts.h) in the training loop, and the activations at extreme inputs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import rnnkit as rk
from rnnkit.contrib.block_cells import LSTMBlockCell
from rnnkit.fused import lstm as fused_lstm
from rnnkit.fused import lstm_inference as fused_inference
from tests.loop_counting import counting_loops

STEPS, DEPTH = 7, 5
PART_STEPS = 130  # a one-row call splits its units from 128 steps on (unit_parts.h: kMinPartSteps)
CELLS = {
    "basic": lambda units, dtype: rk.BasicLSTMCell(units, forget_bias=0.7, input_size=DEPTH, dtype=dtype),
    "peepholes_clip": lambda units, dtype: rk.LSTMCell(
        units, use_peepholes=True, cell_clip=0.3, input_size=DEPTH, dtype=dtype
    ),
    "hard_sigmoid_no_bias_relu": lambda units, dtype: rk.LSTMCell(
        units, gate_activation="hard_sigmoid", use_bias=False, activation="relu", input_size=DEPTH, dtype=dtype
    ),
    "block_cell_clip": lambda units, dtype: LSTMBlockCell(units, cell_clip=0.4, use_peephole=True, dtype=dtype),
    "concatenated_state": lambda units, dtype: rk.BasicLSTMCell(
        units, state_is_tuple=False, input_size=DEPTH, dtype=dtype
    ),
}
# (batch, units, steps): one row on parts of the units (2 threads: 128 units split) and, in a short
# call, on all of them; a few rows on all rows; 16 rows of small weights on slices of the batch
SHAPES = [(1, 128, PART_STEPS), (1, 128, STEPS), (3, 24, STEPS), (16, 8, STEPS)]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def calls(compiled, monkeypatch) -> Counter:
    """Counts of the compiled step loops the fused path calls."""
    counts: Counter = Counter()
    counting = counting_loops(compiled, counts)
    monkeypatch.setattr(fused_inference, "kernels", lambda: counting)
    monkeypatch.setattr(fused_lstm, "kernels", lambda: counting)
    return counts


def _initial_state(cell, batch: int, dtype: torch.dtype):
    h = torch.randn(batch, cell.output_size, dtype=dtype)
    c = torch.randn(batch, cell.num_units, dtype=dtype)
    return rk.LSTMStateTuple(c, h) if cell.state_is_tuple else torch.cat([c, h], 1)


def _both(cell, x: torch.Tensor, state, time_major: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    with torch.no_grad():
        expected = rk.dynamic_rnn(cell, x, initial_state=state, time_major=time_major, backend="reference")
        actual = rk.dynamic_rnn(cell, x, initial_state=state, time_major=time_major, backend="fused")
    flat = [[out, *(s if isinstance(s, tuple) else (s,))] for out, s in (actual, expected)]
    return flat[0], flat[1]


def _float32_tolerance(steps: int) -> dict[str, float]:
    """float32 error grows about linearly with the steps through c (a few ulp per step)."""
    eps = torch.finfo(torch.float32).eps
    return {"rtol": 8 * steps * eps, "atol": 8 * steps * eps}


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_inference_equals_the_reference(calls, name, shape, time_major) -> None:
    batch, units, steps = shape
    torch.manual_seed(3)
    cell = CELLS[name](units, torch.float64)
    x = torch.randn(steps, batch, DEPTH, dtype=torch.float64)
    x = x if time_major else x.transpose(0, 1).contiguous()
    actual, expected = _both(cell, x, _initial_state(cell, batch, torch.float64), time_major)
    assert calls == Counter(lstm_inference_steps=1)
    assert actual[0].is_contiguous()
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


# float32 also runs MKL's packed GEMM, from 128 rows of products on (packed_gemm.h): the last two
# shapes (3 x 40 = 120 rows: plain; 16 x 40: packed)
FLOAT32_SHAPES = [(1, 128, PART_STEPS), (1, 128, 40), (3, 24, 40), (16, 8, 40)]


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("shape", FLOAT32_SHAPES)
def test_float32_inference_equals_the_reference(calls, shape) -> None:
    batch, units, steps = shape
    torch.manual_seed(4)
    cell = rk.LSTMCell(units, use_peepholes=True, cell_clip=2.0, input_size=DEPTH)
    x = torch.randn(batch, steps, DEPTH)
    actual, expected = _both(cell, x, None, False)
    assert calls == Counter(lstm_inference_steps=1)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **_float32_tolerance(steps))


def test_stacks_run_layer_after_layer(calls) -> None:
    torch.manual_seed(5)
    cell = rk.MultiRNNCell([rk.LSTMCell(6, use_peepholes=True, dtype=torch.float64),
                            rk.BasicLSTMCell(4, dtype=torch.float64)])
    x = torch.randn(3, STEPS, DEPTH, dtype=torch.float64)
    state = tuple(rk.LSTMStateTuple(torch.randn(3, n, dtype=torch.float64), torch.randn(3, n, dtype=torch.float64))
                  for n in (6, 4))
    with torch.no_grad():
        expected_out, expected_state = rk.dynamic_rnn(cell, x, initial_state=state, backend="reference")
        out, final = rk.dynamic_rnn(cell, x, initial_state=state, backend="fused")
    assert calls == Counter(lstm_inference_steps=2)
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-12)
    for a, e in zip([t for s in final for t in s], [t for s in expected_state for t in s], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_weights_of_any_strides(calls) -> None:
    """The loop reads the kernel and bias where they are (TF's gate order); weights stored
    transposed or strided (as a user may assign them) are read as their values, not their memory."""
    torch.manual_seed(6)
    cell = rk.BasicLSTMCell(8, forget_bias=0.3, input_size=DEPTH, dtype=torch.float64)
    with torch.no_grad():
        cell.kernel.data = cell.kernel.data.t().contiguous().t()  # column-major [D + U, 4U]
        cell.bias.data = torch.randn(2 * cell.bias.numel(), dtype=torch.float64)[::2]  # stride 2
    assert not cell.kernel.is_contiguous() and not cell.bias.is_contiguous()
    x = torch.randn(3, STEPS, DEPTH, dtype=torch.float64)
    actual, expected = _both(cell, x, None, False)
    assert calls == Counter(lstm_inference_steps=1)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False])
def test_training_loops_read_weights_of_any_strides(calls, use_bias) -> None:
    """The training loops read TF's kernel and bias as they are too (forget_bias added in the
    step, the gate gradients in TF's blocks): forward and every gradient equal the reference's,
    with peepholes, clipping and rows ending early, on weights stored transposed or strided."""
    torch.manual_seed(7)
    cell = rk.LSTMCell(8, use_peepholes=True, cell_clip=0.6, forget_bias=0.3, use_bias=use_bias, input_size=DEPTH,
                       dtype=torch.float64)
    with torch.no_grad():
        cell.kernel.data = cell.kernel.data.t().contiguous().t()  # column-major [D + U, 4U]
        if use_bias:
            cell.bias.data = torch.randn(2 * cell.bias.numel(), dtype=torch.float64)[::2]  # stride 2
    x = torch.randn(3, STEPS, DEPTH, dtype=torch.float64)
    results = []
    for backend in ("reference", "fused"):
        xi = x.clone().requires_grad_()
        out, state = rk.dynamic_rnn(cell, xi, sequence_length=[STEPS, 2, 5], backend=backend)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + state.c.sum()
        results.append([out, *state, *torch.autograd.grad(loss, [xi, *cell.parameters()])])
    assert calls == Counter(lstm_forward_steps=1, lstm_backward_steps=1)
    for a, e in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("max_gate_bytes", [1, 3 * 4 * 24 * 8, 1 << 30])  # 1, 3 and all 7 steps a chunk
@pytest.mark.parametrize("layout", ["batch_major", "time_major", "strided_steps"])
def test_chunked_and_strided_inputs(compiled, layout, max_gate_bytes) -> None:
    """Input products a step, a few steps or all steps at a time, over dense and strided inputs;
    the outputs into a strided view."""
    torch.manual_seed(6)
    batch, units = 4, 6
    cell = rk.LSTMCell(units, use_peepholes=True, input_size=DEPTH, dtype=torch.float64)
    full = torch.randn(batch, 2 * STEPS, DEPTH, dtype=torch.float64)
    x = {"batch_major": full[:, :STEPS], "time_major": full[:, :STEPS].transpose(0, 1).contiguous().transpose(0, 1),
         "strided_steps": full[:, ::2]}[layout]
    h0, c0 = (torch.randn(batch, units, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        expected, state = rk.dynamic_rnn(cell, x, initial_state=rk.LSTMStateTuple(c0, h0), backend="reference")
        out = torch.full((batch, STEPS, units), float("nan"), dtype=torch.float64)
        h, c = fused_inference.lstm_layer_inference(cell, x.transpose(0, 1), h0, c0, out.transpose(0, 1), "tanh",
                                                    "sigmoid", max_gate_bytes)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, state.h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, state.c, rtol=1e-10, atol=1e-12)


def _fallbacks():
    lstm = lambda: rk.BasicLSTMCell(6, input_size=DEPTH)  # noqa: E731
    dropout = rk.DropoutWrapper(lstm(), output_keep_prob=0.5, seed=1)
    return {
        "variable_lengths": (lstm(), {"sequence_length": [STEPS, 2, STEPS]}),
        "projection": (rk.LSTMCell(6, num_proj=3, input_size=DEPTH), {}),
        "dropout_wrapper": (dropout, {}),
        "residual_wrapper": (rk.ResidualWrapper(rk.BasicLSTMCell(DEPTH, input_size=DEPTH)), {}),
        "gru_layer": (rk.MultiRNNCell([lstm(), rk.GRUCell(4)]), {}),
    }


@pytest.mark.parametrize("name", sorted(_fallbacks()))
def test_not_taken_where_it_does_not_apply(calls, name) -> None:
    cell, kwargs = _fallbacks()[name]
    x = torch.randn(3, STEPS, DEPTH)
    with torch.no_grad():
        rk.dynamic_rnn(cell, x, backend="fused", **kwargs)
    assert calls["lstm_inference_steps"] == 0, calls


def test_taken_exactly_where_no_gradient_can_follow(calls) -> None:
    cell = rk.BasicLSTMCell(6, input_size=DEPTH)
    x = torch.randn(3, STEPS, DEPTH)
    rk.dynamic_rnn(cell, x, backend="fused")  # the weights require gradients
    assert calls["lstm_inference_steps"] == 0
    rk.dynamic_rnn(cell, x.requires_grad_(), backend="fused")
    assert calls["lstm_inference_steps"] == 0
    cell.requires_grad_(False)
    out, _ = rk.dynamic_rnn(cell, x.detach(), backend="fused")  # grad mode on, nothing requires a gradient
    assert calls["lstm_inference_steps"] == 1 and not out.requires_grad
    with torch.inference_mode():
        rk.dynamic_rnn(cell, x.detach(), backend="fused")
    assert calls["lstm_inference_steps"] == 2


@pytest.mark.usefixtures("two_threads")
def test_extreme_inputs_and_nan_propagate_as_in_the_reference(calls) -> None:
    torch.manual_seed(7)
    cell = rk.LSTMCell(128, use_peepholes=True, input_size=DEPTH)
    x = torch.randn(3, PART_STEPS, DEPTH) * torch.tensor([1e-3, 1.0, 30.0, 1e4, 1e30]).view(1, 1, DEPTH)
    x[1, 3, 2] = float("nan")
    x[2, 1, 0] = float("inf")
    for batch in (slice(0, 3), slice(1, 2)):  # all rows, and one row on parts of the units
        actual, expected = _both(cell, x[batch], None, False)
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e, equal_nan=True, **_float32_tolerance(PART_STEPS))
    assert calls["lstm_inference_steps"] == 2


@pytest.mark.parametrize("threads", [2, 3])
def test_unit_parts_are_taken_for_one_row_of_middle_sized_weights(compiled, threads, monkeypatch) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        widths = compiled.unit_part_widths(1, 128, 256, 1 << 20)
        assert len(widths) == threads and sum(widths) == 256 and all(w % 8 == 0 for w in widths)
        assert compiled.unit_part_widths(1, 128, 200, 1 << 20)[-1] >= 8  # the last part takes the rest
        assert len(compiled.unit_part_widths(1, 127, 256, 1 << 20)) == 1  # too few steps to pay for the setup
        assert len(compiled.unit_part_widths(2, 128, 256, 1 << 20)) == 1  # two rows: MKL's threads pay
        assert len(compiled.unit_part_widths(1, 128, 64, 1 << 16)) == 1  # too few units per thread
        assert len(compiled.unit_part_widths(1, 128, 1024, 16 << 20)) == 1  # the weights stream anyway
        monkeypatch.setenv("RNNKIT_UNIT_PARTS", "0")
        assert len(compiled.unit_part_widths(1, 128, 256, 1 << 20)) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [2, 3])
def test_training_forward_on_unit_parts_equals_the_reference(compiled, calls, threads) -> None:
    """One row: the training loop's forward on parts of the units; forward and every gradient."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(8)
        cell = rk.LSTMCell(192, use_peepholes=True, cell_clip=0.5, input_size=DEPTH, dtype=torch.float64)
        assert len(compiled.unit_part_widths(1, PART_STEPS, 192, 192 * 4 * 192 * 8)) == threads
        x = torch.randn(1, PART_STEPS, DEPTH, dtype=torch.float64)
        results = []
        for backend in ("reference", "fused"):
            xi = x.clone().requires_grad_()
            out, state = rk.dynamic_rnn(cell, xi, backend=backend)
            loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + state.c.sum()
            results.append([out, *state, *torch.autograd.grad(loss, [xi, *cell.parameters()])])
        assert calls["lstm_forward_steps"] == 1 and calls["lstm_backward_steps"] == 1
        for a, e in zip(results[1], results[0], strict=True):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_num_threads(before)

