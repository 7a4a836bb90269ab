"""``load_tf_checkpoint``: a TF checkpoint's variables into a cell, by name.

On top of :func:`rnnkit.load_tf_variables`: optimizer slots (``.../Adam``, ``.../Momentum``,
``global_step``, ``beta1_power``, ...) are ignored, and the names other TF versions wrote are
accepted:

* TF 1.0-1.1: ``weights``/``biases`` for ``kernel``/``bias``;
* TF 0.x: ``MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix`` and ``.../Linear/Bias``,
  ``GRUCell/Gates/...`` and ``GRUCell/Candidate/...``, and the old ``LSTMCell`` names ``W_0``
  (``W_1``, ... when sharded: concatenated), ``B``, ``W_F_diag``, ``W_I_diag``, ``W_O_diag``,
  ``W_P_0``;
* the TF1 cuDNN path's canonical ``cudnn_compatible_lstm_cell`` (an ``LSTMCell`` layout; build
  the cell with ``forget_bias=0.0``, as cuDNN has no forget bias) and
  ``cudnn_compatible_gru_cell`` (into ``GRUCell(reset_after=True)``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..tfvars import LoadResult, load_tf_variables
from .tf_checkpoint import open_checkpoint

__all__ = ["load_tf_checkpoint"]

_SLOT = re.compile(
    r"/(Adam(_\d+)?|Momentum|RMSProp(_\d+)?|Adagrad|Adadelta(_\d+)?|Ftrl(_\d+)?|ExponentialMovingAverage)(/|$)"
)
_BOOKKEEPING = {"global_step", "beta1_power", "beta2_power"}
_ALIASES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"/weights(?=/|$)", "/kernel"),
        (r"/biases(?=/|$)", "/bias"),
        (r"/MultiRNNCell/Cell(\d+)(?=/)", r"/multi_rnn_cell/cell_\1"),
        (r"/BasicLSTMCell/Linear/Matrix$", "/basic_lstm_cell/kernel"),
        (r"/BasicLSTMCell/Linear/Bias$", "/basic_lstm_cell/bias"),
        (r"/BasicRNNCell/Linear/Matrix$", "/basic_rnn_cell/kernel"),
        (r"/BasicRNNCell/Linear/Bias$", "/basic_rnn_cell/bias"),
        (r"/GRUCell/Gates/Linear/Matrix$", "/gru_cell/gates/kernel"),
        (r"/GRUCell/Gates/Linear/Bias$", "/gru_cell/gates/bias"),
        (r"/GRUCell/Candidate/Linear/Matrix$", "/gru_cell/candidate/kernel"),
        (r"/GRUCell/Candidate/Linear/Bias$", "/gru_cell/candidate/bias"),
        (r"/LSTMCell/B$", "/lstm_cell/bias"),
        (r"/LSTMCell/W_([FIO])_diag$", lambda m: f"/lstm_cell/w_{m.group(1).lower()}_diag"),
        (r"/LSTMCell/W_P_0$", "/lstm_cell/projection/kernel"),
        (r"/cudnn_compatible_lstm_cell/", "/lstm_cell/"),
        (r"/cudnn_compatible_gru_cell/", "/gru_cell/"),
    )
)
_OLD_LSTM_SHARD = re.compile(r"^(.*)/LSTMCell/W_(\d+)$")  # kernel shards, concatenated along axis 0


def _is_optimizer_state(name: str) -> bool:
    return bool(_SLOT.search(name)) or name.rsplit("/", 1)[-1] in _BOOKKEEPING


def _current_name(name: str) -> str:
    name = f"/{name}"  # the patterns anchor on "/"
    for pattern, replacement in _ALIASES:
        name = pattern.sub(replacement, name)
    return name[1:]


def _join_old_lstm_shards(arrays: dict[str, Any]) -> dict[str, Any]:
    """TF 0.x ``LSTMCell/W_0``, ``W_1``, ... -> one ``lstm_cell/kernel`` (axis-0 shards)."""
    shards: dict[str, dict[int, Any]] = {}
    rest = {}
    for name, value in arrays.items():
        match = _OLD_LSTM_SHARD.match(name)
        if match:
            shards.setdefault(match.group(1), {})[int(match.group(2))] = value
        else:
            rest[name] = value
    for scope, parts in shards.items():
        rest[f"{scope}/lstm_cell/kernel"] = np.concatenate([parts[i] for i in sorted(parts)], axis=0)
    return rest


def load_tf_checkpoint(cell: Any, path: str | Path, scope: str | None = "rnn", strict: bool = True) -> LoadResult:
    """Load the variables under ``scope`` of the checkpoint at ``path`` (a prefix, its
    ``.index`` file, or a directory with a ``checkpoint`` file) into ``cell`` (a cell, a cell
    tree or an rnnkit layer), building lazy cells from the shapes. ``strict`` as in
    :func:`rnnkit.load_tf_variables`."""
    checkpoint = open_checkpoint(path)
    prefix = f"{scope}/" if scope else ""
    names = [n for n in checkpoint.names() if n.startswith(prefix) and not _is_optimizer_state(n)]
    arrays = {name: checkpoint.read(name) for name in names if not checkpoint.is_string(name)}
    arrays = {_current_name(name): value for name, value in _join_old_lstm_shards(arrays).items()}
    return load_tf_variables(cell, arrays, scope=scope, strict=strict)
