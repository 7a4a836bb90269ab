"""``python -m rnnkit convert``: TF checkpoints to PyTorch files, and rnnkit <-> torch.nn.

    python -m rnnkit convert model.ckpt-1000 --list            # names and shapes
    python -m rnnkit convert model.ckpt-1000 weights.pt        # {TF name: tensor}, torch.save
    python -m rnnkit convert model.ckpt-1000 weights.safetensors --scope encoder/rnn
    python -m rnnkit convert lstm.pt cell.pt                   # an nn.LSTM/GRU -> rnnkit cell
    python -m rnnkit convert cell.pt lstm.pt                   # an rnnkit cell -> nn.LSTM/GRU

Optimizer slots are left out unless ``--keep-optimizer``; string tensors are skipped. Load TF
variables into a cell with ``rk.load_tf_variables(cell, torch.load("weights.pt"), scope=...)``.

Modules (a source ending in .pt, .pth or .safetensors) are read without running code from the
file (``torch.load(weights_only=True)``, or safetensors). A source is one of:

* a state dict of an ``nn.LSTM`` or ``nn.GRU``: ``torch.save(lstm.state_dict(), "lstm.pt")`` or
  ``safetensors.torch.save_file(lstm.state_dict(), "lstm.safetensors")``. The type and sizes
  come from the shapes (``weight_hh_l0`` is ``[4H, H]`` for an LSTM, ``[3H, H]`` for a GRU;
  ``weight_hr_l0`` for ``proj_size``); ``--type lstm|gru`` makes a different type an error;
* a module file, what this command writes (:func:`save_module`): in a .pt file the dict
  ``{"format": "rnnkit-module-1", "type": "torch.nn.LSTM" | "torch.nn.GRU" | "rnnkit.LSTMCell" |
  "rnnkit.BasicLSTMCell" | "rnnkit.GRUCell" | "rnnkit.MultiRNNCell", "config": {constructor
  arguments}, "state_dict": {name: tensor}}``; in a .safetensors file the state dict, with
  ``format``, ``type`` and ``config`` (JSON) in its metadata. Read one back with
  :func:`load_module`;
* DANGEROUS, only with ``--unsafe-pickle``: a whole-module ``torch.save(module)`` file. Reading
  it unpickles it, which runs whatever code the file holds: use it only for files you made
  yourself or fully trust, and convert them once into the safe forms above.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._files import UnsafePickleError, atomic_write_stream, describe, load_weights_only
from ..activations import _BY_NAME
from ..cells import BasicLSTMCell, GRUCell, LSTMCell
from ..wrappers import MultiRNNCell
from ._wire import FormatError
from .tf_checkpoint import open_checkpoint
from .tf_load import _is_optimizer_state

MODULE_FORMAT = "rnnkit-module-1"
CHARLM_FORMAT = "rnnkit-charlm-1"  # rnnkit.charlm.checkpoint.FORMAT, not imported: the library knows nothing of it
MODULE_SUFFIXES = (".pt", ".pth", ".safetensors")
_TORCH_TYPES = {"torch.nn.LSTM": "lstm", "torch.nn.GRU": "gru"}
_CELL_TYPES: dict[str, type] = {"rnnkit.LSTMCell": LSTMCell, "rnnkit.BasicLSTMCell": BasicLSTMCell,
                                "rnnkit.GRUCell": GRUCell}


def convert(source: str, destination: Path, scope: str | None, keep_optimizer: bool) -> int:
    """Write the variables; returns how many."""
    checkpoint = open_checkpoint(source)
    prefix = f"{scope}/" if scope else ""
    names = [
        n for n in checkpoint.names()
        if n.startswith(prefix) and not checkpoint.is_string(n) and (keep_optimizer or not _is_optimizer_state(n))
    ]
    tensors = {name: torch.from_numpy(checkpoint.read(name)) for name in names}  # arrays that own their memory
    _write_tensors(destination, tensors, metadata=None)
    return len(tensors)


def _write_tensors(destination: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None) -> None:
    """``tensors`` as a .safetensors file (with ``metadata``), or else a ``torch.save`` file."""
    if destination.suffix == ".safetensors":
        try:
            from safetensors.torch import save
        except ImportError:
            raise FormatError("writing .safetensors needs the safetensors package: pip install safetensors") from None
        data = save(tensors, metadata=metadata)
        atomic_write_stream(destination, lambda file: file.write(data))
    else:
        atomic_write_stream(destination, lambda file: torch.save(tensors, file))


# ---------------------------------------------------------------------------------------------
# module files: writing


def save_module(module: nn.Module, path: Path) -> None:
    """Write an ``nn.LSTM``/``nn.GRU`` or an rnnkit LSTM/GRU cell (or MultiRNNCell of them) as a
    module file that :func:`load_module` reads back without unpickling objects."""
    kind, config = module_config(module)
    state = {name: value.detach().cpu().contiguous() for name, value in module.state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        _write_tensors(path, state, {"format": MODULE_FORMAT, "type": kind, "config": json.dumps(config)})
    else:
        file = {"format": MODULE_FORMAT, "type": kind, "config": config, "state_dict": state}
        atomic_write_stream(path, lambda out: torch.save(file, out))


def module_config(module: nn.Module) -> tuple[str, dict[str, Any]]:
    """``(type, constructor arguments)`` of a module that module files hold."""
    if type(module) in (nn.LSTM, nn.GRU):
        names = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"]
        names += ["proj_size"] if isinstance(module, nn.LSTM) else []
        return f"torch.nn.{type(module).__name__}", {name: getattr(module, name) for name in names}
    if type(module) is MultiRNNCell:
        cells = [dict(zip(("type", "config"), module_config(cell))) for cell in module.layers]
        return "rnnkit.MultiRNNCell", {"cells": cells, "state_is_tuple": module.state_is_tuple}
    kind = next((name for name, cls in _CELL_TYPES.items() if type(module) is cls), None)
    if kind is None:
        raise ValueError(f"{type(module).__name__}: module files hold nn.LSTM, nn.GRU and rnnkit LSTM/GRU cells")
    config = {"num_units": module.num_units, "activation": _activation_name(module, module.activation),
              "gate_activation": _activation_name(module, module.gate_activation), "use_bias": module.use_bias,
              "name": module.name, "input_size": module.input_size, "dtype": _dtype_name(module)}
    if kind == "rnnkit.GRUCell":
        return kind, {**config, "reset_after": module.reset_after}
    config.update(forget_bias=module.forget_bias, state_is_tuple=module.state_is_tuple)
    if kind == "rnnkit.LSTMCell":
        config.update(use_peepholes=module.use_peepholes, cell_clip=module.cell_clip, num_proj=module.num_proj,
                      proj_clip=module.proj_clip)
    return kind, config


def _activation_name(cell: Any, activation: Any) -> str:
    name = next((name for name, function in _BY_NAME.items() if function is activation), None)
    if name is None:
        raise ValueError(f"{cell.name}: a custom activation function cannot be written to a module file")
    return name


def _dtype_name(cell: nn.Module) -> str | None:
    parameter = next(iter(cell.parameters()), None)
    dtype = parameter.dtype if parameter is not None and cell.built else cell._dtype
    return None if dtype is None else str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------
# module files: reading


def load_module(path: Path, allow_pickle: bool = False, expected: str | None = None) -> nn.Module:
    """The module in ``path``: a module file, a state dict of an ``nn.LSTM``/``nn.GRU``
    (``expected``: ``"lstm"`` or ``"gru"``, else inferred), or, only with ``allow_pickle``
    (DANGEROUS: it runs any code the file holds), a whole-module ``torch.save`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, metadata = _read_safetensors(path)
        if metadata.get("format") == MODULE_FORMAT:
            try:
                config = json.loads(metadata.get("config", ""))
            except (ValueError, RecursionError):
                raise FormatError(f"{path}: the module file's config is not JSON") from None
            return _build(path, metadata.get("type"), config, state)
        return torch_rnn_from_state_dict(path, state, expected)
    contents = _read_torch_file(path, allow_pickle)
    if isinstance(contents, nn.Module):
        return contents
    if isinstance(contents, dict) and contents.get("format") == MODULE_FORMAT:
        if not isinstance(contents.get("config"), dict) or not isinstance(contents.get("state_dict"), dict):
            raise FormatError(f"{path}: a malformed module file (config and state_dict must be dicts)")
        return _build(path, contents.get("type"), contents["config"], contents["state_dict"])
    if isinstance(contents, dict) and contents and all(isinstance(v, Tensor) for v in contents.values()):
        return torch_rnn_from_state_dict(path, contents, expected)
    if isinstance(contents, dict) and contents.get("format") == CHARLM_FORMAT:
        raise FormatError(charlm_message(path))
    raise FormatError(f"{path}: neither a module file ({MODULE_FORMAT}) nor a state dict of an nn.LSTM/nn.GRU")


def _read_torch_file(path: Path, allow_pickle: bool) -> Any:
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        return load_weights_only(path)
    except UnsafePickleError as error:
        if not allow_pickle:
            raise FormatError(f"{error} (a whole-module file? convert it with --unsafe-pickle only if you "
                              "trust it: that runs code from the file)") from None
    except Exception as error:
        raise FormatError(f"{path}: not a torch.save file ({describe(error)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # the caller opted in: see the docstring
    except Exception as error:
        raise FormatError(f"{path}: not a torch.save file ({describe(error)})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise FormatError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: file.get_tensor(name) for name in file.keys()}, dict(file.metadata() or {})
    except Exception as error:  # safetensors' errors: missing, truncated, not safetensors
        raise FormatError(f"{path}: not a readable .safetensors file ({describe(error)})") from None


def torch_rnn_from_state_dict(path: Path, state: dict[str, Tensor], expected: str | None = None) -> nn.RNNBase:
    """The ``nn.LSTM``/``nn.GRU`` whose ``state_dict()`` is ``state``, its type and sizes read
    from the shapes; ``expected`` (``"lstm"``/``"gru"``) makes another type an error."""
    w_ih, w_hh = state.get("weight_ih_l0"), state.get("weight_hh_l0")
    if not isinstance(w_ih, Tensor) or not isinstance(w_hh, Tensor) or w_ih.dim() != 2 or w_hh.dim() != 2:
        raise FormatError(f"{path}: not a state dict of an nn.LSTM or nn.GRU (no 2-D weight_ih_l0, weight_hh_l0)")
    w_hr = state.get("weight_hr_l0")
    if isinstance(w_hr, Tensor) and w_hr.dim() == 2:  # only an LSTM projects: weight_hr [P, H]
        proj_size, hidden = w_hr.shape
    else:
        proj_size, hidden = 0, w_hh.shape[1]
    gates = w_hh.shape[0] // hidden if hidden else 0
    kind = {4: "lstm", 3: "gru"}.get(gates) if gates * hidden == w_hh.shape[0] else None
    if kind is None or (kind == "gru" and proj_size):
        raise FormatError(f"{path}: weight_hh_l0 {list(w_hh.shape)} is neither an LSTM's [4H, H] nor a GRU's [3H, H]")
    if expected is not None and expected != kind:
        names = {"lstm": "an LSTM", "gru": "a GRU"}
        raise FormatError(f"{path}: not {names[expected]}: its weight_hh_l0 {list(w_hh.shape)} is {names[kind]}'s")
    layers = 0
    while f"weight_ih_l{layers}" in state:
        layers += 1
    options = {"bias": "bias_ih_l0" in state, "bidirectional": "weight_ih_l0_reverse" in state,
               "batch_first": True, "dtype": w_ih.dtype}
    with torch.device("meta"):  # no memory until the weights are assigned (_load_state)
        if kind == "lstm":
            module: nn.RNNBase = nn.LSTM(w_ih.shape[1], hidden, layers, proj_size=proj_size, **options)
        else:
            module = nn.GRU(w_ih.shape[1], hidden, layers, **options)
    _load_state(path, module, state)
    return module


def _build(path: Path, kind: Any, config: dict[str, Any], state: dict[str, Tensor]) -> nn.Module:
    """The module a module file describes, its weights loaded."""
    if kind in _TORCH_TYPES:  # the sizes come from the weights themselves
        rnn = torch_rnn_from_state_dict(path, state, _TORCH_TYPES[kind])
        rnn.batch_first = bool(config.get("batch_first", True))
        return rnn
    try:
        with torch.device("meta"):  # a config's sizes allocate nothing: the file's weights are assigned
            module = _cell(kind, config)
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as error:
        raise FormatError(f"{path}: a module file whose {kind} config does not build ({error})") from None
    _load_state(path, module, state)
    return module


def _cell(kind: Any, config: dict[str, Any]) -> nn.Module:
    if kind == "rnnkit.MultiRNNCell":
        cells = [_cell(entry["type"], entry["config"]) for entry in config["cells"]]
        return MultiRNNCell(cells, state_is_tuple=config.get("state_is_tuple", True))
    if kind not in _CELL_TYPES:
        raise ValueError(f"unknown module type {kind!r}")
    arguments = dict(config)
    if arguments.get("dtype") is not None:
        dtype = getattr(torch, str(arguments["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {arguments['dtype']!r}")
        arguments["dtype"] = dtype
    return _CELL_TYPES[kind](**arguments)


def _load_state(path: Path, module: nn.Module, state: dict[str, Tensor]) -> None:
    """``state`` into a module built on the meta device: its tensors become the parameters,
    after the names and shapes are checked (strict)."""
    try:
        module.load_state_dict(state, assign=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:] if line.strip()) or str(error)
        raise FormatError(f"{path}: the weights do not fit a {type(module).__name__} ({details[:300]})") from None


# ---------------------------------------------------------------------------------------------
# the command


def convert_module(source: Path, destination: Path, allow_pickle: bool = False, expected: str | None = None) -> str:
    """An ``nn.LSTM``/``nn.GRU`` to the rnnkit cell computing the same, or back; written as a
    module file. Returns what was written."""
    from .torch_nn import from_torch_gru, from_torch_lstm, to_torch_gru, to_torch_lstm

    module = load_module(source, allow_pickle, expected)
    if isinstance(module, nn.LSTM):
        converted, what = from_torch_lstm(module), "rnnkit LSTM cell"
    elif isinstance(module, nn.GRU):
        converted, what = from_torch_gru(module), "rnnkit GRUCell(reset_after=True)"
    else:
        layers = getattr(module, "layers", [module])
        if all(isinstance(layer, GRUCell) for layer in layers):
            converted, what = to_torch_gru(module), "torch.nn.GRU"
        else:
            converted, what = to_torch_lstm(module), "torch.nn.LSTM"
    save_module(converted, destination)
    return what


DESCRIPTION = """\
Convert recurrent weights between TensorFlow, PyTorch and rnnkit, reading no code from the files:

  {prog} model.ckpt-1000 --list            # a TF checkpoint's variables: names and shapes
  {prog} model.ckpt-1000 weights.pt        # its variables {{TF name: tensor}} (or .safetensors)
  {prog} model.ckpt-1000 w.safetensors --scope encoder/rnn
  {prog} lstm.pt cell.pt                   # an nn.LSTM/nn.GRU state dict -> an rnnkit cell
  {prog} cell.pt lstm.pt                   # an rnnkit cell (module file) -> nn.LSTM/nn.GRU

A TF checkpoint is a prefix, one of its files, or its directory (V2 or V1). Optimizer slots are
left out unless --keep-optimizer; string tensors are skipped. Load the variables into a cell with
rk.load_tf_variables(cell, torch.load("weights.pt"), scope=...).

A source ending in .pt, .pth or .safetensors is a module: the state_dict() of an nn.LSTM or
nn.GRU (type and sizes from the shapes; --type makes another type an error), or a module file
as this command writes them (rnnkit.interop.convert.save_module / load_module). A whole-module
torch.save(module) file is read only with --unsafe-pickle, which runs the code it holds.
Checkpoints of python -m rnnkit train are not modules: sample from them or load them in Python."""


def charlm_message(path: Path | str) -> str:
    """What to do with a checkpoint (or run directory) of ``python -m rnnkit train``."""
    return (f"{path}: a checkpoint of python -m rnnkit train (a character-level language model), not a TF "
            f"checkpoint or an LSTM/GRU module: write text with python -m rnnkit sample {path}, or load it with "
            "rnnkit.charlm.train.model_for(rnnkit.charlm.checkpoint.load(path))")


def _is_run_directory(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and (path / "last.pt").is_file() and (path / "config.json").is_file()


def main(argv: list[str] | None = None, prog: str = "python -m rnnkit convert") -> int:
    from ..charlm.cli import USAGE_ERROR, CommandParser, plural

    parser = CommandParser(prog=prog, description=DESCRIPTION.format(prog=prog))
    parser.add_argument("source", help="a TF checkpoint (prefix, .index file, directory), or a module .pt/.safetensors")
    parser.add_argument("destination", nargs="?", help="a .pt or .safetensors file")
    parser.add_argument("--list", action="store_true", help="list the checkpoint's variables and stop")
    parser.add_argument("--scope", default=None, help="only the variables under this scope")
    parser.add_argument("--keep-optimizer", action="store_true", help="keep optimizer slots and step counters")
    parser.add_argument("--type", choices=("lstm", "gru"), default=None,
                        help="a state dict source must be this (default: inferred from the shapes)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="DANGEROUS: also read whole-module torch.save files, which runs any code they hold; "
                             "only for files you trust")
    args = parser.parse_args(argv)
    try:
        if _is_run_directory(args.source):
            raise FormatError(charlm_message(args.source))
        if args.list:
            checkpoint = open_checkpoint(args.source)
            for name in checkpoint.names():
                print(f"{name}\t{list(checkpoint.shape(name))}")
            return 0
        if args.destination is None:
            raise FormatError("give a destination file (.pt or .safetensors), or --list")
        if Path(args.source).suffix in MODULE_SUFFIXES:
            what = convert_module(Path(args.source), Path(args.destination), args.unsafe_pickle, args.type)
            print(f"wrote a {what} to {args.destination}")
            return 0
        count = convert(args.source, Path(args.destination), args.scope, args.keep_optimizer)
        print(f"wrote {plural(count, 'tensor')} to {args.destination}")
    except (FormatError, KeyError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    return 0
