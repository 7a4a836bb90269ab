"""tf.contrib.rnn's weight-owning wrappers (AttentionCellWrapper, HighwayWrapper,
EmbeddingWrapper, InputProjectionWrapper, OutputProjectionWrapper) against the numpy float64
transcription of TF 1.15 in ``contrib_reference/wrappers.py``: forward and gradients, TF
names, dynamic_rnn with lengths, loading, state_dict, bad arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.contrib import (
    AttentionCellWrapper,
    EmbeddingWrapper,
    HighwayWrapper,
    InputProjectionWrapper,
    OutputProjectionWrapper,
)
from rnnkit.state import flatten_state, map_state, pack_state
from tests.contrib_reference import wrappers as ref
from tests.contrib_reference.numeric import numeric_gradients, weighted_sum

F64 = torch.float64
BATCH, STEPS = 3, 3


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], Any]
    reference: Callable[[dict[str, np.ndarray]], ref.Step]
    depth: int


def _attention_lstm(v):
    scope = "rnn/attention_cell_wrapper"
    return ref.attention_cell_step(v, scope, ref.basic_lstm_step(v, f"{scope}/basic_lstm_cell"), 2, 3)


def _attention_gru_concat(v):
    scope = "rnn/attention_cell_wrapper"
    cell = ref.gru_step(v, f"{scope}/gru_cell")
    return ref.attention_cell_step(v, scope, cell, 3, 2, state_is_tuple=False, cell_state_size=3)


def _attention_multi(v):
    scope = "rnn/attention_cell_wrapper/multi_rnn_cell"
    layers = [ref.basic_lstm_step(v, f"{scope}/cell_0/basic_lstm_cell"), ref.gru_step(v, f"{scope}/cell_1/gru_cell")]
    return ref.attention_cell_step(v, "rnn/attention_cell_wrapper", ref.multi_step(layers), 1, 2)


CASES = [
    Case("attention_lstm", lambda: AttentionCellWrapper(rk.BasicLSTMCell(3), 2), _attention_lstm, 3),
    Case(
        "attention_gru_concat_sizes",
        lambda: AttentionCellWrapper(
            rk.GRUCell(3), 3, attn_size=2, attn_vec_size=4, input_size=4, state_is_tuple=False
        ),
        _attention_gru_concat,
        2,
    ),
    Case(
        "attention_multi_rnn_cell",
        lambda: AttentionCellWrapper(rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.GRUCell(2)]), 1),
        _attention_multi,
        4,
    ),
    Case(
        "input_projection_gru_tanh",
        lambda: InputProjectionWrapper(rk.GRUCell(3), 4, activation=torch.tanh),
        lambda v: ref.input_projection_step(
            v, "rnn/input_projection_wrapper", ref.gru_step(v, "rnn/input_projection_wrapper/gru_cell"), np.tanh
        ),
        2,
    ),
    Case(
        "input_projection_lstm",
        lambda: InputProjectionWrapper(rk.BasicLSTMCell(3), 2),
        lambda v: ref.input_projection_step(
            v, "rnn/input_projection_wrapper", ref.basic_lstm_step(v, "rnn/input_projection_wrapper/basic_lstm_cell")
        ),
        4,
    ),
    Case(
        "output_projection_lstm",
        lambda: OutputProjectionWrapper(rk.BasicLSTMCell(3), 2),
        lambda v: ref.output_projection_step(
            v, "rnn/output_projection_wrapper", ref.basic_lstm_step(v, "rnn/output_projection_wrapper/basic_lstm_cell")
        ),
        3,
    ),
    Case(
        "output_projection_gru_sigmoid",
        lambda: OutputProjectionWrapper(rk.GRUCell(3), 4, activation="sigmoid"),
        lambda v: ref.output_projection_step(
            v, "rnn/output_projection_wrapper", ref.gru_step(v, "rnn/output_projection_wrapper/gru_cell"), ref.sigmoid
        ),
        2,
    ),
    Case(
        "highway_gru_coupled",
        lambda: HighwayWrapper(rk.GRUCell(3), carry_bias_init=0.5),
        lambda v: ref.highway_step(v, "rnn", ref.gru_step(v, "rnn/gru_cell")),
        3,
    ),
    Case(
        "highway_lstm_uncoupled",
        lambda: HighwayWrapper(rk.BasicLSTMCell(4), couple_carry_transform_gates=False),
        lambda v: ref.highway_step(v, "rnn", ref.basic_lstm_step(v, "rnn/basic_lstm_cell"), False),
        4,
    ),
]


# ---------------------------------------------------------------------------------------------
# helpers


def _built(case: Case, seed: int = 0) -> Any:
    """The case's cell in float64, built by one call, with seeded random weights (biases too)."""
    cell = case.make()
    rk.dynamic_rnn(cell, torch.zeros(1, 1, case.depth, dtype=F64))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in rk.tf_variables(cell).values():
            param.copy_(0.6 * torch.randn(param.shape, generator=generator, dtype=F64))
    return cell


def _numpy_variables(cell: Any, scope: str = "rnn") -> dict[str, np.ndarray]:
    return {name: p.detach().numpy().copy() for name, p in rk.tf_variables(cell, scope).items()}


def _random_state(cell: Any, batch: int, seed: int) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return map_state(lambda z: torch.randn(z.shape, generator=generator, dtype=F64), cell.zero_state(batch, F64))


def _to_numpy(state: Any) -> Any:
    if isinstance(state, (tuple, list)):
        return tuple(_to_numpy(item) for item in state)
    return state.detach().numpy().copy()


def _reference_run(case: Case, variables: dict[str, np.ndarray], x: np.ndarray, state: Any):
    return ref.unroll(case.reference(variables), x, state)


def _close(actual: torch.Tensor, expected: np.ndarray, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# forward and gradients against the reference


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_and_gradients_match_the_reference(case: Case) -> None:
    cell = _built(case)
    x = torch.randn(BATCH, STEPS, case.depth, generator=torch.Generator().manual_seed(1), dtype=F64)
    state = _random_state(cell, BATCH, seed=2)
    x.requires_grad_(True)
    state = map_state(lambda s: s.requires_grad_(True), state)
    outputs, final = rk.dynamic_rnn(cell, x, initial_state=state)
    leaves = [outputs, *flatten_state(final)]
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal(tuple(leaf.shape)) for leaf in leaves]
    loss = sum((leaf * torch.from_numpy(w)).sum() for leaf, w in zip(leaves, weights))
    variables = rk.tf_variables(cell)
    inputs = {"inputs": x, **{f"state/{k}": s for k, s in enumerate(flatten_state(state))}}
    torch_grads = torch.autograd.grad(loss, [*variables.values(), *inputs.values()])

    arrays = {**_numpy_variables(cell), **{name: _to_numpy(t) for name, t in inputs.items()}}
    state_template = _to_numpy(state)

    def run(values):
        initial = pack_state(state_template, [values[f"state/{k}"] for k in range(len(inputs) - 1)])
        outs, fin = _reference_run(case, values, values["inputs"], initial)
        return np.stack(outs, 1), fin

    ref_out, ref_final = run(arrays)
    _close(outputs, ref_out)
    for got, expected in zip(flatten_state(final), ref.flatten(ref_final)):
        _close(got, expected)

    def numpy_loss(values):
        outs, fin = run(values)
        return weighted_sum([outs, *ref.flatten(fin)], weights)

    numeric = numeric_gradients(numpy_loss, arrays)
    for name, grad in zip([*variables, *inputs], torch_grads):
        np.testing.assert_allclose(grad.numpy(), numeric[name], rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dynamic_rnn_with_sequence_length_zeroes_outputs_and_carries_the_state(case: Case) -> None:
    cell = _built(case, seed=4)
    lengths = [3, 1, 0]
    x = torch.randn(3, 4, case.depth, generator=torch.Generator().manual_seed(5), dtype=F64)
    state = _random_state(cell, 3, seed=6)
    outputs, final = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state)
    variables = _numpy_variables(cell)
    for row, length in enumerate(lengths):
        row_state = _to_numpy(map_state(lambda s: s[row : row + 1], state))
        outs, row_final = _reference_run(case, variables, x[row : row + 1, :length].numpy(), row_state)
        for t in range(4):
            expected = outs[t][0] if t < length else np.zeros(cell.output_size)
            _close(outputs[row, t], expected)
        for got, expected in zip(flatten_state(final), ref.flatten(row_final)):
            _close(got[row], expected[0])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reference_backend_only(case: Case) -> None:
    cell = _built(case)
    x = torch.randn(2, 2, case.depth, generator=torch.Generator().manual_seed(7), dtype=F64)
    auto, _ = rk.dynamic_rnn(cell, x, backend="auto")
    reference, _ = rk.dynamic_rnn(cell, x, backend="reference")
    assert torch.equal(auto, reference)
    with pytest.raises(ValueError, match=f"{type(cell).__name__} has no fused implementation"):
        rk.dynamic_rnn(cell, x, backend="fused")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_static_rnn_matches_dynamic_rnn(case: Case) -> None:
    cell = _built(case)
    x = torch.randn(2, 3, case.depth, generator=torch.Generator().manual_seed(8), dtype=F64)
    outputs, final = rk.static_rnn(cell, list(x.unbind(1)), sequence_length=[3, 2])
    expected, expected_final = rk.dynamic_rnn(cell, x, sequence_length=[3, 2])
    assert torch.equal(torch.stack(outputs, 1), expected)
    assert all(torch.equal(a, b) for a, b in zip(flatten_state(final), flatten_state(expected_final)))


# ---------------------------------------------------------------------------------------------
# TF names


def _names(cell: Any, scope: str = "rnn") -> list[str]:
    return list(rk.tf_variables(cell, scope))


def test_attention_cell_wrapper_tf_names_and_shapes() -> None:
    cell = AttentionCellWrapper(rk.LSTMCell(4), attn_length=3, attn_size=5, attn_vec_size=6, input_size=7)
    rk.dynamic_rnn(cell, torch.zeros(1, 1, 2))
    shapes = {name: list(p.shape) for name, p in rk.tf_variables(cell).items()}
    assert shapes == {
        "rnn/attention_cell_wrapper/lstm_cell/kernel": [7 + 4, 16],
        "rnn/attention_cell_wrapper/lstm_cell/bias": [16],
        "rnn/attention_cell_wrapper/kernel": [2 + 5, 7],
        "rnn/attention_cell_wrapper/bias": [7],
        "rnn/attention_cell_wrapper/attention/attn_w": [1, 1, 5, 6],
        "rnn/attention_cell_wrapper/attention/attn_v": [6],
        "rnn/attention_cell_wrapper/attention/kernel": [4 + 4, 6],
        "rnn/attention_cell_wrapper/attention/bias": [6],
        "rnn/attention_cell_wrapper/attn_output_projection/kernel": [4 + 5, 5],
        "rnn/attention_cell_wrapper/attn_output_projection/bias": [5],
    }
    assert cell.output_size == 5
    assert cell.state_size == (rk.LSTMStateTuple(4, 4), 5, 15)


def test_attention_without_input_size_projects_to_the_input_depth() -> None:
    cell = AttentionCellWrapper(rk.GRUCell(3), 2)
    rk.dynamic_rnn(cell, torch.zeros(1, 1, 5))
    assert list(cell.kernel.shape) == [5 + 3, 5] and list(cell.bias.shape) == [5]
    assert cell.cell.input_size == 5


def test_projection_and_embedding_wrapper_tf_names() -> None:
    inner = rk.MultiRNNCell([rk.BasicLSTMCell(2), rk.GRUCell(2)])
    embedding = EmbeddingWrapper(inner, 5, 3)
    embedding(torch.tensor([1, 2]), embedding.zero_state(2))
    assert _names(embedding, "embedding_rnn_seq2seq/rnn") == [
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/multi_rnn_cell/cell_0/basic_lstm_cell/bias",
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
        "embedding_rnn_seq2seq/rnn/embedding_wrapper/embedding",
    ]
    assert list(embedding.embedding.shape) == [5, 3]
    assert _names(InputProjectionWrapper(rk.GRUCell(2), 3)) == [
        "rnn/input_projection_wrapper/gru_cell/gates/kernel",
        "rnn/input_projection_wrapper/gru_cell/gates/bias",
        "rnn/input_projection_wrapper/gru_cell/candidate/kernel",
        "rnn/input_projection_wrapper/gru_cell/candidate/bias",
        "rnn/input_projection_wrapper/kernel",
        "rnn/input_projection_wrapper/bias",
    ]
    assert _names(OutputProjectionWrapper(rk.BasicLSTMCell(2), 3)) == [
        "rnn/output_projection_wrapper/basic_lstm_cell/kernel",
        "rnn/output_projection_wrapper/basic_lstm_cell/bias",
        "rnn/output_projection_wrapper/kernel",
        "rnn/output_projection_wrapper/bias",
    ]


def test_highway_names_sit_in_the_enclosing_scope() -> None:
    cell = rk.MultiRNNCell(
        [HighwayWrapper(rk.GRUCell(2), couple_carry_transform_gates=False), OutputProjectionWrapper(rk.GRUCell(2), 2)]
    )
    assert _names(cell) == [
        "rnn/multi_rnn_cell/cell_0/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_0/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_0/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_0/gru_cell/candidate/bias",
        "rnn/multi_rnn_cell/cell_0/carry_w",
        "rnn/multi_rnn_cell/cell_0/carry_b",
        "rnn/multi_rnn_cell/cell_0/transform_w",
        "rnn/multi_rnn_cell/cell_0/transform_b",
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/candidate/bias",
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/kernel",
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/bias",
    ]
    assert _names(HighwayWrapper(rk.BasicLSTMCell(2))) == [
        "rnn/basic_lstm_cell/kernel",
        "rnn/basic_lstm_cell/bias",
        "rnn/carry_w",
        "rnn/carry_b",
    ]
    with pytest.raises(ValueError, match="non-empty scope"):
        rk.tf_variables(HighwayWrapper(rk.GRUCell(2)), scope=None)


def test_wrapper_inside_dropout_wrapper_keeps_its_scope() -> None:
    cell = rk.DropoutWrapper(OutputProjectionWrapper(rk.GRUCell(2), 3, name="proj"))
    assert _names(cell)[-2:] == ["rnn/proj/kernel", "rnn/proj/bias"]


# ---------------------------------------------------------------------------------------------
# initializers, sizes, zero states


def test_default_initializers() -> None:
    torch.manual_seed(0)
    highway = HighwayWrapper(rk.GRUCell(3), couple_carry_transform_gates=False, carry_bias_init=0.25)
    highway(torch.zeros(1, 3), highway.zero_state(1))
    assert torch.equal(highway.carry_b, torch.full((3,), 0.25))
    assert torch.equal(highway.transform_b, torch.full((3,), -0.25))
    assert highway.carry_w.abs().max() <= math.sqrt(6 / 6)
    embedding = EmbeddingWrapper(rk.GRUCell(2), 2000, 50)
    embedding.build(1)
    assert embedding.embedding.abs().max() <= math.sqrt(3)
    assert abs(float(embedding.embedding.detach().var()) - 1.0) < 0.02  # TF: variance 1
    constant = EmbeddingWrapper(rk.GRUCell(2), 3, 2, initializer=0.5)
    constant(torch.tensor([0]), constant.zero_state(1))
    assert torch.equal(constant.embedding, torch.full((3, 2), 0.5))
    projection = OutputProjectionWrapper(rk.GRUCell(3), 2)
    projection(torch.zeros(1, 4), projection.zero_state(1))
    assert torch.equal(projection.bias, torch.zeros(2)) and list(projection.kernel.shape) == [3, 2]
    attention = AttentionCellWrapper(rk.GRUCell(3), 2, attn_vec_size=4)
    attention(torch.zeros(1, 2), attention.zero_state(1))
    assert torch.equal(attention.attention["bias"], torch.zeros(4))
    assert attention.attention["attn_w"].abs().max() <= math.sqrt(6 / (3 + 4))


def test_attention_zero_state_is_zeros_of_its_state_size() -> None:
    cell = AttentionCellWrapper(rk.BasicLSTMCell(3), 2, attn_size=4)
    state = cell.zero_state(2, F64)
    assert isinstance(state, tuple) and isinstance(state[0], rk.LSTMStateTuple)
    assert [list(s.shape) for s in flatten_state(state)] == [[2, 3], [2, 3], [2, 4], [2, 8]]
    concat = AttentionCellWrapper(rk.GRUCell(3), 2, attn_size=4, state_is_tuple=False)
    assert concat.state_size == 3 + 4 + 8 and list(concat.zero_state(2).shape) == [2, 15]


def test_wrappers_pass_the_cells_sizes_through() -> None:
    lstm = rk.BasicLSTMCell(3)
    for wrapper in (EmbeddingWrapper(lstm, 4, 2), InputProjectionWrapper(lstm, 2), HighwayWrapper(lstm)):
        assert wrapper.state_size == lstm.state_size and wrapper.output_size == 3
        assert wrapper.wrapped_cell is lstm
    assert OutputProjectionWrapper(lstm, 5).output_size == 5


# ---------------------------------------------------------------------------------------------
# EmbeddingWrapper: integer ids, stepped by hand


def _embedding_case(seed: int = 0):
    cell = EmbeddingWrapper(rk.BasicLSTMCell(3), embedding_classes=5, embedding_size=2)
    cell(torch.tensor([0]), cell.zero_state(1, F64))  # builds the LSTM, takes float64
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in rk.tf_variables(cell).values():
            param.copy_(0.6 * torch.randn(param.shape, generator=generator, dtype=F64))
    ids = torch.tensor([[4, 0, 2], [1, 1, 3]])  # [B, T]

    def reference(v):
        scope = "rnn/embedding_wrapper"
        return ref.embedding_wrapper_step(v, scope, ref.basic_lstm_step(v, f"{scope}/basic_lstm_cell"))

    return cell, ids, reference


def _step_by_hand(cell: Any, ids: torch.Tensor, state: Any) -> tuple[list[torch.Tensor], Any]:
    outputs = []
    for t in range(ids.shape[1]):
        output, state = cell(ids[:, t], state)
        outputs.append(output)
    return outputs, state


def test_embedding_wrapper_forward_and_gradients_match_the_reference() -> None:
    cell, ids, reference = _embedding_case()
    state = map_state(lambda s: s.requires_grad_(True), _random_state(cell, 2, seed=1))
    outputs, final = _step_by_hand(cell, ids, state)
    leaves = [*outputs, *flatten_state(final)]
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal(tuple(leaf.shape)) for leaf in leaves]
    loss = sum((leaf * torch.from_numpy(w)).sum() for leaf, w in zip(leaves, weights))
    variables = rk.tf_variables(cell)
    torch_grads = torch.autograd.grad(loss, [*variables.values(), *state])
    arrays = {**_numpy_variables(cell), "state/c": _to_numpy(state.c), "state/h": _to_numpy(state.h)}

    def run(values):
        return ref.unroll(reference(values), ids.numpy(), (values["state/c"], values["state/h"]))

    ref_outputs, ref_final = run(arrays)
    for got, expected in zip(leaves, [*ref_outputs, *ref_final]):
        _close(got, expected)

    def numpy_loss(values):
        outs, fin = run(values)
        return weighted_sum([*outs, *fin], weights)

    numeric = numeric_gradients(numpy_loss, arrays)
    for name, grad in zip([*variables, "state/c", "state/h"], torch_grads):
        np.testing.assert_allclose(grad.numpy(), numeric[name], rtol=1e-7, atol=1e-8, err_msg=name)


def test_embedding_wrapper_takes_ids_of_shape_b_or_b1_and_the_states_dtype() -> None:
    cell = EmbeddingWrapper(rk.GRUCell(3), 4, 2)
    assert not cell.built  # created at the first call, in the state's dtype
    state = cell.zero_state(2, F64)
    flat, _ = cell(torch.tensor([3, 1]), state)
    column, _ = cell(torch.tensor([[3], [1]], dtype=torch.int32), state)
    assert cell.embedding.dtype == F64 and torch.equal(flat, column)
    with pytest.raises(TypeError, match="dtype"):
        cell(torch.tensor([3, 1]), cell.zero_state(2, torch.float32))


def test_embedding_wrapper_with_sequence_length_by_hand_masking() -> None:
    # the masking dynamic_rnn does, written out: past its length a row's state is carried
    cell, ids, reference = _embedding_case(seed=3)
    initial = _random_state(cell, 2, seed=4)
    lengths, state = [3, 1], initial
    for t in range(3):
        _, new_state = cell(ids[:, t], state)
        alive = (torch.tensor(lengths) > t).reshape(-1, 1)
        state = map_state(lambda n, s: torch.where(alive, n, s), new_state, state)
    step = reference(_numpy_variables(cell))
    for row, length in enumerate(lengths):
        row_initial = _to_numpy(map_state(lambda s: s[row : row + 1], initial))
        _, expected = ref.unroll(step, ids[row : row + 1, :length].numpy(), row_initial)
        for got, want in zip(flatten_state(state), expected):
            _close(got[row], want[0])


@pytest.mark.parametrize("runner", ["dynamic_rnn", "static_rnn"])
def test_embedding_wrapper_under_the_runners(runner: str) -> None:
    cell, ids, reference = _embedding_case()
    if runner == "dynamic_rnn":
        outputs, final = rk.dynamic_rnn(cell, ids.unsqueeze(2), sequence_length=[3, 1], dtype=F64)
    else:
        steps, final = rk.static_rnn(cell, list(ids.unbind(1)), dtype=F64, sequence_length=[3, 1])
        outputs = torch.stack(steps, 1)
    zero = _to_numpy(cell.zero_state(1, F64))
    ref_outputs, _ = ref.unroll(reference(_numpy_variables(cell)), ids[:1].numpy(), zero)
    _close(outputs[0], np.concatenate(ref_outputs))
    assert torch.equal(outputs[1, 1:], torch.zeros(2, 3, dtype=F64))


# ---------------------------------------------------------------------------------------------
# loading and saving


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_load_tf_variables_builds_a_lazy_wrapper(case: Case) -> None:
    source = _built(case, seed=9)
    arrays = _numpy_variables(source)
    target = case.make()
    assert rk.load_tf_variables(target, arrays) == rk.LoadResult([], [], [])
    loaded = rk.tf_variables(target)
    assert list(loaded) == list(arrays)
    assert all(p.dtype == F64 and torch.equal(torch.from_numpy(arrays[n]), p) for n, p in loaded.items())
    x = torch.randn(2, 3, case.depth, generator=torch.Generator().manual_seed(10), dtype=F64)
    assert torch.equal(rk.dynamic_rnn(target, x)[0], rk.dynamic_rnn(source, x)[0])


def test_load_tf_variables_reports_a_missing_wrapper_weight() -> None:
    source = _built(CASES[0])
    arrays = _numpy_variables(source)
    del arrays["rnn/attention_cell_wrapper/attention/attn_v"]
    with pytest.raises(ValueError, match="attention/attn_v"):
        rk.load_tf_variables(CASES[0].make(), arrays)


def test_embedding_wrapper_loads_tf_variables() -> None:
    source, ids, _ = _embedding_case()
    target = EmbeddingWrapper(rk.BasicLSTMCell(3), 5, 2)
    assert rk.load_tf_variables(target, _numpy_variables(source)) == rk.LoadResult([], [], [])
    state = source.zero_state(2, F64)
    assert torch.equal(_step_by_hand(target, ids, state)[0][-1], _step_by_hand(source, ids, state)[0][-1])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_round_trip_into_a_lazy_wrapper(case: Case) -> None:
    source = _built(case, seed=11)
    target = case.make()
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 2, case.depth, generator=torch.Generator().manual_seed(12), dtype=F64)
    assert torch.equal(rk.dynamic_rnn(target, x)[0], rk.dynamic_rnn(source, x)[0])


def test_state_dict_keys() -> None:
    cell = _built(CASES[0])
    assert list(cell.state_dict()) == [
        "kernel",
        "bias",
        "cell.kernel",
        "cell.bias",
        "attention.attn_w",
        "attention.attn_v",
        "attention.kernel",
        "attention.bias",
        "attn_output_projection.kernel",
        "attn_output_projection.bias",
    ]


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: AttentionCellWrapper(object(), 2), TypeError, "is not an RNNCell"),
        (lambda: AttentionCellWrapper(rk.BasicLSTMCell(2), 0), ValueError, "attn_length must be >= 1, got 0"),
        (lambda: AttentionCellWrapper(rk.BasicLSTMCell(2), 2.0), TypeError, "attn_length must be an int"),
        (lambda: AttentionCellWrapper(rk.BasicLSTMCell(2), 2, attn_size="3"), TypeError, "attn_size must be an int"),
        (lambda: AttentionCellWrapper(rk.BasicLSTMCell(2), 2, state_is_tuple=False), ValueError, "state_is_tuple"),
        (lambda: AttentionCellWrapper(rk.GRUCell(2), 2, input_size=0), ValueError, "input_size must be >= 1"),
        (lambda: EmbeddingWrapper(rk.GRUCell(2), 0, 3), ValueError, "embedding_classes must be >= 1, got 0"),
        (lambda: EmbeddingWrapper(rk.GRUCell(2), 3, -1), ValueError, "embedding_size must be >= 1, got -1"),
        (lambda: EmbeddingWrapper(rk.GRUCell(2), 3, 2, initializer="x"), TypeError, "initializer must be"),
        (lambda: InputProjectionWrapper(rk.GRUCell(2), 0), ValueError, "num_proj must be >= 1, got 0"),
        (lambda: InputProjectionWrapper(rk.GRUCell(2), 2, activation="nope"), ValueError, "unknown activation"),
        (lambda: OutputProjectionWrapper(rk.GRUCell(2), 0), ValueError, "output_size must be >= 1, got 0"),
        (lambda: OutputProjectionWrapper(rk.GRUCell, 2), TypeError, "is not an RNNCell"),
        (lambda: HighwayWrapper(rk.GRUCell(2), carry_bias_init="1"), TypeError, "carry_bias_init must be a number"),
    ],
)
def test_bad_constructor_arguments(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_bad_call_arguments() -> None:
    embedding = EmbeddingWrapper(rk.GRUCell(2), 4, 3)
    state = embedding.zero_state(2)
    with pytest.raises(TypeError, match="must be integer ids, got dtype torch.float32"):
        embedding(torch.zeros(2), state)
    with pytest.raises(ValueError, match=r"shape \[batch\] or \[batch, 1\], got shape \[2, 2\]"):
        embedding(torch.zeros(2, 2, dtype=torch.long), state)
    with pytest.raises(ValueError, match=r"ids in \[0, 4\), got values in \[0, 4\]"):
        embedding(torch.tensor([0, 4]), state)
    highway = HighwayWrapper(rk.GRUCell(3))
    with pytest.raises(ValueError, match=r"must have shape \[batch, 3\].*got shape \[2, 4\]"):
        highway(torch.zeros(2, 4), highway.zero_state(2))
    attention = AttentionCellWrapper(rk.GRUCell(3), 2)
    with pytest.raises(ValueError, match="Expected state to be a tuple of length 3"):
        attention(torch.zeros(2, 3), torch.zeros(2, 3))
    projection = InputProjectionWrapper(rk.GRUCell(3), 2)
    with pytest.raises(ValueError, match=r"rank 2 \[batch, depth\]"):
        projection(torch.zeros(2, 3, 1), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="RNN cell only supports floating point inputs"):
        projection(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
