"""Keras 3 .weights.h5 LSTM/GRU layers: rnnkit's cells compute what Keras' equations compute.

The files are written here with h5py in Keras 3's layout; the reference is a NumPy transcription
of Keras' LSTM and GRU equations (gate orders i, f, c, o and z, r, h)."""

from __future__ import annotations

import h5py  # the rnnkit[keras] extra; the test extra installs it
import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.interop.keras import keras_layer_names, load_keras_rnn

RNG = np.random.default_rng(0)
D, U, B, T = 3, 4, 2, 5


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _keras_lstm(x, kernel, recurrent, bias):
    h, c, out = np.zeros((B, U)), np.zeros((B, U)), []
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def _keras_gru(x, kernel, recurrent, bias, reset_after):
    h, out = np.zeros((B, U)), []
    for t in range(T):
        if reset_after:
            xz, xr, xh = np.split(x[:, t] @ kernel + bias[0], 3, axis=1)
            hz, hr, hh = np.split(h @ recurrent + bias[1], 3, axis=1)
            z, r = _sigmoid(xz + hz), _sigmoid(xr + hr)
            candidate = np.tanh(xh + r * hh)
        else:
            xz, xr, xh = np.split(x[:, t] @ kernel + bias, 3, axis=1)
            uz, ur, uh = np.split(recurrent, 3, axis=1)
            z, r = _sigmoid(xz + h @ uz), _sigmoid(xr + h @ ur)
            candidate = np.tanh(xh + (r * h) @ uh)
        h = z * h + (1 - z) * candidate
        out.append(h)
    return np.stack(out, 1)


def _write(path, layers):
    with h5py.File(path, "w") as file:
        for name, variables in layers.items():
            group = file.create_group(f"layers/{name}/cell/vars")
            for i, value in enumerate(variables):
                group.create_dataset(str(i), data=value)


@pytest.fixture()
def weights(tmp_path):
    layers = {
        "lstm": [RNG.normal(size=(D, 4 * U)), RNG.normal(size=(U, 4 * U)), RNG.normal(size=4 * U)],
        "gru": [RNG.normal(size=(D, 3 * U)), RNG.normal(size=(U, 3 * U)), RNG.normal(size=(2, 3 * U))],
        "gru_1": [RNG.normal(size=(D, 3 * U)), RNG.normal(size=(U, 3 * U)), RNG.normal(size=3 * U)],
    }
    path = tmp_path / "model.weights.h5"
    _write(path, layers)
    return path, layers


def test_lstm_and_both_grus_match_keras(weights) -> None:
    path, layers = weights
    assert keras_layer_names(path) == ["gru", "gru_1", "lstm"]
    x = RNG.normal(size=(B, T, D))
    references = {
        "lstm": _keras_lstm(x, *layers["lstm"]),
        "gru": _keras_gru(x, *layers["gru"], reset_after=True),
        "gru_1": _keras_gru(x, *layers["gru_1"], reset_after=False),
    }
    for name, expected in references.items():
        cell = load_keras_rnn(path, name, "lstm" if name == "lstm" else "gru")
        out, _ = rk.dynamic_rnn(cell, torch.from_numpy(x))
        torch.testing.assert_close(out, torch.from_numpy(expected), rtol=1e-12, atol=1e-12, msg=name)
    assert load_keras_rnn(path, "gru", "gru").reset_after and not load_keras_rnn(path, "gru_1", "gru").reset_after


def test_keras_errors(weights, tmp_path) -> None:
    path, _ = weights
    with pytest.raises(ValueError, match="no recurrent layer named 'dense'"):
        load_keras_rnn(path, "dense", "lstm")
    with pytest.raises(ValueError, match="kind must be"):
        load_keras_rnn(path, "lstm", "rnn")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_keras_rnn(tmp_path / "bad.h5", "lstm", "lstm")
