"""``tf.contrib.rnn``'s layer-normalised LSTMs: ``LayerNormBasicLSTMCell`` and ``LayerNormLSTMCell``.

Both follow TensorFlow 1.15's ``contrib/rnn/python/ops/rnn_cell.py``. With gate blocks
``(i, j, f, o)`` of width ``U`` and ``LN_s(x) = gamma_s * (x - mean(x)) / sqrt(var(x) + 1e-12)
+ beta_s`` over the last axis (``tf.contrib.layers.layer_norm``, its epsilon; one ``gamma``
and ``beta`` [U] per scope ``s``)::

    z = [x, h] @ kernel                                  # no bias with layer norm
    i, j, f, o = LN_input(z_i), LN_transform(z_j), LN_forget(z_f), LN_output(z_o)
    c = sigmoid(f + forget_bias [+ w_f_diag * c_prev]) * c_prev
        + sigmoid(i [+ w_i_diag * c_prev]) * dropout(act(j))
    c = LN_state(c)
    c = clip(c, -cell_clip, cell_clip)                   # LayerNormLSTMCell, if cell_clip
    m = sigmoid(o [+ w_o_diag * c]) * act(c)
    m = clip(m @ projection/kernel, -proj_clip, proj_clip)   # LayerNormLSTMCell, if num_proj

Without layer norm (``layer_norm=False``) the bias is added to ``z`` and nothing is normalised:
``LayerNormLSTMCell`` is then ``LSTMCell``'s math, ``LayerNormBasicLSTMCell`` ``BasicLSTMCell``'s
(plus its dropout). ``LayerNormLSTMCell`` creates its ``bias`` even with layer norm and never
adds it (TF's own code), so its checkpoints have one.

The fused path runs both with layer norm on the CPU in float32 and float64 (the norms inside
the compiled step loop, backward by hand: ``rnnkit/fused/layer_norm_lstm.py``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._checks import check_keep_prob
from ..activations import Activation, resolve_activation
from ..cell_base import RNNCell
from ..cells import _check_clip, _check_number, _check_units
from ..initializers import Initializer, constant, glorot_uniform_, resolve_initializer
from ..state import LSTMStateTuple

__all__ = ["LAYER_NORM_EPSILON", "LayerNormBasicLSTMCell", "LayerNormLSTMCell", "tf_layer_norm"]

LAYER_NORM_EPSILON = 1e-12  # tf.contrib.layers.layer_norm's variance_epsilon
GATE_SCOPES = ("input", "transform", "forget", "output")  # the norms of i, j, f, o
STATE_SCOPE = "state"


def tf_layer_norm(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """``tf.contrib.layers.layer_norm`` over the last axis, in TF's order of operations
    (``nn.moments``, then ``nn.batch_normalization``): ``x * inv + (beta - mean * inv)`` with
    ``inv = rsqrt(var + 1e-12) * gamma`` and the biased variance."""
    mean = x.mean(-1, keepdim=True)
    variance = (x - mean).square().mean(-1, keepdim=True)
    inv = torch.rsqrt(variance + LAYER_NORM_EPSILON) * gamma
    return x * inv + (beta - mean * inv)


class _LayerNormLSTM(RNNCell):
    """The step both cells share; the constructors declare the weights in TF's order."""

    kernel: Tensor
    bias: Tensor
    w_f_diag: Tensor
    w_i_diag: Tensor
    w_o_diag: Tensor
    projection: nn.ParameterDict  # projection.kernel [U, P]
    activation: Callable[[Tensor], Tensor]
    num_units: int
    forget_bias: float
    layer_norm: bool
    use_peepholes: bool = False
    cell_clip: float | None = None
    num_proj: int | None = None
    proj_clip: float | None = None
    dropout_keep_prob: float = 1.0
    dropout_prob_seed: int | None = None
    # for the fused LSTM layer, which runs these cells without layer norm as LSTMCells
    state_is_tuple = True
    use_bias = True

    def __init__(self, name: str | None, dtype: torch.dtype | None, device: torch.device | str | None) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _add_norms(self, scopes: tuple[str, ...], norm_gain: float, norm_shift: float) -> None:
        for scope in scopes:
            self._add_variable(f"{scope}/gamma", (self.num_units,), constant(norm_gain))
            self._add_variable(f"{scope}/beta", (self.num_units,), constant(norm_shift))

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_proj or self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.num_units

    def norm_weights(self, scope: str) -> tuple[Tensor, Tensor]:
        """``(gamma, beta)`` of the norm under ``scope`` (``input``, ..., ``state``)."""
        norms = getattr(self, scope)
        return norms["gamma"], norms["beta"]

    def _norm(self, x: Tensor, scope: str) -> Tensor:
        return tf_layer_norm(x, *self.norm_weights(scope))

    def dropping(self) -> bool:
        """Whether the step drops candidates now: ``dropout_keep_prob < 1`` in training mode."""
        return self.training and self.dropout_keep_prob < 1.0

    def dropout_mask(self, like: Tensor) -> Tensor:
        """A fresh ``0`` or ``1 / keep_prob`` mask of ``like``'s shape, from the cell's seeded
        generator when ``dropout_prob_seed`` is given (``tf.nn.dropout``'s values)."""
        keep = self.dropout_keep_prob
        noise = torch.rand(like.shape, generator=self._generator(like.device), device=like.device)
        return (noise < keep).to(like.dtype) / keep

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.dropout_prob_seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.dropout_prob_seed)
        return self._generators[device]

    def step(self, inputs: Tensor, state: Any) -> tuple[Tensor, LSTMStateTuple]:
        c_prev, m_prev = state
        z = torch.cat([inputs, m_prev], 1) @ self.kernel
        if not self.layer_norm:
            z = z + self.bias
        i, j, f, o = z.chunk(4, dim=1)
        if self.layer_norm:
            i, j, f, o = (self._norm(block, scope) for block, scope in zip((i, j, f, o), GATE_SCOPES))
        sigmoid, act = torch.sigmoid, self.activation
        g = act(j)
        if self.dropping():
            g = g * self.dropout_mask(g)
        if self.use_peepholes:
            forget, keep = sigmoid(f + self.forget_bias + self.w_f_diag * c_prev), sigmoid(i + self.w_i_diag * c_prev)
            c = forget * c_prev + keep * g
        else:
            c = sigmoid(f + self.forget_bias) * c_prev + sigmoid(i) * g
        if self.layer_norm:
            c = self._norm(c, STATE_SCOPE)
        if self.cell_clip is not None:
            c = torch.clamp(c, -self.cell_clip, self.cell_clip)
        m = sigmoid(o + self.w_o_diag * c if self.use_peepholes else o) * act(c)
        if self.num_proj is not None:
            m = m @ self.projection["kernel"]
            if self.proj_clip is not None:
                m = torch.clamp(m, -self.proj_clip, self.proj_clip)
        return m, LSTMStateTuple(c, m)


class LayerNormBasicLSTMCell(_LayerNormLSTM):
    """TF's ``tf.contrib.rnn.LayerNormBasicLSTMCell``: a basic LSTM with layer norm on each gate
    block and on the new cell state, and recurrent dropout on the candidate (Semeniuta et al.,
    "Recurrent Dropout without Memory Loss"): ``c = sigmoid(f + forget_bias) * c_prev +
    sigmoid(i) * dropout(act(j))``, ``h = act(LN_state(c)) * sigmoid(o)`` (see the module
    docstring for the norms).

    State ``LSTMStateTuple(c [B, U], h [B, U])``; output ``h``.

    Weights, in TF's creation order, under ``layer_norm_basic_lstm_cell/``: ``kernel``
    [D+U, 4U] (Glorot-uniform), ``bias`` [4U] (zeros; only without layer norm), then
    ``input/``, ``transform/``, ``forget/``, ``output/``, ``state/`` each with ``gamma`` [U]
    (``norm_gain``) and ``beta`` [U] (``norm_shift``) (only with layer norm).

    ``dropout_keep_prob < 1`` drops ``act(j)`` with a fresh mask per step and element, scaled
    by ``1 / keep_prob``, seeded by ``dropout_prob_seed``. Unlike TF, where dropout is part of
    the graph, it applies in training mode only (``cell.eval()`` turns it off), as
    ``DropoutWrapper`` does here. ``input_size`` (deprecated and unused in TF) builds the
    weights now for inputs of that depth.
    """

    def __init__(
        self,
        num_units: int,
        forget_bias: float = 1.0,
        input_size: int | None = None,
        activation: Activation = torch.tanh,
        layer_norm: bool = True,
        norm_gain: float = 1.0,
        norm_shift: float = 0.0,
        dropout_keep_prob: float = 1.0,
        dropout_prob_seed: int | None = None,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = _check_units(num_units, "num_units")
        self.forget_bias = _check_number(forget_bias, "forget_bias")
        self.activation = resolve_activation(activation)
        self.layer_norm = bool(layer_norm)
        self.dropout_keep_prob = check_keep_prob(dropout_keep_prob, "dropout_keep_prob")
        self.dropout_prob_seed = _check_seed(dropout_prob_seed)
        self._add_variable("kernel", (self.num_units, 4 * self.num_units), glorot_uniform_, input_rows=True)
        if self.layer_norm:
            self._add_norms(
                (*GATE_SCOPES, STATE_SCOPE),
                _check_number(norm_gain, "norm_gain"),
                _check_number(norm_shift, "norm_shift"),
            )
        else:
            self._add_variable("bias", (4 * self.num_units,), constant(0.0))
        if input_size is not None:
            self.build(input_size)


class LayerNormLSTMCell(_LayerNormLSTM):
    """TF's ``tf.contrib.rnn.LayerNormLSTMCell``: ``LSTMCell`` (peepholes, cell clipping,
    projection) with optional layer norm (``layer_norm=False`` by default, as in TF: then it is
    exactly ``LSTMCell``). With layer norm each gate block is normalised before its peephole
    term and ``forget_bias`` are added, and the new cell state before it is clipped (see the
    module docstring).

    State ``LSTMStateTuple(c [B, U], m [B, P or U])``; output ``m``.

    Weights, in TF's creation order, under ``layer_norm_lstm_cell/``: ``kernel`` [D+H, 4U],
    ``bias`` [4U] (zeros; created but not added with layer norm), with layer norm
    ``input/``, ``transform/``, ``forget/``, ``output/`` ``gamma``/``beta`` [U], then
    ``w_f_diag``, ``w_i_diag``, ``w_o_diag`` [U] (``use_peepholes``), ``state/gamma``,
    ``state/beta`` [U] (layer norm), ``projection/kernel`` [U, P] (``num_proj``).
    ``initializer`` (default Glorot-uniform) applies to the kernels and peepholes.
    """

    def __init__(
        self,
        num_units: int,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        initializer: Initializer = None,
        num_proj: int | None = None,
        proj_clip: float | None = None,
        forget_bias: float = 1.0,
        activation: Activation = None,
        layer_norm: bool = False,
        norm_gain: float = 1.0,
        norm_shift: float = 0.0,
        reuse: bool | None = None,
        *,
        name: str | None = None,
        dtype: torch.dtype | None = None,
        input_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype, device=device)
        self.num_units = _check_units(num_units, "num_units")
        self.use_peepholes = bool(use_peepholes)
        self.cell_clip = _check_clip(cell_clip, "cell_clip")
        self.num_proj = None if num_proj is None else _check_units(num_proj, "num_proj")
        self.proj_clip = _check_clip(proj_clip, "proj_clip")
        self.forget_bias = _check_number(forget_bias, "forget_bias")
        self.activation = resolve_activation(activation)
        self.layer_norm = bool(layer_norm)
        gain, shift = _check_number(norm_gain, "norm_gain"), _check_number(norm_shift, "norm_shift")
        weight_init = resolve_initializer(initializer, glorot_uniform_, "initializer")
        units, hidden = self.num_units, self.num_proj or self.num_units
        self._add_variable("kernel", (hidden, 4 * units), weight_init, input_rows=True)
        self._add_variable("bias", (4 * units,), constant(0.0))
        if self.layer_norm:
            self._add_norms(GATE_SCOPES, gain, shift)
        if self.use_peepholes:
            for gate in ("f", "i", "o"):
                self._add_variable(f"w_{gate}_diag", (units,), weight_init)
        if self.layer_norm:
            self._add_norms((STATE_SCOPE,), gain, shift)
        if self.num_proj is not None:
            self._add_variable("projection/kernel", (units, hidden), weight_init)
        if input_size is not None:
            self.build(input_size)


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"dropout_prob_seed must be an int or None, got {type(seed).__name__}")
    return seed
