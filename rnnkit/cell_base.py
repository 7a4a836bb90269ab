"""``RNNCell``: the one-step contract every cell, wrapper and runner is written against.

A cell is a ``torch.nn.Module`` that does ONE step, ``cell(inputs, state) -> (output,
new_state)``, and has ``state_size``, ``output_size`` and ``zero_state``. Calling the same cell
at every step shares its weights.

Cells that own weights declare them with :meth:`RNNCell._add_variable` under their TF names
(``kernel``, ``gates/kernel``, ``projection/kernel``; a ``/`` becomes a
``torch.nn.ParameterDict``, so the PyTorch name is ``gates.kernel``). Weights whose shape
depends on the input depth are created lazily at the first call, as in TF, unless the cell is
given ``input_size=``; until then they are ``UninitializedParameter``s, which optimizers,
``.to()`` and ``load_state_dict`` already accept.

dtype follows TF: a cell built without ``dtype`` takes its dtype from the first inputs it sees
(weights created or loaded before that are cast once, at that call); after that, inputs of
another dtype are an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from ._checks import as_dtype, check_batch_size, check_floating, check_state, check_tensor
from .state import zeros_for_size

__all__ = ["RNNCell"]

@dataclass(frozen=True)
class VariableSpec:
    """A weight of a cell: its TF-relative name, its shape, its initializer.

    With ``input_rows``, the weight multiplies ``concat([x, h])`` and its first dim is
    ``input_depth + shape[0]`` (``shape[0]`` rows for ``h``); other weights have ``shape``.
    """

    name: str  # TF name relative to the cell's scope, e.g. "gates/kernel"
    shape: tuple[int, ...]
    initializer: Callable[[Tensor], object]
    input_rows: bool = False

    @property
    def torch_name(self) -> str:
        return self.name.replace("/", ".")

    def shape_for(self, input_depth: int) -> tuple[int, ...]:
        if self.input_rows:
            return (input_depth + self.shape[0], *self.shape[1:])
        return self.shape


class _KeepsLazyWeights:
    """``state_dict``/``load_state_dict`` for modules whose weights may not exist yet: a lazy
    weight is saved as it is (torch cannot detach it), and a lazy weight loaded into a lazy
    one is skipped instead of failing the load."""

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        lazy = any(isinstance(p, UninitializedParameter) for p in self._parameters.values())  # type: ignore[attr-defined]
        super()._save_to_state_dict(destination, prefix, keep_vars or lazy)  # type: ignore[misc]

    def _load_from_state_dict(
        self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool, missing_keys: list[str],
        unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        own = self._parameters  # type: ignore[attr-defined]
        skipped = {
            prefix + name
            for name, param in own.items()
            if isinstance(param, UninitializedParameter)
            and isinstance(state_dict.get(prefix + name), UninitializedParameter)
        }
        kept = {key: value for key, value in state_dict.items() if key not in skipped}
        super()._load_from_state_dict(  # type: ignore[misc]
            kept, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        missing_keys[:] = [key for key in missing_keys if key not in skipped]


class _VariableScope(_KeepsLazyWeights, nn.ParameterDict):
    """A TF sub-scope of a cell (``gates/``, ``candidate/``, ``projection/``)."""


def _snake_case(name: str) -> str:
    """TF's layer naming: ``BasicLSTMCell`` -> ``basic_lstm_cell``, ``GRUCell`` -> ``gru_cell``."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class RNNCell(_KeepsLazyWeights, nn.Module):
    """Base class of all cells.

    Subclasses implement :meth:`step` (the math of one step), ``state_size`` and
    ``output_size``. :meth:`forward` checks the arguments, builds lazy weights and calls
    :meth:`step`.

    Args:
        name: the cell's TF scope name; default the snake_case class name (``lstm_cell``).
        dtype: the weights' dtype; default: that of the first inputs (TF's rule).
        device: where the weights live.
    """

    def __init__(
        self,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if dtype is not None:
            dtype = as_dtype(dtype)
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
        self.name = name or _snake_case(type(self).__name__)
        self._dtype_fixed = dtype is not None
        self._dtype: torch.dtype | None = dtype  # None: from the first inputs
        self._device = device
        self._variable_specs: list[VariableSpec] = []
        self.input_size: int | None = None
        self.register_load_state_dict_pre_hook(_build_from_state_dict)

    # ----------------------------------------------------------------------------------------
    # the contract
    @property
    def state_size(self) -> Any:
        """An int, a ``torch.Size`` or a nested tuple of them (``LSTMStateTuple(c=U, h=U)``)."""
        raise NotImplementedError

    @property
    def output_size(self) -> Any:
        """An int (or nested tuple of ints): the width of the output at each step."""
        raise NotImplementedError

    def step(self, inputs: Any, state: Any) -> tuple[Any, Any]:
        """The math of one step, on checked arguments: ``(output, new_state)``."""
        raise NotImplementedError

    def forward(self, inputs: Any, state: Any, scope: str | None = None) -> tuple[Any, Any]:
        """One step: ``inputs`` ``[B, D]``, ``state`` of structure ``state_size`` with leaves
        ``[B, size]``; returns ``(output [B, output_size], new_state)``.

        ``scope`` is accepted for TF compatibility and has no effect.
        """
        self._check_call(inputs, state)
        return self.step(inputs, state)

    def zero_state(
        self,
        batch_size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Any:
        """Zeros of structure ``state_size``, each leaf ``[batch_size, size]``.

        dtype and device default to the weights' (for a cell without weights: the wrapped
        cell's; else torch's default dtype, CPU).
        """
        batch_size = check_batch_size(batch_size)
        dtype, device = self._resolve_dtype_device(dtype, device)
        return zeros_for_size(self.state_size, batch_size, dtype, device)

    def get_initial_state(
        self, inputs: Tensor | None = None, batch_size: int | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """TF 2's spelling of :meth:`zero_state`: batch size and dtype from ``inputs`` if given."""
        if inputs is not None:
            if batch_size is not None and batch_size != inputs.shape[0]:
                raise ValueError(
                    f"batch size from input tensor is different from the input param: "
                    f"{inputs.shape[0]} vs {batch_size}"
                )
            if dtype is not None and dtype != inputs.dtype:
                raise ValueError(
                    f"dtype from input tensor is different from the input param: {inputs.dtype} vs {dtype}"
                )
            return self.zero_state(inputs.shape[0], inputs.dtype, inputs.device)
        if batch_size is None or dtype is None:
            raise ValueError(
                f"batch_size and dtype cannot be None while constructing initial state: "
                f"batch_size={batch_size}, dtype={dtype}"
            )
        return self.zero_state(batch_size, dtype)

    def start_sequence(self) -> None:
        """Called by the runners before the first step of a batch of sequences.

        Cells with per-sequence randomness (``DropoutWrapper(variational_recurrent=True)``)
        draw new masks after it; the built-in cells do nothing. Call it yourself between
        batches when you unroll a cell by hand.
        """
        for module in self.modules():
            if isinstance(module, RNNCell):
                module._new_sequence()

    def _new_sequence(self) -> None:
        """This cell's own part of :meth:`start_sequence` (the cells below are reached already)."""

    # ----------------------------------------------------------------------------------------
    # weights
    def _add_variable(
        self, name: str, shape: tuple[int, ...], initializer: Callable[[Tensor], object], input_rows: bool = False
    ) -> None:
        """Declare a weight under its TF-relative name; created (lazily) by :meth:`build`.

        ``input_rows``: the first dim is ``input_depth + shape[0]`` (a kernel on ``[x, h]``).
        """
        spec = VariableSpec(name, tuple(shape), initializer, input_rows)
        *scopes, leaf = name.split("/")
        owner: nn.Module = self
        for scope in scopes:
            if not hasattr(owner, scope):
                owner.add_module(scope, _VariableScope())
            owner = getattr(owner, scope)
        lazy = UninitializedParameter(device=self._device, dtype=self._dtype)  # type: ignore[call-arg]
        owner.register_parameter(leaf, lazy)  # type: ignore[arg-type]  # a Parameter subclass
        self._variable_specs.append(spec)

    @property
    def built(self) -> bool:
        """True once the weights exist (after the first call, ``input_size=`` or loading)."""
        return not any(isinstance(p, UninitializedParameter) for p in self._own_parameters())

    def build(self, input_size: int, dtype: torch.dtype | None = None) -> None:
        """Create the weights for inputs of depth ``input_size`` and initialize them.

        Does nothing for a cell that is already built with the same depth.
        """
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise ValueError(f"input_size must be a positive int, got {input_size!r}")
        input_size = int(input_size)
        if self.built and self._variable_specs:
            if input_size != self.input_size:
                raise ValueError(
                    f"{self.name} was built for inputs of depth {self.input_size}, got depth {input_size}"
                )
            return
        with torch.inference_mode(False):  # a first call under inference_mode: still trainable weights
            for spec in self._variable_specs:
                param = self._weight(spec)
                if isinstance(param, UninitializedParameter):
                    param.materialize(spec.shape_for(input_size), dtype=dtype)
            self.input_size = input_size
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialize every built weight with its initializer (TF's defaults unless given)."""
        with torch.no_grad():
            for spec in self._variable_specs:
                param = self._weight(spec)
                if not isinstance(param, UninitializedParameter):
                    spec.initializer(param)

    def infer_input_size(self, shapes: Mapping[str, Sequence[int]]) -> int | None:
        """The input depth implied by weight shapes keyed by TF-relative name, or ``None``."""
        for spec in self._variable_specs:
            if spec.input_rows and spec.name in shapes and len(shapes[spec.name]) > 0:
                return int(shapes[spec.name][0]) - spec.shape[0]
        return None

    def _weight(self, spec: VariableSpec) -> Tensor:
        """The tensor behind ``spec`` (a Parameter, or a plain tensor under ``functional_call``)."""
        owner: Any = self
        for part in spec.torch_name.split("."):
            owner = getattr(owner, part)
        return owner

    def _own_parameters(self) -> Iterator[Tensor]:
        for spec in self._variable_specs:
            yield self._weight(spec)

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        """The weight-owning modules of this cell tree with their TF scopes (``prefix/name``)."""
        yield self, f"{prefix}/{self.name}" if prefix else self.name

    # ----------------------------------------------------------------------------------------
    # checks
    def _check_call(self, inputs: Any, state: Any) -> None:
        """Check one step's arguments (and build lazy weights). Wrappers override this."""
        inputs = check_tensor(inputs, "inputs")
        check_floating(inputs.dtype, "inputs")
        if inputs.dim() != 2:
            raise ValueError(
                f"inputs of {self.name} must have rank 2 [batch, depth], got shape {list(inputs.shape)}"
            )
        if self._variable_specs:
            self.ensure_built(inputs.shape[1], inputs.dtype)
        check_state(state, self.state_size, inputs.shape[0], inputs.dtype, "state")

    def ensure_built(self, input_size: int, dtype: torch.dtype) -> None:
        """Make the weights ready for inputs of depth ``input_size`` and ``dtype``: build a lazy
        cell, take the first inputs' dtype (TF's rule), or raise if they do not fit."""
        if not self.built:
            self.build(input_size, dtype=self._dtype or dtype)
        elif input_size != self.input_size:
            raise ValueError(
                f"inputs of {self.name} must have depth {self.input_size} (the depth it was built "
                f"for), got depth {input_size}"
            )
        weights_dtype = next(self._own_parameters()).dtype
        if weights_dtype == dtype:
            if not self._dtype_fixed:  # nn.Module's __setattr__ costs more than the check
                self._dtype_fixed = True
        elif not self._dtype_fixed:
            for param in self._own_parameters():
                param.data = param.data.to(dtype)
            self._dtype_fixed = True
        else:
            raise TypeError(
                f"inputs have dtype {dtype}, but the weights of {self.name} are {weights_dtype}; "
                f"cast the inputs or the cell (cell.to({dtype}))"
            )

    def _resolve_dtype_device(
        self, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> tuple[torch.dtype, torch.device | str | None]:
        first = next(iter(self.parameters()), None)
        if dtype is None:
            dtype = first.dtype if first is not None else torch.get_default_dtype()
        dtype = as_dtype(dtype)
        if device is None and first is not None:
            device = first.device
        return dtype, device

    def extra_repr(self) -> str:
        return f"name={self.name!r}, state_size={self.state_size}, output_size={self.output_size}"


def _build_from_state_dict(module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *_: Any) -> None:
    """Let ``load_state_dict`` build a lazy cell from the saved weights' shapes."""
    if not isinstance(module, RNNCell) or module.built or not module._variable_specs:
        return
    saved = {
        spec.name: state_dict[prefix + spec.torch_name]
        for spec in module._variable_specs
        if prefix + spec.torch_name in state_dict
        and not isinstance(state_dict[prefix + spec.torch_name], UninitializedParameter)
    }
    depth = module.infer_input_size({name: tuple(value.shape) for name, value in saved.items()})
    if depth is not None and depth > 0:
        module.build(depth, dtype=module._dtype or next(iter(saved.values())).dtype)
