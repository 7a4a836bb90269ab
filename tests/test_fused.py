"""The fused path equals the reference loop (the cells' own steps): outputs, final states and
every gradient, over every cell option, stacks, lengths, layouts and dtypes; and the backend
switch picks and refuses as documented."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import pytest
import torch

import rnnkit as rk
from rnnkit.fused import select_plan
from rnnkit.fused.activation_kinds import ACTIVATION_CODES

F64 = torch.float64

LSTM_OPTIONS = list(itertools.product([False, True], [None, 0.6], [None, 3], [None, 0.4], [True, False]))


def _lstm(peepholes: bool, cell_clip: float | None, num_proj: int | None, proj_clip: float | None, tuple_state: bool):
    return rk.LSTMCell(
        4, use_peepholes=peepholes, cell_clip=cell_clip, num_proj=num_proj, proj_clip=proj_clip,
        forget_bias=0.7, state_is_tuple=tuple_state,
    )


CELLS: dict[str, Callable[[], Any]] = {
    "basic_lstm": lambda: rk.BasicLSTMCell(5),
    "basic_lstm_concat": lambda: rk.BasicLSTMCell(3, forget_bias=0.0, state_is_tuple=False),
    "gru": lambda: rk.GRUCell(5),
    "basic_rnn": lambda: rk.BasicRNNCell(4),
    "basic_rnn_relu": lambda: rk.BasicRNNCell(4, activation="relu"),
    "stack": lambda: rk.MultiRNNCell(
        [rk.LSTMCell(4, use_peepholes=True, num_proj=3), rk.GRUCell(3), rk.ResidualWrapper(rk.BasicLSTMCell(3))]
    ),
    "stack_concat": lambda: rk.MultiRNNCell(
        [rk.BasicLSTMCell(3, state_is_tuple=False), rk.BasicRNNCell(2)], state_is_tuple=False
    ),
    "residual_gru": lambda: rk.ResidualWrapper(rk.GRUCell(3)),
    "dropout_eval": lambda: rk.DropoutWrapper(rk.GRUCell(4), output_keep_prob=0.5).eval(),
}


def _random_scale(cell: Any) -> None:
    """Weights large enough that clipping and saturation actually happen."""
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-1.0, 1.0)


def _run_both(cell: Any, x: torch.Tensor, lengths: Any, init: Any, time_major: bool) -> list[list[torch.Tensor]]:
    results = []
    for backend in ("reference", "fused"):
        xi = x.detach().clone().requires_grad_()
        state = rk.map_state(lambda s: s.detach().clone().requires_grad_(), init) if init is not None else None
        out, final = rk.dynamic_rnn(
            cell, xi, sequence_length=lengths, initial_state=state, time_major=time_major, backend=backend
        )
        torch.manual_seed(7)
        loss = (out * torch.randn(out.shape, dtype=out.dtype)).sum()
        for leaf in rk.flatten_state(final):
            loss = loss + (leaf * torch.randn(leaf.shape, dtype=leaf.dtype)).sum()
        wrt = [xi, *cell.parameters(), *(rk.flatten_state(state) if state is not None else [])]
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)  # all lengths 0: x is unused
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
        results.append([out, *rk.flatten_state(final), *grads])
    return results


def _assert_match(results: list[list[torch.Tensor]], dtype: torch.dtype) -> None:
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == F64 else dict(rtol=2e-4, atol=2e-5)
    reference, fused = results
    assert len(reference) == len(fused)
    for i, (a, b) in enumerate(zip(reference, fused)):
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"result {i}: {m}")


def _build(cell: Any, depth: int, dtype: torch.dtype) -> Any:
    cell.to(dtype)
    cell(torch.zeros(1, depth, dtype=dtype), cell.zero_state(1, dtype))
    return cell


@pytest.mark.parametrize("options", LSTM_OPTIONS, ids=lambda o: "peep{}-clip{}-proj{}-pclip{}-tuple{}".format(*o))
def test_every_lstm_option_matches_the_reference(options: tuple) -> None:
    torch.manual_seed(0)
    cell = _build(_lstm(*options), 3, F64)
    _random_scale(cell)
    x = 2 * torch.randn(4, 6, 3, dtype=F64)
    init = rk.map_state(lambda z: torch.randn_like(z), cell.zero_state(4, F64))
    _assert_match(_run_both(cell, x, [6, 0, 3, 9], init, time_major=False), F64)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("lengths", [None, "mixed", "all_zero", "equal"])
def test_cells_match_the_reference(name: str, dtype: torch.dtype, time_major: bool, lengths: str | None) -> None:
    torch.manual_seed(1)
    cell = _build(CELLS[name](), 3, dtype)
    batch, steps = 5, 7
    x = torch.randn(steps, batch, 3, dtype=dtype) if time_major else torch.randn(batch, steps, 3, dtype=dtype)
    seq = {None: None, "mixed": [7, 1, 0, 4, 12], "all_zero": [0] * 5, "equal": [7] * 5}[lengths]
    init = rk.map_state(lambda z: torch.randn_like(z), cell.zero_state(batch, dtype))
    _assert_match(_run_both(cell, x, seq, init, time_major), dtype)


def test_default_initial_state_and_a_lazy_stack() -> None:
    make = lambda: rk.MultiRNNCell([rk.LSTMCell(4, cell_clip=1.0), rk.GRUCell(3)])  # noqa: E731
    torch.manual_seed(2)
    fused_cell = make()
    x = torch.randn(3, 5, 2, dtype=F64)
    out_fused, _ = rk.dynamic_rnn(fused_cell, x, sequence_length=[5, 2, 3], backend="fused")
    assert [c.input_size for c in fused_cell.layers] == [2, 4]
    assert fused_cell.layers[0].kernel.dtype == F64
    reference_cell = make()
    reference_cell.load_state_dict(fused_cell.state_dict())
    out_reference, _ = rk.dynamic_rnn(reference_cell, x, sequence_length=[5, 2, 3], backend="reference")
    torch.testing.assert_close(out_fused, out_reference, rtol=1e-12, atol=1e-12)


def test_static_and_bidirectional_runners_use_the_same_path() -> None:
    torch.manual_seed(3)
    fw, bw = _build(rk.LSTMCell(3, use_peepholes=True), 2, F64), _build(rk.GRUCell(3), 2, F64)
    x = torch.randn(3, 4, 2, dtype=F64)
    for backend in ("reference", "fused"):
        outputs, st_fw, st_bw = rk.static_bidirectional_rnn(
            fw, bw, list(x.unbind(1)), sequence_length=[4, 2, 0], backend=backend
        )
        (o_fw, o_bw), _ = rk.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[4, 2, 0], backend=backend)
        torch.testing.assert_close(torch.stack(outputs, 1), torch.cat([o_fw, o_bw], 2), rtol=1e-12, atol=1e-12)
        if backend == "reference":
            expected = (torch.stack(outputs, 1), st_fw, st_bw)
    torch.testing.assert_close(torch.stack(outputs, 1), expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st_bw, expected[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled_loops", "without_compiler"])
@pytest.mark.parametrize("lengths", [None, [5, 2, 0, 5, 3, 1]])
def test_no_grad_inference(lengths: list[int] | None, compiled: bool, monkeypatch) -> None:
    # plain LSTMs run as PyTorch's LSTM; with variable lengths and no compiled step loops, one
    # call per run of equal batch sizes
    if not compiled:
        import rnnkit.fused.lstm
        import rnnkit.fused.plan_layers

        monkeypatch.setattr(rnnkit.fused.plan_layers, "kernels", lambda: None)
        monkeypatch.setattr(rnnkit.fused.lstm, "kernels", lambda: None)
    cell = _build(rk.MultiRNNCell([rk.BasicLSTMCell(4), rk.BasicLSTMCell(4, state_is_tuple=False)]), 3, F64)
    x = torch.randn(6, 5, 3, dtype=F64)
    init = rk.map_state(torch.randn_like, cell.zero_state(6, F64))
    with torch.no_grad():
        out, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=init, backend="fused")
        expected, expected_state = rk.dynamic_rnn(
            cell, x, sequence_length=lengths, initial_state=init, backend="reference"
        )
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(rk.flatten_state(state), rk.flatten_state(expected_state)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengths", [None, [5, 2, 0]])
def test_plain_lstm_under_cpu_autocast(lengths: list[int] | None) -> None:
    """Under ``torch.autocast("cpu", bfloat16)`` plain LSTMs leave PyTorch's oneDNN LSTM, which
    has no bfloat16 form on CPUs without bfloat16 (``nn.LSTM`` itself fails there), and run
    like the other cells: as close to the reference under the same autocast as bfloat16 allows."""
    torch.manual_seed(8)
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(8), rk.GRUCell(6)])
    x = torch.randn(3, 5, 4)
    results = []
    for backend in ("reference", "auto"):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = rk.dynamic_rnn(cell, xi, sequence_length=lengths, backend=backend)
        results.append([out.float(), *(s.float() for s in rk.flatten_state(state)),
                        *torch.autograd.grad(out.float().sum(), [xi, *cell.parameters()])])
    for reference, fused in zip(*results):
        torch.testing.assert_close(fused, reference, rtol=0.05, atol=0.03)


@pytest.mark.parametrize("name", ["stack", "gru", "basic_rnn"])
def test_gradcheck_fused(name: str) -> None:
    torch.manual_seed(4)
    layer = rk.RNN(_build(CELLS[name](), 2, F64), backend="fused")
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(3, 4, 2, dtype=F64, requires_grad=True)
    init = rk.map_state(lambda z: torch.randn_like(z).requires_grad_(), layer.cell.zero_state(3, F64))
    leaves = rk.flatten_state(init)

    def run(x: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = rk.pack_state(init, flat[: len(leaves)])
        weights = dict(zip(names, flat[len(leaves) :]))
        out, final = torch.func.functional_call(layer, weights, (x,), {"sequence_length": [4, 0, 2], "initial_state": state})
        return (out, *rk.flatten_state(final))

    weights = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(run, (x, *leaves, *weights))


class _Doubling(rk.RNNCell):
    @property
    def state_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 2

    def step(self, inputs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * state + inputs, 2 * state + inputs


ACTIVATIONS = [kind for kind in ACTIVATION_CODES if kind != "tanh"]  # tanh: every other test


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("lengths", [None, [5, 0, 2, 6]])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled_loops", "torch_loops"])
def test_every_activation_kind_matches_the_reference(activation: str, lengths: list[int] | None, compiled: bool,
                                                     monkeypatch) -> None:
    """On the CPU's compiled step loops (where they build) and on their torch twins."""
    from rnnkit.fused import basic_rnn, gru, lstm

    if not compiled:
        for module in (lstm, gru, basic_rnn):
            monkeypatch.setattr(module, "kernels", lambda: None)
    torch.manual_seed(8)
    cell = rk.MultiRNNCell([
        rk.LSTMCell(5, use_peepholes=True, cell_clip=0.9, activation=activation),
        rk.LSTMCell(4, num_proj=3, activation=activation),
        rk.GRUCell(4, activation=activation),
        rk.BasicRNNCell(3, activation=activation),
    ])
    _build(cell, 3, F64)
    _random_scale(cell)
    x = 2 * torch.randn(4, 6, 3, dtype=F64)  # both sides of relu6's and elu's kinks
    init = rk.map_state(lambda z: torch.randn_like(z), cell.zero_state(4, F64))
    assert select_plan(cell, x, "auto") is not None
    _assert_match(_run_both(cell, x, lengths, init, time_major=False), F64)


def test_activation_modules_and_aliases_are_recognised() -> None:
    from torch import nn

    from rnnkit.fused.activation_kinds import activation_kind

    same = [(torch.tanh, "tanh"), (torch.nn.functional.tanh, "tanh"), (nn.Tanh(), "tanh"), (nn.ReLU(True), "relu"),
            (nn.ELU(), "elu"), (nn.Identity(), "linear"), ("relu6", "relu6"), ("selu", "selu")]
    for activation, kind in same:
        cell = rk.BasicRNNCell(3, activation=activation)
        assert activation_kind(cell.activation) == kind, activation
    for activation in (nn.ELU(alpha=0.5), nn.GELU(), "softplus", lambda x: x.tanh()):
        assert activation_kind(rk.BasicRNNCell(3, activation=activation).activation) is None, activation
    from rnnkit.fused.torch_rnn import is_torch_lstm_math

    assert is_torch_lstm_math(rk.BasicLSTMCell(3, activation=nn.Tanh()))  # cuDNN/oneDNN take it as torch.tanh
    assert not is_torch_lstm_math(rk.BasicLSTMCell(3, activation=nn.ReLU()))
    cell = rk.LSTMCell(4, activation=nn.ReLU(), input_size=3)
    x = torch.randn(2, 5, 3)
    reference, fused = (rk.dynamic_rnn(cell, x, backend=b)[0] for b in ("reference", "fused"))
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "cell, reason",
    [
        (rk.LSTMCell(3, activation="gelu"), "activation .*implements elu, linear, relu, relu6, selu, sigmoid"),
        (rk.BasicRNNCell(3, activation=lambda x: x * 2), "activation"),
        (rk.GRUCell(3, reset_after=True, activation="relu"), "reset_after=True.*tanh only"),
        (rk.DropoutWrapper(rk.GRUCell(3), state_keep_prob=0.5), "state dropout"),
        (rk.DropoutWrapper(rk.GRUCell(3), output_keep_prob=0.5, variational_recurrent=True), "variational"),
        (rk.ResidualWrapper(rk.GRUCell(2), residual_fn=lambda i, o: o), "custom residual_fn"),
        (_Doubling(), "_Doubling has no fused implementation"),
        (rk.MultiRNNCell([rk.GRUCell(2), _Doubling()]), "layer 1"),
    ],
)
def test_auto_falls_back_and_fused_refuses_with_the_reason(cell: Any, reason: str) -> None:
    x = torch.randn(2, 3, 2)
    assert select_plan(cell, x, "auto") is None
    with pytest.raises(ValueError, match=f"backend='fused' cannot run this: .*{reason}"):
        rk.dynamic_rnn(cell, x, backend="fused")
    out, _ = rk.dynamic_rnn(cell, x)  # auto: the reference loop
    assert out.shape[:2] == (2, 3)


def test_backend_selection() -> None:
    cell = rk.MultiRNNCell([rk.BasicLSTMCell(3), rk.ResidualWrapper(rk.GRUCell(3))])
    assert select_plan(cell, torch.zeros(2, 3, 4), "auto") is not None
    assert select_plan(cell, torch.zeros(2, 3, 4), "reference") is None
    assert select_plan(cell, torch.zeros(2, 3, 4, dtype=torch.float16), "auto") is None
    assert select_plan(cell, (torch.zeros(2, 3, 4),), "auto") is None
    with pytest.raises(ValueError, match="backend must be one of"):
        rk.dynamic_rnn(cell, torch.zeros(2, 3, 4), backend="cuda")
    with pytest.raises(ValueError, match="float16"):
        rk.dynamic_rnn(cell, torch.zeros(2, 3, 4, dtype=torch.float16), backend="fused")


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_empty_batch(backend: str) -> None:
    cell = rk.MultiRNNCell([rk.LSTMCell(3, use_peepholes=True), rk.GRUCell(2)])
    out, state = rk.dynamic_rnn(cell, torch.randn(0, 4, 2), sequence_length=torch.zeros(0), backend=backend)
    assert list(out.shape) == [0, 4, 2]
    assert [list(s.shape) for s in rk.flatten_state(state)] == [[0, 3], [0, 3], [0, 2]]


def _dropout_stack(outer_residual: bool) -> Any:
    """Layer 0 drops (almost) all of its inputs' and outputs' elements; layer 1 is residual."""
    inner = rk.ResidualWrapper(rk.GRUCell(3))
    layer1 = (
        rk.ResidualWrapper(rk.DropoutWrapper(rk.GRUCell(3), output_keep_prob=1e-9))
        if outer_residual
        else rk.DropoutWrapper(inner, input_keep_prob=0.5, output_keep_prob=1e-9)
    )
    return rk.MultiRNNCell([rk.DropoutWrapper(rk.LSTMCell(3, use_peepholes=True), output_keep_prob=1e-9), layer1])


@pytest.mark.parametrize("outer_residual", [True, False])
def test_fused_dropout_equals_the_reference_when_everything_is_dropped(outer_residual: bool) -> None:
    torch.manual_seed(5)
    cell = _build(_dropout_stack(outer_residual), 3, F64)
    assert select_plan(cell, torch.zeros(1, 1, 3, dtype=F64), "auto") is not None
    x = torch.randn(4, 6, 3, dtype=F64)
    _assert_match(_run_both(cell, x, [6, 2, 0, 4], None, time_major=False), F64)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_output_dropout_zeroes_or_scales_each_element(backend: str) -> None:
    torch.manual_seed(6)
    wrapper = rk.DropoutWrapper(_build(rk.BasicLSTMCell(64), 8, torch.float32), output_keep_prob=0.5, seed=3)
    x = torch.randn(16, 20, 8)
    kept_all, _ = rk.dynamic_rnn(wrapper.eval(), x, backend=backend)
    dropped, _ = rk.dynamic_rnn(wrapper.train(), x, backend=backend)
    zero = dropped == 0
    assert 0.45 < zero.float().mean().item() < 0.55
    torch.testing.assert_close(dropped[~zero], 2 * kept_all[~zero])
    again, _ = rk.dynamic_rnn(rk.DropoutWrapper(wrapper.cell, output_keep_prob=0.5, seed=3), x, backend=backend)
    assert torch.equal(again, dropped)  # the same seed, the same masks


@pytest.mark.parametrize("lengths", [None, [3, 0, 5, 5, 1, 9], [4, 4, 4], [0, 2]])
def test_packing_row_tables_follow_each_sequence(lengths: list[int] | None) -> None:
    """``previous_rows``/``last_rows`` against their definition, step by step: packed row
    ``offsets[t] + b`` is sorted row ``b`` at step ``t``."""
    from rnnkit.fused.packing import last_rows, make_packing, previous_rows

    batch = 4 if lengths is None else len(lengths)
    packing = make_packing(7, batch, None if lengths is None else torch.tensor(lengths))
    sizes, offsets = packing.batch_sizes, packing.offsets
    expected_previous = [offsets[t - 1] + b for t in range(1, len(sizes)) for b in range(sizes[t])]
    previous = previous_rows(packing, torch.device("cpu"))
    assert (previous.tolist() if previous is not None else []) == expected_previous
    steps_run = [sum(n > b for n in sizes) for b in range(packing.num_running)]
    assert last_rows(packing, torch.device("cpu")).tolist() == [offsets[s - 1] + b for b, s in enumerate(steps_run)]


def _broadcast_state(cell: Any, source: torch.Tensor, batch: int) -> Any:
    """The cell's initial state from one learned row ``source`` [1, state width], broadcast over
    the batch (row stride 0), its h half transposed in memory (column stride != 1)."""
    if not isinstance(cell.state_size, rk.LSTMStateTuple):
        return source.expand(batch, -1)
    units = cell.state_size.c
    c = source[:, :units].expand(batch, -1)
    h = source[:, units:].expand(batch, -1).t().contiguous().t()  # [B, H] with strides (1, B)
    return rk.LSTMStateTuple(c, h)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("name", ["basic_lstm", "gru", "basic_rnn", "layer_norm_lstm"])
def test_broadcast_and_transposed_initial_states(name: str, grad: bool) -> None:
    """A learned initial state broadcast over the batch (expand: row stride 0) and one stored
    transposed run as if they were contiguous, forward and into the learned row's gradient."""
    from rnnkit.contrib.layer_norm_cells import LayerNormBasicLSTMCell

    torch.manual_seed(12)
    cell = LayerNormBasicLSTMCell(5, dtype=F64) if name == "layer_norm_lstm" else CELLS[name]().double()
    x = torch.randn(3, 4, 2, dtype=F64)
    width = sum(cell.state_size) if isinstance(cell.state_size, rk.LSTMStateTuple) else cell.state_size
    results = []
    for backend in ("reference", "fused"):
        source = torch.randn(1, width, dtype=F64, generator=torch.Generator().manual_seed(3)).requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out, state = rk.dynamic_rnn(cell, x, initial_state=_broadcast_state(cell, source, 3), backend=backend)
        flat = [out, *(state if isinstance(state, tuple) else (state,))]
        if grad:
            flat.append(torch.autograd.grad(sum((t * t).sum() for t in flat), source)[0])
        results.append([t.detach() for t in flat])
    for a, e in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
