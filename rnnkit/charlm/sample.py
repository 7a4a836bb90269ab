"""``python -m rnnkit sample RUN_DIR``: text from a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import checkpoint
from .data import Corpus, DataError
from .train import model_for


@torch.no_grad()
def sample(run: Path, prime: str, length: int, temperature: float, seed: int) -> str:
    """``prime`` followed by ``length`` characters drawn from the model at ``temperature``."""
    path = run / "best.pt" if (run / "best.pt").is_file() else run
    saved = checkpoint.load(path)
    corpus = Corpus.of_vocabulary(saved["vocab"])
    model = model_for(saved, str(path))
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = corpus.encode(prime or corpus.vocab[0]).unsqueeze(0)
    logits, state = model(ids)
    drawn = []
    for _ in range(length):
        probabilities = torch.softmax(logits[0, -1] / temperature, dim=-1)
        next_id = torch.multinomial(probabilities, 1, generator=generator)
        drawn.append(int(next_id))
        logits, state = model(next_id.view(1, 1), state)
    return prime + corpus.decode(torch.tensor(drawn))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit sample", description=__doc__)
    parser.add_argument("run_dir", help="a run directory (or a checkpoint file)")
    parser.add_argument("--prime", default="", help="text to start from")
    parser.add_argument("--length", type=int, default=500, help="characters to draw")
    parser.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.length < 0:
            raise DataError(f"--length must be >= 0, got {args.length}")
        if not args.temperature > 0:
            raise DataError(f"--temperature must be > 0, got {args.temperature}")
        print(sample(Path(args.run_dir), args.prime, args.length, args.temperature, args.seed))
    except (DataError, checkpoint.CheckpointError) as error:
        print(f"error: {error}")
        return 2
    return 0
