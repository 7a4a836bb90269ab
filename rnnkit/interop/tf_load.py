"""``load_tf_checkpoint``: a TF checkpoint's variables into a cell, by name.

On top of :func:`rnnkit.load_tf_variables`: optimizer slots (``.../Adam``, ``.../Momentum``,
``global_step``, ``beta1_power``, ...) are ignored, and the names older TF versions wrote are
accepted: ``weights``/``biases`` for ``kernel``/``bias`` (TF <= 1.1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..tfvars import LoadResult, load_tf_variables
from .tf_checkpoint import TFCheckpoint

__all__ = ["load_tf_checkpoint"]

_SLOT = re.compile(
    r"/(Adam(_\d+)?|Momentum|RMSProp(_\d+)?|Adagrad|Adadelta(_\d+)?|Ftrl(_\d+)?|ExponentialMovingAverage)(/|$)"
)
_BOOKKEEPING = {"global_step", "beta1_power", "beta2_power"}
_ALIASES = ((re.compile(r"/weights(?=/|$)"), "/kernel"), (re.compile(r"/biases(?=/|$)"), "/bias"))


def _is_optimizer_state(name: str) -> bool:
    return bool(_SLOT.search(name)) or name.rsplit("/", 1)[-1] in _BOOKKEEPING


def _current_name(name: str) -> str:
    for pattern, replacement in _ALIASES:
        name = pattern.sub(replacement, name)
    return name


def load_tf_checkpoint(cell: Any, path: str | Path, scope: str | None = "rnn", strict: bool = True) -> LoadResult:
    """Load the variables under ``scope`` of the checkpoint at ``path`` (a prefix, its
    ``.index`` file, or a directory with a ``checkpoint`` file) into ``cell`` (a cell, a cell
    tree or an rnnkit layer), building lazy cells from the shapes. ``strict`` as in
    :func:`rnnkit.load_tf_variables`."""
    checkpoint = TFCheckpoint(path)
    prefix = f"{scope}/" if scope else ""
    names = [n for n in checkpoint.names() if n.startswith(prefix) and not _is_optimizer_state(n)]
    arrays = {_current_name(name): checkpoint.read(name) for name in names if not checkpoint.is_string(name)}
    return load_tf_variables(cell, arrays, scope=scope, strict=strict)
