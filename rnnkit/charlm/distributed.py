"""Training on several processes or machines: the ``torchrun`` group, when there is one.

Under ``torchrun --nproc_per_node=N [--nnodes ... --rdzv-endpoint ...] -m rnnkit train ...``
every process joins one group (gloo on CPUs, NCCL on GPUs), trains on its own share of the
batch's streams with ``DistributedDataParallel`` averaging the gradients, and only rank 0
evaluates and writes. Without ``torchrun`` this is a group of one and changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join(device: str) -> World:
    """Join the torchrun group if this process was started by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)  # before NCCL starts: one GPU per process
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def leave(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(shard: Tensor, world: World) -> Tensor:
    """Every rank's ``[b, ...]`` shard, concatenated in rank order (a collective: all ranks call it)."""
    if world.size == 1:
        return shard
    pieces = [torch.empty_like(shard) for _ in range(world.size)]
    dist.all_gather(pieces, shard.contiguous())
    return torch.cat(pieces)
