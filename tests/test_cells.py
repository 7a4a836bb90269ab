"""The built-in cells: TF's reference numbers, sizes, state types, building and initializers."""

from __future__ import annotations

import math

import pytest
import torch

import rnnkit as rk


def _fill_kernels(cell: torch.nn.Module, value: float) -> None:
    """TF tests' ``variable_scope(initializer=constant(0.5))``: every non-bias weight = value."""
    with torch.no_grad():
        for name, param in rk.tf_variables(cell).items():
            if not name.endswith("bias"):
                param.fill_(value)


def test_gru_reference_numbers() -> None:
    # tf-semantics §7 / §18: kernels 0.5, gate bias 1.0
    for x, expected in (([[1.0, 1.0]], 0.175991), ([[1.0, 1.0, 1.0]], 0.156736)):
        cell = rk.GRUCell(2, kernel_initializer=0.5)
        out, state = cell(torch.tensor(x), torch.full((1, 2), 0.1))
        torch.testing.assert_close(out, torch.full((1, 2), expected), atol=1e-6, rtol=0)
        assert state is out


def test_lstm_reference_numbers() -> None:
    # tf-semantics §18: LSTMCell(3), kernels 0.5, bias 0, forget_bias 1
    cell = rk.LSTMCell(3, initializer=0.5)
    state = rk.LSTMStateTuple(torch.full((1, 3), 0.1), torch.full((1, 3), 0.1))
    h1, state = cell(torch.full((1, 3), 2.0), state)
    torch.testing.assert_close(state.c, torch.full((1, 3), 1.0538415), atol=1e-6, rtol=0)
    torch.testing.assert_close(h1, torch.full((1, 3), 0.7511088), atol=1e-6, rtol=0)
    h2, state2 = cell(torch.ones(1, 3), state)
    torch.testing.assert_close(state2.c, torch.full((1, 3), 1.9493849), atol=1e-6, rtol=0)
    torch.testing.assert_close(h2, torch.full((1, 3), 0.8955089), atol=1e-6, rtol=0)
    _, dropped = cell(torch.ones(1, 3), rk.LSTMStateTuple(state.c, torch.zeros(1, 3)))
    torch.testing.assert_close(dropped.c, torch.full((1, 3), 1.7139251), atol=1e-6, rtol=0)


def test_lstm_math_matches_the_equations() -> None:
    torch.manual_seed(0)
    cell = rk.LSTMCell(4, use_peepholes=True, cell_clip=0.7, num_proj=3, proj_clip=0.4, forget_bias=0.3,
                       input_size=5, dtype=torch.float64)
    x = torch.randn(2, 5, dtype=torch.float64)
    c, m = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    out, state = cell(x, (c, m))
    i, j, f, o = (torch.cat([x, m], 1) @ cell.kernel + cell.bias).split(4, 1)
    new_c = torch.sigmoid(f + 0.3 + cell.w_f_diag * c) * c + torch.sigmoid(i + cell.w_i_diag * c) * torch.tanh(j)
    new_c = new_c.clamp(-0.7, 0.7)
    new_m = (torch.sigmoid(o + cell.w_o_diag * new_c) * torch.tanh(new_c)) @ cell.projection.kernel
    new_m = new_m.clamp(-0.4, 0.4)
    torch.testing.assert_close(state.c, new_c, rtol=0, atol=0)
    torch.testing.assert_close(out, new_m, rtol=0, atol=0)
    assert state.h is out


def test_basic_lstm_equals_lstm_cell_with_the_same_weights() -> None:
    torch.manual_seed(1)
    basic = rk.BasicLSTMCell(4, forget_bias=0.5, input_size=3)
    full = rk.LSTMCell(4, forget_bias=0.5, name="basic_lstm_cell", input_size=3)
    rk.load_tf_variables(full, {k: v.detach() for k, v in rk.tf_variables(basic).items()})
    x, state = torch.randn(2, 3), basic.zero_state(2)
    assert torch.equal(basic(x, state)[0], full(x, state)[0])


def test_cell_clip_zero_gives_zero_outputs() -> None:
    cell = rk.LSTMCell(3, use_peepholes=True, cell_clip=0.0)
    out, state = cell(torch.randn(2, 4), cell.zero_state(2))
    assert torch.equal(out, torch.zeros(2, 3)) and torch.equal(state.c, torch.zeros(2, 3))


def test_concat_state_equals_tuple_state() -> None:
    torch.manual_seed(2)
    tuple_cell = rk.LSTMCell(4, num_proj=3, input_size=2)
    concat_cell = rk.LSTMCell(4, num_proj=3, state_is_tuple=False, input_size=2)
    concat_cell.load_state_dict(tuple_cell.state_dict())
    assert concat_cell.state_size == 7 and tuple_cell.state_size == rk.LSTMStateTuple(4, 3)
    x, c, h = torch.randn(3, 2), torch.randn(3, 4), torch.randn(3, 3)
    out_t, st_t = tuple_cell(x, rk.LSTMStateTuple(c, h))
    out_c, st_c = concat_cell(x, torch.cat([c, h], 1))
    assert torch.equal(out_t, out_c)
    assert torch.equal(torch.cat(st_t, 1), st_c)


@pytest.mark.parametrize(
    "make, state_size, output_size",
    [
        (lambda: rk.BasicRNNCell(5), 5, 5),
        (lambda: rk.GRUCell(5), 5, 5),
        (lambda: rk.BasicLSTMCell(5), rk.LSTMStateTuple(5, 5), 5),
        (lambda: rk.BasicLSTMCell(5, state_is_tuple=False), 10, 5),
        (lambda: rk.LSTMCell(5, num_proj=2), rk.LSTMStateTuple(5, 2), 2),
        (lambda: rk.LSTMCell(5, num_proj=2, state_is_tuple=False), 7, 2),
    ],
)
def test_sizes_and_zero_state(make, state_size, output_size) -> None:
    cell = make()
    assert cell.state_size == state_size and cell.output_size == output_size
    zero = cell.zero_state(3, torch.float64)
    leaves, sizes = rk.flatten_state(zero), rk.flatten_state(state_size)
    assert [list(z.shape) for z in leaves] == [[3, s] for s in sizes]
    assert all(z.dtype == torch.float64 and not z.any() for z in leaves)
    if isinstance(state_size, rk.LSTMStateTuple):
        assert isinstance(zero, rk.LSTMStateTuple)
    out, new_state = cell(torch.randn(3, 4, dtype=torch.float64), zero)
    assert list(out.shape) == [3, output_size]
    assert type(new_state) is type(zero)


def test_plain_tuple_state_is_accepted_and_lstm_state_tuple_returned() -> None:
    cell = rk.BasicLSTMCell(2)
    _, state = cell(torch.ones(1, 3), (torch.zeros(1, 2), torch.zeros(1, 2)))
    assert isinstance(state, rk.LSTMStateTuple)
    assert state[0] is state.c and state[1] is state.h


def test_lazy_build_at_first_call_and_eager_build() -> None:
    lazy = rk.LSTMCell(4, use_peepholes=True, num_proj=2)
    assert not lazy.built and lazy.input_size is None
    params = list(lazy.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)  # an optimizer before the first call works
    out, _ = lazy(torch.randn(3, 6), lazy.zero_state(3))
    assert lazy.built and lazy.input_size == 6
    assert list(lazy.kernel.shape) == [8, 16] and list(lazy.projection.kernel.shape) == [4, 2]
    assert all(p is q for p, q in zip(params, lazy.parameters()))
    out.sum().backward()
    before = lazy.kernel.detach().clone()
    optimizer.step()
    assert not torch.equal(before, lazy.kernel)

    eager = rk.GRUCell(3, input_size=5, dtype=torch.float64)
    assert eager.built and list(eager.gates.kernel.shape) == [8, 6] and eager.gates.kernel.dtype == torch.float64


def test_dtype_follows_the_first_inputs_then_is_fixed() -> None:
    cell = rk.BasicLSTMCell(3, input_size=2)
    assert cell.kernel.dtype == torch.get_default_dtype()
    out, _ = cell(torch.ones(1, 2, dtype=torch.float64), cell.zero_state(1, torch.float64))
    assert out.dtype == torch.float64 and cell.kernel.dtype == torch.float64
    with pytest.raises(TypeError, match="dtype"):
        cell(torch.ones(1, 2), cell.zero_state(1, torch.float32))
    # an explicit dtype is fixed from the start; cell.to() still moves it
    fixed = rk.GRUCell(2, dtype=torch.float64)
    assert fixed(torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64))[0].dtype == torch.float64
    fixed.float()
    assert fixed(torch.ones(1, 2), torch.zeros(1, 2))[0].dtype == torch.float32


def test_default_initializers_follow_tf() -> None:
    torch.manual_seed(3)
    lstm = rk.LSTMCell(256, use_peepholes=True, num_proj=64, input_size=300)
    limit = math.sqrt(6 / (364 + 1024))  # Glorot on the fused [D+P, 4U] kernel
    kernel = lstm.kernel.detach()
    assert kernel.abs().max() <= limit and kernel.abs().max() > 0.98 * limit
    assert abs(kernel.std().item() - limit / math.sqrt(3)) < 0.02 * limit
    assert torch.equal(lstm.bias, torch.zeros(1024))
    assert lstm.w_f_diag.abs().max() <= math.sqrt(3 / 256)  # 1-D: fan_in = fan_out = n
    proj_limit = math.sqrt(6 / (256 + 64))
    assert lstm.projection.kernel.abs().max() <= proj_limit

    gru = rk.GRUCell(8, input_size=4)
    assert torch.equal(gru.gates.bias, torch.ones(16)) and torch.equal(gru.candidate.bias, torch.zeros(8))
    gru2 = rk.GRUCell(8, bias_initializer=0.25, kernel_initializer=torch.nn.init.ones_, input_size=4)
    assert torch.equal(gru2.gates.bias, torch.full((16,), 0.25))
    assert torch.equal(gru2.candidate.bias, torch.full((8,), 0.25))
    assert torch.equal(gru2.candidate.kernel, torch.ones(12, 8))


def test_initialization_is_reproducible_and_reset_parameters_redraws() -> None:
    torch.manual_seed(4)
    a = rk.BasicLSTMCell(4, input_size=3)
    torch.manual_seed(4)
    b = rk.BasicLSTMCell(4, input_size=3)
    assert torch.equal(a.kernel, b.kernel)
    before = a.kernel.detach().clone()
    a.reset_parameters()
    assert not torch.equal(before, a.kernel)


def test_activation_by_name_and_callable() -> None:
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    by_name = rk.BasicRNNCell(4, activation="relu", input_size=3)
    by_callable = rk.BasicRNNCell(4, activation=torch.relu, input_size=3)
    by_callable.load_state_dict(by_name.state_dict())
    out, _ = by_name(x, h)
    assert torch.equal(out, by_callable(x, h)[0]) and (out >= 0).all()


def test_one_cell_called_at_every_step_shares_weights() -> None:
    cell = rk.GRUCell(3)
    state = cell.zero_state(2)
    for _ in range(4):
        out, state = cell(torch.randn(2, 5), state)
    assert len(list(cell.parameters())) == 4
    out.sum().backward()
    assert cell.gates.kernel.grad is not None


def test_use_peepholes_is_taken_by_truthiness() -> None:
    # very old code called LSTMCell(num_units, input_size): that enabled peepholes in TF
    cell = rk.LSTMCell(3, 7)
    assert cell.use_peepholes and hasattr(cell, "w_i_diag")


def test_state_dict_roundtrip_builds_a_lazy_cell() -> None:
    source = rk.LSTMCell(4, num_proj=2, use_peepholes=True, input_size=3, dtype=torch.float64)
    target = rk.LSTMCell(4, num_proj=2, use_peepholes=True)
    target.load_state_dict(source.state_dict())
    assert target.built and target.input_size == 3
    assert all(torch.equal(p, q) for p, q in zip(source.parameters(), target.parameters()))
    assert list(source.state_dict()) == ["kernel", "bias", "w_f_diag", "w_i_diag", "w_o_diag", "projection.kernel"]


def test_get_initial_state() -> None:
    cell = rk.BasicLSTMCell(3)
    x = torch.zeros(4, 2, dtype=torch.float64)
    state = cell.get_initial_state(inputs=x)
    assert isinstance(state, rk.LSTMStateTuple) and state.c.shape == (4, 3) and state.dtype == torch.float64
    assert cell.get_initial_state(batch_size=2, dtype=torch.float32).h.shape == (2, 3)


def test_a_whole_cell_pickles_with_torch_save(tmp_path) -> None:
    cell = rk.MultiRNNCell(
        [rk.LSTMCell(3, use_peepholes=True, num_proj=2, initializer=0.5), rk.GRUCell(2, bias_initializer=0.1),
         rk.BasicRNNCell(2, activation="linear")]
    )
    x = torch.randn(2, 4)
    expected, _ = cell(x, cell.zero_state(2))
    torch.save(cell, tmp_path / "cell.pt")
    restored = torch.load(tmp_path / "cell.pt", weights_only=False)
    assert torch.equal(restored(x, restored.zero_state(2))[0], expected)


def test_state_dict_of_a_lazy_cell_saves_and_loads(tmp_path) -> None:
    lazy = rk.MultiRNNCell([rk.LSTMCell(3, num_proj=2), rk.GRUCell(2)])
    state = lazy.state_dict()
    assert sorted(state) == sorted(n for n, _ in lazy.named_parameters())
    other = rk.MultiRNNCell([rk.LSTMCell(3, num_proj=2), rk.GRUCell(2)])
    other.load_state_dict(state)  # lazy into lazy: nothing to copy, nothing missing
    assert not other.cells[0].built
    torch.save(lazy.state_dict(), tmp_path / "lazy.pt")
    out, _ = rk.dynamic_rnn(lazy, torch.randn(2, 3, 4))  # builds
    other.load_state_dict(lazy.state_dict())  # built into lazy: builds and copies
    assert torch.equal(rk.dynamic_rnn(other, torch.zeros(2, 3, 4))[0], rk.dynamic_rnn(lazy, torch.zeros(2, 3, 4))[0])
