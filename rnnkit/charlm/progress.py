"""What a training run shows while it runs: a bar on a terminal, plain lines anywhere else.

On a terminal (stderr is one) a tqdm bar counts the steps, with its ETA and the smoothed loss.
Piped or redirected (``train > log``, nohup, CI) there is no bar: a plain line after the first
step and then every :data:`PROGRESS_SECONDS` gives the step, the smoothed loss, the speed and
the ETA. Evaluation lines go to stdout either way.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm import tqdm

PROGRESS_SECONDS = 10.0  # without a terminal: a line after the first step, then at most this often
SMOOTHING = 0.95  # the past's weight in the smoothed loss (it averages about the last 20 steps)


class SmoothedLoss:
    """An exponential moving average, bias-corrected (the first values are not pulled to 0)."""

    def __init__(self, beta: float = SMOOTHING) -> None:
        self.beta, self.total, self.count = beta, 0.0, 0

    def add(self, value: float) -> float:
        """Take one loss; returns the average so far."""
        self.count += 1
        self.total = self.beta * self.total + (1 - self.beta) * value
        return self.total / (1 - self.beta**self.count)


def clock_time(seconds: float) -> str:
    """``"0:07"``, ``"12:05"``, ``"1:02:03"``."""
    minutes, second = divmod(max(0, round(seconds)), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


class Progress:
    """The progress display of steps ``initial + 1 .. total``, ``chars_per_step`` characters
    each; ``show=False`` (the processes other than rank 0) shows nothing. ``terminal`` says
    whether to draw a bar (default: whether stderr is a terminal); ``clock`` is for tests."""

    def __init__(
        self,
        total: int,
        initial: int,
        chars_per_step: int,
        show: bool = True,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self.total, self.initial, self.chars_per_step, self.clock = total, initial, chars_per_step, clock
        self.plain = show and not terminal
        self.bar = tqdm(
            total=total, initial=initial, desc="train", unit="step", disable=not (show and terminal), dynamic_ncols=True
        )
        self.loss = SmoothedLoss()
        self.started = clock()
        self.last_line: float | None = None

    def update(self, step: int, loss: float) -> None:
        """Step ``step`` is done, its loss ``loss`` (nats/char)."""
        smoothed, now = self.loss.add(loss), self.clock()
        elapsed, done = now - self.started, step - self.initial
        speed = self.chars_per_step * done / elapsed if elapsed > 0 else 0.0
        if not self.bar.disable:
            self.bar.set_postfix_str(f"loss {smoothed:.3f}, {speed:,.0f} chars/s", refresh=False)
            self.bar.update(step - self.bar.n)
        if self.plain and (self.last_line is None or now - self.last_line >= PROGRESS_SECONDS):
            self.last_line = now
            eta = elapsed / done * (self.total - step) if done else 0.0
            self.write(
                f"step {step}/{self.total}: loss {smoothed:.3f} nats/char (smoothed), {speed:,.0f} chars/s, "
                f"elapsed {clock_time(elapsed)}, ETA {clock_time(eta)}"
            )

    def write(self, line: str) -> None:
        """A line on stdout, above the bar if there is one."""
        if self.bar.disable:
            print(line, flush=True)
        else:
            self.bar.write(line, file=sys.stdout)
            sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()
