"""Small helpers shared by the ``tf.contrib.rnn`` ports (not public)."""

from __future__ import annotations

import torch
from torch import Tensor


class random_uniform:  # noqa: N801 - used like TF's random_uniform_initializer
    """TF's ``random_uniform_initializer(minval, maxval)``, in place (picklable, unlike a closure)."""

    def __init__(self, minval: float, maxval: float) -> None:
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, tensor: Tensor) -> None:
        with torch.no_grad():
            tensor.uniform_(self.minval, self.maxval)

    def __repr__(self) -> str:
        return f"random_uniform({self.minval}, {self.maxval})"


def join_scope(prefix: str, name: str) -> str:
    """The TF scope ``name`` inside ``prefix`` (``name`` alone at the top level)."""
    return f"{prefix}/{name}" if prefix else name
