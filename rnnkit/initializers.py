"""TensorFlow's default initializers, as in-place functions ``fn(tensor) -> None``.

Any callable that fills a tensor in place (``torch.nn.init.orthogonal_``, ...) can be passed
as a cell's ``initializer``/``kernel_initializer``/``bias_initializer``; a plain number means
a constant (TF's ``constant_initializer``).
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import Tensor

__all__ = ["Initializer", "constant", "glorot_uniform_", "resolve_initializer"]

Initializer = Union[Callable[[Tensor], object], float, int, None]


def glorot_uniform_(tensor: Tensor) -> None:
    """TF's default: uniform in ``[-limit, limit]``, ``limit = sqrt(6 / (fan_in + fan_out))``,
    computed on the whole fused shape (an LSTM kernel ``[D+H, 4U]`` has fan_in ``D+H`` and
    fan_out ``4U``); a 1-D ``[n]`` variable has ``fan_in = fan_out = n``."""
    if tensor.dim() == 1:
        fan_in = fan_out = tensor.shape[0]
    else:
        receptive = math.prod(tensor.shape[:-2])
        fan_in, fan_out = tensor.shape[-2] * receptive, tensor.shape[-1] * receptive
    limit = math.sqrt(6.0 / max(1, fan_in + fan_out))
    with torch.no_grad():
        tensor.uniform_(-limit, limit)


class constant:  # noqa: N801 - used like the function TF's constant_initializer is
    """An initializer filling every element with ``value`` (picklable, unlike a closure)."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __call__(self, tensor: Tensor) -> None:
        with torch.no_grad():
            tensor.fill_(self.value)

    def __repr__(self) -> str:
        return f"constant({self.value})"


def resolve_initializer(
    initializer: Initializer, default: Callable[[Tensor], object], argname: str
) -> Callable[[Tensor], object]:
    """``None`` -> ``default``; a number -> :func:`constant`; a callable as it is."""
    if initializer is None:
        return default
    if isinstance(initializer, bool):
        raise TypeError(f"{argname} must be a callable, a number or None, got bool")
    if isinstance(initializer, (int, float)):
        return constant(float(initializer))
    if not callable(initializer):
        raise TypeError(f"{argname} must be a callable, a number or None, got {type(initializer).__name__}")
    return initializer
