"""What the tests of the main job share: a tiny model's options and a small corpus."""

from __future__ import annotations

from pathlib import Path

TINY = ["--units", "32", "--layers", "2", "--batch-size", "8", "--seq-len", "20", "--eval-every", "10"]


def write_corpus(directory: Path) -> Path:
    """A 9,000-character text file in ``directory``."""
    path = directory / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    return path
