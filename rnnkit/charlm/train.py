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
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
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

import rnnkit as rk

from .._checks import check_state
from .._files import atomic_write_stream, remove_stale_temporaries
from . import checkpoint, progress
from .cli import INTERRUPTED, USAGE_ERROR, CommandParser, plural
from .data import Corpus, DataError, load_text, streams, window, windows_per_epoch
from .distributed import World, any_rank, describe_failure, gather_rows, join, leave
from .interrupt import Interrupted, stop_requests
from .metrics import append_line, repair_metrics
from .model import CELLS, CharLM
from .plot import plot_losses
from .progress import Progress

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("cosine", "constant")
FINAL_LR_FRACTION = 0.05  # where the cosine schedule ends, as a fraction of --lr
DEVICES = ("cpu", "cuda")
RUN_FILES = ("config.json", "metrics.jsonl", "loss.png", "last.pt", "best.pt")  # what a run directory holds
PROG = "python -m rnnkit train"


def _option(default: Any, help: str, group: str, **argparse_options: Any) -> Any:
    """A :class:`TrainConfig` field: its default, and how ``--help`` shows it."""
    return field(default=default, metadata={"help": help, "group": group, **argparse_options})


MODEL, TRAINING, RUN = "data and model", "training", "the run"


@dataclass
class TrainConfig:
    data: str | None = _option(
        None, "a UTF-8 text file, or a directory whose .txt and .md files are read (all of them, recursively, "
        "sorted by path); default: the help texts that ship with CPython (pydoc_data.topics, 0.46 MB)",
        MODEL, metavar="PATH")
    cell: str = _option("lstm", "the recurrent cell", MODEL, choices=CELLS)
    layers: int = _option(2, "stacked recurrent layers", MODEL, metavar="N")
    units: int = _option(256, "units per layer, also the embedding's size", MODEL, metavar="N")
    dropout: float = _option(0.1, "dropout between layers, in [0, 1)", MODEL, metavar="P")
    seq_len: int = _option(100, "characters per truncated-BPTT window", TRAINING, metavar="N")
    batch_size: int = _option(32, "parallel streams of text", TRAINING, metavar="N")
    steps: int = _option(1100, "the step to train up to (a resumed run continues to it)", TRAINING,
                         metavar="N")
    epochs: float | None = _option(None, "train this many epochs instead of --steps", TRAINING, metavar="X")
    optimizer: str = _option("adam", "the optimizer", TRAINING, choices=OPTIMIZERS)
    lr: float = _option(5e-3, "learning rate (the peak, with --lr-schedule cosine)", TRAINING, metavar="X")
    lr_schedule: str = _option(
        "cosine", f"cosine: from --lr down to {FINAL_LR_FRACTION:g} x --lr at --steps (half a cosine, set from the "
        "step number each step); constant: --lr throughout", TRAINING, choices=SCHEDULES)
    clip: float = _option(5.0, "gradient norm clipping", TRAINING, metavar="X")
    seed: int = _option(1234, "random seed (weights, dropout)", TRAINING, metavar="N")
    eval_every: int = _option(100, "steps between evaluations and checkpoints", RUN, metavar="N")
    run_dir: str | None = _option(None, "the run directory, new or empty; default: runs/<date>-<time>", RUN,
                                  metavar="DIR")
    device: str = _option("cpu", "where to train (cuda: under torchrun, one GPU per process)", RUN, choices=DEVICES)
    timeout: float = _option(1800.0, "seconds a process waits for the others under torchrun before failing", RUN,
                             metavar="SECONDS")


class ConfigError(ValueError):
    """A hyper-parameter that makes no sense, with a one-line reason."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(config: TrainConfig) -> None:
    """Refuse settings that make no sense, naming the option (a :class:`ConfigError`)."""
    for name in ("layers", "units", "seq_len", "batch_size", "steps", "eval_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(config, name)}")
    if not 0 <= config.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {config.dropout}")
    for name in ("lr", "clip", "timeout", "epochs"):
        value = getattr(config, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{_flag(name)} must be a finite number > 0, got {value}")
    for name, choices in (("cell", CELLS), ("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES),
                          ("device", DEVICES)):
        if getattr(config, name) not in choices:
            raise ConfigError(f"{_flag(name)} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
    if config.device == "cuda" and not torch.cuda.is_available():
        build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        raise ConfigError(f"--device cuda: no CUDA device is available{build}; use --device cpu")


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
            _flag(spec.name), type=kind, default=None, help=options.pop("help") + shown, **options)
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


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr)
    return torch.optim.RMSprop(model.parameters(), lr=config.lr)


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of the step that takes the run from ``step`` to ``step + 1``.

    A function of the step number alone (no scheduler state to save): a resumed run continues
    on the same curve, and one resumed with a larger ``--steps`` stretches the rest of it."""
    if config.lr_schedule == "constant":
        return config.lr
    progress_made = min(step, config.steps) / config.steps
    return config.lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress_made)))


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
    if isinstance(saved, dict) and "lr_schedule" not in saved:
        saved = {**saved, "lr_schedule": "constant"}  # written before the schedules: a constant rate
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
        # the device is checked where it is used (earlier versions also took cuda:N)
        known = config.device in DEVICES or config.device.startswith("cuda:")
        check_config(dataclasses.replace(config, device="cpu" if known else config.device))
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
        self.world = world
        self.run_dir = Path(resume if resume is not None else (config.run_dir or _new_run_dir()))
        config = dataclasses.replace(config, run_dir=str(self.run_dir.absolute()))  # what config.json records
        if saved is None:
            check_new_run_dir(self.run_dir)  # every process, before the first collective
        self.device = torch.device(f"cuda:{world.local_rank}" if config.device == "cuda" else config.device)
        text, self.source = load_text(config.data)
        self.corpus = Corpus.from_text(text, vocab=saved["vocab"] if saved else None, source=config.data)
        all_streams = streams(self.corpus.train, config.batch_size, config.seq_len, "training")
        self.shard = config.batch_size // world.size  # this process's streams
        self.train_ids = all_streams[world.rank * self.shard : (world.rank + 1) * self.shard].to(self.device)
        streams(self.corpus.valid, 1, config.seq_len, "validation")  # fails early if too short
        self.windows = windows_per_epoch(self.train_ids.shape[1], config.seq_len)
        if config.epochs is not None:
            config = dataclasses.replace(config, steps=max(1, round(config.epochs * self.windows)))
        self.config = config
        torch.manual_seed(config.seed)
        self.model = CharLM(len(self.corpus.vocab), config.cell, config.layers, config.units, config.dropout)
        self.model.to(self.device)
        self.net: nn.Module = self.model  # what trains: the model, or DDP around it
        if world.size > 1:
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = _optimizer(config, self.model)
        self.step, self.state, self.best_val = 0, None, math.inf
        self.losses: list[float] = []  # the training losses since the last evaluation
        self.saved_step: int | None = None  # the step last.pt holds
        self.updating = False  # True while the optimizer changes the weights
        self._step_rng: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the RNG as the step began
        if saved is not None:
            self._restore(saved)
            self._check_steps_ahead()
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
        self.saved_step, self.losses = saved["step"], list(saved.get("losses", []))
        rows = slice(self.world.rank * self.shard, (self.world.rank + 1) * self.shard)
        if saved["state"] is not None:  # the whole batch's carried state: this process takes its rows
            self.state = rk.map_state(lambda t: t[rows].to(self.device), saved["state"])
        if saved.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)

    def _check_steps_ahead(self) -> None:
        """A resumed run trains up to ``--steps``: one already past it is a usage error."""
        if self.step <= self.config.steps:
            return
        given = f"--steps {self.config.steps}"
        if self.config.epochs is not None:
            given = f"--epochs {self.config.epochs} ({plural(self.config.steps, 'step')})"
        raise ConfigError(f"{given}: the run in {self.run_dir} is already at step {self.step}; --steps is the step "
                          f"to train up to: give more than {self.step} to continue it")

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
            "losses": list(self.losses),
        }

    def train_step(self) -> float:
        """One optimizer step; returns its loss. Until the weights change (:attr:`updating`),
        an interrupted step can be abandoned: :meth:`abandon_step` puts the RNG back."""
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self._step_rng = (torch.get_rng_state(), cuda_rng)
        position = self.step % self.windows
        inputs, targets = window(self.train_ids, position, self.config.seq_len)
        state = None if position == 0 else self.state  # a new epoch starts every stream from a zero state
        logits, state = self.net(inputs, rk.detach_state(state))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        value = loss.item()
        self.updating = True
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        self.optimizer.step()
        self.state = rk.detach_state(state)
        self.step += 1
        self.losses.append(value)
        self._step_rng, self.updating = None, False
        return value

    def abandon_step(self) -> bool:
        """After an interruption: whether the run is as it was after its last whole step (the
        RNG put back if a step was under way); ``False`` if the weights were being changed."""
        if self.updating:
            return False
        if self._step_rng is not None:
            rng, cuda_rng = self._step_rng
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            self._step_rng = None
        return True

    def save_last(self, saved: dict[str, Any]) -> None:
        """Write ``last.pt`` (rank 0; ``saved`` from :meth:`checkpoint_dict`)."""
        checkpoint.save(self.run_dir / "last.pt", saved)
        self.saved_step = saved["step"]

    def write_config(self) -> None:
        info = {"config": dataclasses.asdict(self.config), "corpus": self.source, "corpus_sha256": self.corpus.sha256,
                "vocab_size": len(self.corpus.vocab), "train_chars": len(self.corpus.train),
                "valid_chars": len(self.corpus.valid), "rnnkit": rk.__version__, "torch": torch.__version__}
        text = json.dumps(info, indent=2).encode()
        atomic_write_stream(self.run_dir / "config.json", lambda file: file.write(text))

    def describe(self) -> str:
        """The start line: corpus, model, run directory, device."""
        config, corpus = self.config, self.corpus
        characters = len(corpus.train) + len(corpus.valid)
        parameters = sum(p.numel() for p in self.model.parameters())
        processes = f", {plural(self.world.size, 'process')}" if self.world.size > 1 else ""
        steps = f"steps {self.step} -> {config.steps}" if self.step else plural(config.steps, "step")
        return (f"corpus: {self.source}, {plural(characters, 'character')} ({len(corpus.train):,} train, "
                f"{len(corpus.valid):,} validation), vocabulary {len(corpus.vocab)} | model: {config.layers} x "
                f"{config.cell}, {plural(config.units, 'unit')}, {plural(parameters, 'parameter')} | run: "
                f"{self.run_dir}, {steps} | device: {self.device}, {plural(torch.get_num_threads(), 'thread')}"
                f"{processes}")


def train(config: TrainConfig, resume: Path | None = None, saved: dict[str, Any] | None = None) -> Path:
    """Train a run, or continue the one in ``resume`` (its checkpoint ``saved``); returns its
    directory. Ctrl-C raises :class:`Interrupted` after saving. Under torchrun, every process
    calls this."""
    world = join(config.device, config.timeout)
    try:
        return _train(Run(config, resume, saved, world))
    except Interrupted as stop:
        # the frames of the traceback hold the model, whose DDP reducer holds the process group:
        # freed after leave(), the reducer would end the group under the GIL while gloo's thread
        # waits for the GIL (a hang); dropped here, they go first
        raise stop.with_traceback(None) from None
    finally:
        gc.collect()
        leave(world)


def _train(run: Run) -> Path:
    config, main = run.config, run.world.is_main
    if run.step >= config.steps:
        if main:
            print(f"the run in {run.run_dir} is already at step {run.step} of {config.steps}: nothing to do "
                  f"(a larger --steps continues it)", flush=True)
        return run.run_dir
    if main:
        run.write_config()
        print(run.describe(), flush=True)
    display = Progress(config.steps, run.step, config.batch_size * config.seq_len, show=main)
    notice = "Ctrl-C: stopping after this step to save last.pt (Ctrl-C again to stop at once)" if main else None
    try:
        with stop_requests(notice) as stop:
            _loop(run, display, lambda: stop.requested)
    except KeyboardInterrupt:  # not through the handler (a second Ctrl-C, or no handler here)
        raise _abandon(run) from None
    finally:
        display.close()
    if main:
        where = run.run_dir
        print(f"checkpoints: {where / 'last.pt'} (best: {where / 'best.pt'}); plot: {where / 'loss.png'}")
    return run.run_dir


def _loop(run: Run, display: Progress, stop_requested: Callable[[], bool]) -> None:
    """The steps up to ``--steps``, with the evaluations and checkpoints; stops early, after a
    whole step and with ``last.pt`` saved, when Ctrl-C was pressed on any process."""
    config, main = run.config, run.world.is_main
    metrics_path = run.run_dir / "metrics.jsonl"
    chars_per_step = config.batch_size * config.seq_len
    timed_steps, started = 0, time.perf_counter()
    while run.step < config.steps:
        loss = run.train_step()
        timed_steps += 1
        display.update(run.step, loss)
        if run.step % config.eval_every == 0 or run.step == config.steps:
            speed = chars_per_step * timed_steps / (time.perf_counter() - started)
            train_loss = sum(run.losses) / len(run.losses)
            saved = run.checkpoint_dict()  # a collective: every process takes part
            saved["losses"] = []  # the losses of the next metrics row start after this step
            if main:
                _evaluate_and_save(run, saved, train_loss, speed, metrics_path, display)
            run.losses, timed_steps, started = [], 0, time.perf_counter()
        if run.step < config.steps and any_rank(stop_requested(), run.world, run.device):
            if run.step % config.eval_every:  # else the evaluation just saved it
                saved = run.checkpoint_dict()  # a collective: every process takes part
                if main:
                    run.save_last(saved)
            raise Interrupted(run.run_dir, run.step, config.steps, run.step, run.world.size, main)


def _abandon(run: Run) -> Interrupted:
    """A ``KeyboardInterrupt`` in the middle of things: the step under way is dropped and
    ``last.pt`` written if the run is whole: not while the weights change, not before the
    evaluation due at this step is saved (its metrics row would be lost), not under torchrun
    (the other processes are elsewhere); the previous ``last.pt`` stays otherwise."""
    config = run.config
    whole = run.abandon_step()
    evaluation_due = run.step % config.eval_every == 0 or run.step == config.steps
    if whole and not evaluation_due and run.world.size == 1 and run.saved_step != run.step:
        try:
            run.save_last(run.checkpoint_dict())
        except KeyboardInterrupt:  # yet another Ctrl-C: the previous last.pt stays
            pass
    return Interrupted(run.run_dir, run.step, config.steps, run.saved_step, run.world.size, run.world.is_main)


def _evaluate_and_save(
    run: Run, saved: dict[str, Any], train_loss: float, speed: float, metrics_path: Path, display: Progress
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
    run.save_last(saved)
    append_line(metrics_path, json.dumps(record))
    display.write(f"step {run.step}: val loss {val:.3f} nats/char, {val / math.log(2):.3f} bits/char")
    plot_losses(metrics_path, run.run_dir / "loss.png")


def check_new_run_dir(run_dir: Path) -> None:
    """A new run starts in a new or empty directory: an old run's files would mix with its own."""
    if (run_dir / "last.pt").exists():
        raise checkpoint.CheckpointError(f"{run_dir} already holds a run; use --resume {run_dir}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir}: not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"--run-dir {run_dir} is not empty; give a new or empty directory (or --resume a run)")


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
