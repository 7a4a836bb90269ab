"""Whether rnnkit's Triton kernels can run here, decided without importing Triton.

Triton is optional (the ``[triton]`` extra; CUDA builds of torch ship it). The kernels run on
CUDA tensors, and on CPU tensors only under ``TRITON_INTERPRET=1`` (Triton's interpreter,
slow, for tests at small sizes). ``RNNKIT_TRITON=0`` turns them off, leaving cuDNN and the
torch step loops.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_runs_on(device: torch.device) -> bool:
    """True when rnnkit's Triton kernels can run on tensors of ``device``."""
    if os.environ.get("RNNKIT_TRITON", "1") == "0" or not triton_installed():
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def dot_precision() -> str:
    """Triton's ``input_precision`` for float32 products: strict IEEE unless the user allowed
    TF32 for float32 matmuls (``torch.backends.cuda.matmul.allow_tf32``, off by default)."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


@functools.cache
def multiprocessors(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (how many programs can all be resident)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


PERSISTENT_MAX_BATCH = 1024  # rows the persistent kernels take if their programs all fit
PERSISTENT_MAX_BLOCK_ROWS = 32  # rows one program holds at most (64 spills registers in float32 with 4 warps)
# Wide tiles, for layers whose 16-unit x 32-row programs do not all fit on the GPU: 64 rows
# and/or 32 units a program with 8 warps (no spills per ptxas for sm_90a). Tested in Triton's
# interpreter, not yet run on a GPU: off (the Triton step loop) unless RNNKIT_PERSISTENT_WIDE=1.
WIDE_TILES = ((64, 16), (32, 32), (64, 32))  # (block_rows, block_units), in order of preference
PERSISTENT_WIDE = os.environ.get("RNNKIT_PERSISTENT_WIDE", "0") == "1"
PERSISTENT_MAX_UNITS = 1024
PERSISTENT_MAX_PROJECTION_BLOCK = 64  # projection columns one program computes at most
# Projections in the persistent LSTM kernels: tested in Triton's interpreter and compiled for
# sm_90a, but not yet run on a GPU; off (the Triton step loop) until a GPU run verifies them,
# unless RNNKIT_PERSISTENT_PROJECTION=1.
PERSISTENT_PROJECTION = os.environ.get("RNNKIT_PERSISTENT_PROJECTION", "0") == "1"
# The persistent BasicRNNCell kernels (persistent_rnn.py): the same, unless RNNKIT_PERSISTENT_RNN=1.
PERSISTENT_RNN = os.environ.get("RNNKIT_PERSISTENT_RNN", "0") == "1"
# The forward kernels' gate products of streamed weights in one loop (persistent_setup.Tuning.
# one_loop_for_gates): the same, unless RNNKIT_PERSISTENT_ONE_LOOP=1.
PERSISTENT_ONE_LOOP = os.environ.get("RNNKIT_PERSISTENT_ONE_LOOP", "0") == "1"
RESIDENT_MAX_DEPTH = 256  # the persistent forward kernels hold their weight slices in registers up to this


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def persistent_layout(batch: int, units: int, programs_resident: int) -> tuple[int, int, int, int]:
    """``(block_rows, block_units, row_blocks, unit_blocks)`` of the persistent kernels: each
    program owns 16 units (the gate columns of each) for a block of at most 32 rows; the rows
    are split further while that keeps every program resident. When even 32-row blocks make
    too many programs, the first of ``WIDE_TILES`` that fits (with ``PERSISTENT_WIDE``). The
    interpreter runs programs one after another, so there a single program takes the layer."""
    if interpreting():
        return max(16, _power_of_two_at_least(batch)), max(16, _power_of_two_at_least(units)), 1, 1
    block_units = 16
    unit_blocks = -(-units // block_units)
    block_rows = min(PERSISTENT_MAX_BLOCK_ROWS, max(16, _power_of_two_at_least(batch)))
    while block_rows > 16 and unit_blocks * -(-batch // (block_rows // 2)) <= programs_resident:
        block_rows //= 2
    if PERSISTENT_WIDE and unit_blocks * -(-batch // block_rows) > programs_resident:
        for rows, width in WIDE_TILES:
            if -(-batch // rows) * -(-units // width) <= programs_resident:
                return rows, width, -(-batch // rows), -(-units // width)
    return block_rows, block_units, -(-batch // block_rows), unit_blocks


PERSISTENT_MIN_CAPABILITY = (8, 0)  # Ampere or newer: bf16 products, acquire/release atomics (tested on sm_90)


@functools.cache
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)


def _programs_resident(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # the interpreter
    return multiprocessors(_index(device))


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def persistent_fits(device: torch.device, batch: int, units: int, num_proj: int | None = None) -> bool:
    """True when the persistent kernels can run a layer of ``units`` (LSTM: with a projection
    to ``num_proj`` columns, while ``PERSISTENT_PROJECTION``): at most ``PERSISTENT_MAX_UNITS``
    units, at most ``PERSISTENT_MAX_PROJECTION_BLOCK`` projection columns per program, a GPU of
    ``PERSISTENT_MIN_CAPABILITY`` or newer, and at most one program per multiprocessor (all
    resident, for the grid-wide barrier): on an H100 (132 multiprocessors) up to 64 rows at
    1024 units, 256 rows at 256 units."""
    if batch > PERSISTENT_MAX_BATCH or units > PERSISTENT_MAX_UNITS:
        return False
    if device.type == "cuda" and _capability(_index(device)) < PERSISTENT_MIN_CAPABILITY:
        return False
    resident = _programs_resident(device)
    _, _, row_blocks, unit_blocks = persistent_layout(batch, units, resident)
    if num_proj is not None and (not PERSISTENT_PROJECTION
                                 or -(-num_proj // unit_blocks) > PERSISTENT_MAX_PROJECTION_BLOCK):
        return False
    return row_blocks * unit_blocks <= resident


def persistent_rnn_fits(device: torch.device, batch: int, units: int) -> bool:
    """:func:`persistent_fits` for a ``BasicRNNCell`` layer, while ``PERSISTENT_RNN``."""
    return PERSISTENT_RNN and persistent_fits(device, batch, units)


def persistent_launch(device: torch.device, batch: int, units: int) -> tuple[int, int, int, int]:
    """:func:`persistent_layout` for ``device``."""
    return persistent_layout(batch, units, _programs_resident(device))


def persistent_preferred(device: torch.device, dtype: torch.dtype, batch: int, units: int) -> bool:
    """True where the persistent LSTM kernel beats cuDNN on a plain LSTM (measured on an H100
    with at most ``RESIDENT_MAX_DEPTH`` units, the weights held in registers, and at most 64
    rows); never for float64 (the kernels run 32 bits and less)."""
    return (dtype != torch.float64 and units <= RESIDENT_MAX_DEPTH and batch <= 64 and triton_runs_on(device)
            and persistent_fits(device, batch, units))
