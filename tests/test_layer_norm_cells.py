"""The layer-norm LSTMs (``LayerNormBasicLSTMCell``, ``LayerNormLSTMCell``): their step against a
numpy transcription of TF 1.15 (forward and gradients, float64), and the fused CPU layer (compiled
step loops and their torch twins) against the step, forward and gradients, float64 and float32."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.contrib.layer_norm_cells import LayerNormBasicLSTMCell, LayerNormLSTMCell
from rnnkit.fused import layer_norm_lstm as fused_layer_norm
from rnnkit.fused import select_plan

from .contrib_reference import layer_norm_cells as ref
from .contrib_reference.numeric import numeric_gradients, weighted_sum
from .test_native import STEPS_ULPS, assert_rounding_close

BATCH, STEPS, DEPTH, UNITS = 3, 4, 3, 5
LENGTHS = np.array([4, 1, 3])

BASIC_CONFIGS = {
    "basic": {},
    "basic forget_bias 0.3, gain 0.8, shift 0.1": dict(forget_bias=0.3, norm_gain=0.8, norm_shift=0.1),
    "basic without layer norm": dict(layer_norm=False),
}
FULL_CONFIGS = {
    "norm": dict(layer_norm=True),
    "norm peepholes": dict(layer_norm=True, use_peepholes=True),
    "norm clip": dict(layer_norm=True, cell_clip=0.4),
    "norm projection clip": dict(layer_norm=True, num_proj=4, proj_clip=0.3),
    "norm everything": dict(layer_norm=True, use_peepholes=True, cell_clip=0.6, num_proj=4, forget_bias=0.5),
    "without layer norm, peepholes": dict(use_peepholes=True),
}


def _make(kind: str, options: dict, dtype: torch.dtype = torch.float64, seed: int = 0) -> rk.RNNCell:
    cls = LayerNormBasicLSTMCell if kind == "basic" else LayerNormLSTMCell
    cell = cls(UNITS, **options, input_size=DEPTH, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from the initial gains 1 and shifts 0, so that each weight matters
        for param in cell.parameters():
            param.add_(0.4 * torch.randn(param.shape, generator=generator, dtype=dtype))
    return cell


def _numpy_step(kind: str, options: dict):
    """The transcription's step for a cell built with ``options``: ``(weights, x, c, h, t)``."""
    if kind == "basic":
        keys = ("forget_bias", "layer_norm")
        kwargs = {("layer_norm_on" if k == "layer_norm" else k): v for k, v in options.items() if k in keys}
        return functools.partial(ref.layer_norm_basic_lstm_step, **kwargs)
    kwargs = {("layer_norm_on" if k == "layer_norm" else k): v for k, v in options.items()}
    return functools.partial(ref.layer_norm_lstm_step, **kwargs)


def _inputs(dtype: torch.dtype, hidden: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, STEPS, DEPTH, generator=generator, dtype=dtype)
    c0 = torch.randn(BATCH, UNITS, generator=generator, dtype=dtype)
    h0 = torch.randn(BATCH, hidden, generator=generator, dtype=dtype)
    return x, c0, h0


def _all_configs():
    return [("basic", o) for o in BASIC_CONFIGS.values()] + [("full", o) for o in FULL_CONFIGS.values()]


CONFIG_IDS = list(BASIC_CONFIGS) + list(FULL_CONFIGS)


@pytest.mark.parametrize(("kind", "options"), _all_configs(), ids=CONFIG_IDS)
def test_the_step_is_tf_s_math_forward_and_gradients(kind: str, options: dict) -> None:
    cell = _make(kind, options)
    x, c0, h0 = _inputs(torch.float64, cell.output_size)
    names = [name.split("/", 1)[1] for name in rk.tf_variables(cell, scope=None)]  # relative to the cell
    params = dict(zip(names, cell.parameters(), strict=True))
    step = _numpy_step(kind, options)

    def numpy_run(arrays):
        weights = {name: arrays[name] for name in names}
        out, (c, h) = ref.unroll(
            lambda xt, c, h, t: step(weights, xt, c, h), arrays["x"], (arrays["c0"], arrays["h0"]), LENGTHS
        )
        return out, c, h

    arrays = {"x": x.numpy(), "c0": c0.numpy(), "h0": h0.numpy(), **{n: p.detach().numpy() for n, p in params.items()}}
    expected = numpy_run(arrays)
    leaves = [x.requires_grad_(), c0.requires_grad_(), h0.requires_grad_()]
    out, state = rk.dynamic_rnn(
        cell, x, sequence_length=torch.from_numpy(LENGTHS), initial_state=rk.LSTMStateTuple(c0, h0), backend="reference"
    )
    for got, want, what in zip((out, state.c, state.h), expected, ("outputs", "final c", "final h")):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-13, err_msg=what)

    generator = np.random.default_rng(2)
    loss_weights = [generator.standard_normal(e.shape) for e in expected]
    loss = sum((t * torch.from_numpy(w)).sum() for t, w in zip((out, state.c, state.h), loss_weights))
    used = [
        (name, p) for name, p in params.items() if not (name == "bias" and options.get("layer_norm", kind == "basic"))
    ]
    grads = torch.autograd.grad(loss, [*leaves, *(p for _, p in used)])
    wanted = numeric_gradients(
        lambda a: weighted_sum(list(numpy_run({**arrays, **a})), loss_weights),
        {k: arrays[k] for k in ["x", "c0", "h0", *(n for n, _ in used)]},
    )
    for (name, want), got in zip(wanted.items(), grads, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-8, err_msg=f"gradient of {name}")


def test_tf_names_shapes_and_creation_order() -> None:
    basic = LayerNormBasicLSTMCell(UNITS, input_size=DEPTH)
    norms = [f"{s}/{w}" for s in ("input", "transform", "forget", "output", "state") for w in ("gamma", "beta")]
    assert {n: tuple(p.shape) for n, p in rk.tf_variables(basic).items()} == {
        "rnn/layer_norm_basic_lstm_cell/kernel": (DEPTH + UNITS, 4 * UNITS),
        **{f"rnn/layer_norm_basic_lstm_cell/{n}": (UNITS,) for n in norms},
    }
    assert "rnn/layer_norm_basic_lstm_cell/bias" in rk.tf_variables(LayerNormBasicLSTMCell(UNITS, layer_norm=False))
    full = LayerNormLSTMCell(UNITS, use_peepholes=True, num_proj=2, layer_norm=True, input_size=DEPTH)
    assert {n: tuple(p.shape) for n, p in rk.tf_variables(full).items()} == {
        "rnn/layer_norm_lstm_cell/kernel": (DEPTH + 2, 4 * UNITS),
        "rnn/layer_norm_lstm_cell/bias": (4 * UNITS,),  # created though not added (TF's code)
        **{f"rnn/layer_norm_lstm_cell/w_{g}_diag": (UNITS,) for g in "fio"},
        **{f"rnn/layer_norm_lstm_cell/{n}": (UNITS,) for n in norms},
        "rnn/layer_norm_lstm_cell/projection/kernel": (UNITS, 2),
    }
    assert (
        [spec.name for spec in full._variable_specs]
        == [  # TF's creation order
            "kernel",
            "bias",
            *norms[:8],
            "w_f_diag",
            "w_i_diag",
            "w_o_diag",
            *norms[8:],
            "projection/kernel",
        ]
    )
    assert not any("gamma" in n for n in rk.tf_variables(LayerNormLSTMCell(UNITS)))  # layer_norm=False default


def test_initial_values_and_lazy_load_from_tf_arrays() -> None:
    cell = LayerNormBasicLSTMCell(UNITS, norm_gain=0.5, norm_shift=0.25, input_size=DEPTH)
    assert torch.all(cell.input["gamma"] == 0.5) and torch.all(cell.state["beta"] == 0.25)
    trained = _make("full", FULL_CONFIGS["norm everything"])
    arrays = {name: p.detach().numpy() for name, p in rk.tf_variables(trained, "rnn").items()}
    lazy = LayerNormLSTMCell(UNITS, use_peepholes=True, cell_clip=0.6, num_proj=4, forget_bias=0.5, layer_norm=True)
    rk.load_tf_variables(lazy, arrays, "rnn")
    x, c0, h0 = _inputs(torch.float64, 4)
    state = rk.LSTMStateTuple(c0, h0)
    torch.testing.assert_close(
        rk.dynamic_rnn(lazy, x, initial_state=state)[0],
        rk.dynamic_rnn(trained, x, initial_state=state)[0],
        rtol=0,
        atol=0,
    )
    copy = LayerNormLSTMCell(UNITS, use_peepholes=True, cell_clip=0.6, num_proj=4, forget_bias=0.5, layer_norm=True)
    copy.load_state_dict(trained.state_dict())
    torch.testing.assert_close(copy.input["gamma"], trained.input["gamma"], rtol=0, atol=0)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="dropout_keep_prob"):
        LayerNormBasicLSTMCell(4, dropout_keep_prob=0.0)
    with pytest.raises(TypeError, match="dropout_prob_seed"):
        LayerNormBasicLSTMCell(4, dropout_prob_seed=1.5)
    with pytest.raises(ValueError, match="num_units"):
        LayerNormLSTMCell(0)
    with pytest.raises(TypeError, match="norm_gain"):
        LayerNormLSTMCell(4, layer_norm=True, norm_gain="one")
    with pytest.raises(ValueError, match="depth"):
        LayerNormLSTMCell(4, input_size=3)(torch.zeros(2, 5), rk.LSTMStateTuple(torch.zeros(2, 4), torch.zeros(2, 4)))


# ---- the fused layer against the step


@pytest.fixture(params=["compiled", "torch twins"])
def loops(request, monkeypatch) -> str:
    if request.param == "torch twins":
        monkeypatch.setattr(fused_layer_norm, "kernels", lambda: None)
    elif fused_layer_norm.kernels() is None:
        pytest.skip("the compiled kernels do not build here (no compiler)")
    return request.param


FUSED_CASES = [
    *_all_configs(),
    ("full", dict(layer_norm=True, use_peepholes=True, activation="softsign")),
    ("basic", dict(activation=torch.relu)),
]
FUSED_IDS = [*CONFIG_IDS, "norm peepholes softsign", "basic relu"]


def _run_both(cell: rk.RNNCell, dtype: torch.dtype, lengths: torch.Tensor | None, time_major: bool = False):
    """Outputs, final state and gradients of every input and weight, reference then fused."""
    x, c0, h0 = (t.to(dtype) for t in _inputs(torch.float64, cell.output_size))
    if time_major:
        x = x.transpose(0, 1).contiguous()
    results = []
    for backend in ("reference", "fused"):
        leaves = [t.detach().clone().requires_grad_() for t in (x, c0, h0)]
        out, state = rk.dynamic_rnn(
            cell,
            leaves[0],
            sequence_length=lengths,
            backend=backend,
            time_major=time_major,
            initial_state=rk.LSTMStateTuple(leaves[1], leaves[2]),
        )
        generator = torch.Generator().manual_seed(3)
        loss = sum(
            (t * torch.randn(t.shape, generator=generator, dtype=torch.float64).to(dtype)).sum() for t in (out, *state)
        )
        params = [p for p in cell.parameters()]
        grads = torch.autograd.grad(loss, [*leaves, *params], allow_unused=True)
        results.append(
            [t.detach() for t in (out, *state)]
            + [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, [*leaves, *params])]
        )
    return results


@pytest.mark.parametrize("lengths", [None, [4, 1, 3], [0, 2, 4]], ids=["full", "lengths", "with a length 0"])
@pytest.mark.parametrize(("kind", "options"), FUSED_CASES, ids=FUSED_IDS)
def test_fused_equals_the_step_float64(kind: str, options: dict, lengths, loops: str) -> None:
    cell = _make(kind, options)
    assert select_plan(cell, torch.zeros(1, 1, DEPTH, dtype=torch.float64), "fused") is not None
    lengths_t = None if lengths is None else torch.tensor(lengths)
    reference, fused = _run_both(cell, torch.float64, lengths_t)
    for k, (want, got) in enumerate(zip(reference, fused, strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12, msg=lambda m: f"result {k}: {m}")


@pytest.mark.parametrize(("kind", "options"), FUSED_CASES, ids=FUSED_IDS)
def test_fused_float32_is_within_rounding_of_float64(kind: str, options: dict, loops: str) -> None:
    """Float32, both paths: within the rounding bound of a GEMM loop over the steps (as in
    test_native), with a factor 4 for the five normalisations per step, of the float64 results."""
    cell64 = _make(kind, options)
    exact = _run_both(cell64, torch.float64, torch.tensor([4, 1, 3]), time_major=True)[0]
    cell32 = copy.deepcopy(cell64).float()
    ulps = 4 * STEPS_ULPS * ((DEPTH + UNITS) * STEPS) ** 0.5
    reference32, fused32 = _run_both(cell32, torch.float32, torch.tensor([4, 1, 3]), time_major=True)
    for k, want in enumerate(exact):
        assert_rounding_close(reference32[k], want, ulps, f"reference result {k}")
        assert_rounding_close(fused32[k], want, ulps, f"fused result {k}")


class _FixedMasks:
    """A stand-in for the cell's mask draws: rows of one fixed mask, in the order asked for (the
    reference asks [B, U] per step, the fused layer [N, U] for all packed steps at once)."""

    def __init__(self, rows: int, keep: float) -> None:
        generator = torch.Generator().manual_seed(5)
        self.masks = (torch.rand(rows, UNITS, generator=generator, dtype=torch.float64) < keep).double() / keep
        self.taken = 0

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        rows = self.masks[self.taken : self.taken + like.shape[0]]
        self.taken += like.shape[0]
        return rows.to(like.dtype)


def test_fused_recurrent_dropout_equals_the_step_with_the_same_masks(loops: str, monkeypatch) -> None:
    cell = _make("basic", dict(dropout_keep_prob=0.6))
    results = []
    for backend in ("reference", "fused"):
        monkeypatch.setattr(cell, "dropout_mask", _FixedMasks(BATCH * STEPS, 0.6))
        x, c0, h0 = (t.requires_grad_() for t in _inputs(torch.float64, UNITS))
        out, state = rk.dynamic_rnn(cell, x, initial_state=rk.LSTMStateTuple(c0, h0), backend=backend)
        grads = torch.autograd.grad((out * out.detach().cos()).sum() + state.c.sum(), [x, c0, h0, *cell.parameters()])
        results.append([out, *grads])
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


def test_dropout_masks_train_only_seeded_and_scaled() -> None:
    cell = LayerNormBasicLSTMCell(64, dropout_keep_prob=0.75, dropout_prob_seed=7, input_size=4)
    mask = cell.dropout_mask(torch.empty(200, 64, dtype=torch.float64))
    assert set(mask.unique().tolist()) <= {0.0, 1 / 0.75}
    assert abs(float((mask > 0).double().mean()) - 0.75) < 0.02  # 12800 draws: 5 standard deviations
    again = LayerNormBasicLSTMCell(64, dropout_keep_prob=0.75, dropout_prob_seed=7, input_size=4)
    torch.testing.assert_close(again.dropout_mask(torch.empty(200, 64, dtype=torch.float64)), mask, rtol=0, atol=0)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    trained = rk.dynamic_rnn(cell, x, dtype=torch.float32)[0]
    cell.eval()
    assert not cell.dropping()
    plain = LayerNormBasicLSTMCell(64, input_size=4)
    plain.load_state_dict(cell.state_dict())
    torch.testing.assert_close(
        rk.dynamic_rnn(cell, x, dtype=torch.float32)[0],
        rk.dynamic_rnn(plain, x, dtype=torch.float32)[0],
        rtol=0,
        atol=0,
    )
    assert not torch.equal(trained, rk.dynamic_rnn(plain, x, dtype=torch.float32)[0])


def test_stacks_run_fused_and_equal_the_step() -> None:
    second = LayerNormLSTMCell(UNITS, layer_norm=True, use_peepholes=True, input_size=UNITS, dtype=torch.float64)
    stack = rk.MultiRNNCell([_make("basic", {}), second])
    x = torch.randn(BATCH, STEPS, DEPTH, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    outs = [
        rk.dynamic_rnn(stack, x, dtype=torch.float64, sequence_length=torch.tensor([2, 4, 3]), backend=b)[0]
        for b in ("reference", "fused")
    ]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-11, atol=1e-12)


def test_where_the_fused_path_declines_it_says_why() -> None:
    cell = LayerNormBasicLSTMCell(UNITS, layer_norm=False, dropout_keep_prob=0.5, input_size=DEPTH)
    with pytest.raises(ValueError, match="dropout_keep_prob < 1 and layer_norm=False"):
        rk.dynamic_rnn(cell, torch.zeros(1, 2, DEPTH), dtype=torch.float32, backend="fused")
    cell.eval()  # no dropout: BasicLSTMCell's math, fused as one
    assert select_plan(cell, torch.zeros(1, 1, DEPTH), "fused") is not None
    normed = LayerNormBasicLSTMCell(UNITS, input_size=DEPTH)
    with pytest.raises(ValueError, match="CPU in float32 and float64"):
        select_plan(normed, torch.zeros(1, 1, DEPTH, dtype=torch.bfloat16), "fused")
    assert select_plan(normed, torch.zeros(1, 1, DEPTH, dtype=torch.bfloat16), "auto") is None


@pytest.mark.parametrize(("kind", "options"), FUSED_CASES, ids=FUSED_IDS)
def test_inference_saves_nothing_and_equals_training(kind: str, options: dict, loops: str) -> None:
    """Without grad mode the compiled loops keep only c, m and o (no normalised values for
    backward): the same outputs and final state as with grad mode."""
    cell = _make(kind, options)
    x, c0, h0 = _inputs(torch.float64, cell.output_size)
    state = rk.LSTMStateTuple(c0, h0)
    lengths = torch.tensor([4, 1, 3])
    trained = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state, backend="fused")
    with torch.no_grad():
        inferred = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state, backend="fused")
    assert not inferred[0].requires_grad
    for want, got in zip((trained[0], *trained[1]), (inferred[0], *inferred[1]), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)


def test_packed_gemm_switch_gives_the_same_float32_results() -> None:
    """``RNNKIT_PACKED_GEMM=0`` (read once per process) turns MKL's packed recurrent product off:
    the same outputs to float32 rounding. (16 rows x 10 steps: packed, from 128 products on.)"""
    if fused_layer_norm.kernels() is None:
        pytest.skip("the compiled kernels do not build here (no compiler)")
    script = (
        "import torch, rnnkit as rk\n"
        "cell = rk.LayerNormBasicLSTMCell(32, input_size=8)\n"
        "torch.manual_seed(0); [p.data.normal_() for p in cell.parameters()]\n"
        "x = torch.randn(16, 10, 8, generator=torch.Generator().manual_seed(1))\n"
        "print(rk.dynamic_rnn(cell, x, dtype=torch.float32, backend='fused')[0].double().sum().item())\n"
    )
    import os
    import subprocess
    import sys

    sums = []
    for flag in ("1", "0"):
        env = {**os.environ, "RNNKIT_PACKED_GEMM": flag}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        sums.append(float(done.stdout.split()[-1]))
    assert abs(sums[0] - sums[1]) <= 1e-4 * 16 * 10 * 32, sums
