"""GPU benchmark: rnnkit against cuDNN (torch.nn.LSTM/GRU) and the per-step loop, one process.

Run:  python benchmarks/gpu.py [--rounds 5] [--quick | --shapes 16,256,1000 ...] [--dtypes float32 bfloat16]
      [--cells lstm tf-gru ...] [--loops short|all|none] [--csv out.csv]
      [--fp32-dot tf32x3] [--resident-max-depth 0] [--tuning block_k=64 num_stages=4 one_loop_for_gates=false]
      (the last three for sweeps of ``persistent_setup.Tuning``)

For each shape (batch B, hidden H = input depth, steps T), cell (TF LSTM, peephole LSTM with
cell clipping, TF's reset-before GRU, the full LSTMCell: peepholes, both clips and a
projection to H/2, and a BasicRNNCell with elu, an activation cuDNN lacks) and dtype, it
times forward (inference, no autograd) and forward+backward (every gradient) of:

* ``cudnn``: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` on the same ``[B, T, H]`` inputs (the plain LSTM is the
  yardstick of every ratio: the issue's targets are rnnkit / cuDNN plain LSTM);
* ``rnnkit``: ``dynamic_rnn(backend="auto")``, with the path it took (cudnn, persistent,
  step-loop or reference);
* ``loop``: rnnkit's reference loop, the cell's own step per time step (the per-step PyTorch
  loop every variant cost before the fused kernels; at T <= 100 unless ``--loops`` says otherwise).

float32 is strict everywhere (cuDNN's TF32 off, as rnnkit's default; see
``rnnkit/fused/torch_rnn.py``). Times are CUDA-event times from an idle device, the best of
interleaved rounds; compare ratios, not absolute times, on a shared machine. The host column
is the CPU time to issue each call: when it nears the GPU time, a call is bound by Python
and launch overhead, not by its kernels.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

import rnnkit as rk
from rnnkit.fused import select_plan
from rnnkit.fused.torch_rnn import is_torch_lstm_math
from rnnkit.fused.triton.persistent_setup import TUNING
from rnnkit.fused.triton.triton_support import persistent_fits, persistent_preferred, persistent_rnn_fits

SHAPES = [(1, 256, 1000), (16, 256, 1000), (16, 1024, 100), (64, 256, 100), (64, 1024, 100), (256, 256, 100),
          (256, 1024, 100)]
QUICK_SHAPES = [(1, 256, 1000), (16, 256, 100), (64, 256, 100), (256, 1024, 100)]


@dataclass(frozen=True)
class Cell:
    name: str
    make: Callable[[int], rk.RNNCell]
    baseline: Callable[[int], nn.RNNBase]  # cuDNN's nearest module, for its own column


CELLS = [
    Cell("lstm", lambda h: rk.BasicLSTMCell(h), lambda h: nn.LSTM(h, h, batch_first=True)),
    Cell("peephole-lstm", lambda h: rk.LSTMCell(h, use_peepholes=True, cell_clip=3.0),
         lambda h: nn.LSTM(h, h, batch_first=True)),
    Cell("tf-gru", lambda h: rk.GRUCell(h), lambda h: nn.GRU(h, h, batch_first=True)),
    Cell("full-lstm", lambda h: rk.LSTMCell(h, use_peepholes=True, cell_clip=3.0, num_proj=h // 2, proj_clip=3.0),
         lambda h: nn.LSTM(h, h, batch_first=True, proj_size=h // 2)),
    Cell("rnn-elu", lambda h: rk.BasicRNNCell(h, activation="elu"), lambda h: nn.RNN(h, h, batch_first=True)),
]


def _path(cell: rk.RNNCell, x: torch.Tensor) -> str:
    """Which implementation ``backend="auto"`` takes (mirrors the dispatch in rnnkit.fused)."""
    if select_plan(cell, x, "auto") is None:
        return "reference"
    if isinstance(cell, rk.LSTMCell) and is_torch_lstm_math(cell, projection=True):
        return "persistent" if persistent_preferred(x.device, x.dtype, x.shape[0], cell.num_units) else "cudnn"
    if isinstance(cell, rk.BasicRNNCell):  # an activation cuDNN lacks: never cuDNN
        return "persistent" if persistent_rnn_fits(x.device, x.shape[0], cell.num_units) else "step-loop"
    num_proj = getattr(cell, "num_proj", None)
    return "persistent" if persistent_fits(x.device, x.shape[0], cell.num_units, num_proj) else "step-loop"


def _event_time(run: Callable[[], Any]) -> tuple[float, float]:
    """(GPU time from an idle device to the last kernel's end, host time to issue the work), ms."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    issued = time.perf_counter()
    run()
    issued = time.perf_counter() - issued
    end.record()
    end.synchronize()
    return start.elapsed_time(end), 1e3 * issued


def _best_times(runs: dict[str, Callable[[], Any]], rounds: int, train: bool) -> dict[str, tuple[float, float]]:
    """Per run: the best (GPU ms, host ms) of ``rounds`` interleaved rounds."""
    with torch.set_grad_enabled(train):
        for run in runs.values():  # warm-up: compilation, cuDNN plans, allocator
            run()
        best = {name: (float("inf"), float("inf")) for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                gpu, host = _event_time(run)
                best[name] = (min(best[name][0], gpu), min(best[name][1], host))
    return best


def _runner(module: Any, x: torch.Tensor, params: list[torch.Tensor], train: bool, rnnkit_backend: str | None):
    def run() -> None:
        xi = x.requires_grad_(train)
        if rnnkit_backend is None:
            out, _ = module(xi)
        else:
            out, _ = rk.dynamic_rnn(module, xi, backend=rnnkit_backend)
        if train:
            torch.autograd.grad(out.float().sum(), [xi, *params])
    return run


def _measure(shape: tuple[int, int, int], cell_spec: Cell, dtype: torch.dtype, rounds: int, loops: str,
             plain_cudnn: dict[tuple[Any, ...], float]) -> list[dict[str, Any]]:
    batch, hidden, steps = shape
    torch.manual_seed(0)
    x = torch.randn(batch, steps, hidden, device="cuda", dtype=dtype)
    cell = cell_spec.make(hidden).to(device="cuda", dtype=dtype)
    rk.dynamic_rnn(cell, x[:, :1])  # build
    baseline = cell_spec.baseline(hidden).to(device="cuda", dtype=dtype)
    baseline.flatten_parameters()
    rows = []
    for train in (False, True):
        runs = {
            "cudnn": _runner(baseline, x, list(baseline.parameters()), train, None),
            "rnnkit": _runner(cell, x, list(cell.parameters()), train, "auto"),
        }
        if loops == "all" or (loops == "short" and steps <= 100):
            runs["loop"] = _runner(cell, x, list(cell.parameters()), train, "reference")
        timed = _best_times(runs, rounds if steps <= 100 else max(2, rounds // 2), train)
        times = {name: gpu for name, (gpu, _) in timed.items()}
        mode = "fwd+bwd" if train else "fwd"
        if cell_spec.name == "lstm":
            plain_cudnn[(shape, dtype, mode)] = times["cudnn"]
        yardstick = plain_cudnn.get((shape, dtype, mode), times["cudnn"])
        rows.append({
            "B": batch, "H": hidden, "T": steps, "cell": cell_spec.name, "dtype": str(dtype).replace("torch.", ""),
            "mode": mode, "path": _path(cell, x), "cudnn_ms": times["cudnn"], "rnnkit_ms": times["rnnkit"],
            "loop_ms": times.get("loop"), "rnnkit_us_per_step": 1e3 * times["rnnkit"] / steps,
            "cudnn_host_ms": timed["cudnn"][1], "rnnkit_host_ms": timed["rnnkit"][1],
            "ratio_vs_cudnn_lstm": times["rnnkit"] / yardstick,
            "ratio_vs_loop": times["rnnkit"] / times["loop"] if "loop" in times else None,
        })
    return rows


def _print_row(row: dict[str, Any]) -> None:
    loop = f"{row['loop_ms']:9.2f}" if row["loop_ms"] is not None else "        -"
    vs_loop = f"{row['ratio_vs_loop']:6.3f}" if row["ratio_vs_loop"] is not None else "     -"
    print(f"| {row['B']:4d} {row['H']:5d} {row['T']:5d} | {row['cell']:13s} | {row['dtype']:8s} | {row['mode']:7s} "
          f"| {row['path']:10s} | {row['cudnn_ms']:9.2f} | {row['rnnkit_ms']:9.2f} | {loop} "
          f"| {row['rnnkit_us_per_step']:8.1f} | {row['ratio_vs_cudnn_lstm']:6.2f} | {vs_loop} "
          f"| {row['cudnn_host_ms']:5.2f} / {row['rnnkit_host_ms']:5.2f} |", flush=True)


def _shape(text: str, parser: argparse.ArgumentParser) -> tuple[int, int, int]:
    """``"B,H,T"`` as a shape."""
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        parser.error(f"--shapes: expected B,H,T (positive ints), got {text!r}")
    batch, hidden, steps = (int(p) for p in parts)
    return batch, hidden, steps


def _tuning_value(current: Any, text: str, parser: argparse.ArgumentParser) -> Any:
    """``text`` as a value of the Tuning field whose value is ``current`` (bools: true/false)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            parser.error(f"--tuning: expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return type(current)(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="four shapes instead of seven")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--cells", nargs="+", default=[c.name for c in CELLS])
    parser.add_argument("--loops", choices=["short", "all", "none"], default="short",
                        help="where to time the per-step loop: T <= 100 (default), everywhere, nowhere")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="B,H,T",
                        help="these shapes instead of the grid, e.g. 16,256,1000 64,1024,100")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    parser.add_argument("--fp32-dot", default=TUNING.strict_float32_dot, choices=["ieee", "tf32x3"],
                        help="the persistent kernels' float32 products (persistent_setup.Tuning)")
    parser.add_argument("--resident-max-depth", type=int, default=TUNING.resident_max_depth,
                        help="deepest weight slices the persistent forward kernels keep on chip (0: always stream)")
    parser.add_argument("--tuning", nargs="*", default=[], metavar="NAME=VALUE",
                        help="other persistent_setup.Tuning fields, e.g. resident_warps=4 block_k=64")
    args = parser.parse_args()
    TUNING.strict_float32_dot, TUNING.resident_max_depth = args.fp32_dot, args.resident_max_depth
    for setting in args.tuning:
        name, _, value = setting.partition("=")
        if not hasattr(TUNING, name):
            parser.error(f"--tuning: no Tuning field {name!r}; the fields are {sorted(vars(TUNING))}")
        setattr(TUNING, name, _tuning_value(getattr(TUNING, name), value, parser))
    shapes = [_shape(text, parser) for text in args.shapes] if args.shapes else QUICK_SHAPES if args.quick else SHAPES
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device")
    torch.backends.cudnn.allow_tf32 = False  # strict float32 for cuDNN too (rnnkit's default)
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"persistent kernels: {TUNING}")
    print("ratio = rnnkit time / cuDNN plain-LSTM time, same shape and dtype (lower is better); "
          "fwd = inference, fwd+bwd = all gradients\n")
    print("|  B     H     T   | cell          | dtype    | mode    | path       |  cudnn ms |  rnnkit ms |   loop ms "
          "|  us/step |  ratio | vs loop | host ms cudnn / rnnkit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    plain_cudnn: dict[tuple[Any, ...], float] = {}
    for shape in shapes:
        for dtype_name in args.dtypes:
            for cell_spec in CELLS:  # the plain LSTM first: its cuDNN time is every row's yardstick
                if cell_spec.name not in args.cells and cell_spec.name != "lstm":
                    continue
                for row in _measure(shape, cell_spec, getattr(torch, dtype_name), args.rounds, args.loops,
                                    plain_cudnn):
                    rows.append(row)
                    if cell_spec.name in args.cells:
                        _print_row(row)
                torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
