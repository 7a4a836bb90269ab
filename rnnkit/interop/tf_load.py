"""``load_tf_checkpoint``: a TF checkpoint's variables into a cell, a layer or a whole model, by name.

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
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ..tfvars import LoadResult, Names, Scope, _layout, _load
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


def _sources(listed: Iterable[str], wanted: set[str]) -> dict[str, list[str]]:
    """Every checkpoint variable by the name it loads as: its own, or the current name of an
    older one (``weights``, ``Linear/Matrix``, ...) when a weight wants that name and the
    checkpoint does not hold it as such; TF 0.x ``LSTMCell/W_0``, ``W_1``, ... (axis-0 shards)
    as one ``lstm_cell/kernel``. Older names nothing wants stay as they are (a model's own
    ``dense/weights`` is not renamed)."""
    listed = list(listed)
    exact = set(listed)
    sources: dict[str, list[str]] = {}
    shards: dict[str, dict[int, str]] = {}
    for name in listed:
        match = _OLD_LSTM_SHARD.match(name)
        joined = _current_name(f"{match.group(1)}/lstm_cell/kernel") if match else None
        if match and joined in wanted and joined not in exact:
            shards.setdefault(joined, {})[int(match.group(2))] = name
            continue
        current = _current_name(name)
        if current != name and current in wanted and current not in exact and current not in sources:
            sources[current] = [name]
        else:
            sources.setdefault(name, [name])
    for joined, parts in shards.items():
        sources[joined] = [parts[number] for number in sorted(parts)]
    return sources


def _read(checkpoint: Any, parts: list[str]) -> Tensor:
    """The tensor ``name`` loads from: one variable, or old kernel shards concatenated."""
    arrays = [checkpoint.read(part) for part in parts]
    value = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    if value.dtype.kind != "f":
        raise TypeError(f"checkpoint variable {parts[0]!r} holds {value.dtype} values; parameters take floating point")
    return torch.from_numpy(value)  # the reader's own fresh, writable array: no copy, no warning


def load_tf_checkpoint(
    cell: nn.Module,
    path: str | Path,
    scope: Scope = "rnn",
    strict: bool = True,
    names: Names | None = None,
) -> LoadResult:
    """Load a TF checkpoint into a cell, a layer or a whole model in one call.

    ``path``: a V2 or V1 checkpoint in any form TF accepts: a prefix (``model.ckpt-1000``,
    ``model.weights/``), one of its files (``.index``, ``.data-00000-of-00001``, ``.meta``, a V1
    shard), or a directory (its ``checkpoint`` state file, or its only checkpoint).

    ``cell``: an rnnkit cell or layer, whose weights take their TF names under ``scope`` (as
    :func:`rnnkit.tf_variables` gives them); or any ``nn.Module``: its rnnkit cells and layers
    (found as submodules) take theirs under ``scope`` (one for all, or ``{submodule name:
    scope}``), and its other parameters the TF variables ``names`` gives them, e.g.::

        names={"embedding.weight": "embedding", "softmax_w": "rnnlm/softmax_w",
               "softmax_b": "rnnlm/softmax_b"}            # parameter name -> TF name
        names={"out.weight": ("rnnlm/softmax_w", "T")}    # nn.Linear [V, H] from TF's [H, V]

    Shapes must match exactly (after a transform). Lazy cells are built from the shapes;
    values are copied into the existing parameters in their dtype.

    ``strict=True``: one ``ValueError`` lists every missing (a parameter nothing fills),
    unexpected and mis-shaped name, and nothing is changed. "Unexpected" counts the
    checkpoint's variables under the cells' own subtrees (``rnnlm/multi_rnn_cell/``: the
    ``rnnlm/softmax_w`` beside a cell is not its business) or, for a whole model, under
    ``scope``, that nothing took; optimizer slots (``.../Adam``, ``global_step``, ...) never
    count. When a cell's names exist under another scope the error says which.
    """
    checkpoint = open_checkpoint(path)
    layout = _layout(cell, scope, names)
    wanted = layout.wanted()
    listed = [n for n in checkpoint.names() if not _is_optimizer_state(n) and not checkpoint.is_string(n)]
    sources = _sources(listed, wanted)
    values = {name: _read(checkpoint, parts) for name, parts in sources.items() if name in wanted}
    hint_names = set(sources) | {_current_name(name) for name in listed}
    return _load(layout, values, sources, strict, caller="load_tf_checkpoint", source="checkpoint",
                 hint_names=hint_names)
