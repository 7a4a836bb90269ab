"""Activation functions by TF/Keras name, so that ``activation="relu"`` works as in TF.

``"hard_sigmoid"`` is Keras 3's: ``clip(x / 6 + 0.5, 0, 1)`` (``relu6(x + 3) / 6``, torch's
``hardsigmoid``). Keras 2 and TF's ``tf.keras`` defined it as ``clip(0.2 x + 0.5, 0, 1)``; a file
written by Keras 2 still says ``"hard_sigmoid"`` and Keras 3 runs it with its own definition,
as rnnkit does. To compute Keras 2's, pass a callable:
``lambda x: (0.2 * x + 0.5).clamp(0, 1)``.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Activation", "resolve_activation"]

Activation = Union[str, Callable[[Tensor], Tensor], None]

def linear(x: Tensor) -> Tensor:
    """Keras' "linear" activation: the identity."""
    return x


_BY_NAME: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": F.selu,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "swish": F.silu,
    "silu": F.silu,
    "gelu": F.gelu,
    "linear": linear,
    "hard_sigmoid": F.hardsigmoid,
}


def resolve_activation(activation: Activation, argname: str = "activation") -> Callable[[Tensor], Tensor]:
    """The callable for ``activation``: ``None`` is tanh (TF's default), a string is looked up by
    its Keras name (``"tanh"``, ``"relu"``, ``"sigmoid"``, ...), a callable is used as it is."""
    if activation is None:
        return torch.tanh
    if isinstance(activation, str):
        try:
            return _BY_NAME[activation]
        except KeyError:
            raise ValueError(
                f"{argname}: unknown activation {activation!r}; expected one of {sorted(_BY_NAME)} "
                "or a callable"
            ) from None
    if not callable(activation):
        raise TypeError(f"{argname} must be a callable, a name or None, got {type(activation).__name__}")
    return activation
