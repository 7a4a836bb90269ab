"""The compiled step loops (``rnn_cpu.cpp`` with ``layer_norm_lstm.cpp`` and
``lstm_inference.cpp``, sharing ``rnn_math.h``), built at first use and cached.

``torch.utils.cpp_extension`` compiles the sources (about a minute) into torch's per-user
extension cache under a name keyed on a hash of the sources, the torch version and the
compiler flags: each source tree gets its own build and never loads another's; later imports
load the cached library. Where no
compiler is found, or the build fails, ``kernels()`` returns ``None`` and the fused path runs
its pure-torch steps instead (same math, slower); the reason is logged once. Set
``RNNKIT_NATIVE=0`` to skip the build.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..activation_kinds import ACTIVATION_CODES, GATE_CODES
from ..step_loops import StepLoops

_LOG = logging.getLogger(__name__)
_HERE = Path(__file__).parent
_SOURCES = [_HERE / "rnn_cpu.cpp", _HERE / "layer_norm_lstm.cpp", _HERE / "lstm_inference.cpp"]
_HEADERS = [
    _HERE / name
    for name in ("rnn_math.h", "layer_norm_lstm.h", "lstm_inference.h", "lstm_rows.h", "packed_gemm.h",
                 "batch_slices.h", "step_rows.h", "unit_parts.h")
]
_CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "AVX512": [
        "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
        "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512",
    ],
}
_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}


def kernels() -> ModuleType | None:
    """The compiled module, or ``None`` when it cannot be had (see the module docstring)."""
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                _state["module"] = _build()
    return _state["module"]


def _build() -> ModuleType | None:
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        capability = torch.backends.cpu.get_cpu_capability()
        flags = ["-O3", "-fopenmp", *_CAPABILITY_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])]
        name = f"rnnkit_rnn_cpu_{capability.lower()}_{_build_key(flags)}"
        sources = [str(path) for path in _SOURCES]
        return load(name, sources, extra_cflags=flags, extra_ldflags=["-fopenmp", "-ldl"], verbose=False)
    except Exception as error:  # no compiler, no headers, a failed build: the torch path works
        _LOG.warning("rnnkit: compiled RNN kernels unavailable (%s); using the pure-torch path", error)
        return None


def _build_key(flags: list[str]) -> str:
    """A short hash of the sources and headers, the torch version and the compiler flags."""
    digest = hashlib.sha256(torch.__version__.encode())
    for path in (*_SOURCES, *_HEADERS):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update("\0".join(flags).encode())
    return digest.hexdigest()[:12]


def compiled_loops(
    module: ModuleType | None, layer: str, activation: str, gate: str | None = None
) -> StepLoops | None:
    """The compiled step loops of ``layer`` (``"lstm"``, ``"gru"``, ``"rnn"`` or ``"ln_lstm"``)
    for the cell's ``activation`` kind and, for the LSTM and GRU, its ``gate`` kind, from the
    compiled ``module`` (:func:`kernels`; ``None`` when it is not there)."""
    if module is None:
        return None
    forward, backward = getattr(module, f"{layer}_forward_steps"), getattr(module, f"{layer}_backward_steps")
    codes = (ACTIVATION_CODES[activation],) if gate is None else (ACTIVATION_CODES[activation], GATE_CODES[gate])
    return StepLoops(lambda *loop: forward(*loop, *codes), lambda *loop: backward(*loop, *codes), compiled=True)


def compiled_lstm_inference(module: ModuleType | None, activation: str, gate: str) -> Any | None:
    """The compiled LSTM inference loop (``lstm_inference.cpp``) for the cell's ``activation``
    and ``gate`` kinds, from the compiled ``module`` (``None`` when it is not there)."""
    if module is None:
        return None
    codes = (ACTIVATION_CODES[activation], GATE_CODES[gate])
    return lambda *loop: module.lstm_inference_steps(*loop, *codes)
