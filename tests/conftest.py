"""Shared test settings: GPU-marked tests skip without a CUDA device, and without one Triton
kernels run in Triton's CPU interpreter; ``RNNKIT_TEST_SHARD=i/n`` runs one slice of the tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.charlm_common import write_corpus

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _keep_shard(config, items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _keep_shard(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``RNNKIT_TEST_SHARD=i/n``, only the i-th of n contiguous slices of the tests (so
    that parallel runs on a GPU machine share out Triton's compiling; see
    ``benchmarks/gpu_check.sh``)."""
    shard = os.environ.get("RNNKIT_TEST_SHARD")
    if not shard:
        return
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise pytest.UsageError(f"RNNKIT_TEST_SHARD must be i/n with 0 <= i < n, got {shard!r}")
    first, last = (len(items) * k // int(count) for k in (int(index), int(index) + 1))
    config.hook.pytest_deselected(items=items[:first] + items[last:])
    items[:] = items[first:last]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small text file for the main job's tests (tests/charlm_common.py)."""
    return write_corpus(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def compiled():
    """The compiled CPU step loops; the test skips where no C++ compiler is found."""
    from rnnkit.fused.cpu.native import kernels  # here: rnnkit's import must follow TRITON_INTERPRET above

    module = kernels()
    if module is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the pure-torch path is the one in use")
    assert module is not None, "a compiler is present but the kernels did not build (see the log)"
    return module
