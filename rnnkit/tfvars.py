"""TensorFlow variable names <-> a cell's parameters.

Weights live in TF's layout under TF's names, so moving them is a name map:
``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel`` is ``cell.cells[0].kernel``. The scope is
what TF put in front of the cell's own names: ``"rnn"`` for ``dynamic_rnn``/``static_rnn``
(``"<outer scope>/rnn"`` inside a variable scope, the ``scope=`` argument if one was given),
``"bidirectional_rnn/fw"`` and ``".../bw"`` for the two cells of a bidirectional runner.
``MultiRNNCell`` adds ``multi_rnn_cell/cell_<i>``; wrappers add nothing.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from .cell_base import RNNCell

__all__ = ["LoadResult", "load_tf_variables", "tf_variables"]


class LoadResult(NamedTuple):
    """What :func:`load_tf_variables` could not match (all empty after a strict load)."""

    missing: list[str]  # expected TF names with no array
    unexpected: list[str]  # array names under the scope that match no weight
    mismatched: list[str]  # "name: expected [..], got [..]"


def _module_scopes(module: Any, scope: str | None) -> Iterator[tuple[nn.Module, str]]:
    if isinstance(module, RNNCell) or hasattr(module, "_tf_scopes"):
        yield from module._tf_scopes(scope or "")
        return
    raise TypeError(f"cell must be an rnnkit cell or layer, got {type(module).__name__}")


def _named_weights(module: Any, scope: str | None) -> Iterator[tuple[str, nn.Module, str]]:
    """``(tf_name, owner, torch_name)`` for every weight, each shared weight once."""
    seen: set[int] = set()
    for owner, prefix in _module_scopes(module, scope):
        for torch_name, param in owner.named_parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            yield f"{prefix}/{torch_name.replace('.', '/')}", owner, torch_name


def tf_variables(cell: Any, scope: str | None = "rnn") -> dict[str, nn.Parameter]:
    """Every weight of ``cell`` (a cell, a cell tree or an ``rnnkit.RNN`` layer) by its full TF
    variable name, in TF's creation order, e.g.
    ``{"rnn/basic_lstm_cell/kernel": Parameter[D+U, 4U], "rnn/basic_lstm_cell/bias": ...}``.

    A weight shared by several layers (the same cell object twice) appears once, under its
    first name, as TF creates it once. A lazy cell's entries are ``UninitializedParameter``s.
    """
    return {name: owner.get_parameter(torch_name) for name, owner, torch_name in _named_weights(cell, scope)}


def load_tf_variables(
    cell: Any, arrays: Mapping[str, Any], scope: str | None = "rnn", strict: bool = True
) -> LoadResult:
    """Copy TF variables (numpy arrays or tensors, by full TF name) into ``cell``'s weights.

    A lazy cell is built from the arrays' shapes (its input depth from its kernel). Names in
    ``arrays`` outside ``scope`` are ignored (so a whole checkpoint's variables can be passed);
    names under ``scope`` that match no weight are "unexpected". With ``strict=True`` any
    missing, unexpected or mis-shaped name raises one ``ValueError`` listing them all, sorted,
    and nothing is changed; with ``strict=False`` what matches is loaded and the rest returned.

    Values are cast to the weights' dtype; a lazy cell without ``dtype`` takes the arrays'.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping from TF names to arrays, got {type(arrays).__name__}")
    values = {_check_name(name): _as_tensor(name, value) for name, value in arrays.items()}
    targets, builds = _plan(cell, scope, values)
    prefix = f"{scope}/" if scope else ""
    missing = sorted(name for name in targets if name not in values)
    unexpected = sorted(name for name in values if name.startswith(prefix) and name not in targets)
    mismatched, loadable = [], []
    for name in sorted(set(targets) & set(values)):
        want, got = targets[name].shape, tuple(values[name].shape)
        if want == got:
            loadable.append(name)
        else:
            expected = list(want) if want is not None else "unknown (no array to infer the input depth from)"
            mismatched.append(f"{name}: expected shape {expected}, got {list(got)}")
    result = LoadResult(missing, unexpected, mismatched)
    if strict and (missing or unexpected or mismatched):
        raise ValueError(_mismatch_message(result, scope, values))
    for owner, depth, dtype in builds:
        owner.build(depth, dtype=dtype)
    with torch.no_grad():
        for name in loadable:
            param = targets[name].owner.get_parameter(targets[name].torch_name)
            param.copy_(values[name].to(device=param.device, dtype=param.dtype))
    return result


class _Target(NamedTuple):
    owner: nn.Module
    torch_name: str
    shape: tuple[int, ...] | None  # None: a lazy weight whose shape the arrays do not determine


def _plan(
    cell: Any, scope: str | None, values: Mapping[str, Tensor]
) -> tuple[dict[str, _Target], list[tuple[RNNCell, int, torch.dtype]]]:
    """The expected shape of every TF name, and the lazy cells to build (depth, dtype) first.

    Nothing is changed here, so a failed strict load leaves the cell as it was.
    """
    targets: dict[str, _Target] = {}
    builds: dict[int, tuple[RNNCell, int, torch.dtype]] = {}
    for name, owner, torch_name in _named_weights(cell, scope):
        param = owner.get_parameter(torch_name)
        shape = None if isinstance(param, UninitializedParameter) else tuple(param.shape)
        if shape is None and isinstance(owner, RNNCell):
            cell_prefix = name[: -len(torch_name) - 1]
            if id(owner) not in builds:
                build = _lazy_build(owner, cell_prefix, values)
                if build is not None:
                    builds[id(owner)] = build
            if id(owner) in builds:
                spec = next(s for s in owner._variable_specs if s.torch_name == torch_name)
                shape = spec.shape_for(builds[id(owner)][1])
        targets[name] = _Target(owner, torch_name, shape)
    return targets, list(builds.values())


def _lazy_build(owner: RNNCell, prefix: str, values: Mapping[str, Tensor]) -> tuple[RNNCell, int, torch.dtype] | None:
    """``(cell, input depth, dtype)`` for a lazy cell from its arrays' shapes, if they tell."""
    mine = {name[len(prefix) + 1 :]: value for name, value in values.items() if name.startswith(prefix + "/")}
    depth = owner.infer_input_size({name: tuple(value.shape) for name, value in mine.items()})
    if depth is None or depth < 1:
        return None
    return owner, depth, owner._dtype or next(iter(mine.values())).dtype


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"arrays must be keyed by TF variable names (str), got a key {name!r}")
    return name


def _as_tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind != "f":
            raise TypeError(f"arrays[{name!r}] must hold floating point values, got numpy dtype {value.dtype}")
        value = torch.from_numpy(np.array(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"arrays[{name!r}] must be a numpy array or a tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"arrays[{name!r}] must hold floating point values, got dtype {value.dtype}")
    return value.detach()


def _mismatch_message(result: LoadResult, scope: str | None, values: Mapping[str, Tensor]) -> str:
    lines = [f"load_tf_variables(scope={scope!r}): the arrays do not match the cell's weights."]
    groups = (("missing", result.missing), ("unexpected", result.unexpected), ("mis-shaped", result.mismatched))
    for title, names in groups:
        if names:
            lines.append(f"{title} ({len(names)}):")
            lines.extend(f"  {name}" for name in names)
    hint = _scope_hint(result.missing, scope, values)
    if hint:
        lines.append(hint)
    return "\n".join(lines)


def _scope_hint(missing: list[str], scope: str | None, values: Mapping[str, Tensor]) -> str | None:
    """Suggest the scope under which the missing names do exist, if there is one."""
    prefix = f"{scope}/" if scope else ""
    for name in missing:
        relative = name[len(prefix) :]
        for key in values:
            if key.endswith("/" + relative):
                return f"hint: the arrays hold {key!r}; did you mean scope={key[: -len(relative) - 1]!r}?"
    return None
