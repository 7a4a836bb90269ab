"""``python -m rnnkit train``: train the character-level language model.

A run directory holds ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line
per evaluation), ``loss.png``, and the checkpoints ``last.pt`` and ``best.pt`` (model,
optimizer, RNG state, step, the carried LSTM state, vocabulary and configuration), all written
atomically. ``--resume DIR`` continues a run exactly where its last checkpoint left it.

At each evaluation the checkpoints are written first, then the metrics line, so a run killed
at any moment leaves at most a checkpoint whose line is missing (the checkpoint carries it).
``--resume`` puts the directory back in order: it drops metrics lines past the checkpoint's
step and torn lines, adds the checkpoint's own line if missing, and removes the temporary
files a killed write left. A new run refuses a directory that is not empty.

Errors (bad settings, unreadable files, a full disk, a lost torchrun peer) are one line on
stdout and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

import rnnkit as rk

from .._checks import check_state
from .._files import atomic_write_stream, remove_stale_temporaries
from . import checkpoint
from .data import Corpus, DataError, load_text, streams, window, windows_per_epoch
from .distributed import World, describe_failure, gather_rows, join, leave
from .metrics import append_line, repair_metrics
from .model import CELLS, CharLM
from .plot import plot_losses

OPTIMIZERS = ("adam", "rmsprop", "sgd")
RUN_FILES = ("config.json", "metrics.jsonl", "loss.png", "last.pt", "best.pt")  # what a run directory holds


@dataclass
class TrainConfig:
    data: str | None = field(default=None, metadata={"help": "UTF-8 file or directory (default: CPython's help texts)"})
    cell: str = field(default="lstm", metadata={"help": f"one of {', '.join(CELLS)}"})
    layers: int = field(default=2, metadata={"help": "stacked recurrent layers"})
    units: int = field(default=256, metadata={"help": "units per layer (and embedding size)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout between layers, in [0, 1)"})
    seq_len: int = field(default=100, metadata={"help": "characters per truncated-BPTT window"})
    batch_size: int = field(default=32, metadata={"help": "parallel streams of text"})
    steps: int = field(default=600, metadata={"help": "optimizer steps"})
    epochs: float | None = field(default=None, metadata={"help": "train this many epochs instead of --steps"})
    optimizer: str = field(default="adam", metadata={"help": f"one of {', '.join(OPTIMIZERS)}"})
    lr: float = field(default=3e-3, metadata={"help": "learning rate"})
    clip: float = field(default=5.0, metadata={"help": "gradient norm clipping"})
    eval_every: int = field(default=100, metadata={"help": "steps between evaluations and checkpoints"})
    seed: int = field(default=1234, metadata={"help": "random seed"})
    run_dir: str | None = field(default=None, metadata={"help": "run directory (default: a new one under runs/)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    timeout: float = field(
        default=1800.0, metadata={"help": "seconds a process waits for the others under torchrun before failing"}
    )


class ConfigError(ValueError):
    """A hyper-parameter that makes no sense, with a one-line reason."""


def check_config(config: TrainConfig) -> None:
    positive = ("layers", "units", "seq_len", "batch_size", "steps", "eval_every")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if not 0 <= config.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {config.dropout}")
    if not config.lr > 0 or not math.isfinite(config.lr):
        raise ConfigError(f"--lr must be > 0, got {config.lr}")
    if not config.clip > 0:
        raise ConfigError(f"--clip must be > 0, got {config.clip}")
    if config.epochs is not None and not config.epochs > 0:
        raise ConfigError(f"--epochs must be > 0, got {config.epochs}")
    if config.cell not in CELLS:
        raise ConfigError(f"--cell must be one of {', '.join(CELLS)}, got {config.cell!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if not config.timeout > 0 or not math.isfinite(config.timeout):
        raise ConfigError(f"--timeout must be a number of seconds > 0, got {config.timeout}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {config.device}: no CUDA device is available")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`TrainConfig` field, plus ``--resume``."""
    for spec in dataclasses.fields(TrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        kind = {"int": int, "float": float}.get(str(spec.type).split(" ")[0], str)
        parser.add_argument(flag, type=kind, default=None, help=f"{spec.metadata['help']} (default: {spec.default})")
    parser.add_argument("--resume", metavar="DIR", default=None, help="continue the run in DIR from its checkpoint")


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr)
    return torch.optim.RMSprop(model.parameters(), lr=config.lr)


def _new_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


@torch.no_grad()
def evaluate(model: CharLM, ids: torch.Tensor, config: TrainConfig, device: torch.device) -> float:
    """Mean cross-entropy (nats/char) over the validation text, from a zero state."""
    batch = max(1, min(config.batch_size, len(ids) // (config.seq_len + 1)))
    data = streams(ids, batch, config.seq_len, "validation").to(device)
    model.eval()
    state, total, count = None, 0.0, 0
    for position in range(windows_per_epoch(data.shape[1], config.seq_len)):
        inputs, targets = window(data, position, config.seq_len)
        logits, state = model(inputs, state)
        total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    model.train()
    return total / count


RESUMABLE = {"steps", "epochs", "eval_every", "device", "timeout"}  # what --resume may change


def resumed_config(saved: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The saved run's configuration with the few settings a resumed run may change."""
    fixed = sorted(set(given) - RESUMABLE)
    if fixed:
        flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise ConfigError(f"--resume continues a run as it was configured; {flags} cannot change")
    return dataclasses.replace(config_from_saved(saved["config"]), **given)


def config_from_saved(saved: dict[str, Any], where: str = "checkpoint") -> TrainConfig:
    """A checkpoint's configuration, its values of the types the settings take and checked as a
    command line's would be (a ``CheckpointError`` naming ``where`` says what does not fit)."""
    try:
        config = TrainConfig(**saved)
    except TypeError as error:  # a setting this version does not know
        raise checkpoint.CheckpointError(f"{where}: its configuration does not fit this version ({error})") from None
    for spec in dataclasses.fields(TrainConfig):
        value, default = getattr(config, spec.name), spec.default
        kinds: tuple[type, ...] = (float, int) if isinstance(default, float) or spec.name == "epochs" else (
            (int,) if isinstance(default, int) else (str,))
        if value is None and default is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise checkpoint.CheckpointError(
                f"{where}: its configuration has {spec.name} = {value!r} ({type(value).__name__})")
    try:
        check_config(dataclasses.replace(config, device="cpu"))  # the device is checked where it is used
    except ConfigError as error:
        raise checkpoint.CheckpointError(f"{where}: its configuration is invalid: {error}") from None
    return config


def check_weights_fit(saved: dict[str, Any], where: str = "checkpoint") -> Callable[[], CharLM]:
    """Check that the checkpoint's weights are those of the model its configuration describes
    (built on the meta device: a configuration claiming more than the file holds allocates
    nothing); returns the maker of that model."""
    config = config_from_saved(saved["config"], where)
    make = partial(CharLM, len(saved["vocab"]), config.cell, config.layers, config.units, config.dropout)
    with torch.device("meta"):
        expected = {name: tuple(value.shape) for name, value in make().state_dict().items()}
    got = {name: tuple(value.shape) for name, value in saved["model"].items() if isinstance(value, torch.Tensor)}
    if got != expected:
        wrong = sorted(name for name in set(expected) | set(got) if expected.get(name) != got.get(name))
        raise checkpoint.CheckpointError(
            f"{where}: its weights do not fit its configuration ({', '.join(wrong[:4])}"
            f"{' ...' if len(wrong) > 4 else ''}: expected {[expected.get(n) for n in wrong[:4]]})")
    return make


def model_for(saved: dict[str, Any], where: str = "checkpoint") -> CharLM:
    """The checkpoint's model, its weights loaded (after :func:`check_weights_fit`)."""
    model = check_weights_fit(saved, where)()
    model.load_state_dict(saved["model"])
    return model


class Run:
    """One training run: its data, model, optimizer and where it writes."""

    def __init__(
        self, config: TrainConfig, resume: Path | None = None, saved: dict[str, Any] | None = None,
        world: World | None = None,
    ) -> None:
        world = world or World()
        check_config(config)
        if config.batch_size % world.size:
            raise ConfigError(f"--batch-size {config.batch_size} must be a multiple of the {world.size} processes")
        self.config, self.world = config, world
        self.run_dir = Path(resume if resume is not None else (config.run_dir or _new_run_dir()))
        if saved is None:
            check_new_run_dir(self.run_dir)  # every process, before the first collective
        self.device = torch.device(f"cuda:{world.local_rank}" if config.device == "cuda" else config.device)
        text, self.source = load_text(config.data)
        self.corpus = Corpus.from_text(text, vocab=saved["vocab"] if saved else None)
        all_streams = streams(self.corpus.train, config.batch_size, config.seq_len, "training")
        self.shard = config.batch_size // world.size  # this process's streams
        self.train_ids = all_streams[world.rank * self.shard : (world.rank + 1) * self.shard].to(self.device)
        streams(self.corpus.valid, 1, config.seq_len, "validation")  # fails early if too short
        self.windows = windows_per_epoch(self.train_ids.shape[1], config.seq_len)
        if config.epochs is not None:
            self.config = config = dataclasses.replace(config, steps=max(1, round(config.epochs * self.windows)))
        torch.manual_seed(config.seed)
        self.model = CharLM(len(self.corpus.vocab), config.cell, config.layers, config.units, config.dropout)
        self.model.to(self.device)
        self.net: nn.Module = self.model  # what trains: the model, or DDP around it
        if world.size > 1:
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = _optimizer(config, self.model)
        self.step, self.state, self.best_val = 0, None, math.inf
        if saved is not None:
            self._restore(saved)
        if world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir, RUN_FILES)
            if saved is not None:
                repair_metrics(self.run_dir / "metrics.jsonl", saved["step"], saved.get("record"))

    def _restore(self, saved: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            if saved["state"] is not None:
                cell = self.model.rnn.cell
                check_state(saved["state"], cell.state_size, self.config.batch_size, torch.float32, "state")
            torch.set_rng_state(saved["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            details = " ".join(str(error).split())[:300]
            message = f"{self.run_dir}: the checkpoint does not fit this model ({details})"
            raise checkpoint.CheckpointError(message) from None
        self.step, self.best_val = saved["step"], saved["best_val"]
        rows = slice(self.world.rank * self.shard, (self.world.rank + 1) * self.shard)
        if saved["state"] is not None:  # the whole batch's carried state: this process takes its rows
            self.state = rk.map_state(lambda t: t[rows].to(self.device), saved["state"])
        if saved.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)

    def checkpoint_dict(self) -> dict[str, Any]:
        """Everything to continue exactly (a collective under torchrun: every process calls it)."""
        state = None
        if self.state is not None:
            state = rk.map_state(lambda t: gather_rows(t, self.world).cpu(), self.state)
        return {
            "config": dataclasses.asdict(self.config),
            "vocab": self.corpus.vocab,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "position": self.step % self.windows,
            "state": state,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "best_val": self.best_val,
        }

    def train_step(self) -> float:
        position = self.step % self.windows
        if position == 0:
            self.state = None  # a new epoch starts every stream from a zero state
        inputs, targets = window(self.train_ids, position, self.config.seq_len)
        logits, state = self.net(inputs, rk.detach_state(self.state))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.state = rk.detach_state(state)
        self.step += 1
        return loss.item()

    def write_config(self) -> None:
        info = {"config": dataclasses.asdict(self.config), "corpus": self.source, "corpus_sha256": self.corpus.sha256,
                "vocab_size": len(self.corpus.vocab), "train_chars": len(self.corpus.train),
                "valid_chars": len(self.corpus.valid), "rnnkit": rk.__version__, "torch": torch.__version__}
        text = json.dumps(info, indent=2).encode()
        atomic_write_stream(self.run_dir / "config.json", lambda file: file.write(text))


def train(config: TrainConfig, resume: Path | None = None, saved: dict[str, Any] | None = None) -> Path:
    """Train a run, or continue the one in ``resume`` (its checkpoint ``saved``); returns its
    directory. Under torchrun, every process calls this."""
    world = join(config.device, config.timeout)
    try:
        return _train(Run(config, resume, saved, world))
    finally:
        leave(world)


def _train(run: Run) -> Path:
    config, main = run.config, run.world.is_main
    if main:
        run.write_config()
    metrics_path = run.run_dir / "metrics.jsonl"
    chars_per_step = config.batch_size * config.seq_len
    bar = tqdm(total=config.steps, initial=run.step, desc="train", unit="step", disable=None if main else True)
    losses, started = [], time.perf_counter()
    while run.step < config.steps:
        losses.append(run.train_step())
        speed = chars_per_step * len(losses) / (time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", bpc=f"{losses[-1] / math.log(2):.3f}", chars_s=f"{speed:,.0f}")
        if run.step % config.eval_every == 0 or run.step == config.steps:
            saved = run.checkpoint_dict()  # a collective: every process takes part
            if main:
                _evaluate_and_save(run, saved, sum(losses) / len(losses), speed, metrics_path, bar)
            losses, started = [], time.perf_counter()
    bar.close()
    if main:
        where = run.run_dir
        print(f"checkpoints: {where / 'last.pt'} (best: {where / 'best.pt'}); plot: {where / 'loss.png'}")
    return run.run_dir


def _evaluate_and_save(
    run: Run, saved: dict[str, Any], train_loss: float, speed: float, metrics_path: Path, bar: Any
) -> None:
    """Rank 0's part of an evaluation: validation loss, checkpoints, then the metrics line (the
    checkpoint carries it too, for ``--resume`` to restore if a kill comes between), plot."""
    val = evaluate(run.model, run.corpus.valid, run.config, run.device)
    record = {"step": run.step, "train_loss": train_loss, "val_loss": val, "val_bpc": val / math.log(2),
              "chars_per_s": speed}
    saved["record"] = record
    if val < run.best_val:
        run.best_val = saved["best_val"] = val
        checkpoint.save(run.run_dir / "best.pt", saved)
    checkpoint.save(run.run_dir / "last.pt", saved)
    append_line(metrics_path, json.dumps(record))
    bar.write(f"step {run.step}: val loss {val:.3f} nats/char, {val / math.log(2):.3f} bits/char")
    plot_losses(metrics_path, run.run_dir / "loss.png")


def check_new_run_dir(run_dir: Path) -> None:
    """A new run starts in a new or empty directory: an old run's files would mix with its own."""
    if (run_dir / "last.pt").exists():
        raise checkpoint.CheckpointError(f"{run_dir} already holds a run; use --resume {run_dir}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir}: not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"--run-dir {run_dir} is not empty; give a new or empty directory (or --resume a run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    fields = (f.name for f in dataclasses.fields(TrainConfig))
    given = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    try:
        if args.resume:
            saved = checkpoint.load(Path(args.resume))
            check_weights_fit(saved, args.resume)
            train(resumed_config(saved, given), Path(args.resume), saved)
        else:
            train(TrainConfig(**given))
    except (ConfigError, DataError, checkpoint.CheckpointError, OSError) as error:
        print(f"error: {error}")
        return 2
    except RuntimeError as error:  # a lost or stuck torchrun peer; anything else is a bug
        message = describe_failure(error)
        if message is None:
            raise
        print(f"error: {message}", flush=True)
        sys.stderr.flush()
        # the process group's objects still wait on the lost peer: freeing them (as a normal
        # exit does) can block forever, so the process ends here
        os._exit(2)
    return 0
