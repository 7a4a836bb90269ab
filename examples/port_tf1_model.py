"""Porting a TF1 program: a whole model loaded from its checkpoint in one call, checked against
the outputs TensorFlow computed.

Run:  python examples/port_tf1_model.py

The TF1 program (a sequence tagger, as in guillaumegenthial/sequence_tagging) was::

    with tf.variable_scope("case"):
        cell = tf.nn.rnn_cell.MultiRNNCell([BasicLSTMCell(5), GRUCell(4), LSTMCell(3, use_peepholes=True)])
        outputs, state = tf.nn.dynamic_rnn(cell, inputs, sequence_length=lengths, initial_state=state0)
    with tf.variable_scope("proj"):
        W = tf.get_variable("W", [3, NUM_TAGS])
        b = tf.get_variable("b", [NUM_TAGS])
    logits = tf.matmul(tf.reshape(outputs, [-1, 3]), W) + b
    saver.save(sess, "model.weights/")          # files model.weights/.index, .data-00000-of-00001

Its recurrent part was run by TensorFlow itself: ``../shared/golden/`` holds the weights, the
inputs and TensorFlow's outputs. Here ``tests/tf_bundle.py`` (an independent writer of TF's
format) stands in for ``tf.train.Saver``, writing those weights, a projection and Adam's slots
under the same prefix the program used. The port is the class below: ``get_variable`` became
``nn.Parameter``, the variable scopes became one ``names=`` map, and nothing else changed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import rnnkit as rk

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden" / "multi_lstm_gru_peephole_seqlen.npz"
NUM_TAGS = 7


class Tagger(nn.Module):
    """The TF1 tagger, ported: the same cells, the projection as two Parameters (TF's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = rk.MultiRNNCell([rk.BasicLSTMCell(5), rk.GRUCell(4), rk.LSTMCell(3, use_peepholes=True)])
        self.W = nn.Parameter(torch.empty(3, NUM_TAGS, dtype=torch.float64))  # built by the load
        self.b = nn.Parameter(torch.empty(NUM_TAGS, dtype=torch.float64))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, state0: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, _ = rk.dynamic_rnn(self.cell, inputs, sequence_length=lengths, initial_state=state0)
        return outputs, outputs @ self.W + self.b  # [B, T, 3], [B, T, NUM_TAGS]


def write_tf1_checkpoint(prefix: str, golden: dict[str, np.ndarray], W: np.ndarray, b: np.ndarray) -> None:
    """What the TF1 program's ``saver.save(sess, prefix)`` wrote: every variable, Adam's slots too."""
    sys.path.insert(0, str(ROOT))
    from tests.tf_bundle import write_bundle

    variables = {name[len("var/"):]: value for name, value in golden.items() if name.startswith("var/")}
    variables.update({"proj/W": W, "proj/b": b})
    variables.update({f"{name}/Adam": np.zeros_like(value) for name, value in list(variables.items())})
    variables["global_step"] = np.array(1000, dtype=np.int64)
    Path(prefix).mkdir(parents=True, exist_ok=True)  # Saver makes the directory of a prefix
    write_bundle(prefix, variables)  # text, not a Path: Path would drop the trailing slash


def main() -> None:
    with np.load(GOLDEN) as data:
        golden = {key: data[key] for key in data.files}
    spec = json.loads(str(golden["spec"]))
    rng = np.random.default_rng(0)
    W, b = rng.standard_normal((3, NUM_TAGS)), rng.standard_normal(NUM_TAGS)
    with tempfile.TemporaryDirectory() as directory:
        prefix = f"{directory}/model.weights/"  # sequence_tagging's prefix: a trailing slash
        write_tf1_checkpoint(prefix, golden, W, b)

        model = Tagger()
        rk.load_tf_checkpoint(model, prefix, scope="case/rnn", names={"W": "proj/W", "b": "proj/b"})

    inputs = torch.from_numpy(golden["inputs"])
    lengths = torch.tensor(spec["sequence_length"])
    leaves = [torch.from_numpy(golden[f"initial_state/{i}"]) for i in range(5)]
    state0 = (rk.LSTMStateTuple(leaves[0], leaves[1]), leaves[2], rk.LSTMStateTuple(leaves[3], leaves[4]))
    with torch.no_grad():
        outputs, logits = model(inputs, lengths, state0)
    tf_outputs = golden["outputs"]
    tf_logits = tf_outputs @ W + b  # TF's logits: its outputs through the saved projection
    output_error = float(np.abs(outputs.numpy() - tf_outputs).max())
    logit_error = float(np.abs(logits.numpy() - tf_logits).max())
    print(f"loaded {sum(p.numel() for p in model.parameters())} weights from {prefix.split('/')[-2]}/ in one call")
    print(f"outputs match TensorFlow's (max |diff| {output_error:.1e}): {output_error < 1e-12}")
    print(f"logits match TensorFlow's (max |diff| {logit_error:.1e}): {logit_error < 1e-12}")
    print(f"greedy tags equal: {bool((logits.argmax(-1).numpy() == tf_logits.argmax(-1)).all())}")


if __name__ == "__main__":
    main()
