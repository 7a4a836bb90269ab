"""The classic TensorFlow 1.x RNN tutorial flow, on rnnkit: no sessions, no feed_dict.

Run:  python examples/tf_tutorial.py

1. a 4-layer MultiRNNCell of BasicLSTMCells, its zero_state, dynamic_rnn over three sentences
   of lengths 5, 10 and 25 (batch-major, then time-major: the same numbers);
2. the same network unrolled by hand, one cell called at every step (the same outputs);
3. a GRUCell in the same place;
4. a few steps of training a next-word model, carrying the LSTM state from one batch to the
   next (truncated backpropagation through time: detach_state between batches).
"""

from __future__ import annotations

import torch
from torch import nn

import rnnkit as rk

SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog today",
    "it was the best of times it was the worst of times it was the age of wisdom it was the age of",
]
LENGTHS = [5, 10, 25]
EMBED, UNITS, LAYERS = 16, 32, 4


def make_batch(vocab: dict[str, int], embedding: nn.Embedding) -> torch.Tensor:
    """Three sentences, padded to 25 words, embedded: [batch=3, time=25, depth=16]."""
    ids = torch.zeros(len(SENTENCES), max(LENGTHS), dtype=torch.long)
    for row, (sentence, length) in enumerate(zip(SENTENCES, LENGTHS)):
        words = (sentence.split() * 3)[:length]
        ids[row, :length] = torch.tensor([vocab[w] for w in words])
    return embedding(ids)


def main() -> None:
    torch.manual_seed(0)
    vocab = {w: i for i, w in enumerate(sorted({w for s in SENTENCES for w in s.split()}))}
    embedding = nn.Embedding(len(vocab), EMBED)
    inputs = make_batch(vocab, embedding).detach()
    lengths = torch.tensor(LENGTHS)

    # 1. the stacked LSTM, as in the tutorials
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(UNITS) for _ in range(LAYERS)])
    state = cell.zero_state(batch_size=3, dtype=torch.float32)
    outputs, final_state = rk.dynamic_rnn(cell, inputs, sequence_length=lengths, initial_state=state)
    print(f"dynamic_rnn: outputs {list(outputs.shape)}, final state: {LAYERS} x LSTMStateTuple(c, h) "
          f"of {list(final_state[-1].h.shape)}")
    print(f"  outputs past each length are zero: {bool(outputs[0, 5:].abs().max() == 0)}")
    print(f"  the last layer's final h is the output at length-1: "
          f"{torch.allclose(final_state[-1].h[1], outputs[1, 9])}")

    outputs_tm, _ = rk.dynamic_rnn(cell, inputs.transpose(0, 1), sequence_length=lengths, time_major=True)
    print(f"  time-major gives the same outputs: {torch.allclose(outputs_tm.transpose(0, 1), outputs)}")

    # 2. the same network unrolled by hand: one cell object called at every step shares weights
    state, by_hand = cell.zero_state(3), []
    for t in range(inputs.shape[1]):
        output, new_state = cell(inputs[:, t], state)
        alive = (t < lengths).unsqueeze(1)
        by_hand.append(torch.where(alive, output, torch.zeros_like(output)))
        state = rk.map_state(lambda new, old: torch.where(alive, new, old), new_state, state)
    print(f"hand-unrolled loop equals dynamic_rnn: {torch.allclose(torch.stack(by_hand, 1), outputs)}")

    # 3. a GRU in place of the LSTM
    gru_outputs, gru_state = rk.dynamic_rnn(rk.GRUCell(UNITS), inputs, sequence_length=lengths)
    print(f"GRUCell: outputs {list(gru_outputs.shape)}, state {list(gru_state.shape)}")

    # 4. training with the state carried across batches (truncated BPTT)
    model = nn.ModuleDict({"embed": embedding, "rnn": rk.RNN(cell), "out": nn.Linear(UNITS, len(vocab))})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    words = torch.tensor([vocab[w] for w in SENTENCES[2].split()] * 8)
    streams = words[: (len(words) // 3) * 3].view(3, -1)  # 3 parallel streams of text
    state = None
    for step, start in enumerate(range(0, streams.shape[1] - 9, 8)):
        x, y = streams[:, start : start + 8], streams[:, start + 1 : start + 9]
        outputs, state = model["rnn"](model["embed"](x), initial_state=rk.detach_state(state))
        loss = nn.functional.cross_entropy(model["out"](outputs).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"  train step {step}: loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
