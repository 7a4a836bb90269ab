"""The main job's settings: :class:`TrainConfig` (one field per ``--flag`` of ``python -m rnnkit
train``), their checks, the learning-rate schedule, and a saved run's configuration and model
read back from its checkpoint (checked as a command line's would be)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch

from . import checkpoint
from .model import CELLS, CharLM

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("cosine", "constant")
FINAL_LR_FRACTION = 0.05  # where the cosine schedule ends, as a fraction of --lr
DEVICES = ("cpu", "cuda")

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


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(config: TrainConfig) -> None:
    """Refuse settings that make no sense, naming the option (a :class:`ConfigError`)."""
    for name in ("layers", "units", "seq_len", "batch_size", "steps", "eval_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{flag(name)} must be >= 1, got {getattr(config, name)}")
    if not 0 <= config.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {config.dropout}")
    for name in ("lr", "clip", "timeout", "epochs"):
        value = getattr(config, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{flag(name)} must be a finite number > 0, got {value}")
    for name, choices in (("cell", CELLS), ("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES),
                          ("device", DEVICES)):
        if getattr(config, name) not in choices:
            raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
    if config.device == "cuda" and not torch.cuda.is_available():
        build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        raise ConfigError(f"--device cuda: no CUDA device is available{build}; use --device cpu")


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of the step that takes the run from ``step`` to ``step + 1``.

    A function of the step number alone (no scheduler state to save): a resumed run continues
    on the same curve, and one resumed with a larger ``--steps`` stretches the rest of it."""
    if config.lr_schedule == "constant":
        return config.lr
    progress_made = min(step, config.steps) / config.steps
    return config.lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress_made)))


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
