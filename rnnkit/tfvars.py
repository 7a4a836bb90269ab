"""TensorFlow variable names <-> a cell's parameters.

Weights live in TF's layout under TF's names, so moving them is a name map:
``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel`` is ``cell.cells[0].kernel``. The scope is
what TF put in front of the cell's own names: ``"rnn"`` for ``dynamic_rnn``/``static_rnn``
(``"<outer scope>/rnn"`` inside a variable scope, the ``scope=`` argument if one was given),
``"bidirectional_rnn/fw"`` and ``".../bw"`` for the two cells of a bidirectional runner.
``MultiRNNCell`` adds ``multi_rnn_cell/cell_<i>``; wrappers add nothing.

A whole model (any ``nn.Module``) loads in one call: its rnnkit cells and layers, found as
submodules, by their TF names under their scopes, and its other parameters (an embedding, a
softmax) through a name map written once, ``names={"softmax_w": "rnnlm/softmax_w"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from .cell_base import RNNCell

__all__ = ["LoadResult", "Names", "Scope", "load_tf_variables", "tf_variables"]

#: How a parameter's TF array is turned into its value: ``"T"`` reverses the axes (numpy's
#: ``.T``: TF's ``softmax_w`` [H, V] into ``nn.Linear``'s weight [V, H]), or any callable.
Transform = Union[str, Callable[[Tensor], Tensor]]
#: A parameter's TF variable: its full name, or ``(name, transform)``.
TFName = Union[str, tuple[str, Transform]]
#: ``{model parameter name: TF name}`` (names as ``model.named_parameters()`` gives them), or a
#: callable from a parameter name to its TF name (None: none).
Names = Union[Mapping[str, TFName], Callable[[str], Union[TFName, None]]]
#: One scope for every rnnkit cell of a module, or ``{submodule name: scope}`` per cell.
Scope = Union[str, None, Mapping[str, Union[str, None]]]


class LoadResult(NamedTuple):
    """What :func:`load_tf_variables` could not match (all empty after a strict load)."""

    missing: list[str]  # expected TF names with no array (a model's unmapped parameter by its own name)
    unexpected: list[str]  # array names under the cells' subtrees (a model: the scopes) that nothing took
    mismatched: list[str]  # "name: expected [..], got [..]"


def _module_scopes(module: Any, scope: str | None) -> Iterator[tuple[nn.Module, str]]:
    if isinstance(module, RNNCell) or hasattr(module, "_tf_scopes"):
        yield from module._tf_scopes(scope or "")
        return
    raise TypeError(f"cell must be an rnnkit cell or layer, got {type(module).__name__}")


def _named_weights(
    module: Any, scope: str | None, seen: set[int] | None = None
) -> Iterator[tuple[str, nn.Module, str]]:
    """``(tf_name, owner, torch_name)`` for every weight, each shared weight once (once over
    several calls sharing ``seen``)."""
    seen = set() if seen is None else seen
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
    cell: nn.Module,
    arrays: Mapping[str, Any],
    scope: Scope = "rnn",
    strict: bool = True,
    names: Names | None = None,
) -> LoadResult:
    """Copy TF variables (numpy arrays or tensors, by full TF name) into a cell's, a layer's or a
    whole model's parameters.

    ``cell`` is an rnnkit cell or layer, or any ``nn.Module`` holding them (found as submodules,
    outermost first: cells, ``MultiRNNCell``, ``rk.RNN``, ``rk.BidirectionalRNN``). Each takes
    its TF names (see :func:`tf_variables`) under ``scope``: one scope for all, or
    ``{submodule name: scope}`` naming each (``{"encoder": "bidirectional_rnn", "decoder.rnn":
    "decoder/rnn"}``). Every other parameter takes the TF variable ``names`` gives it:
    ``{"embedding.weight": "embedding", "softmax_w": "rnnlm/softmax_w", "proj.weight":
    ("rnnlm/softmax_w", "T")}`` (keys as in ``module.named_parameters()``; ``"T"`` reverses the
    axes, or give any callable array -> array), or a callable from a parameter name to its TF
    name (None: none). Shapes must match exactly, after the transform.

    A lazy cell is built from the arrays' shapes (its input depth from its kernel). Names in
    ``arrays`` outside the cells' own subtrees (``rnn/multi_rnn_cell/``, ``rnn/lstm_cell/``; for a
    whole model: outside ``scope``) are ignored; names inside that nothing takes are
    "unexpected". With ``strict=True`` any missing, unexpected or mis-shaped name raises one
    ``ValueError`` listing them all, sorted (with a hint when the names exist under another
    scope), and nothing is changed; with ``strict=False`` what matches is loaded and the rest
    returned.

    Values are copied into the existing parameters, cast to their dtype and device; a lazy cell
    without ``dtype`` takes the arrays'.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping from TF names to arrays, got {type(arrays).__name__}")
    present = [_check_name(name) for name in arrays]
    layout = _layout(cell, scope, names)
    wanted = layout.wanted()
    values = {name: _as_tensor(name, arrays[name]) for name in present if name in wanted}
    return _load(layout, values, present, strict, caller="load_tf_variables", source="arrays", hint_names=present)


# ---------------------------------------------------------------------------------------------
# where every parameter comes from (names only)


@dataclass
class _Layout:
    """Where every parameter of a module comes from, by name only (no arrays yet)."""

    module: nn.Module
    scope: Scope
    cells: list[tuple[str, Any, str | None]]  # (submodule name, cell or layer, its scope)
    mapped: dict[str, tuple[str, Transform | None]]  # parameter name -> (TF name, transform)
    unnamed: list[str]  # parameters outside the cells without a TF name
    whole_model: bool  # not an rnnkit cell or layer itself
    cell_names: dict[str, str] = field(default_factory=dict)  # TF name -> the cell's submodule name

    def wanted(self) -> set[str]:
        """Every TF name some parameter takes."""
        return set(self.cell_names) | {tf_name for tf_name, _ in self.mapped.values()}

    def scope_prefixes(self) -> list[str]:
        """The scopes as name prefixes (``""``: everything)."""
        return sorted({f"{scope}/" if scope else "" for _, _, scope in self.cells} or {_prefix(self.scope)})

    def regions(self) -> list[str]:
        """The prefixes under which an array nothing takes is "unexpected": for a whole model its
        scopes; for a cell or layer its own subtrees (scope + the cell's top-level name), so that
        a checkpoint's other variables beside the cell (``rnnlm/softmax_w``) are not its business."""
        if self.whole_model:
            return self.scope_prefixes()
        scopes = {path: scope for path, _, scope in self.cells}
        return sorted({_subtree(name, scopes[path]) for name, path in self.cell_names.items()})


def _prefix(scope: Any) -> str:
    return f"{scope}/" if isinstance(scope, str) and scope else ""


def _subtree(name: str, scope: str | None) -> str:
    prefix = _prefix(scope)
    top, slash, _ = name[len(prefix) :].partition("/")
    return prefix + top + slash


def _is_rnnkit(module: Any) -> bool:
    return isinstance(module, RNNCell) or hasattr(module, "_tf_scopes")


def _layout(module: Any, scope: Scope, names: Names | None) -> _Layout:
    """Check the arguments and say which TF name each parameter of ``module`` takes."""
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"cell must be an rnnkit cell or layer, or an nn.Module holding them, got {type(module).__name__}"
        )
    cells = _scoped_cells(_cell_roots(module), scope)
    in_cells = {id(p) for _, cell, _ in cells for p in cell.parameters()}
    others = [(name, p) for name, p in module.named_parameters() if id(p) not in in_cells]
    mapped, unnamed = _map_names(module, others, in_cells, names)
    given = dict(scope) if isinstance(scope, Mapping) else _normal_scope(scope)
    layout = _Layout(module, given, cells, mapped, unnamed, whole_model=not _is_rnnkit(module))
    _name_cells(layout)
    return layout


def _cell_roots(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost rnnkit cells and layers in ``module`` by submodule name (``""``: itself)."""
    if _is_rnnkit(module):
        return [("", module)]
    roots: list[tuple[str, nn.Module]] = []
    for name, sub in module.named_modules():
        if _is_rnnkit(sub) and not any(name.startswith(f"{root}.") for root, _ in roots):
            roots.append((name, sub))
    return roots


def _normal_scope(scope: Any) -> str | None:
    """A scope as TF writes names: ``None`` or ``""`` for none, no trailing slash."""
    if scope is None:
        return None
    if not isinstance(scope, str):
        raise TypeError(f"scope must be a str or None (or a mapping of them), got {type(scope).__name__}")
    return scope.rstrip("/") or None


def _scoped_cells(roots: list[tuple[str, nn.Module]], scope: Any) -> list[tuple[str, Any, str | None]]:
    if not isinstance(scope, Mapping):
        one = _normal_scope(scope)
        return [(path, cell, one) for path, cell in roots]
    paths = [path for path, _ in roots]
    lacking = [path for path in paths if path not in scope]
    unknown = [key for key in scope if key not in paths]
    if lacking or unknown:
        raise ValueError(
            f"scope: a mapping must give the scope of each rnnkit cell or layer by its submodule name,"
            f" exactly {paths}; it lacks {lacking} and has unknown {unknown}"
        )
    return [(path, cell, _normal_scope(scope[path])) for path, cell in roots]


def _map_names(
    module: nn.Module, others: Sequence[tuple[str, Tensor]], in_cells: set[int], names: Names | None
) -> tuple[dict[str, tuple[str, Transform | None]], list[str]]:
    """``(parameter name -> (TF name, transform), parameters without a TF name)``."""
    if names is None:
        names = {}
    if callable(names) and not isinstance(names, Mapping):
        return _map_by_callable(others, names)
    if not isinstance(names, Mapping):
        raise TypeError(f"names must be a mapping or a callable, got {type(names).__name__}")
    every = dict(module.named_parameters(remove_duplicate=False))  # a tied weight by any of its names
    own = {id(p): name for name, p in others}
    mapped: dict[str, tuple[str, Transform | None]] = {}
    unknown, cells = [], []
    for key, value in names.items():
        param = every.get(key) if isinstance(key, str) else None
        if param is None:
            unknown.append(key)
        elif id(param) in in_cells:
            cells.append(key)
        elif own[id(param)] in mapped:
            raise ValueError(f"names: {key!r} and another key name the same (tied) parameter {own[id(param)]!r}")
        else:
            mapped[own[id(param)]] = _tf_name(key, value)
    _check_keys(unknown, cells, [name for name, _ in others])
    return mapped, [name for name, _ in others if name not in mapped]


def _map_by_callable(
    others: Sequence[tuple[str, Tensor]], names: Callable[[str], Any]
) -> tuple[dict[str, tuple[str, Transform | None]], list[str]]:
    mapped, unnamed = {}, []
    for name, _ in others:
        value = names(name)
        if value is None:
            unnamed.append(name)
        else:
            mapped[name] = _tf_name(name, value)
    return mapped, unnamed


def _check_keys(unknown: list[Any], cells: list[str], others: list[str]) -> None:
    problems = []
    if unknown:
        listed = ", ".join(others) or "none"
        problems.append(f"{unknown} are not parameter names of the model (those outside its rnnkit cells: {listed})")
    if cells:
        problems.append(f"{cells} belong to rnnkit cells, which take their TF names from scope=")
    if problems:
        raise ValueError("names: " + "; ".join(problems))


def _tf_name(key: str, value: Any) -> tuple[str, Transform | None]:
    if isinstance(value, str) and value:
        return value, None
    if (
        isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0]
        and (value[1] == "T" or callable(value[1]))
    ):
        return value[0], value[1]
    raise TypeError(f"names[{key!r}] must be a TF variable name or (name, 'T' or a callable), got {value!r}")


def _name_cells(layout: _Layout) -> None:
    """Every cell weight's TF name, refusing two weights under one name."""
    seen: set[int] = set()
    for path, cell, scope in layout.cells:
        for name, _, _ in _named_weights(cell, scope, seen):
            if name in layout.cell_names:
                other = layout.cell_names[name]
                raise ValueError(
                    f"scope: the cells {other!r} and {path!r} both take the TF name {name!r};"
                    f" give each its scope, e.g. scope={{{other!r}: ..., {path!r}: ...}}"
                )
            layout.cell_names[name] = path
    taken: dict[str, str] = {}
    for param, (name, _) in layout.mapped.items():
        if name in layout.cell_names:
            raise ValueError(f"names: {param!r} takes {name!r}, a weight of the cell {layout.cell_names[name]!r}")
        if name in taken:
            raise ValueError(f"names: {taken[name]!r} and {param!r} both take the TF name {name!r}")
        taken[name] = param


# ---------------------------------------------------------------------------------------------
# checking the arrays against it, then loading


class _Target(NamedTuple):
    owner: nn.Module
    torch_name: str
    shape: tuple[int, ...] | None  # None: a lazy weight whose shape the arrays do not determine
    label: str  # how a message names it
    transform: Transform | None = None


def _load(
    layout: _Layout,
    values: Mapping[str, Tensor],
    present: Iterable[str],
    strict: bool,
    caller: str,
    source: str,
    hint_names: Iterable[str],
) -> LoadResult:
    """Check every name first (``present``: every name the source holds, ``values``: the
    tensors of those some parameter takes), then build lazy cells and copy."""
    targets, builds = _plan(layout, values)
    prepared = {name: _transformed(targets[name], value) for name, value in values.items()}
    result, loadable = _compare(layout, targets, prepared, present)
    if strict and (result.missing or result.unexpected or result.mismatched):
        header = f"{caller}(scope={layout.scope!r}): the {source} {_verb(source, 'do')} not match the {_what(layout)}."
        raise ValueError(_mismatch_message(result, header, _hints(layout, targets, values, hint_names, source)))
    for owner, depth, dtype in builds:
        owner.build(depth, dtype=dtype)
    with torch.no_grad():
        for name in loadable:
            param = targets[name].owner.get_parameter(targets[name].torch_name)
            param.copy_(prepared[name].to(device=param.device, dtype=param.dtype))
    return result


def _verb(source: str, verb: str) -> str:
    """``verb`` agreeing with ``source`` ("the arrays hold", "the checkpoint holds")."""
    return verb if source.endswith("s") else {"do": "does"}.get(verb, verb + "s")


def _what(layout: _Layout) -> str:
    return "model's parameters" if layout.whole_model else "cell's weights"


def _plan(
    layout: _Layout, values: Mapping[str, Tensor]
) -> tuple[dict[str, _Target], list[tuple[RNNCell, int, torch.dtype]]]:
    """The expected shape of every TF name, and the lazy cells to build (depth, dtype) first.

    Nothing is changed here, so a failed strict load leaves the module as it was.
    """
    targets: dict[str, _Target] = {}
    builds: dict[int, tuple[RNNCell, int, torch.dtype]] = {}
    seen: set[int] = set()
    for _, cell, scope in layout.cells:
        for name, owner, torch_name in _named_weights(cell, scope, seen):
            targets[name] = _Target(owner, torch_name, _cell_shape(owner, torch_name, name, values, builds), name)
    for param_name, (name, transform) in layout.mapped.items():
        param = layout.module.get_parameter(param_name)
        shape = None if isinstance(param, UninitializedParameter) else tuple(param.shape)
        targets[name] = _Target(layout.module, param_name, shape, f"{name} (for {param_name})", transform)
    return targets, list(builds.values())


def _cell_shape(
    owner: nn.Module, torch_name: str, name: str, values: Mapping[str, Tensor], builds: dict[int, Any]
) -> tuple[int, ...] | None:
    """A cell weight's shape; a lazy cell's from the arrays (noting the build in ``builds``)."""
    param = owner.get_parameter(torch_name)
    if not isinstance(param, UninitializedParameter):
        return tuple(param.shape)
    if not isinstance(owner, RNNCell):
        return None
    if id(owner) not in builds:
        build = _lazy_build(owner, name[: -len(torch_name) - 1], values)
        if build is None:
            return None
        builds[id(owner)] = build
    spec = next(s for s in owner._variable_specs if s.torch_name == torch_name)
    return spec.shape_for(builds[id(owner)][1])


def _transformed(target: _Target | None, value: Tensor) -> Tensor:
    if target is None or target.transform is None:
        return value
    if target.transform == "T":
        return value.permute(*reversed(range(value.dim())))
    out = target.transform(value)  # type: ignore[operator]
    return _as_tensor(target.label, out)


def _compare(
    layout: _Layout, targets: Mapping[str, _Target], values: Mapping[str, Tensor], present: Iterable[str]
) -> tuple[LoadResult, list[str]]:
    regions = layout.regions()
    missing = sorted(target.label for name, target in targets.items() if name not in values)
    missing += sorted(f"{name} (no TF name: give it one in names=)" for name in layout.unnamed)
    unexpected = sorted(
        name for name in set(present) if name not in targets and any(name.startswith(r) for r in regions)
    )
    mismatched, loadable = [], []
    for name in sorted(set(targets) & set(values)):
        target, got = targets[name], tuple(values[name].shape)
        if target.shape == got:
            loadable.append(name)
        else:
            mismatched.append(_mismatch_line(target, got))
    return LoadResult(missing, unexpected, mismatched), loadable


def _mismatch_line(target: _Target, got: tuple[int, ...]) -> str:
    if target.shape is None:
        why = "unknown (no array to infer the input depth from)" if isinstance(target.owner, RNNCell) else (
            "unknown (an uninitialized lazy parameter: run or build the model first)"
        )
        return f"{target.label}: expected shape {why}, got {list(got)}"
    line = f"{target.label}: expected shape {list(target.shape)}, got {list(got)}"
    if target.transform is None and len(got) > 1 and tuple(reversed(got)) == target.shape:
        tf_name = target.label.split(" (for ")[0]
        line += f" (transposed: names[{target.torch_name!r}] = ({tf_name!r}, 'T'))"
    return line


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


# ---------------------------------------------------------------------------------------------
# the error


def _mismatch_message(result: LoadResult, header: str, hints: list[str]) -> str:
    lines = [header]
    groups = (("missing", result.missing), ("unexpected", result.unexpected), ("mis-shaped", result.mismatched))
    for title, names in groups:
        if names:
            lines.append(f"{title} ({len(names)}):")
            lines.extend(f"  {name}" for name in names)
    return "\n".join(lines + hints)


def _hints(
    layout: _Layout, targets: Mapping[str, _Target], values: Mapping[str, Tensor], hint_names: Iterable[str],
    source: str,
) -> list[str]:
    """Where the missing names do exist: another scope per cell, a fuller name per mapped
    parameter; and, for a cell, what else its scope holds."""
    available = set(hint_names)
    hints = []
    for path, _, scope in layout.cells:
        missing = [n for n, p in layout.cell_names.items() if p == path and n not in values]
        hint = _scope_hint(missing, scope, available, source, path if isinstance(layout.scope, Mapping) else None)
        if hint and hint not in hints:
            hints.append(hint)
    for param, (name, _) in layout.mapped.items():
        if name not in values:
            fuller = sorted(key for key in available if key.endswith(f"/{name}"))
            if fuller:
                hints.append(
                    f"hint: the {source} {_verb(source, 'hold')} {fuller[0]!r};"
                    f" did you mean names[{param!r}] = {fuller[0]!r}?"
                )
    if not layout.whole_model and any(n not in values for n in layout.cell_names):
        hints.extend(_others_in_scope(layout, targets, available, source))
    return hints


def _scope_hint(
    missing: list[str], scope: str | None, available: set[str], source: str, path: str | None
) -> str | None:
    """Suggest the scope(s) under which most of the missing names do exist, if any."""
    prefix = _prefix(scope)
    counts: dict[str | None, int] = {}
    example: dict[str | None, str] = {}
    for name in missing:
        relative = name[len(prefix) :]
        for key in available:
            if key == relative or key.endswith("/" + relative):
                found = key[: -len(relative) - 1] or None
                counts[found] = counts.get(found, 0) + 1
                example.setdefault(found, key)
    if not counts:
        return None
    best = max(counts.values())
    scopes = sorted((s for s in counts if counts[s] == best), key=lambda s: s or "")
    where = f" for {path!r}" if path is not None else ""
    guesses = " or ".join(f"scope={s!r}" for s in scopes)
    return f"hint: the {source} {_verb(source, 'hold')} {example[scopes[0]]!r}; did you mean {guesses}{where}?"


def _others_in_scope(layout: _Layout, targets: Mapping[str, _Target], available: set[str], source: str) -> list[str]:
    """For a cell with missing weights: the names beside it under its scope (not counted as
    unexpected), which often show the cell type the checkpoint holds."""
    regions = layout.regions()
    beside = sorted(
        name for name in available
        if name not in targets
        and any(name.startswith(p) for p in layout.scope_prefixes())
        and not any(name.startswith(r) for r in regions)
    )
    if not beside:
        return []
    shown = ", ".join(beside[:5]) + (f" and {len(beside) - 5} more" if len(beside) > 5 else "")
    also = f"{_verb(source, 'hold')} these beside the cell (not counted: outside its subtree)"
    return [f"note: under the scope the {source} also {also}: {shown}"]
