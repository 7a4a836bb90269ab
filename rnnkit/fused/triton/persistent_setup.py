"""Host side of the persistent kernels (LSTM and GRU): launch parameters and step tables."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import triton
from torch import Tensor

from .triton_support import PERSISTENT_ONE_LOOP, RESIDENT_MAX_DEPTH, dot_precision, persistent_launch


@dataclass
class Tuning:
    """Launch choices of the persistent kernels, from a sweep on an H100 (forward kernel, µs a
    step, float32 / bfloat16, B=16 H=256: streamed 11.5 / 9.3, resident with 8 warps
    9.0 / 6.9, resident with 4 warps 64.7 / 7.6; resident bf16 at H=1024 gave wrong results
    and float32 ran out of shared memory, hence the depth limit)."""

    resident_max_depth: int = RESIDENT_MAX_DEPTH  # keep the forward weight slices in registers up to this depth
    resident_warps: int = 8
    streamed_warps: int = 4
    wide_warps: int = 8  # for tiles over 32 x 16 (``triton_support.WIDE_TILES``)
    block_k: int = 32  # rows of the weight slice per product when it is streamed
    wide_block_k: int = 16  # the same for wide tiles (32 spills a few registers in float32 per ptxas)
    # float32 products when TF32 is not allowed: "ieee" (FMAs, measured) or "tf32x3" (three
    # TF32 tensor-core products of split operands, about float32's accuracy; streamed weights
    # only, to be measured)
    strict_float32_dot: str = "ieee"
    # the forward kernels' gate products of streamed weights in one loop over h (LSTM: 4 gates, GRU:
    # r and u) instead of one loop per gate: the same sums, a quarter of the serial iterations at
    # 4 gates. Compiled with cp.async pipelining for sm_90a (PTX checked); not yet run on a GPU
    one_loop_for_gates: bool = PERSISTENT_ONE_LOOP
    num_stages: int = 3  # software-pipelining depth of the products' loops (Triton's default)


TUNING = Tuning()


def launch_parameters(
    units: int, depth: int, resident: bool, batch: int, weight: Tensor
) -> tuple[int, dict[str, object], Tensor]:
    """How to launch a persistent kernel whose products run over ``depth`` rows of ``weight``
    (held in registers if ``resident`` and not too deep): the number of programs, the keyword
    arguments (the layout, then the compile-time constants), and the barrier's counter."""
    block_rows, block_units, row_blocks, unit_blocks = persistent_launch(weight.device, batch, units)
    # resident slices only where measured right on an H100: depth <= 256 with 16-row blocks (a
    # 128 KB-shared-memory bf16 variant at depth 1024 computed wrong results)
    resident = (resident and triton.next_power_of_2(depth) <= TUNING.resident_max_depth and block_rows <= 16
                and block_units <= 16)
    wide = block_rows * block_units > 32 * 16  # triton_support.WIDE_TILES
    precision = _float32_dot() if weight.dtype == torch.float32 else "ieee"
    if resident and precision == "tf32x3":
        precision = "ieee"  # split copies of resident slices spill registers (ptxas for sm_90a)
    arguments: dict[str, object] = {
        "unit_blocks": unit_blocks,
        "num_programs": row_blocks * unit_blocks,
        "BLOCK_B": block_rows,
        "BLOCK_U": block_units,
        "BLOCK_K": TUNING.wide_block_k if wide else TUNING.block_k,
        "K_PAD": max(16, triton.next_power_of_2(depth)) if resident else 16,  # only the resident slices use it
        "RESIDENT": resident,
        "PRECISION": precision,
        "num_warps": TUNING.resident_warps if resident else TUNING.wide_warps if wide else TUNING.streamed_warps,
        "num_stages": TUNING.num_stages,
    }
    return row_blocks * unit_blocks, arguments, torch.zeros(1, dtype=torch.int32, device=weight.device)


def _float32_dot() -> str:
    """Triton's ``input_precision`` for the float32 products: TF32 where the user allowed it,
    else ``TUNING.strict_float32_dot``."""
    precision = dot_precision()
    return TUNING.strict_float32_dot if precision == "ieee" else precision


def output_block(depth_h: int, launch: dict[str, object]) -> int:
    """Columns of ``h`` per program (``BLOCK_P``): the unit block without a projection
    (``depth_h`` equals the units), else the projection's width shared by the unit blocks."""
    unit_blocks, block_units = cast(int, launch["unit_blocks"]), cast(int, launch["BLOCK_U"])
    return max(block_units, triton.next_power_of_2(-(-depth_h // unit_blocks)))


def schedule(batch_sizes: list[int], running: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``sizes`` and ``starts`` of the packed steps with a 0 sentinel at the end, and each
    step's previous row in a buffer of the initial state followed by all steps' states. Built
    once per packing and device (a layer's forward and backward, and every layer of a stack,
    share it): it is host work before each launch, O(steps)."""
    return _schedule(tuple(batch_sizes), running, device)


@functools.lru_cache(maxsize=64)
def _schedule(batch_sizes: tuple[int, ...], running: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    table = np.zeros((3, len(batch_sizes) + 1), dtype=np.int32)  # sizes, starts, previous rows; 0 sentinels
    table[0, :-1] = batch_sizes
    np.cumsum(table[0, :-2], out=table[1, 1:-1])
    table[2, 1:-1] = table[1, :-2] + running
    with torch.inference_mode(False):  # constants made once, whatever the caller's mode
        on_device = torch.from_numpy(table).to(device)
    return on_device[0], on_device[1], on_device[2]


def or_stand_in(optional: Tensor, stand_in: Tensor) -> Tensor:
    """An absent (empty) optional tensor becomes a stand-in on the right device; the kernel
    never reads it (its flag is off)."""
    return optional if optional.numel() else stand_in


def after_initial(initial: Tensor, steps: Tensor, running: int) -> Tensor:
    """``[running + N, width]``: the ``running`` rows of an initial state (in ``steps``' dtype),
    then every step's rows, the one buffer a persistent kernel reads previous states from
    (step ``t``'s at row ``previous[t]`` of :func:`schedule`)."""
    return torch.cat([initial[:running].to(steps.dtype), steps])
