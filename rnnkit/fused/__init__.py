"""Fast paths behind one switch: ``backend="auto" | "reference" | "fused"``.

``reference`` is the cell's own step in a Python loop (the specification); ``fused`` runs
whole layers on packed steps (see ``plan.py``); ``auto`` takes ``fused`` when the cell tree
and inputs are recognised, ``reference`` otherwise. Inside ``fused``, per layer:

* cells PyTorch computes exactly (plain and projection LSTM, ``GRUCell(reset_after=True)``,
  ``BasicRNNCell`` with tanh or relu) run through ``torch.lstm``/``torch.gru``/``torch.rnn_*``:
  cuDNN on CUDA (``torch_rnn.py``), except plain LSTMs of at most 256 units at small batches,
  where the persistent kernel is faster;
* every other LSTM, TF's GRU and ``BasicRNNCell`` with other activations, on CUDA run a
  persistent Triton kernel when its programs fit on the GPU at once (``triton/persistent_lstm.py``,
  ``persistent_gru.py``, ``persistent_rnn.py``; the last one while
  ``triton_support.PERSISTENT_RNN``), else a step loop of cuBLAS GEMMs and Triton pointwise
  kernels (``triton/triton_pointwise.py``);
* on the CPU the compiled step loops of ``cpu/`` (LSTM, GRU, BasicRNNCell in ``rnn_cpu.cpp``, the
  layer-norm LSTMs in ``layer_norm_lstm.cpp``, the recurrent products on MKL's packed GEMM where
  torch has it), or their torch twins; the layer-norm LSTMs run fused there only.

bfloat16/float16 inputs run on CUDA (cuDNN, the persistent kernels or the Triton step loops),
with float32 accumulation and float32 gates and cell states; elsewhere ``auto`` takes the
reference loop. So it does for cells with ``gate_activation="hard_sigmoid"`` or
``use_bias=False`` anywhere but the CPU step loops in float32 and float64
(``FusedPlan.options_reason``).
"""

from __future__ import annotations

from typing import Any

import torch

from .plan import FusedPlan, make_plan
from .precision import HALF_DTYPES

__all__ = ["BACKENDS", "FusedPlan", "select_plan"]

BACKENDS = ("auto", "reference", "fused")
_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def select_plan(cell: Any, inputs: Any, backend: str) -> FusedPlan | None:
    """The fused plan to run, or ``None`` for the reference loop; ``ValueError`` when
    ``backend="fused"`` was asked for and cannot run this cell or these inputs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return None
    plan: FusedPlan | str
    if not isinstance(inputs, torch.Tensor):
        plan = "nested inputs"
    elif inputs.dtype not in _FUSED_DTYPES:
        plan = f"inputs of dtype {inputs.dtype} (the fused path runs float32, float64, bfloat16 and float16)"
    else:
        plan = make_plan(cell)
        if isinstance(plan, FusedPlan):
            plan = plan.options_reason(inputs.device, inputs.dtype) or plan
        if isinstance(plan, FusedPlan) and inputs.dtype in HALF_DTYPES:
            reason = plan.half_reason(inputs.device)
            plan = plan if reason is None else f"inputs of dtype {inputs.dtype} on {inputs.device.type}: {reason}"
    if isinstance(plan, str):
        if backend == "fused":
            raise ValueError(f"backend='fused' cannot run this: {plan}; use backend='auto' or 'reference'")
        return None
    return plan
