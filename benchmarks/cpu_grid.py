"""The CPU grid of ``python benchmarks/cpu.py --grid`` (``--quick``: a subset in about two minutes):
every fused variant against ``torch.nn`` of the same size, inference (forward under no_grad)
and training (forward+backward), at the shapes users run (long sequences, and short calls), in
one table of ratios (rnnkit's time / torch.nn's, lower is better; min of interleaved rounds), with
the path ``backend="auto"`` took.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import rnnkit as rk
from rnnkit.contrib.layer_norm_cells import LayerNormBasicLSTMCell
from rnnkit.fused import plan_layers, select_plan
from rnnkit.fused.cpu.native import kernels


@dataclass(frozen=True)
class Variant:
    name: str
    make_cell: Callable[[int], rk.RNNCell]
    make_baseline: Callable[[int], nn.Module]


VARIANTS = [
    Variant("plain LSTM", lambda h: rk.BasicLSTMCell(h), lambda h: nn.LSTM(h, h, batch_first=True)),
    Variant("peephole LSTM", lambda h: rk.LSTMCell(h, use_peepholes=True), lambda h: nn.LSTM(h, h, batch_first=True)),
    Variant("TF GRU", lambda h: rk.GRUCell(h), lambda h: nn.GRU(h, h, batch_first=True)),
    Variant("BasicRNNCell", lambda h: rk.BasicRNNCell(h), lambda h: nn.RNN(h, h, batch_first=True)),
    Variant("layer-norm LSTM", lambda h: LayerNormBasicLSTMCell(h), lambda h: nn.LSTM(h, h, batch_first=True)),
]
SHAPES = [(1, 1000, 256), (16, 200, 128), (64, 100, 256), (128, 50, 512), (64, 100, 1024)]  # (B, T, H)
QUICK_SHAPES = [(1, 200, 256), (16, 200, 128), (64, 50, 256)]
# short calls, where a call's fixed costs (weights reordered, packed, split) weigh: one step at a time
# (streaming), and short chunks (truncated backpropagation, or a stream in pieces)
SHORT_SHAPES = [(1, 1, 256), (1, 20, 256), (16, 20, 256), (64, 20, 512)]

_TORCH_LAYERS = ("torch_lstm_layer", "torch_gru_layer", "torch_rnn_layer")
_COUNTED = (*_TORCH_LAYERS, "lstm_layer_inference")


def _path_taken(cell: rk.RNNCell, x: torch.Tensor, train: bool) -> str:
    """Which implementation ``backend="auto"`` ran for ``cell`` on ``x``: PyTorch's own layer
    (oneDNN / ATen), rnnkit's compiled inference loop, its compiled training loop, its torch
    twins, or the reference loop."""
    if select_plan(cell, x, "auto") is None:
        return "reference"
    calls: Counter = Counter()
    originals = {name: getattr(plan_layers, name) for name in _COUNTED}
    try:
        for name, layer in originals.items():
            setattr(plan_layers, name, lambda *args, _layer=layer, _name=name: calls.update([_name]) or _layer(*args))
        with torch.set_grad_enabled(train):
            rk.dynamic_rnn(cell, x)
    finally:
        for name, layer in originals.items():
            setattr(plan_layers, name, layer)
    if calls["lstm_layer_inference"]:
        return "infer"
    if calls:
        return "torch"
    return "loop" if kernels() is not None else "twins"


def _ratio(variant: Variant, shape: tuple[int, int, int], train: bool, repeats: int) -> tuple[float, str]:
    from cpu import _best_times  # benchmarks/cpu.py, the script that runs this grid

    batch, steps, size = shape
    torch.manual_seed(0)
    x = torch.randn(batch, steps, size)
    cell, baseline = variant.make_cell(size), variant.make_baseline(size)
    rk.dynamic_rnn(cell, x[:, :1])  # build
    params, baseline_params = list(cell.parameters()), list(baseline.parameters())

    def ours() -> None:
        xi = x.requires_grad_(train)
        out, _ = rk.dynamic_rnn(cell, xi)
        if train:
            torch.autograd.grad(out.sum(), [xi, *params], allow_unused=True)

    def theirs() -> None:
        xi = x.requires_grad_(train)
        out, _ = baseline(xi)
        if train:
            torch.autograd.grad(out.sum(), [xi, *baseline_params])

    with torch.set_grad_enabled(train):
        times = _best_times({"torch.nn": theirs, "rnnkit": ours}, repeats)
    return times["rnnkit"] / times["torch.nn"], _path_taken(cell, x[:, : min(steps, 4)], train)


def run_grid(quick: bool, repeats: int) -> None:
    shapes = (QUICK_SHAPES if quick else SHAPES) + SHORT_SHAPES
    header = " | ".join(f"{v.name} fwd / fwd+bwd" for v in VARIANTS)
    print("\nratio to torch.nn of the same size (lower is better), [path auto took]; "
          "torch = oneDNN/ATen, infer = compiled inference loop, loop = compiled loop, twins = torch ops")
    print(f"| shape | {header} |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    for batch, steps, size in shapes:
        cells = []
        for variant in VARIANTS:
            forward, path = _ratio(variant, (batch, steps, size), False, repeats)
            training, training_path = _ratio(variant, (batch, steps, size), True, repeats)
            paths = path if path == training_path else f"{path} / {training_path}"
            cells.append(f"{forward:.2f} / {training:.2f} [{paths}]")
        print(f"| B{batch} T{steps} H{size} | " + " | ".join(cells) + " |", flush=True)
