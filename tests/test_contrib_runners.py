"""``tf.contrib.rnn``'s ``stack_bidirectional_dynamic_rnn`` and ``stack_bidirectional_rnn``
against the numpy transcription in ``contrib_reference/runners.py`` (float64, forward and
gradients), their TF variable names, loading, and their argument errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.contrib.rnn_runners import (
    StackBidirectionalRNN,
    load_stack_bidirectional_variables,
    stack_bidirectional_dynamic_rnn,
    stack_bidirectional_rnn,
    stack_bidirectional_variables,
)
from tests.contrib_reference import runners as ref
from tests.contrib_reference.numeric import numeric_gradients, weighted_sum

F64 = torch.float64
DEPTH, BATCH, STEPS = 3, 3, 3
# per layer: (fw cell kind, units), (bw cell kind, units)
LAYERS = [(("lstm", 3), ("gru", 2)), (("gru", 2), ("basic_lstm", 3))]
CELL_NAMES = {"lstm": "lstm_cell", "basic_lstm": "basic_lstm_cell", "gru": "gru_cell"}


def _make_cell(kind: str, units: int) -> Any:
    cls = {"lstm": rk.LSTMCell, "basic_lstm": rk.BasicLSTMCell, "gru": rk.GRUCell}[kind]
    return cls(units, dtype=F64)  # lazy: built by loading


def _cells() -> tuple[list[Any], list[Any]]:
    return [_make_cell(*fw) for fw, _ in LAYERS], [_make_cell(*bw) for _, bw in LAYERS]


def _cell_scope(scope: str, layer: int, direction: str, kind: str, static: bool) -> str:
    middle = "" if static else "/bidirectional_rnn"
    return f"{scope}/cell_{layer}{middle}/{direction}/{CELL_NAMES[kind]}"


def _tf_arrays(rng: np.random.Generator, scope: str = "stack_bidirectional_rnn", static: bool = False) -> dict:
    """Seeded weights by TF name, shaped as TF creates them (layer 1 reads U_fw + U_bw)."""
    arrays, depth = {}, DEPTH
    for layer, ((kind_fw, u_fw), (kind_bw, u_bw)) in enumerate(LAYERS):
        for direction, kind, units in (("fw", kind_fw, u_fw), ("bw", kind_bw, u_bw)):
            prefix = _cell_scope(scope, layer, direction, kind, static)
            if kind == "gru":
                shapes = {
                    "gates/kernel": (depth + units, 2 * units),
                    "gates/bias": (2 * units,),
                    "candidate/kernel": (depth + units, units),
                    "candidate/bias": (units,),
                }
            else:
                shapes = {"kernel": (depth + units, 4 * units), "bias": (4 * units,)}
            for name, shape in shapes.items():
                arrays[f"{prefix}/{name}"] = rng.uniform(-0.6, 0.6, shape)
        depth = u_fw + u_bw
    return arrays


def _np_steps(scope: str, static: bool) -> tuple[list[ref.Step], list[ref.Step]]:
    def step(layer: int, direction: str, kind: str) -> ref.Step:
        prefix = _cell_scope(scope, layer, direction, kind, static)
        return ref.gru(prefix) if kind == "gru" else ref.basic_lstm(prefix)

    fw = [step(i, "fw", kind) for i, ((kind, _), _) in enumerate(LAYERS)]
    bw = [step(i, "bw", kind) for i, (_, (kind, _)) in enumerate(LAYERS)]
    return fw, bw


def _state_arrays(rng: np.random.Generator) -> dict:
    """Seeded initial states, named ``init/<fw|bw>/<layer>/<leaf>``."""
    arrays = {}
    for layer, pair in enumerate(LAYERS):
        for direction, (kind, units) in zip(("fw", "bw"), pair):
            leaves = ("c", "h") if kind != "gru" else ("h",)
            for leaf in leaves:
                arrays[f"init/{direction}/{layer}/{leaf}"] = rng.standard_normal((BATCH, units)) * 0.5
    return arrays


def _states(arrays: dict, direction: str, zeros: Any) -> list[Any]:
    """The per-layer initial states from ``arrays`` (``zeros(kind, units)`` where absent)."""
    states = []
    for layer, pair in enumerate(LAYERS):
        kind, units = pair[0] if direction == "fw" else pair[1]
        key = f"init/{direction}/{layer}"
        if f"{key}/h" not in arrays:
            states.append(zeros(kind, units))
        elif kind == "gru":
            states.append(arrays[f"{key}/h"])
        else:
            states.append((arrays[f"{key}/c"], arrays[f"{key}/h"]))
    return states


def _np_zeros(kind: str, units: int) -> Any:
    z = np.zeros((BATCH, units))
    return z if kind == "gru" else (z, z.copy())


def _reference(arrays: dict, lengths: np.ndarray | None, static: bool) -> list[np.ndarray]:
    """Flat outputs of the numpy stack: time-major outputs, then every final state leaf."""
    steps_fw, steps_bw = _np_steps("stack_bidirectional_rnn", static)
    out, finals_fw, finals_bw = ref.stack_bidirectional_rnn(
        steps_fw,
        steps_bw,
        arrays,
        arrays["x"],
        lengths,
        _states(arrays, "fw", _np_zeros),
        _states(arrays, "bw", _np_zeros),
    )
    return [out, *ref.flatten(finals_fw), *ref.flatten(finals_bw)]


def _run_torch(
    arrays: dict, lengths: list[int] | None, static: bool, time_major: bool, backend: str = "reference"
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """The rnnkit stack on ``arrays``: (flat outputs time-major, leaf tensors, TF-named weights)."""
    cells_fw, cells_bw = _cells()
    weights = {name: value for name, value in arrays.items() if name.startswith("stack_")}
    load_stack_bidirectional_variables(cells_fw, cells_bw, weights, static=static)
    leaves = {name: torch.tensor(v, requires_grad=True) for name, v in arrays.items() if not name.startswith("stack_")}
    have_states = any(name.startswith("init/") for name in leaves)
    init_fw = _states(leaves, "fw", None) if have_states else None
    init_bw = _states(leaves, "bw", None) if have_states else None
    x = leaves["x"]  # time-major [T, B, D]
    if static:
        out, finals_fw, finals_bw = stack_bidirectional_rnn(
            cells_fw, cells_bw, list(x.unbind(0)), init_fw, init_bw, sequence_length=lengths, backend=backend
        )
        out = torch.stack(out, 0)
    else:
        inputs = x if time_major else x.transpose(0, 1)
        out, finals_fw, finals_bw = stack_bidirectional_dynamic_rnn(
            cells_fw,
            cells_bw,
            inputs,
            init_fw,
            init_bw,
            sequence_length=lengths,
            time_major=time_major,
            backend=backend,
        )
        out = out if time_major else out.transpose(0, 1)
    flat = [out, *rk.flatten_state(finals_fw), *rk.flatten_state(finals_bw)]
    return flat, leaves, stack_bidirectional_variables(cells_fw, cells_bw, static=static)


def _check_against_reference(
    lengths: list[int] | None, static: bool, time_major: bool, with_states: bool, backend: str = "reference"
) -> None:
    rng = np.random.default_rng(hash((tuple(lengths or ()), static, time_major, with_states)) % 2**32)
    arrays = _tf_arrays(rng, static=static)
    arrays["x"] = rng.standard_normal((STEPS, BATCH, DEPTH))
    if with_states:
        arrays.update(_state_arrays(rng))
    np_lengths = None if lengths is None else np.array(lengths)
    expected = _reference(arrays, np_lengths, static)
    loss_weights = [rng.standard_normal(e.shape) for e in expected]

    flat, leaves, variables = _run_torch(arrays, lengths, static, time_major, backend)
    assert [tuple(t.shape) for t in flat] == [e.shape for e in expected]
    for got, want in zip(flat, expected):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)

    loss = sum((t * torch.from_numpy(w)).sum() for t, w in zip(flat, loss_weights))
    loss.backward()
    numeric = numeric_gradients(lambda a: weighted_sum(_reference(a, np_lengths, static), loss_weights), arrays)
    for name, grad in numeric.items():
        tensor = variables[name] if name in variables else leaves[name]
        np.testing.assert_allclose(tensor.grad.numpy(), grad, rtol=1e-7, atol=1e-9, err_msg=name)


@pytest.mark.parametrize(
    "lengths, time_major, with_states",
    [(None, False, False), ([3, 1, 2], False, True), ([2, 0, 3], True, False), ([3, 3, 1], True, True)],
)
def test_stack_bidirectional_dynamic_rnn_matches_reference(lengths, time_major, with_states) -> None:
    _check_against_reference(lengths, static=False, time_major=time_major, with_states=with_states)


@pytest.mark.parametrize("lengths, with_states", [(None, True), ([1, 3, 2], False)])
def test_stack_bidirectional_rnn_matches_reference(lengths, with_states) -> None:
    _check_against_reference(lengths, static=True, time_major=True, with_states=with_states)


def test_fused_backend_matches_reference() -> None:
    _check_against_reference([3, 1, 2], static=False, time_major=False, with_states=True, backend="auto")


def test_static_and_dynamic_agree_and_outputs_concatenate_fw_then_bw() -> None:
    rng = np.random.default_rng(5)
    dynamic_arrays = _tf_arrays(rng)
    static_arrays = {name.replace("/bidirectional_rnn/", "/"): v for name, v in dynamic_arrays.items()}
    x = torch.from_numpy(rng.standard_normal((BATCH, STEPS, DEPTH)))
    lengths = [2, 3, 1]
    fw, bw = _cells()
    load_stack_bidirectional_variables(fw, bw, dynamic_arrays)
    out, states_fw, states_bw = stack_bidirectional_dynamic_rnn(fw, bw, x, sequence_length=lengths)
    sfw, sbw = _cells()
    load_stack_bidirectional_variables(sfw, sbw, static_arrays, static=True)
    steps, static_fw, static_bw = stack_bidirectional_rnn(sfw, sbw, list(x.unbind(1)), sequence_length=lengths)
    assert isinstance(states_fw, tuple) and isinstance(states_bw, tuple) and len(states_fw) == 2
    assert isinstance(states_fw[0], rk.LSTMStateTuple) and isinstance(states_bw[1], rk.LSTMStateTuple)
    torch.testing.assert_close(torch.stack(steps, 1), out, rtol=0, atol=1e-13)
    for a, b in zip(rk.flatten_state((states_fw, states_bw)), rk.flatten_state((static_fw, static_bw))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    assert out.shape == (BATCH, STEPS, 2 + 3)  # last layer: GRU(2) fw, BasicLSTM(3) bw
    # the last layer's fw half is its fw cell run alone over the previous layer's outputs
    layer0, _, _ = stack_bidirectional_dynamic_rnn(fw[:1], bw[:1], x, sequence_length=lengths)
    fw_alone, _ = rk.dynamic_rnn(fw[1], layer0, sequence_length=lengths)
    torch.testing.assert_close(out[..., :2], fw_alone, rtol=0, atol=1e-13)
    for b, n in enumerate(lengths):  # zero past each length, in both halves
        assert torch.count_nonzero(out[b, n:]) == 0 and torch.count_nonzero(out[b, :n, 2:]) > 0


def test_first_layer_symmetry_and_state_continuation() -> None:
    # TF's own test: fw and bw cells with the same weights over a constant input have the same
    # first-layer states; 3 steps then 2 more from the saved states equal 5 steps (first layer).
    torch.manual_seed(3)
    fw = [rk.LSTMCell(2, state_is_tuple=False, input_size=5, dtype=F64), rk.LSTMCell(3, input_size=4, dtype=F64)]
    bw = [rk.LSTMCell(2, state_is_tuple=False, input_size=5, dtype=F64), rk.LSTMCell(3, input_size=4, dtype=F64)]
    bw[0].load_state_dict(fw[0].state_dict())
    x = torch.randn(2, 1, 5, dtype=F64).expand(2, 8, 5).contiguous()
    _, s_fw, s_bw = stack_bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[2, 3])
    torch.testing.assert_close(s_fw[0], s_bw[0], rtol=0, atol=1e-14)
    _, st3_fw, st3_bw = stack_bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[3, 2])
    _, st5_fw, st5_bw = stack_bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[5, 3])
    _, st5p_fw, st5p_bw = stack_bidirectional_dynamic_rnn(
        fw, bw, x, initial_states_fw=list(st3_fw), initial_states_bw=list(st3_bw), sequence_length=[2, 1]
    )
    torch.testing.assert_close(st5_fw[0], st5p_fw[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(st5_bw[0], st5p_bw[0], rtol=0, atol=1e-14)
    # the returned tuple of states is a valid initial_states argument too
    stack_bidirectional_dynamic_rnn(fw, bw, x, initial_states_fw=st3_fw, initial_states_bw=st3_bw)


# --------------------------------------------------------------------------------------------
# TF names, loading, the module


def test_tf_names_of_a_dynamic_stack() -> None:
    fw = [rk.LSTMCell(3, input_size=4), rk.GRUCell(2)]
    bw = [rk.BasicLSTMCell(5, input_size=4), rk.LSTMCell(2)]
    rk.dynamic_rnn(fw[1], torch.zeros(1, 1, 8))
    rk.dynamic_rnn(bw[1], torch.zeros(1, 1, 8))
    names = {name: tuple(p.shape) for name, p in stack_bidirectional_variables(fw, bw).items()}
    assert names == {  # what TF 1.15 creates, in its order
        "stack_bidirectional_rnn/cell_0/bidirectional_rnn/fw/lstm_cell/kernel": (7, 12),
        "stack_bidirectional_rnn/cell_0/bidirectional_rnn/fw/lstm_cell/bias": (12,),
        "stack_bidirectional_rnn/cell_0/bidirectional_rnn/bw/basic_lstm_cell/kernel": (9, 20),
        "stack_bidirectional_rnn/cell_0/bidirectional_rnn/bw/basic_lstm_cell/bias": (20,),
        "stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/gru_cell/gates/kernel": (10, 4),
        "stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/gru_cell/gates/bias": (4,),
        "stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/gru_cell/candidate/kernel": (10, 2),
        "stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/gru_cell/candidate/bias": (2,),
        "stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/lstm_cell/kernel": (10, 8),
        "stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/lstm_cell/bias": (8,),
    }
    assert list(names) == list(rk.tf_variables(StackBidirectionalRNN(fw, bw), scope="stack_bidirectional_rnn"))


def test_tf_names_of_a_static_stack_and_of_a_scope() -> None:
    fw, bw = [rk.GRUCell(2, input_size=3)], [rk.LSTMCell(2, input_size=3)]
    assert list(stack_bidirectional_variables(fw, bw, static=True)) == [
        "stack_bidirectional_rnn/cell_0/fw/gru_cell/gates/kernel",
        "stack_bidirectional_rnn/cell_0/fw/gru_cell/gates/bias",
        "stack_bidirectional_rnn/cell_0/fw/gru_cell/candidate/kernel",
        "stack_bidirectional_rnn/cell_0/fw/gru_cell/candidate/bias",
        "stack_bidirectional_rnn/cell_0/bw/lstm_cell/kernel",
        "stack_bidirectional_rnn/cell_0/bw/lstm_cell/bias",
    ]
    # Magenta's MusicVAE encoder: scope="encoder", MultiRNNCell layers
    fw = [rk.MultiRNNCell([rk.LSTMCell(2, input_size=3)])]
    bw = [rk.MultiRNNCell([rk.LSTMCell(2, input_size=3)])]
    assert list(stack_bidirectional_variables(fw, bw, scope="encoder")) == [
        "encoder/cell_0/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/kernel",
        "encoder/cell_0/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/bias",
        "encoder/cell_0/bidirectional_rnn/bw/multi_rnn_cell/cell_0/lstm_cell/kernel",
        "encoder/cell_0/bidirectional_rnn/bw/multi_rnn_cell/cell_0/lstm_cell/bias",
    ]
    outer = stack_bidirectional_variables(fw, bw, scope="model/stack_bidirectional_rnn/")
    assert (
        next(iter(outer))
        == "model/stack_bidirectional_rnn/cell_0/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/kernel"
    )


def test_module_loads_lazily_runs_and_round_trips_its_state_dict() -> None:
    rng = np.random.default_rng(11)
    arrays = _tf_arrays(rng)
    layer = StackBidirectionalRNN(*_cells())
    assert not any(cell.built for cell in layer.cells_fw)
    result = rk.load_tf_variables(layer, arrays, scope="stack_bidirectional_rnn")
    assert result == rk.LoadResult([], [], [])
    x = rng.standard_normal((STEPS, BATCH, DEPTH))
    out, _, _ = layer(torch.from_numpy(x).transpose(0, 1), sequence_length=[3, 2, 1])
    expected = _reference({**arrays, "x": x}, np.array([3, 2, 1]), static=False)[0]
    np.testing.assert_allclose(out.transpose(0, 1).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    other = StackBidirectionalRNN(*_cells())
    rk.load_tf_variables(other, {n: np.zeros_like(v) for n, v in arrays.items()}, scope="stack_bidirectional_rnn")
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(torch.from_numpy(x).transpose(0, 1), sequence_length=[3, 2, 1])[0], out)
    time_major = StackBidirectionalRNN(list(layer.cells_fw), list(layer.cells_bw), time_major=True)
    torch.testing.assert_close(time_major(torch.from_numpy(x), sequence_length=[3, 2, 1])[0], out.transpose(0, 1))
    static = StackBidirectionalRNN(list(layer.cells_fw), list(layer.cells_bw), static=True)
    assert next(iter(rk.tf_variables(static, "stack_bidirectional_rnn"))).startswith(
        "stack_bidirectional_rnn/cell_0/fw/"
    )
    steps, _, _ = static(list(torch.from_numpy(x).unbind(0)), sequence_length=[3, 2, 1])
    torch.testing.assert_close(torch.stack(steps, 1), out)


def test_load_reports_names_under_another_scope() -> None:
    arrays = _tf_arrays(np.random.default_rng(0))
    with pytest.raises(ValueError, match="missing"):
        load_stack_bidirectional_variables(*_cells(), arrays, static=True)
    result = load_stack_bidirectional_variables(*_cells(), arrays, scope="encoder", strict=False)
    assert len(result.missing) == len(arrays)


# --------------------------------------------------------------------------------------------
# errors


def _two() -> tuple[list[Any], list[Any]]:
    return [rk.GRUCell(2), rk.GRUCell(2)], [rk.GRUCell(2), rk.GRUCell(2)]


@pytest.mark.parametrize("runner", ["dynamic", "static"])
def test_bad_cell_lists(runner: str) -> None:
    x = torch.zeros(2, 3, 4)
    inputs = x if runner == "dynamic" else list(x.unbind(1))
    run = stack_bidirectional_dynamic_rnn if runner == "dynamic" else stack_bidirectional_rnn
    fw, bw = _two()
    with pytest.raises(ValueError, match="at least one fw cell"):
        run([], bw, inputs)
    with pytest.raises(ValueError, match="at least one bw cell"):
        run(fw, None, inputs)
    with pytest.raises(ValueError, match="cells_fw must be a list of RNNCells"):
        run(fw[0], bw, inputs)
    with pytest.raises(ValueError, match=r"same depth: len\(cells_fw\) = 2, len\(cells_bw\) = 1"):
        run(fw, bw[:1], inputs)
    with pytest.raises(TypeError, match=r"'cells_bw\[1\]'.*is not an RNNCell"):
        run(fw, [bw[0], "gru"], inputs)
    with pytest.raises(
        ValueError, match=r"initial_states_fw must be a list of state tensors \(one per layer: 2\), got 1"
    ):
        run(fw, bw, inputs, initial_states_fw=[torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="initial_states_bw must be a list"):
        run(fw, bw, inputs, initial_states_bw=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"initial_states_fw\[1\] must have shape \[2, 2\]"):
        run(fw, bw, inputs, initial_states_fw=[None, torch.zeros(3, 2)])
    with pytest.raises(ValueError, match="sequence_length must be <= the number of time steps"):
        run(fw, bw, inputs, sequence_length=[3, 4])


def test_bad_inputs_and_nested_outputs() -> None:
    fw, bw = _two()
    with pytest.raises(ValueError, match="inputs must have rank >= 3"):
        stack_bidirectional_dynamic_rnn(fw, bw, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="Argument `inputs` must not be empty"):
        stack_bidirectional_rnn(fw, bw, [])

    class TwoOutputs(rk.RNNCell):
        state_size, output_size = 2, (2, 2)

        def step(self, inputs, state):
            return (state, state), state

    with pytest.raises(TypeError, match=r"cells_fw\[0\] returns a nested output"):
        stack_bidirectional_dynamic_rnn([TwoOutputs()], [rk.GRUCell(2)], torch.zeros(2, 3, 4))

    class ProtocolCell:  # a cell by the protocol only, not an nn.Module
        state_size = output_size = 2

        def zero_state(self, batch_size, dtype=None):
            return torch.zeros(batch_size, 2, dtype=dtype)

        def __call__(self, inputs, state):
            return state, state

    out, _, _ = stack_bidirectional_dynamic_rnn([ProtocolCell()], [ProtocolCell()], torch.zeros(2, 3, 4))
    assert out.shape == (2, 3, 4)
    with pytest.raises(TypeError, match=r"cells_fw\[0\] must be an nn.Module"):
        StackBidirectionalRNN([ProtocolCell()], [rk.GRUCell(2)])
    with pytest.raises(TypeError, match="scope must be a non-empty str"):
        stack_bidirectional_variables(*_two(), scope="")


def test_integer_ids_with_initial_states_run_through_embedding_wrappers() -> None:
    """TF's stacked runners take integer ids into ``EmbeddingWrapper`` cells; the initial states
    (float64 here) fix the state's dtype, as ``dtype=`` would."""
    from rnnkit.contrib import EmbeddingWrapper

    ids = torch.tensor([[[1], [2], [0]], [[3], [1], [2]]])  # [B=2, T=3, 1]
    make = lambda: EmbeddingWrapper(rk.GRUCell(3), embedding_classes=4, embedding_size=2)  # noqa: E731
    cells_fw, cells_bw = [make()], [make()]
    states = [torch.zeros(2, 3, dtype=torch.float64)]
    out, fw, bw = rk.stack_bidirectional_dynamic_rnn(
        cells_fw, cells_bw, ids, initial_states_fw=states, initial_states_bw=states
    )
    assert out.shape == (2, 3, 6) and out.dtype == torch.float64
    assert fw[0].dtype == bw[0].dtype == torch.float64
