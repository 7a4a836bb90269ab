"""Bad input: every check raises the right exception type, and its message names the offending
argument (plus the regex fragment TensorFlow's own tests use, where they use one).

Sizes are tiny: B=2, T=3, D=4 for sequences, D=3 for single steps, U=2 units.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import rnnkit as rk

B, T, D, U = 2, 3, 4, 2


def seq(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*(shape or (B, T, D))).to(dtype)


def step(batch: int = B, depth: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, depth).to(dtype)


class NotACell:
    """Has none of output_size, state_size, zero_state/get_initial_state, __call__."""


CELL_CLASSES = [rk.BasicRNNCell, rk.BasicLSTMCell, rk.LSTMCell, rk.GRUCell]


# ============================================================================================
# dynamic_rnn: inputs


@pytest.mark.parametrize("shape", [(T,), (B, T)], ids=["rank1", "rank2"])
@pytest.mark.parametrize("time_major", [False, True])
def test_dynamic_rnn_inputs_of_rank_below_3(shape, time_major):
    with pytest.raises(ValueError, match=r"inputs must have rank >= 3") as info:
        rk.dynamic_rnn(rk.GRUCell(U), torch.randn(*shape), time_major=time_major)
    assert f"rank {len(shape)}" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_dynamic_rnn_non_float_inputs(dtype):
    with pytest.raises(ValueError, match=r"inputs.*RNN cell only supports floating"):
        rk.dynamic_rnn(rk.GRUCell(U), torch.ones(B, T, D).to(dtype))


def test_dynamic_rnn_non_float_leaf_in_nested_inputs():
    with pytest.raises(ValueError, match=r"inputs.*RNN cell only supports floating"):
        rk.dynamic_rnn(rk.GRUCell(U), (seq(), torch.ones(B, T, D, dtype=torch.int64)))


def test_dynamic_rnn_inputs_not_tensors():
    with pytest.raises(TypeError, match=r"inputs must be a torch\.Tensor"):
        rk.dynamic_rnn(rk.GRUCell(U), [[[1.0, 2.0]]])


def test_dynamic_rnn_empty_nested_inputs():
    with pytest.raises(ValueError, match=r"inputs must contain at least one tensor"):
        rk.dynamic_rnn(rk.GRUCell(U), ())


def test_dynamic_rnn_non_cell():
    with pytest.raises(TypeError, match=r"'cell'.*is not an RNNCell") as info:
        rk.dynamic_rnn(NotACell(), seq())
    msg = str(info.value)
    for problem in ("'output_size' property is missing", "'state_size' property is missing",
                    "'zero_state' or 'get_initial_state'", "is not callable"):
        assert problem in msg


def test_dynamic_rnn_partially_cell_like_object_lists_only_what_is_missing():
    class AlmostCell:
        output_size = 2
        state_size = 2

        def zero_state(self, batch_size, dtype):
            return torch.zeros(batch_size, 2, dtype=dtype)

    with pytest.raises(TypeError, match=r"'cell'.*is not an RNNCell") as info:
        rk.dynamic_rnn(AlmostCell(), seq())
    msg = str(info.value)
    assert "is not callable" in msg
    assert "output_size" not in msg and "state_size" not in msg


def test_dynamic_rnn_cell_class_instead_of_instance():
    with pytest.raises(TypeError, match=r"'cell'.*is not an RNNCell"):
        rk.dynamic_rnn(rk.GRUCell, seq())


@pytest.mark.parametrize("which", ["cell_fw", "cell_bw"])
@pytest.mark.parametrize("runner", ["dynamic", "static"])
def test_bidirectional_non_cell_names_the_argument(which, runner):
    cells = {"cell_fw": rk.GRUCell(U), "cell_bw": rk.GRUCell(U)}
    cells[which] = NotACell()
    other = "cell_bw" if which == "cell_fw" else "cell_fw"
    with pytest.raises(TypeError, match=rf"The argument '{which}'.*is not an RNNCell") as info:
        if runner == "dynamic":
            rk.bidirectional_dynamic_rnn(cells["cell_fw"], cells["cell_bw"], seq())
        else:
            rk.static_bidirectional_rnn(cells["cell_fw"], cells["cell_bw"], list(seq().unbind(1)))
    assert f"'{other}'" not in str(info.value)


def test_nested_inputs_with_different_time_steps():
    with pytest.raises(ValueError, match=r"(?i)inputs.*time steps is not the same") as info:
        rk.dynamic_rnn(rk.GRUCell(U), (seq(B, T, D), seq(B, T + 2, D)))
    assert f"{T + 2}" in str(info.value)


def test_nested_inputs_with_different_batch_sizes():
    with pytest.raises(ValueError, match=r"(?i)inputs.*batch_size is not the same") as info:
        rk.dynamic_rnn(rk.GRUCell(U), (seq(B, T, D), seq(B + 1, T, D)))
    assert f"{B + 1}" in str(info.value)


def test_nested_inputs_time_major_checks_the_time_axis():
    # time_major: axis 0 is time; [T, B, D] and [T, B+1, D] differ in batch, not time
    with pytest.raises(ValueError, match=r"(?i)inputs.*batch_size is not the same"):
        rk.dynamic_rnn(rk.GRUCell(U), (seq(T, B, D), seq(T, B + 1, D)), time_major=True)


# ============================================================================================
# dynamic_rnn / static_rnn: sequence_length


@pytest.mark.parametrize(
    "lengths",
    [3, torch.tensor(3), np.int64(3)],
    ids=["python-int", "0d-tensor", "numpy-scalar"],
)
def test_dynamic_rnn_scalar_sequence_length(lengths):
    with pytest.raises(ValueError, match=r"sequence_length must be a vector"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


@pytest.mark.parametrize("lengths", [[[3, 3]], torch.tensor([[3], [3]])], ids=["list", "tensor"])
def test_dynamic_rnn_rank2_sequence_length(lengths):
    with pytest.raises(ValueError, match=r"sequence_length must be a vector"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


@pytest.mark.parametrize("lengths", [[3], [3, 3, 3]], ids=["too-short", "too-long"])
def test_dynamic_rnn_sequence_length_wrong_batch_size(lengths):
    with pytest.raises(ValueError, match=r"sequence_length must be a vector of length batch_size") as info:
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)
    assert f"({B})" in str(info.value)
    assert f"[{len(lengths)}]" in str(info.value)


@pytest.mark.parametrize("lengths", [[-1, 2], torch.tensor([2, -3]), torch.tensor([-1.0, 2.0])])
def test_dynamic_rnn_negative_sequence_length(lengths):
    # rnnkit's contract (design.md: "sequence_length shape or range") rejects negative lengths
    with pytest.raises(ValueError, match=r"sequence_length must be >= 0"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


@pytest.mark.parametrize("lengths", [[1.5, 2.0], torch.tensor([2.0, 0.25]), torch.tensor([float("nan"), 1.0])])
def test_dynamic_rnn_non_whole_float_sequence_length(lengths):
    with pytest.raises(ValueError, match=r"sequence_length must hold whole numbers"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


def test_dynamic_rnn_whole_float_sequence_length_is_accepted():
    # the counterpart of the test above: whole floats are cast, as in TF
    out, _ = rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=torch.tensor([1.0, 3.0]))
    assert torch.all(out[0, 1:] == 0)


@pytest.mark.parametrize("lengths", [torch.tensor([True, False]), [True, True]], ids=["tensor", "list"])
def test_dynamic_rnn_bool_sequence_length(lengths):
    with pytest.raises(TypeError, match=r"sequence_length must hold integers.*bool"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


def test_dynamic_rnn_non_array_sequence_length():
    with pytest.raises(ValueError, match=r"sequence_length must be a vector"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length="33")


@pytest.mark.parametrize(
    "lengths, got",
    [([3, None], r"None \(NoneType\) at index 1"), (["3", "1"], r"'3' \(str\) at index 0"),
     ((2, object()), r"\(object\) at index 1"), (np.array([1, None], dtype=object), r"None \(NoneType\) at index 1"),
     ([2, True], r"True \(bool\) at index 1"), (np.array(["1", "2"]), r"numpy array of dtype <U1")],
    ids=["none", "strings", "object", "numpy-object", "bool-item", "numpy-strings"],
)
def test_dynamic_rnn_sequence_length_items_that_are_not_integers(lengths, got):
    with pytest.raises(TypeError, match=r"sequence_length must hold integers.*" + got):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


@pytest.mark.parametrize(
    "lengths", [[[3], [1]], [3, [1, 2]], np.array([[1, 2], [3]], dtype=object), (torch.tensor([1]), 2)],
    ids=["nested", "ragged", "numpy-ragged", "tensor-item"],
)
def test_dynamic_rnn_nested_sequence_length(lengths):
    with pytest.raises(ValueError, match=r"sequence_length must be a vector of length batch_size \(2\).*nested"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


def test_dynamic_rnn_sequence_length_numbers_of_any_kind_are_accepted():
    # the counterpart of the two tests above: numpy ints, 0-d tensors, whole floats and int object arrays
    expected, _ = rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=[3, 1])
    for lengths in ([np.int32(3), torch.tensor(1)], (3.0, 1), np.array([3, 1], dtype=object), np.array([3, 1])):
        torch.manual_seed(0)
        out, _ = rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)
        assert torch.all(out[1, 1:] == 0) and out.shape == expected.shape


@pytest.mark.parametrize("lengths", [[float("inf"), 1.0], np.array([2.5, 1.0])], ids=["inf", "numpy-fraction"])
def test_dynamic_rnn_sequence_length_not_whole(lengths):
    with pytest.raises(ValueError, match=r"sequence_length must hold whole numbers"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)


def test_dynamic_rnn_zero_dim_tensor_sequence_length_names_the_scalar():
    with pytest.raises(ValueError, match=r"sequence_length must be a vector of length batch_size \(2\).*0-d tensor.*3"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=torch.tensor(3))


@pytest.mark.parametrize("runner", ["dynamic", "static", "bidirectional"])
def test_sequence_length_on_another_device(runner):
    # lengths on the CPU go with inputs anywhere (as pack_padded_sequence takes them); on any
    # other device than the inputs' they are an error naming both devices
    lengths = torch.tensor([3, 1], device="meta")
    with pytest.raises(ValueError, match=r"sequence_length is on device meta but the inputs are on cpu"):
        if runner == "dynamic":
            rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=lengths)
        elif runner == "static":
            rk.static_rnn(rk.GRUCell(U), list(seq().unbind(1)), sequence_length=lengths)
        else:
            rk.bidirectional_dynamic_rnn(rk.GRUCell(U), rk.GRUCell(U), seq(), sequence_length=lengths)


def test_sequence_length_on_the_cpu_with_inputs_on_meta_is_checked_not_refused():
    # CPU lengths are accepted whatever the inputs' device: the checks run on the CPU values
    with pytest.raises(ValueError, match=r"sequence_length must be >= 0"):
        rk.dynamic_rnn(rk.GRUCell(U), seq().to("meta"), sequence_length=torch.tensor([3, -1]))


@pytest.mark.parametrize("time_major", [False, True])
def test_bidirectional_sequence_length_longer_than_time(time_major):
    x = seq(T, B, D) if time_major else seq()
    with pytest.raises(ValueError, match=r"sequence_length must be <= the number of time steps") as info:
        rk.bidirectional_dynamic_rnn(
            rk.GRUCell(U), rk.GRUCell(U), x, sequence_length=[T + 1, 1], dtype=torch.float32, time_major=time_major
        )
    assert f"({T})" in str(info.value)


def test_static_bidirectional_sequence_length_longer_than_time():
    with pytest.raises(ValueError, match=r"sequence_length must be <= the number of time steps"):
        rk.static_bidirectional_rnn(rk.GRUCell(U), rk.GRUCell(U), list(seq().unbind(1)), sequence_length=[1, T + 1])


def test_dynamic_rnn_sequence_length_longer_than_time_is_accepted():
    # not an error outside the bidirectional runners (TF: a length > T means all T steps)
    out, _ = rk.dynamic_rnn(rk.GRUCell(U), seq(), sequence_length=[T + 5, 1])
    assert out.shape == (B, T, U)


@pytest.mark.parametrize("lengths", [4, torch.tensor(4)], ids=["python-int", "0d-tensor"])
def test_static_rnn_rank0_sequence_length(lengths):
    # TF's RNNTest.testInvalidSequenceLengthShape: static_rnn(..., sequence_length=4)
    with pytest.raises(ValueError, match=r"sequence_length must be a vector"):
        rk.static_rnn(rk.GRUCell(U), [step(), step()], dtype=torch.float32, sequence_length=lengths)


def test_static_rnn_sequence_length_wrong_batch_size():
    with pytest.raises(ValueError, match=r"sequence_length must be a vector of length batch_size"):
        rk.static_rnn(rk.GRUCell(U), [step(), step()], sequence_length=[1, 2, 2])


# ============================================================================================
# dynamic_rnn: initial_state and dtype


def test_dynamic_rnn_initial_state_wrong_batch_size():
    with pytest.raises(ValueError, match=r"initial_state must have shape \[2, 2\]") as info:
        rk.dynamic_rnn(rk.GRUCell(U), seq(), initial_state=torch.zeros(B + 1, U))
    assert "[3, 2]" in str(info.value)


def test_dynamic_rnn_initial_state_wrong_width():
    with pytest.raises(ValueError, match=r"initial_state must have shape \[2, 2\]") as info:
        rk.dynamic_rnn(rk.GRUCell(U), seq(), initial_state=torch.zeros(B, U + 1))
    assert "[2, 3]" in str(info.value)


def test_dynamic_rnn_lstm_initial_state_leaf_wrong_shape_names_the_leaf():
    state = rk.LSTMStateTuple(torch.zeros(B, U), torch.zeros(B, U + 1))
    with pytest.raises(ValueError, match=r"initial_state\.h must have shape"):
        rk.dynamic_rnn(rk.LSTMCell(U), seq(), initial_state=state)


def test_dynamic_rnn_single_tensor_for_lstm_tuple_state():
    with pytest.raises(ValueError, match=r"Expected initial_state .* a tuple of length 2"):
        rk.dynamic_rnn(rk.BasicLSTMCell(U), seq(), initial_state=torch.zeros(B, 2 * U))


def test_dynamic_rnn_non_tuple_state_for_multi_rnn_cell():
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)])
    with pytest.raises(ValueError, match=r"Expected initial_state .* a tuple of length 2"):
        rk.dynamic_rnn(cell, seq(), initial_state=torch.zeros(B, 2 * U))


@pytest.mark.parametrize("n", [1, 3])
def test_dynamic_rnn_multi_rnn_cell_state_tuple_of_wrong_length(n):
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)])
    with pytest.raises(ValueError, match=r"Expected initial_state .* a tuple of length 2"):
        rk.dynamic_rnn(cell, seq(), initial_state=tuple(torch.zeros(B, U) for _ in range(n)))


def test_dynamic_rnn_multi_rnn_cell_layer_state_wrong_names_the_layer():
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)])
    with pytest.raises(ValueError, match=r"initial_state\[1\] must have shape"):
        rk.dynamic_rnn(cell, seq(), initial_state=(torch.zeros(B, U), torch.zeros(B, U + 1)))


def test_dynamic_rnn_initial_state_wrong_dtype():
    with pytest.raises(TypeError, match=r"initial_state has dtype torch\.float64.*torch\.float32"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), initial_state=torch.zeros(B, U, dtype=torch.float64))


def test_dynamic_rnn_initial_state_not_a_tensor():
    with pytest.raises(TypeError, match=r"initial_state must be a tensor"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), initial_state=[[0.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_dynamic_rnn_int_dtype_without_initial_state(dtype):
    with pytest.raises(ValueError, match=r"dtype.*RNN cell only supports floating"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), dtype=dtype)


def test_dynamic_rnn_dtype_differs_from_inputs():
    with pytest.raises(TypeError, match=r"dtype=torch\.float64 differs from the inputs' dtype torch\.float32"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), dtype=torch.float64)


def test_dynamic_rnn_dtype_not_a_torch_dtype():
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), dtype=np.float32)
    with pytest.raises(ValueError, match=r"dtype: unknown dtype name 'float3'"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), dtype="float3")


def test_dtype_by_name_is_accepted():
    out, _ = rk.dynamic_rnn(rk.GRUCell(U, dtype="float64"), seq().double(), dtype="float64")
    assert out.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_dynamic_rnn_dtype_conflicting_with_initial_state(dtype):
    with pytest.raises((TypeError, ValueError), match=r"dtype"):
        rk.dynamic_rnn(rk.GRUCell(U), seq(), initial_state=torch.zeros(B, U), dtype=dtype)


@pytest.mark.parametrize("which", ["initial_state_fw", "initial_state_bw"])
def test_bidirectional_initial_state_errors_name_the_direction(which):
    kwargs = {which: torch.zeros(B + 1, U)}
    other = "initial_state_bw" if which == "initial_state_fw" else "initial_state_fw"
    with pytest.raises(ValueError, match=rf"{which} must have shape") as info:
        rk.bidirectional_dynamic_rnn(rk.GRUCell(U), rk.GRUCell(U), seq(), **kwargs)
    assert other not in str(info.value)


def test_bidirectional_initial_state_bw_wrong_dtype():
    with pytest.raises(TypeError, match=r"initial_state_bw has dtype torch\.float64"):
        rk.bidirectional_dynamic_rnn(
            rk.GRUCell(U), rk.GRUCell(U), seq(), initial_state_bw=torch.zeros(B, U, dtype=torch.float64)
        )


def test_static_bidirectional_initial_state_bw():
    with pytest.raises(ValueError, match=r"Expected initial_state_bw .* a tuple"):
        rk.static_bidirectional_rnn(
            rk.LSTMCell(U), rk.LSTMCell(U), [step(), step()], initial_state_bw=torch.zeros(B, 2 * U)
        )


# ============================================================================================
# static_rnn


def test_static_rnn_bare_tensor_instead_of_list():
    with pytest.raises(TypeError, match=r"Argument `inputs` must be a sequence"):
        rk.static_rnn(rk.GRUCell(U), seq(), dtype=torch.float32)


def test_static_rnn_empty_list():
    with pytest.raises(ValueError, match=r"Argument `inputs` must not be empty"):
        rk.static_rnn(rk.GRUCell(U), [], dtype=torch.float32)


def test_static_rnn_steps_with_different_batch_sizes():
    with pytest.raises(ValueError, match=r"inputs\[2\] has shape \[3, 3\].*batch size 2"):
        rk.static_rnn(rk.GRUCell(U), [step(), step(), step(batch=3)])


def test_static_rnn_non_tensor_step():
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a torch\.Tensor"):
        rk.static_rnn(rk.GRUCell(U), [step(), "x"])


def test_static_rnn_non_cell():
    with pytest.raises(TypeError, match=r"'cell'.*is not an RNNCell"):
        rk.static_rnn(NotACell(), [step()])


def test_static_rnn_initial_state_wrong_batch():
    with pytest.raises(ValueError, match=r"initial_state must have shape"):
        rk.static_rnn(rk.GRUCell(U), [step(), step()], initial_state=torch.zeros(B + 1, U))


def test_static_rnn_rank0_step():
    with pytest.raises(ValueError, match=r"inputs\[0\]"):
        rk.static_rnn(rk.GRUCell(U), [torch.tensor(1.0), torch.tensor(2.0)])


def test_static_rnn_int_inputs_name_inputs():
    with pytest.raises(ValueError, match=r"inputs.*RNN cell only supports floating"):
        rk.static_rnn(rk.GRUCell(U), [torch.ones(B, 3, dtype=torch.int32)])


# ============================================================================================
# cells: calls


@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_cell_call_with_rank3_inputs(cls):
    cell = cls(U)
    with pytest.raises(ValueError, match=r"inputs of \w+ must have rank 2") as info:
        cell(torch.randn(B, T, 3), cell.zero_state(B))
    assert "[2, 3, 3]" in str(info.value)


@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_cell_call_with_int_inputs(cls):
    cell = cls(U)
    with pytest.raises(ValueError, match=r"inputs.*RNN cell only supports floating"):
        cell(torch.ones(B, 3, dtype=torch.int32), cell.zero_state(B))


def test_cell_call_with_non_tensor_inputs():
    cell = rk.GRUCell(U)
    with pytest.raises(TypeError, match=r"inputs must be a torch\.Tensor"):
        cell([[1.0, 2.0, 3.0]], cell.zero_state(1))


@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_cell_call_with_another_input_depth(cls):
    cell = cls(U)
    cell(step(depth=3), cell.zero_state(B))  # built for depth 3
    with pytest.raises(ValueError, match=r"inputs of \w+ must have depth 3") as info:
        cell(step(depth=5), cell.zero_state(B))
    assert "got depth 5" in str(info.value)


def test_cell_with_input_size_rejects_another_depth_at_first_call():
    cell = rk.LSTMCell(U, input_size=3)
    with pytest.raises(ValueError, match=r"inputs of lstm_cell must have depth 3"):
        cell(step(depth=4), cell.zero_state(B))


def test_concat_state_basic_lstm_wrongly_sized_state():
    # TF's testBasicLSTMCellStateSizeError: a concat state of the wrong width
    cell = rk.BasicLSTMCell(U, state_is_tuple=False)
    with pytest.raises(ValueError, match=r"state must have shape \[2, 4\]") as info:
        cell(step(), torch.zeros(B, 2 * U + 1))
    assert "[2, 5]" in str(info.value)


def test_concat_state_lstm_given_a_tuple_state():
    cell = rk.LSTMCell(U, state_is_tuple=False)
    with pytest.raises(TypeError, match=r"state must be a tensor of shape \[2, 4\]"):
        cell(step(), rk.LSTMStateTuple(torch.zeros(B, U), torch.zeros(B, U)))


@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_cell_batch_mismatch_between_inputs_and_state(cls):
    # TF's testBasicLSTMCellDimension0Error
    cell = cls(U)
    with pytest.raises(ValueError, match=r"state(\.c)? must have shape \[2, 2\]") as info:
        cell(step(batch=B), cell.zero_state(B + 1))
    assert "[3, 2]" in str(info.value)


def test_tuple_state_lstm_given_a_single_tensor():
    cell = rk.LSTMCell(U)
    with pytest.raises(ValueError, match=r"Expected state .* a tuple"):
        cell(step(), torch.zeros(B, 2 * U))


def test_cell_state_none():
    with pytest.raises(TypeError, match=r"state must be a tensor"):
        rk.GRUCell(U)(step(), None)


def test_cell_state_dtype_differs_from_inputs():
    with pytest.raises(TypeError, match=r"state has dtype torch\.float64, but the inputs have dtype torch\.float32"):
        rk.GRUCell(U)(step(), torch.zeros(B, U, dtype=torch.float64))


@pytest.mark.parametrize("input_size", [None, 3])
@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_float64_inputs_into_cell_fixed_to_float32(cls, input_size):
    cell = cls(U, dtype=torch.float32, input_size=input_size)
    state = cell.zero_state(B, torch.float64)
    with pytest.raises(TypeError, match=r"inputs have dtype torch\.float64.*torch\.float32"):
        cell(step(dtype=torch.float64), state)


def test_cell_dtype_fixed_by_first_call():
    cell = rk.GRUCell(U)
    cell(step(), cell.zero_state(B))  # float32 from now on, as in TF
    with pytest.raises(TypeError, match=r"inputs have dtype torch\.float64"):
        cell(step(dtype=torch.float64), cell.zero_state(B, torch.float64))


# ============================================================================================
# cells: constructors


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_cell_constructor_int_dtype(cls, dtype):
    # TF's rnn_test.testInvalidDtype
    with pytest.raises(ValueError, match=r"dtype.*RNN cell only supports floating"):
        cls(U, dtype=dtype)


@pytest.mark.parametrize("cls", CELL_CLASSES)
@pytest.mark.parametrize("units", [0, -3])
def test_cell_num_units_not_positive(cls, units):
    with pytest.raises(ValueError, match=rf"num_units must be >= 1, got {units}"):
        cls(units)


@pytest.mark.parametrize("cls", CELL_CLASSES)
@pytest.mark.parametrize("units", [2.0, "2", None, True])
def test_cell_num_units_not_an_int(cls, units):
    with pytest.raises(TypeError, match=r"num_units must be an int"):
        cls(units)


@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_cell_unknown_activation_name(cls):
    with pytest.raises(ValueError, match=r"activation: unknown activation 'tanhh'"):
        cls(U, activation="tanhh")


def test_cell_activation_not_callable():
    with pytest.raises(TypeError, match=r"activation must be a callable"):
        rk.GRUCell(U, activation=3)


@pytest.mark.parametrize("arg", ["cell_clip", "proj_clip"])
def test_lstm_negative_clip(arg):
    with pytest.raises(ValueError, match=rf"{arg} must be >= 0, got -1"):
        rk.LSTMCell(U, num_proj=2, **{arg: -1.0})


def test_lstm_clip_not_a_number():
    with pytest.raises(TypeError, match=r"cell_clip must be a number or None"):
        rk.LSTMCell(U, cell_clip="1")


def test_lstm_num_proj_zero():
    with pytest.raises(ValueError, match=r"num_proj must be >= 1"):
        rk.LSTMCell(U, num_proj=0)


def test_lstm_forget_bias_not_a_number():
    with pytest.raises(TypeError, match=r"forget_bias must be a number"):
        rk.BasicLSTMCell(U, forget_bias="1.0")


@pytest.mark.parametrize("size", [0, -1, 2.0])
def test_cell_input_size_not_positive_int(size):
    with pytest.raises(ValueError, match=r"input_size must be a positive int"):
        rk.GRUCell(U, input_size=size)


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_cell_bad_name(name):
    with pytest.raises(ValueError, match=r"name must be a non-empty string without '/'"):
        rk.GRUCell(U, name=name)


# ============================================================================================
# cells: zero_state / get_initial_state


@pytest.mark.parametrize("cls", CELL_CLASSES)
def test_zero_state_negative_batch_size(cls):
    with pytest.raises(ValueError, match=r"batch_size must be >= 0, got -1"):
        cls(U).zero_state(-1)


@pytest.mark.parametrize("batch", [2.0, "2", None, True])
def test_zero_state_non_int_batch_size(batch):
    with pytest.raises(TypeError, match=r"batch_size must be an int"):
        rk.GRUCell(U).zero_state(batch)


@pytest.mark.parametrize("batch", [torch.tensor([2]), torch.tensor(2.0)], ids=["rank1", "float"])
def test_zero_state_bad_batch_size_tensor(batch):
    with pytest.raises(ValueError, match=r"batch_size must be a scalar integer"):
        rk.GRUCell(U).zero_state(batch)


def test_zero_state_int_dtype():
    with pytest.raises(ValueError, match=r"dtype.*RNN cell only supports floating"):
        rk.GRUCell(U).zero_state(B, torch.int32)


def test_zero_state_accepts_numpy_integer_batch_size():
    state = rk.GRUCell(U).zero_state(np.int64(B))
    assert state.shape == (B, U)


@pytest.mark.parametrize(
    "kwargs", [{}, {"batch_size": B}, {"dtype": torch.float32}], ids=["neither", "no-dtype", "no-batch"]
)
def test_get_initial_state_without_batch_size_or_dtype(kwargs):
    with pytest.raises(ValueError, match=r"batch_size and dtype cannot be None"):
        rk.LSTMCell(U).get_initial_state(**kwargs)


def test_get_initial_state_conflicting_batch_size():
    with pytest.raises(ValueError, match=r"batch.size from input tensor is different from the input param") as info:
        rk.GRUCell(U).get_initial_state(inputs=step(batch=B), batch_size=B + 1)
    assert f"{B} vs {B + 1}" in str(info.value)


def test_get_initial_state_conflicting_dtype():
    with pytest.raises(ValueError, match=r"dtype from input tensor is different from the input param"):
        rk.GRUCell(U).get_initial_state(inputs=step(), dtype=torch.float64)


# ============================================================================================
# MultiRNNCell


@pytest.mark.parametrize("cells", [[], ()], ids=["list", "tuple"])
def test_multi_rnn_cell_empty(cells):
    with pytest.raises(ValueError, match=r"Must specify at least one cell"):
        rk.MultiRNNCell(cells)


@pytest.mark.parametrize("make", [lambda: rk.GRUCell(U), lambda: (c for c in [rk.GRUCell(U)])],
                         ids=["single-cell", "generator"])
def test_multi_rnn_cell_not_a_list(make):
    with pytest.raises(TypeError, match=r"cells must be a list or tuple"):
        rk.MultiRNNCell(make())


@pytest.mark.parametrize("cls", [rk.BasicLSTMCell, rk.LSTMCell])
def test_multi_rnn_cell_concat_with_tuple_state_cells(cls):
    with pytest.raises(ValueError, match=r"state_is_tuple is not set") as info:
        rk.MultiRNNCell([rk.GRUCell(U), cls(U)], state_is_tuple=False)
    assert "LSTMStateTuple(c=2, h=2)" in str(info.value)


def test_multi_rnn_cell_non_cell_element():
    with pytest.raises(TypeError, match=r"The argument 'cells\[1\]'.*is not an RNNCell"):
        rk.MultiRNNCell([rk.GRUCell(U), NotACell()])


def test_multi_rnn_cell_class_element():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match=r"'cells\[0\]'.*is not an RNNCell"):
            rk.MultiRNNCell([rk.GRUCell, rk.GRUCell])


def test_multi_rnn_cell_non_tuple_state():
    # TF's testMultiRNNCellWithStateTuple
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)])
    with pytest.raises(ValueError, match=r"Expected state .* a tuple"):
        cell(step(), torch.zeros(B, 2 * U))


@pytest.mark.parametrize("n", [1, 3])
def test_multi_rnn_cell_state_tuple_of_wrong_length(n):
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)])
    with pytest.raises(ValueError, match=r"Expected state .* a tuple of length 2"):
        cell(step(), tuple(torch.zeros(B, U) for _ in range(n)))


def test_multi_rnn_cell_concat_state_too_wide():
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)], state_is_tuple=False)
    with pytest.raises(ValueError, match=r"state must have shape \[2, 4\]"):
        cell(step(), torch.zeros(B, 2 * U + 1))


def test_multi_rnn_cell_concat_state_too_wide_through_dynamic_rnn():
    cell = rk.MultiRNNCell([rk.GRUCell(U), rk.GRUCell(U)], state_is_tuple=False)
    with pytest.raises(ValueError, match=r"initial_state must have shape \[2, 4\]"):
        rk.dynamic_rnn(cell, seq(), initial_state=torch.zeros(B, 2 * U + 1))


# ============================================================================================
# DropoutWrapper


@pytest.mark.parametrize("arg", ["input_keep_prob", "output_keep_prob", "state_keep_prob"])
@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), torch.tensor(1.5)], ids=["1.5", "-0.1", "nan", "tensor"])
def test_dropout_keep_prob_out_of_range(arg, value):
    with pytest.raises(ValueError, match=rf"Parameter {arg} must be between 0 and 1"):
        rk.DropoutWrapper(rk.GRUCell(U), **{arg: value})


@pytest.mark.parametrize("arg", ["input_keep_prob", "output_keep_prob", "state_keep_prob"])
def test_dropout_keep_prob_zero(arg):
    # TF accepts 0.0 at construction and fails when the dropout runs (rate would be 1); rnnkit
    # rejects it at construction. Either way it must be a ValueError naming the argument.
    with pytest.raises(ValueError, match=rf"{arg}"):
        wrapper = rk.DropoutWrapper(rk.GRUCell(U), **{arg: 0.0})
        wrapper.train()
        wrapper(step(), wrapper.zero_state(B))


@pytest.mark.parametrize("arg", ["input_keep_prob", "output_keep_prob", "state_keep_prob"])
@pytest.mark.parametrize("value", ["0.5", None, True, torch.tensor([0.5, 0.5])], ids=["str", "None", "bool", "vector"])
def test_dropout_keep_prob_not_a_number(arg, value):
    with pytest.raises(TypeError, match=rf"Parameter {arg} must be a number"):
        rk.DropoutWrapper(rk.GRUCell(U), **{arg: value})


@pytest.mark.parametrize(
    "visitor",
    [3, "h", False, 0],
)
def test_dropout_filter_not_callable(visitor):
    with pytest.raises(TypeError, match=r"dropout_state_filter_visitor must be callable"):
        rk.DropoutWrapper(rk.LSTMCell(U), state_keep_prob=0.5, dropout_state_filter_visitor=visitor)


def test_dropout_filter_returning_a_bad_structure():
    wrapper = rk.DropoutWrapper(rk.LSTMCell(U), state_keep_prob=0.5, dropout_state_filter_visitor=lambda s: (True,))
    wrapper.train()
    with pytest.raises(TypeError, match=r"dropout_state_filter_visitor must return a bool"):
        wrapper(step(), wrapper.zero_state(B))


def test_dropout_non_cell():
    with pytest.raises(TypeError, match=r"The argument 'cell'.*is not an RNNCell"):
        rk.DropoutWrapper(NotACell(), input_keep_prob=0.5)


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_dropout_seed_not_an_int(seed):
    with pytest.raises(TypeError, match=r"seed must be an int or None"):
        rk.DropoutWrapper(rk.GRUCell(U), seed=seed)


def test_dropout_wrapper_int_inputs_with_input_dropout():
    wrapper = rk.DropoutWrapper(rk.GRUCell(U), input_keep_prob=0.5, seed=0)
    wrapper.train()
    with pytest.raises(ValueError, match=r"inputs.*RNN cell only supports floating"):
        wrapper(torch.ones(B, 3, dtype=torch.int64), wrapper.zero_state(B))


def test_dropout_wrapper_int_inputs_without_input_dropout():
    wrapper = rk.DropoutWrapper(rk.GRUCell(U))
    with pytest.raises(ValueError, match=r"inputs.*RNN cell only supports floating"):
        wrapper(torch.ones(B, 3, dtype=torch.int64), wrapper.zero_state(B))


# ============================================================================================
# ResidualWrapper


def test_residual_output_size_differs_from_input_depth():
    wrapper = rk.ResidualWrapper(rk.GRUCell(4))
    with pytest.raises(ValueError, match=r"ResidualWrapper: Shapes \[2, 3\] and \[2, 4\] are incompatible"):
        wrapper(step(depth=3), wrapper.zero_state(B))


def test_residual_output_size_differs_through_dynamic_rnn():
    with pytest.raises(ValueError, match=r"are incompatible"):
        rk.dynamic_rnn(rk.ResidualWrapper(rk.GRUCell(U)), seq())  # D=4, U=2


def test_residual_non_cell():
    with pytest.raises(TypeError, match=r"The argument 'cell'.*is not an RNNCell"):
        rk.ResidualWrapper(NotACell())


def test_residual_fn_not_callable():
    with pytest.raises(TypeError, match=r"residual_fn must be callable"):
        rk.ResidualWrapper(rk.GRUCell(U), residual_fn=3)


# ============================================================================================
# LSTMStateTuple, RNN layer


def test_lstm_state_tuple_dtype_mixed():
    state = rk.LSTMStateTuple(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"Inconsistent dtypes for internal state: torch\.float32 vs torch\.float64"):
        state.dtype


def test_rnn_layer_non_cell():
    with pytest.raises(TypeError, match=r"The argument 'cell'.*is not an RNNCell"):
        rk.RNN(NotACell())


# ============================================================================================
# load_tf_variables


def _built_stack() -> rk.MultiRNNCell:
    return rk.MultiRNNCell(
        [rk.LSTMCell(U, use_peepholes=True, input_size=3), rk.LSTMCell(U, use_peepholes=True, input_size=U)]
    )


def _arrays_for(cell, value: float = 7.0) -> dict[str, np.ndarray]:
    return {name: np.full(tuple(p.shape), value, np.float32) for name, p in rk.tf_variables(cell).items()}


def _snapshot(cell) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cell.state_dict().items()}


def _assert_unchanged(cell, before: dict[str, torch.Tensor]) -> None:
    after = cell.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def _message_groups(message: str) -> dict[str, list[str]]:
    """{"missing": [...], "unexpected": [...], "mis-shaped": [...]} from the strict-load message."""
    groups: dict[str, list[str]] = {}
    current = None
    for line in message.splitlines():
        header = re.fullmatch(r"(missing|unexpected|mis-shaped) \((\d+)\):", line)
        if header:
            current = groups.setdefault(header.group(1), [])
            continue
        if current is not None and line.startswith("  "):
            current.append(line.strip().split(":")[0])
        else:
            current = None
    return groups


P = "rnn/multi_rnn_cell"


def test_load_tf_variables_strict_lists_every_problem_sorted_in_one_error():
    cell = _built_stack()
    arrays = _arrays_for(cell)
    # creation order (kernel before bias) differs from sorted order, so the sort is really checked
    missing = [f"{P}/cell_1/lstm_cell/w_f_diag", f"{P}/cell_0/lstm_cell/kernel", f"{P}/cell_0/lstm_cell/bias"]
    for name in missing:
        del arrays[name]
    unexpected = [f"{P}/cell_1/lstm_cell/zeta", f"{P}/alpha/kernel", f"{P}/cell_0/lstm_cell/projection/kernel"]
    for name in unexpected:
        arrays[name] = np.zeros(2, np.float32)
    mis_shaped = [f"{P}/cell_1/lstm_cell/w_i_diag", f"{P}/cell_1/lstm_cell/kernel", f"{P}/cell_1/lstm_cell/bias"]
    arrays[mis_shaped[0]] = np.zeros(U + 1, np.float32)
    arrays[mis_shaped[1]] = np.zeros((U + U + 1, 4 * U), np.float32)
    arrays[mis_shaped[2]] = np.zeros(4 * U + 1, np.float32)
    arrays["other_scope/lstm_cell/kernel"] = np.zeros(3, np.float32)  # outside the scope: ignored

    before = _snapshot(cell)
    with pytest.raises(ValueError, match=r"load_tf_variables\(scope='rnn'\): the arrays do not match") as info:
        rk.load_tf_variables(cell, arrays, scope="rnn", strict=True)
    message = str(info.value)
    groups = _message_groups(message)
    for names in (missing, unexpected, mis_shaped):
        assert names != sorted(names)  # the test data itself is out of order
    assert groups["missing"] == sorted(missing)
    assert groups["unexpected"] == sorted(unexpected)
    assert groups["mis-shaped"] == sorted(mis_shaped)
    assert "missing (3):" in message and "unexpected (3):" in message and "mis-shaped (3):" in message
    assert "other_scope" not in message
    # the mis-shaped lines say what was expected and what came
    assert f"{P}/cell_1/lstm_cell/w_i_diag: expected shape [2], got [3]" in message
    # and a failed strict load changes nothing, not even the names that did match
    _assert_unchanged(cell, before)


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mis-shaped"])
def test_load_tf_variables_strict_single_problem_changes_nothing(problem):
    cell = rk.GRUCell(U, input_size=3)
    arrays = _arrays_for(cell)
    if problem == "missing":
        del arrays["rnn/gru_cell/candidate/bias"]
    elif problem == "unexpected":
        arrays["rnn/gru_cell/extra"] = np.zeros(1, np.float32)
    else:
        arrays["rnn/gru_cell/gates/bias"] = np.zeros(3, np.float32)
    before = _snapshot(cell)
    with pytest.raises(ValueError, match=rf"{problem} \(1\):"):
        rk.load_tf_variables(cell, arrays)
    _assert_unchanged(cell, before)


def test_load_tf_variables_non_strict_reports_instead_of_raising():
    cell = rk.GRUCell(U, input_size=3)
    arrays = _arrays_for(cell)
    del arrays["rnn/gru_cell/candidate/bias"]
    result = rk.load_tf_variables(cell, arrays, strict=False)
    assert result.missing == ["rnn/gru_cell/candidate/bias"]
    assert torch.all(cell.gates.kernel == 7.0)


def test_load_tf_variables_scope_hint():
    cell = rk.GRUCell(U, input_size=3)
    arrays = {f"model/rnn/gru_cell/{k.split('/', 2)[2]}": v for k, v in _arrays_for(cell).items()}
    with pytest.raises(ValueError, match=r"did you mean scope='model/rnn'\?"):
        rk.load_tf_variables(cell, arrays, scope="rnn")


@pytest.mark.parametrize(
    "arrays",
    [[("rnn/gru_cell/gates/bias", np.zeros(4, np.float32))], np.zeros(4, np.float32), None],
    ids=["list-of-pairs", "ndarray", "None"],
)
def test_load_tf_variables_non_mapping(arrays):
    cell = rk.GRUCell(U, input_size=3)
    before = _snapshot(cell)
    with pytest.raises(TypeError, match=r"arrays must be a mapping"):
        rk.load_tf_variables(cell, arrays)
    _assert_unchanged(cell, before)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_load_tf_variables_integer_arrays(dtype):
    cell = rk.GRUCell(U, input_size=3)
    arrays = _arrays_for(cell)
    arrays["rnn/gru_cell/gates/bias"] = np.ones(2 * U, dtype)
    before = _snapshot(cell)
    with pytest.raises(TypeError, match=r"arrays\['rnn/gru_cell/gates/bias'\] must hold floating point values"):
        rk.load_tf_variables(cell, arrays)
    _assert_unchanged(cell, before)


def test_load_tf_variables_integer_tensor():
    cell = rk.GRUCell(U, input_size=3)
    arrays = dict(_arrays_for(cell), **{"rnn/gru_cell/gates/bias": torch.ones(2 * U, dtype=torch.int64)})
    with pytest.raises(TypeError, match=r"arrays\['rnn/gru_cell/gates/bias'\] must hold floating point"):
        rk.load_tf_variables(cell, arrays)


def test_load_tf_variables_value_not_an_array():
    cell = rk.GRUCell(U, input_size=3)
    arrays = dict(_arrays_for(cell), **{"rnn/gru_cell/gates/bias": [1.0, 1.0, 1.0, 1.0]})
    with pytest.raises(TypeError, match=r"arrays\['rnn/gru_cell/gates/bias'\] must be a numpy array or a tensor"):
        rk.load_tf_variables(cell, arrays)


def test_load_tf_variables_string_value():
    cell = rk.GRUCell(U, input_size=3)
    arrays = dict(_arrays_for(cell), **{"rnn/gru_cell/gates/bias": "1.0"})
    with pytest.raises(TypeError, match=r"arrays\['rnn/gru_cell/gates/bias'\]"):
        rk.load_tf_variables(cell, arrays)


def test_load_tf_variables_non_string_name():
    cell = rk.GRUCell(U, input_size=3)
    arrays: dict = _arrays_for(cell)
    arrays[1] = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match=r"arrays"):
        rk.load_tf_variables(cell, arrays)


def test_load_tf_variables_not_a_cell():
    with pytest.raises(TypeError, match=r"cell must be an rnnkit cell or layer"):
        rk.load_tf_variables(NotACell(), {})


def test_load_tf_variables_failed_strict_load_leaves_a_lazy_cell_unbuilt():
    cell = rk.BasicLSTMCell(U)
    arrays = {
        "rnn/basic_lstm_cell/kernel": np.zeros((7 + U, 4 * U), np.float32),  # would imply depth 7
        "rnn/basic_lstm_cell/extra": np.zeros(2, np.float32),  # unexpected -> strict failure
    }
    with pytest.raises(ValueError, match=r"unexpected \(1\):"):
        rk.load_tf_variables(cell, arrays)
    assert not cell.built
    out, _ = cell(step(depth=3), cell.zero_state(B))  # still free to take its real depth
    assert out.shape == (B, U)
