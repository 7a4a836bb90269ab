"""States as plain values: LSTMStateTuple, TF's nest order, detach, save and load."""

from __future__ import annotations

import io

import pytest
import torch

import rnnkit as rk


def test_lstm_state_tuple() -> None:
    c, h = torch.zeros(2, 3), torch.ones(2, 3)
    state = rk.LSTMStateTuple(c, h)
    assert isinstance(state, tuple) and state[0] is state.c is c and state[1] is state.h is h
    assert state.dtype == torch.float32
    with pytest.raises(TypeError, match="Inconsistent dtypes"):
        rk.LSTMStateTuple(c, h.double()).dtype


def test_flatten_and_pack_follow_tf_nest_order() -> None:
    a, b, c, d, e = (torch.full((1,), float(i)) for i in range(5))
    structure = (rk.LSTMStateTuple(a, b), c, [d, (e,)])
    leaves = rk.flatten_state(structure)
    assert [t.item() for t in leaves] == [0, 1, 2, 3, 4]
    packed = rk.pack_state(structure, [t + 10 for t in leaves])
    assert isinstance(packed[0], rk.LSTMStateTuple) and isinstance(packed[2], list)
    assert packed[2][1][0].item() == 14
    with pytest.raises(ValueError, match="5 leaves"):
        rk.pack_state(structure, leaves[:4])
    assert rk.flatten_state((3, torch.Size([2, 2]))) == [3, torch.Size([2, 2])]


def test_map_state_keeps_types_and_checks_structure() -> None:
    state = (rk.LSTMStateTuple(torch.ones(1), torch.ones(1)), torch.ones(1))
    doubled = rk.map_state(lambda x, y: x + y, state, state)
    assert isinstance(doubled[0], rk.LSTMStateTuple) and doubled[1].item() == 2
    with pytest.raises(ValueError, match="structures differ"):
        rk.map_state(lambda x, y: x, state, (torch.ones(1),))


def test_state_saves_and_loads_and_feeds_back() -> None:
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.GRUCell(2)])
    x = torch.randn(2, 4, 5)
    _, state = rk.dynamic_rnn(cell, x)
    buffer = io.BytesIO()
    torch.save(rk.detach_state(state), buffer)
    buffer.seek(0)
    restored = torch.load(buffer)
    assert isinstance(restored[0], rk.LSTMStateTuple)
    out_a, _ = rk.dynamic_rnn(cell, x, initial_state=state)
    out_b, _ = rk.dynamic_rnn(cell, x, initial_state=restored)
    assert torch.equal(out_a, out_b)
