"""What the commands share: an argument parser whose usage errors are one line on stderr.

``python -m rnnkit``, ``train``, ``sample`` and ``convert`` each build their own parser from
:class:`CommandParser`: a usage error is ``error: ...; see PROG --help`` on stderr and exit
status 2, as every other error of the commands is (argparse's default prints the whole usage
block first).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

USAGE_ERROR = 2  # exit status of a usage error and of every input the commands refuse
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error:`` line naming where the
    options are listed; help keeps the description's own line breaks."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"error: {message}; see {self.prog} --help\n")


def plural(count: int, word: str) -> str:
    """``"1 character"``, ``"2 characters"``, ``"1,000 characters"``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"
