"""Export ``dynamic_rnn`` over LSTM/GRU cells as native ONNX ``LSTM``/``GRU`` nodes (needs the
``onnx`` package: the ``rnnkit[onnx]`` extra).

The graph has inputs ``inputs`` ``[B, T, D]`` (or ``[T, B, D]`` with ``time_major``) and
``sequence_length`` ``[B]`` (int32), any B and T, and outputs ``outputs`` (same layout) and the
last layer's final ``h`` (and ``c`` for an LSTM), ``[B, H]``; past each length the outputs are
zero and the final state is the last valid one, as in TF.

What maps exactly: TF's LSTM gate blocks ``(i, j, f, o)`` become ONNX's ``(i, o, f, c)`` with
``forget_bias`` folded into the f bias, peepholes become ONNX's ``P = (i, o, f)``; TF's
reset-before GRU is ONNX ``GRU`` with ``linear_before_reset=0`` (gates ``z, r, h``), and
``GRUCell(reset_after=True)`` is ``linear_before_reset=1``. What cannot: cell and projection
clipping (ONNX's ``clip`` clips the gates' inputs instead), projections, other activations,
wrappers with dropout or residuals. Those raise a ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write
from ..cells import BasicLSTMCell, GRUCell, LSTMCell
from ..fused.activation_kinds import gate_options
from ..wrappers import MultiRNNCell

__all__ = ["export_onnx"]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _lstm_weights(cell: Any, depth: int) -> dict[str, np.ndarray]:
    units = cell.num_units

    def onnx_order(m: torch.Tensor) -> torch.Tensor:
        i, j, f, o = m.split(units, -1)
        return torch.cat([i, o, f, j], -1)

    kernel = onnx_order(cell.kernel)
    bias = cell.bias.detach().clone()
    bias[2 * units : 3 * units] += cell.forget_bias
    weights = {
        "W": _numpy(kernel[:depth].t())[None],
        "R": _numpy(kernel[depth:].t())[None],
        "B": np.concatenate([_numpy(onnx_order(bias)), np.zeros(4 * units, np.float32)])[None],
    }
    if cell.use_peepholes:
        weights["P"] = np.concatenate([_numpy(cell.w_i_diag), _numpy(cell.w_o_diag), _numpy(cell.w_f_diag)])[None]
    return weights


def _gru_weights(cell: Any, depth: int) -> dict[str, np.ndarray]:
    units = cell.num_units
    gates_kernel, gates_bias = cell.gates["kernel"], cell.gates["bias"]
    r, u = gates_kernel.split(units, 1)
    b_r, b_u = gates_bias.split(units)
    if cell.reset_after:
        x_part, h_part = cell.candidate["input_projection"], cell.candidate["hidden_projection"]
        w_h, r_h, wb_h, rb_h = x_part["kernel"], h_part["kernel"], x_part["bias"], h_part["bias"]
    else:
        w_h, r_h = cell.candidate["kernel"][:depth], cell.candidate["kernel"][depth:]
        wb_h, rb_h = cell.candidate["bias"], torch.zeros_like(cell.candidate["bias"])
    w = torch.cat([u[:depth], r[:depth], w_h], 1).t()  # ONNX gates: z (TF's u), r, h
    rec = torch.cat([u[depth:], r[depth:], r_h], 1).t()
    bias = torch.cat([b_u, b_r, wb_h, torch.zeros_like(b_u), torch.zeros_like(b_r), rb_h])
    return {"W": _numpy(w)[None], "R": _numpy(rec)[None], "B": _numpy(bias)[None]}


def _check(cell: Any, index: int) -> str:
    kind = type(cell)
    where = f"layer {index} ({getattr(cell, 'name', kind.__name__)})"
    if gate_options(cell):
        raise ValueError(f"{where}: ONNX's LSTM/GRU nodes compute sigmoid gates with a bias; it uses "
                         f"{', '.join(gate_options(cell))}")
    if kind in (BasicLSTMCell, LSTMCell):
        if cell.cell_clip is not None or cell.num_proj is not None:
            raise ValueError(f"{where}: ONNX's LSTM has no cell clipping (TF's cell_clip) and no projection")
        if cell.activation is not torch.tanh:
            raise ValueError(f"{where}: only tanh activations are exported")
        return "LSTM"
    if kind is GRUCell:
        if cell.activation is not torch.tanh:
            raise ValueError(f"{where}: only tanh activations are exported")
        return "GRU"
    raise ValueError(f"{where}: {kind.__name__} has no native ONNX node (LSTM and GRU cells only)")


def export_onnx(cell: Any, path: str | Path, time_major: bool = False, opset: int = 17) -> None:
    """Write ``dynamic_rnn(cell, inputs, sequence_length)`` as an ONNX model at ``path``.

    ``cell`` is a built LSTM/GRU cell or a MultiRNNCell of them. Weights are exported as float32.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'rnnkit[onnx]'") from None
    layers = cell.layers if isinstance(cell, MultiRNNCell) else [cell]
    if any(not getattr(layer, "built", False) for layer in layers):
        raise ValueError("the cell is not built yet: call it once or give input_size=")
    nodes, initializers = [], []
    x = "inputs"
    if not time_major:
        nodes.append(helper.make_node("Transpose", ["inputs"], ["x_time_major"], perm=[1, 0, 2]))
        x = "x_time_major"
    nodes.append(helper.make_node("Cast", ["sequence_length"], ["lengths"], to=TensorProto.INT32))
    depth = layers[0].input_size
    for k, layer in enumerate(layers):
        op = _check(layer, k)
        weights = _lstm_weights(layer, depth) if op == "LSTM" else _gru_weights(layer, depth)
        names = {key: f"l{k}_{key}" for key in weights}
        initializers += [numpy_helper.from_array(value, names[key]) for key, value in weights.items()]
        inputs = [x, names["W"], names["R"], names["B"], "lengths"]
        if op == "LSTM":
            if "P" in names:
                inputs += ["", "", names["P"]]  # no initial_h, initial_c: zeros
            outputs = [f"l{k}_y", f"l{k}_h", f"l{k}_c"]
            nodes.append(helper.make_node("LSTM", inputs, outputs, hidden_size=layer.num_units))
        else:
            outputs = [f"l{k}_y", f"l{k}_h"]
            nodes.append(helper.make_node(
                "GRU", inputs, outputs, hidden_size=layer.num_units, linear_before_reset=int(layer.reset_after)
            ))
        axes = f"l{k}_axes"
        initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
        nodes.append(helper.make_node("Squeeze", [f"l{k}_y", axes], [f"l{k}_out"]))  # [T, 1, B, H] -> [T, B, H]
        x, depth = f"l{k}_out", layer.output_size
    last = len(layers) - 1
    zero = "state_axes"
    initializers.append(numpy_helper.from_array(np.array([0], dtype=np.int64), zero))
    nodes.append(helper.make_node("Squeeze", [f"l{last}_h", zero], ["final_h"]))
    outputs_spec = [("outputs", x), ("final_h", "final_h")]
    if _check(layers[-1], last) == "LSTM":
        nodes.append(helper.make_node("Squeeze", [f"l{last}_c", zero], ["final_c"]))
        outputs_spec.append(("final_c", "final_c"))
    if time_major:
        nodes.append(helper.make_node("Identity", [x], ["outputs"]))
    else:
        nodes.append(helper.make_node("Transpose", [x], ["outputs"], perm=[1, 0, 2]))
    input_shape = ["T", "B", layers[0].input_size] if time_major else ["B", "T", layers[0].input_size]
    output_shape = ["T", "B", depth] if time_major else ["B", "T", depth]
    graph = helper.make_graph(
        nodes,
        "rnnkit_dynamic_rnn",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, input_shape),
         helper.make_tensor_value_info("sequence_length", TensorProto.INT64, ["B"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, output_shape)]
        + [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", depth]) for name, _ in outputs_spec[1:]],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rnnkit")
    onnx.checker.check_model(model)
    atomic_write(Path(path), lambda file: onnx.save(model, file))
