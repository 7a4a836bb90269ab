"""The model: embedding -> a MultiRNNCell run by dynamic_rnn -> a softmax over characters."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import rnnkit as rk

CELLS = ("lstm", "gru", "lstm-peephole")


def make_cell(kind: str, units: int) -> rk.RNNCell:
    """A cell of ``units`` built now for inputs of depth ``units`` (the embedding's size, and
    every lower layer's output size)."""
    if kind == "lstm":
        return rk.BasicLSTMCell(units, input_size=units)
    if kind == "gru":
        return rk.GRUCell(units, input_size=units)
    if kind == "lstm-peephole":
        return rk.LSTMCell(units, use_peepholes=True, input_size=units)
    raise ValueError(f"--cell must be one of {CELLS}, got {kind!r}")


class CharLM(nn.Module):
    """``ids [B, T] -> (logits [B, T, vocab], state)``; ``state`` is the MultiRNNCell's (a
    tuple of per-layer states), to be carried to the next batch."""

    def __init__(self, vocab_size: int, cell: str, layers: int, units: int, dropout: float) -> None:
        super().__init__()
        cells: list[Any] = [make_cell(cell, units) for _ in range(layers)]
        if dropout > 0:  # between layers: on the outputs of all but the last
            cells = [rk.DropoutWrapper(c, output_keep_prob=1 - dropout) for c in cells[:-1]] + cells[-1:]
        self.embedding = nn.Embedding(vocab_size, units)
        self.rnn = rk.RNN(rk.MultiRNNCell(cells))
        self.head = nn.Linear(units, vocab_size)

    def forward(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        outputs, state = self.rnn(self.embedding(ids), initial_state=state)
        return self.head(outputs), state
