"""Training on several processes or machines: the ``torchrun`` group, when there is one.

Under ``torchrun --nproc_per_node=N [--nnodes ... --rdzv-endpoint ...] -m rnnkit train ...``
every process joins one group (gloo on CPUs, NCCL on GPUs), trains on its own share of the
batch's streams with ``DistributedDataParallel`` averaging the gradients, and only rank 0
evaluates and writes. Without ``torchrun`` this is a group of one and changes nothing.

A process that waits longer than ``--timeout`` seconds for the others (one is stopped, stuck or
far slower) fails; so does one whose peer died. Either way :func:`describe_failure` makes the
error one line, and ``train`` exits with status 2. Ctrl-C stops every process after the same
step (:func:`any_rank`), and rank 0 saves the checkpoint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

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


def join(device: str, timeout: float = 1800.0) -> World:
    """Join the torchrun group if this process was started by torchrun; a collective that waits
    more than ``timeout`` seconds for the other processes fails."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)  # before NCCL starts: one GPU per process
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
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


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (a collective under torchrun: every rank calls
    it at the same point, so all of them take the same decision)."""
    if world.size == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


_GLOO_LOST = ("Connection closed by peer", "Connection reset by peer", "Read error", "Write error", "Broken pipe")


def describe_failure(error: BaseException) -> str | None:
    """One line for an error of the process group (a lost or stuck peer), naming this rank and,
    where the message gives it, the peer's address; ``None`` for any other error."""
    text = str(error)
    if not isinstance(error, dist.DistError) and not (isinstance(error, RuntimeError) and "gloo" in text):
        return None
    rank = os.environ.get("RANK", "?")
    peer = re.search(r"\[([0-9A-Fa-f.:]+)\]:(\d+)", text)
    where = f" at {peer[1]}:{peer[2]}" if peer else ""
    if "Timed out" in text or "timed out" in text or isinstance(error, dist.DistStoreError):
        return f"rank {rank}: timed out waiting for the other processes (one is stopped, stuck or gone; see --timeout)"
    if any(sign in text for sign in _GLOO_LOST):
        return f"rank {rank}: lost a peer process{where} (it exited or was killed: see its own output)"
    first = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
    return f"rank {rank}: the process group failed ({first})"
