"""``python -m rnnkit`` (or ``rnnkit``): the ``train``, ``sample`` and ``convert`` commands.

This parser only picks the command; each command's module parses the rest with its own
parser (``main(argv, prog)``), imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {  # name: (module, what it does)
    "train": ("rnnkit.charlm.train", "train the character-level language model, or --resume a run"),
    "sample": ("rnnkit.charlm.sample", "write text with a trained model"),
    "convert": ("rnnkit.interop.convert", "TF checkpoints to .pt/.safetensors; torch.nn.LSTM/GRU <-> rnnkit cells"),
}

DESCRIPTION = """\
rnnkit: TensorFlow 1.x's LSTM/GRU cells and runners on PyTorch, and a character-level language
model trained with them."""

EPILOG = """\
'{prog} COMMAND --help' describes a command's options. Examples:
  {prog} train                                # the default run: CPython's help texts
  {prog} sample runs/<date>-<time> --prime "The "
  {prog} convert model.ckpt-1000 weights.pt   # a TF checkpoint's variables by name"""


def program_name() -> str:
    """``rnnkit`` when run as the console script, else ``python -m rnnkit``."""
    return "rnnkit" if os.path.basename(sys.argv[0] if sys.argv else "") == "rnnkit" else "python -m rnnkit"


def build_parser(prog: str) -> argparse.ArgumentParser:
    import platform

    import torch

    from rnnkit import __version__
    from rnnkit.charlm.cli import CommandParser

    parser = CommandParser(prog=prog, description=DESCRIPTION, epilog=EPILOG.format(prog=prog))
    version = f"rnnkit {__version__} (torch {torch.__version__}, Python {platform.python_version()})"
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, (_, what) in COMMANDS.items():
        commands.add_parser(name, help=what, add_help=False)  # the command's own parser takes its options
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv[0]`` on ``argv[1:]``; returns the exit status (usage errors and
    ``--help`` exit through ``SystemExit``, as argparse does)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = program_name()
    parser = build_parser(prog)
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    command = parser.parse_args(argv[:1]).command
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(argv[1:], prog=f"{prog} {command}")


if __name__ == "__main__":
    sys.exit(main())
