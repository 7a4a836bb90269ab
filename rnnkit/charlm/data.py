"""Text in, batches out: the corpus, its vocabulary, and the streams for truncated BPTT.

The default corpus is the help-topic texts that ship inside CPython (``pydoc_data.topics``,
about 0.46 MB of English and code, PSF license): no download. The last tenth of the text is the
validation set. Training reads ``batch_size`` parallel streams of the training text, ``seq_len``
characters at a time, so the model's state at the end of one batch is the right state at the
start of the next (it is carried over, detached).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .cli import plural

VALIDATION_FRACTION = 0.1


class DataError(ValueError):
    """A corpus that cannot be used, with a one-line reason."""


def load_text(source: str | None) -> tuple[str, str]:
    """``(text, description)``: the embedded corpus for ``None``, else a UTF-8 file or every
    ``*.txt``/``*.md`` file under a directory (sorted by path)."""
    if source is None:
        import pydoc_data.topics

        topics = pydoc_data.topics.topics
        return "".join(topics[key] for key in sorted(topics)), "pydoc_data.topics (CPython's help texts)"
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".md"))
        if not files:
            raise DataError(f"--data {source}: the directory holds no .txt or .md files")
        return "".join(_read(p) for p in files), f"{plural(len(files), 'file')} under {source}"
    if not path.is_file():
        raise DataError(f"--data {source}: no such file or directory")
    return _read(path), str(path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"--data {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


@dataclass
class Corpus:
    """The encoded text: vocabulary (sorted characters), train and validation ids."""

    vocab: list[str]
    train: Tensor  # [N_train] int64
    valid: Tensor  # [N_valid] int64
    sha256: str

    @classmethod
    def from_text(cls, text: str, vocab: list[str] | None = None, source: str | None = None) -> Corpus:
        """The text encoded with ``vocab`` (default: its own sorted characters, at least two);
        ``source`` is the ``--data`` argument the errors name (``None``: the default corpus)."""
        where = f"--data {source}" if source is not None else "the default corpus"
        if not text:
            raise DataError(f"{where}: the text is empty")
        if vocab is None:
            vocab = sorted(set(text))
            if len(vocab) < 2:
                raise DataError(f"{where}: the text has 1 distinct character ({vocab[0]!r}); a language model "
                                "needs at least 2 distinct characters")
        index = {ch: i for i, ch in enumerate(vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise DataError(f"the text has characters outside the model's vocabulary: {''.join(unknown[:20])!r}")
        ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
        split = int(len(ids) * (1 - VALIDATION_FRACTION))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(vocab, ids[:split], ids[split:], digest)

    @classmethod
    def of_vocabulary(cls, vocab: list[str]) -> Corpus:
        """A corpus with no text: just the vocabulary, to encode and decode (sampling)."""
        empty = torch.empty(0, dtype=torch.long)
        return cls(list(vocab), empty, empty, "")

    def encode(self, text: str) -> Tensor:
        index = {ch: i for i, ch in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise DataError(f"characters not in the model's vocabulary: {''.join(unknown)!r}")
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.vocab[i] for i in ids.tolist())


def streams(ids: Tensor, batch_size: int, seq_len: int, what: str) -> Tensor:
    """``ids`` cut into ``batch_size`` parallel streams ``[B, L]`` (the tail that does not fit
    is dropped); a stream must hold at least one window of ``seq_len + 1`` characters."""
    length = len(ids) // batch_size
    if length < seq_len + 1:
        raise DataError(
            f"the {what} text ({plural(len(ids), 'character')}) is shorter than one batch: "
            f"{plural(batch_size, 'stream')} x {plural(seq_len + 1, 'character')}; "
            "use a smaller --batch-size or --seq-len"
        )
    return ids[: length * batch_size].view(batch_size, length)


def windows_per_epoch(stream_length: int, seq_len: int) -> int:
    return (stream_length - 1) // seq_len


def window(stream_ids: Tensor, position: int, seq_len: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-character targets ``[B, seq_len]`` of window number ``position``."""
    start = position * seq_len
    chunk = stream_ids[:, start : start + seq_len + 1]
    return chunk[:, :-1], chunk[:, 1:]
