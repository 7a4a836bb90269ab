"""``python -m rnnkit convert``: TF checkpoints to PyTorch files, and rnnkit <-> torch.nn.

    python -m rnnkit convert model.ckpt-1000 --list            # names and shapes
    python -m rnnkit convert model.ckpt-1000 weights.pt        # {TF name: tensor}, torch.save
    python -m rnnkit convert model.ckpt-1000 weights.safetensors --scope encoder/rnn
    python -m rnnkit convert lstm.pt cell.pt                   # a saved nn.LSTM/GRU -> rnnkit cell
    python -m rnnkit convert cell.pt lstm.pt                   # a saved rnnkit cell -> nn.LSTM/GRU

Optimizer slots are left out unless ``--keep-optimizer``; string tensors are skipped. Load TF
variables into a cell with ``rk.load_tf_variables(cell, torch.load("weights.pt"), scope=...)``.
Modules are whole-module ``torch.save`` files (read with ``weights_only=False``: convert only
files you trust).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .._files import atomic_write
from ..cells import GRUCell
from ._wire import FormatError
from .tf_checkpoint import open_checkpoint
from .tf_load import _is_optimizer_state


def convert(source: str, destination: Path, scope: str | None, keep_optimizer: bool) -> int:
    """Write the variables; returns how many."""
    checkpoint = open_checkpoint(source)
    prefix = f"{scope}/" if scope else ""
    names = [
        n for n in checkpoint.names()
        if n.startswith(prefix) and not checkpoint.is_string(n) and (keep_optimizer or not _is_optimizer_state(n))
    ]
    tensors = {name: torch.from_numpy(checkpoint.read(name).copy()) for name in names}
    if destination.suffix == ".safetensors":
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise FormatError("writing .safetensors needs the safetensors package: pip install safetensors") from None
        atomic_write(destination, lambda file: save_file(tensors, file))
    else:
        atomic_write(destination, lambda file: torch.save(tensors, file))
    return len(tensors)


def convert_module(source: Path, destination: Path) -> str:
    """A saved ``nn.LSTM``/``nn.GRU`` to the rnnkit cell computing the same, or back."""
    from .torch_nn import from_torch_gru, from_torch_lstm, to_torch_gru, to_torch_lstm

    try:
        module = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as error:
        raise FormatError(f"{source}: not a torch.save file ({type(error).__name__}: {error})") from None
    if isinstance(module, torch.nn.LSTM):
        converted, what = from_torch_lstm(module), "rnnkit LSTM cell"
    elif isinstance(module, torch.nn.GRU):
        converted, what = from_torch_gru(module), "rnnkit GRUCell(reset_after=True)"
    else:
        layers = getattr(module, "layers", [module])
        if all(isinstance(layer, GRUCell) for layer in layers):
            converted, what = to_torch_gru(module), "torch.nn.GRU"
        else:
            converted, what = to_torch_lstm(module), "torch.nn.LSTM"
    atomic_write(destination, lambda file: torch.save(converted, file))
    return what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a TF checkpoint: prefix, .index file, or directory")
    parser.add_argument("destination", nargs="?", help="a .pt or .safetensors file")
    parser.add_argument("--list", action="store_true", help="list the checkpoint's variables and stop")
    parser.add_argument("--scope", default=None, help="only the variables under this scope")
    parser.add_argument("--keep-optimizer", action="store_true", help="keep optimizer slots and step counters")
    args = parser.parse_args(argv)
    try:
        if args.list:
            checkpoint = open_checkpoint(args.source)
            for name in checkpoint.names():
                print(f"{name}\t{list(checkpoint.shape(name))}")
            return 0
        if args.destination is None:
            raise FormatError("give a destination file (.pt or .safetensors), or --list")
        if Path(args.source).suffix == ".pt":
            what = convert_module(Path(args.source), Path(args.destination))
            print(f"wrote a {what} to {args.destination}")
            return 0
        count = convert(args.source, Path(args.destination), args.scope, args.keep_optimizer)
        print(f"wrote {count} tensors to {args.destination}")
    except (FormatError, KeyError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}")
        return 2
    return 0
