"""The persistent kernels compile for a real GPU (sm_90a) with the installed Triton, without one.

Triton's interpreter (``test_triton.py``) runs the kernels' Python, not Triton's compiler, so a
compiler crash only shows on a GPU, and only with the Triton version that has it: Triton 3.9's
LLVM (torch 2.13) aborted Python on the float32 LSTM kernel without peepholes, the plain LSTM's
path at small batches. Each configuration compiles in a child process, which an abort cannot
take down with the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("triton")
compiler = pytest.importorskip("triton.compiler")
if not hasattr(compiler, "ASTSource"):
    pytest.skip("this Triton has no triton.compiler.ASTSource", allow_module_level=True)

_COMPILE = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from rnnkit.fused.triton import persistent_gru, persistent_lstm, persistent_rnn

spec = json.loads(sys.argv[1])
modules = {"lstm": persistent_lstm, "gru": persistent_gru, "rnn": persistent_rnn}
kernel = getattr(modules[spec["cell"]], spec["kernel"])
constants, ints = spec["constants"], spec["ints"]
float32_buffers = {"gates_ptr", "candidates_ptr", "cells_ptr", "act_cells_ptr", "hidden_ptr", "cbuf_ptr",
                   "d_c_ptr", "d_gates_ptr", "d_candidates_ptr", "pre_ptr", "d_pre_ptr"}
signature, attributes = {}, {}
for index, name in enumerate(kernel.arg_names):
    if name in constants:
        signature[name] = "constexpr"
        continue
    if name in ints:
        signature[name] = "i32"
    elif name in ("clip", "proj_clip"):
        signature[name] = "fp32"
    elif name in ("sizes_ptr", "starts_ptr", "previous_ptr", "counter_ptr"):
        signature[name] = "*i32"
    elif "kept" in name:
        signature[name] = "*i1"
    else:
        signature[name] = "*fp32" if name in float32_buffers else "*" + spec["dtype"]
    if name not in ints or ints[name] % 16 == 0:  # as a launch specializes aligned pointers and sizes
        attributes[(index,)] = [["tt.divisibility", 16]]
try:  # the shape of this API changes between Triton versions
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attributes)
    target = GPUTarget("cuda", 90, 32)
except (TypeError, AttributeError) as error:
    print("unsupported:", error)
    sys.exit(0)
triton.compile(source, target=target, options={"num_warps": spec["warps"]})
print("compiled")
"""

_INTS = {"num_steps": 100, "units": 256, "running": 16, "unit_blocks": 16, "num_programs": 16, "depth_h": 256}
_LSTM = dict(PRECISION="ieee", BLOCK_B=16, BLOCK_U=16, BLOCK_K=32, BLOCK_P=16, ACT="tanh", PEEPHOLES=False,
             CLIP=False, PROJECTION=False, PROJ_CLIP=False, ONE_LOOP=False, SAVE=True)
CONFIGURATIONS = {
    # a plain LSTM, float32, weights in registers: what crashed
    "lstm_forward_float32_resident": dict(cell="lstm", kernel="_lstm_forward_kernel", dtype="fp32", warps=8,
                                          constants=dict(_LSTM, K_PAD=256, RESIDENT=True)),
    "lstm_forward_bfloat16_streamed_projection": dict(
        cell="lstm", kernel="_lstm_forward_kernel", dtype="bf16", warps=4,
        constants=dict(_LSTM, K_PAD=16, RESIDENT=False, PEEPHOLES=True, CLIP=True, PROJECTION=True, PROJ_CLIP=True,
                       ONE_LOOP=True)),
    "gru_backward_float32": dict(cell="gru", kernel="_gru_backward_kernel", dtype="fp32", warps=4,
                                 constants=dict(PRECISION="ieee", BLOCK_B=16, BLOCK_U=16, BLOCK_K=32, K_PAD=16,
                                                RESIDENT=False, ACT="tanh")),
    "basic_rnn_backward_float32_resident": dict(
        cell="rnn", kernel="_rnn_backward_kernel", dtype="fp32", warps=8,
        constants=dict(PRECISION="ieee", BLOCK_B=16, BLOCK_U=16, BLOCK_K=32, K_PAD=256, RESIDENT=True, ACT="elu")),
}


def _compile(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled, not interpreted
    return subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(dict(spec, ints=_INTS))], capture_output=True,
                          text=True, timeout=600, env=environment, cwd=Path(__file__).parents[1])


def test_persistent_kernels_compile_for_sm90() -> None:
    names = sorted(CONFIGURATIONS)
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(names, pool.map(_compile, (CONFIGURATIONS[n] for n in names))))
    unsupported = [r.stdout.strip() for r in results.values() if r.stdout.startswith("unsupported:")]
    if unsupported:
        pytest.skip(f"this Triton's compiler API differs from the one this test drives ({unsupported[0]})")
    failed = {name: (r.returncode, r.stderr.strip().splitlines()[-3:]) for name, r in results.items()
              if "compiled" not in r.stdout}
    assert not failed, f"kernels that did not compile for sm_90a: {failed}"
