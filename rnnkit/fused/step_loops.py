"""The step loops a fused layer runs (compiled, torch twins, Triton) and what their backward
shares: the transposed recurrent weights, and the kernel gradient of the inputs' and the state's
rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class StepLoops:
    """A layer's ``forward`` and ``backward`` step loops. The ``compiled`` CPU loops
    (``rnn_cpu.cpp``) read transposed weights as views (MKL takes either layout; the LSTM's also
    read TF's gate order, see ``lstm.py``). The others get contiguous copies: torch's GEMM is
    faster on them, and the Triton kernels index them so."""

    forward: Callable[..., None]
    backward: Callable[..., None]
    compiled: bool = False

    def transposed(self, weights: Tensor) -> Tensor:
        """``weights.t()`` as the backward loop reads it (see above)."""
        return weights.t() if self.compiled else weights.t().contiguous()


def stacked_products(inputs: Tensor, states: Tensor, grad: Tensor) -> Tensor:
    """``cat([inputs.T @ grad, states.T @ grad])``: the gradient ``[D + H, G]`` of a kernel whose
    rows are the inputs' (``inputs`` ``[N, D]``) then the state's (``states`` ``[N, H]``), from
    that of its products ``grad`` ``[N, G]``; both GEMMs write into its rows, with no copy."""
    depth = inputs.shape[1]
    out = grad.new_empty(depth + states.shape[1], grad.shape[1])
    torch.mm(inputs.t(), grad, out=out[:depth])
    torch.mm(states.t(), grad, out=out[depth:])
    return out
