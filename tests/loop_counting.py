"""A stand-in for the compiled module whose step loops count their calls, for tests that check
which loop ran (test_batch_slices.py, test_lstm_inference.py)."""

from __future__ import annotations

from collections import Counter
from types import ModuleType, SimpleNamespace


def counting_loops(module: ModuleType, calls: Counter) -> SimpleNamespace:
    """``module``'s step loops (the functions named ``*_steps``), each counting its calls in
    ``calls`` under its name before it runs."""

    def counted(name: str):
        def loop(*args):
            calls[name] += 1
            return getattr(module, name)(*args)

        return loop

    names = [name for name in dir(module) if name.endswith("_steps")]
    return SimpleNamespace(**{name: counted(name) for name in names})
