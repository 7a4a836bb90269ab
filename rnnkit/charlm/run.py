"""One training run of the main job: :class:`Run` (its data, model, optimizer and directory, one
step, its checkpoints) and the loop that takes it to ``--steps``, with the evaluations, the
metrics and Ctrl-C (``train.py`` is the command around it)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import rnnkit as rk

from .._checks import check_state
from .._files import atomic_write_stream, remove_stale_temporaries
from . import checkpoint
from .cli import plural
from .config import ConfigError, TrainConfig, check_config, learning_rate
from .data import Corpus, load_text, streams, window, windows_per_epoch
from .distributed import World, any_rank, gather_rows
from .interrupt import Interrupted, stop_requests
from .metrics import append_line, repair_metrics
from .model import CharLM
from .plot import plot_losses
from .progress import Progress

RUN_FILES = ("config.json", "metrics.jsonl", "loss.png", "last.pt", "best.pt")  # what a run directory holds

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


def run_to_end(run: Run) -> Path:
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


