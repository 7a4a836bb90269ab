"""``python -m rnnkit train ...``, ``sample RUN_DIR ...`` and ``convert SRC [DST] ...``."""

from __future__ import annotations

import sys

USAGE = "usage: python -m rnnkit {train,sample,convert} [options]   (add --help after the command)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "sample", "convert"):
        print(USAGE)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "train":
        from .charlm.train import main as command
    elif argv[0] == "sample":
        from .charlm.sample import main as command
    else:
        from .interop.convert import main as command
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
