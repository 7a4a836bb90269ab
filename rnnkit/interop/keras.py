"""Keras 3 LSTM and GRU layers into rnnkit cells, from ``.keras`` archives or ``.weights.h5``
files (needs ``h5py``: the ``rnnkit[keras]`` extra).

**What the files hold.** A ``.keras`` archive is a zip with ``config.json`` (the model: its
``layers``, each a ``class_name`` and a ``config`` with ``units``, ``activation``,
``recurrent_activation``, ``use_bias``, ``go_backwards``, ``return_sequences``, ...),
``metadata.json`` and ``model.weights.h5``. A weights file stores a layer's variables under
``layers/<path>/cell/vars/<i>``, where ``<path>`` is the snake_case class name made unique
in order (``lstm``, ``lstm_1``, ``gru``; not the layer's own name), and a ``Bidirectional``
layer's two under ``bidirectional/forward_layer`` and ``bidirectional/backward_layer``:
``0`` the input kernel ``[D, k*U]``, ``1`` the recurrent kernel ``[U, k*U]``, ``2`` the bias
(``[4U]`` for LSTM; ``[3U]``, or ``[2, 3U]`` input and recurrent biases with ``reset_after``,
for GRU), absent with ``use_bias=False``. Gate orders: Keras LSTM ``(i, f, c, o)``, TF
``(i, j=c, f, o)``; Keras GRU ``(z, r, h)``, TF ``(r, u=z)`` plus the candidate. Keras adds no
forget bias at run time, so the LSTM becomes ``LSTMCell(forget_bias=0.0)``.

**What is read.** From a ``.keras`` archive everything comes from the file:
``activation``, ``recurrent_activation`` (the cells' ``gate_activation``), ``use_bias``,
``reset_after``, ``go_backwards``, ``return_sequences``, ``return_state``, ``stateful``,
Bidirectional's ``merge_mode``. A bare ``.weights.h5`` holds only arrays, so those come from
keyword arguments defaulting to Keras 3's defaults (tanh, sigmoid; ``use_bias`` and a GRU's
``reset_after`` from the variables' shapes). ``"hard_sigmoid"`` is Keras 3's,
``clip(x / 6 + 0.5, 0, 1)``, also for files written by Keras 2 (whose own was
``0.2 x + 0.5``; pass a callable to get that: see ``rnnkit.activations``).

Ignored because they do not change what a trained layer computes: ``unit_forget_bias`` and
the initializers (they only initialize; the saved bias is what runs), ``implementation``,
``unroll``, ``use_cudnn``, regularizers, constraints, and ``dropout``/``recurrent_dropout``,
which act in training only (for training, wrap the cell in a ``DropoutWrapper`` yourself; its
masks are not Keras'). ``stateful`` is reported; carry the state between calls yourself.
Anything else raises and says why: an activation rnnkit lacks, a custom one, a layer class
other than ``LSTM``, ``GRU``, ``RNN`` over an ``LSTMCell``/``GRUCell`` and ``Bidirectional``
of them, and malformed files (``FormatError``, a ``ValueError`` naming the file).

The files are read as data only: JSON and HDF5 arrays, shapes checked before any array is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from ..activations import _BY_NAME, Activation
from ..cells import GRUCell, LSTMCell
from ..rnn import dynamic_rnn
from ._keras_files import Weights, arrays_of, is_archive, read_archive
from ._wire import FormatError

__all__ = ["FormatError", "KerasRNN", "keras_layer_names", "load_keras_layer", "load_keras_model", "load_keras_rnn"]

Cell = Union[LSTMCell, GRUCell]

_MAX_NESTING = 8  # nested models walked in a config
_MERGE_MODES = ("concat", "sum", "ave", "mul", None)
_KIND = {"LSTM": "lstm", "GRU": "gru", "LSTMCell": "lstm", "GRUCell": "gru"}


@dataclass(frozen=True)
class KerasRNN:
    """A Keras recurrent layer as rnnkit cells, with the flags that say how Keras runs it.

    ``cell`` is the (forward) cell; ``backward`` the backward layer of a ``Bidirectional``
    (itself a ``KerasRNN``, usually ``go_backwards=True``), with ``merge_mode``. Calling the
    object runs the layer as Keras does on ``[B, T, D]`` inputs (see :meth:`__call__`); or run
    ``cell`` with ``rk.dynamic_rnn`` yourself, reversing the inputs in time first when
    ``go_backwards``. ``config`` is the layer's config from the file (empty for a bare weights
    file).
    """

    name: str
    kind: str  # "lstm" or "gru"
    cell: Cell
    go_backwards: bool = False
    return_sequences: bool = False
    return_state: bool = False
    stateful: bool = False
    backward: KerasRNN | None = None
    merge_mode: str | None = "concat"
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def bidirectional(self) -> bool:
        return self.backward is not None

    def __call__(self, inputs: Tensor, initial_state: Any = None, backend: str = "auto") -> Any:
        """What the Keras layer returns for ``inputs`` ``[B, T, D]`` (all rows of full length):
        the last output ``[B, out]``, or every output ``[B, T, out]`` with
        ``return_sequences`` (in processing order: reversed with ``go_backwards``, as Keras);
        with ``return_state`` a list ``[output, *states]`` (LSTM ``h, c``; GRU ``h``; forward
        then backward for ``Bidirectional``). ``initial_state`` is the cell's state (a pair
        ``(forward, backward)`` for ``Bidirectional``)."""
        if self.backward is None:
            y, states = self._run(inputs, initial_state, backend)
            return [y, *states] if self.return_state else y
        forward_state, backward_state = (None, None) if initial_state is None else initial_state
        y, states = self._run(inputs, forward_state, backend)
        y_rev, states_rev = self.backward._run(inputs, backward_state, backend)
        if self.return_sequences:
            y_rev = y_rev.flip(1)
        if self.merge_mode == "concat":
            output: Any = torch.cat([y, y_rev], -1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = [y, y_rev]
        if not self.return_state:
            return output
        return [*(output if self.merge_mode is None else [output]), *states, *states_rev]

    def _run(self, inputs: Tensor, initial_state: Any, backend: str) -> tuple[Tensor, list[Tensor]]:
        if inputs.dim() != 3:
            raise ValueError(f"{self.name}: inputs must be [batch, time, depth], got shape {list(inputs.shape)}")
        x = inputs.flip(1) if self.go_backwards else inputs
        outputs, state = dynamic_rnn(self.cell, x, initial_state=initial_state, dtype=inputs.dtype, backend=backend)
        states = [state.h, state.c] if self.kind == "lstm" else [state]
        output = outputs if self.return_sequences else outputs[:, -1]
        return output, states


# ---------------------------------------------------------------------------------------------
# files


# ---------------------------------------------------------------------------------------------
# config


def _activation(value: Any, argname: str, where: str) -> Activation:
    """An activation as Keras serializes it (a name; a dict for some; ``None`` is linear)."""
    if callable(value) and not isinstance(value, (str, dict)):
        return value  # given by the caller for a bare weights file
    if value is None:
        return "linear"
    if isinstance(value, dict):
        inner = value.get("config")
        if value.get("class_name") != "function" or not isinstance(inner, str):
            raise ValueError(f"{where}: {argname} {value!r} is not a Keras built-in activation; rnnkit cannot run it")
        value = inner
    if not isinstance(value, str):
        raise FormatError(f"{where}: {argname} is a {type(value).__name__}, expected an activation name")
    name = {"swish": "silu"}.get(value, value)
    if name not in _BY_NAME:
        raise ValueError(f"{where}: {argname} {value!r} has no rnnkit equivalent; rnnkit has {sorted(_BY_NAME)}")
    return name


def _flag(config: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise FormatError(f"{where}: {key} is {value!r}, expected true or false")
    return value


@dataclass
class _Spec:
    """What a layer's config (or the caller, for a bare weights file) says about it."""

    kind: str
    units: int | None = None
    activation: Activation = "tanh"
    recurrent_activation: Activation = "sigmoid"
    use_bias: bool | None = None
    reset_after: bool | None = None
    go_backwards: bool = False
    return_sequences: bool = False
    return_state: bool = False
    stateful: bool = False
    config: dict[str, Any] = field(default_factory=dict)


def _spec_from_config(entry: Any, where: str) -> _Spec:
    """The spec of an ``LSTM``/``GRU`` layer, or of ``RNN`` over an ``LSTMCell``/``GRUCell``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise FormatError(f"{where}: a layer entry without a config")
    class_name, config = entry.get("class_name"), entry["config"]
    layer_config = config
    if class_name == "RNN":
        cell = config.get("cell")
        if not isinstance(cell, dict) or cell.get("class_name") not in ("LSTMCell", "GRUCell"):
            inner = cell.get("class_name") if isinstance(cell, dict) else cell
            raise ValueError(f"{where}: RNN over {inner!r}; rnnkit reads RNN over LSTMCell or GRUCell")
        class_name, config = cell["class_name"], cell.get("config")
        if not isinstance(config, dict):
            raise FormatError(f"{where}: the RNN's cell has no config")
    if class_name not in _KIND:
        raise ValueError(f"{where}: a {class_name} layer; rnnkit reads LSTM, GRU, RNN(LSTMCell/GRUCell) and "
                         "Bidirectional of them")
    units = config.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise FormatError(f"{where}: units is {units!r}, expected a positive integer")
    kind = _KIND[class_name]
    return _Spec(
        kind=kind,
        units=units,
        activation=_activation(config.get("activation", "tanh"), "activation", where),
        recurrent_activation=_activation(config.get("recurrent_activation", "sigmoid"), "recurrent_activation",
                                         where),
        use_bias=_flag(config, "use_bias", True, where),
        reset_after=_flag(config, "reset_after", True, where) if kind == "gru" else None,
        go_backwards=_flag(layer_config, "go_backwards", False, where),
        return_sequences=_flag(layer_config, "return_sequences", False, where),
        return_state=_flag(layer_config, "return_state", False, where),
        stateful=_flag(layer_config, "stateful", False, where),
        config=entry,
    )


def _snake_case(name: str) -> str:
    """Keras' ``to_snake_case``, which names a layer's weights group after its class."""
    import re

    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _model_layers(config: dict[str, Any], where: str, prefix: str = "", depth: int = 0) -> list[tuple[str, str, Any]]:
    """``(weights path, layer name, config entry)`` for every layer of a model config, in order,
    nested models walked (their weights sit under ``<path>/layers``)."""
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise FormatError(f"{where}: the model config lists no layers (a subclassed model? load its "
                          "model.weights.h5 with load_keras_layer and the layer's options)")
    found: list[tuple[str, str, Any]] = []
    used: dict[str, int] = {}
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise FormatError(f"{where}: a layer entry without a class_name")
        base = _snake_case(entry["class_name"])
        if base in used:
            used[base] += 1
            path = f"{base}_{used[base]}"
        else:
            used[base] = 0
            path = base
        path = prefix + path
        layer_config = entry.get("config")
        name = layer_config.get("name") if isinstance(layer_config, dict) else None
        name = name if isinstance(name, str) else path
        found.append((path, name, entry))
        nested = layer_config.get("layers") if isinstance(layer_config, dict) else None
        if isinstance(nested, list) and depth < _MAX_NESTING:
            found.extend(_model_layers(entry, where, f"{path}/layers/", depth + 1))
    return found


# ---------------------------------------------------------------------------------------------
# cells


def _cell(spec: _Spec, weights: Weights, layer: str, where: str) -> Cell:
    datasets = weights.variables(layer, where)
    has_bias = len(datasets) == 3
    if spec.use_bias is not None and spec.use_bias != has_bias:
        raise FormatError(f"{where}: use_bias is {spec.use_bias} but the weights hold {len(datasets)} variables")
    depth = datasets[0].shape[0]
    units = datasets[1].shape[0] if spec.units is None else spec.units
    k = 4 if spec.kind == "lstm" else 3
    shapes: list[tuple[int, ...]] = [(depth, k * units), (units, k * units)]
    reset_after = spec.reset_after
    if has_bias:
        if spec.kind == "gru":
            if reset_after is None:
                reset_after = datasets[2].ndim == 2
            shapes.append((2, k * units) if reset_after else (k * units,))
        else:
            shapes.append((k * units,))
    elif spec.kind == "gru" and reset_after is None:
        reset_after = True  # Keras' default; without biases the shapes cannot tell
    tensors = arrays_of(datasets, shapes, where)
    kernel, recurrent = tensors[0], tensors[1]
    bias = tensors[2] if has_bias else None
    options = {"activation": spec.activation, "gate_activation": spec.recurrent_activation, "use_bias": has_bias}
    try:
        if spec.kind == "lstm":
            return _lstm(kernel, recurrent, bias, depth, units, options)
        return _gru(kernel, recurrent, bias, depth, units, bool(reset_after), options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _lstm(kernel: Tensor, recurrent: Tensor, bias: Tensor | None, depth: int, units: int,
          options: dict[str, Any]) -> LSTMCell:
    def tf_order(m: Tensor) -> Tensor:
        i, f, c, o = m.split(units, -1)
        return torch.cat([i, c, f, o], -1)

    cell = LSTMCell(units, forget_bias=0.0, input_size=depth, dtype=kernel.dtype, **options)
    with torch.no_grad():
        cell.kernel.copy_(torch.cat([tf_order(kernel), tf_order(recurrent)]))
        if bias is not None:
            cell.bias.copy_(tf_order(bias))
    return cell


def _gru(kernel: Tensor, recurrent: Tensor, bias: Tensor | None, depth: int, units: int, reset_after: bool,
         options: dict[str, Any]) -> GRUCell:
    z, r, h = (slice(0, units), slice(units, 2 * units), slice(2 * units, 3 * units))
    cell = GRUCell(units, reset_after=reset_after, input_size=depth, dtype=kernel.dtype, **options)
    with torch.no_grad():
        cell.gates["kernel"].copy_(torch.cat([torch.cat([kernel[:, r], kernel[:, z]], 1),
                                              torch.cat([recurrent[:, r], recurrent[:, z]], 1)]))
        if reset_after:
            cell.candidate["input_projection"]["kernel"].copy_(kernel[:, h])
            cell.candidate["hidden_projection"]["kernel"].copy_(recurrent[:, h])
        else:
            cell.candidate["kernel"].copy_(torch.cat([kernel[:, h], recurrent[:, h]]))
        if bias is not None:
            input_bias, recurrent_bias = (bias[0], bias[1]) if reset_after else (bias, torch.zeros_like(bias))
            cell.gates["bias"].copy_(torch.cat([input_bias[r] + recurrent_bias[r], input_bias[z] + recurrent_bias[z]]))
            if reset_after:
                cell.candidate["input_projection"]["bias"].copy_(input_bias[h])
                cell.candidate["hidden_projection"]["bias"].copy_(recurrent_bias[h])
            else:
                cell.candidate["bias"].copy_(input_bias[h])
    return cell


# ---------------------------------------------------------------------------------------------
# the API


def keras_layer_names(path: str | Path) -> list[str]:
    """The weights paths of the recurrent layers in a Keras ``.weights.h5`` file or ``.keras``
    archive (``lstm``, ``gru_1``, ``bidirectional/forward_layer``, ...), sorted."""
    data = read_archive(path)[1] if is_archive(path) else None
    with Weights(path, data) as weights:
        return weights.names()


def _layer_from_entry(path_in_file: str, name: str, entry: Any, weights: Weights, where: str) -> KerasRNN:
    if entry.get("class_name") == "Bidirectional":
        config = entry.get("config")
        if not isinstance(config, dict):
            raise FormatError(f"{where}: Bidirectional without a config")
        merge_mode = config.get("merge_mode", "concat")
        if merge_mode not in _MERGE_MODES:
            raise FormatError(f"{where}: merge_mode {merge_mode!r}, expected one of {list(_MERGE_MODES)}")
        forward_entry = config.get("layer")
        backward_entry = config.get("backward_layer", forward_entry)
        forward = _layer_from_entry(f"{path_in_file}/forward_layer", f"{name}/forward_layer", forward_entry,
                                    weights, f"{where}/forward_layer")
        backward = _layer_from_entry(f"{path_in_file}/backward_layer", f"{name}/backward_layer", backward_entry,
                                     weights, f"{where}/backward_layer")
        if "backward_layer" not in config:  # Keras builds it from the forward layer, reversed
            backward = replace(backward, go_backwards=not forward.go_backwards)
        if forward.go_backwards == backward.go_backwards:
            raise FormatError(f"{where}: the forward and backward layers have the same go_backwards")
        return KerasRNN(name, forward.kind, forward.cell, forward.go_backwards, forward.return_sequences,
                        forward.return_state, forward.stateful, backward, merge_mode, entry)
    spec = _spec_from_config(entry, where)
    saved = weights.saved_name(path_in_file)
    own_name = entry["config"].get("name")
    if saved is not None and isinstance(own_name, str) and saved != own_name:
        raise FormatError(f"{where}: the weights at layers/{path_in_file} belong to layer {saved!r}, "
                          f"not {own_name!r}: config.json and model.weights.h5 disagree")
    cell = _cell(spec, weights, path_in_file, where)
    return KerasRNN(name, spec.kind, cell, spec.go_backwards, spec.return_sequences, spec.return_state,
                    spec.stateful, config=entry)


def _loadable(entry: Any) -> bool:
    """An ``LSTM``/``GRU`` entry, or an ``RNN``/``Bidirectional`` over one."""
    class_name = entry.get("class_name")
    config = entry.get("config")
    if class_name in ("LSTM", "GRU"):
        return True
    if class_name == "RNN" and isinstance(config, dict) and isinstance(config.get("cell"), dict):
        return config["cell"].get("class_name") in ("LSTMCell", "GRUCell")
    if class_name == "Bidirectional" and isinstance(config, dict) and isinstance(config.get("layer"), dict):
        return _loadable(config["layer"])
    return False


def load_keras_model(path: str | Path) -> dict[str, KerasRNN]:
    """Every ``LSTM``/``GRU`` layer of a ``.keras`` archive (also inside ``Bidirectional``, an
    ``RNN`` over an ``LSTMCell``/``GRUCell``, and nested models), keyed by the layer's name, in
    the model's order; other layers are left out (``load_keras_layer`` on one says why)."""
    if not is_archive(path):
        raise FormatError(f"{path}: not a .keras archive (a zip); for a .weights.h5 file use load_keras_layer")
    config, data = read_archive(path)
    found: dict[str, KerasRNN] = {}
    entries = _model_layers(config, str(path))
    with Weights(path, data) as weights:
        for path_in_file, name, entry in entries:
            if _loadable(entry):
                found[name] = _layer_from_entry(path_in_file, name, entry, weights, f"{path}: layer {name!r}")
    return found


def load_keras_layer(
    path: str | Path,
    layer: str,
    kind: str | None = None,
    *,
    activation: Activation | None = None,
    recurrent_activation: Activation | None = None,
    use_bias: bool | None = None,
    reset_after: bool | None = None,
    go_backwards: bool | None = None,
    return_sequences: bool | None = None,
    return_state: bool | None = None,
    merge_mode: str | None = "concat",
) -> KerasRNN:
    """One Keras ``LSTM``/``GRU`` (or ``Bidirectional``) layer as a :class:`KerasRNN`.

    From a ``.keras`` archive, ``layer`` is the layer's name (or its weights path, see
    :func:`keras_layer_names`) and everything else comes from the file: passing an option
    raises. From a ``.weights.h5`` file, ``layer`` is the weights path (``"lstm"``,
    ``"gru_1"``; ``"bidirectional"`` for both halves of a Bidirectional layer, with
    ``merge_mode``), ``kind`` is ``"lstm"`` or ``"gru"``, and the options default to Keras 3's:
    ``activation="tanh"``, ``recurrent_activation="sigmoid"`` (the cells' ``gate_activation``;
    a name or a callable), ``use_bias`` and a GRU's ``reset_after`` as the weights' shapes say
    (given, they must agree; a bias-free GRU is ``reset_after=True`` unless told), and the run
    flags ``False``.
    """
    if kind is not None and kind not in ("lstm", "gru"):
        raise ValueError(f"kind must be 'lstm' or 'gru', got {kind!r}")
    options = {"activation": activation, "recurrent_activation": recurrent_activation, "use_bias": use_bias,
               "reset_after": reset_after, "go_backwards": go_backwards, "return_sequences": return_sequences,
               "return_state": return_state}
    if is_archive(path):
        given = [key for key, value in options.items() if value is not None]
        if given or merge_mode != "concat":
            raise ValueError(f"{path}: a .keras archive says what its layers are; drop {given or ['merge_mode']}")
        config, data = read_archive(path)
        entries = _model_layers(config, str(path))
        with Weights(path, data) as weights:
            match = [e for e in entries if e[1] == layer] or [e for e in entries if e[0] == layer]
            if not match:
                for path_in_file, name, entry in entries:  # a half of a Bidirectional layer
                    for half in ("forward_layer", "backward_layer"):
                        if layer in (f"{name}/{half}", f"{path_in_file}/{half}") and \
                                entry.get("class_name") == "Bidirectional":
                            both = _layer_from_entry(path_in_file, name, entry, weights, f"{path}: layer {name!r}")
                            picked = both.backward if half == "backward_layer" else both
                            assert picked is not None
                            return _check_kind(replace(picked, name=layer, backward=None), kind, path)
                raise ValueError(f"{path}: no layer named {layer!r}; it holds {[name for _, name, _ in entries]}")
            path_in_file, name, entry = match[0]
            return _check_kind(_layer_from_entry(path_in_file, name, entry, weights, f"{path}: layer {name!r}"),
                               kind, path)
    if kind is None:
        raise ValueError(f"{path}: a .weights.h5 file does not say what its layers are: give kind='lstm' or 'gru'")
    if merge_mode not in _MERGE_MODES:
        raise ValueError(f"merge_mode must be one of {list(_MERGE_MODES)}, got {merge_mode!r}")
    with Weights(path) as weights:
        names = weights.names()
        where = f"{path}: layer {layer!r}"
        if layer not in names and f"{layer}/forward_layer" in names and f"{layer}/backward_layer" in names:
            forward = _bare(weights, f"{layer}/forward_layer", kind, options, where, False)
            backward = _bare(weights, f"{layer}/backward_layer", kind, options, where, True)
            return KerasRNN(layer, kind, forward.cell, False, forward.return_sequences, forward.return_state,
                            False, backward, merge_mode)
        if layer not in names:
            raise ValueError(f"{path}: no recurrent layer named {layer!r}; it holds {names}")
        return _bare(weights, layer, kind, options, where, False)


def _bare(weights: Weights, layer: str, kind: str, options: dict[str, Any], where: str, backwards: bool) -> KerasRNN:
    spec = _Spec(
        kind=kind,
        activation=_activation("tanh" if options["activation"] is None else options["activation"], "activation",
                               where),
        recurrent_activation=_activation(
            "sigmoid" if options["recurrent_activation"] is None else options["recurrent_activation"],
            "recurrent_activation", where),
        use_bias=options["use_bias"],
        reset_after=options["reset_after"],
    )
    go_backwards = bool(options["go_backwards"]) != backwards
    return KerasRNN(layer, kind, _cell(spec, weights, layer, where), go_backwards, bool(options["return_sequences"]),
                    bool(options["return_state"]))


def _check_kind(result: KerasRNN, kind: str | None, path: str | Path) -> KerasRNN:
    if kind is not None and kind != result.kind:
        raise ValueError(f"{path}: layer {result.name!r} is a {result.kind.upper()}, not kind={kind!r}")
    return result


def load_keras_rnn(path: str | Path, layer: str, kind: str | None = None, **options: Any) -> Cell:
    """The rnnkit cell computing what the Keras ``LSTM``/``GRU`` layer ``layer`` computes, from
    a ``.weights.h5`` file (``kind`` ``"lstm"``/``"gru"`` and :func:`load_keras_layer`'s
    options) or a ``.keras`` archive. A layer the cell alone does not represent
    (``go_backwards``, ``Bidirectional``) raises: use :func:`load_keras_layer`."""
    loaded = load_keras_layer(path, layer, kind, **options)
    if loaded.bidirectional or loaded.go_backwards:
        what = "a Bidirectional layer" if loaded.bidirectional else "go_backwards=True"
        raise ValueError(f"{path}: layer {layer!r} is {what}, which a cell alone does not run; "
                         "use load_keras_layer, whose result runs it as Keras does")
    return loaded.cell

