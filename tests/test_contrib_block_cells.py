"""tf.contrib.rnn's block cells (LSTMBlockCell, LSTMBlockFusedCell, GRUBlockCellV2,
GRUBlockCell) against the numpy transcription of TF 1.15's ops -- forward, and the gradient
TF's own gradient ops compute (the cell clipping passes the gradient) -- in float64 under
dynamic_rnn / LSTMBlockWrapper with sequence_length; the fused path against the reference
loop; TF's names, loading, TF's test numbers and argument errors."""

from __future__ import annotations

import io
import itertools
import math
import warnings
from typing import Any, Callable

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.contrib.block_cells import GRUBlockCell, GRUBlockCellV2, LSTMBlockCell, LSTMBlockFusedCell
from rnnkit.fused import select_plan
from tests.contrib_reference import block_cells as ref
from tests.contrib_reference.numeric import numeric_gradients, weighted_sum
from tests.contrib_reference.rnn_cells import unroll

F64 = torch.float64
STEPS, BATCH, DEPTH, UNITS = 4, 3, 3, 4
LENGTHS = [4, 2, 0]  # a full row, a short one, an empty one
PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")
CLIPS = [None, 0.5, 0.0, -1.0]  # none, active, and the two "no clipping" values of the op
LSTM_CASES = list(itertools.product([False, True], CLIPS))


# ---------------------------------------------------------------------------------------------
# the LSTM problem: time-major numpy arrays, the TF op's view of them


def _lstm_problem(seed: int, peephole: bool) -> dict[str, np.ndarray]:
    """Seeded ``x`` [T, B, D], ``c0``/``h0`` [B, U] and the cell's variables by TF name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x": rng.normal(size=(STEPS, BATCH, DEPTH)),
        "c0": rng.normal(scale=0.5, size=(BATCH, UNITS)),
        "h0": rng.normal(scale=0.5, size=(BATCH, UNITS)),
        "kernel": rng.normal(scale=0.6, size=(DEPTH + UNITS, 4 * UNITS)),
        "bias": rng.normal(scale=0.3, size=(4 * UNITS,)),
    }
    for name in PEEPHOLES if peephole else ():
        arrays[name] = rng.normal(scale=0.5, size=(UNITS,))
    return arrays


def _weights(arrays: dict[str, np.ndarray]) -> ref.Weights:
    zero = np.zeros(UNITS)  # TF passes zeros for absent peepholes
    return ref.Weights(arrays["kernel"], arrays["bias"], *(arrays.get(name, zero) for name in PEEPHOLES))


def _tf_clip(clip: float | None) -> float:
    return -1.0 if clip is None else clip  # LSTMBlockCell.__init__: None -> -1


def _ref_forward(arrays: dict[str, np.ndarray], clip: float | None, lengths: Any, forget_bias: float = 0.7) -> Any:
    return ref.lstm_block_wrapper(
        arrays["x"], arrays["c0"], arrays["h0"], _weights(arrays), forget_bias, _tf_clip(clip),
        "w_i_diag" in arrays, lengths,
    )  # fmt: skip


def _loss_weights(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(STEPS, BATCH, UNITS)), rng.normal(size=(BATCH, UNITS)), rng.normal(size=(BATCH, UNITS))]


def _ref_gradients(arrays: dict[str, np.ndarray], clip: float | None, lengths: Any, loss: list[np.ndarray]) -> dict:
    """TF's gradients (its gradient ops) of ``sum(loss * [outputs, c, h])`` by TF name."""
    grads = ref.lstm_block_wrapper_grad(
        arrays["x"], arrays["c0"], arrays["h0"], _weights(arrays), 0.7, _tf_clip(clip), "w_i_diag" in arrays,
        lengths, *loss,
    )  # fmt: skip
    names = {"x": grads.x, "c0": grads.cs_prev, "h0": grads.h_prev, "kernel": grads.w, "bias": grads.b,
             "w_i_diag": grads.wci, "w_f_diag": grads.wcf, "w_o_diag": grads.wco}  # fmt: skip
    return {name: names[name] for name in arrays}


def _cell_arrays(arrays: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    return {f"{scope}/{name}": value for name, value in arrays.items() if name not in ("x", "c0", "h0")}


def _torch_leaves(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(arrays[name], requires_grad=True) for name in ("x", "c0", "h0")}


def _check_against_tf(
    run: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, Any]],
    params: dict[str, torch.Tensor],
    arrays: dict[str, np.ndarray],
    clip: float | None,
    lengths: Any,
) -> None:
    """``run`` (the rnnkit port on the leaves x, c0, h0) against TF's forward and gradients."""
    expected_out, expected_final, _ = _ref_forward(arrays, clip, lengths)
    leaves = _torch_leaves(arrays)
    outputs, final = run(leaves)
    torch.testing.assert_close(outputs.detach().numpy(), expected_out, rtol=1e-12, atol=1e-12)
    for got, expected in zip(final, expected_final, strict=True):
        torch.testing.assert_close(got.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    loss_weights = _loss_weights(11)
    loss = sum((t * torch.tensor(w)).sum() for t, w in zip([outputs, *final], loss_weights))
    grads = torch.autograd.grad(loss, [*leaves.values(), *params.values()])
    expected = _ref_gradients(arrays, clip, lengths, loss_weights)
    for name, grad in zip([*leaves, *params], grads, strict=True):
        torch.testing.assert_close(grad.numpy(), expected[name], rtol=1e-10, atol=1e-12, msg=name)


# ---------------------------------------------------------------------------------------------
# the transcription itself


@pytest.mark.parametrize("peephole", [False, True])
def test_transcribed_gradient_ops_are_the_true_gradient_without_clipping(peephole: bool) -> None:
    arrays = _lstm_problem(1, peephole)
    loss_weights = _loss_weights(2)

    def loss(a: dict[str, np.ndarray]) -> float:
        outputs, final, _ = _ref_forward(a, None, LENGTHS)
        return weighted_sum([outputs, *final], loss_weights)

    numeric = numeric_gradients(loss, arrays)
    for name, grad in _ref_gradients(arrays, None, LENGTHS, loss_weights).items():
        np.testing.assert_allclose(grad, numeric[name], rtol=1e-7, atol=1e-9, err_msg=name)


def test_tf_gradient_ops_pass_the_gradient_through_the_cell_clipping() -> None:
    arrays = _lstm_problem(3, peephole=True)
    _, _, gates = _ref_forward(arrays, 0.5, LENGTHS)
    assert np.isclose(np.abs(gates.cs).max(), 0.5)  # the clipping is active
    loss_weights = _loss_weights(4)

    def loss(x: dict[str, np.ndarray]) -> float:
        outputs, final, _ = _ref_forward({**arrays, **x}, 0.5, LENGTHS)
        return weighted_sum([outputs, *final], loss_weights)

    true_gradient = numeric_gradients(loss, {"x": arrays["x"]})["x"]
    tf_gradient = _ref_gradients(arrays, 0.5, LENGTHS, loss_weights)["x"]
    assert not np.allclose(tf_gradient, true_gradient, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# LSTMBlockCell and LSTMBlockFusedCell against TF


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("peephole, clip", LSTM_CASES)
def test_lstm_block_cell_in_dynamic_rnn_matches_tf(peephole: bool, clip: float | None, backend: str) -> None:
    arrays = _lstm_problem(LSTM_CASES.index((peephole, clip)), peephole)
    cell = LSTMBlockCell(UNITS, forget_bias=0.7, cell_clip=clip, use_peephole=peephole)
    rk.load_tf_variables(cell, _cell_arrays(arrays, "rnn/lstm_cell"))  # builds the lazy cell
    assert cell.built and cell.input_size == DEPTH and cell.kernel.dtype == F64
    params = {name.split("/")[-1]: p for name, p in rk.tf_variables(cell).items()}
    assert list(params) == [name for name in arrays if name not in ("x", "c0", "h0")]

    def run(leaves: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        state = rk.LSTMStateTuple(leaves["c0"], leaves["h0"])
        out, final = rk.dynamic_rnn(cell, leaves["x"], LENGTHS, state, time_major=True, backend=backend)
        assert not out[2:, 1].any() and not out[:, 2].any()  # zeros past each length
        assert torch.equal(final.c[2], state.c[2]) and torch.equal(final.h[2], state.h[2])  # length 0
        return out, final

    _check_against_tf(run, params, arrays, clip, LENGTHS)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("lengths", [LENGTHS, [3, 1, 2], None])
@pytest.mark.parametrize("peephole, clip", [(False, None), (True, 0.5)])
def test_lstm_block_fused_cell_matches_tf(peephole: bool, clip: float | None, lengths: Any, backend: str) -> None:
    arrays = _lstm_problem(20 + peephole, peephole)
    layer = LSTMBlockFusedCell(UNITS, forget_bias=0.7, cell_clip=clip, use_peephole=peephole)
    rk.load_tf_variables(layer, _cell_arrays(arrays, "lstm_fused_cell"), scope=None)
    assert layer.built
    params = {name.split("/")[-1]: p for name, p in rk.tf_variables(layer, None).items()}

    def run(leaves: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        out, final = layer(leaves["x"], (leaves["c0"], leaves["h0"]), sequence_length=lengths, backend=backend)
        assert isinstance(final, rk.LSTMStateTuple) and list(out.shape) == [STEPS, BATCH, UNITS]
        return out, final

    _check_against_tf(run, params, arrays, clip, lengths)


def test_lstm_block_fused_cell_takes_a_list_and_gives_a_list() -> None:
    torch.manual_seed(0)
    layer = LSTMBlockFusedCell(3, cell_clip=0.2)
    x = torch.randn(4, 2, 5)
    out, final = layer(x, sequence_length=[4, 2])
    steps, final_from_list = layer(list(x.unbind(0)), dtype=torch.float32, sequence_length=[4, 2])
    assert isinstance(steps, list) and len(steps) == 4
    assert torch.equal(torch.stack(steps), out) and torch.equal(final_from_list.c, final.c)
    # zeros initial state of the inputs' dtype by default (TF required dtype= here)
    zero = rk.LSTMStateTuple(torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.equal(layer(x, zero, sequence_length=[4, 2])[0], out)


# ---------------------------------------------------------------------------------------------
# where the block op differs from LSTMCell


def test_block_clipping_forward_equals_lstm_cell_but_not_its_gradient() -> None:
    torch.manual_seed(1)
    block = LSTMBlockCell(4, cell_clip=0.3, use_peephole=True, input_size=3)
    plain = rk.LSTMCell(4, use_peepholes=True, cell_clip=0.3, input_size=3)
    rk.load_tf_variables(plain, {n: p.detach() for n, p in rk.tf_variables(block).items()})
    x = torch.randn(2, 5, 3, requires_grad=True)
    results = []
    for cell in (block, plain):
        out, state = rk.dynamic_rnn(cell, x, backend="reference")
        results.append((out, torch.autograd.grad((out * torch.linspace(-1, 1, 4)).sum(), x)[0]))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][0].abs().max() > 0 and not torch.allclose(results[0][1], results[1][1])


def test_cell_clip_zero_or_negative_is_no_clipping() -> None:
    assert all(LSTMBlockCell(3, cell_clip=clip).cell_clip is None for clip in (None, 0, 0.0, -1.0))
    assert LSTMBlockCell(3, cell_clip=2).cell_clip == 2.0
    # LSTMCell(cell_clip=0.0) clips to zero; the block cell does not clip at all
    torch.manual_seed(2)
    block = LSTMBlockCell(3, cell_clip=0.0, input_size=2)
    plain = rk.LSTMCell(3, cell_clip=0.0, input_size=2)
    plain.load_state_dict(block.state_dict())
    x = torch.randn(2, 3, 2)
    _, block_state = rk.dynamic_rnn(block, x)
    _, plain_state = rk.dynamic_rnn(plain, x)
    assert not plain_state.c.any() and block_state.c.abs().min() > 0


# ---------------------------------------------------------------------------------------------
# the fused path equals the reference loop


FUSED_CELLS: dict[str, Callable[[], Any]] = {
    "lstm_block": lambda: LSTMBlockCell(4, forget_bias=0.5),
    "lstm_block_peephole_clip": lambda: LSTMBlockCell(4, cell_clip=0.4, use_peephole=True),
    "lstm_block_clip": lambda: LSTMBlockCell(4, forget_bias=0.0, cell_clip=0.2),
    "gru_block_v2": lambda: GRUBlockCellV2(4),
    "gru_block_v1": lambda: GRUBlockCell(4),
    "stack": lambda: rk.MultiRNNCell([LSTMBlockCell(4, cell_clip=0.3), GRUBlockCell(3), GRUBlockCellV2(2)]),
}


def _run_backends(cell: Any, x: torch.Tensor, lengths: Any, init: Any) -> list[list[torch.Tensor]]:
    results = []
    for backend in ("reference", "fused"):
        xi = x.detach().clone().requires_grad_()
        state = rk.map_state(lambda s: s.detach().clone().requires_grad_(), init)
        out, final = rk.dynamic_rnn(cell, xi, sequence_length=lengths, initial_state=state, backend=backend)
        torch.manual_seed(7)
        loss = (out * torch.randn(out.shape, dtype=out.dtype)).sum()
        for leaf in rk.flatten_state(final):
            loss = loss + (leaf * torch.randn(leaf.shape, dtype=leaf.dtype)).sum()
        wrt = [xi, *cell.parameters(), *rk.flatten_state(state)]
        results.append([out, *rk.flatten_state(final), *torch.autograd.grad(loss, wrt)])
    return results


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cell_id", sorted(FUSED_CELLS))
def test_fused_path_equals_the_reference_loop(cell_id: str, dtype: torch.dtype) -> None:
    torch.manual_seed(sorted(FUSED_CELLS).index(cell_id))
    cell = FUSED_CELLS[cell_id]().to(dtype)
    x = torch.randn(3, 5, 3, dtype=dtype) * 2
    rk.dynamic_rnn(cell, x)  # build
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-1.0, 1.0)  # large enough that the clipping acts
    assert select_plan(cell, x, "fused") is not None
    init = rk.map_state(lambda s: torch.randn_like(s) * 0.5, cell.zero_state(3, dtype))
    reference, fused = _run_backends(cell, x, [5, 2, 0], init)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == F64 else dict(rtol=2e-4, atol=2e-5)
    for i, (a, b) in enumerate(zip(reference, fused, strict=True)):
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"result {i}: {m}")


# ---------------------------------------------------------------------------------------------
# GRU block cells


@pytest.mark.parametrize("make, names", [
    (lambda: GRUBlockCellV2(UNITS), ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")),
    (lambda: GRUBlockCell(UNITS), ("w_ru", "b_ru", "w_c", "b_c")),
])  # fmt: skip
def test_gru_block_cells_match_tf(make: Callable[[], Any], names: tuple[str, ...]) -> None:
    rng = np.random.default_rng(30)
    shapes = [(DEPTH + UNITS, 2 * UNITS), (2 * UNITS,), (DEPTH + UNITS, UNITS), (UNITS,)]
    arrays = {"x": rng.normal(size=(BATCH, STEPS, DEPTH)), "h0": rng.normal(scale=0.5, size=(BATCH, UNITS))}
    arrays |= {name: rng.normal(scale=0.6, size=shape) for name, shape in zip(names, shapes)}

    def reference(a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        weights = [a[name] for name in names]
        step = lambda x, h: (lambda new: (new, new))(ref.gru_block_cell(x, h, *weights))  # noqa: E731
        return unroll(step, a["x"], a["h0"], LENGTHS)

    cell = make()
    rk.load_tf_variables(cell, {f"rnn/gru_cell/{name}": arrays[name] for name in names})
    params = list(rk.tf_variables(cell).values())
    x, h0 = (torch.tensor(arrays[name], requires_grad=True) for name in ("x", "h0"))
    for backend in ("reference", "fused"):
        out, final = rk.dynamic_rnn(cell, x, LENGTHS, h0, backend=backend)
        expected_out, expected_final = reference(arrays)
        torch.testing.assert_close(out.detach().numpy(), expected_out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(final.detach().numpy(), expected_final, rtol=1e-12, atol=1e-12)
        loss_weights = [np.random.default_rng(31).normal(size=s) for s in (expected_out.shape, expected_final.shape)]
        loss = sum((t * torch.tensor(w)).sum() for t, w in zip([out, final], loss_weights))
        grads = torch.autograd.grad(loss, [x, h0, *params])
        numeric = numeric_gradients(lambda a: weighted_sum(list(reference(a)), loss_weights), arrays)
        for name, grad in zip(["x", "h0", *names], grads, strict=True):
            torch.testing.assert_close(grad.numpy(), numeric[name], rtol=1e-7, atol=1e-9, msg=f"{backend} {name}")


def test_gru_block_cell_units_from_num_units_or_deprecated_cell_size() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GRUBlockCellV2(3).num_units == 3
    with pytest.warns(DeprecationWarning, match="cell_size"):
        assert GRUBlockCellV2(cell_size=4).state_size == 4
    with pytest.warns(DeprecationWarning, match="cell_size"):
        assert GRUBlockCell(None, 2).output_size == 2
    assert isinstance(GRUBlockCellV2(2), rk.GRUCell) and isinstance(LSTMBlockCell(2), rk.LSTMCell)


# ---------------------------------------------------------------------------------------------
# names, initializers, TF's numbers


def test_tf_variable_names_in_creation_order() -> None:
    cell = LSTMBlockCell(UNITS, use_peephole=True, input_size=DEPTH)
    assert {n: tuple(p.shape) for n, p in rk.tf_variables(cell).items()} == {
        "rnn/lstm_cell/kernel": (DEPTH + UNITS, 4 * UNITS),
        "rnn/lstm_cell/bias": (4 * UNITS,),
        "rnn/lstm_cell/w_i_diag": (UNITS,),  # the op's order (wci, wcf, wco); LSTMCell's is f, i, o
        "rnn/lstm_cell/w_f_diag": (UNITS,),
        "rnn/lstm_cell/w_o_diag": (UNITS,),
    }
    assert list(rk.tf_variables(LSTMBlockCell(2, input_size=1))) == ["rnn/lstm_cell/kernel", "rnn/lstm_cell/bias"]
    fused = LSTMBlockFusedCell(UNITS, use_peephole=True, input_size=DEPTH)
    assert [n for n in rk.tf_variables(fused, None)] == [f"lstm_fused_cell/{n}" for n in ("kernel", "bias", *PEEPHOLES)]
    assert list(rk.tf_variables(fused, "outer"))[0] == "outer/lstm_fused_cell/kernel"
    assert list(rk.tf_variables(GRUBlockCellV2(2, input_size=3))) == [
        "rnn/gru_cell/gates/kernel", "rnn/gru_cell/gates/bias", "rnn/gru_cell/candidate/kernel",
        "rnn/gru_cell/candidate/bias",
    ]  # fmt: skip
    assert {n: tuple(p.shape) for n, p in rk.tf_variables(GRUBlockCell(2, input_size=3)).items()} == {
        "rnn/gru_cell/w_ru": (5, 4), "rnn/gru_cell/b_ru": (4,), "rnn/gru_cell/w_c": (5, 2), "rnn/gru_cell/b_c": (2,)
    }  # fmt: skip
    # name=None: a TF layer's default name, the snake-cased class name
    assert LSTMBlockCell(2, name=None).name == "lstm_block_cell"
    assert LSTMBlockFusedCell(2, name=None).name == "lstm_block_fused_cell"
    assert (
        GRUBlockCellV2(2, name=None).name == "gru_block_cell_v2" and GRUBlockCell(2, name=None).name == "gru_block_cell"
    )
    multi = rk.MultiRNNCell([LSTMBlockCell(2), GRUBlockCellV2(2)])
    multi(torch.zeros(1, 3), multi.zero_state(1))
    assert list(rk.tf_variables(multi))[::2] == ["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel",
                                                 "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
                                                 "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel"]  # fmt: skip


def _glorot_limit(shape: tuple[int, ...]) -> float:
    fans = (shape[0], shape[0]) if len(shape) == 1 else shape
    return math.sqrt(6.0 / (fans[0] + fans[1]))


@pytest.mark.parametrize("make", [
    lambda: LSTMBlockCell(4, use_peephole=True, input_size=3),
    lambda: LSTMBlockFusedCell(4, use_peephole=True, input_size=3),
    lambda: GRUBlockCellV2(4, input_size=3),
    lambda: GRUBlockCell(4, input_size=3),
])  # fmt: skip
def test_tf_default_initializers(make: Callable[[], Any]) -> None:
    torch.manual_seed(8)
    for name, param in rk.tf_variables(make(), None).items():
        leaf = name.split("/", 1)[1]
        if leaf in ("gates/bias", "b_ru"):  # constant_initializer(1.0)
            assert torch.equal(param, torch.ones_like(param))
        elif leaf in ("bias", "candidate/bias", "b_c"):  # constant_initializer(0.0)
            assert not param.any()
        else:  # no initializer: TF's default, Glorot-uniform on the whole shape
            assert param.abs().max() <= _glorot_limit(tuple(param.shape)) and param.std() > 0, name


def test_lstm_block_cell_reproduces_tf_test_numbers() -> None:
    # lstm_ops_test.py testLSTMBlockCell: MultiRNNCell of two LSTMBlockCell(2) under a 0.5
    # initializer (the bias keeps its explicit 0.0), x = [[1, 1]], every state 0.1
    cell = rk.MultiRNNCell([LSTMBlockCell(2, input_size=2), LSTMBlockCell(2, input_size=2)])
    with torch.no_grad():
        for name, param in rk.tf_variables(cell).items():
            param.fill_(0.0 if name.endswith("bias") else 0.5)
    state = tuple(rk.LSTMStateTuple(torch.full((1, 2), 0.1), torch.full((1, 2), 0.1)) for _ in range(2))
    out, ((c0, h0), (c1, h1)) = cell(torch.ones(1, 2), state)
    for got, expected in [(out, 0.24024698), (c0, 0.68967271), (h0, 0.44848421), (c1, 0.39897051), (h1, 0.24024698)]:
        torch.testing.assert_close(got, torch.full((1, 2), expected), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# building, saving


@pytest.mark.parametrize("make", [
    lambda: LSTMBlockCell(3, cell_clip=0.5, use_peephole=True),
    lambda: GRUBlockCellV2(3),
    lambda: GRUBlockCell(3),
    lambda: LSTMBlockFusedCell(3, use_peephole=True),
])  # fmt: skip
def test_state_dict_round_trip_builds_a_lazy_module(make: Callable[[], Any]) -> None:
    torch.manual_seed(9)
    module = make()
    x = torch.randn(2, 4, 5)

    def run(m: Any) -> torch.Tensor:
        if isinstance(m, LSTMBlockFusedCell):
            return m(x.transpose(0, 1), sequence_length=[4, 1])[0]
        return rk.dynamic_rnn(m, x, sequence_length=[4, 1])[0]

    expected = run(module)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = make()
    assert not fresh.built
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.built and torch.equal(run(fresh), expected)


def test_load_tf_variables_reports_a_fused_cell_under_the_wrong_scope() -> None:
    layer = LSTMBlockFusedCell(2)
    arrays = {"rnn/lstm_fused_cell/kernel": np.zeros((5, 8)), "rnn/lstm_fused_cell/bias": np.zeros(8)}
    with pytest.raises(ValueError, match="scope='rnn'"):
        rk.load_tf_variables(layer, arrays, scope=None)
    rk.load_tf_variables(layer, arrays, scope="rnn")
    assert layer.built and layer.cell.input_size == 3


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("make, error, match", [
    (lambda: LSTMBlockCell(0), ValueError, "num_units"),
    (lambda: LSTMBlockCell(2.0), TypeError, "num_units"),
    (lambda: LSTMBlockCell(2, cell_clip="1"), TypeError, "cell_clip"),
    (lambda: LSTMBlockCell(2, forget_bias=None), TypeError, "forget_bias"),
    (lambda: LSTMBlockCell(2, name="a/b"), ValueError, "name"),
    (lambda: LSTMBlockFusedCell(-1), ValueError, "num_units"),
    (lambda: LSTMBlockFusedCell(2, cell_clip=[1]), TypeError, "cell_clip"),
    (lambda: GRUBlockCellV2(), ValueError, "num_units or cell_size"),
    (lambda: GRUBlockCellV2(3, cell_size=3), ValueError, "num_units or cell_size"),
    (lambda: GRUBlockCellV2("3"), TypeError, "num_units"),
    (lambda: GRUBlockCell(None, 2.5), TypeError, "cell_size"),
])  # fmt: skip
def test_bad_arguments_name_the_argument(make: Callable[[], Any], error: type, match: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(error, match=match):
            make()


def test_bad_calls_name_what_is_wrong() -> None:
    layer = LSTMBlockFusedCell(3)
    x = torch.randn(4, 2, 5)
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="depth"):
        layer(torch.randn(4, 2, 0))
    with pytest.raises(TypeError, match="inputs"):
        layer(np.zeros((4, 2, 5)))
    with pytest.raises(ValueError, match="one shape"):
        layer([torch.randn(2, 5), torch.randn(3, 5)])
    with pytest.raises(ValueError, match="initial_state.*length 2"):
        layer(x, (torch.zeros(2, 3),) * 3)
    with pytest.raises(ValueError, match=r"initial_state\.h"):
        layer(x, (torch.zeros(2, 3), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="sequence_length must be <= the number of time steps"):
        layer(x, sequence_length=[5, 1])
    with pytest.raises(ValueError, match="sequence_length"):
        layer(x, sequence_length=[1])
    with pytest.raises(ValueError, match="state"):
        LSTMBlockCell(3)(torch.randn(2, 5), torch.zeros(2, 6))  # the block cell's state is a tuple
    with pytest.raises(TypeError, match="cell"):
        rk.dynamic_rnn(layer, x)  # a layer over sequences, not a one-step cell
