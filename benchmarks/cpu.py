"""CPU benchmark: rnnkit (fused and reference) against torch.nn on the same inputs, one process.

Run:  python benchmarks/cpu.py [--repeats 5] [--threads 2] [--only NAME]
      python benchmarks/cpu.py --grid [--quick]   (every variant over the grid users run: cpu_grid.py)

Prints, per configuration, the best time of each implementation over the rounds, its ratio to
torch.nn (lower is better), the achieved GFLOP/s, and the machine's GEMM GFLOP/s for scale. Runs
are interleaved (every implementation once per round) so that drift on a shared machine hits all
alike, and the best of the rounds is the least disturbed: compare the ratios, not the absolute
times.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import rnnkit as rk
from rnnkit.contrib.layer_norm_cells import LayerNormBasicLSTMCell, LayerNormLSTMCell


@dataclass
class Config:
    name: str
    batch: int
    steps: int
    size: int  # input depth = hidden units
    make_cell: Callable[[], rk.RNNCell]
    make_baseline: Callable[[], nn.Module]
    flops_per_step: Callable[[int, int], float]  # (batch, size) -> forward FLOPs of one step
    lengths: bool = False  # lengths uniform in [steps // 10, steps]
    proj: int | None = None


def _lstm_flops(batch: int, size: int, layers: int = 1, proj: int | None = None) -> float:
    hidden = proj or size
    per_layer = 2 * batch * (size + hidden) * 4 * size + (2 * batch * size * proj if proj else 0)
    return layers * per_layer


def _gru_flops(batch: int, size: int) -> float:
    return 2 * batch * (2 * size) * 3 * size


def _rnn_flops(batch: int, size: int) -> float:
    return 2 * batch * (2 * size) * size


CONFIGS = [
    Config("lstm B64 T100 H256", 64, 100, 256, lambda: rk.BasicLSTMCell(256),
           lambda: nn.LSTM(256, 256, batch_first=True), _lstm_flops),
    Config("lstm B16 T200 H128", 16, 200, 128, lambda: rk.BasicLSTMCell(128),
           lambda: nn.LSTM(128, 128, batch_first=True), _lstm_flops),
    Config("lstm peep+clip+proj128 B64 T100 H256", 64, 100, 256,
           lambda: rk.LSTMCell(256, use_peepholes=True, cell_clip=3.0, num_proj=128),
           lambda: nn.LSTM(256, 256, proj_size=128, batch_first=True),
           lambda b, s: _lstm_flops(b, s, proj=128), proj=128),
    Config("tf-gru vs nn.GRU B64 T100 H256", 64, 100, 256, lambda: rk.GRUCell(256),
           lambda: nn.GRU(256, 256, batch_first=True), _gru_flops),
    Config("basic-rnn vs nn.RNN B64 T100 H256", 64, 100, 256, lambda: rk.BasicRNNCell(256),
           lambda: nn.RNN(256, 256, batch_first=True), _rnn_flops),
    Config("basic-rnn elu vs nn.RNN B4 T200 H64", 4, 200, 64, lambda: rk.BasicRNNCell(64, activation="elu"),
           lambda: nn.RNN(64, 64, batch_first=True), _rnn_flops),
    Config("layer-norm lstm vs nn.LSTM B64 T100 H256", 64, 100, 256, lambda: LayerNormBasicLSTMCell(256),
           lambda: nn.LSTM(256, 256, batch_first=True), _lstm_flops),
    Config("layer-norm lstm vs nn.LSTM B16 T200 H128", 16, 200, 128, lambda: LayerNormBasicLSTMCell(128),
           lambda: nn.LSTM(128, 128, batch_first=True), _lstm_flops),
    Config("layer-norm lstm peep vs nn.LSTM B64 T100 H256", 64, 100, 256,
           lambda: LayerNormLSTMCell(256, use_peepholes=True, layer_norm=True),
           lambda: nn.LSTM(256, 256, batch_first=True), _lstm_flops),
    Config("2x lstm B32 T100 H256 lengths[10,100]", 32, 100, 256,
           lambda: rk.MultiRNNCell([rk.BasicLSTMCell(256), rk.BasicLSTMCell(256)]),
           lambda: nn.LSTM(256, 256, num_layers=2, batch_first=True),
           lambda b, s: _lstm_flops(b, s, layers=2), lengths=True),
]


def _best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for run in runs.values():  # warm-up
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: min(times) for name, times in samples.items()}


def _gemm_gflops() -> float:
    a, b = torch.randn(2048, 1024), torch.randn(1024, 1024)
    times = _best_times({"gemm": lambda: a @ b}, 5)
    return 2 * 2048 * 1024 * 1024 / times["gemm"] / 1e9


def _runs(config: Config, train: bool) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    x = torch.randn(config.batch, config.steps, config.size)
    lengths = None
    if config.lengths:
        lengths = torch.randint(config.steps // 10, config.steps + 1, (config.batch,))
        lengths[0] = config.steps
    cell = config.make_cell()
    rk.dynamic_rnn(cell, x[:, :1])  # build
    baseline = config.make_baseline()  # batch_first=True: the same [B, T, D] inputs
    params = list(cell.parameters())

    def rnnkit_run(backend: str) -> Callable[[], object]:
        def run() -> object:
            xi = x.requires_grad_(train)
            out, _ = rk.dynamic_rnn(cell, xi, sequence_length=lengths, backend=backend)
            if train:  # allow_unused: LayerNormLSTMCell(layer_norm=True) creates a bias it does not use
                torch.autograd.grad(out.sum(), [xi, *params], allow_unused=True)
            return out
        return run

    def torch_padded() -> object:
        xi = x.requires_grad_(train)
        out, _ = baseline(xi)
        if train:
            torch.autograd.grad(out.sum(), [xi, *baseline.parameters()])
        return out

    def torch_packed() -> object:
        xi = x.requires_grad_(train)
        packed = nn.utils.rnn.pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=False)
        out, _ = baseline(packed)
        if train:
            torch.autograd.grad(out.data.sum(), [xi, *baseline.parameters()])
        return out

    runs = {"torch.nn": torch_padded}
    if lengths is not None:
        runs["torch.nn packed"] = torch_packed
    runs["rnnkit fused"] = rnnkit_run("fused")
    runs["rnnkit reference"] = rnnkit_run("reference")
    return runs


def _measure(config: Config, train: bool, repeats: int) -> None:
    runs = _runs(config, train)
    if train:
        times = _best_times(runs, repeats)
    else:
        with torch.no_grad():
            times = _best_times(runs, repeats)
    flops = config.flops_per_step(config.batch, config.size) * config.steps * (3 if train else 1)
    base = times["torch.nn"]
    mode = "fwd+bwd" if train else "fwd"
    print(f"\n{config.name} — {mode}")
    for name, seconds in times.items():
        gflops = flops / seconds / 1e9
        print(f"  {name:18s} {seconds * 1e3:9.1f} ms   ratio {seconds / base:5.2f}   {gflops:6.1f} GFLOP/s")
    fused, reference = times["rnnkit fused"], times["rnnkit reference"]
    print(f"  fused is {reference / fused:.2f}x faster than the reference loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", default=None, help="run only the configurations whose name contains this")
    parser.add_argument("--grid", action="store_true", help="the grid of every variant and shape (cpu_grid.py)")
    parser.add_argument("--quick", action="store_true", help="with --grid: a subset of shapes, about two minutes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, {args.threads} threads, GEMM 2048x1024x1024: {_gemm_gflops():.0f} GFLOP/s")
    if args.grid or args.quick:
        from cpu_grid import run_grid

        run_grid(args.quick, args.repeats)
        return
    print("ratio = time / torch.nn's time on the padded batch (lower is better); FLOPs count the GEMMs only")
    for config in CONFIGS:
        if args.only and args.only not in config.name:
            continue
        for train in (False, True):
            _measure(config, train, args.repeats)


if __name__ == "__main__":
    main()
