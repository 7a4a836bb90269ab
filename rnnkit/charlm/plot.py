"""The loss curve of a run, as a PNG beside its checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

from .._files import atomic_write_stream
from .metrics import read_metrics


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Train and validation loss (nats/char) against the step, from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    steps = [r["step"] for r in records]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(steps, [r["train_loss"] for r in records], marker="o", label="train")
    axes.plot(steps, [r["val_loss"] for r in records], marker="o", label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/char)")
    best = min(r["val_loss"] for r in records)
    axes.set_title(f"best validation: {best:.3f} nats/char = {best / math.log(2):.3f} bits/char")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        atomic_write_stream(png_path, lambda file: figure.savefig(file, format="png", dpi=100))
    finally:
        plt.close(figure)
