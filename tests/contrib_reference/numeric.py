"""Central-difference gradients of a numpy float64 function: the gradients of a reference
that has no autograd. With step ``1e-6`` the error is about ``1e-10`` for smooth functions of
values of order one, so torch's float64 autograd must agree to ``1e-7``."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

STEP = 1e-6


def numeric_gradients(
    loss: Callable[[Mapping[str, np.ndarray]], float], arrays: Mapping[str, np.ndarray], step: float = STEP
) -> dict[str, np.ndarray]:
    """The gradient of the scalar ``loss(arrays)`` with respect to each array in ``arrays``
    (float64), by central differences, one element at a time."""
    values = {name: np.array(value, dtype=np.float64) for name, value in arrays.items()}
    gradients = {}
    for name, value in values.items():
        grad = np.zeros_like(value)
        flat, flat_grad = value.reshape(-1), grad.reshape(-1)
        for k in range(flat.size):
            kept = flat[k]
            flat[k] = kept + step
            up = loss(values)
            flat[k] = kept - step
            down = loss(values)
            flat[k] = kept
            flat_grad[k] = (up - down) / (2 * step)
        gradients[name] = grad
    return gradients


def weighted_sum(outputs: list[np.ndarray], weights: list[np.ndarray]) -> float:
    """``sum_k <outputs[k], weights[k]>``: a scalar loss whose gradient reaches every output
    element with its own (seeded, random) weight."""
    return float(sum(np.sum(o * w) for o, w in zip(outputs, weights, strict=True)))
