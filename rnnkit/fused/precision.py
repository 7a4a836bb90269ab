"""Half precision in the fused layers: where it runs, the dtype gates and cell states are kept
in, and the per-step products of half weights."""

from __future__ import annotations

import torch
from torch import Tensor

from .triton.triton_support import triton_runs_on

HALF_DTYPES = (torch.bfloat16, torch.float16)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of gates and cell states for inputs of ``dtype``: float32 for half inputs."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def half_supported(device: torch.device) -> bool:
    """True when bfloat16/float16 inputs can take rnnkit's own fused layers: on CUDA with Triton
    (the persistent kernels, or the step loops around Triton's pointwise kernels)."""
    return device.type == "cuda" and triton_runs_on(device)


def add_product_(acc: Tensor, a: Tensor, w: Tensor) -> Tensor:
    """``acc += a @ w`` in place, the GEMM in ``w``'s dtype. With half weights and a float32
    ``acc`` (the gates) the GEMM accumulates in float32 and its result is rounded to half before
    it is added, as the input projection of all steps is."""
    if acc.dtype == a.dtype == w.dtype:  # no conversions (a per-step call: keep it lean)
        return acc.addmm_(a, w)
    a = a.to(w.dtype)
    if acc.dtype == w.dtype:
        return acc.addmm_(a, w)
    return acc.add_(a @ w)


def product_into(out: Tensor, a: Tensor, w: Tensor) -> Tensor:
    """``out = a @ w``, the GEMM in ``w``'s dtype (``out``'s too): float32 gate gradients times
    half weights give half state gradients."""
    return torch.mm(a if a.dtype == w.dtype else a.to(w.dtype), w, out=out)
