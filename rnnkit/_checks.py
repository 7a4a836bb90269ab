"""Argument checks shared by cells, wrappers and runners.

Every error names the argument, what was expected and what came, and uses the exception type
and the message fragments of TensorFlow's own tests ("is not an RNNCell", "must be a vector",
"RNN cell only supports floating", "Expected state ... a tuple").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .state import _describe, is_nested


def check_is_cell(cell: Any, argname: str = "cell") -> None:
    """``TypeError`` unless ``cell`` follows the RNNCell protocol (TF's ``assert_like_rnncell``)."""
    if isinstance(cell, type):
        raise TypeError(
            f"The argument '{argname}' ({cell!r}) is not an RNNCell: it is a class, not an instance "
            f"(did you mean {cell.__name__}(...)?)"
        )
    problems = []
    if not hasattr(cell, "output_size"):
        problems.append("'output_size' property is missing")
    if not hasattr(cell, "state_size"):
        problems.append("'state_size' property is missing")
    if not (hasattr(cell, "zero_state") or hasattr(cell, "get_initial_state")):
        problems.append("either 'zero_state' or 'get_initial_state' method is required")
    if not callable(cell):
        problems.append("is not callable")
    if problems:
        raise TypeError(f"The argument '{argname}' ({cell!r}) is not an RNNCell: {', '.join(problems)}.")


def check_floating(dtype: torch.dtype, argname: str) -> None:
    """``ValueError`` for a non-floating dtype (complex is allowed, as in TF)."""
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"{argname}: RNN cell only supports floating point inputs, but received dtype: {dtype}")


def as_dtype(value: Any, argname: str = "dtype") -> torch.dtype:
    """A floating ``torch.dtype`` from a ``torch.dtype`` or its name (``"float64"``, as TF takes)."""
    if isinstance(value, str):
        dtype = getattr(torch, value, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{argname}: unknown dtype name {value!r}; expected e.g. 'float32' or torch.float32")
        value = dtype
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{argname} must be a torch.dtype (or its name), got {type(value).__name__}")
    check_floating(value, argname)
    return value


def check_tensor(value: Any, argname: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{argname} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_batch_size(batch_size: Any, argname: str = "batch_size") -> int:
    """A non-negative Python int from an int or a 0-d integer tensor."""
    if isinstance(batch_size, Tensor):
        if batch_size.dim() != 0 or batch_size.dtype.is_floating_point or batch_size.dtype == torch.bool:
            raise ValueError(
                f"{argname} must be a scalar integer, got a tensor of shape "
                f"{list(batch_size.shape)} and dtype {batch_size.dtype}"
            )
        batch_size = int(batch_size)
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"{argname} must be an int, got {type(batch_size).__name__}")
    batch_size = int(batch_size)
    if batch_size < 0:
        raise ValueError(f"{argname} must be >= 0, got {batch_size}")
    return batch_size


def check_state(
    state: Any,
    state_size: Any,
    batch_size: int,
    dtype: torch.dtype,
    argname: str,
    *,
    dtype_source: str = "the inputs have dtype",
) -> None:
    """Check that ``state`` has the structure of ``state_size`` and leaves ``[batch_size, size]``
    of ``dtype``; ``dtype_source`` says where ``dtype`` came from, for the error message.

    Tuples, lists and namedtuples of the right length are interchangeable (a plain ``(c, h)``
    tuple is a valid LSTM state, as in TF).
    """
    if is_nested(state_size):
        if not is_nested(state) or len(state) != len(state_size):
            raise ValueError(
                f"Expected {argname} to be a tuple of length {len(state_size)} matching "
                f"state_size {state_size}, but received: {_describe(state)}"
            )
        fields = getattr(state_size, "_fields", None)
        for i, (sub_state, sub_size) in enumerate(zip(state, state_size)):
            sub_name = f"{argname}.{fields[i]}" if fields else f"{argname}[{i}]"
            check_state(sub_state, sub_size, batch_size, dtype, sub_name, dtype_source=dtype_source)
        return
    leaf_shape = [state_size] if isinstance(state_size, int) else list(state_size)
    expected = [batch_size, *leaf_shape]
    if not isinstance(state, Tensor):
        raise TypeError(f"{argname} must be a tensor of shape {expected}, but received: {_describe(state)}")
    if list(state.shape) != expected:
        raise ValueError(
            f"{argname} must have shape {expected} ([batch_size, state size]), but has shape {list(state.shape)}"
        )
    if state.dtype != dtype:
        raise TypeError(f"{argname} has dtype {state.dtype}, but {dtype_source} {dtype}")


def check_keep_prob(value: Any, argname: str) -> float:
    """A keep probability in (0, 1] as a Python float."""
    if isinstance(value, Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Parameter {argname} must be a number in (0, 1], got {type(value).__name__}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"Parameter {argname} must be between 0 and 1 (0 excluded). Received {value}")
    return float(value)
