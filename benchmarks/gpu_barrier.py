"""What one step of a persistent kernel costs before any math: the grid-wide barrier.

Run:  python benchmarks/gpu_barrier.py [--steps 2000]

The persistent kernels (``rnnkit/fused/persistent_*.py``) meet at :func:`grid_barrier` once or
twice a step, so its cost is a floor under their microseconds per step (``gpu.py`` reports
7-12 us a step at B16 H256). Per number of programs (one per multiprocessor at most) this
prints microseconds per step of:

* ``barrier``: rnnkit's barrier alone (arrive with a release atomic, poll with acquire atomics);
* ``barrier-ld``: a candidate that polls with ``ld.acquire.gpu`` loads instead of atomic
  read-modify-writes (the arrivals then do not queue behind the polls at the counter);
* ``exchange``: rnnkit's barrier plus what a step moves between programs: each program stores
  its ``[16, 16]`` tile of h and, after the barrier, loads the whole ``[16, depth]`` h.

CUDA-event times of one launch each, the best of a few; compare the columns, not absolute times.
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

from rnnkit.fused.triton.triton_math import grid_barrier


@triton.jit
def _poll_acquire(counter_ptr):
    return tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [counter_ptr],
                                     dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _barrier_polling_loads(counter_ptr, step, num_programs):
    tl.debug_barrier()
    if num_programs > 1:
        tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
        target = (step + 1) * num_programs
        seen = _poll_acquire(counter_ptr)
        while seen < target:
            seen = _poll_acquire(counter_ptr)
        tl.debug_barrier()


@triton.jit
def _barriers(counter_ptr, steps, num_programs, LOADS: tl.constexpr):
    for t in range(steps):
        if LOADS:
            _barrier_polling_loads(counter_ptr, t, num_programs)
        else:
            grid_barrier(counter_ptr, t, num_programs)


@triton.jit
def _exchange(h_ptr, counter_ptr, steps, depth, num_programs, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
              K_PAD: tl.constexpr):
    rows = tl.arange(0, BLOCK_B)
    cols = tl.program_id(0) * BLOCK_U + tl.arange(0, BLOCK_U)
    all_k = tl.arange(0, K_PAD)
    total = tl.zeros([BLOCK_B, BLOCK_U], tl.float32)
    for t in range(steps):
        previous = (t % 2) * BLOCK_B * depth  # two h buffers, as steps alternate
        h = tl.load(h_ptr + previous + rows[:, None] * depth + all_k[None, :], mask=(all_k < depth)[None, :],
                    other=0.0, cache_modifier=".cg")
        total += tl.sum(h, 1)[:, None]
        here = ((t + 1) % 2) * BLOCK_B * depth + rows[:, None] * depth + cols[None, :]
        tl.store(h_ptr + here, total, mask=(cols < depth)[None, :])
        grid_barrier(counter_ptr, t, num_programs)


def _time(launch, rounds: int = 3) -> float:
    """Best CUDA-event milliseconds of ``launch()`` over ``rounds`` (after one warm-up)."""
    launch()
    best = float("inf")
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        launch()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=256, help="width of the exchanged h")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_barrier.py needs a CUDA device")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}, {sms} multiprocessors, {args.steps} steps; us per step")
    print("| programs | barrier | barrier-ld | exchange (depth %d) |" % args.depth)
    print("|---|---|---|---|")
    h = torch.zeros(2 * 16 * args.depth, device="cuda")
    for programs in sorted({1, 16, 64, sms}):
        def barriers(loads: bool) -> None:
            counter = torch.zeros(1, dtype=torch.int32, device="cuda")
            _barriers[(programs,)](counter, args.steps, programs, LOADS=loads, num_warps=4)

        def exchange() -> None:
            counter = torch.zeros(1, dtype=torch.int32, device="cuda")
            _exchange[(programs,)](h, counter, args.steps, args.depth, programs, BLOCK_B=16, BLOCK_U=16,
                                   K_PAD=triton.next_power_of_2(args.depth), num_warps=4)

        us = [1e3 * _time(run) / args.steps for run in (lambda: barriers(False), lambda: barriers(True), exchange)]
        print(f"| {programs} | {us[0]:.2f} | {us[1]:.2f} | {us[2]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
