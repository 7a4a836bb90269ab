""".keras archives and .weights.h5 files that say what they hold: activations, use_bias,
go_backwards, return_sequences/return_state, GRU reset_after, Bidirectional.

The archives are written here with zipfile, json and h5py in Keras 3's layout (``config.json``,
``metadata.json``, ``model.weights.h5`` with ``layers/<snake_case class>[_n]/cell/vars/<i>``);
the expected outputs come from an independent NumPy float64 transcription of Keras 3's LSTM,
GRU and Bidirectional (gate orders i, f, c, o and z, r, h; ``hard_sigmoid`` = ``clip(x/6 + 0.5,
0, 1)``)."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.interop.keras import (
    FormatError,
    KerasRNN,
    keras_layer_names,
    load_keras_layer,
    load_keras_model,
    load_keras_rnn,
)

D, U, B, T = 3, 4, 2, 6

ACTIVATIONS = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x,
}


# ---------------------------------------------------------------------------------------------
# Keras' math, transcribed


def _keras_rnn(x, kind, variables, activation="tanh", recurrent_activation="sigmoid", reset_after=True,
               go_backwards=False, return_sequences=False):
    """A Keras 3 LSTM/GRU layer on x [B, T, D]: (output, states)."""
    act, gate = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    kernel, recurrent = variables[0], variables[1]
    bias = variables[2] if len(variables) == 3 else None
    steps = x[:, ::-1] if go_backwards else x
    h, c, outputs = np.zeros((x.shape[0], U)), np.zeros((x.shape[0], U)), []
    for t in range(steps.shape[1]):
        xt = steps[:, t]
        if kind == "lstm":
            z = xt @ kernel + h @ recurrent + (0 if bias is None else bias)
            zi, zf, zc, zo = np.split(z, 4, axis=1)
            c = gate(zf) * c + gate(zi) * act(zc)
            h = gate(zo) * act(c)
        elif reset_after:
            b_in, b_rec = (0, 0) if bias is None else (bias[0], bias[1])
            xz, xr, xh = np.split(xt @ kernel + b_in, 3, axis=1)
            hz, hr, hh = np.split(h @ recurrent + b_rec, 3, axis=1)
            z, r = gate(xz + hz), gate(xr + hr)
            h = z * h + (1 - z) * act(xh + r * hh)
        else:
            xz, xr, xh = np.split(xt @ kernel + (0 if bias is None else bias), 3, axis=1)
            uz, ur, uh = np.split(recurrent, 3, axis=1)
            z, r = gate(xz + h @ uz), gate(xr + h @ ur)
            h = z * h + (1 - z) * act(xh + (r * h) @ uh)
        outputs.append(h)
    output = np.stack(outputs, 1) if return_sequences else outputs[-1]
    return output, ([h, c] if kind == "lstm" else [h])


def _variables(rng, kind, use_bias=True, reset_after=True, depth=D):
    k = 4 if kind == "lstm" else 3
    variables = [rng.normal(size=(depth, k * U)), rng.normal(size=(U, k * U)) * 0.5]
    if use_bias:
        variables.append(rng.normal(size=(2, k * U) if kind == "gru" and reset_after else k * U))
    return variables


# ---------------------------------------------------------------------------------------------
# Keras 3's files, written


def _layer_config(kind, name, **options):
    config = {
        "name": name, "trainable": True, "dtype": "float32", "units": U,
        "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
        "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {}},
        "unit_forget_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0, "seed": None,
        "return_sequences": False, "return_state": False, "go_backwards": False, "stateful": False,
        "unroll": False, "zero_output_for_mask": False,
    }
    if kind == "gru":
        del config["unit_forget_bias"]
        config["reset_after"] = True
    config.update(options)
    return {"module": "keras.layers", "class_name": kind.upper(), "config": config, "registered_name": None,
            "build_config": {"input_shape": [None, T, D]}}


def _put(file, path, variables, name=None):
    """A layer's variables at layers/<path>/cell/vars, with Keras' name attributes."""
    group = file.create_group(f"layers/{path}/cell/vars")
    for i, value in enumerate(variables):
        group.create_dataset(str(i), data=value.astype(np.float64))
    if name is not None:
        file.create_group(f"layers/{path}/vars").attrs["name"] = name
        group.attrs["name"] = f"{name}_cell"


def _archive(path, layers, weights, model="Sequential"):
    """A .keras archive: ``layers`` the config entries, ``weights(h5file)`` writes the variables."""
    entries = [{"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": [None, T, D], "dtype": "float32", "name": "input_layer"}}]
    entries += layers
    entries.append({"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 2}})
    config = {"module": "keras", "class_name": model, "config": {"name": "model", "trainable": True,
                                                                 "layers": entries}, "registered_name": None}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        weights(file)
        file.create_group("layers/dense/vars")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.8.0", "date_saved": "2025-01-01"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def _run(layer, x):
    result = layer(torch.from_numpy(x))
    return result


def _close(actual, expected, msg=""):
    torch.testing.assert_close(actual, torch.from_numpy(np.ascontiguousarray(expected)), rtol=1e-12, atol=1e-12,
                               msg=msg)


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_archive_layers_match_keras(tmp_path, kind, recurrent_activation, use_bias) -> None:
    """Two layers of one class (weights at ``lstm`` and ``lstm_1``), the second going backwards
    and returning sequences and states; activations and use_bias from config.json."""
    rng = np.random.default_rng(1)
    first, second = _variables(rng, kind, use_bias), _variables(rng, kind, use_bias, depth=U)
    options = {"recurrent_activation": recurrent_activation, "use_bias": use_bias}
    layers = [
        _layer_config(kind, "encoder", return_sequences=True, **options),
        _layer_config(kind, "decoder", activation="relu", go_backwards=True, return_sequences=True,
                      return_state=True, **options),
    ]

    def weights(file):
        _put(file, kind, first, "encoder")
        _put(file, f"{kind}_1", second, "decoder")

    path = _archive(tmp_path / "model.keras", layers, weights)
    loaded = load_keras_model(path)
    assert list(loaded) == ["encoder", "decoder"]
    encoder, decoder = loaded["encoder"], loaded["decoder"]
    assert isinstance(encoder, KerasRNN) and encoder.kind == kind and not encoder.go_backwards
    assert decoder.go_backwards and decoder.return_sequences and decoder.return_state
    assert encoder.cell.use_bias is use_bias and all("bias" not in n for n, _ in encoder.cell.named_parameters()) \
        is (not use_bias)

    x = np.random.default_rng(2).normal(size=(B, T, D))
    hidden, _ = _keras_rnn(x, kind, first, "tanh", recurrent_activation, return_sequences=True)
    expected, states = _keras_rnn(hidden, kind, second, "relu", recurrent_activation, go_backwards=True,
                                  return_sequences=True)
    middle = encoder(torch.from_numpy(x))
    _close(middle, hidden, "encoder")
    output, *got_states = decoder(middle)
    _close(output, expected, "decoder output")
    assert len(got_states) == len(states)
    for got, want in zip(got_states, states):
        _close(got, want, "decoder state")
    # the same layers by weights path, and as bare cells through dynamic_rnn
    assert load_keras_layer(path, f"{kind}_1").name == "decoder"
    cell = load_keras_rnn(path, "encoder")
    out, _ = rk.dynamic_rnn(cell, torch.from_numpy(x))
    _close(out, hidden, "cell")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_gru_reset_after_from_config(tmp_path, reset_after, use_bias) -> None:
    rng = np.random.default_rng(3)
    variables = _variables(rng, "gru", use_bias, reset_after)
    layers = [_layer_config("gru", "gru", reset_after=reset_after, use_bias=use_bias,
                            recurrent_activation="hard_sigmoid", return_sequences=True)]
    path = _archive(tmp_path / "gru.keras", layers, lambda f: _put(f, "gru", variables), model="Functional")
    layer = load_keras_layer(path, "gru", "gru")
    assert layer.cell.reset_after is reset_after
    x = np.random.default_rng(4).normal(size=(B, T, D))
    expected, _ = _keras_rnn(x, "gru", variables, "tanh", "hard_sigmoid", reset_after, return_sequences=True)
    _close(layer(torch.from_numpy(x)), expected)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_keras_bidirectional(tmp_path, merge_mode, return_sequences) -> None:
    rng = np.random.default_rng(5)
    forward, backward = _variables(rng, "lstm"), _variables(rng, "lstm")
    inner = dict(recurrent_activation="hard_sigmoid", return_sequences=return_sequences, return_state=True)
    entry = {"module": "keras.layers", "class_name": "Bidirectional", "registered_name": None, "config": {
        "name": "bidirectional", "merge_mode": merge_mode,
        "layer": _layer_config("lstm", "forward_lstm", **inner),
        "backward_layer": _layer_config("lstm", "backward_lstm", go_backwards=True, **inner),
    }}

    def weights(file):
        _put(file, "bidirectional/forward_layer", forward, "forward_lstm")
        _put(file, "bidirectional/backward_layer", backward, "backward_lstm")

    path = _archive(tmp_path / "bi.keras", [entry], weights)
    assert keras_layer_names(path) == ["bidirectional/backward_layer", "bidirectional/forward_layer"]
    layer = load_keras_model(path)["bidirectional"]
    assert layer.bidirectional and layer.merge_mode == merge_mode and layer.backward.go_backwards

    x = np.random.default_rng(6).normal(size=(B, T, D))
    y, fw_states = _keras_rnn(x, "lstm", forward, "tanh", "hard_sigmoid", return_sequences=return_sequences)
    y_rev, bw_states = _keras_rnn(x, "lstm", backward, "tanh", "hard_sigmoid", go_backwards=True,
                                  return_sequences=return_sequences)
    if return_sequences:
        y_rev = y_rev[:, ::-1]
    merged = {"concat": [np.concatenate([y, y_rev], -1)], "sum": [y + y_rev], "ave": [(y + y_rev) / 2],
              "mul": [y * y_rev], None: [y, y_rev]}[merge_mode]
    result = layer(torch.from_numpy(x))
    expected = merged + fw_states + bw_states
    assert len(result) == len(expected)
    for got, want in zip(result, expected):
        _close(got, want)
    half = load_keras_layer(path, "bidirectional/backward_layer")
    assert half.go_backwards and not half.bidirectional


def test_keras_bidirectional_weights_file_and_rnn_over_cell(tmp_path) -> None:
    rng = np.random.default_rng(7)
    forward, backward = _variables(rng, "gru", reset_after=False), _variables(rng, "gru", reset_after=False)
    path = tmp_path / "bi.weights.h5"
    with h5py.File(path, "w") as file:
        _put(file, "bidirectional/forward_layer", forward)
        _put(file, "bidirectional/backward_layer", backward)
    assert keras_layer_names(path) == ["bidirectional/backward_layer", "bidirectional/forward_layer"]
    layer = load_keras_layer(path, "bidirectional", "gru", return_sequences=True)
    x = np.random.default_rng(8).normal(size=(B, T, D))
    y, _ = _keras_rnn(x, "gru", forward, reset_after=False, return_sequences=True)
    y_rev, _ = _keras_rnn(x, "gru", backward, reset_after=False, go_backwards=True, return_sequences=True)
    _close(layer(torch.from_numpy(x)), np.concatenate([y, y_rev[:, ::-1]], -1))

    # keras.layers.RNN(keras.layers.LSTMCell(...)): weights at layers/rnn/cell/vars
    variables = _variables(rng, "lstm")
    cell_config = _layer_config("lstm", "lstm_cell", recurrent_activation="hard_sigmoid")["config"]
    entry = {"module": "keras.layers", "class_name": "RNN", "config": {
        "name": "rnn", "return_sequences": True, "go_backwards": False,
        "cell": {"module": "keras.layers", "class_name": "LSTMCell", "config": cell_config}}}
    archive = _archive(tmp_path / "rnn.keras", [entry], lambda f: _put(f, "rnn", variables))
    expected, _ = _keras_rnn(x, "lstm", variables, recurrent_activation="hard_sigmoid", return_sequences=True)
    _close(load_keras_model(archive)["rnn"](torch.from_numpy(x)), expected)


def test_weights_file_options(tmp_path) -> None:
    """A bare .weights.h5: options as arguments (Keras 3 defaults), use_bias from the shapes."""
    rng = np.random.default_rng(9)
    with_bias, without = _variables(rng, "lstm"), _variables(rng, "lstm", use_bias=False)
    gru = _variables(rng, "gru", use_bias=False)
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as file:
        _put(file, "lstm", with_bias)
        _put(file, "lstm_1", without)
        _put(file, "gru", gru)
    x = np.random.default_rng(10).normal(size=(B, T, D))
    for name, variables in (("lstm", with_bias), ("lstm_1", without)):
        for gate in ("sigmoid", "hard_sigmoid"):
            layer = load_keras_layer(path, name, "lstm", recurrent_activation=gate, return_sequences=True)
            _close(layer(torch.from_numpy(x)), _keras_rnn(x, "lstm", variables, "tanh", gate,
                                                          return_sequences=True)[0], f"{name} {gate}")
    # the silent 0.1 of issue 13: hard_sigmoid read as sigmoid differs
    plain = load_keras_rnn(path, "lstm", "lstm")
    hard = load_keras_rnn(path, "lstm", "lstm", recurrent_activation="hard_sigmoid")
    assert not torch.allclose(rk.dynamic_rnn(plain, torch.from_numpy(x))[0], rk.dynamic_rnn(hard, torch.from_numpy(x))[0])
    # Keras 2's hard_sigmoid as a callable
    keras2 = load_keras_rnn(path, "lstm", "lstm", recurrent_activation=lambda v: (0.2 * v + 0.5).clamp(0, 1))
    ACTIVATIONS["keras2"] = lambda v: np.clip(0.2 * v + 0.5, 0, 1)
    try:
        _close(rk.dynamic_rnn(keras2, torch.from_numpy(x))[0],
               _keras_rnn(x, "lstm", with_bias, "tanh", "keras2", return_sequences=True)[0])
    finally:
        del ACTIVATIONS["keras2"]
    cell = load_keras_rnn(path, "gru", "gru")  # bias-free: reset_after=True unless told
    assert cell.reset_after and not cell.use_bias
    _close(rk.dynamic_rnn(cell, torch.from_numpy(x))[0], _keras_rnn(x, "gru", gru, return_sequences=True)[0])
    cell = load_keras_rnn(path, "gru", "gru", reset_after=False)
    _close(rk.dynamic_rnn(cell, torch.from_numpy(x))[0],
           _keras_rnn(x, "gru", gru, reset_after=False, return_sequences=True)[0])
    with pytest.raises(FormatError, match="use_bias is True but the weights hold 2 variables"):
        load_keras_rnn(path, "lstm_1", "lstm", use_bias=True)
    with pytest.raises(ValueError, match="give kind="):
        load_keras_layer(path, "lstm")
    backwards = load_keras_layer(path, "lstm", "lstm", go_backwards=True)
    _close(backwards(torch.from_numpy(x)), _keras_rnn(x, "lstm", with_bias, go_backwards=True)[0])
    with pytest.raises(ValueError, match="go_backwards=True, which a cell alone does not run"):
        load_keras_rnn(path, "lstm", "lstm", go_backwards=True)


def test_loaded_cells_stay_bias_free_and_run_fused_on_the_cpu(tmp_path) -> None:
    rng = np.random.default_rng(11)
    variables = _variables(rng, "lstm", use_bias=False)
    layers = [_layer_config("lstm", "lstm", use_bias=False, recurrent_activation="hard_sigmoid")]
    path = _archive(tmp_path / "m.keras", layers, lambda f: _put(f, "lstm", variables))
    cell = load_keras_rnn(path, "lstm", "lstm")
    assert sorted(rk.tf_variables(cell)) == ["rnn/lstm_cell/kernel"]
    assert [name for name, _ in cell.named_parameters()] == ["kernel"]
    x = torch.from_numpy(np.random.default_rng(12).normal(size=(B, T, D)))
    fused, _ = rk.dynamic_rnn(cell, x, backend="fused")  # the CPU loops take both options
    out, _ = rk.dynamic_rnn(cell, x, backend="reference")
    torch.testing.assert_close(fused, out, rtol=1e-10, atol=1e-12)
    out.sum().backward()
    torch.optim.SGD(cell.parameters(), lr=0.1).step()
    assert [name for name, _ in cell.named_parameters()] == ["kernel"]


def _one_lstm(tmp_path, name="m.keras", **options):
    variables = _variables(np.random.default_rng(13), "lstm")
    return _archive(tmp_path / name, [_layer_config("lstm", "lstm", **options)],
                    lambda f: _put(f, "lstm", variables, "lstm"))


def test_keras_archive_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="activation 'exponential' has no rnnkit equivalent"):
        load_keras_model(_one_lstm(tmp_path, activation="exponential"))
    custom = {"module": None, "class_name": "MyActivation", "config": {}, "registered_name": "MyActivation"}
    with pytest.raises(ValueError, match="not a Keras built-in activation"):
        load_keras_model(_one_lstm(tmp_path, recurrent_activation=custom))
    dict_form = {"module": "keras.activations", "class_name": "function", "config": "hard_sigmoid",
                 "registered_name": None}
    assert load_keras_model(_one_lstm(tmp_path, recurrent_activation=dict_form))["lstm"].cell.gate_activation \
        is torch.nn.functional.hardsigmoid
    assert load_keras_model(_one_lstm(tmp_path, activation=None))["lstm"].cell.activation(torch.tensor(-3.0)) == -3
    with pytest.raises(FormatError, match="units is 'four'"):
        load_keras_model(_one_lstm(tmp_path, units="four"))
    with pytest.raises(FormatError, match=r"m.keras: layer .lstm.: the kernel has shape \[3, 16\], expected \[3, 20\]"):
        load_keras_model(_one_lstm(tmp_path, units=5))
    with pytest.raises(FormatError, match="use_bias is False but the weights hold 3"):
        load_keras_model(_one_lstm(tmp_path, use_bias=False))
    with pytest.raises(FormatError, match="go_backwards is 'yes'"):
        load_keras_model(_one_lstm(tmp_path, go_backwards="yes"))
    path = _one_lstm(tmp_path)
    with pytest.raises(ValueError, match="drop \\['recurrent_activation'\\]"):
        load_keras_layer(path, "lstm", recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="is a LSTM, not kind='gru'"):
        load_keras_layer(path, "lstm", "gru")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        load_keras_layer(path, "nope")
    with pytest.raises(ValueError, match="a Dense layer"):
        load_keras_layer(path, "dense")
    # weights that belong to another layer
    variables = _variables(np.random.default_rng(14), "lstm")
    swapped = _archive(tmp_path / "swapped.keras", [_layer_config("lstm", "lstm")],
                       lambda f: _put(f, "lstm", variables, "other"))
    with pytest.raises(FormatError, match="belong to layer 'other'"):
        load_keras_model(swapped)
    # not archives, broken archives
    (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FormatError, match="junk.keras"):
        load_keras_model(tmp_path / "junk.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(FormatError, match="empty.keras: not a Keras 3 archive"):
        load_keras_model(tmp_path / "empty.keras")
    with zipfile.ZipFile(tmp_path / "badjson.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(FormatError, match="config.json is not JSON"):
        load_keras_model(tmp_path / "badjson.keras")
    with zipfile.ZipFile(tmp_path / "badh5.keras", "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        archive.writestr("model.weights.h5", b"not hdf5")
    with pytest.raises(FormatError, match="badh5.keras: model.weights.h5: not a readable HDF5 file"):
        load_keras_model(tmp_path / "badh5.keras")
    with zipfile.ZipFile(tmp_path / "sub.keras", "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "MyModel", "config": {}}))
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(FormatError, match="lists no layers"):
        load_keras_model(tmp_path / "sub.keras")
    h5 = tmp_path / "w.weights.h5"
    with h5py.File(h5, "w") as file:
        file.create_group("layers/lstm/cell/vars").create_dataset("0", data=np.zeros((D, 4 * U)))
    with pytest.raises(FormatError, match="variables \\['0'\\]"):
        load_keras_rnn(h5, "lstm", "lstm")


def test_an_archive_whose_weights_inflate_beyond_reason_is_refused_unread(tmp_path) -> None:
    # 64 MiB of zeros bzip2-compress to a few hundred bytes: a bomb, refused by its entry's sizes
    path = tmp_path / "bomb.keras"
    config = {"class_name": "Sequential", "config": {"layers": []}}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", bytes(64 << 20))
    with pytest.raises(FormatError, match="bomb.keras: model.weights.h5 claims 67108864 bytes"):
        load_keras_model(path)
