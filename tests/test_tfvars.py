"""tf_variables / load_tf_variables: TF's names, building lazy cells, strictness."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import rnnkit as rk


def _arrays(cell, scope: str = "rnn") -> dict[str, np.ndarray]:
    return {name: p.detach().numpy().copy() for name, p in rk.tf_variables(cell, scope).items()}


def test_names_follow_tf() -> None:
    cell = rk.MultiRNNCell(
        [rk.DropoutWrapper(rk.LSTMCell(5, use_peepholes=True, num_proj=3)), rk.ResidualWrapper(rk.GRUCell(3))]
    )
    assert list(rk.tf_variables(cell)) == [
        "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/w_f_diag",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/w_i_diag",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/w_o_diag",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/projection/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
    ]
    assert list(rk.tf_variables(rk.BasicRNNCell(2), scope="encoder")) == [
        "encoder/basic_rnn_cell/kernel",
        "encoder/basic_rnn_cell/bias",
    ]
    assert list(rk.tf_variables(rk.GRUCell(2), "bidirectional_rnn/bw"))[0] == "bidirectional_rnn/bw/gru_cell/gates/kernel"
    assert list(rk.tf_variables(rk.LSTMCell(2, name="basic_lstm_cell"), None)) == [
        "basic_lstm_cell/kernel",
        "basic_lstm_cell/bias",
    ]


def test_tf_variables_are_the_parameters() -> None:
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(3, input_size=2), rk.GRUCell(2, input_size=3)])
    variables = rk.tf_variables(cell)
    assert variables["rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel"] is cell.cells[1].gates.kernel
    assert {id(p) for p in variables.values()} == {id(p) for p in cell.parameters()}
    assert list(variables["rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel"].shape) == [5, 12]


def test_shared_cell_is_named_once() -> None:
    shared = rk.GRUCell(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = rk.MultiRNNCell([shared, shared])
    cell(torch.randn(2, 3), cell.zero_state(2))
    assert list(rk.tf_variables(cell)) == [
        f"rnn/multi_rnn_cell/cell_0/gru_cell/{n}" for n in ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")
    ]


def test_load_builds_a_lazy_stack_and_reproduces_outputs() -> None:
    torch.manual_seed(0)
    source = rk.MultiRNNCell([rk.LSTMCell(4, use_peepholes=True, num_proj=3), rk.GRUCell(5), rk.BasicRNNCell(2)])
    x = torch.randn(3, 6, 7, dtype=torch.float64)
    expected, _ = rk.dynamic_rnn(source, x, sequence_length=[6, 2, 0])
    arrays = _arrays(source, "model/rnn")
    arrays["model/other/dense/kernel"] = np.ones((2, 2))  # outside the scope: ignored
    target = rk.MultiRNNCell([rk.LSTMCell(4, use_peepholes=True, num_proj=3), rk.GRUCell(5), rk.BasicRNNCell(2)])
    result = rk.load_tf_variables(target, arrays, scope="model/rnn")
    assert result == rk.LoadResult([], [], [])
    assert [c.input_size for c in target.cells] == [7, 3, 5]
    assert target.cells[0].kernel.dtype == torch.float64
    actual, _ = rk.dynamic_rnn(target, x, sequence_length=[6, 2, 0])
    assert torch.equal(actual, expected)


def test_loaded_lazy_cell_takes_the_dtype_of_its_first_inputs() -> None:
    source = rk.BasicLSTMCell(3, input_size=2, dtype=torch.float64)
    target = rk.BasicLSTMCell(3)
    rk.load_tf_variables(target, _arrays(source))
    x = torch.randn(2, 4, 2)
    out, _ = rk.dynamic_rnn(target, x)
    assert out.dtype == torch.float32 and target.kernel.dtype == torch.float32
    expected, _ = rk.dynamic_rnn(source, x.double())
    torch.testing.assert_close(out, expected.float())


def test_load_into_a_built_cell_casts_and_accepts_tensors() -> None:
    cell = rk.GRUCell(2, input_size=3)
    arrays = {name: torch.full(tuple(p.shape), 0.5, dtype=torch.float64) for name, p in rk.tf_variables(cell).items()}
    rk.load_tf_variables(cell, arrays)
    assert cell.gates.kernel.dtype == torch.float32 and torch.equal(cell.gates.kernel, torch.full((5, 4), 0.5))


def test_strict_error_lists_everything_sorted_and_loads_nothing() -> None:
    cell = rk.LSTMCell(3, num_proj=2, input_size=4)
    before = {n: p.detach().clone() for n, p in rk.tf_variables(cell).items()}
    arrays = _arrays(cell)
    del arrays["rnn/lstm_cell/bias"]
    arrays["rnn/lstm_cell/kernel"] = np.zeros((5, 12))  # should be [6, 12]
    arrays["rnn/lstm_cell/w_z_diag"] = np.zeros(3)
    arrays["rnn/lstm_cell/projection/kernel"] = np.full((3, 2), 7.0)
    with pytest.raises(ValueError) as info:
        rk.load_tf_variables(cell, arrays)
    message = str(info.value)
    assert "missing (1):\n  rnn/lstm_cell/bias" in message
    assert "unexpected (1):\n  rnn/lstm_cell/w_z_diag" in message
    assert "rnn/lstm_cell/kernel: expected shape [6, 12], got [5, 12]" in message
    assert all(torch.equal(p, before[n]) for n, p in rk.tf_variables(cell).items())

    result = rk.load_tf_variables(cell, arrays, strict=False)
    assert result.missing == ["rnn/lstm_cell/bias"] and result.unexpected == ["rnn/lstm_cell/w_z_diag"]
    assert len(result.mismatched) == 1
    assert torch.equal(cell.projection.kernel, torch.full((3, 2), 7.0))
    assert torch.equal(cell.kernel, before["rnn/lstm_cell/kernel"])


def test_wrong_scope_gets_a_hint() -> None:
    cell = rk.BasicLSTMCell(2, input_size=2)
    with pytest.raises(ValueError, match=r"did you mean scope='case/rnn'"):
        rk.load_tf_variables(cell, _arrays(cell, "case/rnn"), scope="rnn")


def test_roundtrip_through_a_layer() -> None:
    torch.manual_seed(1)
    layer = rk.RNN(rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.BasicLSTMCell(3)]))
    x = torch.randn(2, 5, 4)
    expected, _ = layer(x)
    fresh = rk.RNN(rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.BasicLSTMCell(3)]))
    rk.load_tf_variables(fresh, _arrays(layer))
    assert torch.equal(fresh(x)[0], expected)


def test_unexpected_counts_only_the_cells_own_subtree() -> None:
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(2, input_size=3), rk.GRUCell(2, input_size=2)])
    arrays = _arrays(cell, "rnnlm")
    arrays["rnnlm/softmax_w"] = np.ones((2, 5))  # beside the cell under its scope: not its business
    arrays["rnnlm/dense/kernel"] = np.ones((2, 2))
    assert rk.load_tf_variables(cell, arrays, scope="rnnlm") == rk.LoadResult([], [], [])
    arrays["rnnlm/multi_rnn_cell/cell_2/gru_cell/gates/kernel"] = np.ones((4, 4))  # inside: unexpected
    result = rk.load_tf_variables(cell, arrays, scope="rnnlm", strict=False)
    assert result.unexpected == ["rnnlm/multi_rnn_cell/cell_2/gru_cell/gates/kernel"]
    layer = rk.BidirectionalRNN(rk.GRUCell(2, input_size=3), rk.GRUCell(2, input_size=3))
    arrays = _arrays(layer, "bidirectional_rnn")
    arrays["bidirectional_rnn/fw/gru_cell/extra"] = np.ones(2)
    arrays["bidirectional_rnn/attention/kernel"] = np.ones(2)
    assert rk.load_tf_variables(layer, arrays, "bidirectional_rnn", strict=False).unexpected == [
        "bidirectional_rnn/fw/gru_cell/extra"
    ]


def test_scope_hints_point_to_none_and_trailing_slashes_are_dropped() -> None:
    cell = rk.BasicLSTMCell(2, input_size=2)
    with pytest.raises(ValueError, match=r"did you mean scope=None\?"):
        rk.load_tf_variables(cell, _arrays(cell, None), scope="rnn")
    assert rk.load_tf_variables(cell, _arrays(cell, "enc/rnn"), scope="enc/rnn/") == rk.LoadResult([], [], [])


def test_only_the_arrays_some_weight_takes_are_converted() -> None:
    cell = rk.GRUCell(2, input_size=2)
    arrays = dict(_arrays(cell), **{"other/step": np.array(3), "other/names": "not an array"})
    assert rk.load_tf_variables(cell, arrays) == rk.LoadResult([], [], [])
    model = torch.nn.ModuleDict({"rnn": rk.RNN(rk.GRUCell(2)), "head": torch.nn.Linear(2, 3)})
    source = torch.nn.Linear(2, 3)
    arrays["head/kernel"], arrays["head/bias"] = source.weight.detach().numpy().T, source.bias.detach().numpy()
    names = {"head.weight": ("head/kernel", "T"), "head.bias": "head/bias"}
    assert rk.load_tf_variables(model, arrays, scope={"rnn": "rnn"}, names=names) == rk.LoadResult([], [], [])
    assert torch.equal(model["head"].weight, source.weight) and torch.equal(model["rnn"].cell.gates.kernel, cell.gates.kernel)
