"""load_tf_checkpoint on whole models (issue 13): rnnkit cells found inside any nn.Module by
their TF names under their scopes, every other parameter through a name map, strict checks
before anything changes; and, for a cell alone, "unexpected" limited to the cell's subtree."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import rnnkit as rk
from rnnkit.interop.tf_load import load_tf_checkpoint

from .tf_bundle import write_bundle

V, H = 13, 6  # vocabulary, units
NAMES = {"embedding.weight": "embedding", "softmax_w": "rnnlm/softmax_w", "softmax_b": "rnnlm/softmax_b"}


class CharRNN(nn.Module):
    """sherjilozair/char-rnn's model: embedding outside the scope, cell and softmax under rnnlm/."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, H, dtype=dtype)
        self.cell = rk.MultiRNNCell([rk.BasicLSTMCell(H), rk.BasicLSTMCell(H)])  # lazy: built by the load
        self.softmax_w = nn.Parameter(torch.zeros(H, V, dtype=dtype))
        self.softmax_b = nn.Parameter(torch.zeros(V, dtype=dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outputs, _ = rk.dynamic_rnn(self.cell, self.embedding(ids), dtype=self.softmax_w.dtype)
        return outputs @ self.softmax_w + self.softmax_b


def _char_rnn_variables(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"embedding": rng.standard_normal((V, H)), "rnnlm/softmax_w": rng.standard_normal((H, V)),
           "rnnlm/softmax_b": rng.standard_normal(V)}
    for i in range(2):
        out[f"rnnlm/multi_rnn_cell/cell_{i}/basic_lstm_cell/kernel"] = rng.standard_normal((2 * H, 4 * H))
        out[f"rnnlm/multi_rnn_cell/cell_{i}/basic_lstm_cell/bias"] = rng.standard_normal(4 * H)
    return {name: value.astype(np.float32) for name, value in out.items()}


def _with_optimizer(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    saved = dict(variables)
    for name, value in variables.items():
        saved[f"{name}/Adam"] = np.zeros_like(value)
        saved[f"{name}/Adam_1"] = np.zeros_like(value)
    saved["global_step"] = np.array(100, dtype=np.int64)
    saved["rnnlm/beta1_power"] = np.array(0.9, dtype=np.float32)
    return saved


@pytest.fixture
def char_rnn_ckpt(tmp_path):
    variables = _char_rnn_variables()
    write_bundle(tmp_path / "model.ckpt-100", _with_optimizer(variables))
    return tmp_path / "model.ckpt-100", variables


def _reference_logits(variables: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """The char-rnn forward pass in numpy: TF's BasicLSTMCell math, forget bias 1."""
    x = variables["embedding"][ids].astype(np.float64)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for i in range(2):
        kernel = variables[f"rnnlm/multi_rnn_cell/cell_{i}/basic_lstm_cell/kernel"]
        bias = variables[f"rnnlm/multi_rnn_cell/cell_{i}/basic_lstm_cell/bias"]
        c = h = np.zeros((x.shape[0], H))
        outs = []
        for t in range(x.shape[1]):
            gates = np.concatenate([x[:, t], h], axis=1) @ kernel + bias
            gi, gj, gf, go = np.split(gates, 4, axis=1)
            c = c * sigmoid(gf + 1.0) + sigmoid(gi) * np.tanh(gj)
            h = np.tanh(c) * sigmoid(go)
            outs.append(h)
        x = np.stack(outs, axis=1)
    return x @ variables["rnnlm/softmax_w"] + variables["rnnlm/softmax_b"]


def test_one_call_loads_a_char_rnn_model(char_rnn_ckpt) -> None:
    path, variables = char_rnn_ckpt
    model = CharRNN()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no read-only-array or other warnings
        result = load_tf_checkpoint(model, path, scope="rnnlm", names=NAMES)
    assert result == rk.LoadResult([], [], [])
    assert np.array_equal(model.embedding.weight.detach().numpy(), variables["embedding"])
    assert np.array_equal(model.softmax_w.detach().numpy(), variables["rnnlm/softmax_w"])
    assert np.array_equal(model.cell.cells[1].kernel.detach().numpy(),
                          variables["rnnlm/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"])
    assert isinstance(model.softmax_w, nn.Parameter) and model.softmax_w.requires_grad
    ids = np.random.default_rng(1).integers(0, V, size=(3, 5))
    logits = model(torch.from_numpy(ids)).detach().numpy()
    np.testing.assert_allclose(logits, _reference_logits(variables, ids), rtol=1e-5, atol=1e-5)
    model(torch.from_numpy(ids)).sum().backward()  # the loaded parameters still train
    assert model.embedding.weight.grad is not None


def test_values_are_copied_into_the_existing_parameters_in_their_dtype(char_rnn_ckpt) -> None:
    path, variables = char_rnn_ckpt
    model = CharRNN(dtype=torch.float64)
    embedding = model.embedding.weight
    load_tf_checkpoint(model, path, scope="rnnlm", names=NAMES)
    assert model.embedding.weight is embedding and embedding.dtype == torch.float64
    assert torch.equal(embedding.detach(), torch.from_numpy(variables["embedding"]).double())
    assert model.cell.cells[0].kernel.dtype == torch.float32  # a lazy cell without dtype: the checkpoint's


def test_a_callable_name_map_and_transposed_linear_weights(tmp_path) -> None:
    variables = _char_rnn_variables(seed=2)
    write_bundle(tmp_path / "m", variables)

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(V, H)
            self.rnn = rk.RNN(rk.MultiRNNCell([rk.BasicLSTMCell(H), rk.BasicLSTMCell(H)]))
            self.out = nn.Linear(H, V)  # weight [V, H]: TF's softmax_w [H, V] transposed

    def tf_name(name: str):
        return {"embed.weight": "embedding", "out.weight": ("rnnlm/softmax_w", "T"),
                "out.bias": ("rnnlm/softmax_b", lambda b: b * 2)}.get(name)

    model = Linear()
    assert load_tf_checkpoint(model, tmp_path / "m", scope="rnnlm", names=tf_name) == rk.LoadResult([], [], [])
    assert np.array_equal(model.out.weight.detach().numpy(), variables["rnnlm/softmax_w"].T)
    assert np.array_equal(model.out.bias.detach().numpy(), variables["rnnlm/softmax_b"] * 2)
    assert model.rnn.cell.cells[0].input_size == H

    with pytest.raises(ValueError) as info:  # without the "T": mis-shaped, and the fix is named
        load_tf_checkpoint(Linear(), tmp_path / "m", scope="rnnlm",
                           names={"embed.weight": "embedding", "out.weight": "rnnlm/softmax_w",
                                  "out.bias": "rnnlm/softmax_b"})
    assert (f"rnnlm/softmax_w (for out.weight): expected shape [{V}, {H}], got [{H}, {V}]"
            " (transposed: names['out.weight'] = ('rnnlm/softmax_w', 'T'))") in str(info.value)


def test_strict_lists_everything_in_one_error_and_changes_nothing(tmp_path) -> None:
    variables = _char_rnn_variables(seed=3)
    del variables["rnnlm/multi_rnn_cell/cell_1/basic_lstm_cell/bias"]
    variables["rnnlm/softmax_w"] = np.zeros((H + 1, V), np.float32)
    variables["rnnlm/extra/dense/kernel"] = np.zeros((2, 2), np.float32)
    variables["elsewhere/kernel"] = np.zeros(2, np.float32)  # outside the scope and the map: ignored
    write_bundle(tmp_path / "bad", _with_optimizer(variables))
    model = CharRNN()
    before = {name: p.detach().clone() for name, p in model.named_parameters()
              if not isinstance(p, nn.parameter.UninitializedParameter)}
    with pytest.raises(ValueError) as info:
        load_tf_checkpoint(model, tmp_path / "bad", scope="rnnlm",
                           names={"embedding.weight": "embedding", "softmax_w": "rnnlm/softmax_w"})
    message = str(info.value)
    assert message.startswith("load_tf_checkpoint(scope='rnnlm'): the checkpoint does not match the model's parameters.")
    assert ("missing (2):\n  rnnlm/multi_rnn_cell/cell_1/basic_lstm_cell/bias\n"
            "  softmax_b (no TF name: give it one in names=)") in message
    assert "unexpected (2):\n  rnnlm/extra/dense/kernel\n  rnnlm/softmax_b\n" in message
    assert f"mis-shaped (1):\n  rnnlm/softmax_w (for softmax_w): expected shape [{H}, {V}], got [{H + 1}, {V}]" in message
    assert "Adam" not in message and "global_step" not in message and "elsewhere" not in message
    assert not model.cell.cells[0].built  # the lazy cells were not built
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters() if name in before)

    result = load_tf_checkpoint(model, tmp_path / "bad", scope="rnnlm", strict=False,
                                names={"embedding.weight": "embedding", "softmax_w": "rnnlm/softmax_w"})
    assert len(result.missing) == 2 and len(result.unexpected) == 2 and len(result.mismatched) == 1
    assert np.array_equal(model.embedding.weight.detach().numpy(), variables["embedding"])
    assert torch.equal(model.softmax_w.detach(), before["softmax_w"])


def test_a_cell_alone_ignores_the_variables_beside_it(char_rnn_ckpt, tmp_path) -> None:
    path, variables = char_rnn_ckpt
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(H), rk.BasicLSTMCell(H)])
    assert rk.load_tf_checkpoint(cell, path, scope="rnnlm") == rk.LoadResult([], [], [])  # softmax_w: not its business
    assert np.array_equal(cell.cells[0].bias.detach().numpy(), variables["rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/bias"])
    extra = dict(variables, **{"rnnlm/multi_rnn_cell/cell_2/basic_lstm_cell/kernel": np.zeros((12, 24), np.float32)})
    write_bundle(tmp_path / "three", extra)
    with pytest.raises(ValueError, match=r"unexpected \(1\):\n  rnnlm/multi_rnn_cell/cell_2/basic_lstm_cell/kernel$"):
        rk.load_tf_checkpoint(rk.MultiRNNCell([rk.BasicLSTMCell(H), rk.BasicLSTMCell(H)]), tmp_path / "three", "rnnlm")
    with pytest.raises(ValueError) as info:  # the wrong cell type: what the scope does hold is shown
        rk.load_tf_checkpoint(rk.GRUCell(H), path, scope="rnnlm")
    assert "missing (4):" in str(info.value) and "unexpected" not in str(info.value)
    assert "also holds these beside the cell" in str(info.value) and "rnnlm/multi_rnn_cell/cell_0" in str(info.value)


def test_the_scope_hint_reaches_load_tf_checkpoint(char_rnn_ckpt, tmp_path) -> None:
    path, variables = char_rnn_ckpt
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(H), rk.BasicLSTMCell(H)])
    with pytest.raises(ValueError, match=r"did you mean scope='rnnlm'\?"):
        rk.load_tf_checkpoint(cell, path, scope="rnn")  # the default scope, which char-rnn does not use
    with pytest.raises(ValueError, match=r"did you mean scope='rnnlm'\?"):
        rk.load_tf_checkpoint(cell, path, scope=None)
    top = {name[len("rnnlm/"):]: v for name, v in variables.items() if name.startswith("rnnlm/multi")}
    write_bundle(tmp_path / "top", top)
    with pytest.raises(ValueError, match=r"did you mean scope=None\?"):
        rk.load_tf_checkpoint(cell, tmp_path / "top", scope="rnnlm")
    with pytest.raises(ValueError, match=r"names\['softmax_w'\] = 'rnnlm/softmax_w'\?"):
        load_tf_checkpoint(CharRNN(), path, scope="rnnlm", names={**NAMES, "softmax_w": "softmax_w"})


def _bidirectional_variables(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"proj/weights": rng.standard_normal((2 * H, 3)).astype(np.float32)}  # TF 1.0's dense name
    for direction in ("fw", "bw"):
        out[f"tagger/bidirectional_rnn/{direction}/lstm_cell/kernel"] = rng.standard_normal((4 + H, 4 * H)).astype(np.float32)
        out[f"tagger/bidirectional_rnn/{direction}/lstm_cell/bias"] = rng.standard_normal(4 * H).astype(np.float32)
    return out


def test_a_scope_per_cell_and_a_bidirectional_layer(tmp_path) -> None:
    variables = _bidirectional_variables(seed=4)
    write_bundle(tmp_path / "bi", variables)

    class TwoCells(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fw, self.bw = rk.LSTMCell(H), rk.LSTMCell(H)
            self.proj = nn.Parameter(torch.zeros(2 * H, 3))

    scopes = {"fw": "tagger/bidirectional_rnn/fw", "bw": "tagger/bidirectional_rnn/bw"}
    model = TwoCells()
    result = load_tf_checkpoint(model, tmp_path / "bi", scope=scopes, names={"proj": "proj/weights"})
    assert result == rk.LoadResult([], [], [])  # proj/weights kept its own name: not renamed to kernel
    assert np.array_equal(model.bw.kernel.detach().numpy(), variables["tagger/bidirectional_rnn/bw/lstm_cell/kernel"])
    assert np.array_equal(model.proj.detach().numpy(), variables["proj/weights"])

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = rk.BidirectionalRNN(rk.LSTMCell(H), rk.LSTMCell(H))
            self.proj = nn.Parameter(torch.zeros(2 * H, 3))

    layered = Layer()
    load_tf_checkpoint(layered, tmp_path / "bi", scope="tagger/bidirectional_rnn", names={"proj": "proj/weights"})
    assert torch.equal(layered.encoder.cell_fw.kernel, model.fw.kernel)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(layered.encoder(x)[0][1], rk.bidirectional_dynamic_rnn(model.fw, model.bw, x)[0][1])

    with pytest.raises(ValueError, match=r"both take the TF name 'tagger/lstm_cell/kernel'"):
        load_tf_checkpoint(TwoCells(), tmp_path / "bi", scope="tagger", names={"proj": "proj/weights"})
    with pytest.raises(ValueError, match=r"exactly \['fw', 'bw'\]; it lacks \['bw'\] and has unknown \['back'\]"):
        load_tf_checkpoint(TwoCells(), tmp_path / "bi", scope={"fw": "a", "back": "b"})
    with pytest.raises(ValueError, match=r"did you mean scope='tagger/bidirectional_rnn/bw' or "
                                         r"scope='tagger/bidirectional_rnn/fw'\?"):
        rk.load_tf_checkpoint(rk.LSTMCell(H), tmp_path / "bi", scope="tagger")


def test_bad_name_maps_are_refused_before_reading(char_rnn_ckpt) -> None:
    path, _ = char_rnn_ckpt
    with pytest.raises(ValueError, match=r"\['softmax'\] are not parameter names of the model \(those outside "
                                         r"its rnnkit cells: softmax_w, softmax_b, embedding.weight\)"):
        load_tf_checkpoint(CharRNN(), path, scope="rnnlm", names={**NAMES, "softmax": "rnnlm/softmax_w"})
    with pytest.raises(ValueError, match=r"\['cell.cells.0.kernel'\] belong to rnnkit cells"):
        load_tf_checkpoint(CharRNN(), path, scope="rnnlm", names={**NAMES, "cell.cells.0.kernel": "k"})
    with pytest.raises(TypeError, match=r"names\['softmax_b'\] must be a TF variable name or \(name, 'T' or a callable\)"):
        load_tf_checkpoint(CharRNN(), path, scope="rnnlm", names={**NAMES, "softmax_b": ("rnnlm/softmax_b", "transpose")})
    with pytest.raises(ValueError, match=r"'softmax_w' and 'softmax_b' both take the TF name 'rnnlm/softmax_w'"):
        load_tf_checkpoint(CharRNN(), path, scope="rnnlm", names={**NAMES, "softmax_b": "rnnlm/softmax_w"})
    with pytest.raises(ValueError, match=r"'softmax_w' takes 'rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/bias', "
                                         r"a weight of the cell 'cell'"):
        load_tf_checkpoint(CharRNN(), path, scope="rnnlm",
                           names={**NAMES, "softmax_w": "rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/bias"})
    with pytest.raises(TypeError, match="cell must be an rnnkit cell or layer, or an nn.Module holding them, got dict"):
        load_tf_checkpoint({"a": 1}, path)  # type: ignore[arg-type]


def test_tied_weights_take_either_name(tmp_path) -> None:
    rng = np.random.default_rng(5)
    table = rng.standard_normal((V, H)).astype(np.float32)
    write_bundle(tmp_path / "tied", {"embedding": table})

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(V, H)
            self.out = nn.Linear(H, V, bias=False)
            self.out.weight = self.embed.weight

    model = Tied()
    assert load_tf_checkpoint(model, tmp_path / "tied", scope=None, names={"out.weight": "embedding"}).missing == []
    assert np.array_equal(model.embed.weight.detach().numpy(), table)


def test_a_lazy_torch_parameter_is_named_not_guessed(tmp_path) -> None:
    write_bundle(tmp_path / "lazy", {"dense/kernel": np.ones((3, 4), np.float32)})

    class Lazy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.LazyLinear(3, bias=False)

    with pytest.raises(ValueError, match=r"dense/kernel \(for dense.weight\): expected shape unknown \(an "
                                         r"uninitialized lazy parameter"):
        load_tf_checkpoint(Lazy(), tmp_path / "lazy", scope=None, names={"dense.weight": "dense/kernel"})


def test_load_tf_variables_takes_a_model_too() -> None:
    variables = _char_rnn_variables(seed=6)
    model = CharRNN()
    arrays = {**variables, "rnnlm/counter": np.array(3)}  # an integer array nothing takes: not read
    with pytest.raises(ValueError, match=r"load_tf_variables\(scope='rnnlm'\).*\n.*\n  rnnlm/counter"):
        rk.load_tf_variables(model, arrays, scope="rnnlm", names=NAMES)
    del arrays["rnnlm/counter"]
    assert rk.load_tf_variables(model, arrays, scope="rnnlm", names=NAMES) == rk.LoadResult([], [], [])
    assert np.array_equal(model.softmax_b.detach().numpy(), variables["rnnlm/softmax_b"])
