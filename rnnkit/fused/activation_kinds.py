"""The cell activations the fused layers implement, and their torch twins.

A fused kernel saves an activation's *output* (``act(j)``, ``act(c)``, the GRU candidate), so
it implements the activations whose derivative is a function of the output alone:

=========  ==========================  =====================================
kind       y = act(x)                  dy/dx from y
=========  ==========================  =====================================
tanh       tanh(x)                     1 - y^2
sigmoid    1 / (1 + exp(-x))           y (1 - y)
relu       max(x, 0)                   1 if y > 0 else 0
relu6      min(max(x, 0), 6)           1 if 0 < y < 6 else 0
elu        x if x > 0 else e^x - 1     1 if y > 0 else y + 1
selu       s x if x > 0 else s a (e^x - 1)   s if y > 0 else y + s a
softsign   x / (1 + |x|)               (1 - |y|)^2
linear     x                           1
=========  ==========================  =====================================

(``s``, ``a``: SELU's scale and alpha.) Each kind is recognised by the cell's activation
callable: the functions ``rnnkit.activations`` resolves TF's names to, their ``torch`` /
``torch.nn.functional`` aliases, and the ``torch.nn`` activation modules. Anything else
(``gelu``, ``swish``, ``softplus``, a lambda) runs on the reference loop. The derivatives equal
those torch's autograd takes through the same functions (for ``relu``/``relu6``, 0 at the
kinks).

The gates of an LSTM or GRU (``gate_activation``) are of a gate kind: ``sigmoid``, or
``hard_sigmoid`` (``F.hardsigmoid``, ``y = clip(x / 6 + 0.5, 0, 1)``) whose derivative from
the output is ``1/6 if 0 < y < 1 else 0``: torch's, which is ``1/6`` for ``-3 < x < 3`` and
0 at ``x = +-3`` too, and takes ``1/6`` in float32 even for float64 tensors (so does this).
The two differ only at the one input below 3 whose ``x + 3`` rounds to 6 (``y = 1``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import linear

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

ACTIVATION_KINDS: dict[Callable[..., Any], str] = {
    torch.tanh: "tanh", F.tanh: "tanh",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    torch.relu: "relu", F.relu: "relu",
    F.relu6: "relu6",
    F.elu: "elu",
    torch.selu: "selu", F.selu: "selu",
    F.softsign: "softsign",
    linear: "linear",
}


ACTIVATION_CODES = {kind: code for code, kind in enumerate(
    ["tanh", "sigmoid", "relu", "relu6", "elu", "selu", "softsign", "linear"])}  # the enum of rnn_cpu.cpp


_MODULE_KINDS: dict[type, str] = {
    torch.nn.Tanh: "tanh", torch.nn.Sigmoid: "sigmoid", torch.nn.ReLU: "relu", torch.nn.ReLU6: "relu6",
    torch.nn.SELU: "selu", torch.nn.Softsign: "softsign", torch.nn.Identity: "linear",
}


def activation_kind(activation: Callable[..., Any]) -> str | None:
    """The kind of a cell's activation callable (a function, or a ``torch.nn`` activation
    module such as ``nn.ReLU()``; ``nn.ELU`` with ``alpha=1``), or None when the fused layers
    lack it."""
    if isinstance(activation, torch.nn.ELU):
        return "elu" if activation.alpha == 1.0 else None
    if isinstance(activation, torch.nn.Module):
        return _MODULE_KINDS.get(type(activation))
    try:
        return ACTIVATION_KINDS.get(activation)
    except TypeError:  # an unhashable callable
        return None


def activate_(kind: str, x: Tensor) -> Tensor:
    """``x = act(x)`` in place."""
    if kind == "tanh":
        return x.tanh_()
    if kind == "sigmoid":
        return x.sigmoid_()
    if kind == "relu":
        return x.relu_()
    if kind == "relu6":
        return F.relu6(x, inplace=True)
    if kind == "elu":
        return F.elu(x, inplace=True)
    if kind == "selu":
        return F.selu(x, inplace=True)
    if kind == "softsign":
        return x.div_(x.abs() + 1)
    if kind == "linear":
        return x
    raise ValueError(f"unknown activation kind {kind!r}")


def activation_backward(kind: str, grad: Tensor, y: Tensor) -> Tensor:
    """The gradient of ``act``'s input from the gradient ``grad`` of its output ``y``."""
    if kind == "tanh":
        return torch.ops.aten.tanh_backward(grad, y)
    if kind == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, y)
    if kind == "relu":
        return torch.ops.aten.threshold_backward(grad, y, 0)
    if kind == "relu6":
        return grad * ((y > 0) & (y < 6))
    if kind in ("elu", "selu"):
        scale, alpha = (SELU_SCALE, SELU_ALPHA) if kind == "selu" else (1.0, 1.0)
        return torch.ops.aten.elu_backward(grad, alpha, scale, 1.0, True, y)
    if kind == "softsign":
        return grad * (1 - y.abs()).square()
    if kind == "linear":
        return grad.clone()
    raise ValueError(f"unknown activation kind {kind!r}")


GATE_KINDS = ("sigmoid", "hard_sigmoid")
GATE_CODES = {kind: code for code, kind in enumerate(GATE_KINDS)}  # the enum Gate of rnn_cpu.cpp
HARD_SIGMOID_SLOPE = float(torch.tensor(1 / 6, dtype=torch.float32))  # torch's hardsigmoid_backward: float32 1/6


def gate_kind(cell: Any) -> str | None:
    """The gate kind of ``cell``'s ``gate_activation`` (sigmoid for cells without one), or None
    when it is neither sigmoid nor hard_sigmoid."""
    gate = getattr(cell, "gate_activation", torch.sigmoid)
    if gate is F.hardsigmoid or isinstance(gate, torch.nn.Hardsigmoid):
        return "hard_sigmoid"
    return "sigmoid" if activation_kind(gate) == "sigmoid" else None


def gate_(kind: str, x: Tensor) -> Tensor:
    """``x = gate(x)`` in place."""
    if kind == "sigmoid":
        return x.sigmoid_()
    if kind == "hard_sigmoid":
        return F.hardsigmoid(x, inplace=True)
    raise ValueError(f"unknown gate kind {kind!r}")


def gate_backward_into(kind: str, grad: Tensor, y: Tensor, out: Tensor) -> None:
    """``out`` = the gradient of the gate's input from the gradient ``grad`` of its output ``y``."""
    if kind == "sigmoid":
        torch.ops.aten.sigmoid_backward.grad_input(grad, y, grad_input=out)
    elif kind == "hard_sigmoid":
        torch.mul(grad, HARD_SIGMOID_SLOPE, out=out).masked_fill_((y <= 0) | (y >= 1), 0)
    else:
        raise ValueError(f"unknown gate kind {kind!r}")


def gate_options(cell: Any) -> list[str]:
    """The options of ``cell`` that TF's own LSTM/GRU gates lack, as words for an error: a gate
    activation other than sigmoid, no bias (empty: the gates every LSTM/GRU kernel computes,
    in rnnkit's fused layers, torch.nn, cuDNN and ONNX alike)."""
    options = []
    gate = getattr(cell, "gate_activation", torch.sigmoid)
    if activation_kind(gate) != "sigmoid":
        options.append(f"gate_activation {getattr(gate, '__name__', gate)!r}")
    if not getattr(cell, "use_bias", True):
        options.append("use_bias=False")
    return options
