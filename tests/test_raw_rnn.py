"""``raw_rnn`` and ``static_state_saving_rnn`` (TF 1.15's ``tensorflow/python/ops/rnn.py``)
against the numpy transcriptions in ``contrib_reference/runners.py`` (float64, forward and
gradients), TF's own test cases, ``InMemoryStateSaver``, and the argument errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.raw_rnn import raw_rnn
from rnnkit.state_saving_rnn import InMemoryStateSaver, static_state_saving_rnn
from tests.contrib_reference import runners as ref
from tests.contrib_reference.numeric import numeric_gradients, weighted_sum

F64 = torch.float64
D, B, U = 3, 3, 3
SCOPE = "rnn/lstm_cell"


def _lstm_arrays(rng: np.random.Generator, depth: int = D, units: int = U) -> dict[str, np.ndarray]:
    return {
        f"{SCOPE}/kernel": rng.uniform(-0.6, 0.6, (depth + units, 4 * units)),
        f"{SCOPE}/bias": rng.uniform(-0.3, 0.3, (4 * units,)),
    }


def _lstm(arrays: dict[str, np.ndarray]) -> rk.LSTMCell:
    cell = rk.LSTMCell(U, dtype=F64)  # lazy: built from the arrays' shapes
    rk.load_tf_variables(cell, {k: v for k, v in arrays.items() if k.startswith("rnn/")})
    return cell


def _dynamic_loop_fn(cell: Any, inputs: torch.Tensor, lengths: torch.Tensor):
    """TF's docstring example: ``dynamic_rnn`` as a ``loop_fn`` (inputs time-major)."""

    def loop_fn(time, cell_output, cell_state, loop_state):
        state = cell.zero_state(inputs.shape[1], inputs.dtype) if cell_output is None else cell_state
        finished = time >= lengths
        next_input = inputs.new_zeros(inputs.shape[1:]) if bool(finished.all()) else inputs[time]
        return finished, next_input, state, cell_output, None

    return loop_fn


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("max_time", [0, 4])
def test_raw_rnn_equals_dynamic_rnn(kind: str, max_time: int) -> None:
    # TF's RawRNNTest._testRawRNN: with the longest length = max_time, raw_rnn is dynamic_rnn
    torch.manual_seed(0)
    cell = rk.LSTMCell(3, input_size=4, dtype=F64) if kind == "lstm" else rk.GRUCell(3, input_size=4, dtype=F64)
    inputs = torch.randn(max_time, 5, 4, dtype=F64, requires_grad=True)
    lengths = torch.tensor([max_time, 0, 2, 1, 3]).clamp(max=max_time)
    emit, state, loop_state = raw_rnn(cell, _dynamic_loop_fn(cell, inputs, lengths))
    outputs, expected_state = rk.dynamic_rnn(cell, inputs, sequence_length=lengths, time_major=True)
    assert loop_state is None and emit.shape == (max_time, 5, 3)
    torch.testing.assert_close(emit, outputs, rtol=0, atol=1e-14)
    for a, b in zip(rk.flatten_state(state), rk.flatten_state(expected_state)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    if max_time:
        ours = torch.autograd.grad(
            emit.sum() + sum(s.sum() for s in rk.flatten_state(state)), [inputs, *cell.parameters()]
        )
        theirs = torch.autograd.grad(
            outputs.sum() + sum(s.sum() for s in rk.flatten_state(expected_state)), [inputs, *cell.parameters()]
        )
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def _decoder_loop_fn(xp: Any, arrays: dict, lengths: Any):
    """A decoder-like ``loop_fn`` written once for numpy (``xp=np``) and torch: it feeds back
    ``tanh(output) + inputs[t]``, shrinks the state it hands back (``c * 0.9``), accumulates a
    loop state and finishes rows at different times."""
    where, tanh = (np.where, np.tanh) if xp is np else (torch.where, torch.tanh)

    def loop_fn(time, cell_output, cell_state, loop_state):
        finished = time >= lengths
        if cell_output is None:
            state = (arrays["c0"], arrays["h0"])
            return finished, arrays["x0"], state, None, arrays["acc0"]
        c, h = cell_state
        next_state = (c * 0.9, h)
        step_input = arrays["inputs"][min(time, arrays["inputs"].shape[0] - 1)]
        next_input = tanh(cell_output) + step_input
        all_done = bool(finished.all()) if xp is np else bool(finished.all().item())
        if all_done:
            next_input = next_input * 0
        acc = loop_state + (cell_output * cell_output).sum(1)
        return finished, next_input, next_state, cell_output * where(finished[:, None], 2.0, 1.0), acc

    return loop_fn


def test_raw_rnn_matches_reference_forward_and_gradients() -> None:
    rng = np.random.default_rng(7)
    arrays = _lstm_arrays(rng)
    arrays.update(
        x0=rng.standard_normal((B, D)),
        inputs=rng.standard_normal((4, B, D)),
        c0=rng.standard_normal((B, U)) * 0.5,
        h0=rng.standard_normal((B, U)) * 0.5,
        acc0=rng.standard_normal(B),
    )
    lengths = np.array([3, 1, 4])
    step = ref.basic_lstm(SCOPE)

    def reference(a: dict) -> list[np.ndarray]:
        emit, (c, h), acc = ref.raw_rnn(step, a, _decoder_loop_fn(np, a, lengths), [U])
        return [emit, c, h, acc]

    expected = reference(arrays)
    assert expected[0].shape == (4, B, U)
    weights = [rng.standard_normal(e.shape) for e in expected]

    cell = _lstm(arrays)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items() if not k.startswith("rnn/")}
    emit, (c, h), acc = raw_rnn(cell, _decoder_loop_fn(torch, leaves, torch.from_numpy(lengths)))
    got = [emit, c, h, acc]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.detach().numpy(), e, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(emit[1:, 1]) == 0 and torch.count_nonzero(emit[3, 0]) == 0  # finished rows
    sum((g * torch.from_numpy(w)).sum() for g, w in zip(got, weights)).backward()
    numeric = numeric_gradients(lambda a: weighted_sum(reference(a), weights), arrays)
    variables = rk.tf_variables(cell, "rnn")
    for name, grad in numeric.items():
        tensor = variables[name] if name in variables else leaves[name]
        np.testing.assert_allclose(tensor.grad.numpy(), grad, rtol=1e-7, atol=1e-9, err_msg=name)


def test_finished_rows_keep_their_state_whatever_loop_fn_returns() -> None:
    cell = rk.GRUCell(2, input_size=2, dtype=F64)
    h0 = torch.randn(2, 2, dtype=F64)
    finish_at = torch.tensor([1, 3])
    seen = []

    def loop_fn(time, cell_output, cell_state, loop_state):
        seen.append(time)
        if cell_output is None:
            return torch.tensor([False, False]), torch.ones(2, 2, dtype=F64), h0, None, None
        return time >= finish_at, torch.ones(2, 2, dtype=F64), cell_state + 100, cell_output, None

    emit, state, _ = raw_rnn(cell, loop_fn)
    assert seen == [0, 1, 2, 3] and emit.shape == (3, 2, 2)
    expected_h0 = cell(torch.ones(2, 2, dtype=F64), h0)[0][0] + 100  # row 0: one step, then kept
    torch.testing.assert_close(state[0], expected_h0)
    assert torch.count_nonzero(emit[1:, 0]) == 0 and torch.count_nonzero(emit[:, 1]) == 6


def test_emit_structure_different_from_cell_output() -> None:
    # TF's testEmitDifferentStructureThanCellOutput: per-row templates (no batch dim), other dtypes
    cell = rk.LSTMCell(3, input_size=4)

    def loop_fn(time, cell_output, cell_state, _):
        finished = torch.full((5,), time >= 6)
        finished[0] = time >= 2
        if cell_output is None:
            emit = (torch.zeros(2, 3, dtype=torch.int32), torch.zeros(1, dtype=torch.int64))
            return finished, torch.randn(5, 4), cell.zero_state(5, torch.float32), emit, None
        emit = (torch.ones(5, 2, 3, dtype=torch.int32), torch.ones(5, 1, dtype=torch.int64))
        return finished, torch.randn(5, 4), cell_state, emit, None

    (ints, longs), _, _ = raw_rnn(cell, loop_fn)
    assert ints.dtype == torch.int32 and ints.shape == (6, 5, 2, 3)
    assert longs.dtype == torch.int64 and longs.shape == (6, 5, 1)
    assert ints[:2].eq(1).all() and ints[2:, 0].eq(0).all() and ints[:, 1:].eq(1).all()


def test_loop_state_counter_and_list() -> None:
    # TF's testLoopState and testLoopStateWithTensorArray (a Python list in place of the TensorArray)
    cell = rk.LSTMCell(3, input_size=4)
    inputs = torch.randn(10, 16, 4)

    def counter(time, cell_output, cell_state, loop_state):
        if cell_output is None:
            loop_state, state = torch.tensor([0]), cell.zero_state(16, torch.float32)
        else:
            loop_state, state = loop_state + 1, cell_state
        next_input = inputs[min(time, 9)]
        return torch.full((16,), time >= 10), next_input, state, cell_output, loop_state

    assert raw_rnn(cell, counter)[2].tolist() == [10]

    def growing(time, cell_output, cell_state, loop_state):
        if cell_output is None:
            loop_state, state = [1], cell.zero_state(16, torch.float32)
        else:
            loop_state, state = loop_state + [loop_state[time - 1] + time], cell_state
        return time >= 4, inputs[min(time, 9)], state, cell_output, loop_state

    assert raw_rnn(cell, growing)[2] == [1, 2, 2 + 2, 4 + 3, 7 + 4]


def test_lazy_cell_loads_tf_names_under_rnn() -> None:
    arrays = _lstm_arrays(np.random.default_rng(1))
    cell = rk.LSTMCell(U, dtype=F64)
    rk.load_tf_variables(cell, arrays, scope="rnn")
    assert list(rk.tf_variables(cell, "rnn")) == ["rnn/lstm_cell/kernel", "rnn/lstm_cell/bias"]
    inputs, lengths = torch.randn(2, B, D, dtype=F64), torch.tensor([2, 1, 2])
    emit, _, _ = raw_rnn(cell, _dynamic_loop_fn(cell, inputs, lengths))
    expected, _ = ref.rnn(ref.basic_lstm(SCOPE), arrays, inputs.numpy(), lengths.numpy(), (np.zeros((B, U)),) * 2)
    np.testing.assert_allclose(emit.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "time, key, value, error, match",
    [
        (0, "state", None, ValueError, "next_cell_state from loop_fn at time 0 is the initial state"),
        (0, "state", (torch.zeros(2, 2),), TypeError, "next_cell_state .* must be a tensor of shape"),
        (0, "state", torch.zeros(3, 2), ValueError, r"must have shape \[2, 2\]"),
        (0, "next_input", 3.0, TypeError, "next_input .* must be a torch.Tensor"),
        (0, "finished", torch.tensor([0, 1]), TypeError, "finished .* must be a bool tensor"),
        (
            1,
            "finished",
            torch.tensor([True, True, True]),
            ValueError,
            r"finished \(from loop_fn at time 1\) must have shape \[2\]",
        ),
        (1, "next_input", torch.zeros(2, 3), ValueError, r"next_input .* must have shape \[2, 2\] as before"),
        (1, "state", torch.zeros(2, 2, dtype=F64), TypeError, "next_cell_state .* must have dtype torch.float32"),
        (1, "emit", None, ValueError, "emit_output .* must have the structure of"),
        (1, "emit", (torch.zeros(2, 2),) * 2, ValueError, "emit_output .* must have the structure of"),
    ],
)
def test_bad_loop_fn_values(time, key, value, error, match) -> None:
    cell, loop_fn = _with_change(time, key, value)
    with pytest.raises(error, match=match):
        raw_rnn(cell, loop_fn)


def _with_change(time: int, key: str, value: Any):
    cell = rk.GRUCell(2, input_size=2)

    def loop_fn(t, cell_output, cell_state, loop_state):
        values = {
            "finished": torch.tensor([t > 0, t > 0]),
            "next_input": torch.zeros(2, 2),
            "state": cell.zero_state(2, torch.float32) if t == 0 else cell_state,
            "emit": cell_output,
        }
        if t == time:
            values[key] = value
        return values["finished"], values["next_input"], values["state"], values["emit"], None

    return cell, loop_fn


def test_bad_arguments() -> None:
    cell = rk.GRUCell(2)
    with pytest.raises(TypeError, match="loop_fn must be a callable, got int"):
        raw_rnn(cell, 3)
    with pytest.raises(TypeError, match="'cell'.*is not an RNNCell"):
        raw_rnn("cell", lambda *a: None)
    with pytest.raises(TypeError, match=r"loop_fn must return \(finished, next_input"):
        raw_rnn(cell, lambda *a: (True, torch.zeros(1, 2), torch.zeros(1, 2), None))


def test_scalar_finished_and_zero_steps() -> None:
    cell = rk.GRUCell(2, input_size=2)
    h0 = torch.randn(4, 2)

    def loop_fn(time, cell_output, cell_state, loop_state):
        return time >= 2, torch.ones(4, 2), h0 if cell_output is None else cell_state, cell_output, 7

    emit, state, loop_state = raw_rnn(cell, loop_fn)
    assert emit.shape == (2, 4, 2) and loop_state == 7
    emit, state, _ = raw_rnn(cell, lambda t, o, s, ls: (torch.tensor(True), torch.ones(4, 2), h0, None, None))
    assert emit.shape == (0, 4, 2) and state is h0


# --------------------------------------------------------------------------------------------
# static_state_saving_rnn


def test_state_saving_segments_match_reference_and_one_long_run() -> None:
    rng = np.random.default_rng(3)
    arrays = _lstm_arrays(rng)
    segments = [rng.standard_normal((3, B, D)), rng.standard_normal((2, B, D))]
    lengths = np.array([3, 1, 2])
    cell = _lstm(arrays)
    saver = InMemoryStateSaver(B, U, dtype=F64)
    saved = {"c": np.zeros((B, U)), "h": np.zeros((B, U))}
    step = ref.basic_lstm(SCOPE)
    outputs = []
    for segment in segments:
        out, state = static_state_saving_rnn(
            cell, list(torch.from_numpy(segment).unbind(0)), saver, ("c", "h"), sequence_length=lengths
        )
        expected, expected_state = ref.static_state_saving_rnn(
            step, arrays, segment, saved, ("c", "h"), lengths, ("c", "h")
        )
        np.testing.assert_allclose(torch.stack(out).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(saver.state("h").numpy(), saved["h"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(saver.state("c"), state.c.detach())
        assert not saver.state("c").requires_grad
        outputs.append(torch.stack(out))
    # without lengths, two segments are one static_rnn over both
    saver.reset()
    first = static_state_saving_rnn(cell, list(torch.from_numpy(segments[0]).unbind(0)), saver, ("c", "h"))[0]
    second = static_state_saving_rnn(cell, list(torch.from_numpy(segments[1]).unbind(0)), saver, ("c", "h"))[0]
    whole, _ = rk.static_rnn(cell, list(torch.from_numpy(np.concatenate(segments)).unbind(0)), dtype=F64)
    torch.testing.assert_close(torch.stack(first + second), torch.stack(whole), rtol=0, atol=1e-14)


def test_state_saving_gradients_match_reference() -> None:
    rng = np.random.default_rng(4)
    arrays = _lstm_arrays(rng)
    arrays["x"] = rng.standard_normal((3, B, D))
    start = {"c": rng.standard_normal((B, U)), "h": rng.standard_normal((B, U))}
    lengths = np.array([2, 3, 0])
    step = ref.basic_lstm(SCOPE)

    def reference(a: dict) -> list[np.ndarray]:
        out, (c, h) = ref.static_state_saving_rnn(step, a, a["x"], dict(start), ("c", "h"), lengths, ("c", "h"))
        return [out, c, h]

    expected = reference(arrays)
    weights = [rng.standard_normal(e.shape) for e in expected]
    cell = _lstm(arrays)
    saver = InMemoryStateSaver(B, {"c": U, "h": U}, dtype=F64)
    for name, value in start.items():
        saver.save_state(name, torch.from_numpy(value))
    x = torch.tensor(arrays["x"], requires_grad=True)
    out, state = static_state_saving_rnn(cell, list(x.unbind(0)), saver, ("c", "h"), sequence_length=lengths)
    got = [torch.stack(out), state.c, state.h]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.detach().numpy(), e, rtol=1e-12, atol=1e-12)
    sum((g * torch.from_numpy(w)).sum() for g, w in zip(got, weights)).backward()
    numeric = numeric_gradients(lambda a: weighted_sum(reference(a), weights), arrays)
    variables = rk.tf_variables(cell, "rnn")
    for name, grad in numeric.items():
        tensor = x if name == "x" else variables[name]
        np.testing.assert_allclose(tensor.grad.numpy(), grad, rtol=1e-7, atol=1e-9, err_msg=name)


def test_state_saving_with_one_tensor_and_nested_states() -> None:
    torch.manual_seed(2)
    gru = rk.GRUCell(2, input_size=3)
    saver = InMemoryStateSaver(2, 2)
    steps = list(torch.randn(3, 2, 3).unbind(0))
    _, state = static_state_saving_rnn(gru, steps, saver, "h")
    torch.testing.assert_close(saver.saved_state["h"], state.detach())
    stack = rk.MultiRNNCell([rk.LSTMCell(2, input_size=3), rk.GRUCell(4)])
    saver = InMemoryStateSaver(2, {"c0": 2, "h0": 2, "h1": 4})
    names = (("c0", "h0"), "h1")
    _, state = static_state_saving_rnn(stack, steps, saver, names)
    assert sorted(saver.saved_state) == ["c0", "h0", "h1"]
    _, again = static_state_saving_rnn(stack, steps, saver, names)
    _, whole = rk.static_rnn(stack, steps + steps)
    for a, b in zip(rk.flatten_state(again), rk.flatten_state(whole)):
        torch.testing.assert_close(a, b)

    class TFTestStateSaver:  # TF's rnn_test.TestStateSaver: zeros from state(), a dict for save_state()
        def __init__(self):
            self.saved_state = {}

        def state(self, name):
            return torch.zeros(2, 2)

        def save_state(self, name, state):
            self.saved_state[name] = state
            return state

    saver = TFTestStateSaver()
    _, state = static_state_saving_rnn(gru, steps, saver, "h")
    assert saver.saved_state["h"] is state


def test_state_saving_errors() -> None:
    lstm, gru = rk.LSTMCell(2), rk.GRUCell(2)
    steps = [torch.zeros(2, 3)] * 2
    saver = InMemoryStateSaver(2, 2)
    with pytest.raises(ValueError, match="state_name should be the same type as cell.state_size"):
        static_state_saving_rnn(lstm, steps, saver, "state")
    with pytest.raises(ValueError, match="state_name should be the same type"):
        static_state_saving_rnn(gru, steps, saver, ("h",))
    with pytest.raises(ValueError, match=r"#elems\(state_name\) != #elems\(state_size\): 3 vs. 2"):
        static_state_saving_rnn(lstm, steps, saver, ("c", "h", "x"))
    with pytest.raises(TypeError, match="state_name must hold strings, got 1"):
        static_state_saving_rnn(lstm, steps, saver, ("c", 1))
    with pytest.raises(ValueError, match="must not repeat a name"):
        static_state_saving_rnn(lstm, steps, saver, ("c", "c"))
    with pytest.raises(TypeError, match="state_saver must have methods .* dict lacks state, save_state"):
        static_state_saving_rnn(lstm, steps, {}, ("c", "h"))
    with pytest.raises(ValueError, match=r"state_saver.state\('h'\) must have shape \[2, 3\]"):
        static_state_saving_rnn(rk.GRUCell(3), steps, saver, "h")
    with pytest.raises(ValueError, match="Argument `inputs` must not be empty"):
        static_state_saving_rnn(gru, [], saver, "h")
    with pytest.raises(ValueError, match="sequence_length must be a vector of length batch_size"):
        static_state_saving_rnn(gru, steps, saver, "h", sequence_length=[1, 2, 3])


def test_in_memory_state_saver() -> None:
    saver = InMemoryStateSaver(3, {"c": 2, "img": (2, 2)}, dtype=F64, detach=False)
    assert saver.state("c").shape == (3, 2) and saver.state("img").shape == (3, 2, 2)
    assert saver.state("c").dtype == F64 and not saver.state("c").any()
    value = torch.ones(3, 2, dtype=F64, requires_grad=True)
    saver.save_state("c", value * 2)
    assert saver.state("c").requires_grad and saver.saved_state.keys() == {"c"}
    saver.reset("c")
    assert not saver.state("c").any() and saver.saved_state == {}
    with pytest.raises(KeyError, match="no state named 'h'"):
        saver.state("h")
    with pytest.raises(ValueError, match=r"value must have shape \[3, 2\], got \[2, 2\]"):
        saver.save_state("c", torch.zeros(2, 2))
    with pytest.raises(TypeError, match="value must be a torch.Tensor"):
        saver.save_state("c", [1, 2])
    with pytest.raises(ValueError, match="state_size must be a positive int or a shape"):
        InMemoryStateSaver(2, 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        InMemoryStateSaver(2.0, 3)
    assert "saved=[]" in repr(InMemoryStateSaver(1, 1))
