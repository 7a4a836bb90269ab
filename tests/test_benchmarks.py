"""The CPU grid's report of the path ``backend="auto"`` took (``benchmarks/cpu_grid.py``) stays in
step with the library: it counts the calls of the layers it names, and names the path each kind of
cell runs on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import rnnkit as rk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cpu_grid  # noqa: E402  (a script's module, found through the path above)


def test_the_grid_names_the_path_auto_took(compiled) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4)
    lstm = rk.BasicLSTMCell(8, input_size=4)
    assert cpu_grid._path_taken(lstm, x, train=False) == "infer"  # the compiled inference loop
    assert cpu_grid._path_taken(lstm, x, train=True) == "loop"  # the compiled training loop
    assert cpu_grid._path_taken(rk.GRUCell(8, input_size=4), x, train=True) == "loop"
    assert cpu_grid._path_taken(rk.GRUCell(8, reset_after=True, input_size=4), x, train=True) == "torch"
    assert cpu_grid._path_taken(rk.LSTMCell(8, input_size=4, activation=torch.sin), x, train=False) == "reference"
