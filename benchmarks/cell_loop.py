"""CPU benchmark: the hand-unrolled loop TF1 users port first, ``cell(x_t, state)`` per step.

Run:  python benchmarks/cell_loop.py [--batch 32] [--units 256] [--steps 100] [--rounds 7] [--threads 2]

Times inference (``torch.no_grad``) of a Python loop calling one cell per step over the same
inputs: rnnkit's ``BasicLSTMCell`` and ``LSTMCell`` against ``torch.nn.LSTMCell`` of the same
size, in one process. Rounds are interleaved (each loop once per round) and the best round of
each is kept: compare the printed ratios (rnnkit / torch.nn, lower is better), not the times.
The issue-15 target is <= 1.25 at B32 H256.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

import rnnkit as rk


def _rnnkit_loop(cell: rk.RNNCell, inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        state = cell.zero_state(inputs.shape[1], torch.float32)
        for x in inputs:
            output, state = cell(x, state)
        return output

    return run


def _torch_loop(cell: nn.LSTMCell, inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        h = c = torch.zeros(inputs.shape[1], cell.hidden_size)
        for x in inputs:
            h, c = cell(x, (h, c))
        return h

    return run


def _best_times(loops: dict[str, Callable[[], torch.Tensor]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(loops, float("inf"))
    with torch.no_grad():
        for loop in loops.values():  # warm up: builds, kernel loads, allocator
            loop()
        for _ in range(rounds):
            for name, loop in loops.items():
                start = time.perf_counter()
                loop()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    inputs = torch.randn(args.steps, args.batch, args.units)
    loops = {
        "torch.nn.LSTMCell": _torch_loop(nn.LSTMCell(args.units, args.units), inputs),
        "rk.BasicLSTMCell": _rnnkit_loop(rk.BasicLSTMCell(args.units), inputs),
        "rk.LSTMCell": _rnnkit_loop(rk.LSTMCell(args.units), inputs),
        "rk.LSTMCell(peepholes)": _rnnkit_loop(rk.LSTMCell(args.units, use_peepholes=True), inputs),
        "rk.GRUCell": _rnnkit_loop(rk.GRUCell(args.units), inputs),
    }
    best = _best_times(loops, args.rounds)
    baseline = best["torch.nn.LSTMCell"]
    print(f"cell(x_t, state) loop, inference, B{args.batch} H{args.units} T{args.steps}, {args.threads} threads")
    print(f"{'loop':<24} {'us/step':>9} {'ratio':>7}")
    for name, seconds in best.items():
        print(f"{name:<24} {seconds / args.steps * 1e6:9.1f} {seconds / baseline:7.2f}")


if __name__ == "__main__":
    main()
