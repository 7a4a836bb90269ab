"""The compiled pointwise kernels (``rnn_cpu.cpp``), built at first use and cached.

``torch.utils.cpp_extension`` compiles the source once per machine and torch version (about a
minute) into torch's extension cache; later imports load the cached library. Where no
compiler is found, or the build fails, ``kernels()`` returns ``None`` and the fused path runs
its pure-torch steps instead (same math, slower); the reason is logged once. Set
``RNNKIT_NATIVE=0`` to skip the build.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .activation_kinds import ACTIVATION_CODES, GATE_CODES

_LOG = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("rnn_cpu.cpp")
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
        name = f"rnnkit_rnn_cpu_{capability.lower()}"
        return load(name, [str(_SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # no compiler, no headers, a failed build: the torch path works
        _LOG.warning("rnnkit: compiled RNN kernels unavailable (%s); using the pure-torch path", error)
        return None


def compiled_loops(
    module: ModuleType | None, layer: str, activation: str, gate: str | None = None
) -> tuple[Any, Any] | None:
    """The compiled ``(forward, backward)`` step loops of ``layer`` (``"lstm"``, ``"gru"`` or
    ``"rnn"``) for the cell's ``activation`` kind and, for the LSTM and GRU, its ``gate`` kind,
    from the compiled ``module`` (:func:`kernels`; ``None`` when it is not there)."""
    if module is None:
        return None
    forward, backward = getattr(module, f"{layer}_forward_steps"), getattr(module, f"{layer}_backward_steps")
    codes = (ACTIVATION_CODES[activation],) if gate is None else (ACTIVATION_CODES[activation], GATE_CODES[gate])
    return (lambda *loop: forward(*loop, *codes)), (lambda *loop: backward(*loop, *codes))
