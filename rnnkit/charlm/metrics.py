"""A run's ``metrics.jsonl``: one JSON line per evaluation, appended durably, read tolerantly
(a torn last line from a killed run is dropped) and, on ``--resume``, put back in line with the
checkpoint."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from .._files import DiskFullError, atomic_write_stream


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` with strictly increasing steps: a torn or malformed line is
    dropped, and a row for a step at or before an earlier row's replaces those rows (it is the
    newer run's)."""
    rows: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or type(row.get("step")) is not int:
            continue
        while rows and rows[-1]["step"] >= row["step"]:
            rows.pop()
        rows.append(row)
    return rows


def repair_metrics(path: Path, step: int, record: dict[str, Any] | None) -> None:
    """Make ``metrics.jsonl`` tell the checkpoint's story: rows up to its ``step`` only, ending
    with the checkpoint's own ``record`` if a kill came before that row was written."""
    rows = [row for row in read_metrics(path) if row["step"] <= step]
    if record is not None and (not rows or rows[-1]["step"] < step):
        rows.append(record)
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    atomic_write_stream(path, lambda file: file.write(text))


def append_line(path: Path, line: str) -> None:
    """Append one line and make it durable; a full disk is a :class:`DiskFullError`."""
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{path}: no space left on device") from None
        raise
