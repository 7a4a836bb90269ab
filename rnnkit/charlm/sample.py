"""``python -m rnnkit sample RUN_DIR``: text from a trained model."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from . import checkpoint
from .cli import USAGE_ERROR, CommandParser
from .config import model_for
from .data import Corpus, DataError

PROG = "python -m rnnkit sample"


def start_character(vocab: list[str]) -> str:
    """What the model reads first without a prime: a newline (the start of a line), or the
    vocabulary's first character if the text had none."""
    return "\n" if "\n" in vocab else vocab[0]


def next_distribution(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The probabilities of the next character: ``softmax(logits / temperature)``, computed in
    float64 from the logits less their maximum, so that every finite ``temperature > 0`` gives
    finite probabilities (a tiny one puts all the mass on the most likely characters: greedy)."""
    scaled = (logits.double() - logits.double().max()) / temperature
    return torch.softmax(scaled, dim=-1)


@torch.no_grad()
def sample(run: Path, prime: str, length: int, temperature: float, seed: int) -> str:
    """``prime`` followed by ``length`` characters drawn from the model at ``temperature``."""
    path = run / "best.pt" if (run / "best.pt").is_file() else run
    saved = checkpoint.load(path)
    corpus = Corpus.of_vocabulary(saved["vocab"])
    unknown = sorted(set(prime) - set(corpus.vocab))
    if unknown:
        raise DataError(f"--prime: characters not in the model's vocabulary: {''.join(unknown[:20])!r}")
    model = model_for(saved, str(path))
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = corpus.encode(prime or start_character(corpus.vocab)).unsqueeze(0)
    logits, state = model(ids)
    drawn = []
    for _ in range(length):
        next_id = torch.multinomial(next_distribution(logits[0, -1], temperature), 1, generator=generator)
        drawn.append(int(next_id))
        logits, state = model(next_id.view(1, 1), state)
    return prime + corpus.decode(torch.tensor(drawn, dtype=torch.long))


DESCRIPTION = """\
Write text with a model trained by python -m rnnkit train: the prime, then --length characters
drawn one at a time, each from the model's distribution given all the text before it."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog, description=DESCRIPTION)
    parser.add_argument(
        "run_dir", metavar="RUN", help="a run directory (its best.pt, else last.pt) or a checkpoint file"
    )
    parser.add_argument(
        "--prime",
        default="",
        metavar="TEXT",
        help="text to start from, printed first (default: none: the model starts as after a newline, "
        "and only the drawn characters are printed)",
    )
    parser.add_argument("--length", type=int, default=500, metavar="N", help="characters to draw (default: 500)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        metavar="T",
        help="a finite number > 0: below 1 more conservative, above 1 more varied; near 0 always "
        "the most likely character (default: 0.8)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the random draws: the same model, options and seed give the same text (default: 0)",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if args.length < 0:
            raise DataError(f"--length must be >= 0, got {args.length}")
        if not (args.temperature > 0 and math.isfinite(args.temperature)):
            raise DataError(f"--temperature must be a finite number > 0, got {args.temperature}")
        print(sample(Path(args.run_dir), args.prime, args.length, args.temperature, args.seed))
    except (DataError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    return 0
