"""Ctrl-C during training: finish the step in progress, save ``last.pt``, say how to resume.

While :func:`stop_requests` is active the first SIGINT only asks the training loop to stop: it
finishes the step in progress (and an evaluation due at it), writes ``last.pt`` and raises
:class:`Interrupted`. SIGINTs in the next :data:`REPEAT_GRACE_SECONDS` are the same request
(torchrun passes the terminal's Ctrl-C on to its workers, which had it already); a later one
raises ``KeyboardInterrupt`` at once, abandoning the step in progress.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Callable, Iterator

REPEAT_GRACE_SECONDS = 2.0  # further Ctrl-Cs this soon after the first are the same request


class Interrupted(Exception):
    """Training stopped by Ctrl-C in the run ``run_dir`` after ``step`` of ``steps`` steps;
    ``saved_step``: the step ``last.pt`` holds now (``None``: there is no checkpoint);
    ``main``: whether this process is the one that reports (rank 0)."""

    def __init__(
        self, run_dir: Path, step: int, steps: int, saved_step: int | None, processes: int = 1, main: bool = True
    ) -> None:
        super().__init__(f"interrupted at step {step} of {steps}")
        self.run_dir, self.step, self.steps, self.saved_step = run_dir, step, steps, saved_step
        self.processes, self.main = processes, main

    def describe(self, command: str = "python -m rnnkit train") -> str:
        """One line: where training stopped, what was saved, and the command that continues it."""
        last = self.run_dir / "last.pt"
        if self.saved_step is None:
            return (
                f"interrupted at step {self.step} of {self.steps}, before any checkpoint: nothing to resume "
                f"(a new run wants a new or empty --run-dir)"
            )
        if self.saved_step == self.step:
            what = f"interrupted at step {self.step} of {self.steps}: saved {last}"
        else:
            what = (
                f"interrupted during step {self.step + 1} of {self.steps} (abandoned): {last} holds step "
                f"{self.saved_step}"
            )
        under = " (under torchrun, as before)" if self.processes > 1 else ""
        return f"{what}; continue with: {command} --resume {self.run_dir}{under}"


class StopRequest:
    """The SIGINT handler of the training loop: :attr:`requested` once Ctrl-C was pressed;
    ``notice`` (if any) is printed on stderr at once."""

    def __init__(self, notice: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.notice, self.clock = notice, clock
        self.requested_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        now = self.clock()
        if self.requested_at is None:
            self.requested_at = now
            if self.notice:
                with contextlib.suppress(RuntimeError):  # stderr was being written as the signal came
                    print(f"\n{self.notice}", file=sys.stderr, flush=True)
        elif now - self.requested_at > REPEAT_GRACE_SECONDS:
            raise KeyboardInterrupt


@contextlib.contextmanager
def stop_requests(notice: str | None = None) -> Iterator[StopRequest]:
    """A :class:`StopRequest` handling SIGINT within the block (where SIGINT has Python's default
    handler and this is the main thread; elsewhere it is never requested)."""
    request = StopRequest(notice)
    install = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if install:
        signal.signal(signal.SIGINT, request)
    try:
        yield request
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)
