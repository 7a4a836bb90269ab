"""Which dtypes the fused layers keep their gates and cell states in, and where half runs."""

from __future__ import annotations

import torch

from .triton_support import persistent_fits, triton_runs_on

HALF_DTYPES = (torch.bfloat16, torch.float16)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of gates and cell states for inputs of ``dtype``: float32 for half inputs."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def half_supported(device: torch.device, batch: int, units: int, projected: bool) -> bool:
    """True when bfloat16/float16 inputs can take the fused path (the persistent kernels)."""
    return device.type == "cuda" and triton_runs_on(device) and persistent_fits(device, batch, units, projected)
