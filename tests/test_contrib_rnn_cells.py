"""tf.contrib.rnn's NASCell, UGRNNCell, IntersectionRNNCell, IndRNNCell, IndyGRUCell and
IndyLSTMCell against the numpy transcription of TF 1.15's code (forward and gradients, in
float64, under dynamic_rnn with sequence_length), TF's variable names, TF's own test numbers,
building, loading and argument errors."""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.contrib import (
    IndRNNCell,
    IndyGRUCell,
    IndyLSTMCell,
    IntersectionRNNCell,
    NASCell,
    UGRNNCell,
)
from tests.contrib_reference import rnn_cells as ref
from tests.contrib_reference.numeric import numeric_gradients, weighted_sum

BATCH, STEPS, DEPTH, UNITS = 3, 3, 4, 3
LENGTHS = [3, 2, 0]  # a full row, a short one, an empty one


@dataclass
class Case:
    """A cell configuration, its TF variables (relative names -> shapes, in TF's creation
    order) and the reference step taking those variables."""

    make: Callable[[], Any]
    scope: str
    shapes: dict[str, tuple[int, ...]]
    state: Any  # leaf widths: an int or a tuple (c, h)
    step: Callable[[np.ndarray, Any, dict[str, np.ndarray]], tuple]
    depth: int = DEPTH


U = UNITS
CASES = {
    "nas": Case(
        lambda: NASCell(U),
        "nas_cell",
        {"recurrent_kernel": (U, 8 * U), "kernel": (DEPTH, 8 * U)},
        (U, U),
        lambda x, s, w: ref.nas_step(x, s, w, None, False),
    ),
    "nas_proj_bias": Case(
        lambda: NASCell(U, num_proj=2, use_bias=True),
        "nas_cell",
        {"recurrent_kernel": (2, 8 * U), "kernel": (DEPTH, 8 * U), "bias": (8 * U,), "projection_weights": (U, 2)},
        (U, 2),
        lambda x, s, w: ref.nas_step(x, s, w, 2, True),
    ),
    "ugrnn": Case(
        lambda: UGRNNCell(U, forget_bias=0.5),
        "ugrnn_cell",
        {"kernel": (DEPTH + U, 2 * U), "bias": (2 * U,)},
        U,
        lambda x, s, w: ref.ugrnn_step(x, s, w, 0.5),
    ),
    "intersection": Case(
        lambda: IntersectionRNNCell(U, forget_bias=0.5),
        "intersection_rnn_cell",
        {"kernel": (2 * U, 4 * U), "bias": (4 * U,)},
        U,
        lambda x, s, w: ref.intersection_step(x, s, w, U, 0.5),
        depth=U,
    ),
    "intersection_in_proj": Case(
        lambda: IntersectionRNNCell(U, num_in_proj=U, y_activation="tanh"),
        "intersection_rnn_cell",
        {"in_projection/kernel": (DEPTH, U), "in_projection/bias": (U,), "kernel": (2 * U, 4 * U), "bias": (4 * U,)},
        U,
        lambda x, s, w: ref.intersection_step(x, s, w, U, 1.0, np.tanh),
    ),
    "indrnn": Case(
        lambda: IndRNNCell(U),
        "ind_rnn_cell",
        {"kernel_w": (DEPTH, U), "kernel_u": (1, U), "bias": (U,)},
        U,
        ref.indrnn_step,
    ),
    "indygru": Case(
        lambda: IndyGRUCell(U),
        "indy_gru_cell",
        {
            "gates/kernel_w": (DEPTH, 2 * U),
            "gates/kernel_u": (1, 2 * U),
            "gates/bias": (2 * U,),
            "candidate/kernel": (DEPTH, U),
            "candidate/kernel_u": (1, U),
            "candidate/bias": (U,),
        },
        U,
        ref.indygru_step,
    ),
    "indylstm": Case(
        lambda: IndyLSTMCell(U, forget_bias=0.5),
        "indy_lstm_cell",
        {"kernel_w": (DEPTH, 4 * U), "kernel_u": (1, 4 * U), "bias": (4 * U,)},
        (U, U),
        lambda x, s, w: ref.indylstm_step(x, s, w, 0.5),
    ),
}


def _random_problem(case: Case, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs ``x``, initial state leaves ``s0``(, ``s1``) and weights ``w:<TF name>``."""
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.normal(size=(BATCH, STEPS, case.depth))}
    widths = case.state if isinstance(case.state, tuple) else (case.state,)
    for k, width in enumerate(widths):
        arrays[f"s{k}"] = rng.normal(scale=0.5, size=(BATCH, width))
    for name, shape in case.shapes.items():
        arrays[f"w:{name}"] = rng.normal(scale=0.5, size=shape)
    return arrays


def _reference_run(case: Case, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    weights = {name[2:]: value for name, value in arrays.items() if name.startswith("w:")}
    state = (arrays["s0"], arrays["s1"]) if isinstance(case.state, tuple) else arrays["s0"]
    outputs, final = ref.unroll(lambda x, s: case.step(x, s, weights), arrays["x"], state, LENGTHS)
    return outputs, list(final) if isinstance(final, tuple) else [final]


def _loaded_cell(case: Case, arrays: dict[str, np.ndarray]) -> Any:
    """A lazy cell built by ``load_tf_variables`` from TF-named float64 arrays."""
    cell = case.make()
    assert not cell.built
    rk.load_tf_variables(
        cell, {f"rnn/{case.scope}/{name[2:]}": value for name, value in arrays.items() if name.startswith("w:")}
    )
    assert cell.built and cell.input_size == case.depth
    return cell


def _torch_state(case: Case, tensors: list[torch.Tensor]) -> Any:
    return rk.LSTMStateTuple(*tensors) if isinstance(case.state, tuple) else tensors[0]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_tf_variable_names_and_shapes(case_id: str) -> None:
    case = CASES[case_id]
    cell = case.make()
    rk.dynamic_rnn(cell, torch.randn(2, 2, case.depth))
    names = {name: tuple(param.shape) for name, param in rk.tf_variables(cell, "rnn").items()}
    assert names == {f"rnn/{case.scope}/{name}": shape for name, shape in case.shapes.items()}


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_forward_and_gradients_match_the_tf_transcription(case_id: str) -> None:
    case = CASES[case_id]
    arrays = _random_problem(case, seed=sorted(CASES).index(case_id))
    ref_outputs, ref_final = _reference_run(case, arrays)

    cell = _loaded_cell(case, arrays)
    leaves = {name: torch.tensor(value, requires_grad=True) for name, value in arrays.items() if name[0] in "xs"}
    state = _torch_state(case, [leaves[name] for name in sorted(leaves) if name.startswith("s")])
    outputs, final = rk.dynamic_rnn(cell, leaves["x"], sequence_length=LENGTHS, initial_state=state)
    final_leaves = rk.flatten_state(final)
    torch.testing.assert_close(outputs.detach().numpy(), ref_outputs, rtol=1e-12, atol=1e-12)
    for got, expected in zip(final_leaves, ref_final, strict=True):
        torch.testing.assert_close(got.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # TF's sequence_length: zeros past each length, the state carried (length 0: the initial state)
    assert not outputs[1, 2:].any() and not outputs[2].any()
    for got, initial in zip(final_leaves, rk.flatten_state(state)):
        assert torch.equal(got[2], initial[2])

    rng = np.random.default_rng(100)
    loss_weights = [rng.normal(size=ref_outputs.shape)] + [rng.normal(size=leaf.shape) for leaf in ref_final]
    loss = sum((t * torch.tensor(w)).sum() for t, w in zip([outputs, *final_leaves], loss_weights))
    params = {f"w:{name.split('/', 2)[2]}": p for name, p in rk.tf_variables(cell, "rnn").items()}
    grads = torch.autograd.grad(loss, [*leaves.values(), *params.values()])
    expected = numeric_gradients(lambda a: weighted_sum([*_flat(_reference_run(case, a))], loss_weights), arrays)
    for name, grad in zip([*leaves, *params], grads, strict=True):
        torch.testing.assert_close(grad.numpy(), expected[name], rtol=1e-7, atol=1e-9, msg=name)


def _flat(run: tuple[np.ndarray, list[np.ndarray]]) -> list[np.ndarray]:
    return [run[0], *run[1]]


@pytest.mark.parametrize("proj, output, c", [
    # TF's contrib rnn_cell_test.py testNASCell / testNASCellProj: every variable 0.5 (the
    # scope's initializer), inputs [[1]*4, [2]*4, [3]*4], state 0.1
    (None, [0.576751, 0.618936, 0.627393], [0.71579772, 0.78041625, 0.79457647]),
    (5, [1.697418, 1.840037, 1.873985], [0.69855207, 0.77073824, 0.78973997]),
])  # fmt: skip
def test_nas_cell_reproduces_tf_test_numbers(proj: int | None, output: list[float], c: list[float]) -> None:
    cell = NASCell(6, num_proj=proj, input_size=4)
    with torch.no_grad():
        for param in cell.parameters():
            param.fill_(0.5)
    x = torch.tensor([[1.0] * 4, [2.0] * 4, [3.0] * 4])
    out, state = cell(x, rk.LSTMStateTuple(torch.full((3, 6), 0.1), torch.full((3, proj or 6), 0.1)))
    assert list(out.shape) == [3, proj or 6] and isinstance(state, rk.LSTMStateTuple)
    torch.testing.assert_close(out, torch.tensor(output)[:, None].expand_as(out), atol=2e-6, rtol=0)
    torch.testing.assert_close(state.c, torch.tensor(c)[:, None].expand(3, 6), atol=2e-6, rtol=0)
    assert state.h is out


def test_indy_lstm_names_in_a_multi_rnn_cell_follow_tf() -> None:
    # TF's testIndyLSTMCell: MultiRNNCell of two IndyLSTMCell(2) under "root"
    cell = rk.MultiRNNCell([IndyLSTMCell(2) for _ in range(2)])
    state = cell.zero_state(1)
    cell(torch.ones(1, 2), state)
    assert list(rk.tf_variables(cell, "root")) == [
        f"root/multi_rnn_cell/cell_{k}/indy_lstm_cell/{name}"
        for k in (0, 1)
        for name in ("kernel_w", "kernel_u", "bias")
    ]


def test_name_argument_is_the_scope() -> None:
    assert list(rk.tf_variables(IndRNNCell(2, name="ind", input_size=3))) == [
        "rnn/ind/kernel_w", "rnn/ind/kernel_u", "rnn/ind/bias"
    ]  # fmt: skip
    assert list(rk.tf_variables(NASCell(2, name="nas", input_size=3))) == ["rnn/nas/recurrent_kernel", "rnn/nas/kernel"]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_state_dict_round_trip_builds_a_lazy_cell(case_id: str) -> None:
    case = CASES[case_id]
    torch.manual_seed(5)
    cell = case.make()
    x = torch.randn(BATCH, STEPS, case.depth)
    expected, _ = rk.dynamic_rnn(cell, x)
    buffer = io.BytesIO()
    torch.save(cell.state_dict(), buffer)
    buffer.seek(0)
    fresh = case.make()
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.built and fresh.input_size == case.depth
    assert torch.equal(rk.dynamic_rnn(fresh, x)[0], expected)
    assert torch.equal(pickle.loads(pickle.dumps(cell))(x[:, 0], cell.zero_state(BATCH))[0], expected[:, 0])


def _glorot_limit(shape: tuple[int, ...]) -> float:
    return math.sqrt(6.0 / (shape[0] + shape[1]))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_eager_build_and_tf_default_initializers(case_id: str) -> None:
    case = CASES[case_id]
    torch.manual_seed(6)
    cell = case.make()
    cell.build(case.depth)
    for name, param in rk.tf_variables(cell, "").items():
        name = name.split("/", 1)[1]
        assert tuple(param.shape) == case.shapes[name]
        if name.endswith("kernel_u"):  # TF: random_uniform_initializer(-1, 1)
            assert param.abs().max() <= 1 and param.std() > 0.1
        elif name == "gates/bias":  # IndyGRUCell, as GRUCell
            assert torch.equal(param, torch.ones_like(param))
        elif name.endswith("bias"):
            assert torch.equal(param, torch.zeros_like(param))
        else:  # TF's default: Glorot-uniform on the whole shape
            assert param.abs().max() <= _glorot_limit(case.shapes[name]) and param.std() > 0


def test_initializer_arguments_reach_what_tf_gives_them() -> None:
    ugrnn = UGRNNCell(3, initializer=0.5, input_size=2)
    assert torch.equal(ugrnn.kernel, torch.full((5, 6), 0.5)) and not ugrnn.bias.any()
    plus = IntersectionRNNCell(3, 3, 0.25, input_size=2)
    assert torch.equal(plus.in_projection.kernel, torch.full((2, 3), 0.25))
    assert torch.equal(plus.kernel, torch.full((6, 12), 0.25)) and not plus.bias.any()
    assert not plus.in_projection.bias.any()
    gru = IndyGRUCell(3, kernel_initializer=0.5, bias_initializer=0.25, input_size=2)
    for kernel in (gru.gates.kernel_w, gru.candidate.kernel):
        assert torch.equal(kernel, torch.full_like(kernel, 0.5))
    for bias in (gru.gates.bias, gru.candidate.bias):
        assert torch.equal(bias, torch.full_like(bias, 0.25))
    for vector in (gru.gates.kernel_u, gru.candidate.kernel_u):  # not kernel_initializer's
        assert not torch.equal(vector, torch.full_like(vector, 0.5))
    lstm = IndyLSTMCell(3, kernel_initializer=torch.nn.init.ones_, bias_initializer=2.0, input_size=2)
    assert torch.equal(lstm.kernel_w, torch.ones(2, 12)) and torch.equal(lstm.bias, torch.full((12,), 2.0))


def test_intersection_projects_only_inputs_of_another_depth() -> None:
    torch.manual_seed(7)
    # num_in_proj set, inputs already num_units wide: TF creates no in_projection
    projecting = IntersectionRNNCell(3, num_in_proj=3)
    plain = IntersectionRNNCell(3)
    x, h = torch.randn(2, 3), torch.randn(2, 3)
    out, _ = projecting(x, h)
    assert not projecting.projects_inputs and list(rk.tf_variables(projecting)) == [
        "rnn/intersection_rnn_cell/kernel", "rnn/intersection_rnn_cell/bias"
    ]  # fmt: skip
    plain.load_state_dict(projecting.state_dict())
    assert torch.equal(plain(x, h)[0], out)
    # num_in_proj's value is only a switch: the projection is always to num_units
    odd = IntersectionRNNCell(3, num_in_proj=7, input_size=5)
    assert list(odd.in_projection.kernel.shape) == [5, 3] and odd.output_size == 3
    # without num_in_proj, other depths are an error (at the first call or at build)
    with pytest.raises(ValueError, match="num_in_proj"):
        IntersectionRNNCell(3)(torch.randn(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="num_in_proj"):
        IntersectionRNNCell(3, input_size=4)


def test_intersection_lazy_load_without_in_projection_needs_input_size() -> None:
    arrays = {"rnn/intersection_rnn_cell/kernel": np.ones((6, 12)), "rnn/intersection_rnn_cell/bias": np.zeros(12)}
    with pytest.raises(ValueError, match="in_projection/kernel"):
        rk.load_tf_variables(IntersectionRNNCell(3, num_in_proj=3), arrays)
    cell = IntersectionRNNCell(3, num_in_proj=3, input_size=3)
    rk.load_tf_variables(cell, arrays)
    assert torch.equal(cell.kernel, torch.ones(6, 12, dtype=cell.kernel.dtype))
    lazy = IntersectionRNNCell(3)  # no num_in_proj: the depth is num_units
    rk.load_tf_variables(lazy, arrays)
    assert lazy.built and lazy.input_size == 3


def test_nas_cell_bias_argument_and_its_old_name() -> None:
    assert NASCell(3, None, True).use_bias and "bias" in dict(NASCell(3, None, True).named_parameters())
    old = NASCell(3, use_biases=True, input_size=2)
    assert old.use_bias and list(old.bias.shape) == [24] and not old.bias.any()
    assert "bias" not in dict(NASCell(3).named_parameters())
    with pytest.raises(ValueError, match="use_biases"):
        NASCell(3, use_bias=True, use_biases=False)


@pytest.mark.parametrize("make, error, match", [
    (lambda: NASCell(0), ValueError, "num_units"),
    (lambda: NASCell(3.0), TypeError, "num_units"),
    (lambda: NASCell(3, num_proj=0), ValueError, "num_proj"),
    (lambda: UGRNNCell(3, forget_bias="1"), TypeError, "forget_bias"),
    (lambda: UGRNNCell(3, initializer="glorot"), TypeError, "initializer"),
    (lambda: UGRNNCell(3, activation="nope"), ValueError, "activation"),
    (lambda: IntersectionRNNCell(3, num_in_proj=-1), ValueError, "num_in_proj"),
    (lambda: IntersectionRNNCell(3, num_in_proj=2.5), TypeError, "num_in_proj"),
    (lambda: IntersectionRNNCell(3, y_activation="nope"), ValueError, "y_activation"),
    (lambda: IndRNNCell(True), TypeError, "num_units"),
    (lambda: IndRNNCell(3, activation=5), TypeError, "activation"),
    (lambda: IndyGRUCell(3, kernel_initializer="x"), TypeError, "kernel_initializer"),
    (lambda: IndyLSTMCell(3, forget_bias=None), TypeError, "forget_bias"),
    (lambda: IndyLSTMCell(3, bias_initializer=object()), TypeError, "bias_initializer"),
])  # fmt: skip
def test_bad_arguments_name_the_argument(make: Callable[[], Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_bad_calls_name_what_is_wrong() -> None:
    nas = NASCell(3, num_proj=2)
    with pytest.raises(ValueError, match="state"):
        nas(torch.randn(2, 4), torch.zeros(2, 5))  # a concatenated state: NASCell takes (c, m) only
    with pytest.raises(ValueError, match=r"state\.h"):
        nas(torch.randn(2, 4), rk.LSTMStateTuple(torch.zeros(2, 3), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="depth 4"):
        nas(torch.randn(2, 5), nas.zero_state(2))
    with pytest.raises(TypeError, match="state"):
        IndRNNCell(3)(torch.randn(2, 4), (torch.zeros(2, 3),))
    with pytest.raises(ValueError, match="rank 2"):
        IndyGRUCell(3)(torch.randn(2, 1, 4), torch.zeros(2, 3))
