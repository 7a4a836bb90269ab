"""``python -m rnnkit train``: train the character-level language model.

A run directory holds ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line
per evaluation), ``loss.png``, and the checkpoints ``last.pt`` and ``best.pt`` (model,
optimizer, RNG state, step, the carried LSTM state, vocabulary and configuration), all written
atomically. ``--resume DIR`` continues a run exactly where its last checkpoint left it.

At each evaluation the checkpoints are written first, then the metrics line, so a run killed
at any moment leaves at most a checkpoint whose line is missing (the checkpoint carries it).
``--resume`` puts the directory back in order: it drops metrics lines past the checkpoint's
step and torn lines, adds the checkpoint's own line if missing, and removes the temporary
files a killed write left. A new run refuses a directory that is not empty. Ctrl-C finishes
the step in progress, writes ``last.pt`` and exits with status 130 (``interrupt.py``).

Errors (bad settings, unreadable files, a full disk, a lost torchrun peer) are one line on
stderr and exit status 2.

The settings and their checks are in ``config.py``, a run and its loop in ``run.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
from pathlib import Path
from typing import Any

from . import checkpoint, progress
from .cli import INTERRUPTED, USAGE_ERROR, CommandParser
from .config import (
    FINAL_LR_FRACTION,
    MODEL,
    RUN,
    TRAINING,
    ConfigError,
    TrainConfig,
    check_weights_fit,
    config_from_saved,
    flag,
    learning_rate,
    model_for,
    resumed_config,
)
from .data import DataError
from .distributed import describe_failure, join, leave
from .interrupt import Interrupted
from .run import Run, run_to_end

# what the command's tests and tools import from here (config.py and run.py hold them)
__all__ = ["FINAL_LR_FRACTION", "ConfigError", "Run", "TrainConfig", "build_parser", "config_from_saved",
           "learning_rate", "main", "model_for", "train"]

PROG = "python -m rnnkit train"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command's parser: one ``--flag`` per :class:`TrainConfig` field (default ``None``:
    not given), plus ``--resume``, in three groups."""
    description = DESCRIPTION.format(seconds=progress.PROGRESS_SECONDS)
    parser = CommandParser(prog=prog, description=description, epilog=EXAMPLES.format(prog=prog))
    groups = {name: parser.add_argument_group(name) for name in (MODEL, TRAINING, RUN)}
    for spec in dataclasses.fields(TrainConfig):
        options = dict(spec.metadata)
        kind = {"int": int, "float": float}.get(str(spec.type).split(" ")[0], str)
        shown = "" if spec.default is None else f" (default: {spec.default:g})" if kind is float else \
            f" (default: {spec.default})"
        groups[options.pop("group")].add_argument(
            flag(spec.name), type=kind, default=None, help=options.pop("help") + shown, **options)
    groups[RUN].add_argument("--resume", metavar="DIR", default=None,
                             help="continue the run in DIR from its last checkpoint (only --steps, --epochs, "
                                  "--eval-every, --device and --timeout may change)")
    return parser


DESCRIPTION = """\
Train a character-level language model (an embedding, stacked rnnkit cells, a softmax) by
truncated backpropagation through time, carrying the state from batch to batch.

A run directory holds config.json, metrics.jsonl (one line per evaluation), loss.png and the
checkpoints last.pt and best.pt, all written atomically. Ctrl-C finishes the step in progress,
saves last.pt and says how to continue; --resume DIR continues a run exactly where its last
checkpoint left it. Under torchrun the processes share the batch and only rank 0 writes.
Without a terminal, a progress line (step, smoothed loss, chars/s, ETA) comes every {seconds:g} s."""

EXAMPLES = """\
examples:
  {prog}                                        # the default run
  {prog} --data notes/ --cell gru --units 512 --steps 5000
  {prog} --resume runs/20250101-120000 --steps 1200
  torchrun --nproc_per_node=2 -m rnnkit train --batch-size 64"""


def train(config: TrainConfig, resume: Path | None = None, saved: dict[str, Any] | None = None) -> Path:
    """Train a run, or continue the one in ``resume`` (its checkpoint ``saved``); returns its
    directory. Ctrl-C raises :class:`Interrupted` after saving. Under torchrun, every process
    calls this."""
    world = join(config.device, config.timeout)
    try:
        return run_to_end(Run(config, resume, saved, world))
    except Interrupted as stop:
        # the frames of the traceback hold the model, whose DDP reducer holds the process group:
        # freed after leave(), the reducer would end the group under the GIL while gloo's thread
        # waits for the GIL (a hang); dropped here, they go first
        raise stop.with_traceback(None) from None
    finally:
        gc.collect()
        leave(world)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The command: 0 when the run is done, 2 on an error (one line on stderr), 130 after Ctrl-C."""
    args = build_parser(prog).parse_args(argv)
    fields = (f.name for f in dataclasses.fields(TrainConfig))
    given = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    try:
        if args.resume:
            resume = Path(args.resume)
            if resume.is_file():
                raise ConfigError(f"--resume {resume}: give the run's directory ({resume.parent}), not a file")
            saved = checkpoint.load(resume)
            check_weights_fit(saved, args.resume)
            train(resumed_config(saved, given), resume, saved)
        else:
            train(TrainConfig(**given))
    except (ConfigError, DataError, checkpoint.CheckpointError, OSError) as error:
        return _error(str(error))
    except Interrupted as stop:
        if stop.main:
            print(stop.describe(prog), file=sys.stderr, flush=True)
        return INTERRUPTED
    except KeyboardInterrupt:  # before the first step: loading, building, joining the group
        print("interrupted before training began", file=sys.stderr, flush=True)
        return INTERRUPTED
    except RuntimeError as error:  # a lost or stuck torchrun peer; anything else is a bug
        message = describe_failure(error)
        if message is None:
            raise
        _error(message)
        sys.stderr.flush()
        # the process group's objects still wait on the lost peer: freeing them (as a normal
        # exit does) can block forever, so the process ends here
        os._exit(USAGE_ERROR)
    return 0
