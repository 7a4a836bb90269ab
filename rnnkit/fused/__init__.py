"""Fast paths behind one switch: ``backend="auto" | "reference" | "fused"``.

``reference`` is the cell's own step in a Python loop (the specification); ``fused`` runs
whole layers with hand-written backward passes on packed steps (see ``plan.py``); ``auto``
takes ``fused`` when the cell tree and inputs are recognised, ``reference`` otherwise.
"""

from __future__ import annotations

from typing import Any

import torch

from .plan import FusedPlan, make_plan

__all__ = ["BACKENDS", "FusedPlan", "select_plan"]

BACKENDS = ("auto", "reference", "fused")
_FUSED_DTYPES = (torch.float32, torch.float64)


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
        plan = f"inputs of dtype {inputs.dtype} (the fused path runs float32 and float64)"
    else:
        plan = make_plan(cell)
    if isinstance(plan, str):
        if backend == "fused":
            raise ValueError(f"backend='fused' cannot run this: {plan}; use backend='auto' or 'reference'")
        return None
    return plan
